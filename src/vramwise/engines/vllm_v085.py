"""What vLLM 0.8.5's V1 worker holds inside its budget that the 0.9.2+ plans leave out (``--vllm-version 0.8``).

v0.8.5 vllm/v1/worker/gpu_worker.py ``determine_available_memory`` resets torch's peak statistics after the model is
loaded and reserves ``torch.cuda.memory_stats()["allocated_bytes.all.peak"]`` itself, not its increase during the
profile run (v0.9.2+ take the increase through vllm/utils.py ``memory_profiling``). So every tensor torch holds when
the profile starts counts, among them the model runner's persistent buffers, made in ``GPUModelRunner.__init__``
before the weights are loaded (so outside "Model loading took"): ``runner_buffers``.

The sampler warm-up (``GPUModelRunner._dummy_sampler_run``, top_k = V - 1 and top_p = 0.9 for every dummy request)
runs v0.8.5 vllm/v1/sample/ops/topk_topp_sampler.py ``TopKTopPSampler``: ``forward_native`` (torch's sort, the
0.11 plan's rule, engines/vllm_terms.py ``sampler_warmup``) unless FlashInfer older than 0.2.3 is installed, then
``forward_cuda``, which sorts nothing: ``flashinfer_sampler_warmup``. pip's vLLM 0.8.5 does not depend on FlashInfer
(requirements/cuda.txt); its docker image ``vllm/vllm-openai:v0.8.5`` installs FlashInfer 0.2.1.post2
(docker/Dockerfile, the vllm-base stage).
"""

from __future__ import annotations

from vramwise.estimate.term import Term
from vramwise.spec.model import ModelSpec

# torch's caching allocator rounds every block up to 512 B (c10/cuda/CUDACachingAllocator.cpp kMinBlockSize,
# round_size), and allocated_bytes counts the rounded blocks
_BLOCK = 512
# v0.8.5 vllm/v1/worker/gpu_input_batch.py InputBatch.__init__: temperature, top_p, min_p, frequency_penalties,
# presence_penalties, repetition_penalties (fp32) and top_k (int32) on the GPU, one element per request each
_SAMPLING_TENSORS = 7
# FlashInfer's rejection-sampling rounds: flashinfer_sample's uniform_samples of (32, rows) fp32 (v0.8.5
# topk_topp_sampler.py ``max_top_k_round``)
_FLASHINFER_ROUNDS = 32
# Bytes per logit FlashInfer's path holds at its kernel, beside the logits in the model dtype: Sampler.forward's
# fp32 copy (4; temperature divides it in place), forward_cuda's softmax probs (4), and flashinfer 0.2.1.post2
# flashinfer/sampling.py ``top_k_top_p_sampling_from_probs`` with its default filter_apply_order "top_k_first":
# ``top_k_renorm_probs`` returns a new fp32 tensor (torch.empty_like(probs), 4) that ``top_p_sampling_from_probs``
# samples from (its samples and success are one int32 and one bool per row). Rows that fail all 32 rounds take
# flashinfer_sample's fallback, top_k_renorm_prob then top_p_renorm_prob on the probs (4 B more per logit while both
# are live); whether a row fails depends on the dummy run's logits, so the main path is the one counted
FLASHINFER_BYTES_PER_LOGIT = 4 + 4 + 4
_VOCAB_PADDING = 64  # vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE (as engines/vllm_terms.py)


def _rounded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def runner_buffers(spec: ModelSpec, *, tokens: int, seqs: int, max_len: int, block: int, c: int,
                   mid_stage: bool) -> Term:
    """The model runner's persistent GPU tensors, in v0.8.5's torch peak (the module docstring).

    v0.8.5 vllm/v1/worker/gpu_model_runner.py ``GPUModelRunner.__init__`` (lines 212-249): ``input_ids`` (T int32),
    ``positions`` (T int64) and ``inputs_embeds`` (T x h in the model dtype, made for every model);
    gpu_input_batch.py ``InputBatch.__init__``: the seven sampling tensors (S x 4 B each) and block_table.py
    ``BlockTable.__init__``: S x cdiv(max_model_len, block_size) int32. A pipeline stage after the first also makes
    ``intermediate_tensors`` in its first ``_dummy_run`` (``make_empty_intermediate_tensors``: hidden states and
    residual, T x h each). T = max_num_batched_tokens, S = max_num_seqs. An M-RoPE model's (3, T + 1) int64
    positions are not counted (the model description does not say M-RoPE)."""
    h = spec.hidden_size
    blocks_per_req = -(-max_len // block)
    parts = [
        ("input_ids", _rounded(tokens * 4)),
        ("positions", _rounded(tokens * 8)),
        ("inputs_embeds", _rounded(tokens * h * c)),
        ("sampling tensors", _SAMPLING_TENSORS * _rounded(seqs * 4)),
        ("block table", _rounded(seqs * blocks_per_req * 4)),
    ]
    if mid_stage:
        parts.append(("intermediate_tensors", 2 * _rounded(tokens * h * c)))
    total = sum(b for _, b in parts)
    formula = (f"input_ids T {tokens} x 4 + positions T x 8 + inputs_embeds T x h {h} x c {c} + 7 sampling tensors x "
               f"S {seqs} x 4 + block table S x cdiv({max_len}, {block}) {blocks_per_req} x 4"
               + (" + intermediate_tensors 2 x T x h x c" if mid_stage else "")
               + f", each rounded to {_BLOCK} B: " + " + ".join(f"{n} {b:,}" for n, b in parts))
    return Term(
        name="overhead/runner_buffers",
        bytes=total,
        formula=formula,
        source="vllm v0.8.5 vllm/v1/worker/gpu_model_runner.py GPUModelRunner.__init__, gpu_input_batch.py "
               "InputBatch.__init__, block_table.py BlockTable.__init__; counted by gpu_worker.py "
               "determine_available_memory (allocated_bytes.all.peak, not its increase)",
    )


def flashinfer_sampler_warmup(spec: ModelSpec, *, rows: int, c: int) -> tuple[int, str]:
    """The sampler warm-up's peak over ``rows`` dummy requests on v0.8.5's FlashInfer path (``forward_cuda``):
    the logits in the model dtype (padded to 64), FLASHINFER_BYTES_PER_LOGIT per logit, the 32 rounds of uniform
    samples, beside the ``rows`` hidden rows ``_dummy_run`` returned (``hidden_states[logit_indices]``)."""
    V, h = spec.vocab_size, spec.hidden_size
    padded = -(-V // _VOCAB_PADDING) * _VOCAB_PADDING
    uniform = _FLASHINFER_ROUNDS * rows * 4
    total = rows * padded * c + rows * V * FLASHINFER_BYTES_PER_LOGIT + uniform + rows * h * c
    return total, (
        f"FlashInfer < 0.2.3 (forward_cuda): logits rows {rows} x V {padded} (padded to {_VOCAB_PADDING}) x c {c} + "
        f"rows x V {V} x {FLASHINFER_BYTES_PER_LOGIT} B (fp32 copy, softmax probs, top_k_renorm_probs) + uniform "
        f"samples {_FLASHINFER_ROUNDS} x rows x 4 + hidden rows {rows} x h {h} x c {c}"
    )

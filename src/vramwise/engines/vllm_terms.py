"""vLLM v0.11.0's memory outside the weights and the KV pool: the profile run, non-torch memory, CUDA graphs.

The profile run (vllm/v1/worker/gpu_model_runner.py ``GPUModelRunner.profile_run``) is one dummy forward of
``max_num_batched_tokens`` tokens spread over min(max_num_seqs, tokens) requests (``_dummy_run``), then, on the
last pipeline rank, the sampler over one row per request (``_dummy_sampler_run``). vLLM reserves the torch peak of
that run inside its budget (vllm/utils ``memory_profiling``: ``torch_peak_increase``). The KV caches do not exist
yet, so each attention layer returns its empty output without running attention (vllm/v1/attention/backends/
flash_attn.py ``FlashAttentionImpl.forward``: "Profiling run." when attn_metadata is None): the live set of a layer
is its projections, not an attention matrix.
"""

from __future__ import annotations

import re

from vramwise.engines.nccl_comm import EngineNccl, custom_all_reduce_on, nccl_term
from vramwise.estimate.sharding import kv_heads_per_gpu
from vramwise.estimate.term import Term
from vramwise.spec.model import ModelSpec
from vramwise.units import MIB
from vramwise.workload.options import Interconnect

_RUNNER = "vllm/v1/worker/gpu_model_runner.py"


def _attention_width(spec: ModelSpec, tp: int, eager: bool = False) -> tuple[int, str]:
    """Elements per token live in an attention layer's forward: residual and normed input (2h), the qkv
    projection's output and the attention output (vllm/model_executor/models/llama.py ``LlamaAttention.forward``:
    qkv_proj, rotary in place, attn, o_proj; MLA, deepseek_v2.py ``DeepseekV2MLAAttention``: q of nope + rope dims
    per head, the kv latent and rope key, the output of v dims per head). ``eager`` (the comment above
    forward_live): o_proj's output h is allocated while all of these are still referenced."""
    att, h = spec.attention, spec.hidden_size
    heads = att.num_heads // tp
    if att.kind == "mla" and att.mla:
        m = att.mla
        qkv = heads * (m.qk_nope_head_dim + m.qk_rope_head_dim) + m.kv_lora_rank + m.qk_rope_head_dim
        out = heads * m.v_head_dim
    else:
        qkv = (heads + 2 * kv_heads_per_gpu(spec, tp)) * att.head_dim
        out = heads * att.head_dim
    if eager:
        return 3 * h + qkv + out, f"3·h {3 * h} (o_proj's output beside them) + qkv {qkv} + out {out}"
    return 2 * h + qkv + out, f"2·h {2 * h} + qkv {qkv} + out {out}"


def _mlp_width(spec: ModelSpec, tp: int, eager: bool = False) -> tuple[int, str]:
    """Elements per token live in a dense MLP: residual and input (2h), then gated (llama.py ``LlamaMLP``: gate_up
    2i and act(gate)·up i, both live until act returns) or plain (up i and its activation i). ``eager`` (the comment
    above forward_live): down_proj's output h is allocated while the residual, the caller's normed input, gate_up (a
    local until forward returns) and act's output are live: 3h + 3i gated; plain, act rebinds up's output, so
    max(2h + 2i, 3h + i). A model without dense layers: the residual and input alone (the MoE layer is _moe_live)."""
    h, mlp = spec.hidden_size, spec.mlp
    widths = [(2 * h, f"2·h {2 * h}")]
    if spec.dense_layers:
        i = mlp.intermediate_size // tp
        dense = 3 * i if mlp.gated else 2 * i
        widths.append((2 * h + dense, f"2·h {2 * h} + dense {'3·i' if mlp.gated else '2·i'} {dense}"))
        if eager:
            at_down = 3 * h + (3 * i if mlp.gated else i)
            widths.append((at_down, f"3·h {3 * h} (down_proj's output beside them) + dense "
                                    f"{'3·i' if mlp.gated else 'i'} {at_down - 3 * h}"))
    return max(widths)


# vllm/envs.py VLLM_FUSED_MOE_CHUNK_SIZE (default "32768" at v0.6.4, v0.8.5, v0.9.2 and v0.11.0): fused_experts_impl
# (vllm/model_executor/layers/fused_moe/fused_moe.py) sizes its intermediate caches for M = min(num_tokens, that)
# tokens and loops over chunks of it; fused_marlin_moe (fused_marlin_moe.py, the MXFP4 Marlin backend's) takes every
# token at once.
FUSED_MOE_CHUNK_SIZE = 32768
# fused_moe.py get_default_config at v0.11.0: BLOCK_SIZE_M 64 once the tokens outnumber the experts (the profile
# run's case; tuned per-GPU config files may pick another block, moving the padding below by under E x 63 x 4 B)
MOE_BLOCK_SIZE_M = 64


def fp8_activation_group(fmt_name: str, compute_capability: str | None) -> int | None:
    """How fused_experts quantizes its activations for an fp8 checkpoint: the group size of
    per_token_group_quant_fp8 (block_shape[1] of an fp8 block checkpoint), 0 for one per-tensor scale
    (ops.scaled_fp8_quant), None where the experts do not run w8a8 (not fp8, or a GPU below compute capability 8.9,
    where Fp8MoEMethod.__init__ picks the Marlin weight-only kernel: quantization/fp8.py v0.9.2, v0.11.0)."""
    if not fmt_name.startswith("fp8") or not compute_capability:
        return None
    major, _, minor = compute_capability.partition(".")
    if (int(major), int(minor or 0)) < (8, 9):
        return None
    if fmt_name == "fp8-block":  # DeepSeek-V3's and Qwen3's weight_block_size [128, 128]
        return 128
    match = re.fullmatch(r"fp8-block\d+x(\d+)(?:-e8m0)?", fmt_name)
    return int(match.group(1)) if match else 0


def _fp8_activations(m: int, k: int, h: int, i: int, group: int) -> tuple[int, str]:
    """Bytes of the fp8 copies fused_experts_impl makes before its GEMMs (v0.9.2 and v0.11.0 fused_moe.py; utils.py
    moe_kernel_quantize_input -> _fp8_quantize), live while the second GEMM runs: qcurr_hidden_states (M x h, 1 B,
    still referenced by the loop) and qintermediate_cache2 (M x top_k x i, 1 B), each with an fp32 scale per group
    of ``group`` values (per_token_group_quant_fp8; ``group`` 0: one per-tensor scale, not counted)."""
    quantized = m * h + m * k * i
    scales = (m * -(-h // group) + m * k * -(-i // group)) * 4 if group else 0
    per = f"fp32 scale per {group}" if group else "per-tensor scale"
    return quantized + scales, f" + fp8 activations M x h + M x top_k x i ({per}) {quantized + scales:,} B"


def _moe_live(spec: ModelSpec, *, tokens: int, c: int, tp: int, chunk: int | None,
              fp8_group: int | None = None) -> tuple[int, str]:
    """Bytes live at an MoE layer's peak (fused_experts_impl at v0.11.0, while the second GEMM fills
    intermediate_cache3): per token the residual, the normed input, the router logits E (the caller keeps
    them), the output h (a shared expert's output h besides), fused_topk's topk_weights fp32, topk_ids and
    token_expert_indices int32 (top_k each); per routed row of the chunk's M = min(tokens, ``chunk``) tokens
    intermediate_cache1 and 3 sharing one buffer of max(2i, h), intermediate_cache2 of i (c each), and
    moe_align_block_size's sorted_ids (M x top_k + E x (BLOCK_SIZE_M - 1) int32) and expert_ids (one int32 a
    block). ``chunk`` None: fused_marlin_moe, which has no chunk loop. ``fp8_group``: the w8a8 path's activation
    quantization (fp8_activation_group), None without it."""
    moe, h = spec.moe, spec.hidden_size
    assert moe is not None
    i, k, E = moe.expert_intermediate_size // tp, moe.top_k, moe.num_experts
    m = tokens if chunk is None else min(tokens, chunk)
    shared = h if moe.shared_intermediate_size else 0
    per_token = (2 * h + E + h + shared) * c + k * (4 + 4 + 4)
    caches = m * k * (max(2 * i, h) + i) * c
    padded = m * k + E * (MOE_BLOCK_SIZE_M - 1)
    align = (padded + -(-padded // MOE_BLOCK_SIZE_M)) * 4
    cut = (" (fused_marlin_moe: no chunks; its padding of i and h not counted)" if chunk is None else
           "" if tokens <= chunk else f" (chunks of VLLM_FUSED_MOE_CHUNK_SIZE {chunk})")
    quant, quant_f = _fp8_activations(m, k, h, i, fp8_group) if fp8_group is not None else (0, "")
    return tokens * per_token + caches + align + quant, (
        f"MoE: T {tokens} x ((2·h {2 * h} + router E {E} + out h" + (f" + shared out h {shared}" if shared else "")
        + f") x c {c} + top_k {k} x 12 B topk weights and ids) + M {m}{cut} x top_k x (max(2i, h) + i) "
        f"{max(2 * i, h) + i} x c + moe_align_block_size {align:,} B{quant_f}"
    )


# An eager forward (V0's profile run and graph capture run the nn.Module itself, no torch.compile) frees a tensor
# only when Python drops its last reference. vllm/model_executor/models/llama.py (the 0.6 line and after):
# ``LlamaMLP.forward`` is ``gate_up, _ = self.gate_up_proj(x); x = self.act_fn(gate_up); x, _ = self.down_proj(x)``
# (gate_up stays a local until return) and ``LlamaDecoderLayer.forward`` calls ``hidden_states =
# self.mlp(hidden_states)`` (the caller keeps the normed input until mlp returns); ``LlamaAttention.forward`` keeps
# qkv and attn_output as locals across o_proj. So each block's last projection allocates its output (h) beside
# everything the block made. Inductor's generated code (V1's compiled model) deletes each buffer after its last use
# instead, so the compiled live set is the one without this term.
def forward_live(spec: ModelSpec, *, tokens: int, c: int, tp: int, eager: bool = False,
                 moe_chunk: int | None = FUSED_MOE_CHUNK_SIZE, fp8_group: int | None = None) -> tuple[int, str]:
    """Bytes of the largest one-layer live set of a forward of ``tokens`` tokens, and its formula. ``eager``: the
    module runs without torch.compile (the comment above forward_live). ``moe_chunk``: the MoE kernel's token chunk
    (None: fused_marlin_moe, unchunked). ``fp8_group``: fp8 w8a8 experts' activation quantization
    (fp8_activation_group)."""
    att, att_f = _attention_width(spec, tp, eager)
    mlp, mlp_f = _mlp_width(spec, tp, eager)
    width, f = (att, f"attention: {att_f}") if att >= mlp else (mlp, f"MLP: {mlp_f}")
    dense = tokens * c * width, f"T {tokens} x c {c} x ({f})"
    if spec.moe and spec.moe.moe_layers:
        return max(dense, _moe_live(spec, tokens=tokens, c=c, tp=tp, chunk=moe_chunk, fp8_group=fp8_group))
    return dense


# vLLM pads the head's vocabulary to a multiple of 64 (vllm/model_executor/layers/vocab_parallel_embedding.py
# DEFAULT_VOCAB_PADDING_SIZE); compute_logits gathers every rank's slice (LogitsProcessor._gather_logits), so each
# rank holds the full padded row, then drops the padding.
VOCAB_PADDING = 64
# Bytes per logit the sampler warm-up holds at its peak (vllm/v1/sample/sampler.py ``Sampler.forward`` and
# vllm/v1/sample/ops/topk_topp_sampler.py ``apply_top_k_top_p`` on the native path, FlashInfer sampling being opt-in
# through VLLM_USE_FLASHINFER_SAMPLER): the fp32 copy (4), the ascending sort's values (4) and int64 indices (8), the
# top-k mask (1), the softmax that cumsum overwrites (4), the top-p mask (1) and the scatter's result (4) = 26,
# beside the logits in the model dtype.
SAMPLER_BYTES_PER_LOGIT = 4 + 4 + 8 + 1 + 4 + 1 + 4


# torch.sort of the [rows, V] fp32 logits (apply_top_k_top_p's ascending sort) allocates, beside its outputs, scratch
# that lives only while it runs (pytorch aten/src/ATen/native/cuda/SortStable.cu ``launch_stable_sort_kernel``):
# with rows >= 128 segments ``segmented_sort_pairs`` holds reverse_indices (int64, 8 B per element) and cub's
# DeviceSegmentedRadixSort::SortPairs, called without DoubleBuffers (aten/src/ATen/cuda/cub.cuh), takes an alternate
# key and value buffer as temp storage (4 + 8 B; cub dispatch_radix_sort.cuh allocation_sizes when not
# is_overwrite_okay) = 20 B; with 2 to 127 rows ``segmented_sort_pairs_by_full_sort`` holds indices_and_segment and
# its copy (int2, 8 + 8 B), the keys_out radix_sort_pairs allocates for its nullptr (4 B) and cub's alternate key and
# int2 value buffers (4 + 8 B) = 32 B; one row sorts per segment (``segmented_sort_large_segments``), scratch of one
# row only. At that moment the fp32 copy (4) and the sort's own values (4) and int64 indices (8) are live.
SORT_SCRATCH_MANY_ROWS = 8 + 4 + 8
SORT_SCRATCH_FEW_ROWS = 8 + 8 + 4 + 4 + 8
SORT_MANY_ROWS = 128  # launch_stable_sort_kernel: nsegments < 128 takes the full-sort path
SORT_LIVE_BYTES_PER_LOGIT = 4 + 4 + 8


def sort_scratch(rows: int) -> int:
    """Bytes per logit of torch.sort's scratch over ``rows`` rows (see SORT_SCRATCH_MANY_ROWS)."""
    if rows >= SORT_MANY_ROWS:
        return SORT_SCRATCH_MANY_ROWS
    return SORT_SCRATCH_FEW_ROWS if rows > 1 else 0


def sampler_warmup(spec: ModelSpec, *, rows: int, tokens: int, c: int, row_copies: int = 0) -> tuple[int, str]:
    """The sampler warm-up's peak over ``rows`` dummy requests, with the forward's hidden states still held: the
    larger of the moment torch.sort runs (its outputs and scratch) and the moment the top-k/top-p scatter runs.
    ``row_copies``: hidden rows of ``rows`` x h held besides the ``tokens`` x h hidden states (v0.9.2-v0.11.0:
    _dummy_run returns ``hidden_states[logit_indices]``, an advanced-indexing copy profile_run keeps as
    last_hidden_states, and _dummy_sampler_run replaces it by ``torch.rand_like``: two)."""
    V, h = spec.vocab_size, spec.hidden_size
    padded = -(-V // VOCAB_PADDING) * VOCAB_PADDING
    at_sort = SORT_LIVE_BYTES_PER_LOGIT + sort_scratch(rows)
    per_logit = max(SAMPLER_BYTES_PER_LOGIT, at_sort)
    moment = (f"at the sort: fp32 copy, sort values and int64 indices {SORT_LIVE_BYTES_PER_LOGIT} + torch.sort "
              f"scratch {sort_scratch(rows)} B" if at_sort >= SAMPLER_BYTES_PER_LOGIT else
              "at the scatter: fp32 copy, sort values and int64 indices, top-k mask, softmax, top-p mask, scatter")
    logits = rows * padded * c + rows * V * per_logit
    hidden = (tokens + row_copies * rows) * h * c
    copies = (f" + {row_copies} copies of their {rows} sampled rows (hidden_states[logit_indices], torch.rand_like)"
              if row_copies else "")
    return logits + hidden, (
        f"logits rows {rows} x V {padded} (padded to {VOCAB_PADDING}) x c {c} + rows x V {V} x {per_logit} B "
        f"({moment}) + hidden states T {tokens} x h {h} x c {c}{copies}"
    )


# vLLM's custom all-reduce (vllm/distributed/device_communicators/custom_all_reduce.py ``CustomAllreduce``,
# max_size 8192 x 1024): an IPC meta+signal buffer and an IPC data buffer of max_size each (cudaMalloc, outside
# torch), and rank_data, 8 MiB of torch memory; only for tp of 2, 4, 6 or 8 (_SUPPORTED_WORLD_SIZES).
CUSTOM_AR_BYTES = 3 * 8 * MIB
CUSTOM_AR_SIZES = (2, 4, 6, 8)


def non_torch_terms(*, tp: int, pp: int, link: Interconnect, nccl: EngineNccl,
                    torch_tp_group: bool = False) -> tuple[Term, ...]:
    """Memory vLLM's profile counts outside torch since its first snapshot (``non_torch_increase``), for the V0
    engine of the 0.6 line and the V1 engine of 0.7-0.8 (tp and pp groups; no ep group yet).

    ``torch_tp_group`` (the V0 plan, every 0.6 release): torch.distributed's ProcessGroupNCCL on the tp group's
    ``device_group`` creates its own NCCL communicator, a second one of the same size, at the group's first
    collective, which the profile run makes: the driver's logits gather (vllm/distributed/parallel_state.py
    ``GroupCoordinator.gather``: ``torch.distributed.gather(..., group=self.device_group)`` at v0.6.4.post1, v0.6.5
    and v0.6.6.post1; torch 2.5.1 ProcessGroupNCCL.cpp ``ProcessGroupNCCL::gather`` goes through ``collective()``).
    At v0.6.4 the eager all-reduces reach it too: PyNcclCommunicator stays ``disabled`` outside CUDA graph capture
    (vllm/distributed/device_communicators/pynccl.py ``__init__`` at v0.6.4: "by default it is disabled, e.g. in
    profiling models and prefill phase"), so an all-reduce that custom all-reduce declines (above its 8 MiB) goes
    to torch.distributed (``GroupCoordinator._all_reduce_in_place``); from v0.6.5 PyNccl takes those."""
    terms = []
    groups = [(name, n) for name, n in (("tp", tp), ("pp", pp)) if n > 1]
    if groups:
        terms.append(nccl_term(
            "overhead/nccl", groups, link, nccl,
            when="set up after vLLM's baseline: non-torch growth inside the budget",
            source="vllm/distributed/device_communicators/pynccl.py PyNcclCommunicator per group of > 1 GPU",
        ))
    if torch_tp_group and tp > 1:
        terms.append(nccl_term(
            "overhead/nccl_torch", [("tp", tp)], link, nccl,
            when="torch.distributed's ProcessGroupNCCL communicator, created in the profile run",
            source="vllm/distributed/parallel_state.py GroupCoordinator.gather (v0.6.4.post1-v0.6.6.post1: the "
                   "logits gather, torch.distributed.gather on device_group; torch 2.5.1 ProcessGroupNCCL::gather "
                   "-> collective()) and, at v0.6.4, GroupCoordinator._all_reduce_in_place (torch.distributed."
                   "all_reduce on device_group when custom all-reduce declines and PyNccl is disabled outside graph "
                   "capture)",
        ))
    if custom_all_reduce_on(tp, link):
        terms.append(Term(
            name="overhead/custom_all_reduce",
            bytes=CUSTOM_AR_BYTES,
            formula="IPC meta+signal 8 MiB + IPC buffer 8 MiB + rank_data 8 MiB (max_size 8192 x 1024)",
            source="vllm/distributed/device_communicators/custom_all_reduce.py CustomAllreduce.__init__ (v0.6.6 "
                   "lines 132-138, v0.8.5 lines 133-140: off above 2 GPUs without full NVLink)",
        ))
    return tuple(terms)


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> tuple[int, ...]:
    """v0.11.0's default capture sizes (engines/vllm_releases.py ``capture_sizes_v011``, which cites the rule)."""
    from vramwise.engines.vllm_releases import capture_sizes_v011

    return capture_sizes_v011(max_num_seqs, max_num_batched_tokens)


def cuda_graph_term(spec: ModelSpec, *, sizes: tuple[int, ...], c: int, tp: int, release: str = "0.11.0",
                    fp8_group: int | None = None) -> Term:
    """The graphs' shared memory pool: captured from the largest size down, every graph reuses one pool, whose
    size is the largest size's forward live set (``GPUModelRunner.capture_model``, torch.cuda.graph pool)."""
    largest = max(sizes)
    config = "vllm/config/__init__.py" if release in ("0.10.2", "0.11.0") else "vllm/config.py"  # a package from 0.10.2
    live, f = forward_live(spec, tokens=largest, c=c, tp=tp, fp8_group=fp8_group)
    return Term(
        name="cuda_graphs",
        bytes=live,
        formula=f"{len(sizes)} sizes, the pool sized by the largest ({largest} tokens): {f}; each graph's own "
                "driver memory is not modelled (vLLM only measures it)",
        source=f"{_RUNNER} capture_model; {config} _set_cudagraph_sizes (v{release})",
    )


# The sampler warm-up on FlashInfer's path at v0.9.2-v0.11.0 (FlashInfer >= 0.2.3 installed, VLLM_USE_FLASHINFER_SAMPLER
# unset: vllm/v1/sample/ops/topk_topp_sampler.py ``TopKTopPSampler.__init__`` picks ``forward_cuda`` and logs "Using
# FlashInfer for top-p & top-k sampling."). ``_dummy_sampler_run`` sets top_k (V - 1) and top_p (0.9) for every row,
# so ``flashinfer_sample`` calls ``flashinfer.sampling.top_k_top_p_sampling_from_logits`` (v0.9.2, v0.10.1.1,
# v0.10.2, v0.11.0), which sorts nothing: with its default filter_apply_order "top_k_first" (flashinfer 0.2.11 and
# 0.3.0, the releases vLLM 0.10.1.1's and 0.10.2's ``flashinfer`` extra pins, flashinfer/sampling.py
# ``top_k_top_p_sampling_from_logits``) it makes ``top_k_mask_logits``'s ``torch.empty_like`` of the fp32 logits, then
# ``torch.softmax`` of those, then ``top_p_sampling_from_probs``'s int32 sample per row. Bytes per logit at the
# softmax, beside the logits in the model dtype: Sampler.forward's fp32 copy (``logits.to(torch.float32)``;
# temperature divides it in place, sampler.py ``apply_temperature``), the masked logits and the softmax probs.
FLASHINFER_V1_BYTES_PER_LOGIT = 4 + 4 + 4


def flashinfer_v1_sampler_warmup(spec: ModelSpec, *, rows: int, tokens: int, c: int,
                                 row_copies: int) -> tuple[int, str]:
    """The sampler warm-up's peak over ``rows`` dummy requests on FlashInfer's path at v0.9.2-v0.11.0 (see
    FLASHINFER_V1_BYTES_PER_LOGIT), beside the forward's ``tokens`` hidden states and ``row_copies`` copies of the
    sampled rows (as ``sampler_warmup``)."""
    V, h = spec.vocab_size, spec.hidden_size
    padded = -(-V // VOCAB_PADDING) * VOCAB_PADDING
    logits = rows * padded * c + rows * V * FLASHINFER_V1_BYTES_PER_LOGIT
    hidden = (tokens + row_copies * rows) * h * c
    return logits + hidden, (
        f"FlashInfer >= 0.2.3 (forward_cuda, top_k_top_p_sampling_from_logits): logits rows {rows} x V {padded} "
        f"(padded to {VOCAB_PADDING}) x c {c} + rows x V {V} x {FLASHINFER_V1_BYTES_PER_LOGIT} B (fp32 copy, "
        f"top_k_mask_logits' masked logits, softmax probs) + hidden states T {tokens} x h {h} x c {c} + {row_copies} "
        f"copies of their {rows} sampled rows"
    )

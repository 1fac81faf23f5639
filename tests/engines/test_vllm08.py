"""vLLM's V1 plan under --vllm-version 0.8 (engines/vllm_releases.py: the rules of v0.7.3-v0.8.5), by hand arithmetic.

Oracles: the arithmetic written out here, each step naming the vLLM v0.8.5 function it mirrors (file and line in
vllm_releases.py); parameter counts (llama-2-7b 6,738,415,616: Meta's model card) for the weights.
"""

from __future__ import annotations

import pytest

from vramwise.app.verify_log import vllm_release
from vramwise.catalog import get_gpu
from vramwise.engines.logs import parse_log
from vramwise.engines.vllm import vllm_figures, vllm_plan
from vramwise.engines.vllm_releases import capture_sizes_v085
from vramwise.estimate.cuda_context import context_term
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup, Overheads

MIB = 2**20
H100 = get_gpu("h100-80gb")
A100 = get_gpu("a100-80gb")
# vramwise's CUDA context without a GPU architecture (estimate/cuda_context.py), counted inside v0.8.5's budget
CONTEXT = context_term(Overheads()).bytes
# one communicator, NCCL 2.21.5 (torch 2.6.0), NCCL_CUMEM_ENABLE=0 (vllm/env_override.py): H100 SXM's 32 ring
# channels x 12 MiB (p2p.cc: send 4,096 + SIMPLE 4 MiB and receive 4,096 + LL + LL128, each rounded up to 2 MiB);
# at 2 ranks the tree's peer is the ring's
NCCL_ONE = 32 * 12 * MIB
CUSTOM_AR = 3 * 8 * MIB


def _plan(model: str, gpu=H100, **flat):  # type: ignore[no-untyped-def]
    return vllm_plan(catalog_spec(model), InferSetup.from_flat(engine="vllm", vllm_version="0.8", **flat), gpu)


def test_capture_sizes_of_v085_ignore_max_num_seqs() -> None:
    # vllm/config.py _set_cudagraph_sizes (V1, v0.8.5): [1, 2, 4] + range(8, 513, 8), none above the batched tokens
    assert capture_sizes_v085(1024, 8192) == (1, 2, 4, *range(8, 513, 8)) and len(capture_sizes_v085(1, 8192)) == 67
    assert max(capture_sizes_v085(1024, 100)) == 96


def test_llama_2_7b_budget_holds_the_context_and_one_hidden_row_per_request() -> None:
    p = _plan("llama-2-7b")
    terms = {t.name: t.bytes for t in p.estimate.persistent}
    weights = 6_738_415_616 * 2 + 4096 * 128 * 2  # bf16 parameters + the rotary table (rotary_embedding.py)
    # 8192 tokens and 1024 sequences from 70 GiB (get_batch_defaults); the sampler over 1024 rows of 32,000 logits:
    # bf16 logits 2 + fp32 copy, sort values and int64 indices 16 + torch.sort scratch 20 (>= 128 rows), beside
    # 1024 hidden rows (_dummy_run returns hidden_states[logit_indices]), not 8192; + torch's cuBLAS workspace of
    # the first GEMM, 32 MiB on compute capability 9.0 (CublasHandlePool.cpp parseChosenWorkspaceSize)
    sampler = 1024 * 32_000 * (2 + 16 + 20) + 1024 * 4096 * 2
    ws = 4096 * 8 * 1024
    assert sampler > 8192 * 2 * (2 * 4096 + 3 * 11008) and terms["activations/profile_peak"] == sampler + ws
    # the model runner's persistent buffers, in v0.8.5's absolute torch peak (engines/vllm_v085.py): input_ids,
    # positions and inputs_embeds of 8192 rows, 7 sampling tensors of 1024 x 4, the block table 1024 x 256 x 4
    buffers = 8192 * 4 + 8192 * 8 + 8192 * 4096 * 2 + 7 * 1024 * 4 + 1024 * 256 * 4
    assert terms["overhead/runner_buffers"] == buffers
    available = int(0.9 * H100.memory_bytes) - weights - sampler - ws - buffers - CONTEXT  # determine_available_memory
    page = 16 * 2 * 32 * 128 * 2
    blocks = available // (page * 32)
    assert terms["kv_cache/pool"] == blocks * page * 32 and p.kv_tokens == blocks * 16
    assert p.concurrency == pytest.approx(blocks * 16 / 4096)  # num_tokens / max_model_len
    assert vllm_figures(p)["non_torch"] == CONTEXT and p.version == "0.8.5"


def test_tp2_counts_nccl_and_custom_all_reduce_inside_the_budget() -> None:
    one = _plan("llama-2-7b", tp=2)
    eleven = vllm_plan(catalog_spec("llama-2-7b"), InferSetup.from_flat(engine="vllm", tp=2), H100)
    # tp group only: 0.8.5 builds no ep group (parallel_state.py); torch's own tp communicator, made by the profile
    # run's logits all-gather (vllm_comms.py logits_gather_term), the same buffers as the PyNccl one
    inside = CONTEXT + NCCL_ONE + CUSTOM_AR + NCCL_ONE
    assert vllm_figures(one)["non_torch"] == inside
    t = {x.name: x.bytes for x in one.estimate.persistent}
    weights = sum(b for n, b in t.items() if n.startswith("weights/"))
    held = t["overhead/runner_buffers"]  # torch memory in v0.8.5's absolute peak (test above)
    available = int(0.9 * H100.memory_bytes) - weights - t["activations/profile_peak"] - held - inside
    assert vllm_figures(one)["available_kv_cache"] == available
    assert one.kv_tokens is not None and eleven.kv_tokens is not None and one.kv_tokens < eleven.kv_tokens


def test_a100_gets_the_large_defaults_before_v090() -> None:
    p = _plan("llama-2-7b", gpu=A100)
    assert "8,192" in " ".join(p.estimate.notes)  # V1 chunks prefill at max_num_batched_tokens (8192, not 2048)


def test_gemma_2_sliding_layers_cached_at_full_length() -> None:
    p = _plan("gemma-2-9b", max_model_len=8192)
    t = {x.name: x.bytes for x in p.estimate.persistent}
    page = 16 * 2 * 8 * 256 * 2  # 8 kv heads of 256, bf16
    blocks = t["kv_cache/pool"] // (page * 42)  # unify_hybrid_kv_cache_specs: all 42 layers in one group
    assert t["kv_cache/pool"] == blocks * page * 42 and p.kv_tokens == blocks * 16


@pytest.mark.parametrize(
    ("version", "release", "noted"),
    [("0.8.5", "0.8", False), ("0.8.0", "0.8", False), ("0.7.3", "0.8", True), ("0.9.0", "0.8", True),
     ("0.9.2", "0.9", False), ("0.10.1", "0.10", True), ("0.10.2", "0.10", False), ("0.11.0", None, False)],
)
def test_verify_log_picks_0_8_for_v1_logs_of_0_7_to_0_9_1(version: str, release: str | None, noted: bool) -> None:
    chosen, note = vllm_release(parse_log(f"INFO [api_server.py:1043] vLLM API server version {version}\n"
                                          "INFO [kv_cache_utils.py:634] GPU KV cache size: 198,784 tokens"))
    assert chosen == release and (note is not None) == noted

"""vLLM 0.8.5's V1 budget (--vllm-version 0.8) read at the v0.8.5 tag: the model runner's persistent buffers and the
FlashInfer sampler path, by hand arithmetic, on the setups of two bench logs.

Oracles: the arithmetic written out here, each step naming the vLLM v0.8.5 function it mirrors; parameter counts
written out from the models' config.json (Llama-3.1-8B: 8,030,261,248, Meta's model card; Qwen3-30B-A3B by layer
below); the logged figures of bench/data/engine_logs (vllm-qwen3-30b-a3b-a10-tp4-1.log: "GPU KV cache size: 198,784
tokens") as a published measurement, within 0.5%.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from vramwise.app.verify_log import compare_parsed
from vramwise.catalog import get_gpu
from vramwise.engines.logs import parse_log
from vramwise.engines.vllm import vllm_figures, vllm_plan
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.cuda_context import context_term
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup, Overheads

MIB = 2**20
L40S = get_gpu("l40s")
A10 = get_gpu("a10")
# vramwise's CUDA context without a GPU architecture (estimate/cuda_context.py), inside v0.8.5's budget
CONTEXT = context_term(Overheads()).bytes
# torch's cuBLAS workspace off Hopper, allocated by the profile run's first GEMM: CUBLAS_WORKSPACE_CONFIG's default
# ":4096:2:16:8" = 2 x 4096 KiB + 8 x 16 KiB (pytorch CublasHandlePool.cpp parseChosenWorkspaceSize)
WORKSPACE = (4096 * 2 + 16 * 8) * 1024


def _plan(model: str, gpu, **flat):  # type: ignore[no-untyped-def]
    return vllm_plan(catalog_spec(model), InferSetup.from_flat(engine="vllm", vllm_version="0.8", **flat), gpu)


def _terms(plan) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {t.name: t.bytes for t in plan.estimate.persistent}


def test_a10_is_cuda_s_total_from_a_published_oom_message() -> None:
    # QwenLM/Qwen3#1387 (vLLM on 4x A10): "GPU 1 has a total capacity of 21.99 GiB"
    assert A10.memory_bytes == int(Decimal("21.99") * 2**30)


def test_llama_31_8b_on_l40s_counts_the_runner_buffers_in_torch_s_peak() -> None:
    # vllm-llama31-8b-l40s-tp1-1.log's setup: `vllm serve` under 70 GiB: T 2048 tokens, S 256 sequences
    # (engine/arg_utils.py _set_default_args_v1 lines 1605-1609), max_model_len 32768
    p = _plan("llama-3.1-8b", L40S, max_model_len=32768)
    t = _terms(p)
    weights = 8_030_261_248 * 2 + 131_072 * 128 * 2  # bf16 + the llama3 rope table (rotary_embedding.py)
    assert sum(b for n, b in t.items() if n.startswith("weights/")) == weights
    # GPUModelRunner.__init__: input_ids 2048 x 4, positions 2048 x 8, inputs_embeds 2048 x 4096 x 2;
    # InputBatch: 7 sampling tensors of 256 x 4 = 1024 B; BlockTable: 256 x cdiv(32768, 16) x 4 (512 B multiples)
    buffers = 2048 * 4 + 2048 * 8 + 2048 * 4096 * 2 + 7 * 1024 + 256 * 2048 * 4
    assert buffers == 18_906_112 and t["overhead/runner_buffers"] == buffers
    # _dummy_sampler_run over 256 rows of 128,256 logits on torch's path: bf16 logits 2 + 36 B at torch.sort, the
    # 256 hidden rows beside them; the compiled forward of 2048 tokens is smaller (2048 x 2 x (2h + 3i))
    sampler = 256 * 128_256 * (2 + 36) + 256 * 4096 * 2
    assert sampler > 2048 * 2 * (2 * 4096 + 3 * 14336) and t["activations/profile_peak"] == sampler + WORKSPACE
    # determine_available_memory: 0.9 x total - (torch's absolute peak + everything outside torch)
    available = int(0.9 * L40S.memory_bytes) - weights - (sampler + WORKSPACE) - buffers - CONTEXT
    page = 16 * 2 * 8 * 128 * 2  # AttentionSpec.page_size_bytes: block x 2 x kv heads x head size x 2 B
    blocks = available // page // 32  # _get_kv_cache_config_uniform_type line 621
    assert p.kv_tokens == blocks * 16 and vllm_figures(p)["available_kv_cache"] == available
    assert p.concurrency == pytest.approx(blocks * 16 / 32768)  # num_tokens / max_model_len (line 636)


def _qwen3_30b_a3b_weights_per_rank() -> int:
    """Qwen3-30B-A3B's config.json (hidden 2048, 48 layers, 32 heads and 4 KV heads of 128, 128 experts of 768,
    vocabulary 151,936, untied head, max_position_embeddings 40,960), bf16, on one of 4 tensor-parallel ranks."""
    h, L, V, E, i = 2048, 48, 151_936, 128, 768
    embed = head = V * h // 4 * 2
    attention = L * (h * 4096 * 2 + h * 512 * 2) // 4 * 2 + L * 2 * 128 * 2  # q, o; k, v; q_norm, k_norm whole
    experts = L * E * 3 * h * i // 4 * 2 + L * h * E * 2  # gate, up, down sharded; the router whole
    norms = (L * 2 * h + h) * 2
    rope = 40_960 * 128 * 2
    return embed + head + attention + experts + norms + rope


def test_qwen3_30b_a3b_on_4_a10s_samples_with_flashinfer() -> None:
    # vllm-qwen3-30b-a3b-a10-tp4-1.log's setup: vLLM's v0.8.5 docker image (FlashInfer 0.2.1.post2), tp 4 over
    # PCIe, max_model_len 8192, T 2048, S 256
    p = _plan("qwen3-30b-a3b", A10, tp=4, max_model_len=8192, vllm_sampler="flashinfer")
    t = _terms(p)
    weights = _qwen3_30b_a3b_weights_per_rank()
    assert weights == 15_295_737_856 and sum(b for n, b in t.items() if n.startswith("weights/")) == weights
    # forward_cuda: bf16 logits (151,936 is a multiple of 64) + fp32 copy 4 + softmax 4 + top_k_renorm_probs 4 per
    # logit, flashinfer_sample's 32 x 256 fp32 uniform samples, the 256 hidden rows
    sampler = 256 * 151_936 * 2 + 256 * 151_936 * 12 + 32 * 256 * 4 + 256 * 2048 * 2
    # the MoE layer's forward of 2048 tokens (fused_experts_impl, i = 768 / 4): residual, input, router logits, out
    # and top-k ids/weights per token, caches of M x top_k x (max(2i, h) + i), moe_align_block_size's int32s
    moe = 2048 * ((2 * 2048 + 128 + 2048) * 2 + 8 * 12) + 2048 * 8 * (2048 + 192) * 2
    moe += (2048 * 8 + 128 * 63 + -(-(2048 * 8 + 128 * 63) // 64)) * 4
    assert sampler == 545_619_968 and sampler > moe and t["activations/profile_peak"] == sampler + WORKSPACE
    # input_ids, positions, inputs_embeds (2048 x 2048 x 2), sampling tensors, block table 256 x cdiv(8192, 16) x 4
    buffers = 2048 * 4 + 2048 * 8 + 2048 * 2048 * 2 + 7 * 1024 + 256 * 512 * 4
    assert t["overhead/runner_buffers"] == buffers
    # one tp communicator over PCIe (NCCL 2.21.5, tests/engines/test_engine_nccl.py): 2 ring + 2 tree channels of
    # 12 MiB; no custom all-reduce above 2 GPUs without NVLink (custom_all_reduce.py)
    nccl = 4 * 12 * MIB
    assert t["overhead/nccl"] == nccl and "overhead/custom_all_reduce" not in t
    # torch's own tp communicator, made by the sampler warm-up's logits all-gather (dist.all_gather_into_tensor on
    # the device group, engines/vllm_comms.py logits_gather_term): the same buffers, inside the budget
    assert t["overhead/nccl_torch"] == nccl
    available = int(0.9 * A10.memory_bytes) - weights - (sampler + WORKSPACE) - buffers - 2 * nccl - CONTEXT
    blocks = available // (16 * 2 * 1 * 128 * 2) // 48  # one KV head per rank, 48 layers
    assert p.kv_tokens == blocks * 16
    assert abs(p.kv_tokens / 198_784 - 1) < 0.01  # the log's "GPU KV cache size: 198,784 tokens"


def test_torch_s_path_stays_the_default_and_holds_more() -> None:
    torch_path = _terms(_plan("qwen3-30b-a3b", A10, tp=4, max_model_len=8192))
    # 256 x 151,936 logits x (2 + 36) + the hidden rows: torch's sort path (engines/vllm_terms.py)
    assert torch_path["activations/profile_peak"] == 256 * 151_936 * 38 + 256 * 2048 * 2 + WORKSPACE


def test_a_later_pipeline_stage_also_holds_the_intermediate_tensors() -> None:
    one, two = (_terms(_plan("llama-3.1-8b", L40S, max_model_len=32768, pp=pp)) for pp in (1, 2))
    # make_empty_intermediate_tensors(batch_size=max_num_tokens): hidden states and residual, 2048 x 4096 x 2 each
    assert two["overhead/runner_buffers"] - one["overhead/runner_buffers"] == 2 * 2048 * 4096 * 2


def test_the_eleven_plan_holds_no_runner_buffers() -> None:
    # v0.11.0 memory_profiling counts the torch peak's increase during profile_run: buffers made before it are out
    plan = vllm_plan(catalog_spec("llama-3.1-8b"), InferSetup.from_flat(engine="vllm", max_model_len=32768), L40S)
    assert "overhead/runner_buffers" not in _terms(plan)


@pytest.mark.parametrize("version", ["0.6", "0.6.4"])
def test_vllm_sampler_is_refused_outside_the_v1_plans(version: str) -> None:
    setup = InferSetup.from_flat(engine="vllm", vllm_version=version, vllm_sampler="flashinfer")
    with pytest.raises(InvalidWorkloadError, match=r"modelled for the V1 plans"):
        vllm_plan(catalog_spec("llama-3.1-8b"), setup, L40S)


def test_an_unknown_sampler_path_is_refused_in_one_line() -> None:
    with pytest.raises(InvalidWorkloadError, match="allowed: torch, flashinfer"):
        InferSetup.from_flat(engine="vllm", vllm_sampler="cuda")


_LOG_085 = (
    "INFO 04-29 00:57:50 [api_server.py:1043] vLLM API server version 0.8.5\n"
    "INFO 04-29 01:00:00 [topk_topp_sampler.py:44] Using FlashInfer for top-p & top-k sampling.\n"
    "INFO 04-29 01:09:49 [kv_cache_utils.py:634] GPU KV cache size: 198,784 tokens\n"
    "INFO 04-29 01:09:49 [kv_cache_utils.py:637] Maximum concurrency for 8,192 tokens per request: 24.27x\n"
)


def test_verify_log_reads_the_sampler_line_of_a_0_8_5_log() -> None:
    # TopKTopPSampler.__init__ (v0.8.5) logs which path it took; the plan follows it
    c = compare_parsed(parse_log(_LOG_085), model="qwen3-30b-a3b", gpu="a10", options={"tp": 4})
    assert c.modelled_version == "0.8.5" and c.options["vllm_sampler"] == "flashinfer"
    plan = _plan("qwen3-30b-a3b", A10, tp=4, max_model_len=8192, vllm_sampler="flashinfer")
    assert {r.name: r.estimate for r in c.rows}["kv_tokens"] == plan.kv_tokens


def test_a_sampler_line_in_a_later_log_is_read_too() -> None:
    # 0.9.2-0.11.0 print the same line with FlashInfer >= 0.2.3 (tests/engines/test_vllm_flashinfer_v1.py)
    text = _LOG_085.replace("version 0.8.5", "version 0.11.0")
    c = compare_parsed(parse_log(text), model="qwen3-30b-a3b", gpu="a10", options={"tp": 4})
    assert c.modelled_version == "0.11.0" and c.options["vllm_sampler"] == "flashinfer"

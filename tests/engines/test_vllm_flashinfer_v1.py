"""vLLM 0.9.2-0.11.0's sampler warm-up on FlashInfer's path (--vllm-sampler flashinfer, read from the log's "Using
FlashInfer for top-p & top-k sampling."), by hand arithmetic, on the setup of a bench log.

Oracles: the arithmetic written out here, each step naming the source it mirrors (vLLM v0.10.1.1
vllm/v1/worker/gpu_model_runner.py ``_dummy_sampler_run``, vllm/v1/sample/sampler.py ``Sampler.forward``,
vllm/v1/sample/ops/topk_topp_sampler.py ``flashinfer_sample``; flashinfer 0.2.11 flashinfer/sampling.py
``top_k_top_p_sampling_from_logits``, ``top_k_mask_logits``); Qwen2-7B-Instruct's config (hidden 3584, 28 layers, 28
heads and 4 KV heads of 128, FFN 18944, vocabulary 152,064, untied head, 32,768 positions; 7,615,616,512 parameters
written out below); the published measurement of bench/data/engine_logs/vllm-qwen2-7b-a100-tp1-2.log (vLLM 0.10.1.1
on an A100 80GB, gpu_memory_utilization 0.5: "GPU KV cache size: 464,848 tokens"), within 0.5%.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vramwise.app.verify_log import compare_parsed
from vramwise.catalog import get_gpu
from vramwise.engines.logs import parse_log
from vramwise.engines.vllm import vllm_plan
from vramwise.spec.load import resolve_model
from vramwise.workload import InferSetup

A100 = get_gpu("a100-80gb")
CONFIG = Path(__file__).resolve().parents[2] / "bench" / "data" / "engine_logs" / "configs" / "qwen2-7b-instruct.json"
# torch's cuBLAS workspace off Hopper: CUBLAS_WORKSPACE_CONFIG's default ":4096:2:16:8" (CublasHandlePool.cpp)
WORKSPACE = (4096 * 2 + 16 * 8) * 1024
H, L, FFN, V, KV_HEADS, HEAD = 3584, 28, 18944, 152_064, 4, 128


def _params() -> int:
    embed = head = V * H
    attention = L * (H * H + H + 2 * (H * KV_HEADS * HEAD + KV_HEADS * HEAD) + H * H)  # q (+bias), k, v (+bias), o
    mlp = L * 3 * H * FFN
    norms = L * 2 * H + H
    return embed + head + attention + mlp + norms


def _plan(sampler: str | None, util: float = 0.5):  # type: ignore[no-untyped-def]
    flat = {"vllm_sampler": sampler} if sampler else {}
    setup = InferSetup.from_flat(engine="vllm", vllm_version="0.10", gpu_utilization=util, max_model_len=16384, **flat)
    return vllm_plan(resolve_model(str(CONFIG)), setup, A100)


def _terms(p) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {t.name: t.bytes for t in p.estimate.persistent}


def test_qwen2_7b_on_an_a100_samples_with_flashinfer() -> None:
    assert _params() == 7_615_616_512
    p = _plan("flashinfer")
    t = _terms(p)
    # bf16 weights + vLLM's rope cos/sin table, max_position_embeddings 32768 x head 128 in bf16
    weights = _params() * 2 + 32_768 * 128 * 2
    assert sum(b for n, b in t.items() if n.startswith("weights/")) == weights
    # _dummy_sampler_run over min(max_num_seqs 256, max_num_batched_tokens 2048) rows: the bf16 logits (152,064 is a
    # multiple of 64), then per logit Sampler.forward's fp32 copy 4 + top_k_mask_logits' masked logits 4 + the softmax
    # probs 4; beside them the forward's 2048 hidden states and the two copies of the 256 sampled rows
    sampler = 256 * V * 2 + 256 * V * (4 + 4 + 4) + (2048 + 2 * 256) * H * 2
    forward = 2048 * 2 * (2 * H + 3 * FFN)  # the compiled forward's MLP live set (engines/vllm_terms.py)
    assert sampler == 563_347_456 and sampler > forward
    assert t["activations/profile_peak"] == sampler + WORKSPACE
    # v0.10.x at tp 1: the KV pool is 0.5 x total - weights - the profile's torch peak (the context is outside)
    available = int(0.5 * A100.memory_bytes) - weights - (sampler + WORKSPACE)
    page = 16 * 2 * KV_HEADS * HEAD * 2  # one layer's block: 16 tokens x K and V x 4 heads x 128 x 2 B
    assert p.kv_tokens == available // (page * L) * 16
    assert abs(p.kv_tokens / 464_848 - 1) < 0.005  # the log's "GPU KV cache size: 464,848 tokens"


def test_torch_s_sort_stays_the_default_and_holds_24_bytes_more_per_logit() -> None:
    torch_path, flashinfer = _terms(_plan(None)), _terms(_plan("flashinfer"))
    # apply_top_k_top_p at torch.sort over 256 rows: fp32 copy, sort values and int64 indices 16 + scratch 20 = 36
    assert (torch_path["activations/profile_peak"] - flashinfer["activations/profile_peak"]
            == 256 * V * (36 - 12))


_LOG = (
    "(APIServer pid=1) INFO 09-04 01:28:28 [api_server.py:1805] vLLM API server version 0.10.1.1\n"
    "(EngineCore_0 pid=2) INFO 09-04 01:29:01 [topk_topp_sampler.py:50] Using FlashInfer for top-p & top-k "
    "sampling.\n"
    "(EngineCore_0 pid=2) INFO 09-04 01:29:26 [kv_cache_utils.py:849] GPU KV cache size: 464,848 tokens\n"
)


@pytest.mark.parametrize(("line", "path"), [
    ("Using FlashInfer for top-p & top-k sampling.", "flashinfer"),
    ("FlashInfer is not available. Falling back to the PyTorch-native implementation of top-p & top-k sampling. "
     "For the best performance, please install FlashInfer.", "torch"),
])
def test_verify_log_follows_the_logged_sampler_of_a_0_10_log(line: str, path: str) -> None:
    text = _LOG.replace("Using FlashInfer for top-p & top-k sampling.", line)
    c = compare_parsed(parse_log(text), model=str(CONFIG), gpu="A100 80GB",
                       options={"gpu_util": 0.5, "max_model_len": 16384})
    assert c.modelled_version == "0.10.2" and c.options["vllm_sampler"] == path
    rows = {r.name: r.estimate for r in c.rows}
    assert rows["kv_tokens"] == _plan(path).kv_tokens

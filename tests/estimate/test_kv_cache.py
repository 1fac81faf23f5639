"""KV cache sizes, written out by hand from 2 · L · n_kv · d · bytes per token (MLA: L · (r_kv + d_rope) · bytes)."""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidLayoutError
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.kv_cache import kv_cache
from vramwise.spec.load import resolve_model
from vramwise.workload import InferSetup

GIB = 2**30


def _kv(model: str, **setup) -> int:
    return estimate_inference(resolve_model(model), InferSetup(**setup)).term("kv_cache").bytes


def test_llama2_7b_fp16_4096_tokens_is_exactly_2_gib() -> None:
    # 32 layers x 2 (K, V) x 32 heads x 128 dims x 2 bytes x 4096 tokens = 2^31 bytes
    assert _kv("llama-2-7b", batch=1, context=4096) == 32 * 2 * 32 * 128 * 2 * 4096 == 2 * GIB


@pytest.mark.parametrize(
    ("model", "per_token"),
    [
        ("llama-2-70b", 80 * 2 * 8 * 128 * 2),  # 327,680 B: GQA with 8 KV heads
        ("llama-3-8b", 32 * 2 * 8 * 128 * 2),  # 131,072 B
        ("deepseek-v3", 61 * (512 + 64) * 2),  # MLA: one latent of kv_lora_rank + rope dims per layer
        ("falcon-7b", 32 * 2 * 1 * 64 * 2),  # MQA: one KV head of 4544 / 71 = 64 dims
    ],
)
def test_bytes_per_token(model: str, per_token: int) -> None:
    assert per_token in (327_680, 131_072, 70_272, 8_192)
    assert _kv(model, context=1, kv_block=1) == per_token


def test_mistral_7b_is_bounded_by_its_4096_sliding_window() -> None:
    per_token = 32 * 2 * 8 * 128 * 2
    assert _kv("mistral-7b", context=4096) == 4096 * per_token
    assert _kv("mistral-7b", context=16384) == 4096 * per_token
    assert _kv("mistral-7b-v0.3", context=16384) == 16384 * per_token  # v0.3 dropped the window


def test_gemma2_mixes_sliding_and_global_layers() -> None:
    # 42 layers, 21 slide over 4096 tokens, 21 attend to all; 8 KV heads of 256 dims, bf16
    per_layer_token = 2 * 8 * 256 * 2
    assert _kv("gemma-2-9b", context=8192, weight_format="bf16") == per_layer_token * (21 * 4096 + 21 * 8192)


def test_batch_new_tokens_and_kv_dtype() -> None:
    per_token_fp8 = 32 * 2 * 8 * 128 * 1
    assert _kv("llama-3-8b", batch=3, context=1000, new_tokens=24, kv_dtype="fp8") == 3 * 1024 * per_token_fp8


def test_paged_blocks_round_each_sequence_up() -> None:
    per_token = 32 * 2 * 8 * 128 * 2
    assert _kv("llama-3-8b", batch=2, context=17) == 2 * 32 * per_token  # 17 tokens take two 16-token blocks
    assert _kv("llama-3-8b", batch=2, context=17, kv_block=1) == 2 * 17 * per_token


def test_tensor_parallel_splits_or_replicates_kv_heads() -> None:
    spec = resolve_model("llama-2-70b")

    def per_seq(tp: int) -> int:
        return kv_cache(spec, tokens=1, dtype="bf16", dtype_bytes=2, tp=tp, block=1).coef  # bytes of one sequence

    one = per_seq(1)
    assert one == 80 * 2 * 8 * 128 * 2  # L x K and V x n_kv x d x 2 B
    assert per_seq(4) == one // 4
    assert per_seq(8) == one // 8
    assert per_seq(16) == one // 8  # 8 KV heads replicated


@pytest.mark.parametrize(("model", "tp"), [("llama-2-7b", 3), ("qwen2-7b", 8)])
def test_tp_that_cannot_split_heads_is_rejected(model: str, tp: int) -> None:
    with pytest.raises(InvalidLayoutError):
        estimate_inference(resolve_model(model), InferSetup(tp=tp))

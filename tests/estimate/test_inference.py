"""Inference composition: peak = max over phases, transients by hand, textbook and serving arithmetic."""

from __future__ import annotations

import random

import pytest

from vramwise.estimate.inference import estimate_inference, inference_peak
from vramwise.estimate.term import PhaseKind
from vramwise.estimate.textbook import seed_param_formula, textbook_inference
from vramwise.spec.load import resolve_model
from vramwise.workload import InferSetup

MIB = 2**20


def test_peak_is_max_over_phases_and_terms_add_up() -> None:
    est = estimate_inference(resolve_model("llama-3-8b"), InferSetup(batch=4, context=4096, new_tokens=128))
    persistent = sum(t.bytes for t in est.persistent)
    assert est.peak_bytes == persistent + max(p.bytes for p in est.phases)
    assert est.peak_bytes == sum(t.bytes for t in est.terms)
    assert est.peak_bytes < persistent + sum(p.bytes for p in est.phases)  # never the sum of phase maxima


def test_eager_attention_adds_the_s_squared_scores() -> None:
    spec = resolve_model("llama-2-7b")
    kw = {"context": 2048, "batch": 2}
    sdpa = estimate_inference(spec, InferSetup(attention="sdpa", **kw))
    eager = estimate_inference(spec, InferSetup(attention="eager", **kw))
    # b · a · s² · (fp16 QKᵀ 2 + fp32 softmax 4 + cast back 2) = 2 · 32 · 2048² · 8
    scores = 2 * 32 * 2048 * 2048 * 8
    # embeddings, layer input, norm output; q/k/v and rotary copies; the output: T·c·(3h + 2·qkv + out)
    attn_sdpa = 2 * 2048 * 2 * (3 * 4096 + 2 * 3 * 4096 + 4096)
    assert eager.term("activations/prefill_workspace").bytes == attn_sdpa + scores
    mlp = 2 * 2048 * 2 * (4 * 4096 + 3 * 11008)  # T·c·(4h + 3i): + residual; act(gate), up, product
    assert sdpa.term("activations/prefill_workspace").bytes == max(attn_sdpa, mlp)


def test_logits_last_position_or_all_positions() -> None:
    spec = resolve_model("llama-3-8b")
    last = estimate_inference(spec, InferSetup(batch=2, context=1024)).term("activations/logits").bytes
    full = estimate_inference(spec, InferSetup(batch=2, context=1024, all_logits=True)).term("activations/logits")
    hidden = 2 * 1024 * 4096 * 2
    assert last == 2 * 128256 * (2 + 4) + hidden  # bf16 logits + fp32 copy for sampling
    assert full.bytes == 2 * 1024 * 128256 * 2 + hidden


def test_overheads_are_explicit_and_overridable() -> None:
    spec = resolve_model("llama-2-7b")
    est = estimate_inference(spec, InferSetup.from_flat(cuda_context_mib=300, allocator_fraction=0.0))
    assert est.term("overhead/cuda_context").bytes == 300 * MIB
    assert est.term("overhead/allocator").bytes == 0


def test_textbook_is_the_seeds_formulas() -> None:
    spec = resolve_model("llama-2-70b")
    est = textbook_inference(spec, InferSetup(batch=2, context=1000, new_tokens=24, weight_format="fp16"))
    # seed 002: 4·b·l·h·(s+n) bytes, GQA scales by n_kv / a = 8 / 64
    assert est.term("kv_cache").bytes == 4 * 2 * 80 * 8192 * 1024 * 8 // 64
    w = 68_976_648_192 * 2
    assert est.term("weights/all").bytes == w
    assert est.peak_bytes == w + int(0.2 * w) + est.term("kv_cache").bytes  # 1.2 x weights, plus the KV
    assert seed_param_formula(32000, 4096, 32) == 32000 * 4096 + 32 * (12 * 4096**2 + 13 * 4096)


def test_bare_size_says_which_terms_need_the_architecture() -> None:
    est = estimate_inference(resolve_model("7.5e9"), InferSetup())
    assert est.term("weights/all").bytes == 15 * 10**9
    assert any(m.startswith("kv_cache needs the architecture") for m in est.missing)


# Every phase kind: eager scores, sliding-window masks and prefill views, chunked prefill, decode, all-position
# logits, paged blocks, tp, quantized formats, fp8 KV, a fp32 model, MLA, MoE, and a bare size.
_PEAK_CASES = [
    ("llama-2-7b", {"context": 4096}),
    ("llama-2-7b", {"batch": 3, "context": 2048, "new_tokens": 256, "attention": "eager"}),
    ("llama-3-8b", {"batch": 8, "context": 8192, "prefill_chunk": 512, "new_tokens": 64, "tp": 2}),
    ("llama-3-8b", {"batch": 2, "context": 1024, "all_logits": True, "weight_format": "nf4", "kv_dtype": "fp8"}),
    ("mistral-7b", {"batch": 2, "context": 16384, "new_tokens": 16}),
    ("mistral-7b", {"batch": 2, "context": 16384, "kv_block": 16, "attention": "flash"}),
    ("gemma-2-9b", {"context": 8192, "new_tokens": 8, "weight_format": "q4_k_m"}),
    ("deepseek-v3", {"batch": 4, "context": 4096, "tp": 8}),
    ("mixtral-8x7b", {"batch": 16, "context": 2048, "weight_format": "gptq-4bit-g128"}),
    ("gpt2", {"batch": 4, "context": 1024, "weight_format": "fp32", "allocator_fraction": 0.1}),
    ("7.5e9", {"context": 4096}),
]


@pytest.mark.parametrize(("model", "kw"), _PEAK_CASES, ids=[m for m, _ in _PEAK_CASES])
def test_fast_inference_peak_is_the_rendered_estimates_peak(model: str, kw: dict) -> None:
    spec = resolve_model(model)
    for batch in (1, 5):
        setup = InferSetup.from_flat(**{**kw, "batch": kw.get("batch", 1) * batch})
        est = estimate_inference(spec, setup)
        assert inference_peak(spec, setup) == est.peak_bytes == sum(t.bytes for t in est.terms)


def test_peak_is_the_rendered_peak_over_random_setups() -> None:
    """Oracle: the rendered estimate's terms summed at its peak phase; both read one plan, at any batch."""
    rng = random.Random(10)
    models = ["llama-3-8b", "mistral-7b", "gemma-2-9b", "gemma-3-1b", "mixtral-8x7b", "deepseek-v2-lite", "gpt2"]
    kinds: set[PhaseKind] = set()
    names: set[str] = set()
    checked = 0
    for _ in range(300):
        spec = resolve_model(rng.choice(models))
        context, new_tokens = rng.choice([17, 1000, 5000, 16384]), rng.choice([0, 1, 100])
        if spec.name == "gpt2":
            context = min(context, 1024 - new_tokens)  # its learned position table has 1,024 rows
        setup = InferSetup.from_flat(
            batch=rng.choice([1, 2, 3, 16]),
            context=context,
            new_tokens=new_tokens,
            weight_format=rng.choice([None, "fp32", "fp16", "int8", "nf4", "q4_k_m"]),
            kv_dtype=rng.choice(["auto", "fp8", "fp32"]),
            attention=rng.choice(["sdpa", "flash", "eager"]),
            tp=rng.choice([1, 2]),
            kv_block=rng.choice([1, 16]),
            prefill_chunk=rng.choice([None, 512]),
            all_logits=rng.random() < 0.3,
            allocator_fraction=rng.choice([None, 0.0, 0.1]),
        )
        est = estimate_inference(spec, setup)
        assert inference_peak(spec, setup) == est.peak_bytes == sum(t.bytes for t in est.terms)
        assert est.peak_bytes == max(est.phase_total(p) for p in est.phases)
        kinds |= {p.kind for p in est.phases}
        names |= {t.name for p in est.phases for t in p.transient}
        checked += 1
    # not vacuous: every setup estimated, every phase kind and every optional transient term reached
    assert checked == 300
    assert kinds == {PhaseKind.PREFILL_LAYER, PhaseKind.PREFILL_LOGITS, PhaseKind.DECODE}
    assert "kv_cache/prefill_views" in names


def test_peak_follows_the_batch_through_one_plan() -> None:
    """A sweep over the batch reuses one plan: each batch's peak is still that batch's rendered peak."""
    spec = resolve_model("mistral-7b")
    peaks = []
    for batch in (7, 1, 3, 7, 64):
        setup = InferSetup(batch=batch, context=9000, new_tokens=10, kv_block=1, attention="eager")
        peaks.append(inference_peak(spec, setup))
        assert peaks[-1] == estimate_inference(spec, setup).peak_bytes
    assert peaks[0] == peaks[3] and len(set(peaks)) == 4

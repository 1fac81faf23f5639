"""Inference estimates against a traced prefill and decode of the real transformers model (fake tensors)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_configs import BLOOM, ENCODER_DECODER, FAMILIES, GPT_BIGCODE, HEADS, MISTRAL_WINDOW

from vramwise.estimate.inference import estimate_inference
from vramwise.spec.adapters import spec_from_config
from vramwise.verify.trace import InferRecipe, trace_inference
from vramwise.workload import NO_OVERHEADS, InferSetup

CONFIGS: dict[str, dict[str, Any]] = {
    "llama": FAMILIES["llama"],
    "mistral": MISTRAL_WINDOW,
    "phi3": FAMILIES["phi3"],
    "gpt2": FAMILIES["gpt2"],
    "mixtral": FAMILIES["mixtral"],
    # multi-query attention and the unused n_positions² causal-mask buffer (the estimate's "buffers" term)
    "gpt_bigcode": GPT_BIGCODE,
    # ALiBi through BloomAttention's own scores whatever attention is asked for (the twin builds it eager)
    "bloom": BLOOM,
}
# heads architectures[0] names (spec/heads.py): the twin builds the same class; none of them generates
HEAD_CONFIGS = {name: HEADS[name] for name in ("llama-seq-cls", "llama-bare")}
# BERT's encoder (is_decoder false) keeps no cache: BertModel.forward sets use_cache False (ImplTraits.causal_kv_cache)
HEAD_CONFIGS.update({name: HEADS[name] for name in ("bert-mlm", "bert-seq-cls", "bert-token-cls", "bert-bare")})
CONFIGS.update(HEAD_CONFIGS)
CASES = [
    (name, InferRecipe(batch=b, context=s, new_tokens=n, all_logits=all_logits))
    for name in CONFIGS
    for b, s, n, all_logits in [(2, 256, 0, False), (4, 128, 16, False), (1, 512, 0, True)]
    if not (n and name in HEAD_CONFIGS)
]


@pytest.mark.parametrize(("name", "recipe"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_inference_estimate_matches_traced_generation(name: str, recipe: InferRecipe) -> None:
    traced = trace_inference(CONFIGS[name], recipe)
    spec = spec_from_config(CONFIGS[name], name=name, source="test")
    setup = InferSetup(
        batch=recipe.batch,
        context=recipe.context,
        new_tokens=recipe.new_tokens,
        all_logits=recipe.all_logits,
        kv_block=1,  # transformers' DynamicCache grows token by token
        overheads=NO_OVERHEADS,
    )
    est = estimate_inference(spec, setup)
    assert sum(t.bytes for t in est.persistent if t.name.startswith("weights/")) == traced.params
    # generate() never writes back the last new token, and a sliding window keeps window - 1 past tokens;
    # the estimate reserves both slots
    if not spec.traits.causal_kv_cache:  # an encoder: nothing cached, and no term for it
        assert traced.kv_cache == 0 and "kv_cache" not in {t.name for t in est.persistent}
        assert est.peak_bytes == pytest.approx(traced.peak, rel=0.03)
        return
    kv = est.term("kv_cache").bytes
    kept = min(setup.tokens, spec.attention.sliding_window or setup.tokens)
    assert kv >= traced.kv_cache and kv - traced.kv_cache <= kv / kept
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.03)


# Encoder-decoder (T5, mT5): the trace runs the encoder once, then the decoder from its start token with its
# EncoderDecoderCache (verify/trace.py _seq2seq_generation), as generate() does.
SEQ2SEQ_CASES = [
    (name, InferRecipe(batch=b, context=s, new_tokens=n, attention=attention))
    for name in ENCODER_DECODER
    for b, s, n, attention in [(2, 256, 0, "sdpa"), (4, 128, 16, "sdpa"), (2, 256, 8, "eager"), (1, 512, 4, "sdpa")]
]


@pytest.mark.parametrize(
    ("name", "recipe"), SEQ2SEQ_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SEQ2SEQ_CASES)]
)
def test_encoder_decoder_estimate_matches_traced_generation(name: str, recipe: InferRecipe) -> None:
    config = {**ENCODER_DECODER[name], "torch_dtype": "bfloat16"}
    traced = trace_inference(config, recipe)
    spec = spec_from_config(config, name=name, source="test")
    setup = InferSetup(
        batch=recipe.batch,
        context=recipe.context,
        new_tokens=recipe.new_tokens,
        attention=recipe.attention,
        overheads=NO_OVERHEADS,
    )
    est = estimate_inference(spec, setup)
    assert sum(t.bytes for t in est.persistent if t.name.startswith("weights/")) == traced.params
    # the decoder's self-attention slots (its start token and every new token but the last) and the cross cache
    assert est.term("kv_cache/self").bytes + est.term("kv_cache/cross").bytes == traced.kv_cache
    for step, peak in traced.phase_peaks.items():
        if step == "decode" and recipe.new_tokens <= 1:
            continue  # the trace names the phase, but no decode step ran
        estimated = max(est.phase_total(p) for p in est.phases if p.kind.step == step)
        assert estimated == pytest.approx(peak, rel=0.03), step
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.03)

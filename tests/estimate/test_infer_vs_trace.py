"""Inference estimates against a traced prefill and decode of the real transformers model (fake tensors)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_configs import BLOOM, FAMILIES, GPT_BIGCODE, HEADS, MISTRAL_WINDOW

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
    kv = est.term("kv_cache").bytes
    kept = min(setup.tokens, spec.attention.sliding_window or setup.tokens)
    assert kv >= traced.kv_cache and kv - traced.kv_cache <= kv / kept
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.03)

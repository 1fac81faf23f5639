"""Inference estimates against a traced prefill and decode of the real transformers model (fake tensors)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramwise.estimate.inference import estimate_inference
from vramwise.spec.adapters import spec_from_config
from vramwise.verify.trace import InferRecipe, trace_inference
from vramwise.workload import InferSetup

CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "intermediate_size": 688,
        "vocab_size": 8000,
        "tie_word_embeddings": False,
    },
    "mistral": {  # a 64-token window: the cache keeps the window, the prefill's views and a boolean mask
        "model_type": "mistral",
        "hidden_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "intermediate_size": 688,
        "vocab_size": 8000,
        "sliding_window": 64,
    },
    "phi3": {
        "model_type": "phi3",
        "hidden_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "intermediate_size": 688,
        "vocab_size": 8000,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "gpt2": {"model_type": "gpt2", "n_embd": 256, "n_layer": 3, "n_head": 8, "vocab_size": 8000, "n_positions": 1024},
    "mixtral": {
        "model_type": "mixtral",
        "hidden_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "vocab_size": 8000,
    },
}
CASES = [
    (name, InferRecipe(batch=b, context=s, new_tokens=n, all_logits=all_logits))
    for name in CONFIGS
    for b, s, n, all_logits in [(2, 256, 0, False), (4, 128, 16, False), (1, 512, 0, True)]
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
        cuda_context_mib=0,
        allocator_fraction=0.0,
    )
    est = estimate_inference(spec, setup)
    assert sum(t.bytes for t in est.persistent if t.name.startswith("weights/")) == traced.params
    # generate() never writes back the last new token, and a sliding window keeps window - 1 past tokens;
    # the estimate reserves both slots
    kv = est.term("kv_cache").bytes
    kept = min(setup.tokens, spec.attention.sliding_window or setup.tokens)
    assert kv >= traced.kv_cache and kv - traced.kv_cache <= kv / kept
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.03)

"""gpt_bigcode and bloom beyond their parameter counts (meta device: test_params_vs_transformers.py).

Oracles: the KV bytes per token and the buffer by hand from the modeling files; transformers' own KV cache of
a traced prefill is in tests/estimate/test_infer_vs_trace.py.
"""

from __future__ import annotations

import pytest
from tiny_configs import BLOOM, GPT_BIGCODE

from vramwise.errors import ConfigError
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.kv_cache import kv_elements_per_token
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import catalog_spec
from vramwise.spec.traits import Positions
from vramwise.workload import InferSetup


def _spec(config: dict):
    return spec_from_config(config, name="m", source="test")


def test_multi_query_caches_one_key_and_one_value_head() -> None:
    # GPTBigCodeAttention: kv_dim = head_dim when multi_query; 256 / 8 heads = 32
    assert kv_elements_per_token(_spec(GPT_BIGCODE)) == 2 * 32
    assert kv_elements_per_token(_spec({**GPT_BIGCODE, "multi_query": False})) == 2 * 256
    # StarCoder: 40 layers x 2 x 128 x 2 B = 20,480 B per token in bf16
    est = estimate_inference(catalog_spec("starcoder"), InferSetup(context=8192, kv_dtype="bf16", kv_block=1))
    assert est.term("kv_cache").bytes == 8192 * 40 * 2 * 128 * 2


def test_the_causal_mask_buffer_is_counted() -> None:
    est = estimate_inference(catalog_spec("starcoder"), InferSetup(context=128))
    assert est.term("buffers").bytes == 8192 * 8192  # torch.tril(torch.ones((8192, 8192), dtype=torch.bool))


def test_alibi_has_no_position_limit() -> None:
    spec = _spec(BLOOM)
    assert spec.traits.positions is Positions.ALIBI and not spec.traits.rotary
    assert spec.max_position_embeddings is None and spec.embedding.learned_positions == 0
    est = estimate_inference(spec, InferSetup(context=100_000))
    assert not [n for n in est.notes if "max_position_embeddings" in n]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({**BLOOM, "slow_but_exact": True}, "slow_but_exact"),
        ({**BLOOM, "n_head": 7}, "n_head"),
        ({**GPT_BIGCODE, "add_cross_attention": True}, "add_cross_attention"),
        ({**GPT_BIGCODE, "n_head": 6}, "n_head"),
        ({**BLOOM, "n_embed": 10**9}, "n_embed"),
    ],
)
def test_unsupported_configs_are_refused_naming_the_field(config: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        _spec(config)
    assert err.value.field == field and len(str(err.value).splitlines()) == 1

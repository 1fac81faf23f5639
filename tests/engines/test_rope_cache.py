"""The rotary cos/sin table vLLM and SGLang build at load (engines/rope_cache.py), by hand from their sources, and the
rope configuration it reads (spec/adapters/rope.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramwise.catalog import get_gpu
from vramwise.engines.rope_cache import rope_cache_term, table_rows
from vramwise.engines.sglang import sglang_plan
from vramwise.engines.vllm import vllm_plan
from vramwise.errors import ConfigError
from vramwise.spec.load import catalog_spec, spec_from_config
from vramwise.spec.rope import RopeSpec
from vramwise.workload import InferSetup

SHARED = Path("/work/shared/configs")
H100 = get_gpu("h100-80gb")


def catalog_spec_config(name: str) -> dict:
    from vramwise.catalog import models

    return dict(models()[name].config)


def _spec(name: str, **keys: object):  # type: ignore[no-untyped-def]
    return spec_from_config({**catalog_spec_config(name), **keys}, name=name, source="test")


LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


def test_llama_3_1_table_is_its_full_context_in_bf16() -> None:
    # Llama-3.1-8B's config.json: rope_scaling llama3, max_position_embeddings 131,072. get_rope builds
    # Llama3RotaryEmbedding with max_position (llama3 rescales frequencies, not positions): 131,072 rows x
    # rotary_dim 128 (cos 64 + sin 64) x bf16 2 B = 33,554,432 B, once for all 32 layers (_ROPE_DICT)
    spec = _spec("llama-3.1-8b", rope_scaling=LLAMA31_ROPE)
    assert spec.rope == RopeSpec(rope_type="llama3", factor=8.0, original_max_position=8192)
    term, note = rope_cache_term(spec, c=2, engine="vllm", release="0.11")
    assert note is None and term is not None and term.bytes == 131_072 * 128 * 2 == 33_554_432
    # the corpus's RTX 3090 logs: "Loading model weights took 14.9888 GB" (vLLM prints GiB): 8,030,261,248 bf16
    # parameters + the table = 16,094,076,928 B = 14.98879 GiB
    assert round((8_030_261_248 * 2 + 33_554_432) / 2**30, 4) == 14.9888


def test_weights_of_the_plan_include_the_table_once_and_whole_at_any_tp() -> None:
    spec = _spec("llama-3.1-8b", rope_scaling=LLAMA31_ROPE)
    for tp in (1, 2):
        plan = vllm_plan(spec, InferSetup.from_flat(engine="vllm", tp=tp), H100)
        terms = {t.name: t.bytes for t in plan.estimate.persistent}
        assert terms["weights/rope_cache"] == 33_554_432  # not split: each rank builds the whole table


def test_scaled_lengths_by_rope_type() -> None:
    # get_rope at v0.11.0 and each class's _compute_cos_sin_cache: linear and dynamic extend max_position by the
    # factor; yarn and deepseek_yarn build original x factor rows; longrope keeps short (original) + long (max)
    assert table_rows(RopeSpec(rope_type="default"), 4096, three_longrope_buffers=False) == 4096
    assert table_rows(RopeSpec(rope_type="linear", factor=2.0), 4096, three_longrope_buffers=False) == 8192
    assert table_rows(RopeSpec(rope_type="dynamic", factor=1.5), 4096, three_longrope_buffers=False) == 6144
    yarn = RopeSpec(rope_type="yarn", factor=4.0, original_max_position=32768)
    assert table_rows(yarn, 40960, three_longrope_buffers=False) == 131_072  # Qwen3's documented YaRN setting
    longrope = RopeSpec(rope_type="longrope", factor=1.0, original_max_position=4096)
    # v0.7.3 on: only long_short_cos_sin_cache; v0.6.x and SGLang also keep short_ and long_cos_sin_cache
    assert table_rows(longrope, 131_072, three_longrope_buffers=False) == 4096 + 131_072
    assert table_rows(longrope, 131_072, three_longrope_buffers=True) == 2 * (4096 + 131_072)
    assert table_rows(RopeSpec(rope_type="ntk", factor=2.0), 4096, three_longrope_buffers=False) is None
    assert table_rows(RopeSpec(rope_type="yarn", factor=4.0), 4096, three_longrope_buffers=False) is None


def test_an_unmodelled_rope_type_is_named_not_guessed() -> None:
    spec = _spec("llama-3-8b", rope_scaling={"rope_type": "ntk", "factor": 2.0})
    term, note = rope_cache_term(spec, c=2, engine="vllm", release="0.11")
    assert term is None and note is not None and "'ntk' not modelled" in note
    plan = vllm_plan(spec, InferSetup.from_flat(engine="vllm"), H100)
    assert any("'ntk' not modelled" in n for n in plan.notes)


def test_gpt_oss_table_is_fp32_and_sglang_keeps_every_table_in_fp32() -> None:
    # vLLM gpt_oss.py GptOssAttention: get_rope(head_dim 64, ..., dtype=torch.float32); yarn factor 32 x original
    # 4,096 = 131,072 rows x 64 x 4 B
    cfg = json.loads((SHARED / "gpt-oss-20b.json").read_text()) if SHARED.is_dir() else None
    if cfg is None:
        pytest.skip("the shared gpt-oss-20b config.json is not on this machine")
    spec = spec_from_config(cfg, name="gpt-oss-20b", source="test")
    term, _ = rope_cache_term(spec, c=2, engine="vllm", release="0.11")
    assert term is not None and term.bytes == 4096 * 32 * 64 * 4 == 33_554_432
    # SGLang 0.5.5 RotaryEmbedding.__init__: "cache needs to be in FP32" (no cast on CUDA): Llama-3-8B's 8,192 x
    # 128 x 4 B
    plan = sglang_plan(catalog_spec("llama-3-8b"), InferSetup.from_flat(engine="sglang"), H100)
    terms = {t.name: t.bytes for t in plan.estimate.persistent}
    assert terms["weights/rope_cache"] == 8192 * 128 * 4


def test_partial_rotary_and_mla_widths() -> None:
    # vLLM phi.py / get_rope: rotary_dim = int(head_size x partial_rotary_factor): Phi-2 0.4 x 80 = 32
    spec = _spec("phi-2", partial_rotary_factor=0.4)
    term, _ = rope_cache_term(spec, c=2, engine="vllm", release="0.11")
    assert term is not None and term.bytes == 2048 * 32 * 2
    # GPT-NeoX names it rotary_pct
    assert _spec("phi-2", rotary_pct=0.25).rope == RopeSpec(partial_rotary_factor=0.25)


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        ({"rope_scaling": "llama3"}, "rope_scaling"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": -2}}, "factor"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": float("nan")}}, "factor"),
        ({"rope_scaling": {"rope_type": 3}}, "rope_type"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 0}},
         "original_max_position_embeddings"),
        ({"partial_rotary_factor": 1.5}, "partial_rotary_factor"),
    ],
)
def test_bad_rope_keys_are_one_line_errors_naming_the_field(keys: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        _spec("llama-3-8b", **keys)
    assert err.value.field == field and "\n" not in str(err.value)


def test_legacy_spellings_follow_vllms_patch_rope_scaling_dict() -> None:
    # vllm/transformers_utils/config.py patch_rope_scaling_dict: 'type' for 'rope_type', 'su' -> longrope
    spec = _spec("llama-3-8b", rope_scaling={"type": "su", "original_max_position_embeddings": 4096})
    assert spec.rope is not None and spec.rope.rope_type == "longrope"
    # transformers 5 names the dict rope_parameters
    assert _spec("llama-3-8b", rope_parameters={"rope_type": "linear", "factor": 2.0}).rope == RopeSpec(
        rope_type="linear", factor=2.0)


def test_gemma_3_has_a_second_table_for_its_sliding_layers() -> None:
    # vllm gemma3.py Gemma3Attention: sliding layers use rope_local_base_freq (Gemma3TextConfig's default 10,000,
    # so present in every Gemma 3) with rope_scaling {"rope_type": "default"}: a second _ROPE_DICT key. Gemma-3-1B:
    # 32,768 positions x head_dim 256 x bf16 2 B, twice
    spec = catalog_spec("gemma-3-1b")
    term, _ = rope_cache_term(spec, c=2, engine="vllm", release="0.11")
    assert spec.rope is not None and spec.rope.local_table
    assert term is not None and term.bytes == 2 * 32768 * 256 * 2
    # a config without max_position_embeddings: the table is named as not counted, not guessed
    vlm = catalog_spec("gemma-3-4b")
    assert vlm.max_position_embeddings is None
    term, note = rope_cache_term(vlm, c=2, engine="vllm", release="0.11")
    assert term is None and note is not None and "max_position_embeddings" in note

"""The values inside a config.json: every bad one is refused in one line naming its field (issue 11).

Each test mutates a tiny config of tests/tiny_configs.py (or a catalog config) as a reproducer of a finding in
the reliability report (C7, C8, H2, H3, W2, W8, U7, U8, U12) and asserts the VramwiseError the CLI turns into
one line and exit status 2. Oracles: the field the bad value sits in, the definition of a divisor, and the
published configs (shared + catalog), which must all stay well inside every bound.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tiny_configs import FAMILIES

from vramwise.catalog import models
from vramwise.cli import main
from vramwise.errors import ConfigError, VramwiseError
from vramwise.estimate.sharding import divisors
from vramwise.spec.adapters import MAX_PARAMS, language_config, spec_from_config
from vramwise.spec.adapters.config import SIZE_BOUNDS
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import total_params

SHARED = Path("/work/shared/configs")


def _spec(config: dict[str, Any]) -> ModelSpec:
    return spec_from_config(config, name="t", source="t.json")


def _refused(config: dict[str, Any], field: str, error: type[VramwiseError] = ConfigError) -> str:
    """The config is refused with ``error``, in one line, naming ``field`` (in the message and as .field)."""
    with pytest.raises(error) as info:
        _spec(config)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert field in message and info.value.field == field
    return message


def _with(family: str, **changes: Any) -> dict[str, Any]:
    return {**FAMILIES[family], **changes}


# -- C7 / H2 / W9: every size has a finite bound ------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "key", "value"),
    [
        ("llama", "vocab_size", 10**400),  # C7: OverflowError in the weights arithmetic before
        ("mixtral", "num_hidden_layers", 10**30),  # C7: OverflowError in tuple(range(L)) before
        ("llama", "num_hidden_layers", 10**9),  # H2: minutes of per-layer work before
        ("gpt2", "n_layer", 10**9),
        ("llama", "hidden_size", 10**30),  # W9: printed 10^34-byte tables before
        ("llama", "intermediate_size", 10**30),
        ("mixtral", "num_local_experts", 10**12),
        ("deepseek_v3", "n_routed_experts", 10**12),
        ("llama", "max_position_embeddings", 10**30),
    ],
)
def test_sizes_past_their_bound_are_refused(family: str, key: str, value: int) -> None:
    start = time.perf_counter()
    message = _refused(_with(family, **{key: value}), key)
    assert f"up to {SIZE_BOUNDS[key]:,}" in message
    assert len(message) < 200  # a 400-digit number is not echoed
    assert time.perf_counter() - start < 1  # O(1): no per-layer work happens before the check


@pytest.mark.parametrize(
    ("family", "key"), [("llama", "num_hidden_layers"), ("llama", "vocab_size"), ("gpt2", "n_embd")]
)
def test_each_bound_is_inclusive(family: str, key: str) -> None:
    bound = SIZE_BOUNDS[key]
    _refused(_with(family, **{key: bound + 1}), key)
    config = _with(family, **{key: bound})
    if key == "n_embd":
        config["n_head"] = 1
    assert _spec(config)  # the bound itself is accepted (the parameter total stays under MAX_PARAMS)


def test_the_product_of_sizes_is_bounded_too() -> None:
    # Each size within its bound, together 10,000 x 2^20 x 2^22 x 3 ~ 1.3e17 parameters > MAX_PARAMS (2^48).
    config = _with("llama", num_hidden_layers=10_000, hidden_size=2**20, intermediate_size=2**22)
    with pytest.raises(ConfigError) as info:
        _spec(config)
    assert "parameters" in str(info.value) and "\n" not in str(info.value)


def _real_configs() -> dict[str, dict[str, Any]]:
    configs = {f"catalog:{name}": dict(entry.config) for name, entry in models().items()}
    configs.update({str(p): json.loads(p.read_text()) for p in sorted(SHARED.glob("*.json"))})
    return configs


def test_every_published_config_is_ten_times_inside_every_bound() -> None:
    # Oracle: the published configs. The bounds are meant to be generous: none should come within 10x.
    for source, config in _real_configs().items():
        data = language_config(config)
        for key, bound in SIZE_BOUNDS.items():
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                assert value * 10 <= bound, (source, key, value, bound)
        assert total_params(_spec(config)) * 100 <= MAX_PARAMS, source


# -- C8: max_position_embeddings is validated ---------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "phi", "mixtral"])
@pytest.mark.parametrize("value", [[], {}, [4096], "4096", 0, -1, 4096.0, True])
def test_max_position_embeddings_must_be_a_positive_int(family: str, value: Any) -> None:
    _refused(_with(family, max_position_embeddings=value), "max_position_embeddings")


def test_max_position_embeddings_may_be_null_or_absent() -> None:
    assert _spec(_with("llama", max_position_embeddings=None)).max_position_embeddings is None
    assert _spec(_with("llama", max_position_embeddings=4096)).max_position_embeddings == 4096
    hash(_spec(_with("phi", max_position_embeddings=2048)))  # the unhashable list crashed here (C8)


# -- H3: the "allowed tp" divisors ---------------------------------------------------------------------------


def test_divisors_match_the_definition() -> None:
    for n in range(1, 3000):
        assert divisors(n) == [d for d in range(1, n + 1) if n % d == 0], n


def test_divisors_of_a_large_prime_are_instant() -> None:
    start = time.perf_counter()
    assert divisors(999_999_937) == [1, 999_999_937]  # the H3 reproducer's head count (a prime)
    assert divisors(2**40) == [2**i for i in range(41)]
    assert time.perf_counter() - start < 1


def test_h3_head_count_is_refused_by_its_bound() -> None:
    _refused(_with("llama", num_attention_heads=999_999_937, head_dim=16), "num_attention_heads")


# -- W2: top-k routing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "experts_key"),
    [
        ("mixtral", "num_local_experts"),
        ("gpt_oss", "num_local_experts"),
        ("qwen2_moe", "num_experts"),
        ("deepseek_v3", "n_routed_experts"),
    ],
)
def test_top_k_must_be_between_one_and_the_experts(family: str, experts_key: str) -> None:
    experts = FAMILIES[family][experts_key]
    message = _refused(_with(family, num_experts_per_tok=experts + 1), "num_experts_per_tok")
    assert experts_key in message
    _refused(_with(family, num_experts_per_tok=0), "num_experts_per_tok")
    assert _spec(_with(family, num_experts_per_tok=experts)).moe.top_k == experts  # every expert: allowed


# -- consistent head sizes -----------------------------------------------------------------------------------


def test_heads_must_divide_hidden_unless_head_dim_is_given() -> None:
    _refused(_with("llama", num_attention_heads=7, num_key_value_heads=7), "num_attention_heads")
    spec = _spec(_with("llama", num_attention_heads=7, num_key_value_heads=7, head_dim=32))
    assert spec.attention.head_dim == 32  # an explicit head_dim need not be hidden / heads (Gemma, Qwen3)


@pytest.mark.parametrize(
    ("family", "kv_key", "heads"),
    [("llama", "num_key_value_heads", 8), ("phi", "num_key_value_heads", None), ("falcon", "num_kv_heads", 8)],
)
def test_kv_heads_must_divide_heads(family: str, kv_key: str, heads: int | None) -> None:
    n = heads or FAMILIES[family]["num_attention_heads"]
    _refused(_with(family, **{kv_key: 3}), kv_key)  # 3 divides none of the tiny configs' 8 or 32 heads
    _refused(_with(family, **{kv_key: 2 * n}), kv_key)  # more KV heads than heads
    assert _spec(_with(family, **{kv_key: 1})).attention.num_kv_heads == 1  # MQA


@pytest.mark.parametrize("window", [0, -64, 64.5, "64", True])
def test_sliding_window_must_be_positive(window: Any) -> None:
    _refused(_with("llama", model_type="mistral", sliding_window=window), "sliding_window")
    _refused(_with("gemma2", sliding_window=window), "sliding_window")


def test_layer_types_entries_must_be_names() -> None:
    _refused(_with("gemma2", layer_types=[["full"], {}, 3]), "layer_types")  # unhashable entries: TypeError before


# -- W8: torch_dtype -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("torch_dtype", "int3"),
        ("torch_dtype", 123),
        ("torch_dtype", "float64"),
        ("torch_dtype", ["bfloat16"]),
        ("dtype", "auto"),
        ("dtype", "fp16"),
    ],
)
def test_unknown_dtype_is_refused(key: str, value: Any) -> None:
    message = _refused(_with("llama", **{key: value}), key)
    assert "bfloat16" in message  # the allowed spellings are listed


@pytest.mark.parametrize(
    ("value", "short"),
    [
        ("float16", "fp16"),
        ("bfloat16", "bf16"),
        ("float32", "fp32"),
        ("torch.float16", "fp16"),
        ("torch.bfloat16", "bf16"),
        (None, "fp32"),
    ],
)
def test_dtype_spellings_transformers_writes(value: Any, short: str) -> None:
    # transformers: PretrainedConfig.to_dict writes str(dtype).split(".")[1]; absent or null loads float32.
    assert _spec(_with("llama", torch_dtype=value)).stored_dtype == short
    assert _spec(_with("llama", dtype=value)).stored_dtype == short


# -- U7 / U8 / U12: values echoed in errors ------------------------------------------------------------------


def test_model_type_is_echoed_escaped() -> None:
    evil = "x'\nTraceback (most recent call last):\n\x1b[31mboom\x1b[0m"
    with pytest.raises(VramwiseError) as info:
        _spec(_with("llama", model_type=evil))
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and "\\n" in message


def test_a_huge_value_is_cut_in_the_message() -> None:
    message = _refused(_with("llama", hidden_size="9" * 10_000_000), "hidden_size")  # U8: 10 MB echoed before
    assert len(message) < 300


def test_an_int_too_long_to_print_is_described() -> None:
    # Python refuses to print an int of more than 4,300 digits (ValueError); an API caller can pass one.
    message = _refused(_with("llama", hidden_size=-(10**5000)), "hidden_size")
    assert "10^" in message and len(message) < 300


@pytest.mark.parametrize("value", [7, ["llama"], {"a": 1}, True])
def test_a_non_string_model_type_is_not_called_missing(value: Any) -> None:
    message = _refused(_with("llama", model_type=value), "model_type")
    assert "must be a string" in message and "missing" not in message
    wrapped = {"model_type": value, "text_config": FAMILIES["llama"]}  # top-level list: TypeError before
    assert _spec(wrapped).model_type == "llama"
    message = _refused({"model_type": "x_vl", "text_config": {**FAMILIES["llama"], "model_type": value}}, "model_type")
    assert "must be a string" in message


def test_missing_model_type_still_says_missing() -> None:
    config = dict(FAMILIES["llama"])
    del config["model_type"]
    assert "is missing" in _refused(config, "model_type")


def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c7.json"
    path.write_text(json.dumps(_with("mixtral", num_hidden_layers=10**30)))
    assert main(["infer", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "num_hidden_layers" in err

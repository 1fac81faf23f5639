"""What ``--gpu`` accepts, and the GPU catalog's integrity.

Oracles: expectations written by hand (each size's bytes as arithmetic on 2^30 or 10^9; each alias's entry as
the label a user expects), and the catalog file itself read as raw TOML (every entry names a source URL and both
totals, and the visible total never exceeds the reported one).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vramwise.catalog import gpus, parse_gpu, parse_size
from vramwise.errors import UnknownGpuError

CATALOG = Path(__file__).parents[2] / "src/vramwise/catalog/gpus.toml"

VALID = [
    # text, count, catalog name (or None: a custom size), budget bytes (None: the catalog entry's own)
    ("H100", 1, "h100-80gb", None),
    ("h100", 1, "h100-80gb", None),
    ("h100-80gb", 1, "h100-80gb", None),
    ("4090", 1, "rtx-4090", None),
    ("rtx4090", 1, "rtx-4090", None),
    ("RTX 4090", 1, "rtx-4090", None),
    ("rtx_4090", 1, "rtx-4090", None),
    ("a100", 1, "a100-80gb", None),  # a bare family name: its largest common variant
    ("mi300x", 1, "mi300x", None),
    ("m3-max", 1, "m3-max-128gb", None),
    ("T4", 1, "t4", None),
    ("2x4090", 2, "rtx-4090", None),
    ("2 x 4090", 2, "rtx-4090", None),
    ("8xH100", 8, "h100-80gb", None),
    ("8XH100", 8, "h100-80gb", None),
    ("1xa100", 1, "a100-80gb", None),
    ("24GiB", 1, None, 24 * 2**30),  # 25,769,803,776
    ("24GB", 1, None, 24 * 10**9),
    ("24 gib", 1, None, 24 * 2**30),
    ("80GB", 1, None, 80_000_000_000),
    ("1.5TiB", 1, None, 3 * 2**39),  # 1.5 x 2^40
    ("16384MiB", 1, None, 16 * 2**30),
    ("4x24GiB", 4, None, 24 * 2**30),
    ("2x10.5GB", 2, None, 10_500_000_000),
]


@pytest.mark.parametrize(("text", "count", "name", "budget"), VALID)
def test_valid_forms(text: str, count: int, name: str | None, budget: int | None) -> None:
    choice = parse_gpu(text)
    assert choice.count == count
    if name is None:
        assert choice.gpu.custom and choice.gpu.smi_bytes is None
        assert choice.gpu.memory_bytes == budget
    else:
        assert choice.gpu.name == name


INVALID = [
    ("24", "no unit"),  # a bare number: 2^30 or 10^9?
    ("80G", "ambiguous"),
    ("80g", "ambiguous"),
    ("24 GiBs", "unknown unit"),
    ("0GiB", "more than 0"),
    ("17TiB", "at most 16TiB"),
    ("0x4090", "count must be 1"),
    ("100001xH100", "count must be 1"),
    ("4x24", "no unit"),
    ("2x", "a count needs a GPU after it"),
    ("h1000", "did you mean: h100-80gb"),
    ("rtx-4900", "did you mean"),
    ("", "empty"),
    ("   ", "empty"),
    ("nvidia", "unknown GPU"),
]


@pytest.mark.parametrize(("text", "says"), INVALID)
def test_invalid_forms_are_one_line_naming_the_field(text: str, says: str) -> None:
    with pytest.raises(UnknownGpuError) as err:
        parse_gpu(text)
    assert says in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.field == "gpu" and err.value.allowed and "24GiB" in err.value.allowed


def test_size_units_by_hand() -> None:
    assert parse_size("1GiB") == 1_073_741_824
    assert parse_size("1GB") == 1_000_000_000
    assert parse_size("1MiB") == 1_048_576
    assert parse_size("2TB") == 2_000_000_000_000
    # 21,845 x 1,048,576 = 22,906,142,720; 0.34 x 1,048,576 = 356,515.84; whole bytes: 22,906,499,235
    assert parse_size("21845.34 MiB") == 22_906_499_235


RAW = tomllib.loads(CATALOG.read_text(encoding="utf-8"))
SEGMENTS = {"datacenter", "workstation", "consumer", "laptop", "amd", "apple"}


@pytest.mark.parametrize("name", list(RAW))
def test_every_entry_has_a_source_and_both_totals(name: str) -> None:
    raw, gpu = RAW[name], gpus()[name]
    assert raw["source"].startswith("https://"), name
    assert raw["segment"] in SEGMENTS
    assert gpu.smi_bytes is not None and gpu.smi_bytes > 0
    assert 0 < gpu.memory_bytes <= gpu.smi_bytes  # the framework never sees more than the vendor tool reports
    assert gpu.confirmed == ("visible" in raw and raw.get("confirmed", True))
    if raw["segment"] not in ("amd", "apple"):
        assert "compute_capability" in raw and "bf16" not in raw  # NVIDIA: bf16 follows from the capability
    else:
        assert isinstance(raw["bf16"], bool)


def test_aliases_are_unique() -> None:
    seen: dict[str, str] = {}
    for name, g in gpus().items():
        for word in (name, *g.aliases):
            key = word.replace("-", "").replace("_", "").replace(".", "").lower()
            assert seen.setdefault(key, name) == name, f"{word}: {seen[key]} and {name}"


def test_published_visible_totals_by_hand() -> None:
    table = gpus()
    # H100 80GB: nvidia-smi 81,559 MiB = 85,520,809,984 B (79.65 GiB); torch 79.11 GiB = 84,943,715,696 B
    assert table["h100-80gb"].smi_bytes == 85_520_809_984
    assert table["h100-80gb"].memory_bytes == 84_943_715_696
    # A100 40GB: deviceQuery "40339 MBytes (42298834944 bytes)"; 40,339 x 1,048,576 = 42,298,359,808 < that
    assert table["a100-40gb"].memory_bytes == 42_298_834_944
    # M2 Max 96 GB: recommendedMaxWorkingSetSize 73,728 MiB = 72 GiB = 3/4 of 96 GiB
    assert table["m2-max-96gb"].memory_bytes * 4 == table["m2-max-96gb"].smi_bytes * 3


def test_bf16_follows_compute_capability() -> None:
    table = gpus()
    assert not table["t4"].bf16 and not table["v100-32gb"].bf16 and not table["p100"].bf16  # 7.5, 7.0, 6.0
    assert table["a100-80gb"].bf16 and table["rtx-3090"].bf16 and table["h100-80gb"].bf16  # 8.0, 8.6, 9.0
    assert not table["m1-max-32gb"].bf16 and table["m2-max-96gb"].bf16
    assert table["mi300x"].bf16

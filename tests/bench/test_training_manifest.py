"""The training corpus (bench/data/training/manifest.toml) is well formed: every case names its source link, a
figure and unit bench/training.py knows, its model and GPU, and the settings it ran with; ids are unique; the
issue's minimum of 25 published measurements is met. The figures themselves are the sources' (each case links
it); this only guards the data and that the bench's option bridge never crashes on a name it does not know."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
CORPUS = BENCH / "data" / "training"
CASES = tomllib.loads((CORPUS / "manifest.toml").read_text(encoding="utf-8"))["case"]
FIELDS = ("id", "source", "where", "date", "framework", "framework_version", "model", "catalog", "gpu", "gpus",
          "figure", "value", "unit", "outcome", "settings", "assumed", "note")
# bench/training.py's tables, restated so that a change to either is a deliberate one
FIGURES = {"max_memory_allocated", "active_peak", "unstated", "max_memory_reserved", "nvidia-smi", "oom"}
UNITS = {"bytes", "MiB", "GiB", "MB", "GB"}


def test_ids_unique_and_enough() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    measured = [c for c in CASES if c["outcome"] == "measured"]
    assert len(measured) >= 25  # issue 14, Targets: at least 25 published GPU measurements


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_fields(case: dict[str, object]) -> None:
    missing = [name for name in FIELDS if name not in case]
    assert not missing, missing
    assert str(case["source"]).startswith("https://github.com/") or str(case["source"]).startswith("https://")
    assert case["figure"] in FIGURES
    assert case["unit"] in UNITS and case.get("read_as", "GiB") in UNITS
    assert case["outcome"] in ("measured", "oom")
    assert isinstance(case["gpus"], int) and case["gpus"] >= 1
    assert isinstance(case["settings"], dict) and case["settings"]
    assert isinstance(case["assumed"], list)
    if case["outcome"] == "oom":
        assert case["figure"] == "oom"
    else:
        assert isinstance(case["value"], int | float) and case["value"] > 0
        assert case["figure"] != "oom"
    assert isinstance(case.get("config_overrides", {}), dict)
    if "seq_mean" in case:  # a run of varied lengths: its mean below its longest batch (the bench's --range)
        assert isinstance(case["seq_mean"], int) and 1 <= case["seq_mean"] <= case["settings"]["seq"]  # type: ignore[index]
    for name in ("reserved_99th", "reserved_avg"):  # a run's other reserved figures: never above its max
        if name in case:
            assert case["figure"] == "max_memory_reserved" and case["unit"] == "bytes"
            assert isinstance(case[name], int) and 0 < case[name] <= case["value"]  # type: ignore[operator]
    if "reserved_99th" in case and "reserved_avg" in case:
        assert case["reserved_avg"] <= case["reserved_99th"]  # type: ignore[operator]
    if case["figure"] == "unstated":  # the bench compares it with some figure: the case must say which and why
        assert any("figure" in a for a in case["assumed"])  # type: ignore[attr-defined]


def test_unknown_settings_are_listed_not_fatal() -> None:
    """A setting this commit has no option for is reported as not applied, never raised."""
    spec = importlib.util.spec_from_file_location("bench_training", BENCH / "training.py")
    assert spec is not None and spec.loader is not None
    training = importlib.util.module_from_spec(spec)
    sys.modules["bench_training"] = training  # its dataclasses look their module up while being built
    spec.loader.exec_module(training)

    options, skipped = training.options_of({"batch": 2, "no_such_knob_xyz": True, "lora_targets": ["q_proj", "v_proj"]})
    assert options == {"batch": 2, "lora_targets": "q_proj,v_proj"}
    assert skipped == ["no_such_knob_xyz=true (no such option on this commit)"]
    assert training.measured_bytes({"outcome": "measured", "value": 1.5, "unit": "GiB"}) == 3 * 2**29
    assert training.measured_bytes({"outcome": "measured", "value": 44.8, "unit": "GB", "read_as": "GiB"}) == round(
        44.8 * 2**30
    )

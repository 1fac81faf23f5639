"""The engine-log corpus (bench/data/engine_logs) is consistent with its manifest: every log is listed once with its
source and the fields bench/engines.py reads, and every file parses as the engine the manifest names with at least
one figure. The figures themselves are checked against hand arithmetic in test_logs.py; this only guards the data."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vramwise.engines.logs import load_log

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "data" / "engine_logs"
FIELDS = ("file", "source", "where", "engine", "version", "engine_repo", "engine_ref", "model", "gpu", "tp", "pp",
          "flags", "date", "note")
ENTRIES = tomllib.loads((CORPUS / "manifest.toml").read_text(encoding="utf-8"))["log"]


def test_every_log_listed_once() -> None:
    listed = [entry["file"] for entry in ENTRIES]
    assert len(listed) == len(set(listed)), sorted(f for f in listed if listed.count(f) > 1)
    assert sorted(listed) == sorted(p.name for p in CORPUS.glob("*.log"))
    # the issue asks for at least 30 public startup logs
    assert len(listed) >= 30


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry["file"] for entry in ENTRIES])
def test_entry_fields_and_parse(entry: dict[str, object]) -> None:
    missing = [name for name in FIELDS if name not in entry]
    assert not missing, missing
    assert str(entry["source"]).startswith("https://")
    assert isinstance(entry["tp"], int) and entry["tp"] >= 1
    assert isinstance(entry["pp"], int) and entry["pp"] >= 1
    assert isinstance(entry["flags"], list)
    parsed = load_log(CORPUS / str(entry["file"]))
    assert parsed.engine == entry["engine"]
    assert parsed.figures, "a corpus log must carry at least one figure"


CONFIGS = CORPUS / "configs"
WITH_CONFIG = [entry for entry in ENTRIES if "config" in entry]


@pytest.mark.parametrize("entry", WITH_CONFIG, ids=[entry["file"] for entry in WITH_CONFIG])
def test_committed_configs_exist_with_their_source(entry: dict[str, object]) -> None:
    """A manifest ``config`` is a committed config.json that the model resolver reads (as ``verify --log --model
    PATH`` does), and configs/README.md names where it was copied from."""
    from vramwise.spec.load import resolve_model

    path = CORPUS / str(entry["config"])
    assert path.parent == CONFIGS and path.is_file()
    resolve_model(str(path))
    assert f"| {path.name} |" in (CONFIGS / "README.md").read_text(encoding="utf-8")


def test_every_committed_config_is_used() -> None:
    used = {Path(str(entry["config"])).name for entry in WITH_CONFIG}
    assert used == {p.name for p in CONFIGS.glob("*.json")}


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry["file"] for entry in ENTRIES])
def test_bench_fields_are_well_formed(entry: dict[str, object]) -> None:
    """The optional fields bench/engines.py reads: options the excerpt does not print, a nominal GPU for a log that
    names none, figures not compared (each with its reason), and kv_from_log only with a nominal GPU."""
    from vramwise.catalog import parse_gpu
    from vramwise.engines.logs.parsed import FIGURE_NAMES

    assert isinstance(entry.get("options", {}), dict)
    if "nominal_gpu" in entry:
        parse_gpu(str(entry["nominal_gpu"]))
    dropped = entry.get("not_compared", {})
    assert isinstance(dropped, dict) and all(k in FIGURE_NAMES and str(v) for k, v in dropped.items())
    if entry.get("kv_from_log"):
        assert "nominal_gpu" in entry and entry["engine"] == "vllm"

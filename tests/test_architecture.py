"""Conventions the layout depends on: data flows one way, catalogs keep their schema, CI runs the README."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from vramwise.catalog import gpus, models

SRC = Path(__file__).resolve().parents[1] / "src" / "vramwise"
ROOT = SRC.parents[1]

# A stage may import from stages to its left only: config -> spec -> workload/formats -> estimate -> report -> cli.
FORBIDDEN = {
    "spec": ("vramwise.estimate", "vramwise.report", "vramwise.cli", "vramwise.workload"),
    "estimate": ("vramwise.report", "vramwise.cli", "vramwise.verify"),
    "report": ("vramwise.cli",),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_lower_stages_never_import_higher_ones(stage: str) -> None:
    for path in (SRC / stage).rglob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(FORBIDDEN[stage])}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_core_imports_no_torch() -> None:
    for path in SRC.rglob("*.py"):
        if "verify" in path.parts:
            continue
        heavy = {m for m in _imports(path) if m.split(".")[0] in ("torch", "transformers", "peft", "numpy")}
        assert not heavy, f"{path.relative_to(SRC)} imports {heavy}"


def test_public_names_load_and_infer_imports_no_training_code() -> None:
    import subprocess
    import sys

    import vramwise

    assert sorted(vramwise.__all__) == sorted(vramwise._EXPORTS)
    for name in vramwise.__all__:
        assert getattr(vramwise, name) is not None
    # A fresh `vramwise infer` loads the inference estimator only (its start-up time is a fit-issue target).
    probe = (
        "import contextlib, io, sys\n"
        "from vramwise.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['infer', 'llama-2-7b'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('vramwise.estimate.train', 'vramwise.fit', "
        "'vramwise.verify', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_model_catalog_schema() -> None:
    raw = tomllib.loads(resources.files("vramwise.catalog").joinpath("models.toml").read_text())
    assert len(raw) >= 25
    for name, entry in raw.items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", name), name
        assert set(entry) <= {"hf_id", "config", "nulls"}, name
        assert "/" in entry["hf_id"] and entry["config"]["model_type"], name
    for required in ("llama-2-7b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-20b"):
        assert required in models()


def test_gpu_catalog_schema() -> None:
    table = gpus()
    for required in (
        "h100-80gb",
        "h200",
        "a100-40gb",
        "a100-80gb",
        "l40s",
        "a10",
        "l4",
        "rtx-3090",
        "rtx-4090",
        "rtx-5090",
        "v100-16gb",
        "v100-32gb",
        "t4",
        "mi300x",
        "b200",
    ):
        assert required in table
    for gpu in table.values():
        assert 8 * 2**30 < gpu.memory_bytes < 256 * 2**30 and gpu.label


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert command, "README must mark its test command with <!-- test-command -->"
    assert command.group(1).strip() in (ROOT / ".ci" / "run").read_text()

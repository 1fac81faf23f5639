"""A few cases of bench/accuracy.py, run in the suite with the benchmark's own tolerance (median 3%, worst 8%)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

BENCH = Path(__file__).resolve().parents[2] / "bench" / "accuracy.py"


def _bench() -> ModuleType:
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))  # bench/peers.py sits beside it
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_accuracy"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_matrix_spans_the_required_breadth() -> None:
    bench = _bench()
    from vramwise.spec.load import catalog_spec

    assert len(bench.CASES) >= 40
    assert len({catalog_spec(c.model).model_type for c in bench.CASES}) >= 8
    assert any(c.infer for c in bench.CASES) and any(c.train and c.train.peft.method == "lora" for c in bench.CASES)


def test_small_cases_within_tolerance_and_states_exact() -> None:
    bench = _bench()
    wanted = ("qwen2.5-0.5b/fp32-adamw-b8-s1024", "pythia-160m/fp32-b8-s2048", "gpt2/infer-b8-s1008-n16")
    results = bench.run([c for c in bench.CASES if c.id in wanted])
    assert len(results) == len(wanted)
    for r in results:
        assert not r.error, r.error
        assert abs(r.peak_error) <= 0.03, (r.case.id, r.peak_error)
        assert all(e == m for e, m in r.exact.values()), (r.case.id, r.exact)

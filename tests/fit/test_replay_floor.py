"""Under the caching-allocator replay, searches skip the replay where the peak without any reserve already misses
(``Plan.floor``, ``training_floor``; fit/solve.py ``_misses``; app/advice.py ``_misses_without_reserve``).

Oracles: the floor against the rendered estimate's own terms (every phase's total less its allocator term), and
every answer against the same search with the shortcut switched off (the full replay at every probe), compared
field by field."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from vramwise.app import advice
from vramwise.app.run import TrainRequest
from vramwise.errors import DoesNotFitError
from vramwise.estimate.train.training import estimate_training, training_floor, training_peak
from vramwise.fit import solve
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

GIB = 1 << 30
# replayed setups: the three ways to turn the replay on, a dense and a MoE model (hundreds of expert tensors)
SETUPS = [
    ("llama-3.2-1b", dict(seq=2048, allocator_replay=True)),
    ("llama-3.2-1b", dict(seq=1024, expandable_segments=True, zero=3, dp=2)),
    ("qwen1.5-moe-a2.7b", dict(seq=512, max_split_size_mb=64, zero=3, dp=8)),
    ("qwen1.5-moe-a2.7b", dict(seq=512, expandable_segments=True, zero=3, dp=4, recompute="full")),
]


def _setup(flat: dict[str, Any]) -> TrainSetup:
    return TrainSetup.from_flat(**flat)


@pytest.mark.parametrize(("model", "flat"), SETUPS)
def test_floor_is_every_phase_less_its_allocator_term(model: str, flat: dict[str, Any]) -> None:
    spec, setup = catalog_spec(model), _setup(flat)
    assert setup.allocator.replayed
    est = estimate_training(spec, setup)
    persistent = sum(t.bytes for t in est.persistent)
    without = max(
        persistent + sum(t.bytes for t in p.transient if t.name != "overhead/allocator") for p in est.phases
    )
    assert training_floor(spec, setup) == without
    reserves = [t.bytes for p in est.phases for t in p.transient if t.name == "overhead/allocator"]
    assert reserves and min(reserves) >= 0  # what makes the floor a lower bound
    assert training_floor(spec, setup) <= training_peak(spec, setup) == est.peak_bytes


def _same_answer(a: solve.Answer, b: solve.Answer) -> None:
    assert (a.value, a.next_value, a.budget, a.stopped_by) == (b.value, b.next_value, b.budget, b.stopped_by)
    assert a.at == b.at
    assert a.beyond == b.beyond


def _both(fn: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """``fn()`` with the floor's shortcut, then without it (every probe replayed): results or refusals."""

    def run() -> Any:
        try:
            return fn()
        except DoesNotFitError as err:
            return str(err)

    fast = run()
    with monkeypatch.context() as m:
        m.setattr(solve, "_misses", lambda spec, setup, budget: False)
        slow = run()
    return fast, slow


@pytest.mark.parametrize(("model", "flat"), SETUPS)
@pytest.mark.parametrize("gib", [3, 9])
def test_min_gpus_equals_the_full_replay_search(
    model: str, flat: dict[str, Any], gib: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, setup = catalog_spec(model), _setup({k: v for k, v in flat.items() if k not in ("zero", "dp")})
    fast, slow = _both(lambda: solve.min_gpus(spec, setup, gib * GIB), monkeypatch)
    if isinstance(fast, str):
        assert fast == slow
    else:
        _same_answer(fast, slow)


@pytest.mark.parametrize(("model", "flat"), SETUPS)
def test_max_batch_equals_the_full_replay_search(
    model: str, flat: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, setup = catalog_spec(model), _setup(flat)
    budget = training_peak(spec, replace(setup, batch=3)) + 1  # a boundary near 3: misses past it are probed
    fast, slow = _both(lambda: solve.max_train(spec, setup, budget, "batch"), monkeypatch)
    _same_answer(fast, slow)
    too_small = training_floor(spec, setup) - 1  # batch 1 misses: the refusal's number is batch 1's peak
    fast, slow = _both(lambda: solve.max_train(spec, setup, too_small, "batch"), monkeypatch)
    assert isinstance(fast, str) and fast == slow


@pytest.mark.parametrize(
    ("model", "options", "gpu"),
    [
        ("llama-3.2-1b", {"seq": 2048, "batch": 4, "expandable_segments": True}, "2xrtx-4090"),  # pairs
        ("llama-3.2-1b", {"seq": 2048, "batch": 4, "max_split_size_mb": 64}, "rtx-4090"),
        ("qwen1.5-moe-a2.7b", {"seq": 1024, "allocator_replay": True}, "2xh100"),  # single changes, more GPUs
    ],
)
def test_training_advice_equals_the_full_replay_advice(
    model: str, options: dict[str, Any], gpu: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = TrainRequest(model=model, options=options, gpu=gpu)
    fast = advice.advise_train(req)
    with monkeypatch.context() as m:
        m.setattr(advice, "_misses_without_reserve", lambda req: False)
        slow = advice.advise_train(req)
    assert fast and fast == slow

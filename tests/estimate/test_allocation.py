"""The training estimate's allocator term: the step's allocations replayed through the caching-allocator model.

Oracles: the replay at the stage's full depth (what the per-layer summary extrapolates), at the workload's own
shapes; the allocator rules (tests/estimate/test_allocator_model.py); the layout search's extrapolation against
the exact estimate; and the flat override's arithmetic.
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.allocator_model import load_reserves, replay_ops
from vramwise.estimate.plan import Vars
from vramwise.estimate.term import PhaseKind
from vramwise.estimate.train import allocation
from vramwise.estimate.train.training import (
    _vars,
    _worst_candidates,
    estimate_training,
    phase_totals,
    training_peak,
)
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

CASES = [
    ("llama-2-7b", {"seq": 2048}),
    ("llama-3-8b", {}),
    ("llama-3-8b", {"peft": "lora"}),
    ("llama-3-8b", {"dp": 8, "zero": 3}),
    ("llama-3-8b", {"recompute": "full", "batch": 4}),
    ("mistral-7b", {"recompute": "full", "batch": 8}),
    ("qwen2.5-7b", {"batch": 2}),
    ("llama-2-70b", {"tp": 8}),  # 80 layers: extrapolated from 16 and 32
]


REPLAY = TrainSetup.from_flat(allocator_replay=True)  # the replay is opt-in (workload/overheads.py)


def _step(name: str, flat: dict) -> tuple[allocation.StepTensors, tuple]:
    setup = TrainSetup.from_flat(**flat, allocator_replay=True)
    spec = catalog_spec(name)
    plan = _worst_candidates(spec, setup)[0]
    assert isinstance(plan.allocator, allocation.StepTensors)
    return plan.allocator, plan.allocator.sizes(_vars(spec, setup))


def _exact_step(s: allocation.StepTensors, v: Vars) -> int:
    """The steps' reserve replayed at the stage's full depth at ``v``: no summary."""
    r = replay_ops(allocation._step_ops(s, s.sizes(v), s.layers), s.config)
    return r.peak_reserved - r.peak_requested


def _exact(s: allocation.StepTensors, v: Vars) -> int:
    """The load's and the steps' reserves replayed at the stage's full depth at ``v``: no summary."""
    return load_reserves(s.outside_persistent, s.layer_persistent, s.layers, s.config)[-1] + _exact_step(s, v)


@pytest.mark.parametrize(("name", "flat"), CASES)
def test_summary_is_close_to_the_replay_at_full_depth(name: str, flat: dict) -> None:
    # the reserve is replayed at a micro-batch of one of the workload's sequences: the summary (the stage's depth,
    # or deeper stages extrapolated from 16 and 32 layers) against the replay of every layer
    s, _ = _step(name, flat)
    v = _vars(catalog_spec(name), TrainSetup.from_flat(**flat, allocator_replay=True))
    exact = _exact(s, allocation.micro_batch(v, 1))
    assert s.load_reserve + s.step_reserve(v) == pytest.approx(exact, rel=0.05, abs=64 << 20)


@pytest.mark.parametrize(("name", "flat"), CASES)
def test_a_third_step_adds_little(name: str, flat: dict) -> None:
    # allocation.STEPS = 2: the second step settles what the first's frees split; a third changes < 5%
    s, sizes = _step(name, flat)
    two = replay_ops(allocation._step_ops(s, sizes, s.layers, steps=2), s.config)
    three = replay_ops(allocation._step_ops(s, sizes, s.layers, steps=3), s.config)
    assert three.peak_requested == two.peak_requested
    assert three.peak_reserved - three.peak_requested == pytest.approx(two.peak_reserved - two.peak_requested, rel=0.05)


def test_the_term_states_the_replay_and_the_override_is_flat() -> None:
    spec = catalog_spec("llama-3-8b")
    est = estimate_training(spec, REPLAY)
    term = next(t for t in est.phases[0].transient if t.name == "overhead/allocator")
    assert "replay of" in term.formula and "CUDACachingAllocator.cpp" in term.formula
    # the solvers' number is the report's
    assert training_peak(spec, REPLAY) == est.peak_bytes
    # without --allocator-replay the default is the flat fraction, and no replay is built
    assert _worst_candidates(spec, TrainSetup())[0].allocator is None
    flat = estimate_training(spec, TrainSetup.from_flat(allocator_fraction=0.03))
    reserve = next(t for t in flat.phases[-1].transient if t.name == "overhead/allocator")
    tensors = sum(t.bytes for t in flat.persistent if not t.name.startswith("overhead/"))
    tensors += sum(t.bytes for t in flat.phases[-1].transient if not t.name.startswith("overhead/"))
    assert reserve.bytes == int(0.03 * tensors)


def test_allocator_settings_reach_the_replay() -> None:
    spec = catalog_spec("llama-3-8b")
    plain = _worst_candidates(spec, REPLAY)[0].allocator
    grown = _worst_candidates(spec, TrainSetup.from_flat(expandable_segments=True))[0].allocator
    capped = _worst_candidates(spec, TrainSetup.from_flat(max_split_size_mb=512))[0].allocator
    assert isinstance(grown, allocation.StepTensors) and isinstance(capped, allocation.StepTensors)
    assert isinstance(plain, allocation.StepTensors)
    assert (grown.config.expandable_segments, capped.config.max_split_size) == (True, 512 << 20)
    assert "expandable_segments" in grown.formula(_vars(spec, REPLAY), load=False)


@pytest.mark.parametrize("bad", [20, 0, -1, True, 1.5])
def test_max_split_size_mb_refused_in_one_line(bad: object) -> None:
    # CUDAAllocatorConfig.cpp parseMaxSplitSize: must be > kLargeBuffer / MiB = 20
    with pytest.raises(InvalidWorkloadError, match="max_split_size_mb must be an integer above 20"):
        TrainSetup.from_flat(max_split_size_mb=bad)


def test_one_layers_templates_written_out_by_hand() -> None:
    # two saved tensors (10, 20 bytes), three weight gradients (1, 2, 3): forward keeps 0 and 2, its temporaries
    # 1 and 3 live until the next saved tensor; backward's gradients 0, 1 replace each other, frees saved tensor
    # j as -1 - j, and the weights' gradients (keys 2, 3, 4) appear spread over the two ops
    free = -1
    assert allocation._layer_forward((10, 20)) == [(0, 10), (1, 10), (2, 20), (1, free), (3, 20), (3, free)]
    assert allocation._layer_backward((10, 20), (1, 2, 3)) == [
        (0, 20), (2, 1), (-2, free),  # the last op: its input gradient, one weight gradient, frees saved tensor 1
        (1, 10), (0, free), (3, 2), (4, 3), (-1, free),
        (1, free),
    ]  # fmt: skip


def test_every_step_allocation_is_freed_but_the_states() -> None:
    s, sizes = _step("llama-3-8b", {})
    live: dict[int, int] = {}
    for key, size in allocation._step_ops(s, sizes, 3):
        if size >= 0:
            assert key not in live
            live[key] = size
        else:
            del live[key]
    # torch's AdamW creates its two states per parameter in the first step, and keeps them
    assert sorted(live.values()) == sorted(s.outside_states + s.layer_states * 3)
    assert len(s.layer_states) == 2 * len(s.layer_grads) > 0


def test_deepspeed_creates_the_states_before_the_first_step() -> None:
    # DeepSpeed's ZeRO optimizers allocate their states at construction (initialize_optimizer_states): in the load
    s, _ = _step("llama-3-8b", {"dp": 8, "zero": 1})
    assert s.layer_states == () and s.outside_states == ()


def test_the_loss_backward_gradients_are_two_tensors() -> None:
    s, sizes = _step("llama-3-8b", {})
    (rule,) = s.loss_temporaries
    assert rule.tensors == 2 and sizes[3] == (rule.bytes(_vars(catalog_spec("llama-3-8b"), REPLAY)) // 2,) * 2


@pytest.mark.parametrize("seq", [512, 4096, 16384])
def test_the_reserve_is_the_replay_at_the_workloads_own_shapes(seq: int) -> None:
    # Llama 3.2 1B: 16 layers, replayed at its depth (no extrapolation): the summary is the full replay, at the
    # workload's own sequence (no reference length scaled as a fraction)
    spec = catalog_spec("llama-3.2-1b")
    one = TrainSetup.from_flat(seq=seq, allocator_replay=True)
    s = _worst_candidates(spec, one)[0].allocator
    assert isinstance(s, allocation.StepTensors)
    v1 = _vars(spec, one)
    # the load does not depend on the shapes (its summary: test_summary_is_close_to_the_replay_at_full_depth)
    assert s.reserve(v1) == s.load_reserve + _exact_step(s, v1)
    v3 = _vars(spec, TrainSetup.from_flat(seq=seq, batch=3, allocator_replay=True))
    # three sequences: three times one's (the rules scale with the blocks: test_allocator_model.py)
    assert s.reserve(v3) == s.load_reserve + 3 * _exact_step(s, v1)


def test_the_reserve_is_linear_in_the_micro_batch() -> None:
    spec = catalog_spec("llama-3.2-1b")
    s = _worst_candidates(spec, REPLAY)[0].allocator
    assert isinstance(s, allocation.StepTensors)
    r = [s.reserve(_vars(spec, TrainSetup.from_flat(batch=b, allocator_replay=True))) for b in (1, 2, 3, 7)]
    slope = r[1] - r[0]
    assert slope == r[0] - s.load_reserve and r[2] == r[0] + 2 * slope and r[3] == r[0] + 6 * slope


@pytest.mark.parametrize("flat", [{}, {"recompute": "full"}, {"peft": "lora"}])
def test_the_layout_searchs_line_is_the_exact_estimate(flat: dict) -> None:
    # fit/layouts.py takes every phase at micro-batches 1 and 2 and extrapolates: with the replayed reserve the
    # line meets the exact estimate at any micro-batch (to the rounding of each term to whole bytes)
    spec = catalog_spec("llama-3.2-1b")
    one, two = (phase_totals(spec, TrainSetup.from_flat(**flat, batch=b, allocator_replay=True)) for b in (1, 2))
    for b in (3, 6):
        line = max(a + (c - a) * (b - 1) for a, c in zip(one, two, strict=True))
        assert abs(line - training_peak(spec, TrainSetup.from_flat(**flat, batch=b, allocator_replay=True))) <= 64


def test_the_load_phase_takes_the_loads_reserve() -> None:
    # the checkpoint's loading comes before the step: only the persistent tensors are allocated then
    spec = catalog_spec("llama-3.2-1b")
    setup = TrainSetup.from_flat(dp=8, fsdp="full", loading="fsdp-full", allocator_replay=True)
    est = estimate_training(spec, setup)
    s = _worst_candidates(spec, setup)[0].allocator
    assert isinstance(s, allocation.StepTensors)
    (load,) = [p for p in est.phases if p.kind is PhaseKind.LOAD]
    (term,) = [t for t in load.transient if t.name == "overhead/allocator"]
    assert term.bytes == s.load_reserve and "persistent tensors" in term.formula
    steps = [t for p in est.phases if p.kind is not PhaseKind.LOAD for t in p.transient if t.name == term.name]
    assert {t.bytes for t in steps} == {s.reserve(_vars(spec, setup))}


def test_micro_batch_vars() -> None:
    # Vars at b sequences of the same length: tokens, b·s² and the loss chunk scale with b (the chunk past its cap
    # stays capped: min(chunk, tokens) of one sequence, times b)
    v = Vars.training(4, 1024, 1, 256)
    assert allocation.micro_batch(v, 1) == Vars.training(1, 1024, 1, 256)
    assert allocation.micro_batch(v, 2) == Vars(1, 2, 2048, 2 * 1024 * 1024, 512, 1024)
    assert allocation.micro_batch(v, 4) is v

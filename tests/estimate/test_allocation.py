"""The training estimate's allocator term: the step's allocations replayed through the caching-allocator model.

Oracles: the replay at the stage's full depth (what the per-layer summary extrapolates), the allocator rules
(tests/estimate/test_allocator_model.py), and the flat override's arithmetic.
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.allocator_model import load_reserves, replay_ops
from vramwise.estimate.train import allocation
from vramwise.estimate.train.training import _vars, _worst_candidates, estimate_training, training_peak
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


def _step(name: str, flat: dict) -> tuple[allocation.StepTensors, tuple]:
    setup = TrainSetup.from_flat(**flat)
    spec = catalog_spec(name)
    plan = _worst_candidates(spec, setup)[0]
    assert isinstance(plan.allocator, allocation.StepTensors)
    return plan.allocator, plan.allocator.sizes(_vars(spec, setup))


@pytest.mark.parametrize(("name", "flat"), CASES)
def test_summary_is_close_to_the_replay_at_full_depth(name: str, flat: dict) -> None:
    s, sizes = _step(name, flat)
    exact = load_reserves(s.outside_persistent, s.layer_persistent, s.layers, s.config)[-1]
    r = replay_ops(allocation._step_ops(s, sizes, s.layers), s.config)
    exact += r.peak_reserved - r.peak_requested
    estimated = s.reserve(_vars(catalog_spec(name), TrainSetup.from_flat(**flat)))
    assert estimated == pytest.approx(exact, rel=0.05, abs=64 << 20)


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
    est = estimate_training(spec, TrainSetup())
    term = next(t for t in est.phases[0].transient if t.name == "overhead/allocator")
    assert "replay of" in term.formula and "CUDACachingAllocator.cpp" in term.formula
    # the solvers' number is the report's
    assert training_peak(spec, TrainSetup()) == est.peak_bytes
    flat = estimate_training(spec, TrainSetup.from_flat(allocator_fraction=0.03))
    reserve = next(t for t in flat.phases[-1].transient if t.name == "overhead/allocator")
    tensors = sum(t.bytes for t in flat.persistent if not t.name.startswith("overhead/"))
    tensors += sum(t.bytes for t in flat.phases[-1].transient if not t.name.startswith("overhead/"))
    assert reserve.bytes == int(0.03 * tensors)


def test_allocator_settings_reach_the_replay() -> None:
    spec = catalog_spec("llama-3-8b")
    plain = _worst_candidates(spec, TrainSetup())[0].allocator
    grown = _worst_candidates(spec, TrainSetup.from_flat(expandable_segments=True))[0].allocator
    capped = _worst_candidates(spec, TrainSetup.from_flat(max_split_size_mb=512))[0].allocator
    assert isinstance(grown, allocation.StepTensors) and isinstance(capped, allocation.StepTensors)
    assert isinstance(plain, allocation.StepTensors)
    assert (grown.config.expandable_segments, capped.config.max_split_size) == (True, 512 << 20)
    assert "expandable_segments" in grown.formula(0.01, 1 << 30)


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
    assert rule.tensors == 2 and sizes[3] == (rule.bytes(_vars(catalog_spec("llama-3-8b"), TrainSetup())) // 2,) * 2

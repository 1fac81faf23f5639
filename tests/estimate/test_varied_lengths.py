"""A run whose batches vary in length: the allocator replay over steps of different lengths (allocation.py
``StepTensors.varied_reserve``, ``VARIED``) and ``--range``'s bound over it (app/ranges.py).

Oracles: a hand-built step replayed by hand through the caching allocator's rules (best fit, split, a segment per
request larger than any free block: estimate/allocator_model.py, tests/estimate/test_allocator_model.py); the same
estimate run directly at the bound's settings; the published peak of peft's MetaMathQA full fine-tuning run
(bench/data/training/manifest.toml, peft-llama32-3b-full).
"""

from __future__ import annotations

import pytest

from vramwise.app.ranges import train_range
from vramwise.app.run import TrainRequest, train
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.allocator_model import AllocatorConfig, replay_ops
from vramwise.estimate.plan import Vars
from vramwise.estimate.train import allocation
from vramwise.estimate.train.allocation import StepTensors, at_sequence
from vramwise.estimate.train.training import _vars, _worst_candidates
from vramwise.spec.load import catalog_spec
from vramwise.units import MIB
from vramwise.workload import TrainSetup

LONG, SHORT, STATE = 100 * MIB, 60 * MIB, 10 * MIB


def _one_tensor_step(shorter: int) -> StepTensors:
    """One layer saving one tensor of 1 byte a token (with its forward temporary and its backward gradient of the
    same size), and an optimizer state of 10 MiB created by the first step: ``_steps_ops`` makes, per step,
    alloc saved, alloc temporary, free temporary, alloc gradient, free saved, free gradient (+ the state once)."""
    return StepTensors(
        layers=1, layer_persistent=(), outside_persistent=(), layer_grads=(), outside_grads=(), saved=(1.0,),
        rebuilt=0.0, held=(), loss_temporaries=(), step=(), layer_states=(STATE,), outside_states=(),
        config=AllocatorConfig(), shorter=shorter,
    )


def _waste(s: StepTensors, lengths: list[int]) -> int:
    r = replay_ops(allocation._steps_ops(s, [((n,), (), (), (), (), ()) for n in lengths], s.layers), s.config)
    return r.peak_reserved - r.peak_requested


def test_short_steps_keep_their_segments_beside_the_long_ones() -> None:
    s = _one_tensor_step(shorter=SHORT)
    # identical long steps: step 1 reserves two 100 MiB segments (saved; temporary, then the gradient in it); the
    # state splits the first (10 used, 90 free); step 2's saved takes the second, its temporary a third segment:
    # 300 MiB reserved for a peak of 10 + 100 + 100 = 210
    assert _waste(s, [LONG, LONG]) == 90 * MIB
    # shortest first: step 1 reserves two 60 MiB segments, the state splits the first (10 | 50 free); no free block
    # holds 100 MiB, so step 2 reserves two more of 100 (the 60s stay cached beside them); steps 3 and 4 reuse
    # them: 60 + 60 + 100 + 100 = 320 for the same 210
    assert _waste(s, [SHORT, LONG, SHORT, LONG]) == 110 * MIB
    # longest first: step 1 as above (10 | 90 free, and 100 free); the short step's saved splits the 90, its
    # temporary and gradient the free 100, all merged back when freed; step 3 as the identical steps' second
    assert _waste(s, [LONG, SHORT, LONG]) == 90 * MIB
    # the varied reserve is the largest of the three orders (allocation.VARIED), at the run's own tokens
    v = Vars(1, 1, LONG, LONG * LONG, LONG, LONG)
    assert at_sequence(v, SHORT).T == SHORT
    assert s.varied_reserve(v) == 110 * MIB
    assert s.reserve(v) == s.load_reserve + 110 * MIB
    # with the shortest equal to the workload's own sequence: identical steps, 90
    assert _one_tensor_step(shorter=LONG).varied_reserve(v) == 90 * MIB


def test_identical_lengths_replay_the_steps_alike() -> None:
    s = _one_tensor_step(shorter=0)
    sizes = ((LONG,), (), (), (), (), ())  # saved, rebuilt, held, loss temporaries, step, loss forward
    assert allocation._step_ops(s, sizes, 1) == allocation._steps_ops(s, (sizes,) * allocation.STEPS, 1)


def _plan(flat: dict) -> tuple[StepTensors, Vars]:
    setup = TrainSetup.from_flat(**flat)
    spec = catalog_spec("llama-3.2-1b")
    plan = _worst_candidates(spec, setup)[0]
    assert isinstance(plan.allocator, StepTensors)
    return plan.allocator, _vars(spec, setup)


@pytest.mark.parametrize("peft", ["lora", "none"])
def test_the_varied_reserve_is_never_under_identical_steps_at_the_micro_batch(peft: str) -> None:
    # VARIED holds the identical long steps: the bound's replay is never under their replay at the micro-batch
    s, v = _plan({"peft": peft, "batch": 2, "seq": 1024, "replay_min_seq": 256})
    identical = replay_ops(allocation._steps_ops(s, [s.sizes(v)] * 2, s.layers), s.config)
    assert s.shorter == 256
    assert s.varied_reserve(v) >= identical.peak_reserved - identical.peak_requested


def test_prompt_tuning_shortest_runs_with_its_virtual_tokens() -> None:
    s, v = _plan({"peft": "prompt-tuning", "num_virtual_tokens": 20, "seq": 512, "replay_min_seq": 128})
    assert (s.shorter, v.s) == (128 + 20, 512 + 20)  # PeftModelForCausalLM prepends them to every sequence


def test_the_default_estimate_keeps_one_sequence_replayed() -> None:
    s, v = _plan({"allocator_replay": True, "batch": 2})
    assert s.shorter == 0
    assert s.reserve(v) == s.load_reserve + 2 * s.step_reserve(v)
    assert TrainSetup().allocator.replay_min_seq is None


@pytest.mark.parametrize(("flat", "field"), [
    ({"seq": 512, "replay_min_seq": 1024}, "replay_min_seq"),
    ({"replay_min_seq": 0}, "replay_min_seq"),
    ({"replay_min_seq": True}, "replay_min_seq"),
])
def test_a_shortest_outside_the_sequence_is_one_line(flat: dict, field: str) -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        TrainSetup.from_flat(**flat)
    assert err.value.field == field and "\n" not in str(err.value)


def _figure(options: dict) -> int:
    return train(TrainRequest(model="llama-3.2-1b", options=options)).stages[0].estimate.peak_bytes


def test_range_bound_holds_the_varied_replay_up_to_max_seq() -> None:
    options = {"batch": 2, "seq": 256, "peft": "lora"}
    req = TrainRequest(model="llama-3.2-1b", options=options)
    rng = train_range(req, train(req), longest=1024)
    varied = {**options, "seq": 1024, "allocator_replay": True, "replay_min_seq": 256}
    assert rng.bound >= _figure(varied)
    assert rng.bound >= _figure({**varied, "expandable_segments": True})
    assert rng.bound >= rng.high
    # the sequence pinned: the bound holds identical steps replayed at the micro-batch
    pinned = train_range(req, train(req))
    assert pinned.bound >= _figure({**options, "allocator_replay": True, "replay_min_seq": 256})


def test_metamathqa_full_fine_tuning_peak_is_under_the_bound() -> None:
    # peft 51c2ff6 method_comparison/MetaMathQA/results/full-finetuning--llama-3.2-3B-lr_0.00001.json:
    # accelerator_memory_max 38,868,615,168 bytes (max_memory_reserved less the reserved bytes before the model
    # loads); batch 4, pure bf16, AdamW; batches from a mean of 210 tokens (train total tokens / train samples) to
    # 768. Compared as bench/training.py does: tensors and the allocator's reserve, no CUDA context.
    options = {"batch": 4, "seq": 210, "precision": "bf16", "optimizer": "adamw", "peft": "none",
               "recompute": "none", "attention": "sdpa", "loss": "full", "cuda_context": 0,
               "keep_logits": True}  # run.py train keeps ``outputs`` (the logits) until the next forward
    req = TrainRequest(model="llama-3.2-3b", options=options)
    rng = train_range(req, train(req), longest=768)
    assert rng.high < 38_868_615_168 <= rng.bound  # above the high (the replay of identical single sequences)

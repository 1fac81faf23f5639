"""torchtitan 9dec370's loss and the caching allocator with expandable segments, by hand.

train.py at 9dec370: ``pred = model(input_ids); loss = cross_entropy(pred.flatten(0, 1).float(), labels); del pred;
loss.backward()``. In forward the head's bf16 logits L (2·V per token), their fp32 copy F (4·V) and the saved
log-softmax S (4·V) are allocated in that order; L and F are freed before backward; nll_loss's backward then
allocates its fp32 gradient G1 (4·V) and log_softmax's backward its own G2 (4·V) while S is still saved.
With one expandable segment (torchtitan's run script: expandable_segments:True) laid out low to high:

    forward end   [L 2V][F 4V][S 4V]                 mapped 10V
    del pred      [free 6V][S 4V]                    (L and F merge)
    G1            [G1 4V][free 2V][S 4V]             best fit: the 6V block
    G2            [G1 4V][free 2V][S 4V][G2 4V]      no mapped free block of 4V: the segment grows
    peak          allocated 12V, mapped 14V: the 16-bit logits' 2V block sits idle

so the reserve at the loss backward is 2·V·T, which the plain tensor sum (12·V·T) does not have. The allocator model
is CUDACachingAllocator's (estimate/allocator_model.py): an expandable segment of the large pool maps kLargeBuffer
(20 MiB) at a time, so the sizes below are whole multiples of it.
"""

from __future__ import annotations

from dataclasses import replace

from vramwise.estimate.allocator_model import FREE, AllocatorConfig, replay_ops
from vramwise.estimate.term import Estimate
from vramwise.estimate.train import allocation
from vramwise.estimate.train.training import _vars, _worst_candidates, estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup
from vramwise.workload.frameworks import preset

V, H = 128256, 4096  # Llama-3.1-8B
PAGE = 20 * 1024 * 1024  # kLargeBuffer: the large pool's expandable segment grows by it


def test_the_loss_order_leaves_the_logits_block_idle_by_hand() -> None:
    t = 40960  # tokens: 2 B x V x T = 2^9 x 501 x 40960 = 2^22 x 5 x 501 x 6: a whole number of 20 MiB pages
    two_v = 2 * V * t
    assert two_v % PAGE == 0
    ops = [(0, two_v), (1, 2 * two_v), (2, 2 * two_v), (0, FREE), (1, FREE), (3, 2 * two_v), (4, 2 * two_v)]
    r = replay_ops(ops, AllocatorConfig(expandable_segments=True))
    assert r.peak_requested == 6 * two_v  # S, G1, G2: 12·V·T
    assert r.peak_reserved == 7 * two_v  # + the idle 2·V·T


SETTINGS = {
    "framework": "torchtitan",
    "batch": 1,
    "seq": 8192,
    "precision": "bf16-mixed",
    "grad_dtype": "fp32",
    "optimizer": "adamw",
    "optimizer_impl": "foreach",
    "recompute": "op-sac",
    "loss": "full",
    "dp": 8,
    "fsdp": "full",
}


def _train(**kw: object) -> Estimate:
    return estimate_training(catalog_spec("llama-3.1-8b"), TrainSetup.from_flat(**{**SETTINGS, **kw}))


def test_torchtitan_full_loss_forward_end_holds_logits_copy_and_log_softmax() -> None:
    est = _train(cuda_context_mib=0, allocator_fraction=0.0)
    t = 8192
    end = next(p for p in est.phases if p.name == "forward end")
    names = {x.name: x.bytes for x in end.transient}
    assert names["loss/logits"] == 2 * V * t
    assert names["loss/logits_fp32"] == 4 * V * t
    assert names["activations/loss"] == 4 * V * t
    # gone before backward: the loss backward holds the log-softmax and its two fp32 gradients only
    loss_bwd = next(p for p in est.phases if p.name == "backward (loss)")
    assert not {"loss/logits", "loss/logits_fp32"} & {x.name for x in loss_bwd.transient}


def test_torchtitan_preset_sets_expandable_segments_and_the_replay_keeps_the_idle_logits_block() -> None:
    setup = TrainSetup.from_flat(**preset(SETTINGS).flat)
    assert setup.allocator.expandable_segments  # torchtitan run_train.sh / 9dec370 run_llama_train.sh
    spec = catalog_spec("llama-3.1-8b")
    s = _worst_candidates(spec, setup)[0].allocator
    assert isinstance(s, allocation.StepTensors)
    assert [r.name for r in s.loss_forward] == ["loss/logits", "loss/logits_fp32"]
    v = _vars(spec, setup)
    without = replace(s, loss_forward=())
    # the 16-bit logits' block (2 x 8192 x V B = 2,101,346,304 B) idle at the loss backward's peak: the reserve is
    # at least that block (less the partial pages at a block's ends) ...
    idle = 2 * V * 8192
    assert s.step_reserve(v) >= idle - 2 * PAGE
    # ... and the two forward-only tensors add no more than it (the blocks the other tensors left unused may now
    # lie inside that hole, so the reserve grows by less than the whole block)
    assert s.step_reserve(v) - without.step_reserve(v) <= idle + 2 * PAGE

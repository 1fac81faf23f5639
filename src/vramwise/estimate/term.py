"""Terms and estimates: every number carries its name, bytes, formula and source."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Term:
    """One memory term on one GPU."""

    name: str  # hierarchical, e.g. "weights/attention", "kv_cache", "overhead/cuda_context"
    bytes: int
    formula: str  # the arithmetic with the user's numbers substituted
    source: str  # where the rule comes from (seed, paper, framework file)

    def __post_init__(self) -> None:
        if self.bytes < 0:
            raise ValueError(f"term {self.name} has negative bytes ({self.bytes})")  # a bug, not user input


class Step(enum.StrEnum):
    """The part of a run a phase falls in, named as a traced run splits it (``verify/trace.py`` phase peaks)."""

    PREFILL = "prefill"
    DECODE = "decode"
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer step"
    LOAD = "loading"  # before the first step: the checkpoint loaded, quantized and sharded (no trace has it)


class PhaseKind(enum.StrEnum):
    """Which moment of a run a phase is; the value is the name reports show (and JSON's ``phases[].name``)."""

    PREFILL_LAYER = "prefill (inside a layer)"
    PREFILL_LOGITS = "prefill (logits)"
    DECODE = "decode step"
    FORWARD_END = "forward end"
    BACKWARD_LOSS = "backward (loss)"
    BACKWARD_RECOMPUTE = "backward (recompute)"
    BACKWARD_LAYER = "backward (layer)"
    BACKWARD_HEAD = "backward (head)"
    BACKWARD_END = "backward end"
    OPTIMIZER_STEP = "optimizer step"
    PREFILL_VISION = "prefill (vision encoder)"  # a vision-language model's tower over the images, before the text
    # T5's encoder block 0 buckets the relative positions of every (query, key) pair before its attention
    # (modeling_t5.T5Attention.compute_bias): int64 (s, s) temporaries no other moment holds
    PREFILL_POSITION_BIAS = "prefill (position bias)"
    # training: the checkpoint loaded, quantized and sharded before the first step (estimate/train/loading.py)
    LOAD = "loading (checkpoint)"
    # FSDP2's forward at a layer's all-gather copy-out: the previous layer's all-gather output is still held
    # (torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py wait_for_unshard: freed after the next copy-out)
    FORWARD_LAYER = "forward (layer)"
    # DoRA rebuilds one adapted weight (W + s·BA) in fp32 for its norm during the forward (estimate/train/
    # peft_extras.py); the activations of the layers before it are held meanwhile
    FORWARD_DORA = "forward (DoRA weight norm)"
    # eager attention's backward in the last layer: the gradients of its (b, heads, s, s) scores beside every
    # layer's activations (estimate/train/backward_workspace.py)
    BACKWARD_ATTENTION = "backward (attention)"
    # a chunked head sharing one weight (torchtune's chunked output): autograd adds the second chunk's weight gradient
    # to the first's out of place, three weight-sized gradients at once (estimate/train/loss.py _head_chunks)
    BACKWARD_HEAD_CHUNKS = "backward (head chunks)"

    @property
    def step(self) -> Step:
        """The part of the run this moment belongs to: verify compares each part's peak with the trace's."""
        return _STEPS[self]


_STEPS = {
    PhaseKind.PREFILL_LAYER: Step.PREFILL,
    PhaseKind.PREFILL_LOGITS: Step.PREFILL,
    PhaseKind.DECODE: Step.DECODE,
    PhaseKind.FORWARD_END: Step.FORWARD,
    PhaseKind.BACKWARD_LOSS: Step.BACKWARD,
    PhaseKind.BACKWARD_RECOMPUTE: Step.BACKWARD,
    PhaseKind.BACKWARD_LAYER: Step.BACKWARD,
    PhaseKind.BACKWARD_HEAD: Step.BACKWARD,
    PhaseKind.BACKWARD_END: Step.BACKWARD,
    PhaseKind.OPTIMIZER_STEP: Step.OPTIMIZER,
    PhaseKind.PREFILL_VISION: Step.PREFILL,
    PhaseKind.PREFILL_POSITION_BIAS: Step.PREFILL,
    PhaseKind.LOAD: Step.LOAD,
    PhaseKind.FORWARD_LAYER: Step.FORWARD,
    PhaseKind.FORWARD_DORA: Step.FORWARD,
    PhaseKind.BACKWARD_ATTENTION: Step.BACKWARD,
    PhaseKind.BACKWARD_HEAD_CHUNKS: Step.BACKWARD,
}


@dataclass(frozen=True, kw_only=True)
class Phase:
    """A moment of the run (prefill, decode, ...) and the transient terms live only then."""

    kind: PhaseKind
    transient: tuple[Term, ...]

    @property
    def name(self) -> str:
        return self.kind.value

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.transient)


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """Per-GPU memory: persistent terms plus the transients of whichever phase peaks.

    ``peak_bytes`` is the max over phases of (persistent + that phase's transients): never the sum of the
    phases' maxima. ``terms`` lists exactly what is live at the peak, so the table adds up to the total.
    """

    persistent: tuple[Term, ...]
    phases: tuple[Phase, ...] = ()
    missing: tuple[str, ...] = ()  # terms that could not be computed, with the reason
    host: tuple[Term, ...] = ()  # host RAM per GPU's process (offloaded states), not part of the GPU peak
    notes: tuple[str, ...] = field(default=())

    @functools.cached_property
    def persistent_bytes(self) -> int:
        """Bytes live through the whole run, whichever phase it is in."""
        return sum(t.bytes for t in self.persistent)

    def phase_total(self, phase: Phase) -> int:
        """Per-GPU bytes during ``phase``: the persistent terms plus its transients."""
        return self.persistent_bytes + phase.bytes

    @property
    def peak_phase(self) -> Phase | None:
        return max(self.phases, key=lambda p: p.bytes) if self.phases else None

    @property
    def terms(self) -> tuple[Term, ...]:
        phase = self.peak_phase
        return self.persistent + (phase.transient if phase else ())

    @property
    def peak_bytes(self) -> int:
        return sum(t.bytes for t in self.terms)

    def term(self, name: str) -> Term:
        """The term called ``name`` among those live at the peak or in any phase."""
        for t in self.persistent + tuple(t for p in self.phases for t in p.transient):
            if t.name == name:
                return t
        raise KeyError(name)

    def bytes_of(self, prefix: str) -> int:
        """Sum of the live-at-peak terms whose name is ``prefix`` or starts with ``prefix/``."""
        return sum(t.bytes for t in self.terms if t.name == prefix or t.name.startswith(prefix + "/"))

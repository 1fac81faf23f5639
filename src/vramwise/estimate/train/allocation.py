"""The allocations one training step makes, replayed through the caching-allocator model for its reserve.

The estimate's terms are totals; the allocator sees tensors. This module turns one stage's plan back into the
tensors a step allocates, in the order PyTorch does, and replays them (``estimate/allocator_model.py``):

  load        every persistent tensor term (weights, fp32 master copy, optimizer states, persistent gradients)
              as one tensor per parameter, each its share of the term in proportion to the parameter's elements
              (DeepSpeed's and FSDP's flat buffers are one tensor in reality: the spread is an approximation);
  two steps   forward: each layer's saved tensors, one tensor per ``Saved.add`` of ``activations.py``, each
              with the op output beside it that is not saved, alive until the next saved tensor exists; then
              the tensors outside the layers and the loss's; the loss backward's temporaries come and go;
              backward: layer by layer from the last, op by op from the layer's last: the gradient of each saved
              tensor's shape replaces the one before, the saved tensor is freed, and the weights' gradients
              (when they do not persist) appear spread over the ops (full recompute: one layer rebuilt, then
              freed). These temporaries are what the traced step shows splitting the cached blocks
              (tests/estimate/test_allocator_vs_trace.py: the traced sequence as the oracle); the optimizer step's
              transients (one per parameter, as the persistent terms) come and go, then the gradients are
              freed (``zero_grad(set_to_none=True)``).

Summarised per layer kind: a stage deeper than the replay points runs a few identical layers (``LOAD_POINTS``,
``STEP_POINTS``) and extrapolates the reserve linearly to the stage's layers. The load and the steps are
replayed apart and their reserves added, each cached on what it depends on (``_load_reserve``,
``_step_reserve``): a layout search builds thousands of plans that share them.

At the workload's own shapes: the steps are replayed at a micro-batch of one of the workload's sequences (the
blocks' real sizes, which the allocator's rounding and segment rules act on), and the reserve is that replay's
times the micro-batch (``StepTensors.reserve``), in bytes. Linear in the micro-batch as every other term is, so
the layout search's two estimates per layout stay exact. (Until this, one replay at 4,096 tokens per GPU was
applied as a fraction of the tensors, which over-counted runs far from it: a 35% reserve for a 70B tp 8 step of
131,072.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from vramwise.estimate.allocator_model import FREE, AllocatorConfig, load_reserves, replay_ops
from vramwise.estimate.plan import Rule, Vars
from vramwise.estimate.train.layout import Stage, in_layer, stage_share
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.units import MIB
from vramwise.workload.layout import ParallelConfig

# Layers replayed: each pair fixes a per-layer slope (``_extrapolated``). The steps' reserve is irregular over
# the first layers (what the loss and the step leave cached is filled, then not) and linear past about eight: 8
# and 16 layers came within 5% of the replay at the full depth on Llama 2 7B, Llama 3 8B (full, LoRA, ZeRO-3,
# full recompute), Llama 2 70B ZeRO-3 tp 2, Llama 3.2 1B, Qwen2.5 7B and Mistral 7B with full recompute, where
# 2 and 3, 3 and 6, 4 and 8 or 6 and 12 missed some by 25% to 500% (tests/estimate/test_allocation.py)
LOAD_POINTS = ((2, 4), (4, 8))
# With the layers' temporaries in the replay (``_layer_forward``, ``_layer_backward``) the steps' reserve is not
# linear below about 16 layers and can step at any depth (ZeRO-3 Llama 3 8B: 2,265 MiB at 8 layers, 403 at 16,
# 2,549 at 24): a stage of up to 48 layers (16 + 32: no more than the two replays), every 7-8B model, is replayed
# at its own depth; deeper ones are extrapolated from 16 and 32 (Llama 2 70B tp 8: within 5% of the replay at 80)
STEP_POINTS = ((16, 32),)
# Steps replayed: the second forward finds the first's blocks split by what backward and the optimizer step put
# in them (per-parameter gradients and fp32 copies in freed activation blocks), so it reserves more; a third
# adds under 5% more on the typical cases (tests/estimate/test_allocation.py)
STEPS = 2
# A run whose batches differ in length (``StepTensors.shorter``): the steps alternate between the shortest and the
# longest sequence, starting with either (0: the shortest, 1: the longest). Starting short, the optimizer's states
# are created among the blocks a short step left, and each long step finds blocks cut to the short shapes (the
# larger of its tensors fit none of them, so the short step's segments stay reserved beside the long step's;
# the smaller split them); starting long, a short step splits the long step's blocks before the next long one.
# The alternation is the simplest order a shuffled or length-bucketed dataset makes (peft's MetaMathQA
# benchmark: buckets sorted longest first, method_comparison/MetaMathQA/utils.py BucketIterator). Neither order
# is always the worse, nor always worse than identical long steps (tests/estimate/test_varied_lengths.py), so the
# reserve is the largest of the three, as a bound takes the worst modelled order.
VARIED = ((0, 1, 0, 1), (1, 0, 1), (1, 1))
TORCH = "torch c10/cuda/CUDACachingAllocator.cpp @001074d2"
# What a replayed reserve cannot promise (workload/overheads.py AllocatorSettings.replay: why it is opt-in)
REPLAY_NOTE = (
    "allocator reserve replayed at this sequence: it is not monotone in the sequence (one logits-sized block "
    "finds a free block at one length and not at another), so fit's largest sequence under --allocator-replay "
    "is a bisection's answer, not the largest"
)


def at_sequence(v: Vars, s: int) -> Vars:
    """``v`` with every sequence ``s`` tokens long (the model's own, ``Vars.s``), the micro-batch kept: the tokens
    scale with the sequence (context parallelism's share kept), b·s² with its square."""
    if s == v.s or not v.s:
        return v
    tokens = v.T * s // v.s
    return Vars(1, v.b, tokens, v.b * s * s, min(v.chunk, tokens), s)


def micro_batch(v: Vars, b: int) -> Vars:
    """``v`` at a micro-batch of ``b`` sequences: the shapes the step is replayed at (``StepTensors.reserve``)."""
    if v.b == b:
        return v
    tokens = v.T // max(1, v.b) * b
    return Vars(1, b, tokens, v.bss // max(1, v.b) * b, min(v.chunk, v.T // max(1, v.b)) * b, v.s)


@dataclass(frozen=True, kw_only=True)
class StepTensors:
    """One stage's step as tensors: byte lists that do not vary across a plan, and rules that do."""

    layers: int  # decoder layers on the stage that record activations
    # persistent tensors of one layer and outside the layers (bytes each), in allocation order
    layer_persistent: tuple[int, ...]
    outside_persistent: tuple[int, ...]
    layer_grads: tuple[int, ...]  # gradients allocated in backward and freed after the step (empty: persistent)
    outside_grads: tuple[int, ...]
    saved: tuple[float, ...]  # bytes per token of each saved tensor of one layer (x micro-batches in flight)
    rebuilt: float  # full recompute: bytes per token of the layer rebuilt in backward, 0 otherwise
    held: tuple[Rule, ...]  # the forward's other tensors, held until backward ends (one tensor each)
    loss_temporaries: tuple[Rule, ...]
    step: tuple[Rule, ...]  # buffers of the step and backward's end (reduce buckets), one tensor each
    layer_step: tuple[int, ...] = ()  # the optimizer step's transients, one per parameter (fp32 gradients,
    outside_step: tuple[int, ...] = ()  # foreach's per-tensor results), one layer's and outside's
    # the optimizer's states when it creates them in the first step (torch's optimizers), one layer's and outside's
    layer_states: tuple[int, ...] = ()
    outside_states: tuple[int, ...] = ()
    config: AllocatorConfig
    # a run whose batches differ in length: the shortest sequence as the model runs it (prompt tuning's virtual
    # tokens included), from AllocatorSettings.replay_min_seq; 0: every step at the workload's own sequence
    shorter: int = 0
    # the loss's forward-only tensors (LossRules.forward: torchtitan's 16-bit logits and their fp32 upcast, both
    # freed before backward), allocated before the held tensors and freed once those exist: the order that leaves
    # their blocks free beside the saved log-softmax while the loss backward's gradients look for room
    loss_forward: tuple[Rule, ...] = ()

    def sizes(
        self, v: Vars
    ) -> tuple[tuple[int, ...], ...]:
        """What varies with the workload variables: the saved tensors, the rebuilt layer's, the held tensors,
        the loss temporaries, the step's transients and the loss's forward-only tensors, in bytes."""
        t = v.T
        rebuilt = (self.rebuilt,) if self.rebuilt else ()
        return (
            tuple(round(p * t) for p in self.saved),
            tuple(n for n in (round(p * t) for p in rebuilt) if n),
            tuple(r.bytes(v) for r in self.held),
            tuple(size for r in self.loss_temporaries for size in [r.bytes(v) // r.tensors] * r.tensors),
            tuple(r.bytes(v) for r in self.step),
            tuple(r.bytes(v) for r in self.loss_forward),
        )

    @functools.cached_property
    def load_reserve(self) -> int:
        """Reserved − requested once the persistent tensors are allocated: the load's reserve, the LOAD phase's."""
        return _load_reserve(self)

    def step_reserve(self, v: Vars) -> int:
        """The steps' reserve at a micro-batch of one of ``v``'s sequences (``micro_batch``), memoised per plan."""
        key = micro_batch(v, 1)
        memo = self._memo
        hit = memo.get(key)
        if hit is None:
            if len(memo) > 4096:
                memo.clear()
            hit = memo[key] = _step_reserve(self, self.sizes(key))
        return hit

    def reserve(self, v: Vars) -> int:
        """max_memory_reserved − the tensors' peak at ``v``: the load's reserve, and the steps' replayed at a
        micro-batch of one of the workload's own sequences (the blocks' real sizes) times the micro-batch.

        A micro-batch of b sequences makes the same allocations with the activations b times larger; the
        allocator's rules are scale-free on large blocks (best fit keeps the order of the sizes, a block splits
        when more than kSmallSize remains, a segment of kMinLargeAlloc or more is the request rounded to
        kRoundLarge: tests/estimate/test_allocator_model.py), so the bytes they leave unused grow with the
        blocks. Linear in the micro-batch, as every other term is: the layout search's two estimates per layout
        (fit/layouts.py) stay exact at every micro-batch. Against the replay of every layer at micro-batches 3 to
        8 (12 Llama, Mistral and Qwen setups): within 1.6% of the peak in the median, 30% at worst (one logits-
        sized block that finds a free block at one size and not at another), where a line through the replays
        at one and two sequences misses by 3.6% in the median (it extrapolates such a jump)."""
        if self.shorter:
            return self.load_reserve + self.varied_reserve(v)
        return self.load_reserve + max(1, v.b) * self.step_reserve(v)

    def varied_reserve(self, v: Vars) -> int:
        """The steps' reserve when the run's batches vary from ``shorter`` tokens a sequence to ``v``'s: steps of
        both lengths replayed in turn (``VARIED``: the larger of the two orders) at ``v``'s own micro-batch, not one
        sequence times b (the replay is not linear in the micro-batch: ``reserve``'s 30% worst case), measured
        against the tensors' peak (the longest step's). With ``shorter`` equal to ``v``'s sequence, the same steps
        at the micro-batch itself. What --range's bound runs (app/ranges.py), never a layout search."""
        memo = self._varied_memo
        hit = memo.get(v)
        if hit is None:
            if len(memo) > 4096:
                memo.clear()
            lengths = (self.sizes(at_sequence(v, min(self.shorter, v.s))), self.sizes(v))

            def waste(k: int) -> int:
                return max(_waste(_steps_ops(self, [lengths[i] for i in order], k), self.config) for order in VARIED)

            hit = memo[v] = _extrapolated(self.layers, waste, STEP_POINTS)
        return hit

    @functools.cached_property
    def _memo(self) -> dict[Vars, int]:
        return {}

    @functools.cached_property
    def _varied_memo(self) -> dict[Vars, int]:
        return {}

    def formula(self, v: Vars, load: bool) -> str:
        """What the replay was, at ``v``; ``load``: the LOAD phase's (the persistent tensors only)."""
        settings = ", expandable_segments" if self.config.expandable_segments else ""
        if self.config.max_split_size is not None:
            settings += f", max_split_size_mb {self.config.max_split_size // MIB}"
        source = f"through the caching-allocator model{settings}, {TORCH} (--allocator-fraction for a flat fraction)"
        if load:
            n = len(self.outside_persistent) + self.layers * len(self.layer_persistent)
            return f"reserved − allocated once the {n:,} persistent tensors are allocated, replayed {source}"
        deepest = max(sum(pair) for pair in STEP_POINTS)  # ``_extrapolated``: exact up to both replays' layers
        depth = f"{self.layers} layers" + (" extrapolated from fewer" if self.layers > deepest else "")
        if self.shorter:
            short = min(self.shorter, v.s)
            steps = (
                f"steps of {short:,} and {v.s:,} tokens a sequence in turn (shortest first, longest first, or only "
                "the longest; the largest)"
                if short < v.s
                else f"identical steps of {v.s:,} tokens a sequence"
            )
            return (
                f"load {self.load_reserve:,} + steps {self.varied_reserve(v):,}: reserved − allocated at the peak "
                f"of replays of the persistent tensors, then of {steps}, {depth}, at the micro-batch of {v.b} "
                f"itself {source}"
            )
        n = _allocations(self, self.sizes(micro_batch(v, 1)), self.layers)
        step = f"step {self.step_reserve(v):,}" + (f" x {v.b} sequences" if v.b > 1 else "")
        return (
            f"load {self.load_reserve:,} + {step}: reserved − allocated at the peak of a replay of the persistent "
            f"tensors, then of {n:,} allocations ({STEPS} steps, {depth}, one sequence of {micro_batch(v, 1).T:,} "
            f"tokens per GPU) {source}"
        )


def _step_ops(s: StepTensors, sizes: tuple, k: int, steps: int = STEPS) -> list[tuple[int, int]]:
    """``steps`` steps with ``k`` layers, every one at ``sizes``: (key, bytes) allocations, (key, -1) frees."""
    return _steps_ops(s, (sizes,) * steps, k)


def _steps_ops(s: StepTensors, per_step: Sequence[tuple], k: int) -> list[tuple[int, int]]:
    """One step per entry of ``per_step`` (each step's ``sizes``: a run whose batches differ in length), with ``k``
    layers: (key, bytes) allocations, (key, -1) frees.

    Every layer makes the same allocations, so one layer's forward and backward are written once as templates
    (``_layer_forward``, ``_layer_backward``) and repeated with their keys shifted: the replay's input is
    built in a few list comprehensions, not an op at a time."""
    # the backward frees the forward's saved tensors: negative template keys (-1 - j) name saved tensor j, the
    # forward's key 2j
    ops: list[tuple[int, int]] = []
    n = 0

    def alloc(sizes: tuple[int, ...]) -> list[int]:
        nonlocal n
        keys = list(range(n, n + len(sizes)))
        n += len(sizes)
        ops.extend(zip(keys, sizes, strict=True))
        return keys

    for i, sizes in enumerate(per_step):
        saved, rebuilt, held, loss_temporaries, step, loss_forward = sizes
        fwd = _layer_forward(saved)
        bwd = _layer_backward(saved, s.layer_grads)
        width_f, width_b = 2 * len(saved), len(saved) + len(s.layer_grads)
        bases = []
        for _ in range(k):
            bases.append(n)
            ops.extend([(n + key, size) for key, size in fwd])
            n += width_f
        before = alloc(loss_forward)
        outside = alloc(held)
        ops.extend((key, FREE) for key in before)
        ops.extend((key, FREE) for key in alloc(loss_temporaries))
        grads = alloc(s.outside_grads)
        for base in reversed(bases):
            again = alloc(rebuilt)  # full recompute: the layer rebuilt, one tensor, freed after its backward
            ops.extend([(n + key if key >= 0 else base - 2 * (key + 1), size) for key, size in bwd])
            grads += [n + key for key, size in bwd if size > 0 and key >= len(saved)]
            n += width_b
            ops.extend((key, FREE) for key in again)
        ops.extend((key, FREE) for key in outside)
        if i == 0:  # the optimizer's first step() creates its states, kept from then on
            alloc(s.outside_states)
            for _ in range(k):
                alloc(s.layer_states)
        transients = alloc(s.outside_step) + [key for _ in range(k) for key in alloc(s.layer_step)]
        ops.extend((key, FREE) for key in alloc(step) + transients)
        ops.extend((key, FREE) for key in grads)
    return ops


def _layer_forward(saved: tuple[int, ...]) -> list[tuple[int, int]]:
    """One layer's forward as (key, bytes | FREE) from key 0: each saved tensor (key 2j), and beside it the op
    output that is not saved (key 2j + 1: the fp32 norm's products, rotary's halves, the projections'
    pre-residual outputs, the same shape as what the op saves), alive until the next saved tensor exists."""
    ops: list[tuple[int, int]] = []
    for j, size in enumerate(saved):
        ops.append((2 * j, size))
        if j:
            ops.append((2 * j - 1, FREE))
        ops.append((2 * j + 1, size))
    if saved:
        ops.append((2 * len(saved) - 1, FREE))
    return ops


def _layer_backward(saved: tuple[int, ...], grads: tuple[int, ...]) -> list[tuple[int, int]]:
    """One layer's backward from its last op, as (key, bytes | FREE): each op's input gradient (the shape of what
    it saved; keys 0 to len(saved) - 1) replaces the one before, the op frees what it saved (key -1 - j: the
    forward's saved tensor j), and the weights' gradients (keys from len(saved)) appear as their ops are reached,
    spread evenly over the ops."""
    ops: list[tuple[int, int]] = []
    n, m = len(saved), len(saved)
    done = 0
    for step, j in enumerate(reversed(range(n))):
        ops.append((step, saved[j]))
        if step:
            ops.append((step - 1, FREE))
        upto = len(grads) * (n - j) // n
        ops += [(m + g, grads[g]) for g in range(done, upto)]
        done = upto
        ops.append((-1 - j, FREE))
    if n:
        ops.append((n - 1, FREE))
    ops += [(m + g, grads[g]) for g in range(done, len(grads))]
    return ops


def _waste(ops: list[tuple[int, int]], config: AllocatorConfig) -> int:
    r = replay_ops(ops, config)
    return r.peak_reserved - r.peak_requested


def _extrapolated(layers: int, waste: Callable[[int], int], points: tuple[tuple[int, int], ...]) -> int:
    """The reserve at ``layers`` from replays at fewer: the first pair of ``points`` whose reserve does not fall
    with depth sets the line; exact at the depth itself where none does, or where ``layers`` is no more than the
    pair's layers together.

    A reserve that falls with depth is one where the first layers fill what the loss and the step left cached
    (or the free ends of the load's 20 MiB segments): past a few layers it grows linearly again, so the next
    pair, deeper, is tried.
    """
    for low_k, high_k in points:
        if layers <= low_k + high_k:  # no deeper than the two replays together: one replay at the depth is cheaper
            return max(0, waste(layers))
        low, high = waste(low_k), waste(high_k)
        if high >= low:
            return round(low + (high - low) * (layers - low_k) / (high_k - low_k))
    return max(0, waste(layers))


# Caches on what each replay depends on: the load on the persistent tensors (not the batch, nor the stage's
# activations), the steps on the sizes at the workload's variables (not ZeRO's shards of the model states);
# neither on the stage's depth, which only the extrapolation reads
_LOADS: dict[tuple, list[int]] = {}
_STEPS: dict[tuple, int] = {}


def _cached(cache: dict[tuple, int], key: tuple, compute: Callable[[], int]) -> int:
    hit = cache.get(key)
    if hit is None:
        if len(cache) > 16384:
            cache.clear()
        hit = cache[key] = compute()
    return hit


def _load_reserve(s: StepTensors) -> int:
    """The load's reserve at the stage's depth, from replays at fewer layers (``LOAD_POINTS``), cached on the
    persistent tensors (the steps' tensors do not reuse the free ends of the load's segments: an overestimate of
    at most those ends, against thousands fewer replays)."""

    def load(k: int) -> int:
        key = (s.layer_persistent, s.outside_persistent, s.config)
        wastes = _LOADS.get(key)
        if wastes is None or len(wastes) < k:
            if len(_LOADS) > 16384:
                _LOADS.clear()
            depth = max(k, *(k for pair in LOAD_POINTS for k in pair))
            wastes = _LOADS[key] = load_reserves(s.outside_persistent, s.layer_persistent, depth, s.config)
        return wastes[k - 1]

    return _extrapolated(s.layers, load, LOAD_POINTS)


def _step_reserve(s: StepTensors, sizes: tuple) -> int:
    """The steps' reserve (``STEPS`` steps) at the stage's depth, from replays at fewer layers (``STEP_POINTS``)."""

    def step(k: int) -> int:
        grads = (s.layer_grads, s.outside_grads, s.layer_step, s.outside_step, s.layer_states, s.outside_states)
        key = (k, *grads, s.config, sizes)
        return _cached(_STEPS, key, lambda: _waste(_step_ops(s, sizes, k), s.config))

    return _extrapolated(s.layers, step, STEP_POINTS)


def _allocations(s: StepTensors, sizes: tuple, layers: int) -> int:
    """Allocations the full stage's step makes (what the extrapolated replay stands for)."""
    saved, rebuilt, held, loss_temporaries, step, loss_forward = sizes
    per_step = (
        # each saved tensor: itself and its forward temporary, and its gradient in backward (``_layer_forward``,
        # ``_layer_backward``), and the rebuilt layer
        layers * (3 * len(saved) + len(s.layer_grads) + len(rebuilt))
        + len(held)
        + len(loss_forward)
        + len(loss_temporaries)
        + len(s.outside_grads)
        + len(step)
        + len(s.outside_step)
        + layers * len(s.layer_step)
    )
    states = len(s.outside_states) + layers * len(s.layer_states)
    return len(s.outside_persistent) + layers * len(s.layer_persistent) + states + STEPS * per_step


@functools.lru_cache(maxsize=1024)
def parameter_tensors(spec: ModelSpec, stage: Stage, parallel: ParallelConfig) -> tuple[tuple[float, ...], ...]:
    """(elements of each parameter tensor of one layer, of each tensor outside the layers) on one GPU of
    ``stage``, before ZeRO: the shapes the persistent terms are spread over."""
    layer: list[float] = []
    outside: list[float] = []
    for g in parameter_groups(spec):
        held = g.count * stage_share(g, spec, stage, parallel)
        if not held:
            continue
        if in_layer(g):
            per_layer = max(1, round(g.tensors / spec.num_layers))
            layer += [held / len(stage.layers) / per_layer] * per_layer
        else:
            outside += [held / g.tensors] * g.tensors
    return tuple(layer), tuple(outside)


def spread(total: int, shapes: tuple[tuple[float, ...], ...], layers: int) -> tuple[tuple[int, ...], ...]:
    """``total`` bytes as one tensor per parameter, in proportion to its elements: (one layer's, outside's)."""
    layer, outside = shapes
    elements = layers * sum(layer) + sum(outside)
    if not total or not elements:
        return (), ()
    per = total / elements
    return _nonzero(e * per for e in layer), _nonzero(e * per for e in outside)


def _nonzero(sizes: Iterable[float]) -> tuple[int, ...]:
    return tuple(n for n in (round(x) for x in sizes) if n)

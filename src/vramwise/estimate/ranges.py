"""``--range``: low and high peaks over the stated uncertainties, and a bound; the arithmetic, without the runs.

An uncertainty is a setting the estimate had to assume (the allocator's behaviour, the sequence length, the
engine's release, the CUDA runtime) and a set of values it can take, each from a mechanism the project already
models, never a fitted margin. The application layer (``app/ranges.py``) runs the estimate at each value; this
module holds what does not need a run: which CUDA releases bracket the context table, what sequence lengths a
setup admits, how the runs combine into low, high and bound, and the allocator's one provable rule.

The caching allocator's rules (c10/cuda/CUDACachingAllocator.cpp @001074d2, ``DeviceCachingAllocator``):

- A sequence of allocations with no frees reserves at most ``own_segments``: each request either takes a free
  part of a segment already reserved (``get_free_block``: no new reserve) or reserves one new segment of
  ``get_allocation_size`` bytes for itself (``alloc_block``), so reserved <= the sum of every request's
  ``allocation_size(round_size(size))``. This bounds a model's load, whose weights are never freed.
- With frees there is no bound without the order of the requests. A small block taken from a large free cached
  block (best fit, ``get_free_block``) is split from it (``should_split``: more than ``kSmallSize`` left) and pins
  the whole segment: ``release_cached_blocks`` (empty_cache, and ``malloc``'s retry before an out-of-memory)
  frees only unsplit segments. Allocate 1 GiB, free it, allocate 2 MiB (it lands in the 1 GiB segment), then
  1.5 GiB: reserved is 2.5 GiB for 1.5 GiB + 2 MiB of tensors, and no release can return the 1 GiB segment
  (``tests/estimate/test_range_arithmetic.py`` replays it): the live tensors' sizes alone do not bound the
  reserve, their order does, and this project does not claim a worst case over every order. So the "bound" of
  ``--range`` takes, for the allocator, the worst of the orders the project models (the flat fraction, the
  replay of the step's allocations, with and without expandable segments, and, for a run whose batches vary in
  length, steps of the shortest and the longest in turn: blocks cached by one length are split by the other's
  tensors, estimate/train/allocation.py ``VARIED``); it is the worst modelled order, not a proof, and the report
  says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vramwise.estimate.allocator_model import allocation_size, round_size
from vramwise.estimate.cuda_context import LAZY_FROM, ROWS, context_row
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload.overheads import cuda_release

# what the report says of the bound's allocator part (module docstring)
ALLOCATOR_BOUND_NOTE = (
    "the allocator's part of the bound is the worst of the modelled allocation orders, not a proof: with frees, "
    "a small block split from a large cached segment pins all of it (CUDACachingAllocator.cpp get_free_block, "
    "should_split, release_cached_blocks), so no bound exists without the order"
)


@dataclass(frozen=True, kw_only=True)
class Uncertainty:
    """One assumption of the estimate, its low and high values, and the peaks there (the others as estimated)."""

    name: str  # "allocator", "sequence length", "engine release", "CUDA context"
    low: str  # the value at the low end, in words ("2,048 tokens (--seq)")
    high: str
    low_bytes: int  # the peak with this uncertainty at its low value and every other as the estimate has it
    high_bytes: int
    source: str  # where the values come from
    pinned: bool = False  # the user gave the value: low and high are the estimate's


@dataclass(frozen=True, kw_only=True)
class Range:
    """The estimate's peak between a low and a high, and a bound that the modelled behaviours never exceed."""

    estimate: int
    low: int  # every uncertainty at its low value together
    high: int  # every uncertainty at its high value together
    bound: int  # the high with the allocator at the worst of its modelled orders
    uncertainties: tuple[Uncertainty, ...]
    notes: tuple[str, ...] = ()


def own_segments(sizes: Iterable[int]) -> int:
    """Reserved bytes if every request got a segment of its own: the most an allocation-only sequence can reserve
    (module docstring). ``allocation_size(round_size(size))`` per request."""
    return sum(allocation_size(round_size(size)) for size in sizes)


def load_waste(spec: ModelSpec, weights_bytes: int) -> int:
    """The most a model's load can reserve beyond its weights: ``own_segments`` of the weights as one allocation per
    parameter tensor, never freed (transformers materializes each parameter once), less the weights. Each tensor's
    bytes are ``weights_bytes`` spread over the parameters in proportion to their elements (a quantized format's
    scales spread with them)."""
    groups = [g for g in parameter_groups(spec) if g.count and g.tensors]
    elements = sum(g.count for g in groups)
    if not elements or weights_bytes <= 0:
        return 0
    per = weights_bytes / elements
    reserved = sum(g.tensors * own_segments([round(g.count / g.tensors * per) or 1]) for g in groups)
    return max(0, reserved - weights_bytes)


def cuda_span(compute_capability: str | None) -> tuple[str, str]:
    """The CUDA releases whose context (``cuda_context.context_row`` on this GPU) is the smallest and the largest
    among the lazy-loading releases the table measured: the context's low and high when the user pins no release.
    Lazy only: every torch 2.x wheel ships a CUDA runtime of at least 11.7 (torch 2.0: cu117, cu118) and torch
    sets lazy loading from 1.13 (pytorch/pytorch#86509); the eager rows are torch 1.x's."""
    releases = sorted({row.cuda for row in ROWS if cuda_release(row.cuda) >= LAZY_FROM}, key=cuda_release)
    sized = [(context_row(compute_capability, r).row.bytes, cuda_release(r), r) for r in releases]
    return min(sized)[2], max(sized)[2]


def seq_span(given: int, limit: int | None, longest: int | None) -> tuple[int, str]:
    """The high end of a sequence length ``given`` as typical: the user's ``longest`` (``--max-seq``), else the
    model's position ``limit``, else ``given`` itself (nothing states a longer one), with where it comes from."""
    if longest is not None:
        return max(given, longest), "--max-seq"
    if limit is not None and limit > given:
        return limit, "the model's max_position_embeddings (config.json)"
    if limit is not None:
        return given, "the given length is already the model's max_position_embeddings"
    return given, "no position limit in the config: give --max-seq for a longer high"


def combine(estimate: int, lows: Sequence[int], highs: Sequence[int], bounds: Sequence[int]) -> tuple[int, int, int]:
    """(low, high, bound) from the peaks of the joint runs: the estimate is one of the settings each uncertainty
    takes, so the low is never above it, the high never below it, and the bound never below the high."""
    low = min((estimate, *lows))
    high = max((estimate, *highs))
    return low, high, max((high, *bounds))

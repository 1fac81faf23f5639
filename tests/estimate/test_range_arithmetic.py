"""``--range``'s arithmetic (estimate/ranges.py): each uncertainty's values written out by hand, and the allocator's
one provable rule held against the caching-allocator model on hand-built and random allocation sequences.

Oracles: c10/cuda/CUDACachingAllocator.cpp's constants (kSmallBuffer 2 MiB, kLargeBuffer 20 MiB, kMinLargeAlloc
10 MiB, kRoundLarge 2 MiB, kMinBlockSize 512 B) applied by hand; the context table's rows (estimate/cuda_context.py,
each a published measurement); the sequence-length rule as the module states it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vramwise.estimate.allocator_model import FREE, Alloc, EmptyCache, Free, replay, replay_ops
from vramwise.estimate.ranges import combine, cuda_span, own_segments, seq_span
from vramwise.units import GIB, MIB


def test_own_segments_by_hand() -> None:
    # 100 B: a small request, its own 2 MiB small segment; 1 MiB + 1 B: large, under 10 MiB, a 20 MiB segment;
    # 5 MiB: a 20 MiB segment; 30 MiB + 1 B: rounded up to 512 B, then to 2 MiB: 32 MiB
    assert own_segments([100, MIB + 1, 5 * MIB, 30 * MIB + 1]) == (2 + 20 + 20 + 32) * MIB


def test_allocations_share_segments_under_the_bound() -> None:
    # ten 1 MiB + 1 B requests, never freed: the first reserves 20 MiB, the next split its remainder while more
    # than 1 MiB is left (should_split); the bound counts 20 MiB each
    sizes = [MIB + 1] * 10
    r = replay_ops([(i, s) for i, s in enumerate(sizes)])
    assert r.peak_reserved <= own_segments(sizes) == 200 * MIB
    assert r.peak_reserved == 20 * MIB  # 10 x (1 MiB + 512 B) = 10.005 MiB fits one 20 MiB segment


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=64 * MIB), min_size=1, max_size=60))
def test_no_frees_never_reserve_more_than_own_segments(sizes: list[int]) -> None:
    r = replay_ops([(i, s) for i, s in enumerate(sizes)])
    assert r.peak_reserved <= own_segments(sizes)


def test_with_frees_a_small_block_pins_a_large_segment() -> None:
    # the module docstring's example: 1 GiB allocated and freed, 2 MiB lands in its segment (best fit, split),
    # then 1.5 GiB needs a segment of its own; empty_cache frees only unsplit segments, so 2.5 GiB stay reserved
    # for 1.5 GiB + 2 MiB of tensors: more than every live tensor in a segment of its own (1.5 GiB + 2 MiB)
    events = [Alloc(1, GIB), Free(1), Alloc(2, 2 * MIB), Alloc(3, 3 * GIB // 2), EmptyCache()]
    r = replay(events)
    assert r.reserved == GIB + 3 * GIB // 2
    assert r.reserved > own_segments([2 * MIB, 3 * GIB // 2])
    assert FREE < 0  # the replay's free marker (not an allocation size)


def test_cuda_span_by_hand() -> None:
    # sm_86 (RTX 3090): CUDA 12.8 is measured exactly at 256 MiB; 11.7 and 13.0 have no sm_86 row, so the largest
    # lazy row stands in (RTX 6000 Ada, CUDA 13.0: 426 MiB); the eager rows (CUDA < 11.7) are torch 1.x's, left out
    assert cuda_span("8.6") == ("12.8", "13.0")
    # sm_90 (H100): no row at all, every release reads the largest lazy row: low and high are the same bytes
    low, high = cuda_span("9.0")
    from vramwise.estimate.cuda_context import context_row

    assert context_row("9.0", low).row.bytes == context_row("9.0", high).row.bytes == 426 * MIB


def test_seq_span_by_hand() -> None:
    assert seq_span(2048, 8192, None)[0] == 8192  # the model's positions
    assert seq_span(2048, 8192, 4096)[0] == 4096  # --max-seq wins, even below the positions
    assert seq_span(8192, 8192, None)[0] == 8192  # already at the limit
    assert seq_span(2048, None, None)[0] == 2048  # nothing states a longer one: the source says so
    assert "--max-seq" in seq_span(2048, None, None)[1]


def test_combine_keeps_the_estimate_inside() -> None:
    assert combine(10, [8, 12], [15, 9], [14]) == (8, 15, 15)
    assert combine(10, [], [], []) == (10, 10, 10)
    assert combine(10, [11], [9], [20]) == (10, 10, 20)


def test_load_waste_by_hand_on_llama_3_8b() -> None:
    from vramwise.estimate.ranges import load_waste
    from vramwise.spec.load import resolve_model
    from vramwise.spec.params import total_params

    spec = resolve_model("llama-3-8b")
    # bf16, one segment per tensor: q, o (32 MiB), gate/up/down (112 MiB), the embeddings and the head (1,002 MiB)
    # are whole 2 MiB multiples: nothing; k and v (8 MiB, under kMinLargeAlloc) take 20 MiB each: 12 MiB apiece;
    # the 65 norms (8 KiB, small) a 2 MiB small segment each
    per_layer = 2 * 12 * MIB + 2 * (2 * MIB - 8 * 1024)
    assert load_waste(spec, 2 * total_params(spec)) == 32 * per_layer + (2 * MIB - 8 * 1024)

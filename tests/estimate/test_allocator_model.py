"""The caching-allocator model against sequences whose reserved bytes follow from the allocator's rules.

Oracle: pytorch c10/cuda/CUDACachingAllocator.cpp (commit 001074d2, see allocator_model.py); each expected
number is the rule's arithmetic, written out here. MiB = 1,048,576 B.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from vramwise.estimate.allocator_model import (
    FREE,
    Alloc,
    AllocatorConfig,
    EmptyCache,
    Free,
    Mark,
    allocation_size,
    replay,
    replay_ops,
    round_size,
)

M = 1 << 20
EXPANDABLE = AllocatorConfig(expandable_segments=True)


def test_round_size():
    assert round_size(1) == 512  # below kMinBlockSize: 512
    assert round_size(513) == 2 * 512  # up to a multiple of 512
    # roundup_power2_divisions 4: 5000 lies in [4096, 8192), steps of 4096 >> log2(4) = 1024: 5120
    assert round_size(5000, 4) == 4096 + 1024
    # only above kMinBlockSize x divisions = 2048: 1200 keeps the 512 rounding (1536)
    assert round_size(1200, 4) == 3 * 512
    assert round_size(8192, 4) == 8192  # a power of 2 stays


def test_allocation_size():
    assert allocation_size(M) == 2 * M  # small: kSmallBuffer
    assert allocation_size(M + 512) == 20 * M  # 1..10 MiB: kLargeBuffer
    assert allocation_size(10 * M) == 10 * M  # >= kMinLargeAlloc: up to kRoundLarge (2 MiB)
    assert allocation_size(11 * M + 1) == 12 * M


def test_small_pool_packs_2mib_segments():
    # 600 KiB = 614,400 B (a multiple of 512): 3 x 614,400 = 1,843,200 <= 2 MiB fit one segment, the 4th opens
    # a second: 2 x 2 MiB reserved
    r = replay([Alloc(i, 600 * 1024) for i in range(4)])
    assert r.peak_allocated == 4 * 614_400
    assert r.peak_reserved == 2 * 2 * M


def test_large_requests_under_10mib_share_a_20mib_segment():
    # 8 MiB: a 20 MiB segment, split (12 MiB > kSmallSize remain); the second 8 MiB fits the 12 MiB rest
    r = replay([Alloc(1, 8 * M), Alloc(2, 8 * M)])
    assert (r.peak_allocated, r.peak_reserved) == (16 * M, 20 * M)


def test_large_requests_round_to_2mib_and_unsplit_blocks_count_whole():
    # 11 MiB + 1 B: 512-rounded 11 MiB + 512, segment rounded to 12 MiB; remaining 1 MiB - 512 <= kSmallSize: no
    # split, so allocated_bytes counts the whole 12 MiB block
    r = replay([Alloc(1, 11 * M + 1)])
    assert (r.peak_allocated, r.peak_reserved) == (12 * M, 12 * M)


def test_best_fit():
    # cached free segments of 30 and 24 MiB; 22 MiB takes the 24 (best fit, 2 MiB > 1 MiB remain: split) and 28
    # takes the 30: no new segment, 54 MiB. Taking the 30 for the 22 would need a new 28 MiB segment.
    events = [Alloc(1, 30 * M), Alloc(2, 24 * M), Free(1), Free(2), Alloc(3, 22 * M), Alloc(4, 28 * M)]
    r = replay(events)
    assert r.peak_reserved == 54 * M
    assert r.allocated == 22 * M + 28 * M


def test_freed_neighbours_merge():
    # two 4 MiB blocks split from one 20 MiB segment; freed, they merge back, so 18 MiB fits without a new segment
    r = replay([Alloc(1, 4 * M), Alloc(2, 4 * M), Free(1), Free(2), Alloc(3, 18 * M)])
    assert r.peak_reserved == 20 * M


def test_max_split_size_keeps_oversize_blocks_whole():
    cfg = AllocatorConfig(max_split_size=40 * M)
    # a cached 50 MiB (oversize) block does not serve a 30 MiB request: a new 30 MiB segment, 80 MiB reserved
    events = [Alloc(1, 50 * M), Free(1), Alloc(2, 30 * M)]
    assert replay(events, cfg).peak_reserved == 80 * M
    # without max_split_size the 30 MiB splits the 50 MiB block (20 MiB > 1 MiB remain): 50 MiB reserved
    assert replay(events).peak_reserved == 50 * M
    # an oversize request takes a cached oversize block less than kLargeBuffer larger, whole: 42 + 20 > 50
    r = replay([Alloc(1, 50 * M), Free(1), Alloc(2, 42 * M)], cfg)
    assert (r.peak_reserved, r.allocated) == (50 * M, 50 * M)
    # but not one kLargeBuffer or more larger: 45 + 20 <= 70, so a new segment of 45 rounded to 2 MiB = 46 MiB
    r = replay([Alloc(1, 70 * M), Free(1), Alloc(2, 45 * M)], cfg)
    assert (r.peak_reserved, r.allocated) == (70 * M + 46 * M, 46 * M)


def test_oom_frees_oversize_cached_blocks_first():
    # capacity 80 MiB, max_split 40 MiB: a cached 60 MiB block; 35 MiB (segment 36 MiB) does not take it (oversize)
    # and 60 + 36 > 80: release_available_cached_blocks frees the 60 (>= max(35, 40) MiB), then 36 MiB fits
    cfg = AllocatorConfig(max_split_size=40 * M, capacity=80 * M)
    r = replay([Alloc(1, 60 * M), Free(1), Alloc(2, 35 * M), Mark("after")], cfg)
    assert r.oom is None
    assert r.marks["after"] == (36 * M, 36 * M)
    assert r.peak_reserved == 60 * M


def test_oom_frees_every_cached_block_then_retries():
    # capacity 50 MiB: a cached 30 MiB segment is too small for 40 MiB, and 30 + 40 > 50: release_cached_blocks
    # frees it and the retry gets 40 MiB
    r = replay([Alloc(1, 30 * M), Free(1), Alloc(2, 40 * M)], AllocatorConfig(capacity=50 * M))
    assert (r.oom, r.reserved, r.peak_reserved) == (None, 40 * M, 40 * M)
    # a split segment with a live block cannot be freed: 30 MiB live, another 30 MiB does not fit 50
    r = replay([Alloc(1, 30 * M), Alloc(2, 30 * M)], AllocatorConfig(capacity=50 * M))
    assert r.oom == 30 * M


def test_empty_cache_frees_only_unsplit_cached_segments():
    # a 20 MiB segment with one live 4 MiB block stays; a freed 30 MiB segment goes: 20 MiB reserved after
    events = [Alloc(1, 4 * M), Alloc(2, 8 * M), Alloc(3, 30 * M), Free(2), Free(3), EmptyCache(), Mark("e")]
    assert replay(events).marks["e"] == (4 * M, 20 * M)


def test_garbage_collection_threshold():
    # capacity 200 MiB x fraction 0.5 = 100 MiB allowed; threshold 0.5 x 100 = 50 MiB. Cached 30 + 30 = 60 > 50
    # when 40 MiB finds no block: both are as old as the average (1 get_free_block call), both freed, then 40
    cfg = AllocatorConfig(capacity=200 * M, memory_fraction=0.5, garbage_collection_threshold=0.5)
    events = [Alloc(1, 30 * M), Alloc(2, 30 * M), Free(1), Free(2), Alloc(3, 40 * M)]
    r = replay(events, cfg)
    assert (r.reserved, r.peak_reserved) == (40 * M, 60 * M)
    # without the threshold: 60 + 40 = 100 <= 100 allowed, kept
    assert replay(events, AllocatorConfig(capacity=200 * M, memory_fraction=0.5)).reserved == 100 * M


def test_expandable_segments_grow_by_20mib_pages():
    # 30 MiB maps 2 pages (40 MiB), 10 MiB stay free at the end; the next 30 MiB uses those 10 plus one more page
    # (60 MiB); the third maps 2 pages (100 MiB) where cudaMalloc segments would be 3 x 30 = 90 MiB
    events = [Alloc(i, 30 * M) for i in range(3)]
    assert replay(events, EXPANDABLE).peak_reserved == 100 * M
    assert replay(events).peak_reserved == 90 * M
    # where segments fragment, the expandable segment does not. 6 x 8 MiB: three 20 MiB segments of 8 + 8 (4 MiB
    # free each); free the first 8 of each: free blocks 4, 4, 4, 8, 8, 8 MiB, none fits 10 MiB, so 3 x 10 MiB
    # are three new 10 MiB segments: 60 + 30 = 90 MiB
    frag = [*[Alloc(i, 8 * M) for i in range(6)], Free(0), Free(2), Free(4), *[Alloc(10 + i, 10 * M) for i in range(3)]]
    assert replay(frag).peak_reserved == 3 * 20 * M + 3 * 10 * M
    # expandable: 48 MiB live maps 3 pages (60 MiB, 12 free at the tail); the first 10 takes the tail (2 left),
    # the second maps one more page (80 MiB) after those 2, the third takes the 12 left: 80 MiB
    assert replay(frag, EXPANDABLE).peak_reserved == 4 * 20 * M


def test_expandable_empty_cache_unmaps_whole_free_pages():
    # 12 MiB live at the start of a 20 MiB page, 30 MiB after it (pages 2-3 cover 12..42 MiB: 60 MiB mapped);
    # freeing the 30 MiB leaves 12..60 free: the whole pages 20..60 unmap, 20 MiB stay
    events = [Alloc(1, 12 * M), Alloc(2, 30 * M), Free(2), EmptyCache(), Mark("e")]
    r = replay(events, EXPANDABLE)
    assert r.peak_reserved == 60 * M
    assert r.marks["e"] == (12 * M, 20 * M)


def _sequences() -> st.SearchStrategy[list]:
    sizes = st.one_of(st.integers(1, 2 * M), st.integers(2 * M, 64 * M))
    return st.lists(st.tuples(st.booleans(), sizes), min_size=1, max_size=40)


def _events(ops: list[tuple[bool, int]]) -> list:
    events: list = []
    live: list[int] = []
    for i, (free, size) in enumerate(ops):
        if free and live:
            events.append(Free(live.pop(size % len(live))))
        else:
            events.append(Alloc(i, size))
            live.append(i)
        events.append(Mark(str(i)))
    return events


@settings(max_examples=60, deadline=None)
@given(_sequences(), st.booleans(), st.sampled_from([None, 30 * M]))
def test_reserved_covers_allocated(ops, expandable, max_split):
    events = _events(ops)
    cfg = AllocatorConfig(expandable_segments=expandable, max_split_size=max_split)
    r = replay(events, cfg)
    assert r.peak_reserved >= r.peak_allocated
    assert all(reserved >= allocated for allocated, reserved in r.marks.values())
    live = {e.key: e.size for e in events if isinstance(e, Alloc)}
    for e in events:
        if isinstance(e, Free):
            del live[e.key]
    assert r.allocated >= sum(round_size(s) for s in live.values())
    # freeing everything and emptying the cache returns every byte
    done = replay([*events, *[Free(k) for k in live], EmptyCache()], cfg)
    assert (done.allocated, done.reserved) == (0, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 64 * M), min_size=1, max_size=30))
def test_expandable_packs_allocations_without_frees(sizes):
    # with no frees every request maps at the segment's tail: each pool holds its bytes rounded to its pages, never
    # more than cudaMalloc's segments plus one page per pool
    events = [Alloc(i, s) for i, s in enumerate(sizes)]
    plain, grown = replay(events), replay(events, EXPANDABLE)
    small = sum(round_size(s) for s in sizes if round_size(s) <= M)
    large = sum(round_size(s) for s in sizes if round_size(s) > M)
    assert grown.peak_reserved == -(-small // (2 * M)) * 2 * M + -(-large // (20 * M)) * 20 * M
    assert grown.peak_reserved <= plain.peak_reserved + 20 * M + 2 * M
    assert grown.peak_allocated == small + large


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),  # free one of the live tensors (when any) instead of allocating
            st.one_of(
                st.integers(1, 1 << 20),  # small pool
                st.integers((1 << 20) + 1, 12 << 20),  # large pool, 20 MiB segments
                st.integers(12 << 20, 300 << 20),  # large pool, own segments
            ),
        ),
        max_size=120,
    )
)
def test_the_default_fast_path_replays_as_the_general_allocator(script: list[tuple[bool, int]]) -> None:
    # oracle: the general _Allocator (every rule, hand-checked above) under PyTorch's default settings
    ops: list[tuple[int, int]] = []
    live: list[int] = []
    for i, (release, size) in enumerate(script):
        if release and live:
            ops.append((live.pop(size % len(live)), FREE))
        else:
            ops.append((i, size))
            live.append(i)
    fast = replay_ops(ops)
    general = replay([Alloc(key=k, size=n) if n >= 0 else Free(key=k) for k, n in ops])
    assert fast == replace(general, marks={})


def _waste(ops: list[tuple[int, int]]) -> int:
    r = replay_ops(ops)
    return r.peak_reserved - r.peak_requested


def test_fragmentation_of_large_blocks_scales_with_their_sizes():
    # the estimate's reserve is linear in the micro-batch (estimate/train/allocation.py StepTensors.reserve): the
    # rules act alike on sizes scaled together. A 30 MiB and a 12 MiB segment; freeing the 30 and asking 24 takes
    # it by best fit and splits it (6 MiB > kSmallSize remain); 10 MiB (>= kMinLargeAlloc) fits no free block: a
    # new 10 MiB segment. Reserved 30 + 12 + 10 = 52, requested peak 24 + 12 + 10 = 46: the 6 MiB rest is waste
    def ops(c: int) -> list[tuple[int, int]]:
        return [(1, 30 * c * M), (2, 12 * c * M), (1, FREE), (3, 24 * c * M), (4, 10 * c * M)]

    assert _waste(ops(1)) == 6 * M
    # twice the sizes: the same fits, the same splits (12 MiB rest), segments of exactly the sizes: twice the waste
    assert _waste(ops(2)) == 12 * M
    assert _waste(ops(3)) == 18 * M


def test_segments_of_fixed_size_do_not_scale():
    # what the linear reserve approximates (allocation.py StepTensors.reserve): a 1..10 MiB request gets a 20 MiB
    # kLargeBuffer segment whatever its size, so its waste falls as it grows: 20 - 3 = 17 MiB, then 20 - 6 = 14
    assert _waste([(1, 3 * M)]) == 17 * M
    assert _waste([(1, 6 * M)]) == 14 * M

"""A model of PyTorch's CUDA caching allocator: replay allocations and frees, get reserved beside allocated.

Read from pytorch/pytorch c10/cuda/CUDACachingAllocator.cpp at commit 001074d25084fdb87a799823e395a50f5ec044d3
(the newest stored snapshot; torch 2.13's own commit cf30153c is not in the store) and CUDAAllocatorConfig.cpp
(``parseMaxSplitSize``). Every rule below names the function it follows (``DeviceCachingAllocator::<name>``):

- ``round_size``: requests round up to ``kMinBlockSize`` (512 B), or to a power-of-2 division with
  ``roundup_power2_divisions``;
- ``get_pool``: rounded sizes <= ``kSmallSize`` (1 MiB) use the small pool, larger ones the large pool;
- ``get_allocation_size``: a new small segment is ``kSmallBuffer`` (2 MiB); a large request under
  ``kMinLargeAlloc`` (10 MiB) gets a ``kLargeBuffer`` (20 MiB) segment, larger ones round up to ``kRoundLarge``
  (2 MiB);
- ``get_free_block``: best fit, the smallest free block of the pool that fits (ties: the lowest address); a block
  >= ``max_split_size`` serves only a request >= ``max_split_size`` and less than ``kLargeBuffer`` smaller;
- ``should_split``: the small pool (and any pool with expandable segments) splits when >= 512 B remain; the
  large pool splits a request under ``max_split_size`` when more than ``kSmallSize`` remains (else the request
  takes the whole block, and ``allocated_bytes`` counts the whole block);
- ``free_block`` / ``try_merge_blocks``: a freed block merges with free neighbours of its segment;
- ``malloc``: no free block -> ``garbage_collect_cached_blocks`` (only with ``garbage_collection_threshold`` and
  a per-process memory fraction) -> ``alloc_block`` (a new segment; fails past the device capacity or the
  fraction) -> ``release_available_cached_blocks`` (with ``max_split_size``: free oversize cached segments) and
  retry -> ``release_cached_blocks`` (free every unsplit cached segment, as ``empty_cache`` does) and retry ->
  out of memory;
- ``expandable_segments``: one segment per pool that grows by pages (``kSmallBuffer`` for the small pool,
  ``kLargeBuffer`` for the large, ``find_expandable_block``), mapped from its lowest free address
  (``try_allocate_expandable_block``, ``map_block``); releasing unmaps the whole free pages (``unmap_block``).

Not modelled: streams other than one (``recordStream``, events), CUDA graph private pools, IPC, the free-memory
callbacks, the per-interval list form of ``roundup_power2_divisions`` (one value for every size here). Segment
addresses are synthetic (each new segment above the last): they only break ties between equal free blocks.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from vramwise.units import MIB

# c10/cuda/CUDACachingAllocator.cpp, namespace Native, the constexpr block after Note [Interaction with CUDA graph
# capture] (kLargeBuffer sits above it, in cuda::CUDACachingAllocator, "externally used in CUDAAllocatorConfig")
K_MIN_BLOCK_SIZE = 512  # kMinBlockSize: "all sizes are rounded to at least 512 bytes"
K_SMALL_SIZE = 1 * MIB  # kSmallSize: "largest 'small' allocation is 1 MiB"
K_SMALL_BUFFER = 2 * MIB  # kSmallBuffer: "'small' allocations are packed in 2 MiB blocks"
K_MIN_LARGE_ALLOC = 10 * MIB  # kMinLargeAlloc: "allocations between 1 and 10 MiB may use kLargeBuffer"
K_ROUND_LARGE = 2 * MIB  # kRoundLarge: "round up large allocations to 2 MiB"
K_LARGE_BUFFER = 20 * MIB  # kLargeBuffer: "'large' allocations may be packed in 20 MiB blocks"
# CUDAAllocatorConfig.cpp parseMaxSplitSize: "max_split_size_mb too small, must be > kLargeBuffer / (1024 * 1024)"
MIN_MAX_SPLIT_SIZE_MB = K_LARGE_BUFFER // MIB + 1
FREE, RESET = -1, -2  # replay_ops' sizes that are not allocations: a free, torch.cuda.reset_peak_memory_stats
_UNLIMITED = 1 << 62  # no device capacity given: every cudaMalloc succeeds
_ADDRESS_SPACE = 1 << 50  # an expandable segment's virtual range when the capacity is unlimited


@dataclass(frozen=True, kw_only=True)
class AllocatorConfig:
    """PYTORCH_CUDA_ALLOC_CONF, and the device: what the replay depends on besides the events."""

    max_split_size: int | None = None  # bytes (max_split_size_mb x MiB); None: SIZE_MAX, the default
    roundup_power2_divisions: int = 0  # 0 or 1: off (the default)
    expandable_segments: bool = False
    garbage_collection_threshold: float = 0.0  # 0: off; acts only with memory_fraction (malloc's set_fraction)
    memory_fraction: float | None = None  # torch.cuda.set_per_process_memory_fraction
    capacity: int | None = None  # bytes cudaMalloc can get (the device's free memory); None: unlimited


@dataclass(frozen=True, slots=True)
class Alloc:
    """A tensor storage of ``size`` bytes is allocated; ``key`` names it for its ``Free``."""

    key: int
    size: int


@dataclass(frozen=True, slots=True)
class Free:
    key: int


@dataclass(frozen=True, slots=True)
class Mark:
    """Record reserved and allocated bytes under ``name`` (a phase boundary)."""

    name: str


@dataclass(frozen=True, slots=True)
class EmptyCache:
    """``torch.cuda.empty_cache()``: ``release_cached_blocks``."""


@dataclass(frozen=True, slots=True)
class ResetPeak:
    """``torch.cuda.reset_peak_memory_stats()``: the peaks restart from the current figures."""


Event = Alloc | Free | Mark | EmptyCache | ResetPeak


@dataclass(frozen=True, kw_only=True)
class Replay:
    """What the allocator's statistics would report after the events (``torch.cuda.memory_stats`` names)."""

    peak_allocated: int  # max_memory_allocated: block sizes, so a whole unsplit block counts
    peak_reserved: int  # max_memory_reserved: segments (expandable: mapped pages)
    peak_requested: int  # memory_stats' requested_bytes.all.peak: the sizes asked for, unrounded
    # at the requested peak, the reserved bytes no release can return (reserved − whole free segments or pages
    # − requested): rounding and the free parts of split segments, what a run near the device's limit still pays
    stuck_at_peak: int
    allocated: int  # at the end
    reserved: int  # at the end
    marks: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (allocated, reserved)
    allocations: int = 0  # Alloc events replayed
    segments: int = 0  # cudaMalloc calls (expandable: map calls)
    oom: int | None = None  # the size of the request that failed after every retry; the replay stops there


def round_size(size: int, divisions: int = 0) -> int:
    """``DeviceCachingAllocator::round_size``."""
    if size < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    if divisions > 1 and size > K_MIN_BLOCK_SIZE * divisions:
        return _roundup_power2_next_division(size, divisions)
    return -(-size // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE


def _roundup_power2_next_division(size: int, divisions: int) -> int:
    """``roundup_power2_next_division``: the next of ``divisions`` equal steps between two powers of 2."""
    if size & (size - 1) == 0:
        return size
    floor = 1 << (size.bit_length() - 1)
    step = floor >> (divisions.bit_length() - 1)  # power2_floor >> log2(divisions)
    if step == 0:
        return floor << 1
    low = size & ~(step - 1)
    return size if low == size else low + step


def allocation_size(size: int) -> int:
    """``DeviceCachingAllocator::get_allocation_size``: the segment a request that finds no free block gets."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE


class _Block:
    __slots__ = ("addr", "allocated", "expandable", "gc_base", "mapped", "next", "prev", "size", "small")

    def __init__(self, addr: int, size: int, small: bool, *, expandable: bool = False, mapped: bool = True) -> None:
        self.addr, self.size, self.small = addr, size, small
        self.allocated, self.mapped, self.expandable = False, mapped, expandable
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.gc_base = 0

    def is_split(self) -> bool:
        return self.prev is not None or self.next is not None


class _Pool:
    """A ``BlockPool``: free mapped blocks ordered by (size, address), unmapped ones by address."""

    def __init__(self, small: bool) -> None:
        self.small = small
        self.page = K_SMALL_BUFFER if small else K_LARGE_BUFFER  # find_expandable_block: segment_size
        self.keys: list[tuple[int, int]] = []
        self.blocks: dict[int, _Block] = {}  # by address
        self.unmapped: dict[int, _Block] = {}
        self.calls = 0  # get_free_blocks_call_count
        self.releasable = 0  # bytes release_cached_blocks would return: whole free segments or pages

    def insert(self, b: _Block) -> None:
        b.gc_base = self.calls
        bisect.insort(self.keys, (b.size, b.addr))
        self.blocks[b.addr] = b
        # the bytes release_cached_blocks would return of it, inlined: the estimate replays millions of these
        if b.expandable:  # its whole pages
            page = self.page
            n = (b.addr + b.size) // page * page - -(-b.addr // page) * page
            if n > 0:
                self.releasable += n
        elif b.prev is None and b.next is None:  # a whole segment
            self.releasable += b.size

    def erase(self, b: _Block) -> None:
        keys = self.keys
        del keys[bisect.bisect_left(keys, (b.size, b.addr))]
        del self.blocks[b.addr]
        if b.expandable:  # as ``insert``
            page = self.page
            n = (b.addr + b.size) // page * page - -(-b.addr // page) * page
            if n > 0:
                self.releasable -= n
        elif b.prev is None and b.next is None:
            self.releasable -= b.size


class _Allocator:
    """``DeviceCachingAllocator`` for one device and one stream; mutable only inside ``replay``."""

    def __init__(self, cfg: AllocatorConfig) -> None:
        self.cfg = cfg
        self.max_split = cfg.max_split_size if cfg.max_split_size is not None else _UNLIMITED
        self.capacity = cfg.capacity if cfg.capacity is not None else _UNLIMITED
        self.allowed = None if cfg.memory_fraction is None else int(cfg.memory_fraction * self.capacity)
        self.pools = (_Pool(small=False), _Pool(small=True))
        self.gc = self.allowed is not None and cfg.garbage_collection_threshold > 0
        self.expandable = cfg.expandable_segments
        self.divisions = cfg.roundup_power2_divisions
        self.live: dict[int, _Block] = {}
        self.asked: dict[int, int] = {}
        self.requested = self.peak_requested = self.stuck_at_peak = 0
        self.next_addr = 0
        self.allocated = self.reserved = self.peak_allocated = self.peak_reserved = self.segments = 0

    # -- malloc -----------------------------------------------------------------------------------------------
    def malloc(self, key: int, orig: int) -> bool:
        if self.divisions > 1:
            size = round_size(orig, self.divisions)
        else:  # round_size, inlined: the estimate replays thousands of these
            size = -(-orig // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE if orig > K_MIN_BLOCK_SIZE else K_MIN_BLOCK_SIZE
        pool = self.pools[size <= K_SMALL_SIZE]
        block = self._free_block(pool, size)
        if block is None:
            if self.gc:
                self._garbage_collect()
            block = self._alloc_block(pool, size)
            if block is None and self._release_available(pool, size):
                block = self._alloc_block(pool, size)
            if block is None and self.release_cached():
                block = self._alloc_block(pool, size)
            if block is None:
                return False
        remaining = block.size - size
        if (
            remaining >= K_MIN_BLOCK_SIZE
            if block.small or self.expandable
            else size < self.max_split and remaining > K_SMALL_SIZE
        ):  # should_split
            rest = _Block(block.addr + size, remaining, block.small, expandable=block.expandable)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            pool.insert(rest)
        block.allocated = True
        self.live[key] = block
        self.asked[key] = orig
        self.requested += orig
        if self.requested >= self.peak_requested:
            self.peak_requested = self.requested
            releasable = self.pools[0].releasable + self.pools[1].releasable
            self.stuck_at_peak = self.reserved - releasable - self.requested
        self.allocated += block.size
        if self.allocated > self.peak_allocated:
            self.peak_allocated = self.allocated
        return True

    def _free_block(self, pool: _Pool, size: int) -> _Block | None:
        """``get_free_block``: the best fit, under the oversize rules."""
        if self.gc:
            pool.calls += 1
        keys = pool.keys
        i = bisect.bisect_left(keys, (size, -1))
        if i == len(keys):
            return None
        if self.expandable:
            # the block before unmapped pages counts as the size it can grow to: prefer any other that fits
            def grows(b: _Block) -> int:
                return b.size + (b.next.size if b.next is not None and not b.next.mapped else 0)

            while i + 1 < len(pool.keys) and grows(pool.blocks[pool.keys[i + 1][1]]) < grows(
                pool.blocks[pool.keys[i][1]]
            ):
                i += 1
        found = pool.blocks[pool.keys[i][1]]
        if size < self.max_split <= found.size:
            return None  # do not return an oversized block for a smaller request
        if size >= self.max_split and found.size >= size + K_LARGE_BUFFER:
            return None  # an oversized block may be rounded up, within kLargeBuffer
        pool.erase(found)
        return found

    def _alloc_block(self, pool: _Pool, size: int) -> _Block | None:
        """``alloc_block``: a new segment (expandable: map pages), or None past the capacity or the fraction."""
        alloc = allocation_size(size)
        if self.allowed is not None and self.reserved + alloc > self.allowed:
            return None
        if self.cfg.expandable_segments:
            return self._expand(pool, size)
        if self.reserved + alloc > self.capacity:
            return None
        block = _Block(self.next_addr, alloc, pool.small)
        self.next_addr += alloc
        self._reserve(alloc)
        return block

    def _reserve(self, n: int) -> None:
        self.reserved += n
        self.segments += 1
        if self.reserved > self.peak_reserved:
            self.peak_reserved = self.reserved

    def _release(self, b: _Block) -> None:
        """``release_block``: cudaFree of a whole cached segment."""
        self.pools[b.small].erase(b)
        self.reserved -= b.size

    def _release_available(self, pool: _Pool, size: int) -> bool:
        """``release_available_cached_blocks``: free one oversize cached segment that fits, else the largest
        oversize ones until their total does."""
        if self.max_split == _UNLIMITED or self.cfg.expandable_segments:
            return False  # expandable blocks are unmapped by release_cached_blocks instead (release_block asserts)
        key = max(size, self.max_split)
        i = bisect.bisect_left(pool.keys, (key, -1))
        if i < len(pool.keys):
            self._release(pool.blocks[pool.keys[i][1]])
            return True
        released = 0
        while released < key and pool.keys and pool.keys[-1][0] >= self.max_split:
            b = pool.blocks[pool.keys[-1][1]]
            released += b.size
            self._release(b)
        return released >= key

    def release_cached(self) -> bool:
        """``release_cached_blocks`` (``empty_cache``): free every unsplit cached segment; expandable: unmap
        every whole free page."""
        for pool in self.pools:
            for b in list(pool.blocks.values()):
                if b.expandable:
                    self._unmap(pool, b)
                elif not b.is_split():
                    self._release(b)
        return True

    def _garbage_collect(self) -> None:
        """``garbage_collect_cached_blocks``: past threshold x allowed, free unsplit large cached segments of
        at least the average age (age: get_free_block calls since the block was cached) until enough is free."""
        assert self.allowed is not None
        threshold = int(self.cfg.garbage_collection_threshold * self.allowed)
        if self.reserved <= threshold:
            return
        target, reclaimed = self.reserved - threshold, 0
        pool = self.pools[False]
        ages = {b.addr: pool.calls - b.gc_base for b in pool.blocks.values() if not b.is_split() and not b.expandable}
        freed = True
        while reclaimed < target and freed and ages:
            average = sum(ages.values()) / len(ages)
            freed = False
            for size, addr in list(pool.keys):
                if addr in ages and ages[addr] >= average:
                    freed = True
                    reclaimed += size
                    del ages[addr]
                    self._release(pool.blocks[addr])

    def result(self, marks: dict[str, tuple[int, int]], count: int, oom: int | None) -> Replay:
        return Replay(
            peak_allocated=self.peak_allocated,
            peak_reserved=self.peak_reserved,
            peak_requested=self.peak_requested,
            stuck_at_peak=self.stuck_at_peak,
            allocated=self.allocated,
            reserved=self.reserved,
            marks=marks,
            allocations=count,
            segments=self.segments,
            oom=oom,
        )

    # -- free ---------------------------------------------------------------------------------------------------
    def free(self, key: int) -> None:
        b = self.live.pop(key)
        b.allocated = False
        self.requested -= self.asked.pop(key)
        self.allocated -= b.size
        pool = self.pools[b.small]
        prev, nxt = b.prev, b.next
        if prev is not None and not prev.allocated:
            self._merge(pool, b, prev)
        if nxt is not None and not nxt.allocated:
            self._merge(pool, b, nxt)
        pool.insert(b)

    def _merge(self, pool: _Pool, dst: _Block, src: _Block | None) -> None:
        """``try_merge_blocks``: absorb a free neighbour in the same mapped state."""
        if src is None or src.allocated or src.mapped != dst.mapped:
            return
        if src.mapped:
            pool.erase(src)
        else:
            del pool.unmapped[src.addr]
        if dst.prev is src:
            dst.addr, dst.prev = src.addr, src.prev
            if dst.prev is not None:
                dst.prev.next = dst
        else:
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size

    # -- expandable segments -------------------------------------------------------------------------------------
    def _find_expandable(self, pool: _Pool, size: int) -> _Block:
        """``find_expandable_block``: the lowest unmapped range (with the free block just before it) with room."""

        def room(b: _Block | None) -> int:
            n = 0
            while n < size and b is not None and not b.allocated:
                n, b = n + b.size, b.next
            return n

        for addr in sorted(pool.unmapped):
            c = pool.unmapped[addr]
            if c.prev is not None and not c.prev.allocated:
                c = c.prev
            if room(c) >= size:
                return c
        # a new segment: address space for 9/8 of the device (ExpandableSegment's max_handles_)
        span = _ADDRESS_SPACE if self.capacity == _UNLIMITED else self.capacity + self.capacity // 8
        span = -(-span // pool.page) * pool.page
        # pages are aligned to the segment's start: start every segment on a kLargeBuffer boundary
        base = -(-self.next_addr // K_LARGE_BUFFER) * K_LARGE_BUFFER
        c = _Block(base, span, pool.small, expandable=True, mapped=False)
        self.next_addr = base + span
        pool.unmapped[c.addr] = c
        return c

    def _map(self, pool: _Pool, b: _Block, size: int) -> bool:
        """``map_block``: back the first ``size`` bytes of an unmapped block with whole pages."""
        page = pool.page
        n = min(-(-size // page) * page, b.size)
        if self.reserved + n > self.capacity:
            return False  # cuMemCreate: CUDA_ERROR_OUT_OF_MEMORY
        del pool.unmapped[b.addr]
        b.mapped = True
        if n < b.size:
            rest = _Block(b.addr + n, b.size - n, b.small, expandable=True, mapped=False)
            rest.prev, rest.next = b, b.next
            if b.next is not None:
                b.next.prev = rest
            b.next, b.size = rest, n
            pool.unmapped[rest.addr] = rest
        self._merge(pool, b, b.prev)
        self._merge(pool, b, b.next)
        pool.insert(b)
        self._reserve(n)
        return True

    def _expand(self, pool: _Pool, size: int) -> _Block | None:
        """``try_allocate_expandable_block``."""
        c = self._find_expandable(pool, size)
        if not c.mapped and not self._map(pool, c, min(c.size, size)):
            return None
        while c.size < size:
            nxt = c.next
            assert nxt is not None and not nxt.mapped
            if not self._map(pool, nxt, min(size - c.size, nxt.size)):
                return None
            c = nxt
        pool.erase(c)
        return c

    def _unmap(self, pool: _Pool, b: _Block) -> None:
        """``unmap_block``: return the whole pages inside a free block; what is left each side stays free."""
        page = pool.page
        begin, end = -(-b.addr // page) * page, (b.addr + b.size) // page * page
        if begin >= end:
            return
        pool.erase(b)
        if begin > b.addr:
            before = _Block(b.addr, begin - b.addr, b.small, expandable=True)
            before.prev, before.next = b.prev, b
            if b.prev is not None:
                b.prev.next = before
            b.prev = before
            pool.insert(before)
        if b.addr + b.size > end:
            after = _Block(end, b.addr + b.size - end, b.small, expandable=True)
            after.prev, after.next = b, b.next
            if b.next is not None:
                b.next.prev = after
            b.next = after
            pool.insert(after)
        b.addr, b.size, b.mapped = begin, end - begin, False
        self._merge(pool, b, b.prev)
        self._merge(pool, b, b.next)
        pool.unmapped[b.addr] = b
        self.reserved -= end - begin


def replay_ops(ops: Iterable[tuple[int, int]], config: AllocatorConfig = AllocatorConfig()) -> Replay:
    """``replay`` of bare ``(key, size)`` allocations, ``(key, FREE)`` frees and ``(0, RESET)`` peak resets: the
    estimate's fast path, and what the twin records (verify/live.py)."""
    if config == _DEFAULT:
        return _replay_default(ops)
    a = _Allocator(config)
    count, oom = 0, None
    for key, size in ops:
        if size < 0:
            if size == RESET:
                a.peak_allocated, a.peak_reserved, a.peak_requested = a.allocated, a.reserved, a.requested
            else:
                a.free(key)
            continue
        count += 1
        if not a.malloc(key, size):
            oom = size
            break
    return a.result({}, count, oom)


def load_reserves(head: Iterable[int], repeated: tuple[int, ...], times: int, config: AllocatorConfig) -> list[int]:
    """Reserved − requested after allocating ``head`` then ``repeated`` once, twice, ... ``times`` times, never
    freeing: one replay for every depth of a model's load (``[i]``: after i + 1 repeats). None may fail."""
    if config == _DEFAULT:
        return _load_reserves_default(head, repeated, times)
    a = _Allocator(config)
    key = 0
    for size in head:
        key += 1
        a.malloc(key, size)
    out = []
    for _ in range(times):
        for size in repeated:
            key += 1
            a.malloc(key, size)
        out.append(a.reserved - a.requested)
    return out


def replay(events: Iterable[Event], config: AllocatorConfig = AllocatorConfig()) -> Replay:
    """Run ``events`` through the allocator from empty; stop at a request that cannot be met (``Replay.oom``)."""
    a = _Allocator(config)
    marks: dict[str, tuple[int, int]] = {}
    count, oom = 0, None
    for e in events:
        if isinstance(e, Alloc):
            count += 1
            if not a.malloc(e.key, e.size):
                oom = e.size
                break
        elif isinstance(e, Free):
            a.free(e.key)
        elif isinstance(e, Mark):
            marks[e.name] = (a.allocated, a.reserved)
        elif isinstance(e, ResetPeak):
            a.peak_allocated, a.peak_reserved, a.peak_requested = a.allocated, a.reserved, a.requested
        else:
            a.release_cached()
    return a.result(marks, count, oom)


_DEFAULT = AllocatorConfig()


def _replay_default(ops: Iterable[tuple[int, int]]) -> Replay:
    """``replay_ops`` under PyTorch's defaults (no max_split_size, no rounding divisions, no expandable segments,
    no garbage collection, no device limit): the same rules as ``_Allocator`` with every branch those settings
    switch off removed and the pools' bookkeeping inlined, for the estimate's thousands of replays. Every
    cudaMalloc succeeds here, so nothing is ever released. tests/estimate/test_allocator_model.py checks it
    against ``_Allocator`` on random sequences. The free blocks are kept by size (``_Buckets``): a MoE step
    leaves tens of thousands of equal segment tails free, which one (size, address) list re-sorted at every
    free made most of a replay's time."""
    pools = (_Buckets(), _Buckets())
    live: dict[int, _Block] = {}
    asked: dict[int, int] = {}
    requested = peak_requested = stuck = allocated = peak_allocated = reserved = peak_reserved = 0
    releasable = next_addr = segments = count = 0
    for key, orig in ops:
        if orig < 0:
            if orig == RESET:
                peak_allocated, peak_reserved, peak_requested = allocated, reserved, requested
                continue
            b = live.pop(key)
            requested -= asked.pop(key)
            allocated -= b.size
            releasable += _free_default(pools[b.small], b)
            continue
        count += 1
        size = -(-orig // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE if orig > K_MIN_BLOCK_SIZE else K_MIN_BLOCK_SIZE
        small = size <= K_SMALL_SIZE
        pool = pools[small]
        block = pool.best_fit(size)  # get_free_block: the best fit
        if block is not None:
            if block.prev is None and block.next is None:
                releasable -= block.size
        else:  # alloc_block: a new segment
            grant = allocation_size(size)
            block = _Block(next_addr, grant, small)
            next_addr += grant
            reserved += grant
            segments += 1
            if reserved > peak_reserved:
                peak_reserved = reserved
        remaining = block.size - size
        if remaining >= K_MIN_BLOCK_SIZE if small else remaining > K_SMALL_SIZE:  # should_split
            rest = _Block(block.addr + size, remaining, small)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            pool.insert(rest)
        block.allocated = True
        live[key] = block
        asked[key] = orig
        requested += orig
        if requested >= peak_requested:
            peak_requested = requested
            stuck = reserved - releasable - requested
        allocated += block.size
        if allocated > peak_allocated:
            peak_allocated = allocated
    return Replay(
        peak_allocated=peak_allocated,
        peak_reserved=peak_reserved,
        peak_requested=peak_requested,
        stuck_at_peak=stuck,
        allocated=allocated,
        reserved=reserved,
        allocations=count,
        segments=segments,
    )


class _Buckets:
    """A pool's free blocks for ``_replay_default``, by size: the sizes present in order, and each size's blocks
    by address with a heap of their addresses (entries of blocks since taken are skipped when met). The best fit
    is the smallest size that fits, its lowest address: the (size, address) order of ``_Pool.keys``."""

    __slots__ = ("heaps", "members", "sizes")

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.members: dict[int, dict[int, _Block]] = {}
        self.heaps: dict[int, list[int]] = {}

    def insert(self, b: _Block) -> None:
        members = self.members.get(b.size)
        if members is None:
            bisect.insort(self.sizes, b.size)
            members = self.members[b.size] = {}
            self.heaps[b.size] = []
        members[b.addr] = b
        heapq.heappush(self.heaps[b.size], b.addr)

    def remove(self, b: _Block) -> None:
        members = self.members[b.size]
        del members[b.addr]
        if not members:
            self._drop(b.size)

    def _drop(self, size: int) -> None:
        sizes = self.sizes
        del sizes[bisect.bisect_left(sizes, size)]
        del self.members[size], self.heaps[size]

    def best_fit(self, size: int) -> _Block | None:
        """``get_free_block`` without the oversize rules: the block taken out of the pool, or None."""
        sizes = self.sizes
        i = bisect.bisect_left(sizes, size)
        if i == len(sizes):
            return None
        found = sizes[i]
        members, heap = self.members[found], self.heaps[found]
        addr = heapq.heappop(heap)
        while addr not in members:
            addr = heapq.heappop(heap)
        b = members.pop(addr)
        if not members:
            self._drop(found)
        return b


def _free_default(pool: _Buckets, b: _Block) -> int:
    """``free_block`` and ``try_merge_blocks`` for ``_replay_default``: the bytes it makes releasable (a freed
    block that is a whole segment again). The free neighbours merged are split blocks, never releasable."""
    b.allocated = False
    prev, nxt = b.prev, b.next
    if prev is not None and not prev.allocated:
        pool.remove(prev)
        b.addr, b.prev = prev.addr, prev.prev
        if b.prev is not None:
            b.prev.next = b
        b.size += prev.size
    if nxt is not None and not nxt.allocated:
        pool.remove(nxt)
        b.next = nxt.next
        if b.next is not None:
            b.next.prev = b
        b.size += nxt.size
    pool.insert(b)
    return b.size if b.prev is None and b.next is None else 0


def _load_reserves_default(head: Iterable[int], repeated: tuple[int, ...], times: int) -> list[int]:
    """``load_reserves`` under PyTorch's defaults: ``_replay_default``'s malloc with nothing ever freed, so no
    block is linked to its neighbours (only a free merges them) and no peak is kept (nothing falls)."""
    pools = (_Buckets(), _Buckets())
    requested = reserved = next_addr = 0
    out: list[int] = []
    for sizes, depth in [(tuple(head), False), *[(repeated, True)] * times]:
        for orig in sizes:
            size = -(-orig // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE if orig > K_MIN_BLOCK_SIZE else K_MIN_BLOCK_SIZE
            small = size <= K_SMALL_SIZE
            pool = pools[small]
            block = pool.best_fit(size)
            if block is None:  # alloc_block: a new segment
                grant = allocation_size(size)
                block = _Block(next_addr, grant, small)
                next_addr += grant
                reserved += grant
            remaining = block.size - size
            if remaining >= K_MIN_BLOCK_SIZE if small else remaining > K_SMALL_SIZE:  # should_split
                pool.insert(_Block(block.addr + size, remaining, small))
            requested += orig
        if depth:
            out.append(reserved - requested)
    return out

"""Live-storage accounting under a dispatch mode: every storage an op creates, until it is freed.

Sizes are rounded up to 512 bytes, as CUDA's caching allocator does for small and large blocks alike, so the
peak is what ``torch.cuda.max_memory_allocated`` would report for the same tensors (but for the blocks the
allocator hands out unsplit, which ``ops`` replayed through estimate/allocator_model.py counts). Works with
FakeTensors: storages are weakly referenced, so the count drops when autograd or the optimizer frees them.
``ops`` records every allocation and free in order, as ``allocator_model.replay_ops`` takes them.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

ROUNDING = 512
FREE, RESET = -1, -2  # ``ops`` sizes that are not allocations (allocator_model.replay_ops)


def rounded(nbytes: int) -> int:
    return -(-nbytes // ROUNDING) * ROUNDING


class LiveStorages(TorchDispatchMode):
    """Current and peak bytes of live tensor storages; ``mark(name)`` snapshots the current total."""

    def __init__(self) -> None:
        super().__init__()
        self._sizes: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0
        self.marks: dict[str, int] = {}
        self.phase_peaks: dict[str, int] = {}  # the highest live total seen during each named phase
        self.peak_at = ""
        self._phase = "setup"
        self.paused = 0  # > 0 while metadata-only work runs (DTensor sharding propagation on global shapes)
        # (key, bytes) allocations, (key, FREE) frees, (0, RESET) peak resets: the caching-allocator replay's input
        self.ops: list[tuple[int, int]] = []
        self._keys = 0

    def track(self, tensors: Any) -> None:
        for t in tree_flatten(tensors)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            if is_traceable_wrapper_subclass(t):
                # A wrapper (DTensor) holds no memory itself: what this rank holds is its local tensors, made
                # one dispatch level down where this mode does not see them.
                attrs, _ = t.__tensor_flatten__()
                self.track([getattr(t, a) for a in attrs])
            else:
                self._add(t.untyped_storage())

    def _add(self, storage: torch.UntypedStorage) -> None:
        if storage in self._sizes:
            return
        nbytes = storage.nbytes()
        size = rounded(nbytes)
        # mutable: resize_ changes what the storage holds, and so what its death frees; [1] is its replay key
        cell = [size, self._record(nbytes) if nbytes else 0]
        self._sizes[storage] = cell
        self.current += size
        weakref.finalize(storage, self._free, cell)
        if self.current > self.peak:
            self.peak, self.peak_at = self.current, self._phase
        if self.current > self.phase_peaks.get(self._phase, 0):
            self.phase_peaks[self._phase] = self.current

    def _record(self, nbytes: int) -> int:
        self._keys += 1
        self.ops.append((self._keys, nbytes))
        return self._keys

    def _free(self, cell: list[int]) -> None:
        self.current -= cell[0]
        if cell[0]:
            self.ops.append((cell[1], FREE))

    def phase(self, name: str) -> None:
        self._phase = name
        self.phase_peaks[name] = max(self.phase_peaks.get(name, 0), self.current)

    def reset_peak(self) -> None:
        self.ops.append((0, RESET))
        self.peak, self.peak_at = self.current, self._phase
        self.phase_peaks = {self._phase: self.current}

    def mark(self, name: str) -> None:
        self.marks[name] = self.current

    def resized(self, storage: torch.UntypedStorage, nbytes: int) -> None:
        """FSDP2 frees and re-allocates unsharded parameters with ``storage.resize_``."""
        cell = self._sizes.get(storage)
        if cell is None:
            return
        new = rounded(nbytes)
        self.current += new - cell[0]
        if cell[0]:  # resize_ frees the old allocation and makes a new one
            self.ops.append((cell[1], FREE))
        if new:
            cell[1] = self._record(nbytes)
        cell[0] = new
        if self.current > self.peak:
            self.peak, self.peak_at = self.current, self._phase
        if self.current > self.phase_peaks.get(self._phase, 0):
            self.phase_peaks[self._phase] = self.current

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            self.track(out)
        return out

"""Live-storage accounting under a dispatch mode: every storage an op creates, until it is freed.

Sizes are rounded up to 512 bytes, as CUDA's caching allocator does for small and large blocks alike, so the
peak is what ``torch.cuda.max_memory_allocated`` would report for the same tensors. Works with FakeTensors:
storages are weakly referenced, so the count drops when autograd or the optimizer frees them.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

ROUNDING = 512


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

    def track(self, tensors: Any) -> None:
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._add(t.untyped_storage())

    def _add(self, storage: torch.UntypedStorage) -> None:
        if storage in self._sizes:
            return
        size = rounded(storage.nbytes())
        self._sizes[storage] = size
        self.current += size
        weakref.finalize(storage, self._free, size)
        if self.current > self.peak:
            self.peak, self.peak_at = self.current, self._phase
        if self.current > self.phase_peaks.get(self._phase, 0):
            self.phase_peaks[self._phase] = self.current

    def _free(self, size: int) -> None:
        self.current -= size

    def phase(self, name: str) -> None:
        self._phase = name
        self.phase_peaks[name] = max(self.phase_peaks.get(name, 0), self.current)

    def reset_peak(self) -> None:
        self.peak, self.peak_at = self.current, self._phase
        self.phase_peaks = {self._phase: self.current}

    def mark(self, name: str) -> None:
        self.marks[name] = self.current

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.track(out)
        return out

"""Does an estimate fit a GPU, and with how much headroom."""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.catalog import Gpu
from vramwise.estimate.term import Estimate


@dataclass(frozen=True, kw_only=True)
class Verdict:
    gpu: Gpu
    peak_bytes: int

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.gpu.memory_bytes

    @property
    def headroom_bytes(self) -> int:
        """Free memory at the peak; negative when it does not fit."""
        return self.gpu.memory_bytes - self.peak_bytes


def verdict(estimate: Estimate, gpu: Gpu) -> Verdict:
    return Verdict(gpu=gpu, peak_bytes=estimate.peak_bytes)

"""transformers' loading flags for ``generate``, named as ``from_pretrained`` spells them.

``device_map`` None keeps the whole model on one GPU (or a ``tp_plan`` split, ``InferSetup.tp``); a string asks
accelerate's placement (transformers integrations/accelerate.py ``_get_device_map``) to spread whole layers over
the GPUs. ``max_memory`` is accelerate's per-GPU cap, in bytes, one entry per GPU index (``{0: "20GiB", ...}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from vramwise.errors import InvalidWorkloadError
from vramwise.workload.checks import coerce, show


class DeviceMap(StrEnum):
    """The strings ``from_pretrained(device_map=...)`` accepts for an automatic placement."""

    AUTO = "auto"  # the same as balanced (transformers _get_device_map: any string but sequential balances)
    BALANCED = "balanced"
    BALANCED_LOW_0 = "balanced_low_0"  # as few weights as possible on GPU 0, which holds generate's work
    SEQUENTIAL = "sequential"  # fill GPU 0, then GPU 1, ... each to its max_memory


# accelerate utils/modeling.py convert_file_size_to_int: GiB/MiB/KiB are powers of 2, GB/MB/KB powers of 10
_UNITS = {"gib": 2**30, "mib": 2**20, "kib": 2**10, "gb": 10**9, "mb": 10**6, "kb": 10**3}
_MAX_MEMORY_ALLOWED = "sizes with a unit, one per GPU in index order, e.g. 20GiB,30GiB (GiB = 2^30 B, GB = 10^9 B)"


def parse_max_memory(text: str) -> tuple[int, ...]:
    """``20GiB,30GiB`` -> bytes for GPU 0, GPU 1, ... (accelerate's spellings of a size)."""
    sizes = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", part)
        if not m or m.group(2).lower() not in _UNITS:
            raise InvalidWorkloadError(
                f"max_memory {show(text)}: {show(part)} is not a size with a unit",
                field="max_memory",
                allowed=_MAX_MEMORY_ALLOWED,
            )
        sizes.append(int(float(m.group(1)) * _UNITS[m.group(2).lower()]))
    return tuple(sizes)


@dataclass(frozen=True, kw_only=True)
class HfFlags:
    """How ``from_pretrained`` places the model: ``device_map`` and ``max_memory`` (bytes per GPU index)."""

    device_map: DeviceMap | None = None
    max_memory: tuple[int, ...] | None = None  # also taken as the CLI's text, "20GiB,30GiB"

    def __post_init__(self) -> None:
        if self.device_map is not None:
            coerce(self, "device_map", DeviceMap)
        if isinstance(self.max_memory, str):
            object.__setattr__(self, "max_memory", parse_max_memory(self.max_memory))
        if self.max_memory is not None:
            if self.device_map is None:
                raise InvalidWorkloadError(
                    "max_memory needs a device_map (auto, balanced, balanced_low_0, sequential)",
                    field="max_memory",
                    allowed="with device_map only",
                )
            ok = isinstance(self.max_memory, tuple) and bool(self.max_memory)
            if not ok or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in self.max_memory):
                raise InvalidWorkloadError(
                    f"max_memory must be sizes per GPU, got {show(self.max_memory)}",
                    field="max_memory",
                    allowed=_MAX_MEMORY_ALLOWED,
                )

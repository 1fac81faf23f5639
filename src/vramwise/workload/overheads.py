"""Process overheads shared by inference and training setups."""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError


@dataclass(frozen=True, kw_only=True)
class Overheads:
    """What every GPU process holds besides the model: the CUDA context and the allocator's reserve."""

    cuda_context_mib: int | None = None  # None: the default in estimate/overheads.py
    allocator_fraction: float | None = None  # None: the default in estimate/overheads.py

    def __post_init__(self) -> None:
        check_overheads(self.cuda_context_mib, self.allocator_fraction)


def check_overheads(cuda_context_mib: int | None, allocator_fraction: float | None) -> None:
    if cuda_context_mib is not None and cuda_context_mib < 0:
        raise InvalidWorkloadError(f"cuda_context_mib must be >= 0, got {cuda_context_mib}")
    if allocator_fraction is not None and not 0 <= allocator_fraction < 1:
        raise InvalidWorkloadError(f"allocator_fraction must be in [0, 1), got {allocator_fraction}")

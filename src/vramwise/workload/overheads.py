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
        if self.cuda_context_mib is not None and self.cuda_context_mib < 0:
            raise InvalidWorkloadError(f"cuda_context_mib must be >= 0, got {self.cuda_context_mib}")
        if self.allocator_fraction is not None and not 0 <= self.allocator_fraction < 1:
            raise InvalidWorkloadError(f"allocator_fraction must be in [0, 1), got {self.allocator_fraction}")


# Neither a CUDA context nor an allocator reserve: what a traced step measures (verify, the accuracy bench).
NO_OVERHEADS = Overheads(cuda_context_mib=0, allocator_fraction=0.0)

"""Process overheads shared by inference and training setups."""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.workload.checks import non_negative, real


@dataclass(frozen=True, kw_only=True)
class Overheads:
    """What every GPU process holds besides the model: the CUDA context and the allocator's reserve."""

    cuda_context_mib: int | None = None  # None: the default in estimate/overheads.py
    allocator_fraction: float | None = None  # None: the default in estimate/overheads.py

    def __post_init__(self) -> None:
        if self.cuda_context_mib is not None:
            non_negative("cuda_context_mib", self.cuda_context_mib)
        if self.allocator_fraction is not None:
            real("allocator_fraction", self.allocator_fraction, 0, 1, high_open=True)


# Neither a CUDA context nor an allocator reserve: what a traced step measures (verify, the accuracy bench).
NO_OVERHEADS = Overheads(cuda_context_mib=0, allocator_fraction=0.0)

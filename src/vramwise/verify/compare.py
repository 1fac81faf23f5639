"""What ``vramwise verify`` returns: the estimate beside the measurement, row by row.

Result types only, apart from the twin that drives torch (``twin.py``), so that the renderers in ``report/``
and the application layer can import them without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Row:
    name: str
    estimate: int
    measured: int

    @property
    def error(self) -> float | None:
        return None if not self.measured else self.estimate / self.measured - 1


@dataclass(frozen=True, kw_only=True)
class Comparison:
    kind: str  # training | inference
    rows: tuple[Row, ...]
    semantics: str
    layers_traced: int | None  # --layers: the truncated depth, extrapolated to the full model
    overheads: int  # estimate bytes a CPU trace cannot see (CUDA context, allocator reserve, NCCL buffers)
    seconds: float
    cuda: dict[str, int] = field(default_factory=dict)  # on a GPU: max allocated / reserved, device used
    full_estimate: int = 0  # the estimate with the overhead terms, to set beside device_used
    # training: the traced allocations replayed through the caching-allocator model (estimate/allocator_model.py):
    # max_allocated, max_reserved, allocations, and the estimate's own overhead/allocator as estimate_reserve
    allocator_replay: dict[str, int] = field(default_factory=dict)

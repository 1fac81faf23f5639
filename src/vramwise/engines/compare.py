"""What ``vramwise verify --log`` returns: every figure an engine's startup log printed, beside the plan's estimate.

Result types and the row arithmetic only (no torch, no I/O): ``app/verify_log.py`` builds the plan from the log's
setup, ``report/log_out.py`` renders these rows, ``bench/engines.py`` aggregates them over the corpus. A logged
figure the plan has no counterpart for stays in the table as "not modelled", never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vramwise.engines.logs.parsed import Figure, ParsedLog


@dataclass(frozen=True, kw_only=True)
class LogRow:
    """One logged figure and the plan's number of the same meaning (None: not modelled)."""

    name: str  # one of engines/logs/parsed.py FIGURE_NAMES
    rank: str  # the worker or device as logged ("" for the one process)
    unit: str  # as the log printed it
    printed: str  # the log's digits, as printed
    logged: int | float  # bytes for a memory figure, else a count or ratio
    tolerance: int | float  # how far the true value may be from ``logged`` given the printed precision
    estimate: int | float | None  # the plan's number, in the same unit as ``logged``; None: not modelled
    is_bytes: bool

    @property
    def error(self) -> int | float | None:
        """estimate - logged, in the figure's unit (bytes for memory); None when not modelled."""
        return None if self.estimate is None else self.estimate - self.logged

    @property
    def relative(self) -> float | None:
        """estimate / logged - 1; None when not modelled or the log printed 0."""
        if self.estimate is None or not self.logged:
            return None
        return self.estimate / self.logged - 1

    @property
    def within(self) -> bool | None:
        """Whether the estimate lies inside the log's printed precision (|error| <= tolerance)."""
        err = self.error
        return None if err is None else abs(err) <= self.tolerance


@dataclass(frozen=True, kw_only=True)
class LogComparison:
    """A startup log beside the plan built from its own setup: who, with what, and one row per logged figure."""

    engine: str  # as logged: "vllm", "sglang", "llama.cpp"
    logged_version: str | None
    modelled_version: str  # the release the plan follows
    logged_model: str | None
    model: str  # the model the estimate used (catalog name or path), and how it was chosen, in ``notes``
    gpu_bytes: int  # the CUDA total the plan sized its budget from
    gpu: str  # where that total came from, in words
    options: Mapping[str, object]  # the vramwise options the logged flags became (after any user override)
    rows: tuple[LogRow, ...]
    notes: tuple[str, ...] = ()


def _host(rank: str) -> bool:
    """A llama.cpp host-side buffer ("CPU", "CPU_Mapped", "CPU_REPACK", "CUDA_Host"): memory outside the GPUs."""
    return rank.startswith("CPU") or rank.endswith("_Host")


def figure_rows(parsed: ParsedLog, modelled: Mapping[str, int | float]) -> tuple[LogRow, ...]:
    """One row per figure name the log printed (the most precise figure of the first rank that prints it; a GPU's
    before a host buffer's, since the plan's per-device figures are a GPU's: llama.cpp logs its host-side model buffer,
    the input embeddings it never offloads, first), in log order, with the plan's number of that name beside it
    (``modelled``: figure name -> value)."""
    rows = []
    for name in dict.fromkeys(f.name for f in parsed.figures):
        ranks = [f.rank for f in parsed.figures if f.name == name]
        rank = next((r for r in ranks if not _host(r)), ranks[0])
        fig = parsed.best(name, rank)
        if fig is None:  # pragma: no cover - the name came from these figures
            continue
        rows.append(_row(fig, modelled.get(name)))
    return tuple(rows)


def _row(fig: Figure, estimate: int | float | None) -> LogRow:
    return LogRow(
        name=fig.name,
        rank=fig.rank,
        unit=fig.unit,
        printed=fig.printed,
        logged=fig.value,
        tolerance=fig.tolerance,
        estimate=estimate,
        is_bytes=fig.is_bytes,
    )

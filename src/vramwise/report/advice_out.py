"""Advice for a miss, as text and JSON: the single changes that each make the setup fit (built by app/advice.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vramwise.units import Unit, fmt


@dataclass(frozen=True, kw_only=True)
class Suggestion:
    """One change that makes the setup fit, with the peak and headroom of the run that checked it."""

    kind: str  # what changes: recompute, loss, micro_batch, optimizer, peft, ..., gpus, tp; "pair": two kinds
    change: str  # the flags to add, as typed: "--recompute full", "--gpu 2xh100-80gb --zero 3"
    options: Mapping[str, Any] = field(default_factory=dict)  # the option values it sets, by option name
    gpu: str | None = None  # the --gpu it needs (more GPUs); None: the user's own
    gpus: int = 1  # GPUs it runs on
    peak_bytes: int  # per GPU, from the re-run estimate
    headroom_bytes: int  # the budget (less --margin) minus that peak
    note: str = ""  # e.g. "global batch kept: micro-batch 2 x grad-accum 8 = 4 x 4"


HEADER = "to make it fit, one change each (each checked by re-running the estimate; cheapest first, your GPUs first):"
NONE = "no single change makes it fit: combine them (fit --max batch/seq/context answers with the rest fixed)"


FEWER = "fewer GPUs with one change (each found by the same search with that change):"
PAIRS = "no single change makes it fit; two together do (each checked by re-running the estimate; cheapest first):"


def render_advice(found: tuple[Suggestion, ...], unit: Unit = "gib", header: str = HEADER) -> str:
    if not found:
        return NONE
    width = max(len(s.change) for s in found)
    lines = [PAIRS if header == HEADER and all(s.kind == "pair" for s in found) else header]
    for s in found:
        on = f" on {s.gpus} GPU{'s' if s.gpus > 1 else ''}" if s.gpu else ""
        note = f" ({s.note})" if s.note else ""
        lines.append(
            f"  {s.change:<{width}}  peak {fmt(s.peak_bytes, unit)}{on}, headroom {fmt(s.headroom_bytes, unit)}{note}"
        )
    return "\n".join(lines)


def advice_dict(found: tuple[Suggestion, ...]) -> list[dict[str, Any]]:
    """The suggestions as JSON (docs/json-schema.md, "advice"), in the order shown."""
    return [
        {
            "kind": s.kind,
            "change": s.change,
            "options": dict(s.options),
            "gpu": s.gpu,
            "gpus": s.gpus,
            "peak_bytes": s.peak_bytes,
            "headroom_bytes": s.headroom_bytes,
            "note": s.note or None,
        }
        for s in found
    ]

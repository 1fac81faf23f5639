"""``--range`` as text (a short block after the verdict) and as JSON (docs/json-schema.md, "range")."""

from __future__ import annotations

from typing import Any

from vramwise.estimate.ranges import Range
from vramwise.report.verdict import Verdict, gpu_title
from vramwise.units import Unit, fmt, to_unit


def high_fits(rng: Range, verdict: Verdict | None) -> bool | None:
    """Whether the high fits the verdict's GPU (less its margin); None without a GPU."""
    if verdict is None:
        return None
    return verdict.refusal is None and rng.high <= verdict.budget_bytes


def range_lines(rng: Range, verdict: Verdict | None, unit: Unit = "gib", explain: bool = False) -> list[str]:
    """The block: low, high and bound, the high's verdict, one row per uncertainty, the notes."""
    head = (
        f"range: low {fmt(rng.low, unit)}, estimate {fmt(rng.estimate, unit)}, high {fmt(rng.high, unit)}, "
        f"bound {fmt(rng.bound, unit)}"
    )
    fits = high_fits(rng, verdict)
    if verdict is not None:
        room = verdict.budget_bytes - rng.high
        word = "FITS" if fits else "DOES NOT FIT"
        head += f"; the high on {gpu_title(verdict.gpu, verdict.count)}: {word}, headroom {fmt(room, unit)}"
    lines = [head]
    width = max(len(u.name) for u in rng.uncertainties) if rng.uncertainties else 0
    for u in rng.uncertainties:
        if u.pinned:
            span, what = f"{to_unit(rng.estimate, unit):.2f}", f"given: {u.low}"
        else:
            span = f"{to_unit(u.low_bytes, unit):.2f} .. {to_unit(u.high_bytes, unit):.2f}"
            what = f"{u.low} .. {u.high}"
        lines.append(f"  {u.name:<{width}}  {span:>15}  {what}")
        if explain:
            lines.append(f"  {'':<{width}}    source: {u.source}")
    lines += [f"  note: {n}" for n in rng.notes]
    return lines


def range_dict(rng: Range, verdict: Verdict | None) -> dict[str, Any]:
    """The range as JSON: bytes as ints, each uncertainty with its values in words and its peaks."""
    return {
        "low": rng.low,
        "estimate": rng.estimate,
        "high": rng.high,
        "bound": rng.bound,
        "high_fits": high_fits(rng, verdict),
        "uncertainties": [
            {
                "name": u.name,
                "low": u.low,
                "high": u.high,
                "low_bytes": u.low_bytes,
                "high_bytes": u.high_bytes,
                "source": u.source,
                "pinned": u.pinned,
            }
            for u in rng.uncertainties
        ],
        "notes": list(rng.notes),
    }

"""A startup log beside the engine's plan: the table and the JSON of ``vramwise verify --log`` (schema
``vramwise/verify-log`` v1).

Each memory figure is shown in the unit the log printed it in (vLLM's and SGLang's "GB" is 2^30 bytes, llama.cpp's
MiB 2^20: engines/logs/parsed.py), so the estimate reads at the log's own precision; the error is given in that
unit and in percent, and "within" says whether it lies inside half a unit of the last printed digit (a whole unit
for a truncated figure): the log cannot be read more exactly than that.
"""

from __future__ import annotations

from typing import Any

from vramwise.engines.compare import LogComparison, LogRow

SCHEMA = "vramwise/verify-log"  # docs/json-schema.md
VERSION = 1
NOT_MODELLED = "not modelled"
# bytes per printed unit (engines/logs/parsed.py _UNIT_BYTES: every engine here prints binary units)
_UNIT_BYTES = {"GiB": 2**30, "GB": 2**30, "MiB": 2**20, "MB": 2**20, "B": 1}
_HEADER = ("figure", "rank", "logged", "estimate", "error", "error %", "± printed", "within")


def _in_unit(value: float, row: LogRow) -> float:
    return value / _UNIT_BYTES[row.unit] if row.is_bytes else value


def _decimals(row: LogRow) -> int:
    """One more decimal than the log printed, so the estimate shows where it falls inside the printed precision."""
    digits = row.printed.replace(",", "").split("+")[0]
    return (len(digits.split(".")[1]) if "." in digits else 0) + (1 if row.is_bytes or row.unit == "x" else 0)


def _cells(row: LogRow) -> tuple[str, ...]:
    unit = f" {row.unit}"
    logged = f"{row.printed}{unit}"
    if row.estimate is None:
        return (row.name, row.rank, logged, NOT_MODELLED, "", "", "", "")
    d = _decimals(row)
    est = f"{_in_unit(row.estimate, row):,.{d}f}{unit}"
    err = row.error or 0
    rel = "" if row.relative is None else f"{row.relative:+.2%}"
    tol = f"{_in_unit(row.tolerance, row):,.{d}f}"
    return (row.name, row.rank, logged, est, f"{_in_unit(err, row):+,.{d}f}", rel, tol,
            "yes" if row.within else "no")


def render_log_comparison(c: LogComparison) -> str:
    """The title, one row per logged figure (estimate, error, the log's precision), then the notes."""
    version = c.logged_version or "version not logged"
    lines = [
        f"{c.engine} log ({version}) beside vramwise's {c.engine} {c.modelled_version} plan: model {c.model}, "
        f"GPU {c.gpu} ({c.gpu_bytes:,} B)",
    ]
    rows = [_HEADER, *(_cells(r) for r in c.rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    for i, cells in enumerate(rows):
        lines.append("  ".join(
            cell.ljust(w) if j < 2 else cell.rjust(w) for j, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip())
        if i == 0:
            lines.append("-" * len(lines[-1]))
    modelled = [r for r in c.rows if r.estimate is not None]
    within = sum(1 for r in modelled if r.within)
    lines.append(f"{len(c.rows)} figures logged, {len(modelled)} modelled, {within} within the log's printed precision")
    lines.extend(f"note: {n}" for n in c.notes)
    lines.append("(units as the log prints them: its GB and GiB are 2^30 bytes, MB and MiB 2^20; error = estimate - "
                 "logged)")
    return "\n".join(lines)


def log_comparison_dict(c: LogComparison) -> dict[str, Any]:
    """The comparison as JSON: bytes for memory figures, counts and ratios as logged."""
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "engine": c.engine,
        "logged_version": c.logged_version,
        "modelled_version": c.modelled_version,
        "logged_model": c.logged_model,
        "model": c.model,
        "gpu": c.gpu,
        "gpu_bytes": c.gpu_bytes,
        "options": dict(c.options),
        "rows": [
            {
                "name": r.name,
                "rank": r.rank,
                "unit": "B" if r.is_bytes else r.unit,
                "printed": f"{r.printed} {r.unit}",
                "logged": r.logged,
                "tolerance": r.tolerance,
                "estimate": r.estimate,
                "error": r.error,
                "relative_error": r.relative,
                "within_tolerance": r.within,
                "modelled": r.estimate is not None,
            }
            for r in c.rows
        ],
        "notes": list(c.notes),
    }

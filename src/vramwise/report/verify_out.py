"""Estimate beside measurement: the table and the JSON of ``vramwise verify`` (schema ``vramwise/verify`` v1)."""

from __future__ import annotations

from typing import Any

from vramwise.units import Unit, fmt, footer, to_unit, unit_label
from vramwise.verify.compare import Comparison
from vramwise.workload import InferSetup, TrainSetup, setup_to_flat

SCHEMA = "vramwise/verify"  # docs/json-schema.md
VERSION = 1


def render_comparison(c: Comparison, *, title: str, unit: Unit = "gib") -> str:
    label = unit_label(unit)
    lines = [
        title,
        f"{'quantity':<18} {'estimate':>17} {'measured':>17} {label + ' est':>9} {label + ' meas':>9} {'error':>8}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in c.rows:
        err = "" if r.error is None else f"{r.error:+.2%}"
        lines.append(
            f"{r.name:<18} {r.estimate:>17,} {r.measured:>17,} {to_unit(r.estimate, unit):>9.2f} "
            f"{to_unit(r.measured, unit):>9.2f} {err:>8}"
        )
    lines.append(f"measured on: {c.semantics}")
    if c.cuda:
        lines.append(
            f"CUDA: max allocated {fmt(c.cuda['max_memory_allocated'], unit)}, max reserved "
            f"{fmt(c.cuda['max_memory_reserved'], unit)}, device used {fmt(c.cuda['device_used'], unit)} "
            f"(estimate with context and reserve: {fmt(c.full_estimate, unit)})"
        )
    if c.allocator_replay:
        a = c.allocator_replay
        lines.append(
            f"allocator replay of the traced {a['allocations']:,} allocations (estimate/allocator_model.py): "
            f"predicted max_memory_allocated {fmt(a['max_allocated'], unit)}, max_memory_reserved "
            f"{fmt(a['max_reserved'], unit)}, reserved − allocated {fmt(a['max_reserved'] - a['max_allocated'], unit)}"
            f" (the estimate's overhead/allocator: {fmt(a['estimate_reserve'], unit)})"
            + (f"; measured on CUDA: {fmt(c.cuda['max_memory_reserved'], unit)} reserved" if c.cuda else "")
        )
    if c.layers_traced:
        lines.append(f"traced at {c.layers_traced} and {c.layers_traced + 1} layers, extrapolated to the full depth")
        if not c.allocator_replay:
            lines.append("allocator replay: only at the full depth (the reserve does not grow linearly with layers)")
    lines.append(
        f"not measurable on a CPU: CUDA context, allocator reserve and NCCL buffers, {fmt(c.overheads, unit)} in the "
        "estimate "
        f"(left out above); trace took {c.seconds:.1f} s"
    )
    lines.append(footer(unit))
    return "\n".join(lines)


def comparison_dict(c: Comparison, *, model: str, setup: InferSetup | TrainSetup) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "kind": c.kind,
        "model": model,
        "setup": setup_to_flat(setup),
        "semantics": c.semantics,
        "layers_traced": c.layers_traced,
        "rows": [{"name": r.name, "estimate": r.estimate, "measured": r.measured, "error": r.error} for r in c.rows],
        "overheads_not_measured": c.overheads,
        "cuda": c.cuda or None,
        "estimate_with_overheads": c.full_estimate,
        "allocator_replay": c.allocator_replay or None,
        "seconds": round(c.seconds, 3),
    }

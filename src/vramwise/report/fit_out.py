"""Answers of ``vramwise fit``: the value, and the estimate at it and one step beyond it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from vramwise.catalog import Gpu
from vramwise.fit.layouts import Layout, Rejected
from vramwise.fit.solve import Answer, FormatRow
from vramwise.report.verdict import budget_words, gpu_title, margin_words, usable
from vramwise.units import Unit, fmt, footer


def render_answer(
    a: Answer,
    gpu: Gpu,
    unit: Unit = "gib",
    *,
    count: int = 1,
    notes: tuple[str, ...] = (),
    assumptions: tuple[str, ...] = (),
    margin: float = 0.0,
) -> str:
    # an engine's plan has no phases (everything it allocates is persistent): no "peak in peak"
    where = f" (peak in {a.at.peak_phase.name})" if a.at.peak_phase else " (the engine's plan)"
    room = a.budget - a.at.peak_bytes
    kept = f"; {margin_words(margin, gpu.memory_bytes, unit)}" if margin else ""
    lines = [
        f"{a.question} on {gpu_title(gpu, count)} (budget {budget_words(gpu, unit, count)}{kept}): {a.value}",
        *_assuming(assumptions),
        f"  at {a.value}: {fmt(a.at.peak_bytes, unit)}{where}, headroom {fmt(room, unit)} ({room:,} B)",
    ]
    if a.beyond is not None:
        over = a.beyond.peak_bytes - a.budget
        lines.append(f"  at {a.next_value}: {fmt(a.beyond.peak_bytes, unit)}, over by {fmt(over, unit)} ({over:,} B)")
    elif a.next_value is not None and a.stopped_by:  # the next candidate is refused by the engine, not too big
        lines.append(f"  at {a.next_value}: {a.stopped_by}")
    else:
        why = a.stopped_by or "to compare (the search cap or the last option)"
        lines.append(f"  nothing beyond it{': ' if a.stopped_by else ' '}{why}")
    lines += [f"note: {n}" for n in notes]
    lines.append(footer(unit))
    return "\n".join(lines)


def _assuming(assumptions: tuple[str, ...]) -> list[str]:
    return [f"  assuming {', '.join(assumptions)}"] if assumptions else []


def render_formats(rows: list[FormatRow], unit: Unit = "gib") -> str:
    """Every candidate format. Under a serving engine the fits and the capacity columns read the same plan; under
    transformers (no plan) there is no serving capacity to show, and the header says which runtime answered."""
    plans = [r.plan for r in rows if r.plan is not None]
    if not plans and not any(r.refused for r in rows):
        lines = [f"{'format':<14} {'peak':>12}  fits (transformers generate; serving capacity: add --engine)"]
        for r in rows:
            lines.append(f"{r.format:<14} {fmt(r.estimate.peak_bytes, unit):>12}  {'yes' if r.fits else 'no'}")
        return "\n".join(lines)
    name = f"{plans[0].engine} {plans[0].version}" if plans else "the engine"
    lines = [f"{'format':<14} {'peak':>12}  fits  serving capacity (fits and capacity: {name}'s plan)"]
    for r in rows:
        peak = fmt(r.estimate.peak_bytes, unit) if r.refused is None else "-"
        lines.append(f"{r.format:<14} {peak:>12}  {'yes' if r.fits else 'no ':<4}  {_capacity(r)}")
    return "\n".join(lines)


def _capacity(r: FormatRow) -> str:
    if r.refused is not None:
        return f"not run: {r.refused}"
    plan = r.plan
    assert plan is not None
    if plan.refusal is not None:
        hint = f"; largest max_model_len that fits {plan.max_context:,}" if plan.max_context else ""
        return f"the engine refuses to start ({plan.refusal}){hint}"
    if not r.fits:
        return "over the budget"
    n = plan.max_sequences or 0
    return (
        f"{plan.kv_tokens or 0:,} KV tokens, {n:,} {'sequence' if n == 1 else 'sequences'} of "
        f"{plan.sequence_tokens:,} tokens"
    )


def render_layouts(
    fitting: list[Layout],
    rejected: list[Rejected],
    gpu: Gpu,
    gpus: int,
    top: int,
    unit: Unit = "gib",
    *,
    notes: tuple[str, ...] = (),
    assumptions: tuple[str, ...] = (),
    margin: float = 0.0,
) -> str:
    budget = usable(gpu.memory_bytes, margin)
    kept = f"; {margin_words(margin, gpu.memory_bytes, unit)}" if margin else ""
    lines = [
        f"{len(fitting)} layouts of {gpus} x {gpu.label} fit (each: {budget_words(gpu, unit)}{kept}), best first:",
        *_assuming(assumptions),
    ]
    fsdp = [x for x in fitting[:top] if x.fsdp != "none"]  # an FSDP framework's layouts: their longer labels align
    width = max([44, *(len(x.label) for x in fsdp)])
    for x in fitting[:top]:
        room = fmt(budget - x.peak, unit)
        peak = fmt(x.peak, unit)
        lines.append(f"  {x.label:<{width}} {peak:>12}  headroom {room:>11}  throughput {x.throughput:.2f}")
    for r in rejected:
        smallest = fmt(r.smallest_peak, unit)
        lines.append(f"  rejected tp={r.tp} pp={r.pp}: at least {smallest} > {fmt(budget, unit)} ({r.reason})")
    if not fitting:
        lines.append("nothing fits: see the smallest peaks above; try a smaller micro-batch, offload or more GPUs")
    proxy = "throughput proxy: recompute x0.75, tp x0.92 per doubling in a node, bubble m/(m+p-1), ZeRO-3 x0.9"
    lines.append(proxy + (", FSDP full shard x0.9, shard-grad-op x0.98" if fsdp else ""))
    lines += [f"note: {n}" for n in notes]
    lines.append(footer(unit))
    return "\n".join(lines)


FIT_SCHEMA = "vramwise/fit"
FIT_VERSION = 1


def fit_dict(
    *,
    question: str,
    model: str,
    gpu: Gpu,
    count: int = 1,
    margin: float = 0.0,
    answer: Answer | None = None,
    formats: tuple[FormatRow, ...] = (),
    layouts: tuple[list[Layout], list[Rejected], int, int] | None = None,
    assumptions: tuple[str, ...] = (),
    notes: tuple[str, ...] = (),
    reason: str | None = None,
) -> dict[str, Any]:
    """Every fit answer as JSON (docs/json-schema.md, "fit"): ``fits`` false with ``reason`` when nothing fits
    (the CLI adds ``advice``); ``answer`` for max, min_gpus and best_format; ``formats`` for best_format;
    ``layouts`` for layouts. Bytes are per GPU."""
    doc: dict[str, Any] = {
        "schema": FIT_SCHEMA,
        "version": FIT_VERSION,
        "question": question,
        "model": model,
        "gpu": {
            "name": gpu.name,
            "label": gpu.label,
            "memory_bytes": gpu.memory_bytes,
            "count": count,
            "margin": margin,
            "budget_bytes": usable(gpu.memory_bytes, margin),
        },
        "fits": reason is None,
        "reason": reason,
        "assumptions": list(assumptions),
        "notes": list(notes),
        "answer": None if answer is None else _answer_dict(answer),
    }
    if formats:
        doc["formats"] = [_format_dict(r) for r in formats]
    if layouts is not None:
        fitting, rejected, candidates, estimates = layouts
        doc["layouts"] = {
            "fitting": [{**asdict(x), "label": x.label} for x in fitting],
            "rejected": [{**asdict(r), "reason": r.reason} for r in rejected],
            "candidates": candidates,
            "estimates": estimates,
        }
    return doc


def _answer_dict(a: Answer) -> dict[str, Any]:
    return {
        "question": a.question,
        "value": a.value,
        "peak_bytes": a.at.peak_bytes,
        "peak_phase": a.at.peak_phase.name if a.at.peak_phase else None,
        "budget_bytes": a.budget,
        "headroom_bytes": a.budget - a.at.peak_bytes,
        "next_value": a.next_value,
        "next_peak_bytes": a.beyond.peak_bytes if a.beyond is not None else None,
        "stopped_by": a.stopped_by,
    }


def _format_dict(r: FormatRow) -> dict[str, Any]:
    plan = r.plan
    return {
        "format": r.format,
        "peak_bytes": None if r.refused else r.estimate.peak_bytes,
        "fits": r.fits,
        "refused": r.refused,
        "engine_refusal": plan.refusal if plan else None,
        "kv_tokens": plan.kv_tokens if plan else None,
        "max_sequences": plan.max_sequences if plan else None,
    }

"""Answers of ``vramwise fit``: the value, and the estimate at it and one step beyond it."""

from __future__ import annotations

from vramwise.catalog import Gpu
from vramwise.fit.layouts import Layout, Rejected
from vramwise.fit.solve import Answer, FormatRow
from vramwise.report.verdict import budget_words, gpu_title
from vramwise.units import Unit, fmt, footer


def render_answer(
    a: Answer, gpu: Gpu, unit: Unit = "gib", *, count: int = 1, notes: tuple[str, ...] = ()
) -> str:
    phase = a.at.peak_phase.name if a.at.peak_phase else "peak"
    room = a.budget - a.at.peak_bytes
    lines = [
        f"{a.question} on {gpu_title(gpu, count)} (budget {budget_words(gpu, unit, count)}): {a.value}",
        f"  at {a.value}: {fmt(a.at.peak_bytes, unit)} (peak in {phase}), headroom {fmt(room, unit)} ({room:,} B)",
    ]
    if a.beyond is not None:
        over = a.beyond.peak_bytes - a.budget
        lines.append(f"  at {a.next_value}: {fmt(a.beyond.peak_bytes, unit)}, over by {fmt(over, unit)} ({over:,} B)")
    else:
        why = a.stopped_by or "to compare (the search cap or the last option)"
        lines.append(f"  nothing beyond it{': ' if a.stopped_by else ' '}{why}")
    lines += [f"note: {n}" for n in notes]
    lines.append(footer(unit))
    return "\n".join(lines)


def render_formats(rows: list[FormatRow], unit: Unit = "gib") -> str:
    lines = [f"{'format':<14} {'peak':>12}  fits  serving capacity (vLLM rule)"]
    for r in rows:
        # no capacity at all: vLLM's rule does not apply to the model (an encoder-decoder), not an empty budget
        cap = "no KV budget left" if r.capacity is not None else "not modelled (vLLM's rule does not apply)"
        if r.capacity and r.capacity.kv_tokens > 0:
            n = r.capacity.max_sequences
            cap = f"{r.capacity.kv_tokens:,} KV tokens, {n:,} {'sequence' if n == 1 else 'sequences'}"
        lines.append(f"{r.format:<14} {fmt(r.estimate.peak_bytes, unit):>12}  {'yes' if r.fits else 'no ':<4}  {cap}")
    return "\n".join(lines)


def render_layouts(
    fitting: list[Layout],
    rejected: list[Rejected],
    gpu: Gpu,
    gpus: int,
    top: int,
    unit: Unit = "gib",
    *,
    notes: tuple[str, ...] = (),
) -> str:
    budget = gpu.memory_bytes
    lines = [f"{len(fitting)} layouts of {gpus} x {gpu.label} fit (each: {budget_words(gpu, unit)}), best first:"]
    for x in fitting[:top]:
        room = fmt(budget - x.peak, unit)
        lines.append(f"  {x.label:<44} {fmt(x.peak, unit):>12}  headroom {room:>11}  throughput {x.throughput:.2f}")
    for r in rejected:
        smallest = fmt(r.smallest_peak, unit)
        lines.append(f"  rejected tp={r.tp} pp={r.pp}: at least {smallest} > {fmt(budget, unit)} ({r.reason})")
    if not fitting:
        lines.append("nothing fits: see the smallest peaks above; try a smaller micro-batch, offload or more GPUs")
    lines.append("throughput proxy: recompute x0.75, tp x0.92 per doubling in a node, bubble m/(m+p-1), ZeRO-3 x0.9")
    lines += [f"note: {n}" for n in notes]
    lines.append(footer(unit))
    return "\n".join(lines)

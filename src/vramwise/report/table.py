"""Plain-text table of an estimate: one row per term, the total, phases, verdict and capacity."""

from __future__ import annotations

from vramwise.estimate.serving import Capacity
from vramwise.estimate.term import Estimate
from vramwise.report.verdict import Verdict, budget_words, gpu_title
from vramwise.units import Unit, fmt, footer, to_unit, unit_label


def render_table(
    estimate: Estimate,
    *,
    title: str,
    unit: Unit = "gib",
    explain: bool = False,
    verdict: Verdict | None = None,
    capacity: Capacity | None = None,
) -> str:
    label = unit_label(unit)
    total = estimate.peak_bytes
    width = max([len(t.name) for t in estimate.terms] + [len("total (peak)")])
    lines = [title, f"{'term':<{width}}  {'bytes':>17}  {label:>9}  {'share':>6}"]
    lines.append("-" * len(lines[-1]))
    for t in estimate.terms:
        share = t.bytes / total if total else 0.0
        lines.append(f"{t.name:<{width}}  {t.bytes:>17,}  {to_unit(t.bytes, unit):>9.2f}  {share:>6.1%}")
        if explain:
            lines.append(f"{'':<{width}}    = {t.formula}")
            lines.append(f"{'':<{width}}    source: {t.source}")
    lines.append("-" * len(lines[1]))
    lines.append(f"{'total (peak)':<{width}}  {total:>17,}  {to_unit(total, unit):>9.2f}  {1:>6.1%}")
    if estimate.phases:
        peak = estimate.peak_phase
        parts = [
            f"{p.name} {fmt(estimate.phase_total(p), unit)}{' <- peak' if p is peak else ''}" for p in estimate.phases
        ]
        lines.append("phases: " + "; ".join(parts))
    for t in estimate.host:
        lines.append(f"host RAM: {t.name} {fmt(t.bytes, unit)}" + (f" = {t.formula}" if explain else ""))
    lines += [f"not computed: {m}" for m in estimate.missing]
    lines += [f"note: {n}" for n in estimate.notes]
    if verdict:
        word = "FITS" if verdict.fits else "DOES NOT FIT"
        lines.append(
            f"{gpu_title(verdict.gpu, verdict.count)} ({budget_words(verdict.gpu, unit, verdict.count)}): {word}, "
            f"headroom {fmt(verdict.headroom_bytes, unit)}"
        )
        if explain and verdict.gpu.source:
            lines.append(f"    budget: {verdict.gpu.basis}; source: {verdict.gpu.source}")
    if capacity:
        lines.append(
            f"serving: KV budget {fmt(capacity.budget.bytes, unit)} = {capacity.kv_tokens:,} tokens of KV "
            f"({capacity.kv_bytes_per_token:,} B/token); {capacity.max_sequences:,} concurrent sequences of "
            f"{capacity.sequence_tokens:,} tokens"
        )
        if explain:
            lines.append(f"    = {capacity.budget.formula}")
            lines.append(f"    source: {capacity.budget.source}")
    lines.append(footer(unit))
    return "\n".join(lines)

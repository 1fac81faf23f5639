"""Plain-text table of an estimate: one row per term, the total, phases, verdict and capacity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramwise.estimate.serving import Capacity
from vramwise.estimate.term import Estimate
from vramwise.report.verdict import Verdict, budget_words, gpu_title, margin_words
from vramwise.units import Unit, fmt, footer, to_unit, unit_label

if TYPE_CHECKING:  # a type here only: the hf path never builds an engine plan
    from vramwise.engines.result import EngineEstimate


def render_table(
    estimate: Estimate,
    *,
    title: str,
    unit: Unit = "gib",
    explain: bool = False,
    verdict: Verdict | None = None,
    capacity: Capacity | None = None,
    engine: EngineEstimate | None = None,
    after_verdict: list[str] | None = None,
) -> str:
    """The table; ``after_verdict``: lines shown right after the verdict (``--range``'s block)."""
    label = unit_label(unit)
    total = estimate.peak_bytes
    width = max([len(t.name) for t in estimate.terms] + [len("total (peak)")])
    lines = [title]
    if verdict is not None:  # the verdict comes first, then the terms (issue 13; trial finding 11: hf's was last)
        lines += _verdict_lines(verdict, unit, explain)
    lines += after_verdict or []
    header = f"{'term':<{width}}  {'bytes':>17}  {label:>9}  {'share':>6}"
    lines += [header, "-" * len(header)]
    for t in estimate.terms:
        share = t.bytes / total if total else 0.0
        lines.append(f"{t.name:<{width}}  {t.bytes:>17,}  {to_unit(t.bytes, unit):>9.2f}  {share:>6.1%}")
        if explain:
            lines.append(f"{'':<{width}}    = {t.formula}")
            lines.append(f"{'':<{width}}    source: {t.source}")
    lines.append("-" * len(header))
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
    if engine is not None:
        lines += _engine_lines(engine, unit, explain)
    if capacity and engine is None:  # an engine's capacity is its plan's, said once by _engine_lines
        lines.append(
            f"serving: KV budget {fmt(capacity.budget.bytes, unit)} = {capacity.kv_tokens:,} tokens of KV "
            f"({capacity.kv_bytes_per_token:,} B/token); {capacity.max_sequences:,} concurrent "
            f"{'sequence' if capacity.max_sequences == 1 else 'sequences'} of "
            f"{capacity.sequence_tokens:,} tokens"
        )
        if explain:
            lines.append(f"    = {capacity.budget.formula}")
            lines.append(f"    source: {capacity.budget.source}")
    lines.append(footer(unit))
    return "\n".join(lines)


def _verdict_lines(verdict: Verdict, unit: Unit, explain: bool) -> list[str]:
    word = "FITS" if verdict.fits else "DOES NOT FIT"
    room = f"headroom {fmt(verdict.headroom_bytes, unit)}"
    if verdict.refusal and verdict.headroom_bytes >= 0:
        # the engine refuses inside its own budget (vLLM: gpu_memory_utilization): a positive "headroom" beside
        # DOES NOT FIT read as a fit in the newcomer trial; say where that memory is
        room = f"{fmt(verdict.headroom_bytes, unit)} of the GPU left outside the engine's budget"
    reason = f" ({verdict.reason})" if verdict.refusal else ""
    kept = f"; {margin_words(verdict.margin, verdict.gpu.memory_bytes, unit)}" if verdict.margin else ""
    lines = [
        f"{gpu_title(verdict.gpu, verdict.count)} ({budget_words(verdict.gpu, unit, verdict.count)}{kept}): "
        f"{word}{reason}, "
        f"{room}"
    ]
    if explain and verdict.gpu.source:
        lines.append(f"    budget: {verdict.gpu.basis}; source: {verdict.gpu.source}")
    return lines


def _engine_lines(engine: EngineEstimate, unit: Unit, explain: bool) -> list[str]:
    """The serving line of an engine's plan: its pool and concurrency, or the engine's own refusal (never both)."""
    name = f"{engine.engine} {engine.version}"
    if engine.kv_pool is None and engine.refusal is None and engine.per_gpu:  # hf device_map: no pool, per GPU
        peaks = ", ".join(f"GPU {i} {fmt(e.peak_bytes, unit)}" for i, e in enumerate(engine.per_gpu))
        return [f"engine ({name}): whole layers per GPU; peak per GPU: {peaks}"]
    if engine.refusal is not None:
        lines = [f"serving ({name}): none, the engine refuses to start: {engine.refusal_message or engine.refusal}"]
    else:
        pool = engine.kv_pool.bytes if engine.kv_pool else 0
        parts = [f"KV pool {fmt(pool, unit)} = {engine.kv_tokens or 0:,} tokens of KV"]
        if engine.kv_bytes_per_token:
            parts[0] += f" ({engine.kv_bytes_per_token:,} B/token)"
        if engine.context_len is not None and engine.concurrency is not None:
            per = f"{engine.context_len:,} tokens per request"
            parts.append(f"maximum concurrency for {per}: {engine.concurrency:.2f}x")
        if engine.max_sequences is not None:
            noun = "sequence" if engine.max_sequences == 1 else "sequences"
            parts.append(f"{engine.max_sequences:,} concurrent {noun} of {engine.sequence_tokens:,} tokens")
        lines = [f"serving ({name}): " + "; ".join(parts)]
    if engine.max_context is not None:
        how = {"vllm": "--max-model-len", "llama.cpp": "-c", "sglang": "--context-length"}.get(engine.engine)
        told = f" (start it with {how} {engine.max_context} or less)" if engine.refusal and how else ""
        lines.append(f"    largest context (max_model_len) that fits: {engine.max_context:,} tokens{told}")
    if explain and engine.kv_pool is not None:
        lines.append(f"    = {engine.kv_pool.formula}")
        lines.append(f"    source: {engine.kv_pool.source}")
    return lines

"""A training estimate as a plan: every transient term is a coefficient times one workload variable.

Deriving the arithmetic (model states, saved bytes per token of each layer, the layout's shards) is the slow
part of an estimate. It does not depend on the micro-batch, nor (except under eager attention, whose scores
grow with it) on the sequence length, so a plan holds it for every setup that differs only in those two, and
a sweep evaluates about thirty multiplications per estimate. Terms and their formulas are rendered only when
a report asks for them; ``peak`` and ``render`` read the same rules, so the two cannot disagree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vramwise.estimate.overheads import allocator_bytes, with_allocator
from vramwise.estimate.term import Estimate, PhaseKind, Term

# The workload variables a rule's bytes scale with, as indices into ``workload_vars``.
ONE, BATCH, TOKENS, BATCH_SEQ_SEQ, LOSS_CHUNK = range(5)


def workload_vars(batch: int, seq: int, cp: int, loss_chunk: int) -> tuple[int, ...]:
    """(1, micro-batch b, tokens per GPU T = b·s/cp, b·s², tokens per loss chunk min(chunk, T))."""
    tokens = batch * seq // cp
    return (1, batch, tokens, batch * seq * seq, min(loss_chunk, tokens))


def _named(v: tuple[int, ...], seq: int) -> dict[str, int]:
    return {"b": v[BATCH], "s": seq, "T": v[TOKENS], "chunk": v[LOSS_CHUNK]}


@dataclass(frozen=True, slots=True)
class Rule:
    """A term whose bytes are ``round(coef x variable)``; ``formula`` names the variables as {b}, {s}, {T}, {chunk}."""

    name: str
    coef: float
    var: int
    formula: str
    source: str

    def term(self, v: tuple[int, ...], seq: int) -> Term:
        text = self.formula if self.var == ONE else self.formula.format_map(_named(v, seq))
        return Term(name=self.name, bytes=round(self.coef * v[self.var]), formula=text, source=self.source)


def constant(term: Term) -> Rule:
    return Rule(name=term.name, coef=term.bytes, var=ONE, formula=term.formula, source=term.source)


@dataclass(frozen=True, kw_only=True)
class StagePlan:
    """One pipeline stage: its persistent terms, and each phase's transients as indices into ``rules``."""

    persistent: tuple[Term, ...]
    persistent_tensors: int  # bytes of tensors among them: the allocator reserve's base
    host: tuple[Term, ...]
    rules: tuple[Rule, ...]
    phases: tuple[tuple[PhaseKind, tuple[int, ...]], ...]
    allocator_fraction: float | None
    notes: tuple[str, ...]

    @functools.cached_property
    def persistent_bytes(self) -> int:
        return sum(t.bytes for t in self.persistent)

    @functools.cached_property
    def _pairs(self) -> tuple[tuple[float, int], ...]:
        return tuple((r.coef, r.var) for r in self.rules)

    def phase_bytes(self, v: tuple[int, ...]) -> list[int]:
        """Per-GPU bytes at each phase: persistent terms, the phase's transients and the allocator reserve."""
        values = [round(c * v[i]) for c, i in self._pairs]
        fraction, base, persistent = self.allocator_fraction, self.persistent_tensors, self.persistent_bytes
        out = []
        for _, members in self.phases:
            transient = sum([values[j] for j in members])
            out.append(persistent + transient + allocator_bytes(base + transient, fraction))
        return out

    def render(self, v: tuple[int, ...], seq: int) -> Estimate:
        terms = [r.term(v, seq) for r in self.rules]
        phases = tuple(
            with_allocator(self.persistent_tensors, kind, [terms[j] for j in members], self.allocator_fraction)
            for kind, members in self.phases
        )
        return Estimate(persistent=self.persistent, phases=phases, notes=self.notes, host=self.host)

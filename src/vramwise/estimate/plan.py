"""An estimate as a plan: every term is a rule, ``round(coef x one workload variable)`` bytes, its formula
rendered only when a report asks.

Deriving the arithmetic (weights, bytes per sequence of the KV cache, saved bytes per token of each layer, the
layout's shards) is the slow part of an estimate. It does not depend on the batch (nor, in training, on the
sequence length but for eager attention's scores), so one plan serves every setup that differs only in those:
a solver's sweep evaluates a few dozen multiplications per estimate. Inference and training share the plan:
``phase_bytes`` and ``peak`` evaluate its rules' bytes, ``render`` turns the same rules into an ``Estimate``,
so the solvers' number is the report's number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from vramwise.estimate.overheads import allocator_bytes, is_tensor, modelled_allocator, tensor_bytes, with_allocator
from vramwise.estimate.term import Estimate, PhaseKind, Term


class Vars(NamedTuple):
    """The workload variables a rule's bytes scale with (``Rule.var`` indexes them) and its formula names."""

    one: int  # 1: a constant
    b: int  # sequences per step on this GPU: inference's batch, training's micro-batch
    T: int  # training: tokens per GPU, b·s/cp
    bss: int  # training: b·s² (eager attention's scores, sliding-window masks)
    chunk: int  # training: tokens per loss chunk, min(chunk, T)
    s: int  # training: the sequence length (formulas only)

    @classmethod
    def inference(cls, batch: int) -> Vars:
        """Inference's terms are constants or grow with the batch; nothing else varies across one plan."""
        return cls(1, batch, 0, 0, 0, 0)

    @classmethod
    def training(cls, batch: int, seq: int, cp: int, loss_chunk: int) -> Vars:
        tokens = batch * seq // cp
        return cls(1, batch, tokens, batch * seq * seq, min(loss_chunk, tokens), seq)


# Indices of ``Vars``' fields, for ``Rule.var``.
ONE, BATCH, TOKENS, BATCH_SEQ_SEQ, LOSS_CHUNK = range(5)
_CONSTANT = Vars(1, 0, 0, 0, 0, 0)

class AllocatorModel(Protocol):
    """The allocator's reserve from a replay of the step (training: estimate/train/allocation.py), in bytes."""

    @property
    def load_reserve(self) -> int:
        """The reserve once the persistent tensors are allocated: the LOAD phase's."""
        ...

    def reserve(self, v: Vars) -> int:
        """The step's reserve at ``v``, linear in the micro-batch (the layout search extrapolates from two)."""
        ...

    def formula(self, v: Vars, load: bool) -> str: ...


# What ``Plan.phase_bytes`` reads, derived once per plan (``Plan._compiled``).
_Compiled = tuple[
    int, int, tuple[tuple[float, int, bool], ...], tuple[tuple[float, int], ...], tuple[tuple[int, ...], ...]
]


@dataclass(frozen=True, slots=True)
class Rule:
    """A term whose bytes are ``round(coef x v[var])``, and whose formula is written from the same ``Vars``.

    The formula is a function rather than a template: some show products of a variable (inference's tokens
    ``b·chunk``, the batch's share of a breakdown), which a template cannot compute.
    """

    name: str
    coef: float  # bytes per unit of the variable (an int where exact: the product then stays exact)
    var: int  # which of ``Vars``' fields: ONE, BATCH, TOKENS, BATCH_SEQ_SEQ or LOSS_CHUNK
    # the arithmetic with the user's numbers substituted; a constant's (var ONE) does not read its Vars, so a
    # plan renders it once
    formula: Callable[[Vars], str]
    source: str
    # equal tensors the bytes are made of (the loss backward's two logit-sized gradients): the allocator replay
    # allocates them one by one (estimate/train/allocation.py)
    tensors: int = 1

    def bytes(self, v: Vars) -> int:
        return round(self.coef * v[self.var])

    def term(self, v: Vars) -> Term:
        return Term(name=self.name, bytes=self.bytes(v), formula=self.formula(v), source=self.source)


def constant(term: Term) -> Rule:
    """A term that does not vary across a plan (weights, model states, the CUDA context)."""
    text = term.formula
    return Rule(name=term.name, coef=term.bytes, var=ONE, formula=lambda _: text, source=term.source)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """An estimate at any value of its variables: persistent rules (inference's KV cache grows with the batch),
    host terms, the transient rules, and each phase as the indices of the transients live in it."""

    persistent: tuple[Rule, ...]
    host: tuple[Term, ...] = ()  # host RAM per GPU's process (offloaded states), not part of the GPU peak
    transient: tuple[Rule, ...]
    phases: tuple[tuple[PhaseKind, tuple[int, ...]], ...]
    allocator_fraction: float | None
    notes: tuple[str, ...]
    # the reserve from a replay of the step's allocations (bytes, not a fraction of the tensors), used unless
    # allocator_fraction is given; pipeline stages alike share the busiest one's (training.py ``_busiest_alike``)
    allocator: AllocatorModel | None = None

    @functools.cached_property
    def modelled(self) -> AllocatorModel | None:
        """The allocator model the reserve comes from: None when a flat fraction is given or none was built."""
        return self.allocator if self.allocator_fraction is None else None

    @functools.cached_property
    def _loading(self) -> tuple[bool, ...]:
        """Whether each phase is the checkpoint's loading, before the step: its reserve is the load's."""
        return tuple(kind is PhaseKind.LOAD for kind, _ in self.phases)

    @functools.cached_property
    def _compiled(self) -> _Compiled:
        """(constant persistent bytes, the tensors among them, the varying persistent rules as (coef, var,
        is a tensor), the transients as (coef, var), each phase's members): what ``phase_bytes`` reads."""
        held = [r for r in self.persistent if r.var == ONE]
        grows = tuple((r.coef, r.var, is_tensor(r.name)) for r in self.persistent if r.var != ONE)
        return (
            sum(r.bytes(_CONSTANT) for r in held),
            sum(r.bytes(_CONSTANT) for r in held if is_tensor(r.name)),
            grows,
            tuple((r.coef, r.var) for r in self.transient),
            tuple(members for _, members in self.phases),
        )

    def _bytes(self, v: Vars) -> tuple[int, int, list[int]]:
        """(persistent bytes, the tensors among them, each phase's transient bytes) at ``v``."""
        persistent, tensors, grows, pairs, phases = self._compiled
        for coef, var, tensor in grows:
            n = round(coef * v[var])
            persistent += n
            tensors += n if tensor else 0
        values = [round(c * v[i]) for c, i in pairs]
        return persistent, tensors, [sum([values[j] for j in members]) for members in phases]

    def phase_bytes(self, v: Vars) -> list[int]:
        """Per-GPU bytes at each phase: persistent terms, the phase's transients and the allocator reserve."""
        persistent, tensors, transients = self._bytes(v)
        model = self.modelled
        if model is not None:
            step, load = model.reserve(v), model.load_reserve
            loading = self._loading
            return [persistent + n + (load if loads else step) for n, loads in zip(transients, loading, strict=True)]
        fraction = self.allocator_fraction
        return [persistent + n + allocator_bytes(tensors + n, fraction) for n in transients]

    def peak(self, v: Vars) -> int:
        """Per-GPU peak bytes: ``max(phase_bytes(v))``, what ``render(v).peak_bytes`` reports."""
        if self.modelled is not None:
            return max(self.phase_bytes(v))
        persistent, tensors, transients = self._bytes(v)
        # the reserve grows with the transients, so the phase with the most transient bytes is the peak
        n = max(transients)
        return persistent + n + allocator_bytes(tensors + n, self.allocator_fraction)

    @functools.cached_property
    def _constant_terms(self) -> tuple[tuple[Term | None, ...], tuple[Term | None, ...]]:
        """The persistent and transient terms that no variable changes, rendered once per plan."""
        return (
            tuple(r.term(_CONSTANT) if r.var == ONE else None for r in self.persistent),
            tuple(r.term(_CONSTANT) if r.var == ONE else None for r in self.transient),
        )

    def render(self, v: Vars) -> Estimate:
        """Every term with its formula, each phase with its allocator reserve."""
        fixed_persistent, fixed_transient = self._constant_terms
        persistent = tuple(t or r.term(v) for t, r in zip(fixed_persistent, self.persistent, strict=True))
        transient = [t or r.term(v) for t, r in zip(fixed_transient, self.transient, strict=True)]
        base, fraction, model = tensor_bytes(persistent), self.allocator_fraction, self.modelled
        if model is not None:
            step = model.reserve(v)
            phases = tuple(
                modelled_allocator(
                    kind,
                    [transient[j] for j in members],
                    model.load_reserve if loading else step,
                    model.formula(v, loading),
                )
                for (kind, members), loading in zip(self.phases, self._loading, strict=True)
            )
            return Estimate(persistent=persistent, phases=phases, notes=self.notes, host=self.host)
        phases = tuple(
            with_allocator(base, kind, [transient[j] for j in members], fraction) for kind, members in self.phases
        )
        return Estimate(persistent=persistent, phases=phases, notes=self.notes, host=self.host)


class Transients:
    """A plan's transient rules, each added once; a phase lists the indices ``add`` returns, so a term live in
    several phases (inference's prefill views, training's activations) is one rule, evaluated once."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def add(self, *items: Rule | Term) -> list[int]:
        """Indices of ``items`` (terms become constant rules), in order."""
        start = len(self.rules)
        self.rules.extend(item if isinstance(item, Rule) else constant(item) for item in items)
        return list(range(start, len(self.rules)))

    def plan(
        self,
        *,
        persistent: Sequence[Rule],
        host: Sequence[Term] = (),
        phases: Sequence[tuple[PhaseKind, list[int]]],
        allocator_fraction: float | None,
        notes: Sequence[str],
        allocator: AllocatorModel | None = None,
    ) -> Plan:
        return Plan(
            persistent=tuple(persistent),
            host=tuple(host),
            transient=tuple(self.rules),
            phases=tuple((kind, tuple(members)) for kind, members in phases),
            allocator_fraction=allocator_fraction,
            notes=tuple(notes),
            allocator=allocator,
        )

"""Inference memory per GPU: weights + KV cache + the larger of the prefill and logits transients + overheads.

One plan describes an estimate for every batch: each term is a ``BatchTerm`` (bytes per sequence, formula
rendered on demand), the phases list which terms each holds. ``inference_peak`` evaluates the plan's bytes,
``estimate_inference`` renders the same terms, so the solvers' number is the report's number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vramwise.errors import NeedsArchitectureError
from vramwise.estimate.kv_cache import kv_cache, sliding_prefill_views
from vramwise.estimate.logits import logits
from vramwise.estimate.overheads import allocator_bytes, cuda_context_term, is_tensor, tensor_bytes, with_allocator
from vramwise.estimate.precision import compute_bytes, kv_dtype
from vramwise.estimate.sharding import check_tp
from vramwise.estimate.term import BatchTerm, Estimate, PhaseKind, Term, fixed
from vramwise.estimate.weights import weight_terms
from vramwise.estimate.workspace import prefill_workspace
from vramwise.formats import DTYPE_BYTES, StorageFormat, default_format, get_format
from vramwise.spec.load import BareModel, Model
from vramwise.spec.model import ModelSpec
from vramwise.workload import InferSetup

_NEEDS_ARCH = "needs the architecture (layers, heads, hidden size): name a catalog model or a config.json"


@dataclass(frozen=True, kw_only=True)
class InferPlan:
    """An inference estimate at any batch: persistent terms, and the transient terms of each phase."""

    persistent: tuple[BatchTerm, ...]
    phases: tuple[tuple[PhaseKind, tuple[BatchTerm, ...]], ...]
    allocator_fraction: float | None
    notes: tuple[str, ...]

    @functools.cached_property
    def _sums(self) -> tuple[tuple[int, int], tuple[int, int], tuple[tuple[int, int], ...]]:
        """(fixed, per-sequence) bytes of: the persistent terms, the tensors among them, each phase."""

        def total(terms: tuple[BatchTerm, ...]) -> tuple[int, int]:
            return sum(t.fixed for t in terms), sum(t.per_seq for t in terms)

        tensors = tuple(t for t in self.persistent if is_tensor(t.name))
        return total(self.persistent), total(tensors), tuple(total(terms) for _, terms in self.phases)

    def peak(self, batch: int) -> int:
        """Per-GPU peak bytes at ``batch``: persistent terms plus the largest phase with its allocator reserve."""
        (p0, p1), (t0, t1), phases = self._sums
        # the reserve grows with the transients, so the phase with the most transient bytes is the peak
        n = max([f + s * batch for f, s in phases])
        return p0 + p1 * batch + n + allocator_bytes(t0 + t1 * batch + n, self.allocator_fraction)

    def render(self, batch: int) -> Estimate:
        persistent = tuple(t.term(batch) for t in self.persistent)
        base, fraction = tensor_bytes(persistent), self.allocator_fraction
        phases = tuple(
            with_allocator(base, kind, [t.term(batch) for t in terms], fraction) for kind, terms in self.phases
        )
        return Estimate(persistent=persistent, phases=phases, notes=self.notes)


@functools.lru_cache(maxsize=1024)
def _weights(spec: ModelSpec, fmt: StorageFormat, c: int, tp: int) -> tuple[BatchTerm, ...]:
    return tuple(fixed(t) for t in weight_terms(spec, fmt, hp_bytes=c, tp=tp))


@functools.lru_cache(maxsize=64)
def _cuda_context(mib: int | None) -> BatchTerm:
    return fixed(cuda_context_term(mib))


def _plan(spec: ModelSpec, setup: InferSetup) -> InferPlan:
    """The estimate's terms and phases; it never reads ``setup.batch`` (the plan serves every batch)."""
    check_tp(spec, setup.tp)
    fmt = get_format(setup.weight_format or default_format(spec))
    c, tp = compute_bytes(fmt.name), setup.tp
    kv_name, kv_bytes = kv_dtype(setup, fmt.name)
    kv = kv_cache(spec, tokens=setup.tokens, dtype=kv_name, dtype_bytes=kv_bytes, tp=tp, block=setup.kv_block)
    persistent = (*_weights(spec, fmt, c, tp), kv, _cuda_context(setup.overheads.cuda_context_mib))

    # a paged cache (kv_block > 1) copies the window out of the prefill's keys and values
    views = sliding_prefill_views(spec, context=setup.context, dtype_bytes=kv_bytes, tp=tp)
    held = (views,) if views and setup.kv_block == 1 else ()
    chunk = min(setup.prefill_chunk or setup.context, setup.context)
    prefill = prefill_workspace(spec, chunk=chunk, kv_len=setup.context, c=c, attention=setup.attention, tp=tp)
    last = logits(spec, positions=chunk, c=c, last_only=not setup.all_logits)
    phases = [(PhaseKind.PREFILL_LAYER, (prefill, *held)), (PhaseKind.PREFILL_LOGITS, (last, *held))]
    if setup.new_tokens:
        step = prefill_workspace(spec, chunk=1, kv_len=setup.tokens, c=c, attention=setup.attention, tp=tp)
        step_logits = logits(spec, positions=1, c=c, last_only=True)
        # the first step still holds the prefill's views
        phases.append((PhaseKind.DECODE, (step, step_logits, *held)))

    notes = [f"weights stored as {fmt.name}: {fmt.summary}"]
    if tp > 1:
        notes.append(f"per GPU of tp={tp}: linear weights, heads and vocabulary split; norms replicated")
    return InferPlan(
        persistent=persistent,
        phases=tuple(phases),
        allocator_fraction=setup.overheads.allocator_fraction,
        notes=tuple(notes),
    )


_PLANS: dict[tuple, InferPlan] = {}


def _plan_for(spec: ModelSpec, setup: InferSetup) -> InferPlan:
    """The plan of every setup that differs from ``setup`` only in the batch: a solver's sweep builds one."""
    key = (spec, *[v for k, v in vars(setup).items() if k != "batch"])
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 4096:
            _PLANS.clear()
        plan = _PLANS[key] = _plan(spec, setup)
    return plan


def inference_peak(model: Model, setup: InferSetup) -> int:
    """Peak bytes per GPU without rendering terms: the number ``estimate_inference`` reports (the solvers'
    path; both read one plan)."""
    if isinstance(model, BareModel):
        return _bare_inference(model, setup).peak_bytes
    return _plan_for(model, setup).peak(setup.batch)


def estimate_inference(model: Model, setup: InferSetup) -> Estimate:
    """Per-GPU inference memory in accurate mode (textbook mode lives in ``estimate/textbook/``)."""
    if isinstance(model, BareModel):
        return _bare_inference(model, setup)
    return _plan_for(model, setup).render(setup.batch)


def _bare_inference(model: BareModel, setup: InferSetup) -> Estimate:
    """Only a parameter count: weights at a uniform width; every architecture-dependent term is missing."""
    fmt_name = setup.weight_format or "bf16"
    bits = 4 if fmt_name == "int4" else DTYPE_BYTES[fmt_name] * 8 if fmt_name in DTYPE_BYTES else None
    if bits is None:
        get_format(fmt_name)  # unknown names raise the usual error; known ones need the tensor inventory
        raise NeedsArchitectureError(
            f"weight format '{fmt_name}' {_NEEDS_ARCH}; with a bare size use fp32, fp16, bf16, fp8-e4m3, int8 or int4"
        )
    weights = Term(
        name="weights/all",
        bytes=int(model.params * bits / 8 / setup.tp),
        formula=f"Φ {model.params:,} x {bits / 8:g} B" + (f" / tp {setup.tp}" if setup.tp > 1 else ""),
        source="seed 000: memory = parameters x bytes per parameter",
    )
    return Estimate(
        persistent=(weights, cuda_context_term(setup.overheads.cuda_context_mib)),
        missing=tuple(
            f"{name} {_NEEDS_ARCH}" for name in ("kv_cache", "activations/prefill_workspace", "activations/logits")
        ),
    )

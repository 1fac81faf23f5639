"""Inverse questions: the largest setting that fits a memory budget, the smallest that does, the best format.

Every search relies on one property of the estimate: memory never decreases as the batch, the sequence or the
context grows, and never increases as data-parallel sharding grows. So each answer comes with the estimate at
the answer and at the next step beyond it, which is how a user sees the boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vramwise.errors import DoesNotFitError, VramwiseError
from vramwise.estimate.inference import estimate_inference, inference_peak
from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.training import estimate_training, training_floor, training_peak
from vramwise.spec.model import ModelSpec
from vramwise.spec.traits import Positions
from vramwise.units import Unit, fmt
from vramwise.workload import FsdpMode, InferSetup, Loading, Offload, TrainSetup

if TYPE_CHECKING:
    from vramwise.engines.result import EngineEstimate

# a serving engine's plan for one setup (app/engines.py engine_plan bound to the GPU): what fit asks under --engine
EnginePlan = Callable[[InferSetup], "EngineEstimate"]

SEARCH_CAP = 1 << 22  # 4M: no batch, sequence or GPU count beyond this is a sensible answer

# From the most to the least faithful to the checkpoint; the first that fits is the answer.
FORMATS_BY_QUALITY = ("bf16", "fp8-e4m3", "int8", "q8_0", "q6_k", "q5_k_m", "awq-4bit-g128", "q4_k_m", "nf4", "q4_0")


@dataclass(frozen=True, kw_only=True)
class Answer:
    question: str  # e.g. "max batch"
    value: int | str
    at: Estimate  # the estimate at the answer
    next_value: int | str | None  # one step beyond the answer (None: the search cap, or nothing beyond)
    beyond: Estimate | None
    budget: int
    stopped_by: str | None = None  # why nothing beyond the answer was tried, when not the budget


def _largest(
    peak: Callable[[int], int], budget: int, lo: int, what: str, unit: Unit, scale: int = 1, cap: int = SEARCH_CAP
) -> tuple[int, bool]:
    """(largest n >= lo with peak(n) <= budget, whether n + 1 was within the search cap); peak non-decreasing.

    ``scale``: the value n stands for is n x scale (the sequence under context parallelism), for the message.
    ``cap``: the largest n the model can run at all (a learned position table), at most SEARCH_CAP."""
    first = peak(lo)
    if first > budget:
        raise DoesNotFitError(
            f"{what} {lo * scale} already needs {fmt(first, unit)} > budget {fmt(budget, unit)}: nothing to grow"
        )
    good, step = lo, lo
    bad = None
    while good < cap:  # double until it no longer fits
        trial = min(good + step, cap)
        if peak(trial) > budget:
            bad = trial
            break
        good, step = trial, step * 2
    if bad is None:
        return good, False
    while bad - good > 1:  # bisect between the last fit and the first miss
        mid = (good + bad) // 2
        good, bad = (mid, bad) if peak(mid) <= budget else (good, mid)
    return good, True


def _misses(spec: ModelSpec, setup: TrainSetup, budget: int) -> bool:
    """Whether the training step certainly misses ``budget`` without the caching-allocator replay: under the
    replay, its peak without the reserve (``training_floor``, never above the peak) already does. The replay is
    the most of a search's time on a large MoE model (hundreds of expert tensors per layer); without it the
    check is not worth making (the flat fraction costs nothing)."""
    return setup.allocator.replayed and training_floor(spec, setup) > budget


def _peak_or_floor(spec: ModelSpec, setup: TrainSetup, budget: int) -> int:
    """``training_peak``, or a number above ``budget`` when ``_misses``: the same answer to ``<= budget``."""
    return budget + 1 if _misses(spec, setup, budget) else training_peak(spec, setup)


def max_train(spec: ModelSpec, setup: TrainSetup, budget: int, field: str, unit: Unit = "gib") -> Answer:
    """Largest micro-batch (``batch``) or sequence length (``seq``) whose training step fits ``budget``."""
    if field not in ("batch", "seq"):
        raise ValueError(field)
    step = setup.parallel.cp if field == "seq" else 1  # context parallelism splits the sequence evenly

    def at(n: int) -> TrainSetup:
        return replace(setup, batch=n) if field == "batch" else replace(setup, seq=n * step)

    table = _table(spec) if field == "seq" else None
    cap = min(SEARCH_CAP, table // step) if table else SEARCH_CAP
    what = f"training with {field}"
    # from 2 on only the comparison with the budget is read: the floor answers it without a replay when it misses
    # (1's peak is the refusal's message)
    n, beyond = _largest(
        lambda n: training_peak(spec, at(n)) if n == 1 else _peak_or_floor(spec, at(n), budget),
        budget, 1, what, unit, step, cap,
    )
    return Answer(
        question=f"max {field}",
        value=n * step,
        at=estimate_training(spec, at(n)),
        next_value=(n + 1) * step if beyond else None,
        beyond=estimate_training(spec, at(n + 1)) if beyond else None,
        budget=budget,
        stopped_by=_table_note(table) if table and n == cap else None,
    )


def max_infer(spec: ModelSpec, setup: InferSetup, budget: int, field: str, unit: Unit = "gib") -> Answer:
    """Largest batch (concurrent sequences) or context that fits ``budget`` for inference."""
    if field not in ("batch", "context"):
        raise ValueError(field)

    def at(n: int) -> InferSetup:
        return replace(setup, batch=n) if field == "batch" else replace(setup, context=n)

    table = _table(spec) if field == "context" else None
    cap = min(SEARCH_CAP, max(1, table - setup.new_tokens)) if table else SEARCH_CAP  # prompt + generated
    n, beyond = _largest(lambda n: inference_peak(spec, at(n)), budget, 1, f"inference with {field}", unit, 1, cap)
    return Answer(
        question=f"max {field}",
        value=n,
        at=estimate_inference(spec, at(n)),
        next_value=n + 1 if beyond else None,
        beyond=estimate_inference(spec, at(n + 1)) if beyond else None,
        budget=budget,
        stopped_by=_table_note(table) if table and n == cap else None,
    )


def _table(spec: ModelSpec) -> int | None:
    """Rows of a learned position table: no longer sequence can run, whatever the memory (W7)."""
    from vramwise.estimate.positions import position_limit

    return position_limit(spec) if spec.traits.positions is Positions.LEARNED else None


def _table_note(table: int) -> str:
    return f"the model's learned position table holds {table:,} positions"


# loading paths that need ZeRO-3 or FSDP (estimate/train/loading.py); one GPU loads with hf
_SHARDED_LOADING = (Loading.FSDP_FULL, Loading.FSDP_META, Loading.FSDP_SYNC, Loading.ZERO_INIT)


def min_gpus(spec: ModelSpec, setup: TrainSetup, budget: int, unit: Unit = "gib") -> Answer:
    """Fewest data-parallel GPUs for the training step under ZeRO-3 (or the ZeRO stage or FSDP mode asked).

    One GPU means no sharding at all; from two on the states are partitioned, so memory falls as GPUs grow.
    """
    sharded = setup.parallel.fsdp if setup.parallel.fsdp != FsdpMode.NONE else None
    stage = setup.parallel.zero or 3  # --zero 1 or 2 as asked; ZeRO-3 when no stage is given

    def setup_at(n: int) -> TrainSetup:
        if n == 1:
            # one GPU shards nothing: a sharded loading path asked for the GPUs that follow loads as it would
            alone = {"loading": Loading.AUTO} if setup.loading in _SHARDED_LOADING else {}
            return setup.with_flat(dp=1, zero=0, fsdp=FsdpMode.NONE, offload=Offload.NONE, **alone)
        if sharded:
            return setup.with_flat(dp=n, zero=0, fsdp=sharded)
        return setup.with_flat(dp=n, zero=stage, fsdp=FsdpMode.NONE)

    def at(n: int) -> Estimate:
        return estimate_training(spec, setup_at(n))

    ests: dict[int, Estimate] = {}

    def fits(n: int) -> bool:
        if n not in ests and _misses(spec, setup_at(n), budget):
            return False  # the answer only reads the estimates at the fewest GPUs that fit and one fewer
        ests[n] = ests.get(n) or at(n)
        return ests[n].peak_bytes <= budget

    if fits(1):
        return Answer(question="min GPUs", value=1, at=ests[1], next_value=None, beyond=None, budget=budget)
    lo, hi = 1, 2
    while not fits(hi):
        lo, hi = hi, hi * 2
        if hi > SEARCH_CAP:
            floor = at(SEARCH_CAP)
            mode = f"FSDP {sharded}" if sharded else f"ZeRO-{stage}"
            # ZeRO-1/2 shard the optimizer states (and gradients) only: the 16-bit weights stay whole on each GPU
            kept = "the activations" if sharded or stage == 3 else "the weights and the activations"
            if floor.peak_phase is not None and floor.peak_phase.kind is PhaseKind.LOAD:
                path = floor.peak_phase.transient[0].name.removeprefix("loading/")
                raise DoesNotFitError(
                    f"no number of GPUs fits: even {SEARCH_CAP:,} {mode} GPUs need {fmt(floor.peak_bytes, unit)} "
                    f"each (> {fmt(budget, unit)}) while loading the checkpoint ({path}), which data parallelism "
                    "does not shrink; --loading fsdp-meta or fsdp-sync loads each GPU's shard"
                )
            raise DoesNotFitError(
                f"no number of GPUs fits: even {SEARCH_CAP:,} {mode} GPUs need {fmt(floor.peak_bytes, unit)} each "
                f"(> {fmt(budget, unit)}): {kept} do not shrink with data parallelism; try --recompute full, "
                "a smaller micro-batch, tp or pp" + ("" if kept == "the activations" else ", or ZeRO-3")
            )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    beyond = ests.get(lo) or at(lo)
    return Answer(question="min GPUs", value=hi, at=ests[hi], next_value=lo, beyond=beyond, budget=budget)


@dataclass(frozen=True, kw_only=True)
class FormatRow:
    """One candidate format. With a serving engine, ``fits`` and ``plan`` (its KV pool and concurrency) come from
    the one engine plan, so the row cannot read "fits" beside an engine that refuses; with transformers
    (``plan`` None) ``fits`` is generate's peak against the budget and there is no serving capacity."""

    format: str
    estimate: Estimate
    fits: bool
    plan: EngineEstimate | None = None  # the engine's plan at this format (None: transformers, or refused)
    refused: str | None = None  # why the engine cannot run this format at all (one line), when it cannot


def _row(name: str, setup: InferSetup, spec: ModelSpec, budget: int, plan: EnginePlan | None) -> FormatRow:
    at = replace(setup, weight_format=name)
    if plan is None:
        est = estimate_inference(spec, at)
        return FormatRow(format=name, estimate=est, fits=est.peak_bytes <= budget)
    try:
        found = plan(at)
    except VramwiseError as err:  # the engine rejects this format or setup: no row can read "fits"
        return FormatRow(format=name, estimate=Estimate(persistent=()), fits=False, refused=str(err))
    fits = found.refusal is None and found.estimate.peak_bytes <= budget
    return FormatRow(format=name, estimate=found.estimate, fits=fits, plan=found)


def best_format(
    spec: ModelSpec, setup: InferSetup, budget: int, unit: Unit = "gib", plan: EnginePlan | None = None
) -> tuple[Answer, list[FormatRow]]:
    """The most faithful weight format whose inference fits, and every candidate; with ``plan`` (a serving
    engine's), "fits" is that engine's verdict (it starts, and its peak is within the budget) and every row
    carries the plan's capacity."""
    rows = [_row(name, setup, spec, budget, plan) for name in FORMATS_BY_QUALITY]
    best = next((i for i, r in enumerate(rows) if r.fits), None)
    if best is None:
        ran = [r for r in rows if r.refused is None]
        smallest = min(ran or rows, key=lambda r: r.estimate.peak_bytes)
        why = (
            f"the engine refuses every format ({smallest.format}: {smallest.plan.refusal})"
            if smallest.plan is not None and smallest.plan.refusal
            else f"the smallest, {smallest.format}, needs {fmt(smallest.estimate.peak_bytes, unit)}"
        )
        raise DoesNotFitError(
            f"no weight format fits {fmt(budget, unit)}: {why}; use tensor parallelism (--tp) or a shorter context"
        )
    beyond = rows[best - 1] if best > 0 else None
    # the engine refusing the next format is why it does not fit, not a peak over the budget: say that instead
    refused = beyond and (beyond.refused or (beyond.plan.refusal if beyond.plan else None))
    answer = Answer(
        question="best format",
        value=rows[best].format,
        at=rows[best].estimate,
        next_value=beyond.format if beyond else None,
        beyond=beyond.estimate if beyond and not refused else None,
        budget=budget,
        stopped_by=f"the engine refuses it ({refused})" if refused else None,
    )
    return answer, rows

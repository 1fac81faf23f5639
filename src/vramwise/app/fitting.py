"""The inverse questions of ``fit``: the largest batch or context, the fewest GPUs, the best format, the layouts.

When the target cannot fit, the error says so in one line and adds advice: the smallest setup that does fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from vramwise.app.choices import DEFAULT_TOP, MAX_TARGETS
from vramwise.app.engines import hf_only
from vramwise.app.fit_words import ROUND_TO, infer_assumptions, rounded, train_assumptions
from vramwise.app.gpu_rules import infer_options, native_format, train_options, uncounted
from vramwise.app.margin import check_margin
from vramwise.app.run import architecture
from vramwise.app.setups import (
    INFERENCE_ONLY,
    TRAINING_ONLY,
    check_format,
    infer_setup,
    named_preset,
    refuse,
    train_setup_noted,
)
from vramwise.catalog import Gpu, GpuChoice, parse_gpu
from vramwise.errors import (
    DoesNotFitError,
    InapplicableOptionError,
    InvalidLayoutError,
    InvalidWorkloadError,
    VramwiseError,
)
from vramwise.report.verdict import usable
from vramwise.units import Unit, fmt
from vramwise.workload import Recompute
from vramwise.workload.checks import positive
from vramwise.workload.engines import Engine

if TYPE_CHECKING:
    from vramwise.engines.result import EngineEstimate
    from vramwise.fit.layouts import Search
    from vramwise.fit.solve import Answer, FormatRow
    from vramwise.spec.model import ModelSpec
    from vramwise.workload import InferSetup, TrainSetup


class Question(StrEnum):
    MAX = "max"  # the largest target (batch, seq or context)
    MIN_GPUS = "min_gpus"  # training: the fewest data-parallel GPUs under ZeRO-3 or FSDP
    BEST_FORMAT = "best_format"  # inference: the most faithful weight format
    LAYOUTS = "layouts"  # training: every parallel layout of N GPUs, ranked


@dataclass(frozen=True, kw_only=True)
class FitRequest:
    model: str
    gpu: str  # the GPU whose memory is the budget: a name, a size (24GiB), a count (8xH100)
    question: Question
    target: str | None = None  # MAX: one of MAX_TARGETS
    gpus: int | None = None  # LAYOUTS: the GPU count
    infer: bool = False  # inference instead of training
    options: Mapping[str, Any] = field(default_factory=dict)  # the setup's options by name
    top: int | None = None  # LAYOUTS: how many to show (None: DEFAULT_TOP)
    max_batch: int | None = None  # LAYOUTS: try every micro-batch from 1 to this (None: the setup's batch)
    unit: Unit = "gib"  # of the numbers in error messages
    serve: bool = False  # --serve: the same as the option engine="vllm" (as infer's)
    margin: float = 0.0  # --margin: the fraction of each GPU kept free; the answers fit the rest


@dataclass(frozen=True, kw_only=True)
class FitResult:
    question: Question
    gpu: Gpu
    answer: Answer | None = None  # MAX, MIN_GPUS, BEST_FORMAT
    formats: tuple[FormatRow, ...] = ()  # BEST_FORMAT: every candidate, most faithful first
    layouts: Search | None = None  # LAYOUTS
    gpus: int | None = None  # LAYOUTS: the GPU count
    top: int = DEFAULT_TOP  # LAYOUTS: how many to show
    count: int = 1  # GPUs of this kind given with --gpu (NxNAME); the answers are per GPU
    notes: tuple[str, ...] = ()  # what --gpu changed (tp or dp from the count, fp16 rules) and the budget's basis
    assumptions: tuple[str, ...] = ()  # the setup the answer holds for, and how it was rounded (the header says it)
    margin: float = 0.0  # --margin kept free: ``answer.budget`` is the GPU's budget less it


def fit(req: FitRequest) -> FitResult:
    """Answer one fit question, or raise DoesNotFitError with the smallest setup that does fit."""
    try:
        return _fit(req)
    except InvalidWorkloadError as err:  # an option a --framework preset set: say so (app/setups.py named_preset)
        if req.infer:
            raise
        raise named_preset(err, train_options(uncounted(_gpu(req)), req.options)[0]) from None


def _fit(req: FitRequest) -> FitResult:
    _check(req)
    margin = check_margin(req.margin)
    model = architecture(req.model, "fit")
    choice = _gpu(req)
    gpu = choice.gpu
    budget = usable(gpu.memory_bytes, margin)
    if req.infer:
        given = _engine_options(req)
        options, notes = infer_options(choice, given, native_format(model, choice, given))
        inference = infer_setup(options, model)
        if inference.hf.device_map is not None:
            hf_only(inference, "fit")  # refuses: fit asks of the whole model on each GPU
        if inference.engine != Engine.HF:
            found = _fit_engine(req, model, choice, inference)
        else:
            found = _fit_inference(req, model, gpu, inference)
        said = infer_assumptions(inference, _searched(req), margin)
        return replace(found, count=choice.count, notes=(*notes, *found.notes), assumptions=said, margin=margin)
    if req.question is Question.LAYOUTS:
        options, notes = train_options(uncounted(choice), req.options)
        fsdp = _framework_search(req.question, options)
        gpus = choice.count if req.gpus is None and choice.counted else req.gpus
        # an FSDP framework's preset at its distributed recipe (torchtune's single-device one steps the optimizer in
        # backward, which its distributed recipes do not model): each layout then sets its own dp and mode
        sharded = {"dp": 2, "fsdp": "full"} if fsdp and not _shards(options) and "dp" not in options else {}
        setup, preset_notes = train_setup_noted({**options, **sharded}, model)
        # the layouts with dp 1 shard nothing: there the preset is the framework's unsharded one, as `train` builds
        # it for such a row (torchtitan's amp; the sharded preset's bf16-mixed put tp=8 dp=1 2.4 GiB under train's)
        single = train_setup_noted(options, model)[0] if sharded else None
        found = _layouts(replace(req, gpus=gpus), model, gpu, setup, fsdp, single)
        said = train_assumptions(setup, _searched(req), margin)
        if single is not None and found.layouts and any(x.dp == 1 for x in found.layouts.fitting):
            differ = [a for a in train_assumptions(single, _searched(req), margin) if a not in said
                      and not a.startswith("dp ")]
            if differ:  # the "assuming" line is the sharded rows': say what the dp=1 rows assume instead
                notes = (*notes, f"the dp=1 rows shard nothing and take the framework's defaults without FSDP "
                                 f"(as `train` with their flags): {', '.join(differ)}")
        return replace(found, notes=(*notes, *preset_notes), assumptions=said, margin=margin)
    options, notes = train_options(choice, req.options)
    if req.question is Question.MIN_GPUS:
        _framework_search(req.question, options)
    if req.question is Question.MIN_GPUS and options.get("dp") is None and _shards(options):
        # the search sets dp itself (1 unsharded, then 2, 4, ...): a sharded setup cannot be built at dp=1, the
        # default, so it is built at the search's first sharded step; --fsdp full / --zero 3 used to be refused
        options["dp"] = 2
    setup, preset_notes = train_setup_noted(options, model)
    notes = (*notes, *preset_notes)
    from vramwise.estimate.positions import training_positions
    from vramwise.estimate.train.training import estimate_training
    from vramwise.fit.solve import max_train, min_gpus
    from vramwise.spec.model import ModelSpec as RuntimeSpec

    said = train_assumptions(setup, _searched(req), margin)
    if req.question is Question.MIN_GPUS:
        answer = min_gpus(model, setup, budget, req.unit)
        return FitResult(question=req.question, gpu=gpu, answer=answer, notes=notes, assumptions=said, margin=margin)
    try:
        answer = max_train(model, setup, budget, str(req.target), req.unit)
    except DoesNotFitError as err:
        raise DoesNotFitError(f"{err}; {smallest_that_fits(model, setup, budget)}") from None
    if req.target == "seq":
        answer = rounded(answer, lambda n: estimate_training(model, replace(setup, seq=n)), setup.parallel.cp)
        spec = model if isinstance(model, RuntimeSpec) else None  # a bare size has no positions to check
        past = training_positions(spec, replace(setup, seq=int(answer.value))) if spec else None
        notes = (*notes, past) if past else notes
    return FitResult(question=req.question, gpu=gpu, answer=answer, count=choice.count, notes=notes,
                     assumptions=said, margin=margin)


def _searched(req: FitRequest) -> str:
    """What the question varies: the --max target, or the question itself."""
    return str(req.target) if req.question is Question.MAX else str(req.question)


def _framework_search(question: Question, options: dict[str, Any]) -> tuple[str, ...]:
    """What a search varies must be what the framework runs: --layouts tries ZeRO stages 0-3, or the FSDP modes of a
    framework that shards with FSDP instead (torchtune, torchtitan, LitGPT: the modes returned; no sharding only
    when its preset does not shard at dp 2); --min-gpus shards over more GPUs
    (ZeRO-3 unless --zero/--fsdp is given, or the framework's own sharding: FSDP2 for torchtune and torchtitan).
    ``options`` gets the framework's sharding; a framework that runs neither is refused."""
    from vramwise.app.setups import TRAIN_FIELDS
    from vramwise.workload.frameworks import framework_of, preset, refusal
    from vramwise.workload.options import Framework

    if question is Question.MIN_GPUS and str(options.get("optimizer")) == "ao-adamw-8bit" and not _shards(options):
        # torchao's per-parameter optimizer is modelled under FSDP, not ZeRO (estimate/train/knobs.py)
        options["fsdp"] = "full"
    framework = framework_of(options)
    if framework is Framework.NONE:
        return ()
    # the presets and rules read flat (schema v1) names, as app/setups.py hands them over: --cuda-context is
    # cuda_context_mib there (the option's own name raised a TypeError, a traceback from fit and train's advice)
    flat = {TRAIN_FIELDS.get(k, k): v for k, v in options.items()}
    if question is Question.LAYOUTS:
        for zero in (1, 2, 3):
            rule = refusal(framework, {**flat, "dp": 2, "zero": zero})
            if rule is not None and rule.field == "zero":
                fsdp = refusal(framework, {**flat, "dp": 2, "fsdp": "full"})
                if fsdp is None:  # it shards with FSDP: the search ranks FSDP's modes instead of ZeRO's stages
                    shards = str(preset({**flat, "dp": 2}).flat.get("fsdp") or "none") != "none"
                    return ("full", "grad-op") if shards else ("none", "full", "grad-op")
                raise InapplicableOptionError(
                    f"fit --layouts ranks ZeRO stages 0-3 or FSDP's modes, and --framework {framework} runs neither "
                    f"(zero={zero}: {rule.rule}; fsdp=full: {fsdp.rule}); ask --max or --min-gpus instead",
                    field="layouts",
                )
        return ()
    if _shards(options):
        return ()
    sharding = str(preset({**flat, "dp": 2}).flat.get("fsdp") or "none")
    if sharding != "none":
        options["fsdp"] = sharding
        return ()
    rule = refusal(framework, {**flat, "dp": 2, "zero": 3})
    if rule is not None:
        raise InapplicableOptionError(
            f"fit --min-gpus shards over more GPUs (ZeRO-3 unless --zero or --fsdp is given), and --framework "
            f"{framework} does not run zero=3: {rule.rule}; give the sharding it runs (allowed: {rule.allowed})",
            field="min_gpus",
        )
    return ()


def _shards(options: dict[str, Any]) -> bool:
    """Whether the options ask for ZeRO or FSDP sharding, which needs dp >= 2 (workload/layout.py)."""
    return bool(options.get("zero")) or str(options.get("fsdp") or "none") != "none"


def _gpu(req: FitRequest) -> GpuChoice:
    """The --gpu of a fit question, with its count checked against the question's own count."""
    choice = parse_gpu(req.gpu)
    if not choice.counted:
        return choice
    if req.question is Question.MIN_GPUS:
        raise InapplicableOptionError(
            f"--min-gpus searches the number of GPUs: give --gpu {choice.gpu.name} without a count", field="gpu"
        )
    if req.question is Question.LAYOUTS and req.gpus is not None and req.gpus != choice.count:
        raise InvalidLayoutError(
            f"--layouts {req.gpus} and --gpu {choice.text} give two GPU counts; give one (they must agree)",
            field="layouts",
        )
    return choice


def _check(req: FitRequest) -> None:
    """The cross-option rules: which question takes which options."""
    if req.options.get("mode") not in (None, "accurate"):
        raise InapplicableOptionError("fit answers in accurate mode only: drop --mode textbook", field="mode")
    refuse(req.options, ("seed", "lora_fraction"), "applies to --mode textbook (the seeds' formulas)")
    if not req.infer and (req.serve or req.options.get("engine") not in (None, "hf")):
        # the one line on what an engine answers (trial finding 4): its plan serves, it does not train
        flag = "--serve" if req.serve else f"--engine {req.options['engine']}"
        raise InapplicableOptionError(
            f"{flag} answers fit --infer (--max batch|context, --best-format) from the engine's plan; --min-gpus "
            "and --layouts are training questions, which no serving engine answers: add --infer, or drop it",
            field="serve" if req.serve else "engine",
        )
    if req.infer:
        refuse(req.options, TRAINING_ONLY, "is a training option: drop it, or drop --infer")
        if req.options.get("engine") in (None, "hf") and not req.serve:
            refuse(req.options, ("gpu_util",), "applies to a serving engine (--engine vllm, --serve)")
    else:
        refuse(req.options, INFERENCE_ONLY, "is an inference option: add --infer")
    if req.question is not Question.LAYOUTS:
        refuse({"top": req.top, "max_batch": req.max_batch}, ("top", "max_batch"), "applies to --layouts")
    _check_numbers(req)
    if req.question is Question.MAX and req.target not in MAX_TARGETS:
        raise InvalidWorkloadError(
            f"max '{req.target}' is not allowed; allowed: {', '.join(MAX_TARGETS)}",
            field="max",
            allowed=", ".join(MAX_TARGETS),
        )
    if req.question is Question.MAX and req.target == "context" and not req.infer:
        raise InapplicableOptionError(
            "--max context is an inference question: add --infer (training: --max seq)", field="max"
        )
    if req.question is Question.BEST_FORMAT and not req.infer:
        raise InapplicableOptionError("--best-format is an inference question: add --infer", field="best_format")
    if req.question is Question.LAYOUTS and req.infer:
        raise InapplicableOptionError("--layouts ranks training layouts: drop --infer (and any engine)",
                                      field="layouts")
    _check_layouts(req)
    if req.question is Question.MIN_GPUS and req.infer:
        raise InapplicableOptionError("--min-gpus is a training question: drop --infer (and any engine)",
                                      field="min_gpus")


def _check_layouts(req: FitRequest) -> None:
    """--layouts ranks the sharding itself (fit/layouts.py _bases): a given stage or mode was built at dp=1 and
    refused as "dp must be >= 2", a number the user never gave."""
    if req.question is not Question.LAYOUTS:
        return
    for key, flag in (("zero", "--zero"), ("fsdp", "--fsdp")):
        if str(req.options.get(key) or "0") not in ("0", "none"):
            raise InapplicableOptionError(
                f"fit --layouts ranks every ZeRO stage (or an FSDP framework's modes) itself: drop {flag}", field=key)


def _check_numbers(req: FitRequest) -> None:
    """The question's own numbers, and the options that make --min-gpus impossible."""
    for name in ("top", "max_batch"):  # 0 and -1 used to be ignored or to cut the table (K1, K2)
        if getattr(req, name) is not None:
            positive(name, getattr(req, name))
    if req.question is Question.MIN_GPUS:
        # the search tries every dp from 1 up: an option that must divide dp rules out dp=1 and so the question (U1)
        fixed = {
            "ep": req.options.get("ep") if req.options.get("ep") != 1 else None,
            "fsdp_shard": req.options.get("fsdp_shard"),
        }
        refuse(fixed, ("ep", "fsdp_shard"), "must divide dp, which --min-gpus searches from 1 up: drop it")


def _engine_options(req: FitRequest) -> Mapping[str, Any]:
    """``--serve`` is ``--engine vllm``, as in ``vramwise infer``."""
    if not req.serve:
        return req.options
    if req.options.get("engine") not in (None, "vllm"):
        raise InapplicableOptionError(
            f"--serve is --engine vllm; drop --serve to use --engine {req.options['engine']}", field="engine"
        )
    return {**req.options, "engine": "vllm"}


# what "max batch" and "max context" mean to each engine, the value read from its one plan (EngineEstimate)
_ENGINE_MEANING = {
    "batch": "concurrent sequences of {tokens:,} tokens its KV pool holds ({kv:,} KV tokens)",
    "context": "the largest context it can be started with ({what})",
}
_CONTEXT_FLAG = {Engine.VLLM: "--max-model-len", Engine.LLAMA_CPP: "-c", Engine.SGLANG: "--context-length"}


def _fit_engine(req: FitRequest, model: ModelSpec, choice: GpuChoice, setup: InferSetup) -> FitResult:
    """fit's inference questions under a serving engine: every number read from that engine's one plan."""
    from vramwise.app.engines import engine_plan
    from vramwise.fit.solve import Answer, best_format

    gpu, count = choice.gpu, choice.count
    if setup.images:  # as infer --engine (app/run.py _serve)
        raise InvalidWorkloadError(
            f"--images is not modelled by --engine {setup.engine}; drop --images or use --engine hf", field="images"
        )

    def plan(at: InferSetup) -> EngineEstimate:
        return engine_plan(model, at, gpu, count)

    if req.question is Question.BEST_FORMAT:
        answer, rows = best_format(model, setup, usable(gpu.memory_bytes, req.margin), req.unit, plan=plan)
        return FitResult(question=req.question, gpu=gpu, answer=answer, formats=tuple(rows))
    found = plan(setup)
    flag = _CONTEXT_FLAG.get(Engine(setup.engine), "--context")
    if req.target == "batch":
        if found.refusal is not None or not found.max_sequences:
            hint = f"; the largest context that fits is {found.max_context:,} ({flag})" if found.max_context else ""
            why = found.refusal or "no sequence fits its KV pool"
            raise DoesNotFitError(f"{setup.engine} {found.version} does not start or serve one sequence ({why}){hint}")
        value = found.max_sequences
        meaning = _ENGINE_MEANING["batch"].format(tokens=found.sequence_tokens, kv=found.kv_tokens or 0)
    else:
        if not found.max_context:
            raise DoesNotFitError(f"{setup.engine} {found.version}: no context fits ({found.refusal or 'no KV pool'})")
        value = found.max_context // ROUND_TO * ROUND_TO if found.max_context >= ROUND_TO else found.max_context
        found = _at_context(plan, setup, value) or found
        if req.margin and found.estimate.peak_bytes > usable(gpu.memory_bytes, req.margin):
            value, found = _within_margin(plan, setup, value, usable(gpu.memory_bytes, req.margin)) or (value, found)
        what = {Engine.VLLM: "max_model_len", Engine.LLAMA_CPP: "-c, KV cells", Engine.SGLANG: "its token pool"}
        meaning = _ENGINE_MEANING["context"].format(what=f"{what.get(Engine(setup.engine), 'context')}; {flag} sets it")
    budget = usable(gpu.memory_bytes, req.margin)
    if found.estimate.peak_bytes > budget:  # only with --margin: the engine sizes its share from the whole GPU
        raise DoesNotFitError(
            f"{setup.engine} {found.version}'s plan needs {fmt(found.estimate.peak_bytes, req.unit)} > "
            f"{fmt(budget, req.unit)} (the GPU less --margin {req.margin:.0%}): it fills its share of the GPU "
            "(--gpu-memory-utilization, --mem-fraction-static); give it a smaller share"
        )
    answer = Answer(
        question=f"max {req.target} ({setup.engine} {found.version})",
        value=value,
        at=found.estimate,
        next_value=None,
        beyond=None,
        budget=usable(gpu.memory_bytes, req.margin),
        stopped_by=meaning,
    )
    return FitResult(question=req.question, gpu=gpu, answer=answer)


def _within_margin(
    plan: Callable[[InferSetup], EngineEstimate], setup: InferSetup, value: int, budget: int
) -> tuple[int, EngineEstimate] | None:
    """The largest context, a multiple of ROUND_TO up to ``value``, whose plan fits ``budget`` (the GPU less the
    margin): an engine whose memory grows with its context (llama.cpp's -c); None when not even ROUND_TO does."""
    best: tuple[int, EngineEstimate] | None = None
    lo, hi = 1, value // ROUND_TO
    while lo <= hi:
        mid = (lo + hi) // 2
        at = _at_context(plan, setup, mid * ROUND_TO)
        if at is not None and at.refusal is None and at.estimate.peak_bytes <= budget:
            best, lo = (mid * ROUND_TO, at), mid + 1
        else:
            hi = mid - 1
    return best


def _at_context(plan: Callable[[InferSetup], EngineEstimate], setup: InferSetup, n: int) -> EngineEstimate | None:
    """The engine's plan started with context ``n`` (its memory may grow with it: llama.cpp's -c), so the answer
    shows the plan at the answer, not at the context asked; None when the engine refuses it (then the asked)."""
    groups = {Engine.VLLM: ("vllm", "max_model_len"), Engine.SGLANG: ("sglang", "context_length"),
              Engine.LLAMA_CPP: ("llamacpp", "ctx_size")}
    group, name = groups.get(Engine(setup.engine), ("", ""))
    if not group:
        return None
    try:
        return plan(replace(setup, **{group: replace(getattr(setup, group), **{name: n})}))
    except VramwiseError:
        return None


def _fit_inference(req: FitRequest, model: ModelSpec, gpu: Gpu, setup: InferSetup) -> FitResult:
    from vramwise.estimate.inference import estimate_inference
    from vramwise.estimate.positions import inference_positions
    from vramwise.fit.solve import best_format, max_infer

    budget = usable(gpu.memory_bytes, req.margin)
    if req.question is Question.BEST_FORMAT:
        answer, rows = best_format(model, setup, budget, req.unit)
        notes: tuple[str, ...] = ()
        if _no_fp8(gpu):
            answer, rows, notes = _without_fp8(answer, rows, gpu, req.unit)
        if not gpu.bf16:  # the 16-bit candidate runs as fp16 there (same bytes: gpu_rules.py), so say fp16
            answer, rows = _as_fp16(answer), [replace(r, format="fp16") if r.format == "bf16" else r for r in rows]
        return FitResult(question=req.question, gpu=gpu, answer=answer, formats=tuple(rows), notes=notes)
    check_format(model, setup)
    target = "batch" if req.target == "batch" else "context"
    try:
        answer = max_infer(model, setup, budget, target, req.unit)
    except DoesNotFitError as err:
        raise DoesNotFitError(f"{err}; {smallest_format(model, setup, budget, req.unit)}") from None
    said: tuple[str, ...] = ()
    if target == "context":
        answer = rounded(answer, lambda n: estimate_inference(model, replace(setup, context=n)))
        # memory allows it; the model may not: past a rotary model's trained length, say so (estimate/positions.py)
        past = inference_positions(model, replace(setup, context=int(answer.value)))
        said = (past,) if past else ()
    return FitResult(question=req.question, gpu=gpu, answer=answer, notes=said)


def _layouts(
    req: FitRequest, model: ModelSpec, gpu: Gpu, setup: TrainSetup, fsdp: tuple[str, ...] = (),
    unsharded: TrainSetup | None = None,
) -> FitResult:
    from vramwise.fit.layouts import search_layouts

    positive("layouts", req.gpus)
    gpus = int(req.gpus or 0)
    top = req.max_batch or setup.batch
    batches = tuple(range(1, top + 1)) if req.max_batch else (setup.batch,)
    budget = usable(gpu.memory_bytes, req.margin)
    found = search_layouts(model, setup, gpus, budget, batches=batches, fsdp=fsdp, unsharded=unsharded)
    if not found.fitting:
        best = min(found.rejected, key=lambda r: r.smallest_peak, default=None)
        if best is None:  # every layout refused, none measured: the setup's own refusal, not "no layout fits: ;"
            from vramwise.estimate.train.training import estimate_training

            estimate_training(model, setup)
        fewest = smallest_that_fits(model, setup, budget)
        floor = (
            f"the smallest peak is {fmt(best.smallest_peak, req.unit)} ({best.smallest_label} needs more than the "
            "budget per GPU)"
            if best
            else ""
        )
        raise DoesNotFitError(f"no layout of {gpus} x {gpu.name} fits: {floor}; {fewest}")
    top_shown = DEFAULT_TOP if req.top is None else req.top
    return FitResult(question=req.question, gpu=gpu, layouts=found, gpus=gpus, top=top_shown)


def _no_fp8(gpu: Gpu) -> bool:
    """transformers runs fp8 weights from compute capability 8.9 only (app/advice.py FP8_COMPUTE_CC: below it the
    model is dequantized to bf16); unknown for a size given, so left as it is there."""
    from vramwise.app.advice import FP8_COMPUTE_CC

    return gpu.compute_capability is not None and float(gpu.compute_capability) < FP8_COMPUTE_CC


def _without_fp8(answer: Answer, rows: list[FormatRow], gpu: Gpu, unit: Unit) -> tuple[Answer, list[FormatRow],
                                                                                          tuple[str, ...]]:
    """fp8 rows marked as not fitting on a GPU that runs no fp8 (the trial's llava on a T4 was told fp8-e4m3), and
    the answer moved to the most faithful other format that fits."""
    rows = [replace(r, fits=False) if r.format.startswith("fp8") else r for r in rows]
    note = (f"fp8 formats are not candidates on {gpu.label} (compute capability {gpu.compute_capability} < 8.9): "
            "transformers dequantizes an fp8 model to bf16 there (quantizer_finegrained_fp8.py validate_environment)")
    if not str(answer.value).startswith("fp8"):
        return answer, rows, (note,)
    best = next((i for i, r in enumerate(rows) if r.fits), None)
    if best is None:
        raise DoesNotFitError(f"no weight format fits {fmt(answer.budget, unit)} without fp8; {note}")
    before = rows[best - 1] if best > 0 else None
    moved = replace(answer, value=rows[best].format, at=rows[best].estimate,
                    next_value=before.format if before else None,
                    beyond=before.estimate if before and not before.format.startswith("fp8") else None,
                    stopped_by="not run on this GPU (see the note)" if before and before.format.startswith("fp8")
                    else None)
    return moved, rows, (note,)


def _as_fp16(answer: Answer) -> Answer:
    """The best-format answer with its bf16 candidate named fp16, for a GPU without bf16."""
    def rename(v: int | str | None) -> int | str | None:
        return "fp16" if v == "bf16" else v

    value = rename(answer.value)
    assert value is not None  # an answer always has a value
    return replace(answer, value=value, next_value=rename(answer.next_value))


def smallest_that_fits(model: ModelSpec, setup: TrainSetup, budget: int) -> str:
    """Advice: the fewest ZeRO-3 GPUs with full recompute and micro-batch 1, or why none does."""
    from vramwise.fit.solve import min_gpus

    try:
        answer = min_gpus(model, replace(setup, batch=1, recompute=Recompute.FULL), budget)
    except DoesNotFitError:
        return "no data-parallel count fits either, even with full recompute and micro-batch 1"
    except VramwiseError as err:  # a framework that does not run ZeRO-3 (workload/frameworks.py) gets no such advice
        return f"no ZeRO-3 advice ({err})"
    return f"on more GPUs: --batch 1 --recompute full --dp {answer.value} --zero 3"


def smallest_format(model: ModelSpec, setup: InferSetup, budget: int, unit: Unit = "gib") -> str:
    """Advice: the most faithful format that fits at batch 1, or why none does."""
    from vramwise.fit.solve import best_format

    try:
        answer, _ = best_format(model, replace(setup, batch=1), budget, unit)
    except DoesNotFitError as err:
        return str(err)
    return f"smallest that fits: batch 1 with --format {answer.value}"

"""The forward questions: the memory of an inference or a training setup, with its verdict on a GPU."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vramwise.app.gpu_rules import infer_options, native_format, train_options
from vramwise.app.margin import check_margin
from vramwise.app.setups import check_format, infer_setup, named_preset, refuse, train_setup_noted
from vramwise.catalog import Gpu, GpuChoice, parse_gpu
from vramwise.errors import InapplicableOptionError, InvalidWorkloadError
from vramwise.report.verdict import Verdict, verdict
from vramwise.spec.load import resolve_model
from vramwise.spec.model import ModelSpec

if TYPE_CHECKING:
    from vramwise.engines.result import EngineEstimate
    from vramwise.estimate.serving import Capacity
    from vramwise.estimate.term import Estimate
    from vramwise.spec.load import Model
    from vramwise.workload import InferSetup, TrainSetup


@dataclass(frozen=True, kw_only=True)
class InferRequest:
    model: str  # catalog name, path to a config.json, or a bare size such as 14b
    options: Mapping[str, Any] = field(default_factory=dict)  # inference options by name; absent: the default
    gpu: str | None = None  # check the fit against this GPU: a name, a size (24GiB), a count (2x4090)
    serve: bool = False  # serving capacity on the GPU: the same as the option engine="vllm"
    margin: float = 0.0  # --margin: the fraction of the GPU kept free (0 <= margin < 1)
    # the CUDA total a startup log reported, instead of the named GPU's (verify --log: its kind, that machine's total)
    gpu_total: int | None = None


@dataclass(frozen=True, kw_only=True)
class InferResult:
    model: Model
    setup: InferSetup
    estimate: Estimate  # its notes say what was assumed
    gpu: Gpu | None
    verdict: Verdict | None  # None without a GPU
    capacity: Capacity | None  # a serving engine's KV pool and concurrency (read from ``engine``); None with hf
    engine: EngineEstimate | None = None  # the serving engine's plan (``--engine``); None with hf


def _engine_options(req: InferRequest) -> Mapping[str, Any]:
    """``--serve`` is ``--engine vllm``; with hf, vLLM's ``--gpu-memory-utilization`` cannot apply."""
    options = req.options
    if req.serve:
        if options.get("engine") not in (None, "vllm"):
            raise InapplicableOptionError(
                f"--serve is --engine vllm; drop --serve to use --engine {options['engine']}", field="engine"
            )
        options = {**options, "engine": "vllm"}
    if options.get("engine") in (None, "hf"):
        refuse(options, ("gpu_util",), "applies to a serving engine (--engine vllm, --serve)")
    if options.get("engine") == "llama.cpp":
        # the table's rows are PyTorch processes; llama.cpp keeps a flat context (estimate/overheads.py)
        refuse(options, ("cuda_version",), "sizes a PyTorch process's CUDA context; llama.cpp's is --cuda-context")
    return options


def infer(req: InferRequest) -> InferResult:
    """Estimate one inference setup; with a serving engine (``--engine``, ``serve``), that engine's plan on
    ``gpu``: its terms, its verdict and its capacity, all from the one plan."""
    from vramwise.estimate.inference import estimate_inference

    margin = check_margin(req.margin, req.gpu)
    model = resolve_model(req.model)
    choice = parse_gpu(req.gpu) if req.gpu is not None else None  # "" is refused by parse_gpu, not taken as none
    if choice is not None and req.gpu_total is not None:
        choice = replace(choice, gpu=replace(choice.gpu, memory_bytes=req.gpu_total))
    engine_options = _engine_options(req)
    options, gpu_notes = infer_options(choice, engine_options, native_format(model, choice, engine_options))
    setup = infer_setup(options, model)
    check_format(model, setup)
    gpu = choice.gpu if choice else None
    if setup.engine != "hf" or setup.hf.device_map is not None:  # a device_map is the hf engine's own plan
        served = _serve(model, setup, choice, gpu_notes)
        return replace(served, verdict=_with_margin(served.verdict, margin))
    if setup.images and setup.mode == "textbook":
        raise InvalidWorkloadError(
            "--images is not modelled by --mode textbook (the seeds' formulas); drop --images or use infer",
            field="images",
        )
    if setup.mode == "textbook":
        from vramwise.estimate.textbook import textbook_inference

        est = textbook_inference(model, setup)
    else:
        est = estimate_inference(model, setup)
    est = replace(est, notes=est.notes + gpu_notes) if gpu_notes else est
    return InferResult(
        model=model, setup=setup, estimate=est, gpu=gpu, verdict=_verdict(est, choice, margin), capacity=None
    )


def _serve(model: Model, setup: InferSetup, choice: GpuChoice | None, gpu_notes: tuple[str, ...]) -> InferResult:
    """A serving engine's plan: the table's terms, the verdict and the capacity all read this one result."""
    from vramwise.app.engines import engine_plan, engine_verdict

    flag = f"--engine {setup.engine}"
    if choice is None and setup.engine == "hf":  # the hf engine's plan is the device_map split
        raise InvalidWorkloadError("--device-map needs --gpu (the GPUs accelerate spreads the layers over)",
                                   field="gpu")
    if choice is None:
        raise InvalidWorkloadError(f"{flag} needs --gpu (the GPU whose memory the engine sizes its KV pool from)",
                                   field="gpu")
    if setup.mode == "textbook":
        raise InvalidWorkloadError(f"{flag} follows the engine's source, accurate mode only; drop --mode textbook",
                                   field="mode")
    if setup.images:
        raise InvalidWorkloadError(f"--images is not modelled by {flag}; drop --images or use --engine hf",
                                   field="images")
    if not isinstance(model, ModelSpec):
        raise InvalidWorkloadError(f"{flag} needs the architecture: name a catalog model or a config.json")
    plan = engine_plan(model, setup, choice.gpu, choice.count)
    est = replace(plan.estimate, notes=plan.estimate.notes + gpu_notes) if gpu_notes else plan.estimate
    plan = replace(plan, estimate=est)
    return InferResult(
        model=model,
        setup=setup,
        estimate=est,
        gpu=choice.gpu,
        verdict=engine_verdict(plan, choice.gpu, choice.count),
        capacity=None if plan.engine == "hf" else _capacity(plan),  # hf has no pool: no capacity line
        engine=plan,
    )


def _capacity(plan: EngineEstimate) -> Capacity:
    """The plan's pool as the serving capacity (the API's ``capacity``): the same numbers, never recomputed."""
    from vramwise.estimate.serving import Capacity
    from vramwise.estimate.term import Term

    pool = plan.kv_pool or Term(name="kv_cache/pool", bytes=0, formula="", source="")
    return Capacity(
        budget=pool,
        kv_bytes_per_token=plan.kv_bytes_per_token,
        kv_tokens=plan.kv_tokens or 0,
        sequence_tokens=plan.sequence_tokens,
        max_sequences=plan.max_sequences or 0,
    )


def _verdict(est: Estimate, choice: GpuChoice | None, margin: float = 0.0) -> Verdict | None:
    return _with_margin(verdict(est, choice.gpu, choice.count), margin) if choice else None


def _with_margin(v: Verdict | None, margin: float) -> Verdict | None:
    return replace(v, margin=margin) if v is not None and margin else v


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)  # training options by name
    gpu: str | None = None
    per_stage: bool = False  # every pipeline stage, not only the worst
    margin: float = 0.0  # --margin: the fraction of each GPU kept free (0 <= margin < 1)


@dataclass(frozen=True, kw_only=True)
class StageResult:
    index: int  # the pipeline stage (0 without a pipeline)
    estimate: Estimate
    verdict: Verdict | None


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    model: Model
    setup: TrainSetup
    gpu: Gpu | None
    stages: tuple[StageResult, ...]  # the stages asked for: every one with per_stage, else the worst
    per_stage: bool


def train(req: TrainRequest) -> TrainResult:
    """Estimate one training step per GPU: the worst pipeline stage, or every stage."""
    # imported here so that `vramwise infer` never loads the training estimator (a fresh process stays fast)
    from vramwise.estimate.train.textbook_mode import textbook_training
    from vramwise.estimate.train.training import estimate_stages

    margin = check_margin(req.margin, req.gpu)
    model = resolve_model(req.model)
    choice = parse_gpu(req.gpu) if req.gpu is not None else None  # "" is refused by parse_gpu, not taken as none
    options, gpu_notes = train_options(choice, req.options)
    setup, preset_notes = train_setup_noted(options, model)
    gpu_notes = (*gpu_notes, *preset_notes)
    if setup.mode != "textbook":
        refuse(req.options, ("seed", "lora_fraction"), "applies to --mode textbook (the seeds' formulas)")
    else:
        refuse(req.options, ("framework",), "applies to accurate mode (a framework's defaults, not the seeds')")
    gpu = choice.gpu if choice else None
    if setup.mode == "textbook":
        if req.per_stage:
            raise InapplicableOptionError(
                "--per-stage is accurate mode only: seed 002 gives the first stage's formula", field="per_stage"
            )
        estimates = [textbook_training(model, setup)]
    else:
        try:
            estimates = estimate_stages(model, setup)
        except InvalidWorkloadError as err:  # an option the framework preset set: say so (app/setups.py)
            raise named_preset(err, options) from None
    estimates = [replace(e, notes=e.notes + gpu_notes) for e in estimates] if gpu_notes else estimates
    worst = max(estimates, key=lambda e: e.peak_bytes)
    shown = [(i, e) for i, e in enumerate(estimates) if req.per_stage or e is worst]
    stages = tuple(StageResult(index=i, estimate=e, verdict=_verdict(e, choice, margin)) for i, e in shown)
    return TrainResult(model=model, setup=setup, gpu=gpu, stages=stages, per_stage=req.per_stage)


def architecture(text: str, command: str) -> ModelSpec:
    """The model's full description; ``command`` needs more than a bare parameter count."""
    model = resolve_model(text)
    if not isinstance(model, ModelSpec):
        raise InvalidWorkloadError(f"{command} needs the architecture: name a catalog model or a config.json")
    return model

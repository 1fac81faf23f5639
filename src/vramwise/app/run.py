"""The forward questions: the memory of an inference or a training setup, with its verdict on a GPU."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vramwise.app.gpu_rules import infer_options, native_format, train_options
from vramwise.app.setups import check_format, infer_setup, refuse, train_setup
from vramwise.catalog import Gpu, GpuChoice, parse_gpu
from vramwise.errors import InapplicableOptionError, InvalidWorkloadError
from vramwise.report.verdict import Verdict, verdict
from vramwise.spec.load import resolve_model
from vramwise.spec.model import ModelSpec
from vramwise.workload.checks import positive

if TYPE_CHECKING:
    from vramwise.estimate.serving import Capacity
    from vramwise.estimate.term import Estimate
    from vramwise.spec.load import Model
    from vramwise.workload import InferSetup, TrainSetup


@dataclass(frozen=True, kw_only=True)
class InferRequest:
    model: str  # catalog name, path to a config.json, or a bare size such as 14b
    options: Mapping[str, Any] = field(default_factory=dict)  # inference options by name; absent: the default
    gpu: str | None = None  # check the fit against this GPU: a name, a size (24GiB), a count (2x4090)
    serve: bool = False  # serving capacity on the GPU (vLLM's budget rule)
    max_batched_tokens: int | None = None  # --serve: vLLM's profiling tokens (None: serving.py's default)


@dataclass(frozen=True, kw_only=True)
class InferResult:
    model: Model
    setup: InferSetup
    estimate: Estimate  # its notes say what was assumed
    gpu: Gpu | None
    verdict: Verdict | None  # None without a GPU
    capacity: Capacity | None  # None without --serve


def infer(req: InferRequest) -> InferResult:
    """Estimate one inference setup; with ``serve``, also its serving capacity on ``gpu``."""
    from vramwise.estimate.inference import estimate_inference

    if not req.serve:
        refuse(
            {**req.options, "max_batched_tokens": req.max_batched_tokens},
            ("gpu_util", "max_batched_tokens"),
            "applies to --serve (the serving capacity)",
        )
    if req.max_batched_tokens is not None:  # 0 used to mean the default in silence, -1 crashed (C9, U11)
        positive("max_batched_tokens", req.max_batched_tokens)
    model = resolve_model(req.model)
    choice = parse_gpu(req.gpu) if req.gpu else None
    options, gpu_notes = infer_options(choice, req.options, native_format(model, choice, req.options))
    setup = infer_setup(options, model)
    check_format(model, setup)
    gpu = choice.gpu if choice else None
    if req.serve and gpu is None:
        raise InvalidWorkloadError("--serve needs --gpu (the GPU whose memory the KV cache fills)", field="gpu")
    if req.serve and setup.mode == "textbook":
        raise InvalidWorkloadError(
            "--serve uses vLLM's budget rule, which is accurate mode only; drop --mode textbook", field="mode"
        )
    if setup.images and (req.serve or setup.mode == "textbook"):
        what = "--serve's vLLM budget" if req.serve else "--mode textbook (the seeds' formulas)"
        raise InvalidWorkloadError(f"--images is not modelled by {what}; drop --images or use infer", field="images")
    if req.serve and not isinstance(model, ModelSpec):
        raise InvalidWorkloadError("--serve needs the architecture: name a catalog model or a config.json")
    if setup.mode == "textbook":
        from vramwise.estimate.textbook import textbook_inference

        est = textbook_inference(model, setup)
    else:
        est = estimate_inference(model, setup)
    est = replace(est, notes=est.notes + gpu_notes) if gpu_notes else est
    cap = None
    if req.serve and gpu and isinstance(model, ModelSpec):
        from vramwise.estimate.serving import serving_capacity

        cap = serving_capacity(model, setup, gpu.memory_bytes, req.max_batched_tokens)
    return InferResult(
        model=model, setup=setup, estimate=est, gpu=gpu, verdict=_verdict(est, choice), capacity=cap
    )


def _verdict(est: Estimate, choice: GpuChoice | None) -> Verdict | None:
    return verdict(est, choice.gpu, choice.count) if choice else None


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)  # training options by name
    gpu: str | None = None
    per_stage: bool = False  # every pipeline stage, not only the worst


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

    model = resolve_model(req.model)
    choice = parse_gpu(req.gpu) if req.gpu else None
    options, gpu_notes = train_options(choice, req.options)
    setup = train_setup(options, model)
    if setup.mode != "textbook":
        refuse(req.options, ("seed", "lora_fraction"), "applies to --mode textbook (the seeds' formulas)")
    gpu = choice.gpu if choice else None
    if setup.mode == "textbook":
        if req.per_stage:
            raise InapplicableOptionError(
                "--per-stage is accurate mode only: seed 002 gives the first stage's formula", field="per_stage"
            )
        estimates = [textbook_training(model, setup)]
    else:
        estimates = estimate_stages(model, setup)
    estimates = [replace(e, notes=e.notes + gpu_notes) for e in estimates] if gpu_notes else estimates
    worst = max(estimates, key=lambda e: e.peak_bytes)
    shown = [(i, e) for i, e in enumerate(estimates) if req.per_stage or e is worst]
    stages = tuple(StageResult(index=i, estimate=e, verdict=_verdict(e, choice)) for i, e in shown)
    return TrainResult(model=model, setup=setup, gpu=gpu, stages=stages, per_stage=req.per_stage)


def architecture(text: str, command: str) -> ModelSpec:
    """The model's full description; ``command`` needs more than a bare parameter count."""
    model = resolve_model(text)
    if not isinstance(model, ModelSpec):
        raise InvalidWorkloadError(f"{command} needs the architecture: name a catalog model or a config.json")
    return model

"""``plot`` and ``verify``: a sweep of estimates to draw, and an estimate beside a traced run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vramwise.app.choices import DEFAULT_AXIS, SWEEP_AXES
from vramwise.app.engines import hf_only
from vramwise.app.gpu_rules import single
from vramwise.app.setups import (
    INFERENCE_ONLY,
    TRAINING_ONLY,
    check_format,
    infer_setup,
    refuse,
    table_length,
    train_setup,
)
from vramwise.catalog import Gpu
from vramwise.errors import InapplicableOptionError, InvalidWorkloadError, VerifyUnsupportedError
from vramwise.spec.load import resolve_model_with_config
from vramwise.workload.checks import BOUNDS, positive, show

if TYPE_CHECKING:
    from vramwise.estimate.term import Estimate
    from vramwise.spec.load import Model
    from vramwise.spec.model import ModelSpec
    from vramwise.verify.compare import Comparison
    from vramwise.workload import InferSetup, TrainSetup


# A chart 9 inches wide (report/plot.py) shows at most about this many labelled bars.
MAX_POINTS = 64


def default_points(vs: str) -> tuple[int, ...]:
    """Seven powers of two: sequences from 512 to 32768 tokens, batches from 1 to 64."""
    return tuple(512 * 2**k for k in range(7)) if vs == "seq" else tuple(2**k for k in range(7))


def _accurate_only(options: Mapping[str, Any], command: str) -> None:
    if options.get("mode") not in (None, "accurate"):
        raise InapplicableOptionError(f"{command} uses accurate mode only: drop --mode textbook", field="mode")
    refuse(options, ("seed", "lora_fraction"), "applies to --mode textbook (the seeds' formulas)")


def _modes(options: Mapping[str, Any], infer: bool) -> None:
    """Options of the other mode (training vs inference) cannot apply: refused, not ignored."""
    if infer:
        refuse(options, TRAINING_ONLY, "is a training option: drop it, or drop --infer")
    else:
        refuse(options, INFERENCE_ONLY, "is an inference option: add --infer")
    refuse(options, ("gpu_util",), "applies to serving capacity (infer --serve, fit --best-format)")


@dataclass(frozen=True, kw_only=True)
class PlotRequest:
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    infer: bool = False
    vs: str = DEFAULT_AXIS  # the x axis: seq (the context with infer) or batch
    points: str | Sequence[int] = ()  # x values, or comma-separated text; empty: default_points(vs)
    gpu: str | None = None  # draw this GPU's capacity line


@dataclass(frozen=True, kw_only=True)
class PlotData:
    model: ModelSpec
    infer: bool
    vs: str
    xs: tuple[int, ...]
    estimates: tuple[Estimate, ...]  # one per x
    gpu: Gpu | None


def _points(points: str | Sequence[int], vs: str, table: int | None = None) -> tuple[int, ...]:
    if isinstance(points, str):
        try:
            xs = [int(x) for x in points.split(",") if x.strip()]
        except ValueError:
            raise InvalidWorkloadError(
                f"points must be comma-separated integers, got {show(points)}", field="points"
            ) from None
    else:
        xs = list(points)
    if not xs:  # the defaults stop at a learned position table (GPT-2: 512, 1024), which no run can pass
        xs = [x for x in default_points(vs) if vs != "seq" or table is None or x <= table] or [table or 1]
    if any(x <= 0 for x in xs):
        raise InvalidWorkloadError(f"points must be positive, got {show(xs)}", field="points")
    # each point becomes the setup's batch or sequence: the same bound as --batch or --seq (K7)
    high, why = BOUNDS["seq" if vs == "seq" else "batch"]
    if any(x > high for x in xs):
        raise InvalidWorkloadError(
            f"points on the {vs} axis must be at most {high:,} ({why}), got {show(max(xs))}", field="points"
        )
    if len(xs) > MAX_POINTS:
        raise InvalidWorkloadError(f"points: at most {MAX_POINTS} bars fit a chart, got {len(xs)}", field="points")
    return tuple(xs)


def plot_data(req: PlotRequest) -> PlotData:
    """The estimate at every x of the sweep (bad input fails here, in one line, before any drawing)."""
    from vramwise.app.run import architecture

    _accurate_only(req.options, "plot")
    _modes(req.options, req.infer)
    if req.vs not in SWEEP_AXES:
        raise InvalidWorkloadError(f"vs '{req.vs}' is not allowed; allowed: {', '.join(SWEEP_AXES)}", field="vs")
    model = architecture(req.model, "plot")
    xs = _points(req.points, req.vs, table_length(model))
    gpu = single(req.gpu, "plot draws one GPU's budget line").gpu if req.gpu else None
    if req.infer:
        from vramwise.estimate.inference import estimate_inference

        base = infer_setup(req.options, model)
        hf_only(base, "plot")
        check_format(model, base)
        estimate_inference(model, base)
        seq = req.vs == "seq"  # with --infer, the sequence is the context
        ests = tuple(estimate_inference(model, replace(base, context=x) if seq else replace(base, batch=x)) for x in xs)
    else:
        from vramwise.estimate.train.training import estimate_stages, estimate_training

        train = train_setup(req.options, model)
        estimate_stages(model, train)
        ests = tuple(
            estimate_training(model, replace(train, seq=x) if req.vs == "seq" else replace(train, batch=x)) for x in xs
        )
    return PlotData(model=model, infer=req.infer, vs=req.vs, xs=xs, estimates=ests, gpu=gpu)


@dataclass(frozen=True, kw_only=True)
class VerifyRequest:
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    infer: bool = False
    layers: int | None = None  # training: trace N and N+1 layers and extrapolate


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    model: Model
    setup: InferSetup | TrainSetup
    comparison: Comparison


def verify(req: VerifyRequest) -> VerifyResult:
    """Trace the real model (the verify extra) and put the measurement beside the estimate."""
    _accurate_only(req.options, "verify")
    _modes(req.options, req.infer)
    resolved = resolve_model_with_config(req.model)  # the twin builds the real model from the same config
    if resolved.raw_config is None:  # a bare size: refused before torch loads (U10)
        raise VerifyUnsupportedError(
            "verify needs the architecture: name a catalog model or a config.json", field="model"
        )
    if req.layers is not None:
        positive("layers", req.layers)
    # torch and transformers load only now: a bare size or a bad option is refused without them (U10)
    from vramwise.verify.twin import verify_inference, verify_training

    if req.infer:
        if req.layers is not None:
            raise InapplicableOptionError(
                "--layers applies to training (the inference twin traces every layer)", field="layers"
            )
        inference = infer_setup(req.options, resolved.spec)
        hf_only(inference, "verify")
        setup: InferSetup | TrainSetup = inference
        comparison = verify_inference(resolved, inference)
    else:
        setup = train_setup(req.options, resolved.spec)
        comparison = verify_training(resolved, setup, layers=req.layers)
    return VerifyResult(model=resolved.spec, setup=setup, comparison=comparison)

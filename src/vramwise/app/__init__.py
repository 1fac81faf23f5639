"""The application layer: one function per question, a request in and a result out, for every front end.

The CLI (``vramwise.cli``) and a later web page both call these; they parse input and render results, and
hold no rules of their own. Option values travel as a mapping from option name to value (``None`` or absent:
not given, so the setup's own default applies); a question refuses, in one line, an option that cannot apply
to it. Every error raised here is a ``VramwiseError``.

Heavy parts (training, fit, verify, plotting) are imported inside the functions that need them, so that a
fresh ``vramwise infer`` loads the inference estimator only.
"""

from __future__ import annotations

from vramwise.app.fit import DEFAULT_TOP, MAX_TARGETS, FitRequest, FitResult, Question, fit
from vramwise.app.listings import FormatRow, ModelRow, list_formats, list_gpus, list_models
from vramwise.app.run import (
    InferRequest,
    InferResult,
    StageResult,
    TrainRequest,
    TrainResult,
    architecture,
    infer,
    train,
)
from vramwise.app.setups import (
    INFER_FIELDS,
    INFERENCE_ONLY,
    TRAIN_FIELDS,
    TRAINING_ONLY,
    infer_default,
    infer_setup,
    train_default,
    train_setup,
)
from vramwise.app.sweep import (
    DEFAULT_AXIS,
    SWEEP_AXES,
    PlotData,
    PlotRequest,
    VerifyRequest,
    VerifyResult,
    default_points,
    plot_data,
    verify,
)

__all__ = [
    "DEFAULT_AXIS",
    "DEFAULT_TOP",
    "INFERENCE_ONLY",
    "INFER_FIELDS",
    "MAX_TARGETS",
    "SWEEP_AXES",
    "TRAINING_ONLY",
    "TRAIN_FIELDS",
    "FitRequest",
    "FitResult",
    "FormatRow",
    "InferRequest",
    "InferResult",
    "ModelRow",
    "PlotData",
    "PlotRequest",
    "Question",
    "StageResult",
    "TrainRequest",
    "TrainResult",
    "VerifyRequest",
    "VerifyResult",
    "architecture",
    "default_points",
    "fit",
    "infer",
    "infer_default",
    "infer_setup",
    "list_formats",
    "list_gpus",
    "list_models",
    "plot_data",
    "train",
    "train_default",
    "train_setup",
    "verify",
]

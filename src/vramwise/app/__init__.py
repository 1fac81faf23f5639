"""The application layer: one function per question, a request in and a result out, for every front end.

The CLI (``vramwise.cli``) and a later web page both call these; they parse input and render results, and
hold no rules of their own. Option values travel as a mapping from option name to value (``None`` or absent:
not given, so the setup's own default applies); a question refuses, in one line, an option that cannot apply
to it. Every error raised here is a ``VramwiseError``.

Heavy parts (training, fit, verify, plotting) are imported inside the functions that need them, so that a
fresh ``vramwise infer`` loads the inference estimator only.
"""

from __future__ import annotations

from vramwise._lazy import lazy_exports

# loaded on first use, so that importing one question does not import them all
_EXPORTS = {
    "DEFAULT_TOP": "vramwise.app.choices",
    "MAX_TARGETS": "vramwise.app.choices",
    "FitRequest": "vramwise.app.fitting",
    "FitResult": "vramwise.app.fitting",
    "Question": "vramwise.app.fitting",
    "fit": "vramwise.app.fitting",
    "list_formats": "vramwise.app.listings",
    "list_gpus": "vramwise.app.listings",
    "list_models": "vramwise.app.listings",
    "InferRequest": "vramwise.app.run",
    "InferResult": "vramwise.app.run",
    "StageResult": "vramwise.app.run",
    "TrainRequest": "vramwise.app.run",
    "TrainResult": "vramwise.app.run",
    "architecture": "vramwise.app.run",
    "infer": "vramwise.app.run",
    "train": "vramwise.app.run",
    "INFER_FIELDS": "vramwise.app.setups",
    "INFERENCE_ONLY": "vramwise.app.setups",
    "TRAIN_FIELDS": "vramwise.app.setups",
    "TRAINING_ONLY": "vramwise.app.setups",
    "infer_default": "vramwise.app.setups",
    "infer_setup": "vramwise.app.setups",
    "train_default": "vramwise.app.setups",
    "train_setup": "vramwise.app.setups",
    "DEFAULT_AXIS": "vramwise.app.choices",
    "SWEEP_AXES": "vramwise.app.choices",
    "PlotData": "vramwise.app.sweep",
    "PlotRequest": "vramwise.app.sweep",
    "VerifyRequest": "vramwise.app.sweep",
    "VerifyResult": "vramwise.app.sweep",
    "default_points": "vramwise.app.sweep",
    "plot_data": "vramwise.app.sweep",
    "verify": "vramwise.app.sweep",
    # issue 15: the single changes that make a miss fit (each checked by running the question again)
    "advise_fit": "vramwise.app.advice",
    "advise_infer": "vramwise.app.advice",
    "advise_min_gpus": "vramwise.app.advice",
    "advise_train": "vramwise.app.advice",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

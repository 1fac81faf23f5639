"""vramwise: how much GPU memory a transformer needs, per GPU, per term, with the formula behind every number.

>>> import vramwise
>>> spec = vramwise.resolve_model("llama-2-7b")
>>> est = vramwise.estimate_inference(spec, vramwise.InferSetup(context=4096))
>>> est.term("kv_cache").bytes == 2 * 2**30
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramwise._lazy import lazy_exports

# The public names, loaded on first use: `vramwise infer` in a fresh process then imports the inference
# estimator only, not training, fitting or verification.
_EXPORTS = {
    "VramwiseError": "vramwise.errors",
    "estimate_inference": "vramwise.estimate.inference",
    "inference_peak": "vramwise.estimate.inference",
    "Estimate": "vramwise.estimate.term",
    "Phase": "vramwise.estimate.term",
    "Term": "vramwise.estimate.term",
    "textbook_inference": "vramwise.estimate.textbook",
    "textbook_training": "vramwise.estimate.train.textbook_mode",
    "estimate_stages": "vramwise.estimate.train.training",
    "estimate_training": "vramwise.estimate.train.training",
    "training_peak": "vramwise.estimate.train.training",
    "BareModel": "vramwise.spec.load",
    "resolve_model": "vramwise.spec.load",
    "ModelSpec": "vramwise.spec.model",
    "active_params": "vramwise.spec.params",
    "parameter_groups": "vramwise.spec.params",
    "total_params": "vramwise.spec.params",
    "InferSetup": "vramwise.workload",
    "TrainSetup": "vramwise.workload",
}
__all__ = [
    "BareModel",
    "Estimate",
    "InferSetup",
    "ModelSpec",
    "Phase",
    "Term",
    "TrainSetup",
    "VramwiseError",
    "active_params",
    "estimate_inference",
    "estimate_stages",
    "estimate_training",
    "inference_peak",
    "parameter_groups",
    "resolve_model",
    "textbook_inference",
    "textbook_training",
    "total_params",
    "training_peak",
]  # the keys of _EXPORTS (tests/test_architecture.py)
__version__ = "0.1.0"

if TYPE_CHECKING:
    from vramwise.errors import VramwiseError
    from vramwise.estimate.inference import estimate_inference, inference_peak
    from vramwise.estimate.term import Estimate, Phase, Term
    from vramwise.estimate.textbook import textbook_inference
    from vramwise.estimate.train.textbook_mode import textbook_training
    from vramwise.estimate.train.training import estimate_stages, estimate_training, training_peak
    from vramwise.spec.load import BareModel, resolve_model
    from vramwise.spec.model import ModelSpec
    from vramwise.spec.params import active_params, parameter_groups, total_params
    from vramwise.workload import InferSetup, TrainSetup


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

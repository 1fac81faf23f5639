"""vramwise: how much GPU memory a transformer needs, per GPU, per term, with the formula behind every number.

>>> import vramwise
>>> spec = vramwise.resolve_model("llama-2-7b")
>>> est = vramwise.estimate_inference(spec, vramwise.InferSetup(context=4096))
>>> est.term("kv_cache").bytes == 2 * 2**30
True
"""

from vramwise.errors import VramwiseError
from vramwise.estimate.inference import estimate_inference, inference_peak
from vramwise.estimate.serving import serving_capacity
from vramwise.estimate.term import Estimate, Phase, Term
from vramwise.estimate.textbook import textbook_inference
from vramwise.estimate.train.textbook import textbook_training
from vramwise.estimate.train.training import estimate_stages, estimate_training, training_peak
from vramwise.spec.load import BareModel, resolve_model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import active_params, parameter_groups, total_params
from vramwise.workload import InferSetup, TrainSetup

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
    "serving_capacity",
    "textbook_inference",
    "textbook_training",
    "total_params",
    "training_peak",
]
__version__ = "0.1.0"

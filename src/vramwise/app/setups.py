"""The one builder of each setup from option values, and the rules about which options a question can use.

Option values arrive as a mapping from option name (the CLI's ``--kv-dtype`` is ``kv_dtype``) to value; an
absent or None value means "not given", so the setup dataclass's own default applies: defaults live in
``workload.py`` only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from vramwise.errors import InapplicableOptionError
from vramwise.workload import InferSetup

if TYPE_CHECKING:
    from vramwise.workload import TrainSetup

# option name -> InferSetup field
INFER_FIELDS = {
    "batch": "batch",
    "context": "context",
    "new_tokens": "new_tokens",
    "format": "weight_format",
    "kv_dtype": "kv_dtype",
    "attention": "attention",
    "tp": "tp",
    "kv_block": "kv_block",
    "prefill_chunk": "prefill_chunk",
    "all_logits": "all_logits",
    "cuda_context": "cuda_context_mib",
    "allocator_fraction": "allocator_fraction",
    "gpu_util": "gpu_utilization",
    "mode": "mode",
}
# option name -> TrainSetup field
TRAIN_FIELDS = {
    "batch": "batch",
    "seq": "seq",
    "grad_accum": "grad_accum",
    "precision": "precision",
    "grad_dtype": "grad_dtype",
    "optimizer": "optimizer",
    "optimizer_impl": "optimizer_impl",
    "peft": "peft",
    "lora_r": "lora_r",
    "lora_targets": "lora_targets",
    "lora_dropout": "lora_dropout",
    "freeze_layers": "freeze_layers",
    "recompute": "recompute",
    "attention": "attention",
    "loss": "loss",
    "loss_chunk": "loss_chunk",
    "dp": "dp",
    "zero": "zero",
    "fsdp": "fsdp",
    "fsdp_shard": "fsdp_shard",
    "offload": "offload",
    "tp": "tp",
    "sp": "sp",
    "pp": "pp",
    "interleave": "interleave",
    "cp": "cp",
    "ep": "ep",
    "cuda_context": "cuda_context_mib",
    "allocator_fraction": "allocator_fraction",
    "mode": "mode",
    "seed": "seed",
    "lora_fraction": "lora_fraction",
}
# `--seq` is the inference context's other spelling in fit, plot and verify, so it is not training-only
INFERENCE_ONLY = tuple(k for k in INFER_FIELDS if k not in TRAIN_FIELDS)
TRAINING_ONLY = tuple(k for k in TRAIN_FIELDS if k not in INFER_FIELDS and k != "seq")


def flag(name: str) -> str:
    """The command-line spelling of an option name: ``kv_dtype`` -> ``--kv-dtype``."""
    return "--" + name.replace("_", "-")


def given(values: Mapping[str, Any], name: str) -> bool:
    return values.get(name) is not None


def refuse(values: Mapping[str, Any], names: Iterable[str], why: str) -> None:
    """One line for the first option given that cannot apply: ``--kv-dtype is an inference option: ...``."""
    for name in names:
        if given(values, name):
            raise InapplicableOptionError(f"{flag(name)} {why}", field=name)


@functools.cache
def _defaults(kind: str) -> dict[str, Any]:
    """Every flat field's default of one setup; the training setup is imported only when a default is asked."""
    if kind == "infer":
        return InferSetup().to_flat()
    from vramwise.workload import TrainSetup

    return TrainSetup().to_flat()


def infer_default(name: str) -> Any:
    """The default of an inference option: InferSetup's (the help text shows it, it is written nowhere else)."""
    return _defaults("infer")[INFER_FIELDS[name]]


def train_default(name: str) -> Any:
    """The default of a training option: TrainSetup's, by its flat (schema v1) name."""
    return _defaults("train")[TRAIN_FIELDS[name]]


def _kwargs(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {field: values[name] for name, field in names.items() if given(values, name)}


def infer_setup(values: Mapping[str, Any]) -> InferSetup:
    """The InferSetup of these option values; ``seq`` is accepted as the context's other spelling."""
    if given(values, "seq"):
        if given(values, "context"):
            raise InapplicableOptionError("give the context once: --context or its other spelling --seq", field="seq")
        values = {**values, "context": values["seq"]}
    kw = _kwargs(values, INFER_FIELDS)
    return InferSetup.from_flat(**kw)


def train_setup(values: Mapping[str, Any]) -> TrainSetup:
    """The TrainSetup of these option values; ``lora_targets`` may be a comma-separated string."""
    targets = values.get("lora_targets")
    if isinstance(targets, str):
        values = {**values, "lora_targets": tuple(x.strip() for x in targets.split(",") if x.strip()) or None}
    from vramwise.workload import TrainSetup  # not on the inference path (a fresh `vramwise infer` stays light)

    kw = _kwargs(values, TRAIN_FIELDS)
    return TrainSetup.from_flat(**kw)

"""Workloads: what the user wants to run, validated once, frozen.

Validation errors name the field and what is allowed; nothing downstream re-checks user input.

    options.py    a StrEnum for every choice, and the tuples of allowed values
    infer.py      InferSetup: the inference knobs, and the overheads group
    train.py      TrainSetup and its groups: precision, optimizer, peft, parallel, overheads, textbook
    layout.py     ParallelConfig and the shards it implies (Sharding)
    overheads.py  the CUDA context and allocator reserve, shared by both setups (NO_OVERHEADS: neither)
    flat.py       the bridge to schema v1's flat names, shared by both setups
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vramwise._lazy import lazy_exports

# Loaded on first use: a fresh `vramwise infer` needs InferSetup and the choices, not the training setup.
_EXPORTS = {
    "InferSetup": "vramwise.workload.infer",
    "ParallelConfig": "vramwise.workload.layout",
    "Sharding": "vramwise.workload.layout",
    "ENGINES": "vramwise.workload.engines",
    "Engine": "vramwise.workload.engines",
    "VllmFlags": "vramwise.workload.engines",
    "LlamaCppFlags": "vramwise.workload.llamacpp_flags",
    "ATTENTION_IMPLS": "vramwise.workload.options",
    "FSDP_MODES": "vramwise.workload.options",
    "LOADINGS": "vramwise.workload.options",
    "Loading": "vramwise.workload.options",
    "GRAD_DTYPES": "vramwise.workload.options",
    "KV_DTYPES": "vramwise.workload.options",
    "LOSS_IMPLS": "vramwise.workload.options",
    "MODES": "vramwise.workload.options",
    "OFFLOAD": "vramwise.workload.options",
    "OPTIMIZER_IMPLS": "vramwise.workload.options",
    "OPTIMIZERS": "vramwise.workload.options",
    "PEFT_METHODS": "vramwise.workload.options",
    "PRECISIONS": "vramwise.workload.options",
    "RECOMPUTE": "vramwise.workload.options",
    "SEEDS": "vramwise.workload.options",
    "AttentionImpl": "vramwise.workload.options",
    "FsdpMode": "vramwise.workload.options",
    "GradDtype": "vramwise.workload.options",
    "KvDtype": "vramwise.workload.options",
    "LossImpl": "vramwise.workload.options",
    "Mode": "vramwise.workload.options",
    "Offload": "vramwise.workload.options",
    "Optimizer": "vramwise.workload.options",
    "OptimizerImpl": "vramwise.workload.options",
    "PeftMethod": "vramwise.workload.options",
    "Precision": "vramwise.workload.options",
    "Recompute": "vramwise.workload.options",
    "Seed": "vramwise.workload.options",
    "NO_OVERHEADS": "vramwise.workload.overheads",
    "Overheads": "vramwise.workload.overheads",
    "OptimizerConfig": "vramwise.workload.train",
    "PeftConfig": "vramwise.workload.train",
    "PrecisionConfig": "vramwise.workload.train",
    "TextbookConfig": "vramwise.workload.train",
    "TrainSetup": "vramwise.workload.train",
}

if TYPE_CHECKING:
    from vramwise.workload.engines import ENGINES, Engine, VllmFlags
    from vramwise.workload.infer import InferSetup
    from vramwise.workload.layout import ParallelConfig, Sharding
    from vramwise.workload.llamacpp_flags import LlamaCppFlags
    from vramwise.workload.options import (
        ATTENTION_IMPLS,
        FSDP_MODES,
        GRAD_DTYPES,
        KV_DTYPES,
        LOADINGS,
        LOSS_IMPLS,
        MODES,
        OFFLOAD,
        OPTIMIZER_IMPLS,
        OPTIMIZERS,
        PEFT_METHODS,
        PRECISIONS,
        RECOMPUTE,
        SEEDS,
        AttentionImpl,
        FsdpMode,
        GradDtype,
        KvDtype,
        Loading,
        LossImpl,
        Mode,
        Offload,
        Optimizer,
        OptimizerImpl,
        PeftMethod,
        Precision,
        Recompute,
        Seed,
    )
    from vramwise.workload.overheads import NO_OVERHEADS, Overheads
    from vramwise.workload.train import OptimizerConfig, PeftConfig, PrecisionConfig, TextbookConfig, TrainSetup


def setup_to_flat(setup: InferSetup | TrainSetup) -> dict[str, Any]:
    """The flat ``setup`` object of JSON schema v1 (field names and values as the CLI spells them)."""
    return setup.to_flat()


__all__ = [
    "ATTENTION_IMPLS",
    "ENGINES",
    "FSDP_MODES",
    "GRAD_DTYPES",
    "KV_DTYPES",
    "LOADINGS",
    "LOSS_IMPLS",
    "MODES",
    "NO_OVERHEADS",
    "OFFLOAD",
    "OPTIMIZERS",
    "OPTIMIZER_IMPLS",
    "PEFT_METHODS",
    "PRECISIONS",
    "RECOMPUTE",
    "SEEDS",
    "AttentionImpl",
    "Engine",
    "FsdpMode",
    "GradDtype",
    "InferSetup",
    "KvDtype",
    "LlamaCppFlags",
    "Loading",
    "LossImpl",
    "Mode",
    "Offload",
    "Optimizer",
    "OptimizerConfig",
    "OptimizerImpl",
    "Overheads",
    "ParallelConfig",
    "PeftConfig",
    "PeftMethod",
    "Precision",
    "PrecisionConfig",
    "Recompute",
    "Seed",
    "Sharding",
    "TextbookConfig",
    "TrainSetup",
    "VllmFlags",
    "setup_to_flat",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

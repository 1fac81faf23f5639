"""Every choice a workload offers, one StrEnum each: validation, ``--help`` and the type checker share them.

A StrEnum member equals its string (``Precision.FP32 == "fp32"``), so setups built from command-line strings
and JSON written from them read the same as before the enums existed.
"""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """The precision recipe (see ``estimate/train/recipe.py`` for the bytes of each)."""

    FP32 = "fp32"
    AMP = "amp"
    AMP_FP16 = "amp-fp16"
    BF16_MIXED = "bf16-mixed"
    FP16_MIXED = "fp16-mixed"
    BF16 = "bf16"


class GradDtype(StrEnum):
    """Gradients of the mixed recipes: fp32 or 16-bit (auto: 16-bit, as DeepSpeed and the ZeRO paper count)."""

    AUTO = "auto"
    FP32 = "fp32"
    HALF = "half"


class Optimizer(StrEnum):
    ADAMW = "adamw"
    ADAM = "adam"
    SGD = "sgd"
    SGD_MOMENTUM = "sgd-momentum"
    LION = "lion"
    ADAFACTOR = "adafactor"
    ADAMW_8BIT = "adamw-8bit"
    PAGED_ADAMW = "paged-adamw"
    PAGED_ADAMW_8BIT = "paged-adamw-8bit"
    LOMO = "lomo"


class OptimizerImpl(StrEnum):
    """torch.optim's implementation (auto: fused for the mixed recipes, as DeepSpeed/Megatron, else foreach)."""

    AUTO = "auto"
    FOREACH = "foreach"
    FUSED = "fused"
    FOR_LOOP = "for-loop"


class PeftMethod(StrEnum):
    NONE = "none"
    LORA = "lora"
    QLORA = "qlora"
    # peft 0.21: LoraConfig(use_dora=True), IA3Config, PromptTuningConfig, PrefixTuningConfig
    DORA = "dora"
    IA3 = "ia3"
    PROMPT_TUNING = "prompt-tuning"
    PREFIX_TUNING = "prefix-tuning"


class Recompute(StrEnum):
    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"


class AttentionImpl(StrEnum):
    SDPA = "sdpa"
    FLASH = "flash"
    EAGER = "eager"


class LossImpl(StrEnum):
    FULL = "full"
    CHUNKED = "chunked"


class FsdpMode(StrEnum):
    """FSDP sharding: full (like ZeRO-3), grad-op (like ZeRO-2), hybrid (full inside a shard group)."""

    NONE = "none"
    FULL = "full"
    GRAD_OP = "grad-op"
    HYBRID = "hybrid"


class Offload(StrEnum):
    NONE = "none"
    OPTIMIZER = "optimizer"
    PARAMS = "params"


class KvDtype(StrEnum):
    """KV cache dtype (auto: the compute dtype)."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"


class Mode(StrEnum):
    """accurate: what the frameworks allocate; textbook: a seed's closed formulas."""

    ACCURATE = "accurate"
    TEXTBOOK = "textbook"


class Seed(StrEnum):
    """Textbook mode: which seed's formulas (000: one GPU, LoRA; 002: ZeRO, TP/SP/PP)."""

    SEED_000 = "000"
    SEED_002 = "002"


# The allowed values as tuples, in the order ``--help`` lists them.
PRECISIONS = tuple(Precision)
GRAD_DTYPES = tuple(GradDtype)
OPTIMIZERS = tuple(Optimizer)
OPTIMIZER_IMPLS = tuple(OptimizerImpl)
PEFT_METHODS = tuple(PeftMethod)
RECOMPUTE = tuple(Recompute)
ATTENTION_IMPLS = tuple(AttentionImpl)
LOSS_IMPLS = tuple(LossImpl)
FSDP_MODES = tuple(FsdpMode)
OFFLOAD = tuple(Offload)
KV_DTYPES = tuple(KvDtype)
MODES = tuple(Mode)
SEEDS = tuple(Seed)

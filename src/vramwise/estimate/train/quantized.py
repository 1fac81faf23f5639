"""Training a pre-quantized checkpoint: what the frozen base weights are stored as, or why it cannot train.

transformers' rule (trainer_utils.validate_quantization_for_training): a quantized model trains only through
adapters (peft LoRA/QLoRA), and only when its quantizer's ``is_trainable`` is True. A checkpoint whose config can
load the weights dequantized (fp8, MXFP4: ``dequantize=True``) may instead train as a 16-bit model; we say so in a
note. QLoRA on a 16-bit checkpoint quantizes it at load to NF4 with double quantization (the QLoRA recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import ConfigError, InvalidWorkloadError
from vramwise.spec.adapters.quant_config import DEQUANTIZE, not_trainable
from vramwise.spec.model import ModelSpec
from vramwise.workload import PeftConfig, PeftMethod

# QLoRA quantizes a 16-bit checkpoint at load to bitsandbytes NF4; BitsAndBytesConfig's bnb_4bit_use_double_quant
# defaults to False (transformers utils/quantization_config.py), the QLoRA paper's recipe sets it (--double-quant).
# peft's lora-8bit loads the base with load_in_8bit: LLM.int8() weights (the format "int8").
QLORA_FORMAT = "nf4"
QLORA_DQ_FORMAT = "nf4-dq"
LORA_8BIT_FORMAT = "int8"
_RULE = "transformers trainer_utils.validate_quantization_for_training"


@dataclass(frozen=True, kw_only=True)
class TrainingBase:
    """The frozen base linears' format (None: the recipe's 16-bit weights) and a note for the report."""

    fmt: str | None
    note: str | None = None


def training_base(spec: ModelSpec, peft: PeftConfig) -> TrainingBase:
    """How the base weights are stored while training ``spec`` with ``peft``; refuses what transformers refuses."""
    quantize = {PeftMethod.QLORA: QLORA_DQ_FORMAT if peft.double_quant else QLORA_FORMAT}
    quantize[PeftMethod.LORA_8BIT] = LORA_8BIT_FORMAT
    if spec.unread_quantization:
        key, value = spec.unread_quantization
        raise ConfigError(
            f"{spec.source}: {key} {value}; a training estimate needs the stored layout of the frozen weights: "
            "estimate the 16-bit checkpoint instead (with --peft qlora for a 4-bit base)",
            field=key,
            allowed="a quantization_config vramwise reads (`vramwise formats`), or none",
        )
    fmt, method = spec.stored_format, spec.quant_method or ""
    if fmt is None:
        return TrainingBase(fmt=quantize.get(peft.method))
    if fmt == "fp8":
        fmt = "fp8-block"  # the catalog's DeepSeek-V3 name (formats.default_format)
    dequantize = DEQUANTIZE.get(method)
    refused = not_trainable(method, fmt)
    if dequantize and (refused or not peft.adapters):
        why = refused or "full fine-tuning needs 16-bit weights"
        return TrainingBase(fmt=None, note=f"{fmt} weights trained dequantized to 16 bit with {dequantize} ({why})")
    if refused:
        raise InvalidWorkloadError(
            f"{spec.name} stores its weights as {fmt} ({method}), which transformers cannot fine-tune ({refused}; "
            f"{_RULE}): train the 16-bit checkpoint (with --peft qlora for a 4-bit base)",
            field="peft",
        )
    if not peft.adapters:
        raise InvalidWorkloadError(
            f"{spec.name} stores its weights as {fmt} ({method}): a quantized checkpoint trains only through "
            f"adapters ({_RULE}); use --peft lora (the base stays {fmt}), or train the 16-bit checkpoint",
            field="peft",
            allowed="--peft lora or qlora",
        )
    return TrainingBase(fmt=fmt, note=f"frozen base weights stay {fmt} as stored ({method}); adapters train")

"""How the checkpoint stores its weights: ``torch_dtype`` and ``quantization_config``, read for every family.

The result names a format of formats.py as a string (spec may not import formats): ``gptq-4bit-g128``,
``awq-4bit-g128``, ``nf4``, ``nf4-dq``, ``int8``, ``fp8`` (read as fp8-block), ``mxfp4``. A quantization that
formats.py cannot express is recorded, not guessed: ``formats.default_format`` then refuses, asking for
``--format``, instead of estimating 16-bit weights for a 4-bit checkpoint.
"""

from __future__ import annotations

from typing import Any

from vramwise.spec.adapters.config import MAX_FFN, RawConfig, shown

# What transformers writes: PretrainedConfig.to_dict stores str(torch_dtype).split(".")[1] ("float16"); a
# config written by hand may keep the "torch." prefix. Absent or null: transformers loads float32.
_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_DTYPES_ALLOWED = "float32, float16, bfloat16 (optionally as torch.<name>), or null"

# The quantization_config keys of transformers' GPTQConfig / AwqConfig (utils/quantization_config.py); AutoAWQ's
# own quant_config.json spells them w_bit and q_group_size. Bits the packed formats support: formats.get_format.
_GROUPED_BITS = (2, 3, 4, 8)
_METHODS_READ = "fp8, mxfp4, gptq, awq, bitsandbytes"


def stored_dtype(cfg: RawConfig) -> str:
    """The checkpoint's dtype (``torch_dtype``, or ``dtype`` in newer configs), as a short name."""
    key = "torch_dtype" if cfg.has("torch_dtype") else "dtype"
    raw = cfg.data.get(key)
    if raw is None:
        return "fp32"
    name = raw.removeprefix("torch.") if isinstance(raw, str) else None
    if name not in _DTYPES:
        raise cfg.error(key, f"field '{key}' must be one of {_DTYPES_ALLOWED}, got {shown(raw)}", _DTYPES_ALLOWED)
    return _DTYPES[name]


def _grouped(cfg: RawConfig, q: dict[str, Any], method: str) -> tuple[str | None, tuple[str, str] | None]:
    """GPTQ / AWQ: ``<method>-<bits>bit-g<group>``, the names formats.get_format parses."""
    bits = q.get("bits", q.get("w_bit"))
    group = q.get("group_size", q.get("q_group_size", 128))  # GPTQConfig's and AwqConfig's default: 128
    if isinstance(bits, bool) or bits not in _GROUPED_BITS:
        raise cfg.error(
            "quantization_config.bits",
            f"field 'quantization_config.bits' of a {method} checkpoint must be 2, 3, 4 or 8, got {shown(bits)}",
            "2, 3, 4 or 8",
        )
    # A group never spans more than one input row, so MAX_FFN (the widest input) bounds it.
    if group == -1:  # one group per output column: no grouped format expresses it
        return None, ("quantization_config.group_size", "-1")
    if isinstance(group, bool) or not isinstance(group, int) or not 0 < group <= MAX_FFN:
        raise cfg.error(
            "quantization_config.group_size",
            f"field 'quantization_config.group_size' must be a positive integer or -1, got {shown(group)}",
            "a positive integer or -1",
        )
    return f"{method}-{bits}bit-g{group}", None


def _bitsandbytes(q: dict[str, Any]) -> tuple[str | None, tuple[str, str] | None]:
    """BitsAndBytesConfig: 4-bit NF4 (double quantization: nf4-dq) or LLM.int8()."""
    if q.get("load_in_4bit") is True:
        kind = q.get("bnb_4bit_quant_type", "fp4")  # BitsAndBytesConfig's default is fp4
        if kind != "nf4":
            return None, ("quantization_config.bnb_4bit_quant_type", shown(kind))
        return ("nf4-dq" if q.get("bnb_4bit_use_double_quant") is True else "nf4"), None
    if q.get("load_in_8bit") is True:
        return "int8", None
    return None, ("quantization_config.load_in_4bit", "neither load_in_4bit nor load_in_8bit set")


def quantization(cfg: RawConfig) -> tuple[str | None, tuple[str, str] | None]:
    """(format, unread): the checkpoint's quantized format, or the (field, value) no format here expresses."""
    q = cfg.data.get("quantization_config")
    if q is None:
        return None, None
    if not isinstance(q, dict):
        raise cfg.error(
            "quantization_config", f"field 'quantization_config' must be an object, got {shown(q)}", "an object"
        )
    raw = q.get("quant_method")
    if not isinstance(raw, str):
        raise cfg.error(
            "quantization_config.quant_method",
            f"field 'quantization_config.quant_method' must be a string, got {shown(raw)}",
            _METHODS_READ,
        )
    method = raw.lower()
    if method == "fp8":
        # transformers' FineGrainedFP8Config: weight_block_size defaults to (128, 128), the only block fp8-block
        # has; DeepSeek-V3 and Qwen3-FP8 publish [128, 128].
        block = q.get("weight_block_size", [128, 128])
        if block not in ([128, 128], (128, 128)):
            return None, ("quantization_config.weight_block_size", shown(block))
        return "fp8", None
    if method == "mxfp4":
        return "mxfp4", None
    if method in ("gptq", "awq"):
        return _grouped(cfg, q, method)
    if method == "bitsandbytes":
        return _bitsandbytes(q)
    return None, ("quantization_config.quant_method", shown(raw))


def storage(cfg: RawConfig) -> dict[str, Any]:
    """The ModelSpec fields saying how the checkpoint stores its weights."""
    fmt, unread = quantization(cfg)
    return {"stored_dtype": stored_dtype(cfg), "stored_format": fmt, "unread_quantization": unread}

"""How the checkpoint stores its weights: ``torch_dtype`` and ``quantization_config``, read for every family.

The quantized format is read by ``quant_config.quantization`` and named as a string that formats.py parses (spec
may not import formats): ``gptq-4bit-g128``, ``awq-4bit-g128``, ``nf4-dq``, ``fp8-block``, ``ct-pack4-g128``...
A quantization no format expresses is recorded, not guessed: ``formats.default_format`` then refuses, asking
for ``--format``, instead of estimating 16-bit weights for a 4-bit checkpoint.
"""

from __future__ import annotations

from typing import Any

from vramwise.spec.adapters.config import RawConfig, shown
from vramwise.spec.adapters.quant_config import compute_dtype, kept_in_layers, quantization

# What transformers writes: PretrainedConfig.to_dict stores str(torch_dtype).split(".")[1] ("float16"); a
# config written by hand may keep the "torch." prefix. Absent or null: transformers loads float32.
_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_DTYPES_ALLOWED = "float32, float16, bfloat16 (optionally as torch.<name>), or null"

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


def storage(cfg: RawConfig) -> dict[str, Any]:
    """The ModelSpec fields saying how the checkpoint stores its weights."""
    fmt, unread = quantization(cfg)
    method = cfg.data["quantization_config"]["quant_method"].lower() if fmt else None
    dtype = stored_dtype(cfg)
    kept = kept_in_layers(cfg) if fmt else ()
    return {
        "stored_dtype": dtype,
        "stored_format": fmt,
        "unread_quantization": unread,
        "quant_method": method,
        "quant_kept": kept,
        "quant_compute_dtype": compute_dtype(cfg) if fmt else None,
    }

"""Inference precision policy: the width activations are computed in and the KV cache's dtype."""

from __future__ import annotations

from vramwise.formats import DTYPE_BYTES
from vramwise.workload import InferSetup


def compute_bytes(fmt_name: str) -> int:
    """Bytes of activations: fp32 models compute in fp32; everything else (quantized too) in 16 bit."""
    return 4 if fmt_name == "fp32" else 2


def kv_dtype(setup: InferSetup, fmt_name: str) -> tuple[str, int]:
    """The KV cache's dtype and its bytes: as asked, or (auto) the compute dtype of weights in ``fmt_name``."""
    if setup.kv_dtype != "auto":
        return setup.kv_dtype, DTYPE_BYTES[setup.kv_dtype]
    name = {"fp32": "fp32", "fp16": "fp16"}.get(fmt_name, "bf16")
    if fmt_name.startswith("awq-"):
        name = "fp16"  # transformers quantizer_awq.py update_dtype casts bf16 to fp16 for the CUDA kernels
    return name, DTYPE_BYTES[name]

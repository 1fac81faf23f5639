"""Inference memory per GPU: weights + KV cache + the larger of the prefill and logits transients + overheads."""

from __future__ import annotations

import functools

from vramwise.errors import NeedsArchitectureError
from vramwise.estimate.kv_cache import (
    kv_cache_bytes,
    kv_cache_term,
    sliding_prefill_views_bytes,
    sliding_prefill_views_term,
)
from vramwise.estimate.logits import logits_bytes, logits_term
from vramwise.estimate.overheads import (
    allocator_bytes,
    cuda_context_bytes,
    cuda_context_term,
    tensor_bytes,
    with_allocator,
)
from vramwise.estimate.sharding import check_tp
from vramwise.estimate.term import Estimate, Phase, Term
from vramwise.estimate.weights import weight_terms
from vramwise.estimate.workspace import prefill_workspace_bytes, prefill_workspace_term
from vramwise.formats import DTYPE_BYTES, StorageFormat, default_format, get_format
from vramwise.spec.load import BareModel, Model
from vramwise.spec.model import ModelSpec
from vramwise.workload import InferSetup

_NEEDS_ARCH = "needs the architecture (layers, heads, hidden size): name a catalog model or a config.json"


def compute_bytes(fmt_name: str) -> int:
    """Bytes of activations: fp32 models compute in fp32; everything else (quantized too) in 16 bit."""
    return 4 if fmt_name == "fp32" else 2


def kv_dtype(setup: InferSetup, fmt_name: str) -> tuple[str, float]:
    if setup.kv_dtype != "auto":
        return setup.kv_dtype, DTYPE_BYTES[setup.kv_dtype]
    name = {"fp32": "fp32", "fp16": "fp16"}.get(fmt_name, "bf16")
    return name, DTYPE_BYTES[name]


def _phases(
    spec: ModelSpec, setup: InferSetup, c: int, persistent: tuple[Term, ...], kv_bytes: float
) -> tuple[Phase, ...]:
    chunk = min(setup.prefill_chunk or setup.context, setup.context)
    base = tensor_bytes(persistent)
    views = None
    if setup.kv_block == 1:
        kw_views = {"batch": setup.batch, "context": setup.context, "dtype_bytes": kv_bytes, "tp": setup.tp}
        views = sliding_prefill_views_term(spec, **kw_views)
    held = [views] if views else []
    kw = {"batch": setup.batch, "c": c, "attention": setup.attention, "tp": setup.tp}
    prefill = prefill_workspace_term(spec, chunk=chunk, kv_len=setup.context, **kw)
    logits = logits_term(spec, batch=setup.batch, positions=chunk, c=c, last_only=not setup.all_logits)
    phases = [
        with_allocator(base, "prefill (inside a layer)", [prefill, *held], setup.allocator_fraction),
        with_allocator(base, "prefill (logits)", [logits, *held], setup.allocator_fraction),
    ]
    if setup.new_tokens:
        step = prefill_workspace_term(spec, chunk=1, kv_len=setup.tokens, **kw)
        step_logits = logits_term(spec, batch=setup.batch, positions=1, c=c, last_only=True)
        decode = [step, step_logits, *held]  # the first step still holds the prefill's views
        phases.append(with_allocator(base, "decode step", decode, setup.allocator_fraction))
    return tuple(phases)


@functools.lru_cache(maxsize=1024)
def _weights_bytes(spec: ModelSpec, fmt: StorageFormat, c: int, tp: int) -> int:
    return sum(t.bytes for t in weight_terms(spec, fmt, hp_bytes=c, tp=tp))


def inference_peak(model: Model, setup: InferSetup) -> int:
    """Peak bytes per GPU without rendering terms: the number ``estimate_inference`` reports (the solvers'
    path; tests/estimate/test_inference.py holds the two equal)."""
    if isinstance(model, BareModel):
        return _bare_inference(model, setup).peak_bytes
    spec = model
    check_tp(spec, setup.tp)
    fmt = get_format(setup.weight_format or default_format(spec))
    c = compute_bytes(fmt.name)
    kv_bytes = kv_dtype(setup, fmt.name)[1]
    b, tp = setup.batch, setup.tp
    kv = kv_cache_bytes(spec, batch=b, tokens=setup.tokens, dtype_bytes=kv_bytes, tp=tp, block=setup.kv_block)
    tensors = _weights_bytes(spec, fmt, c, tp) + kv
    views = 0
    if setup.kv_block == 1:
        views = sliding_prefill_views_bytes(spec, batch=b, context=setup.context, dtype_bytes=kv_bytes, tp=tp)
    chunk = min(setup.prefill_chunk or setup.context, setup.context)
    kw = {"batch": b, "c": c, "attention": setup.attention, "tp": tp}
    phases = [
        prefill_workspace_bytes(spec, chunk=chunk, kv_len=setup.context, **kw) + views,
        logits_bytes(spec, batch=b, positions=chunk, c=c, last_only=not setup.all_logits) + views,
    ]
    if setup.new_tokens:
        step = prefill_workspace_bytes(spec, chunk=1, kv_len=setup.tokens, **kw)
        phases.append(step + logits_bytes(spec, batch=b, positions=1, c=c, last_only=True) + views)
    worst = max(n + allocator_bytes(tensors + n, setup.allocator_fraction) for n in phases)
    return tensors + cuda_context_bytes(setup.cuda_context_mib) + worst


def estimate_inference(model: Model, setup: InferSetup) -> Estimate:
    """Per-GPU inference memory in accurate mode (textbook mode lives in ``estimate/textbook.py``)."""
    if isinstance(model, BareModel):
        return _bare_inference(model, setup)
    spec = model
    check_tp(spec, setup.tp)
    fmt = get_format(setup.weight_format or default_format(spec))
    c = compute_bytes(fmt.name)
    kv_name, kv_bytes = kv_dtype(setup, fmt.name)
    persistent = (
        *weight_terms(spec, fmt, hp_bytes=c, tp=setup.tp),
        kv_cache_term(
            spec,
            batch=setup.batch,
            tokens=setup.tokens,
            dtype=kv_name,
            dtype_bytes=kv_bytes,
            tp=setup.tp,
            block=setup.kv_block,
        ),
        cuda_context_term(setup.cuda_context_mib),
    )
    notes = [f"weights stored as {fmt.name}: {fmt.summary}"]
    if setup.tp > 1:
        notes.append(f"per GPU of tp={setup.tp}: linear weights, heads and vocabulary split; norms replicated")
    phases = _phases(spec, setup, c, persistent, kv_bytes)
    return Estimate(persistent=persistent, phases=phases, notes=tuple(notes))


def _bare_inference(model: BareModel, setup: InferSetup) -> Estimate:
    """Only a parameter count: weights at a uniform width; every architecture-dependent term is missing."""
    fmt_name = setup.weight_format or "bf16"
    bits = 4 if fmt_name == "int4" else DTYPE_BYTES[fmt_name] * 8 if fmt_name in DTYPE_BYTES else None
    if bits is None:
        get_format(fmt_name)  # unknown names raise the usual error; known ones need the tensor inventory
        raise NeedsArchitectureError(
            f"weight format '{fmt_name}' {_NEEDS_ARCH}; with a bare size use fp32, fp16, bf16, fp8-e4m3, int8 or int4"
        )
    weights = Term(
        name="weights/all",
        bytes=int(model.params * bits / 8 / setup.tp),
        formula=f"Φ {model.params:,} x {bits / 8:g} B" + (f" / tp {setup.tp}" if setup.tp > 1 else ""),
        source="seed 000: memory = parameters x bytes per parameter",
    )
    return Estimate(
        persistent=(weights, cuda_context_term(setup.cuda_context_mib)),
        missing=tuple(
            f"{name} {_NEEDS_ARCH}" for name in ("kv_cache", "activations/prefill_workspace", "activations/logits")
        ),
    )

"""Weights: every parameter group in its storage format, per GPU.

Two sources for the bytes of a category: the config arithmetic (every parameter group in a storage format,
``formats.py``), or, when the model came with its checkpoint's headers (``ModelSpec.checkpoint``) and the user
keeps the checkpoint's own format, the bytes the headers list, exact to the byte. Tensor parallelism splits a
header category by the share the config arithmetic gives that category on one rank (``estimate/sharding.py``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from vramwise.errors import ConfigError, VramwiseError
from vramwise.estimate.plan import Rule, constant
from vramwise.estimate.precision import compute_bytes
from vramwise.estimate.sharding import shard_fraction
from vramwise.estimate.term import Term
from vramwise.formats import StorageFormat, default_format, get_format
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import CATEGORIES, parameter_groups

if TYPE_CHECKING:  # the checkpoint's bytes exist only when headers were read: a catalog estimate never loads them
    from vramwise.spec.checkpoint import CategoryBytes, CheckpointBytes

# Header categories and config categories disagree past this share before a note says so: 1% is above any
# rounding (the config arithmetic is exact per tensor) and below one missing layer of a 100-layer model.
DISAGREEMENT = 0.01
_GIB = 2**30


def _arithmetic(spec: ModelSpec, fmt: StorageFormat, hp_bytes: int, tp: int) -> dict[str, list[tuple[int, int, str]]]:
    """Per category: (bytes of one group, the share one rank holds of it, its formula), from the config."""
    by_category: dict[str, list[tuple[int, int, str]]] = {}
    for group in parameter_groups(spec):
        tb = fmt.tensor_bytes(group, spec, hp_bytes)
        share = shard_fraction(group, spec, tp)
        n = round(tb.bytes * share)
        formula = f"{group.name}: {tb.formula}" + (f" x {share:.6g} (tp shard)" if share != 1 else "")
        cat = "experts" if group.category == "experts_shared" else group.category
        by_category.setdefault(cat, []).append((tb.bytes, n, formula))
    return by_category


@functools.lru_cache(maxsize=1024)
def weight_terms(
    spec: ModelSpec, fmt: StorageFormat, *, hp_bytes: int, tp: int = 1, own_format: bool = False
) -> tuple[Term, ...]:
    """One term per category (``weights/attention``, ...), each listing its groups' arithmetic.

    ``own_format``: the checkpoint read with the model (``spec.checkpoint``) gives the bytes instead
    (``checkpoint_terms``), as ``reads_headers`` decides: its own format kept, or a 16-bit cast of a 16-bit one.
    Cached: the solvers ask for the same weights at every batch and context they try.
    """
    if own_format and spec.checkpoint is not None:
        return checkpoint_terms(spec, spec.checkpoint, fmt, hp_bytes=hp_bytes, tp=tp)
    by_category = _arithmetic(spec, fmt, hp_bytes, tp)
    return tuple(
        Term(
            name=f"weights/{cat}",
            bytes=sum(n for _, n, _ in by_category[cat]),
            formula="; ".join(f for _, _, f in by_category[cat]),
            source=f"{fmt.name}: {fmt.summary} [{fmt.source}]",
        )
        for cat in CATEGORIES
        if cat in by_category
    )


@functools.lru_cache(maxsize=256)
def buffers(spec: ModelSpec) -> tuple[Rule, ...]:
    """Device buffers that are not parameters (``ModelSpec.buffer_bytes``): replicated on every GPU."""
    if not spec.buffer_bytes:
        return ()
    term = Term(
        name="buffers",
        bytes=spec.buffer_bytes,
        formula=f"{spec.buffer_bytes:,} B of non-parameter buffers",
        source="GPTBigCodeModel.bias: tril((n_positions, n_positions), bool), nn.Buffer(persistent=False)",
    )
    return (constant(term),)


# A 16-bit load casts every floating tensor stored wider to the load dtype: transformers' from_pretrained(dtype=...)
# (modeling_utils.py: _load_state_dict_into_meta_model casts floating params to the dtype), vLLM's model_config
# dtype "auto" (fp32 checkpoints served in 16 bit). Widths from safetensors/src/tensor.rs (Dtype::bitsize).
_WIDE_FLOATS = {"F32": 4, "F64": 8}
_SIXTEEN_BIT = ("fp16", "bf16")


def _loaded(ckpt: CheckpointBytes, cat: CategoryBytes, fmt: StorageFormat) -> tuple[int, str]:
    """A category's bytes once loaded in ``fmt``, and how: as stored, except wide floats cast to a 16-bit load
    where the runtime casts them (``CheckpointBytes.cast_on_load``)."""
    total, parts = 0, []
    cast = ckpt.cast_on_load and fmt.name in _SIXTEEN_BIT
    for dtype, n in cat.dtypes:
        width = _WIDE_FLOATS.get(dtype) if cast else None
        if width is None:
            total += n
            parts.append(f"{dtype} {n:,} B")
        else:
            total += n // width * 2
            parts.append(f"{dtype} {n:,} B / {width} x 2 (cast to {fmt.name})")
    return total, ", ".join(parts)


def _merged(categories: tuple[CategoryBytes, ...]) -> list[CategoryBytes]:
    """Categories as the weights terms name them: shared experts count with the experts (as ``weight_terms``
    does), whatever a reader called them."""
    from vramwise.spec.checkpoint import CategoryBytes

    by: dict[str, list[CategoryBytes]] = {}
    for c in categories:
        by.setdefault("experts" if c.category == "experts_shared" else c.category, []).append(c)
    out = []
    for name, parts in by.items():
        dtypes: dict[str, int] = {}
        for p in parts:
            for dtype, n in p.dtypes:
                dtypes[dtype] = dtypes.get(dtype, 0) + n
        out.append(
            CategoryBytes(
                category=name,
                bytes=sum(p.bytes for p in parts),
                elements=sum(p.elements for p in parts),
                tensors=sum(p.tensors for p in parts),
                dtypes=tuple(sorted(dtypes.items(), key=lambda kv: (-kv[1], kv[0]))),
            )
        )
    return out


def checkpoint_terms(
    spec: ModelSpec, ckpt: CheckpointBytes, fmt: StorageFormat, *, hp_bytes: int, tp: int = 1
) -> tuple[Term, ...]:
    """One term per checkpoint category, its bytes as the headers list them (floats stored wider than a 16-bit
    load cast to it: an fp32 checkpoint is served in 16 bit, ``formats.default_format``); with tensor
    parallelism, times the share of that category one rank holds in the config arithmetic (1 for a category the
    config does not count, such as a vision tower: replicated)."""
    arithmetic = _arithmetic(spec, fmt, hp_bytes, tp) if tp > 1 else {}
    terms = []
    for cat in _merged(ckpt.categories):
        rows = arithmetic.get(cat.category)
        full = sum(b for b, _, _ in rows) if rows else 0
        share = sum(n for _, n, _ in rows) / full if rows and full else 1.0
        loaded, how = _loaded(ckpt, cat, fmt)
        formula = f"{cat.tensors:,} tensor{'' if cat.tensors == 1 else 's'}, {cat.elements:,} elements: {how}"
        if tp > 1:
            why = "the config arithmetic's tp shard of this category" if rows and full else "replicated on every rank"
            formula += f" x {share:.6g} ({why})"
        terms.append(
            Term(name=f"weights/{cat.category}", bytes=round(loaded * share), formula=formula, source=ckpt.source)
        )
    return tuple(terms)


def checkpoint_note(spec: ModelSpec, fmt: StorageFormat, *, hp_bytes: int) -> str | None:
    """A note when the checkpoint's header bytes and the config arithmetic (in ``fmt``) differ by more than 1%
    in total or in a category: a multi-token-prediction layer, a vision tower, an untied head, another format."""
    ckpt = spec.checkpoint
    if ckpt is None or spec.unread_quantization is not None:  # no format rule: no arithmetic to compare with
        return None
    config = {cat: sum(b for b, _, _ in rows) for cat, rows in _arithmetic(spec, fmt, hp_bytes, 1).items()}
    header = {c.category: _loaded(ckpt, c, fmt)[0] for c in _merged(ckpt.categories)}
    differs = []
    for cat in [*CATEGORIES, *(c for c in header if c not in CATEGORIES)]:
        h, c = header.get(cat, 0), config.get(cat, 0)
        if abs(h - c) > DISAGREEMENT * max(h, c):
            differs.append(f"{cat} {_size(h)} vs {_size(c)}")
    total_h, total_c = sum(header.values()), sum(config.values())
    if not differs and abs(total_h - total_c) <= DISAGREEMENT * max(total_h, total_c):
        return None
    per = f"; per category, headers vs config: {', '.join(differs)}" if differs else ""
    return f"checkpoint headers hold {_size(total_h)}, the config arithmetic ({fmt.name}) {_size(total_c)}{per}"


def _size(n: int) -> str:
    """GiB for a model's sizes; exact bytes below 0.01 GiB, where two decimals of GiB would hide the difference."""
    return f"{n / _GIB:.2f} GiB" if n >= _GIB // 100 else f"{n:,} B"


def training_checkpoint_note(spec: ModelSpec) -> str | None:
    """Training keeps the config arithmetic for its model states (they are built in the training precision, not
    loaded as stored); this says where the checkpoint's headers disagree with that arithmetic in its own format."""
    if spec.checkpoint is None:
        return None
    try:
        fmt = get_format(default_format(spec))
    except VramwiseError:  # a quantization no format reads: there is no arithmetic to compare
        return None
    note = checkpoint_note(spec, fmt, hp_bytes=compute_bytes(fmt.name))
    return f"{note} (training states follow the config arithmetic)" if note else None


def own_format(spec: ModelSpec) -> str:
    """The format name of the checkpoint's own weights (``formats.default_format``). A quantization no format
    expresses (an IQ4_XS GGUF, compressed-tensors) is refused there; when the checkpoint's headers were read, its
    bytes are known exactly, so this answers the 16-bit dtype it computes in instead, and the weights terms read
    the headers (``weight_terms(own_format=True)``)."""
    try:
        return default_format(spec)
    except ConfigError:
        if spec.checkpoint is None or spec.unread_quantization is None:
            raise
        return spec.stored_dtype if spec.stored_dtype in ("fp16", "bf16") else "bf16"


def reads_headers(spec: ModelSpec, weight_format: str | None) -> bool:
    """Whether the weights terms read the checkpoint's headers for this ``--format``: with the checkpoint's own
    format (None), or a 16-bit format over an unquantized checkpoint the runtime casts on load (bf16 to fp16 keeps
    every width: a T4's fp16 rule, ``--format fp16``)."""
    ckpt = spec.checkpoint
    if ckpt is None:
        return False
    if weight_format is None:
        return True
    unquantized = spec.stored_format is None and spec.unread_quantization is None
    return ckpt.cast_on_load and unquantized and weight_format in _SIXTEEN_BIT


def weight_notes(spec: ModelSpec, fmt: StorageFormat, *, hp_bytes: int, own: bool) -> list[str]:
    """Where the weights terms came from: the format, and for a checkpoint read with the model, its headers (with
    a note where they disagree with the config arithmetic) or, when ``own`` is False, the arithmetic instead."""
    notes = [f"weights stored as {fmt.name}: {fmt.summary}"]
    ckpt = spec.checkpoint
    if ckpt is None:
        return notes
    if own and spec.unread_quantization is not None:
        key, value = spec.unread_quantization
        notes[0] = f"weights stored as {key} {value}, which no format rule reads: computed in {fmt.name}"
    where = ckpt.source if own else f"the config arithmetic in {fmt.name}, not the checkpoint's headers"
    notes.append(f"weights from {where}")
    disagree = checkpoint_note(spec, fmt, hp_bytes=hp_bytes) if own else None
    return notes + ([disagree] if disagree else [])

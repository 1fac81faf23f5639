"""The rotary cos/sin table vLLM and SGLang build on the GPU while the model is constructed.

vLLM (vllm/model_executor/layers/rotary_embedding.py at v0.6.4, ``rotary_embedding/base.py`` and ``__init__.py``
at v0.11.0): ``RotaryEmbedding.__init__`` registers ``cos_sin_cache`` (non-persistent) of
``_compute_cos_sin_cache()``: ``torch.cat((cos, sin), -1)`` over ``torch.arange(max_len)`` positions and
rotary_dim / 2 frequencies, so max_len x rotary_dim elements, cast to ``dtype`` (get_rope's default:
torch.get_default_dtype(), the model dtype while the model is built; gpt_oss.py passes torch.float32). The model is
built on the GPU, so the table is in "Model loading took" (DeviceMemoryProfiler: torch's allocated bytes).
``get_rope`` caches one instance per distinct (head_size, rotary_dim, max_position, base, is_neox_style,
rope_scaling, dtype) in ``_ROPE_DICT``: every layer shares one table (Gemma 3's sliding layers, with their own base
and no scaling, get a second one: vllm gemma3.py Gemma3Attention, sglang gemma3_causal.py likewise). Not split by
tensor parallelism: each rank builds the whole table.

max_len by rope_scaling's rope_type (get_rope and each class's ``_compute_cos_sin_cache``):
default, llama3, mrope: max_position (the config's max_position_embeddings); linear, dynamic (with ``factor``):
max_position x factor; yarn, deepseek_yarn: original_max_position_embeddings x factor (get_rope hands the class
the original context as its max_position_embeddings); longrope (Phi3LongRoPEScaledRotaryEmbedding): a short table
of original_max_position rows and a long one of max_position rows, kept as their concatenation
``long_short_cos_sin_cache`` — at v0.6.x also as ``short_cos_sin_cache`` and ``long_cos_sin_cache`` (three
buffers, twice the rows; v0.7.3 onwards registers only the concatenation).

SGLang 0.4.9 and 0.5.5 (python/sglang/srt/layers/rotary_embedding.py ``RotaryEmbedding.__init__``, "NOTE(ByronHsu):
cache needs to be in FP32 for numerical stability"): the same get_rope cache and lengths, but on CUDA the table is
not cast: fp32 (4 B) for every class built on RotaryEmbedding; Phi3LongRoPEScaledRotaryEmbedding casts to the model
dtype and keeps all three buffers.
"""

from __future__ import annotations

import math

from vramwise.estimate.term import Term
from vramwise.spec.model import ModelSpec
from vramwise.spec.rope import RopeSpec

_VLLM = "vllm/model_executor/layers/rotary_embedding.py get_rope, RotaryEmbedding._compute_cos_sin_cache"
_SGLANG = "sglang python/sglang/srt/layers/rotary_embedding.py get_rope, RotaryEmbedding.__init__"
_SAME_LENGTH = ("default", "llama3")
_SCALED = ("linear", "dynamic")
_ORIGINAL_SCALED = ("yarn", "deepseek_yarn")


def rotary_dim(spec: ModelSpec, rope: RopeSpec) -> int:
    """The rotated width of one head: MLA's qk_rope_head_dim, else head_dim (x partial_rotary_factor, as get_rope
    does: ``int(rotary_dim * partial_rotary_factor)`` when the factor is below 1)."""
    mla = spec.attention.mla
    if mla is not None:
        return mla.qk_rope_head_dim
    d = spec.attention.head_dim
    return int(d * rope.partial_rotary_factor) if rope.partial_rotary_factor < 1 else d


def table_rows(rope: RopeSpec, max_position: int, *, three_longrope_buffers: bool) -> int | None:
    """Rows of the table(s) get_rope builds for ``rope``; None for a scaling type not modelled here."""
    if rope.rope_type in _SAME_LENGTH:
        return max_position
    if rope.rope_type in _SCALED:
        return math.ceil(max_position * rope.factor)  # torch.arange(max_len) of a float max_len
    if rope.original_max_position is None:
        return None  # yarn and longrope need it: vLLM raises KeyError without it
    if rope.rope_type in _ORIGINAL_SCALED:
        return math.ceil(rope.original_max_position * rope.factor)
    if rope.rope_type == "longrope":
        return (rope.original_max_position + max_position) * (2 if three_longrope_buffers else 1)
    return None


def rope_cache_term(spec: ModelSpec, *, c: int, engine: str, release: str) -> tuple[Term | None, str | None]:
    """(the table's term, or None; a note when the model's rope is not modelled). ``engine`` "vllm" or "sglang";
    ``release`` the plan's release (vLLM 0.6.x keeps longrope's three buffers)."""
    if not spec.traits.rotary:
        return None, None
    if not spec.max_position_embeddings:
        return None, ("rotary table not counted: the config gives no max_position_embeddings, which sizes the "
                      "cos/sin cache the engine builds at load (engines/rope_cache.py)")
    rope = spec.rope or RopeSpec()  # a spec built without config keys (GGUF): the unscaled table
    sglang = engine == "sglang"
    three = sglang or release.startswith("0.6")
    rows = table_rows(rope, spec.max_position_embeddings, three_longrope_buffers=three)
    if rows is None:
        return None, (f"rotary table of rope_type {rope.rope_type!r} not modelled (engines/rope_cache.py): the "
                      "weights leave out its cos/sin cache")
    longrope = rope.rope_type == "longrope"
    if sglang and not longrope:
        size, why = 4, "fp32 on CUDA"
    elif rope.fp32_table and not sglang:
        size, why = 4, "get_rope(dtype=torch.float32)"
    else:
        size, why = c, "model dtype"
    dim = rotary_dim(spec, rope)
    tables = [(rows, f"{rope.rope_type} table {rows:,} positions")]
    if rope.local_table:
        tables.append((spec.max_position_embeddings, f"sliding layers' table {spec.max_position_embeddings:,}"))
    total = sum(r for r, _ in tables) * dim * size
    what = " + ".join(text for _, text in tables)
    return Term(
        name="weights/rope_cache",
        bytes=total,
        formula=f"({what}) x rotary_dim {dim} x {size} B ({why}); one per distinct rope config, shared by every "
                "layer, whole on every tp rank",
        source=f"{_SGLANG if sglang else _VLLM} ({engine} {release})",
    ), None

"""Validators shared by the setups: each error names the field, the value and what is allowed.

Every integer a user gives has a plausibility bound (``BOUNDS``): a number past it is a typo or garbage, and
left unchecked it reaches the byte arithmetic as an astronomically large table, a float overflow (a 300-digit
batch) or a search that never ends. Each bound says why it is that; all sit well above the real world and at or
above ``fit``'s search cap (``fit/solve.py`` SEARCH_CAP = 2^22), so every setup a fit search builds is valid.
Integers must be ``int`` (not ``bool``, not ``2.0``); fractions must be finite real numbers.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TypeVar

from vramwise.errors import InvalidWorkloadError
from vramwise.errors import shown as show

E = TypeVar("E", bound=StrEnum)

# GPUs in one parallel degree (dp, tp, pp, cp, ep, an FSDP shard group, fit --layouts): 2^22 = 4,194,304 is 20x
# the largest published cluster (xAI's Colossus, 200,000 GPUs) and fit's search cap for --min-gpus.
MAX_GPUS = 1 << 22
_GPUS_WHY = "more GPUs than any cluster: the largest published has 200,000"
# Tokens per sequence (context, seq, new tokens, a prefill chunk, a loss chunk, vLLM's batched tokens):
# 2^30 = 1,073,741,824 is 100x the longest published context window (Llama 4 Scout: 10M tokens), and room for
# fit --max seq's search cap (2^22) times a context-parallel degree up to 256.
MAX_TOKENS = 1 << 30
_TOKENS_WHY = "100x the longest published context window, Llama 4 Scout's 10M tokens"
# Sequences in a batch: 2^24 = 16,777,216 is 65,536x vLLM's default max_num_seqs (256) and 4x fit's search cap.
MAX_BATCH = 1 << 24
_BATCH_WHY = "65,536x vLLM's default of 256 concurrent sequences"
# Decoder layers (freeze_layers, interleave, verify --layers): the bound a config's num_hidden_layers has
# (spec/adapters/config.py MAX_LAYERS, 10x DeepNet's 1,000 layers), so an option never allows more layers than a
# model may have. Written twice because workload sits below spec; tests/workload checks the two agree.
MAX_LAYERS = 10_000
_LAYERS_WHY = "10x the deepest published transformer, DeepNet's 1,000 layers"

BOUNDS: dict[str, tuple[int, str]] = {
    "batch": (MAX_BATCH, _BATCH_WHY),
    "context": (MAX_TOKENS, _TOKENS_WHY),
    "seq": (MAX_TOKENS, _TOKENS_WHY),
    "new_tokens": (MAX_TOKENS, _TOKENS_WHY),
    "prefill_chunk": (MAX_TOKENS, _TOKENS_WHY),
    # every image takes tokens of the context (or, mllama, of a cross-attention cache): 2^20 images of even 10
    # tokens each pass the longest published context window, Llama 4 Scout's 10M tokens
    "images": (1 << 20, "images of 10 tokens each past the longest published context window (10M tokens)"),
    "loss_chunk": (MAX_TOKENS, _TOKENS_WHY),
    "max_batched_tokens": (MAX_TOKENS, _TOKENS_WHY),
    # vLLM's flags (workload/engines.py VllmFlags): tokens like a context, sequences like a batch
    "max_model_len": (MAX_TOKENS, _TOKENS_WHY),
    "max_num_batched_tokens": (MAX_TOKENS, _TOKENS_WHY),
    "max_num_seqs": (MAX_BATCH, _BATCH_WHY),
    # 2^50 bytes = 1 PiB: more than any GPU's memory (the largest in the catalog, B300, has 288 GB)
    "kv_cache_memory_bytes": (1 << 50, "1 PiB, more than any GPU's memory"),
    # vLLM's --block-size choices end at 128 (vllm/config/cache.py, BlockSize = Literal[1, 8, 16, 32, 64, 128])
    "kv_block": (1 << 16, "512x vLLM's largest block size, 128 tokens"),
    "tp": (MAX_GPUS, _GPUS_WHY),
    "dp": (MAX_GPUS, _GPUS_WHY),
    "pp": (MAX_GPUS, _GPUS_WHY),
    "cp": (MAX_GPUS, _GPUS_WHY),
    "ep": (MAX_GPUS, _GPUS_WHY),
    "fsdp_shard": (MAX_GPUS, _GPUS_WHY),
    "layouts": (MAX_GPUS, _GPUS_WHY),
    # a pipeline needs at least pp micro-batches per step, so accumulation is bounded like a GPU count
    "grad_accum": (MAX_GPUS, "micro-batches per step, bounded like a GPU count (a pipeline needs pp of them)"),
    "interleave": (MAX_LAYERS, _LAYERS_WHY),
    "freeze_layers": (MAX_LAYERS, _LAYERS_WHY),
    "recompute_every": (MAX_LAYERS, _LAYERS_WHY),
    "layers": (MAX_LAYERS, _LAYERS_WHY),
    # past the hidden size an adapter is no longer low rank; the widest published is PaLM 540B's 18,432
    "lora_r": (1 << 16, "wider than any published hidden size, PaLM 540B's 18,432"),
    # virtual tokens join every sequence (prompt tuning) or every layer's keys (prefix tuning): a sequence's bound
    "num_virtual_tokens": (MAX_TOKENS, _TOKENS_WHY),
    "decoder_seq": (MAX_TOKENS, _TOKENS_WHY),
    # DeepSpeed's defaults are 5e8 and 5e7 elements (deepspeed/runtime/zero/config.py); 2^43 = 8.8 trillion
    "reduce_bucket": (1 << 43, "more elements than any published model has parameters (Kimi K2: 1.04 trillion)"),
    "prefetch_bucket": (1 << 43, "more elements than any published model has parameters (Kimi K2: 1.04 trillion)"),
    # DeepSpeed ZeRO-3's defaults are 1e9 and 1e5 elements (deepspeed/runtime/zero/config.py)
    "max_live_params": (1 << 43, "more elements than any published model has parameters (Kimi K2: 1.04 trillion)"),
    "param_persistence_threshold": (
        1 << 43, "more elements than any published model has parameters (Kimi K2: 1.04 trillion)"
    ),
    "max_reuse_distance": (1 << 43, "more elements than any published model has parameters (Kimi K2: 1.04 trillion)"),
    # 2^20 MiB = 1 TiB: more than any GPU's memory (the largest in the catalog, B300, has 288 GB)
    "cuda_context_mib": (1 << 20, "1 TiB, more than any GPU's memory"),
    # fit --layouts tries every micro-batch from 1 to this for every layout family: 4,096 keeps that search short
    # and is above any published per-GPU micro-batch
    "max_batch": (1 << 12, "every micro-batch up to it is tried for each layout; none published is larger"),
    "top": (MAX_GPUS, "more rows than any layout search lists"),
}


def integer(field: str, value: object, low: int, name: str | None = None) -> None:
    """``value`` is an int (not a bool) from ``low`` to the field's bound in ``BOUNDS``; ``name``: the field as
    the error names it when it takes another field's bound (replay_min_seq: a sequence length's)."""
    high, why = BOUNDS[field]
    field = name or field
    allowed = f"an integer from {low} to {high:,}"
    kind = "a positive integer" if low == 1 else "a non-negative integer"
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidWorkloadError(f"{field} must be {kind}, got {show(value)}", field=field, allowed=allowed)
    if value > high:
        raise InvalidWorkloadError(
            f"{field} must be at most {high:,} ({why}), got {show(value)}", field=field, allowed=allowed
        )


def positive(field: str, value: object) -> None:
    integer(field, value, 1)


def non_negative(field: str, value: object) -> None:
    integer(field, value, 0)


def real(
    field: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """``value`` is a finite real number (not a bool) from ``low`` to ``high``, each end open or closed."""
    allowed = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        assert isinstance(value, (int, float))
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        raise InvalidWorkloadError(f"{field} must be in {allowed}, got {show(value)}", field=field, allowed=allowed)


def boolean(field: str, value: object) -> None:
    """``value`` is True or False (a flag set from JSON or the API may be anything)."""
    if not isinstance(value, bool):
        raise InvalidWorkloadError(f"{field} must be True or False, got {show(value)}", field=field)


def version(engine: str, field: str, value: str, versions: tuple[str, ...]) -> None:
    """``value`` is one of the engine's releases whose memory plan is modelled."""
    if value not in versions:
        allowed = ", ".join(versions)
        raise InvalidWorkloadError(
            f"{engine} version {show(value)} is not modelled; allowed: {allowed}", field=field, allowed=allowed
        )


def choice(field: str, value: str, allowed: type[E]) -> E:
    """The member of ``allowed`` that ``value`` names (a plain string from the CLI or JSON is accepted)."""
    if isinstance(value, allowed):
        return value  # already checked: replace() on a setup re-runs the checks on unchanged fields
    try:
        return allowed(value)
    except (ValueError, TypeError):
        raise InvalidWorkloadError(
            f"{field} {show(value)} is not allowed; allowed: {', '.join(allowed)}", field=field
        ) from None


def coerce(obj: object, field: str, allowed: type[StrEnum], name: str | None = None) -> None:
    """Validate ``obj.field`` against ``allowed`` and store the enum member (frozen dataclasses only)."""
    object.__setattr__(obj, field, choice(name or field, getattr(obj, field), allowed))


# An image side in pixels: transformers' largest processing cap is 4,096 (Idefics3ImageProcessor MAX_IMAGE_SIZE, "4k
# resolution as absolute maximum"); 2^16 = 65,536 is 16x that, past any camera sensor's side (a 200 MP sensor:
# 16,320 px).
MAX_IMAGE_SIDE = 1 << 16
_IMAGE_ALLOWED = f"WIDTHxHEIGHT in pixels, each side from 1 to {MAX_IMAGE_SIDE:,}, e.g. 1024x768"


def pixels_text(field: str, value: object) -> str:
    """``WIDTHxHEIGHT`` (``1024x768``), normalised to that spelling; each side a whole number of pixels."""
    text = value.strip().lower() if isinstance(value, str) else None
    parts = text.split("x") if text else []
    ok = len(parts) == 2 and all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts)
    if not ok or not all(1 <= int(p) <= MAX_IMAGE_SIDE for p in parts):
        raise InvalidWorkloadError(
            f"{field} must be {_IMAGE_ALLOWED}, got {show(value)}", field=field, allowed=_IMAGE_ALLOWED
        )
    return f"{int(parts[0])}x{int(parts[1])}"

"""Tensor-parallel sharding of weights and attention heads (Megatron / vLLM conventions)."""

from __future__ import annotations

import math

from vramwise.errors import InvalidLayoutError
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import ParamGroup

VOCAB_PAD = 64  # vLLM pads the vocabulary to a multiple of 64 before splitting it (DEFAULT_VOCAB_PADDING_SIZE)


def check_tp(spec: ModelSpec, tp: int) -> None:
    """tp must divide the attention heads; KV heads are split, or replicated when fewer than tp."""
    att = spec.attention
    if att.num_heads % tp:
        raise InvalidLayoutError(
            f"tp ({tp}) must divide num_attention_heads ({att.num_heads}); "
            f"allowed tp: {', '.join(str(d) for d in divisors(att.num_heads))}"
        )
    kv = att.num_kv_heads
    if att.kind == "mha" and kv % tp and tp % kv:
        raise InvalidLayoutError(
            f"tp ({tp}) and num_key_value_heads ({kv}) must divide one another "
            f"(KV heads are split across GPUs, or replicated when fewer than tp)"
        )


def divisors(n: int) -> list[int]:
    """Every d that divides n, ascending: the tensor-parallel sizes a count of heads (or GPUs) allows.

    O(sqrt n): divisors come in pairs (d, n // d) with d <= sqrt(n)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def kv_heads_per_gpu(spec: ModelSpec, tp: int) -> int:
    """KV heads each GPU stores: n_kv / t, or one replicated head when n_kv < t."""
    return max(1, spec.attention.num_kv_heads // tp)


def shard_fraction(group: ParamGroup, spec: ModelSpec, tp: int) -> float:
    """Fraction of a parameter group one tensor-parallel rank holds."""
    if tp == 1:
        return 1.0
    if group.kind in ("norm", "router") or group.name in ("embeddings.positions", "embeddings.token_types"):
        return 1.0  # replicated on every rank
    if group.name in ("embeddings.tokens", "head.lm_head", "head.bias"):
        padded = -(-spec.vocab_size // VOCAB_PAD) * VOCAB_PAD
        per_rank = -(-padded // tp)
        return per_rank / spec.vocab_size
    return 1.0 / tp

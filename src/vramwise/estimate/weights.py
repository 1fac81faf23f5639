"""Weights: every parameter group in its storage format, per GPU."""

from __future__ import annotations

import functools

from vramwise.estimate.plan import Rule, constant
from vramwise.estimate.sharding import shard_fraction
from vramwise.estimate.term import Term
from vramwise.formats import StorageFormat
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import CATEGORIES, parameter_groups


@functools.lru_cache(maxsize=1024)
def weight_terms(spec: ModelSpec, fmt: StorageFormat, *, hp_bytes: int, tp: int = 1) -> tuple[Term, ...]:
    """One term per category (``weights/attention``, ...), each listing its groups' arithmetic.

    Cached: the solvers ask for the same weights at every batch and context they try.
    """
    by_category: dict[str, list[tuple[int, str]]] = {}
    for group in parameter_groups(spec):
        tb = fmt.tensor_bytes(group, spec, hp_bytes)
        share = shard_fraction(group, spec, tp)
        n = round(tb.bytes * share)
        formula = f"{group.name}: {tb.formula}" + (f" x {share:.6g} (tp shard)" if share != 1 else "")
        cat = "experts" if group.category == "experts_shared" else group.category
        by_category.setdefault(cat, []).append((n, formula))
    return tuple(
        Term(
            name=f"weights/{cat}",
            bytes=sum(n for n, _ in by_category[cat]),
            formula="; ".join(f for _, f in by_category[cat]),
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

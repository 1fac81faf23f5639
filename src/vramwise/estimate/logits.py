"""Logits: the lm_head output, in compute dtype, plus the fp32 copy samplers take."""

from __future__ import annotations

from vramwise.estimate.term import Term
from vramwise.spec.model import ModelSpec


def logits_bytes(spec: ModelSpec, *, batch: int, positions: int, c: int, last_only: bool) -> int:
    V = spec.vocab_size
    logits = batch * V * (c + 4) if last_only else batch * positions * V * c
    return logits + batch * positions * spec.hidden_size * c


def logits_term(spec: ModelSpec, *, batch: int, positions: int, c: int, last_only: bool) -> Term:
    """Logits at the end of a forward, with the final hidden states they are computed from.

    ``last_only`` (generate(), vLLM): ``b·V·(c + 4)``: last-position logits and their fp32 upcast for
    sampling. Otherwise (a plain ``model(ids)``) ``b·s·V·c`` for every position. Plus ``b·s·h·c`` of final
    hidden states. Vocab-parallel logits are gathered to full V on every rank before sampling.
    """
    V, h = spec.vocab_size, spec.hidden_size
    hidden = batch * positions * h * c
    f = f"b {batch} x V {V} x (c {c} + fp32 4)" if last_only else f"b {batch} x s {positions} x V {V} x c {c}"
    return Term(
        name="activations/logits",
        bytes=logits_bytes(spec, batch=batch, positions=positions, c=c, last_only=last_only),
        formula=f"{f} + final hidden b·s·h·c = {hidden:,}",
        source="transformers generate() keeps last-position logits and upcasts to fp32; vLLM sampler likewise",
    )

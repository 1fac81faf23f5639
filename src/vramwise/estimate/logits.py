"""Logits: the lm_head output, in compute dtype, plus the fp32 copy samplers take."""

from __future__ import annotations

from vramwise.estimate.term import Term
from vramwise.spec.model import ModelSpec


def logits_term(spec: ModelSpec, *, batch: int, positions: int, c: int, last_only: bool) -> Term:
    """Logits at the end of a forward, with the final hidden states they are computed from.

    ``last_only`` (generate(), vLLM): ``b·V·(c + 4)``: last-position logits and their fp32 upcast for
    sampling. Otherwise (a plain ``model(ids)``) ``b·s·V·c`` for every position. Plus ``b·s·h·c`` of final
    hidden states. Vocab-parallel logits are gathered to full V on every rank before sampling.
    """
    V, h = spec.vocab_size, spec.hidden_size
    hidden = batch * positions * h * c
    if last_only:
        logits, f = batch * V * (c + 4), f"b {batch} x V {V} x (c {c} + fp32 4)"
    else:
        logits, f = batch * positions * V * c, f"b {batch} x s {positions} x V {V} x c {c}"
    return Term(
        name="activations/logits",
        bytes=logits + hidden,
        formula=f"{f} + final hidden b·s·h·c = {hidden:,}",
        source="transformers generate() keeps last-position logits and upcasts to fp32; vLLM sampler likewise",
    )

"""Logits: the lm_head output, in compute dtype, plus the fp32 copy samplers take."""

from __future__ import annotations

from vramwise.estimate.plan import BATCH, Rule, Vars
from vramwise.spec.model import ModelSpec


def logits(spec: ModelSpec, *, positions: int, c: int, last_only: bool) -> Rule:
    """Logits at the end of a forward, with the final hidden states they are computed from.

    ``last_only`` (generate(), vLLM): ``b·V·(c + 4)``: last-position logits and their fp32 upcast for
    sampling. Otherwise (a plain ``model(ids)``) ``b·s·V·c`` for every position. Plus ``b·s·h·c`` of final
    hidden states. Vocab-parallel logits are gathered to full V on every rank before sampling.
    """
    V, h = spec.vocab_size, spec.hidden_size
    hidden = positions * h * c

    def formula(v: Vars) -> str:
        b = v.b
        f = f"b {b} x V {V} x (c {c} + fp32 4)" if last_only else f"b {b} x s {positions} x V {V} x c {c}"
        return f"{f} + final hidden b·s·h·c = {b * hidden:,}"

    return Rule(
        name="activations/logits",
        coef=(V * (c + 4) if last_only else positions * V * c) + hidden,
        var=BATCH,
        formula=formula,
        source="transformers generate() keeps last-position logits and upcasts to fp32; vLLM sampler likewise",
    )

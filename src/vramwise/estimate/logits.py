"""Logits: the head's output, in compute dtype, plus the fp32 copy samplers take; what the head is follows
``architectures[0]`` (spec/heads.py)."""

from __future__ import annotations

from vramwise.estimate.plan import BATCH, Rule, Vars
from vramwise.spec.model import ModelSpec
from vramwise.spec.traits import HeadKind

_CAUSAL = "transformers generate() keeps last-position logits and upcasts to fp32; vLLM sampler likewise"
# BertLMPredictionHead.forward: the transform (dense, activation, LayerNorm) then the decoder over V, every
# position (BertForMaskedLM.forward has no logits_to_keep)
_MASKED = "BertForMaskedLM: BertPredictionHeadTransform output and the decoder's logits at every position"
# GenericForSequenceClassification / GPT2ForSequenceClassification.forward: logits = self.score(hidden_states)
# at every position, then pooled_logits = logits[arange(b), last_non_pad_token] (a new (b, num_labels) tensor)
_SCORED = "*ForSequenceClassification (decoders): score over every position, then the last non-pad token's row"
# BertForSequenceClassification: BertPooler takes the first token (dense h x h, tanh), classifier -> (b, num_labels)
_POOLED = "BertForSequenceClassification: BertPooler (first token, dense, tanh) then the classifier"
_TOKENS = "*ForTokenClassification: the classifier over every position"


def logits(spec: ModelSpec, *, positions: int, c: int, last_only: bool) -> Rule | None:
    """Logits at the end of a forward, with the final hidden states they are computed from (None: a bare
    model, whose output is the final hidden states the layers already held).

    Causal LM, ``last_only`` (generate(), vLLM): ``b·V·(c + 4)``: last-position logits and their fp32 upcast
    for sampling; otherwise (a plain ``model(ids)``) ``b·s·V·c`` for every position. Masked LM: ``b·s·(V + h)·c``
    (every position, and the transform's output). Classifiers: ``b·s·n·c`` over every position (decoders and
    token classifiers), plus the pooled rows. Each adds ``b·s·h·c`` of final hidden states. Vocab-parallel
    logits are gathered to full V on every rank before sampling.
    """
    head, V, h, n = spec.head, spec.vocab_size, spec.hidden_size, spec.num_labels
    hidden = positions * h * c
    if head is HeadKind.BARE:
        return None
    if head is HeadKind.CAUSAL_LM:
        coef = V * (c + 4) if last_only else positions * V * c
        text = (lambda b: f"b {b} x V {V} x (c {c} + fp32 4)") if last_only else None
        source = _CAUSAL
    elif head is HeadKind.MASKED_LM:
        coef, text, source = positions * (V + h) * c, None, _MASKED
    elif head is HeadKind.TOKEN_CLASSIFICATION:
        coef, text, source = positions * n * c, None, _TOKENS
    elif spec.traits.pooled_classifier:
        coef = (2 * h + n) * c  # the first token's dense and tanh outputs, then the classifier's row
        text, source = (lambda b: f"pooled b {b} x (2·h {2 * h} + labels {n}) x c {c}"), _POOLED
    else:
        coef = (positions + 1) * n * c  # every position's scores and the gathered last-token row
        text, source = (lambda b: f"b {b} x (s {positions} + 1) x labels {n} x c {c}"), _SCORED
    width = {HeadKind.CAUSAL_LM: f"V {V}", HeadKind.MASKED_LM: f"(V {V} + h {h})"}.get(head, f"labels {n}")

    def formula(v: Vars) -> str:
        f = text(v.b) if text else f"b {v.b} x s {positions} x {width} x c {c}"
        return f"{f} + final hidden b·s·h·c = {v.b * hidden:,}"

    return Rule(name="activations/logits", coef=coef + hidden, var=BATCH, formula=formula, source=source)


def head_words(spec: ModelSpec) -> str:
    """The head in words for a message: "no head", "a masked LM head"..."""
    words = spec.head.value.replace("_", " ").replace(" lm", " LM")
    return "no head" if spec.head is HeadKind.BARE else f"a {words} head"

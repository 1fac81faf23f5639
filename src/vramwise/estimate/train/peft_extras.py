"""What peft's methods add to the activations, read from their forward at peft 0.21.2 (c = compute bytes).

DoRA (tuners/lora/dora.py DoraLinearLayer.forward, no dropout): ``(mag_norm_scale - 1) * base_result`` keeps
  the base layer's output (c·out per token) and ``mag_norm_scale * lora_result`` keeps the adapter's fp32
  output (4·out; 16-bit under autocast), both for the magnitude's gradient. Before them it rebuilds the whole
  weight: ``get_lora_weight`` runs B(A(eye(in))) (an fp32 in x in identity, then in x out), the base weight
  is cast to x's dtype (fp32: peft cast x to the adapter's dtype) and ``get_weight_norm`` adds
  ``scaling * lora_weight``: four weight-sized fp32 tensors live at once, freed before the next module. The
  norm is detached (DoRA paper §4.3), so backward rebuilds nothing.
IA3 (tuners/ia3/layer.py Linear.forward): an output-scaled module multiplies its base output by the fp32
  vector, which keeps that output (c·out); a feedforward module casts its input to fp32 and multiplies,
  which keeps the fp32 input (4·in).
LoRA on ``embed_tokens`` (tuners/lora/layer.py Embedding.forward): F.embedding of the fp32 lora_embedding_A
  keeps its (tokens, r) output for B's gradient (4r per token).
LoRA on ``lm_head``: the adapter's fp32 cast of the final norm's output (4h) and x·A (4r), like any LoRA
  linear. Its vocabulary-wide fp32 output and gradients are temporaries that the traced step shows freed
  before the loss's own (the loss backward stays the peak); with the head alone adapted no gradient flows
  below it, so the layers and the final norm keep nothing.
Prefix tuning (peft_model.py PeftModelForCausalLM.forward with past_key_values from get_prompt): every layer's
  keys and values are the prefix's n plus the sequence's, concatenated in the cache (c·2·kv·n per sequence
  and layer more than without a prefix), and queries of s tokens against n + s keys rule out sdpa's
  is_causal: transformers builds a boolean (b, 1, s, n + s) mask that the kernel keeps for backward.
Checked against traced steps (tests/estimate/test_peft_methods.py).
"""

from __future__ import annotations

from vramwise.estimate.plan import BATCH, BATCH_SEQ_SEQ, ONE, TOKENS, Rule
from vramwise.estimate.train.layout import Stage
from vramwise.estimate.train.lora import LoraModule
from vramwise.estimate.train.peft_methods import Ia3Module
from vramwise.spec.model import ModelSpec

SRC_DORA = "peft 0.21 tuners/lora/dora.py DoraLinearLayer.forward"
SRC_IA3 = "peft 0.21 tuners/ia3/layer.py Linear.forward"
SRC_LORA_OUTER = "peft 0.21 tuners/lora/layer.py Embedding.forward, Linear.forward"
SRC_PREFIX = "peft 0.21 PeftModelForCausalLM.forward (past_key_values from get_prompt); transformers sdpa_mask"


def dora_saved(m: LoraModule, *, c: int, amp: bool, dropout: bool = False) -> float:
    """Per token and layer: the base output and the adapter's output, kept for the magnitude's gradient. With
    lora_dropout the base output is recomputed from the dropped fp32 input (DoraLinearVariant.forward passes
    base_result=None), so it is fp32 too."""
    return ((4 if dropout else c) + (2 if amp else 4)) * m.out_features


def dora_dropout_weights(lora: list[LoraModule], c: int, share: float) -> Rule | None:
    """DoRA with lora_dropout on a 16-bit base: ``F.linear(x, weight.to(x.dtype))`` on the dropped fp32 input keeps
    an fp32 copy of every adapted weight for the input's gradient until that layer's backward."""
    if c == 4:
        return None  # an fp32 base: the weight itself, no copy
    n = sum(m.in_features * m.out_features * m.layers for m in lora if m.place == "layers") * share
    if not n:
        return None
    return Rule(
        name="activations/dora_weights",
        coef=4 * n,
        var=ONE,
        formula=lambda v: f"fp32 copies of the adapted weights: {n:,.0f} x 4 B",
        source=SRC_DORA + " (base_result=None with dropout: F.linear(x, weight.to(x.dtype)))",
    )


def ia3_saved(modules: tuple[Ia3Module, ...], *, c: int) -> float:
    """Per token and layer: each output-scaled module's base output, each feedforward module's fp32 input."""
    return sum(4 * m.size if m.feedforward else c * m.size for m in modules)


def dora_weight_rule(lora: list[LoraModule]) -> Rule | None:
    """The largest module's rebuilt weight while its DoRA forward runs (fp32, four weight-sized tensors); the
    head's is vocabulary-wide. (DoRA on the embedding rebuilds its table the same way, as DoraEmbeddingLayer.)"""
    dense = [m for m in lora if m.place in ("layers", "head")]
    if not dense:
        return None
    m = max(dense, key=lambda x: 4 * x.in_features * x.out_features + x.in_features**2)
    n_in, n_out = m.in_features, m.out_features
    total = 4 * n_in * n_in + 4 * 4 * n_in * n_out
    return Rule(
        name="dora/weight_norm",
        coef=total,
        var=ONE,
        formula=lambda v: (
            f"{m.name}: eye(in {n_in})² x 4 B + 4 weight-sized fp32 tensors (B·A, W cast, scaled, sum) "
            f"{n_in} x {n_out} x 4 B"
        ),
        source=SRC_DORA + " (get_lora_weight, get_weight_norm)",
    )


def embedding_lora_rule(r: int, flight: float) -> Rule:
    return Rule(
        name="activations/lora_embedding",
        coef=4 * r * flight,
        var=TOKENS,
        formula=lambda v: f"F.embedding of lora_embedding_A: T {v.T} x r {r} x 4 B",
        source=SRC_LORA_OUTER,
    )


def head_lora_rule(h: int, r: int, c: int, flight: float) -> Rule:
    per = (4 * h if c != 4 else 0) + 4 * r
    return Rule(
        name="activations/lora_head",
        coef=per * flight,
        var=TOKENS,
        formula=lambda v: f"lm_head adapter: fp32 input {4 * h if c != 4 else 0} + x·A {4 * r} B/token x T {v.T}",
        source=SRC_LORA_OUTER,
    )


def prefix_rules(spec: ModelSpec, n: int, layers: int, c: int, flight: float, *, sdpa: bool) -> list[Rule]:
    """Prefix tuning in every recording layer: the prefix's keys and values; under sdpa also the mask it forces,
    which makes transformers repeat the KV heads to every query head (sdpa_attention.use_gqa_in_sdpa needs no
    mask) and torch convert the boolean mask to an additive one in the compute dtype, kept per layer."""
    att = spec.attention
    d, heads, kv = att.head_dim, att.num_heads, att.num_kv_heads
    if not sdpa:  # flash-attention takes the longer keys without a mask (bottom-right causal alignment)
        return [
            Rule(
                name="activations/prefix_kv",
                coef=layers * c * 2 * kv * d * n * flight,
                var=BATCH,
                formula=lambda v: f"{layers} layers x b {v.b} x n {n} x 2 x {kv} kv heads x {d} x {c} B",
                source=SRC_PREFIX,
            )
        ]
    return [
        Rule(
            name="activations/prefix_kv",
            coef=layers * c * 2 * heads * d * n * flight,
            var=BATCH,
            formula=lambda v: f"{layers} layers x b {v.b} x n {n} x 2 x {heads} heads (repeated) x {d} x {c} B",
            source=SRC_PREFIX,
        ),
        Rule(
            name="activations/prefix_repeat_kv",
            coef=layers * c * 2 * (heads - kv) * d * flight,
            var=TOKENS,
            formula=lambda v: f"{layers} layers x T {v.T} x 2 x ({heads} - {kv}) repeated heads x {d} x {c} B",
            source=SRC_PREFIX + " (repeat_kv when a mask is passed)",
        ),
        Rule(
            name="activations/prefix_mask",
            coef=layers * c * flight,
            var=BATCH_SEQ_SEQ,
            formula=lambda v: f"{layers} layers x additive mask b {v.b} x s {v.s} x s {v.s} x {c} B",
            source=SRC_PREFIX + " (torch sdpa convert_boolean_attn_mask)",
        ),
        Rule(
            name="activations/prefix_mask_n",
            coef=layers * c * n * flight,
            var=TOKENS,
            formula=lambda v: f"{layers} layers x additive mask's prefix columns T {v.T} x n {n} x {c} B",
            source=SRC_PREFIX + " (torch sdpa convert_boolean_attn_mask)",
        ),
    ]


def dora_head_backward(vocab: int, c: int, below: bool) -> Rule:
    """DoRA on the head: the backward of ``mag_norm_scale * lora_result`` adds an fp32 (T, V) gradient to the
    loss backward's, and, when adapters below need the head's input gradient, ``(mag_norm_scale - 1) *
    base_result`` a compute-dtype one for the base logits (traced)."""
    per = 4 + (c if below else 0)
    return Rule(
        name="loss/dora_head_backward",
        coef=per * vocab,
        var=TOKENS,
        formula=lambda v: f"gradients of the adapter's and the base's logits: T {v.T} x V {vocab} x {per} B",
        source=SRC_DORA,
    )


def head_only(lora: list[LoraModule]) -> bool:
    """LoRA on the head alone: no gradient flows below it, so neither the layers nor the final norm keep anything."""
    return bool(lora) and all(m.place == "head" for m in lora)


def outer_lora_rules(
    spec: ModelSpec, stage: Stage, r: int, c: int, lora: list[LoraModule], flight: float, *, dora: bool = False
) -> list[Rule]:
    """LoRA on the input embedding (first stage) and on the head (last stage): what their forward keeps; DoRA on
    the head also keeps the base logits and the adapter's fp32 output (dora_saved, vocabulary-wide)."""
    places = {m.place: m for m in lora}
    out = []
    if stage.first and "embedding" in places:
        out.append(embedding_lora_rule(r, flight))
    if stage.last and "head" in places:
        out.append(head_lora_rule(spec.hidden_size, r, c, flight))
        if dora:
            per = dora_saved(places["head"], c=c, amp=False)
            out.append(
                Rule(
                    name="activations/dora_head",
                    coef=per * flight,
                    var=TOKENS,
                    formula=lambda v: f"DoRA on lm_head: base logits and fp32 adapter output {per:,} B x T {v.T}",
                    source=SRC_DORA,
                )
            )
    return out

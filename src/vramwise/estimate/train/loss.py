"""The loss region: logits, the fp32 cross entropy and its gradient, on the stage that holds the head.

transformers' ForCausalLMLoss upcasts the logits to fp32 and calls cross_entropy: log_softmax keeps its fp32
output (4·V per token) until backward; the 16-bit logits themselves are freed once the loss is computed (the
Trainer keeps only the loss). Backward of log_softmax then holds its saved output, the incoming gradient and
the outgoing one: 12·V per token at once. Measured in cpu-memory-measurement.md §2 (Temp = two fp32
logits-sized tensors on top of the saved one). A chunked (fused linear) cross entropy computes the loss and
the gradient of the hidden states chunk by chunk during forward: only ``chunk`` tokens of logits ever exist.
"""

from __future__ import annotations

from vramwise.estimate.plan import BATCH, LOSS_CHUNK, TOKENS, Rule

SOURCE = "transformers ForCausalLMLoss (fp32 upcast + cross_entropy); traced, notes §2"
CHUNKED = "chunked / fused linear cross entropy (Liger-style)"


def loss_rules(*, vocab: int, h: int, c: int, loss: str, flight: float, softcap: bool = False) -> tuple[Rule, Rule]:
    """(saved until backward, extra during the loss backward) per token on this GPU; the saved part for every
    micro-batch in flight."""
    many = f" x {flight:g} micro-batches" if flight != 1 else ""
    if loss == "chunked":
        saved = Rule(
            name="activations/loss",
            coef=h * c * flight,
            var=TOKENS,
            formula=lambda v: f"gradient of the hidden states computed in forward: T {v.T} x h {h} x {c} B{many}",
            source=CHUNKED,
        )
        temp = Rule(
            name="loss/backward",
            coef=12 * vocab,
            var=LOSS_CHUNK,
            formula=lambda v: f"one chunk: 12 B x {v.chunk} tokens x V {vocab} (fp32 logits, log-softmax, gradient)",
            source=CHUNKED,
        )
        return saved, temp
    per = 4 + (c if softcap else 0)
    capped = f" + tanh of the soft-capped logits x {c} B" if softcap else ""
    saved = Rule(
        name="activations/loss",
        coef=per * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"fp32 log-softmax: T {v.T} x V {vocab} x 4 B{capped}{many}",
        source=SOURCE + ("; Gemma 2 final_logit_softcapping" if softcap else ""),
    )
    temp = Rule(
        name="loss/backward",
        coef=8 * vocab,
        var=TOKENS,
        formula=lambda v: f"incoming and outgoing fp32 gradients of log-softmax: 2 x T {v.T} x V {vocab} x 4 B",
        source=SOURCE,
    )
    return saved, temp


CLASSIFIER = (
    "transformers loss_utils: ForTokenClassification (.float() then cross_entropy) and "
    "ForSequenceClassificationLoss (cross_entropy of the pooled (b, num_labels) logits)"
)


def classifier_loss_rules(*, labels: int, per_sequence: bool, flight: float) -> tuple[Rule, Rule]:
    """A classifier's loss: the log-softmax over ``labels`` outputs saved until backward, and its backward's two
    gradients, per token (token classification) or per sequence (sequence classification: only the pooled row
    enters the loss). fp32 throughout: ForTokenClassification upcasts; the pooled logits of a sequence
    classifier enter cross_entropy in the compute dtype, which autocast runs in fp32 (4 B counted either way:
    at most 2 B per label and sequence above a pure 16-bit run)."""
    many = f" x {flight:g} micro-batches" if flight != 1 else ""
    var, rows = (BATCH, "b") if per_sequence else (TOKENS, "T")
    saved = Rule(
        name="activations/loss",
        coef=4 * labels * flight,
        var=var,
        formula=lambda v: f"fp32 log-softmax: {rows} {v.b if per_sequence else v.T} x labels {labels} x 4 B{many}",
        source=CLASSIFIER,
    )
    temp = Rule(
        name="loss/backward",
        coef=8 * labels,
        var=var,
        formula=lambda v: (
            f"incoming and outgoing fp32 gradients: 2 x {rows} {v.b if per_sequence else v.T} x labels {labels} x 4 B"
        ),
        source=CLASSIFIER,
    )
    return saved, temp

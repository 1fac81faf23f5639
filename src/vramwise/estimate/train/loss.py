"""The loss region: logits, the fp32 cross entropy and its gradient, on the stage that holds the head.

transformers' ForCausalLMLoss upcasts the logits to fp32 and calls cross_entropy: log_softmax keeps its fp32
output (4·V per token) until backward; the 16-bit logits themselves are freed once the loss is computed (the
Trainer keeps only the loss). Backward of log_softmax then holds its saved output, the incoming gradient and
the outgoing one: 12·V per token at once. Measured in cpu-memory-measurement.md §2 (Temp = two fp32
logits-sized tensors on top of the saved one). A chunked (fused linear) cross entropy computes the loss and
the gradient of the hidden states chunk by chunk during forward: only ``chunk`` tokens of logits ever exist.
"""

from __future__ import annotations

from vramwise.estimate.plan import LOSS_CHUNK, TOKENS, Rule

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

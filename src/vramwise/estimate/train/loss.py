"""The loss region: logits, the fp32 cross entropy and its gradient, on the stage that holds the head.

transformers' ForCausalLMLoss upcasts the logits to fp32 and calls cross_entropy: log_softmax keeps its fp32
output (4·V per token) until backward; the 16-bit logits themselves are freed once the loss is computed (the
Trainer keeps only the loss). Backward of log_softmax then holds its saved output, the incoming gradient and
the outgoing one: 12·V per token at once. Measured in cpu-memory-measurement.md §2 (Temp = two fp32
logits-sized tensors on top of the saved one). A chunked (fused linear) cross entropy computes the loss and
the gradient of the hidden states chunk by chunk during forward: only ``chunk`` tokens of logits ever exist.
"""

from __future__ import annotations

from vramwise.estimate.term import Term

SOURCE = "transformers ForCausalLMLoss (fp32 upcast + cross_entropy); traced, notes §2"


def loss_terms(
    *, tokens: int, vocab: int, h: int, c: int, loss: str, chunk: int, softcap: bool = False
) -> tuple[Term, Term]:
    """(saved until backward, extra during the loss backward) for ``tokens`` tokens on this GPU."""
    if loss == "chunked":
        n = min(chunk, tokens)
        saved = Term(
            name="activations/loss",
            bytes=tokens * h * c,
            formula=f"gradient of the hidden states computed in forward: T {tokens} x h {h} x {c} B",
            source="chunked / fused linear cross entropy (Liger-style)",
        )
        temp = Term(
            name="loss/backward",
            bytes=12 * n * vocab,
            formula=f"one chunk: 12 B x {n} tokens x V {vocab} (fp32 logits, log-softmax, gradient)",
            source="chunked / fused linear cross entropy (Liger-style)",
        )
        return saved, temp
    per = 4 + (c if softcap else 0)
    saved = Term(
        name="activations/loss",
        bytes=per * tokens * vocab,
        formula=f"fp32 log-softmax: T {tokens} x V {vocab} x 4 B"
        + (f" + tanh of the soft-capped logits x {c} B" if softcap else ""),
        source=SOURCE + ("; Gemma 2 final_logit_softcapping" if softcap else ""),
    )
    temp = Term(
        name="loss/backward",
        bytes=8 * tokens * vocab,
        formula=f"incoming and outgoing fp32 gradients of log-softmax: 2 x T {tokens} x V {vocab} x 4 B",
        source=SOURCE,
    )
    return saved, temp

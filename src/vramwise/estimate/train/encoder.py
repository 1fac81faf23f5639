"""Training an encoder (BERT): its heads and its embedding norm, as transformers 5.24's modeling_bert.py runs them.

The layers are post-norm (``LayerNorm(x + sublayer(x))``), which keeps per layer what a pre-norm layer keeps:
each LayerNorm its input (the sum) with its mean and rstd, the linears their inputs, sdpa q, k, v, the output
and its log-sum-exp (activations.py); without a mask the bidirectional attention takes sdpa's kernel as a causal
one does. What an encoder adds (c = compute bytes; autocast runs LayerNorm and log_softmax in fp32):

  embeddings        BertEmbeddings sums the word, position and token-type lookups and normalises: the
                    LayerNorm keeps the sum (c·h) and its mean and rstd.
  masked LM head    BertOnlyMLMHead on every position: the transform's dense keeps its input (the encoder's
                    output), GELU its input, the LayerNorm its input, the decoder (tied to the word embeddings)
                    its input: 4·c·h per token. BertForMaskedLM calls CrossEntropyLoss on the logits as they
                    are (no fp32 upcast): log_softmax keeps its c·V output; its backward holds the incoming and
                    outgoing c·V gradients. Labels of -100 are ignored by the loss, but the logits are computed
                    on every position.
  pooled classifier BertPooler reads hidden_states[:, 0]: its dense keeps that slice, a view, so the whole last
                    hidden state (c·h per token) stays alive until backward; the pooled (b, h) tensors and the
                    (b, num_labels) loss are per sequence.
  token classifier  the classifier keeps its input (c·h per token), the loss is per token.
Checked against traced steps (tests/estimate/test_encoder_training.py).
"""

from __future__ import annotations

from vramwise.estimate.plan import BATCH, TOKENS, Rule
from vramwise.spec.model import ModelSpec
from vramwise.spec.traits import HeadKind

SRC_BERT = "transformers 5.24 models/bert/modeling_bert.py"


def embedding_norm_rule(spec: ModelSpec, c: int, amp: bool, flight: float) -> Rule:
    width = 4 if amp else c
    h = spec.hidden_size
    per = width * h + 2 * width
    return Rule(
        name="activations/embedding_norm",
        coef=per * flight,
        var=TOKENS,
        formula=lambda v: f"the embeddings' LayerNorm: input {width} x h {h} + mean and rstd, x T {v.T}",
        source=SRC_BERT + " BertEmbeddings.forward",
    )


def encoder_head_rules(spec: ModelSpec, c: int, amp: bool, flight: float) -> list[Rule]:
    """What an encoder's head keeps until backward (the loss's own tensors are ``mlm_loss_rules`` / loss.py)."""
    h, head = spec.hidden_size, spec.head
    if head is HeadKind.MASKED_LM:
        norm = (4 if amp else c) * (h + 2)
        per = 3 * c * h + norm
        return [
            Rule(
                name="activations/mlm_head",
                coef=per * flight,
                var=TOKENS,
                formula=lambda v: (
                    f"transform dense, GELU and decoder inputs 3 x {c} x h {h} + LayerNorm: {per:,} B x T {v.T}"
                ),
                source=SRC_BERT + " BertLMPredictionHead",
            )
        ]
    if head is HeadKind.SEQUENCE_CLASSIFICATION:
        return [
            Rule(
                name="activations/pooler",
                coef=c * h * flight,
                var=TOKENS,
                formula=lambda v: (
                    f"the last hidden state, kept through the pooler's view of its first token: T {v.T} x h {h} x {c} B"
                ),
                source=SRC_BERT + " BertPooler (hidden_states[:, 0])",
            ),
            Rule(
                name="activations/pooled",
                coef=2 * c * h * flight,
                var=BATCH,
                formula=lambda v: f"tanh output and the classifier's input: 2 x b {v.b} x h {h} x {c} B",
                source=SRC_BERT + " BertPooler, BertForSequenceClassification",
            ),
        ]
    return [
        Rule(
            name="activations/classifier_input",
            coef=c * h * flight,
            var=TOKENS,
            formula=lambda v: f"the classifier's input: T {v.T} x h {h} x {c} B",
            source=SRC_BERT + " BertForTokenClassification",
        )
    ]


def mlm_loss_rules(vocab: int, c: int, amp: bool, flight: float) -> tuple[Rule, Rule]:
    """BertForMaskedLM's CrossEntropyLoss over every position, in the logits' dtype (fp32 under autocast)."""
    w = 4 if amp else c
    saved = Rule(
        name="activations/loss",
        coef=w * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"log-softmax of the logits: T {v.T} x V {vocab} x {w} B (no fp32 upcast)",
        source=SRC_BERT + " BertForMaskedLM.forward (CrossEntropyLoss on prediction_scores)",
    )
    temp = Rule(
        name="loss/backward",
        coef=2 * w * vocab,
        var=TOKENS,
        formula=lambda v: f"incoming and outgoing gradients of log-softmax: 2 x T {v.T} x V {vocab} x {w} B",
        source=SRC_BERT + " BertForMaskedLM.forward",
    )
    return saved, temp


def has_encoder_head(spec: ModelSpec) -> bool:
    """A post-norm encoder's head (BERT: no final norm, whose saved input would hold the head's)."""
    return not spec.norm.final and spec.head in (
        HeadKind.MASKED_LM,
        HeadKind.SEQUENCE_CLASSIFICATION,
        HeadKind.TOKEN_CLASSIFICATION,
    )

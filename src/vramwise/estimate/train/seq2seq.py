"""Training an encoder-decoder (T5, mT5): what one step saves, as transformers 5.24's modeling_t5.py runs it.

The encoder reads ``seq`` tokens (s_e), the decoder the target's ``decoder_seq`` (s_d; T5ForConditionalGeneration
shifts the labels right into its inputs). Per token of its stack (c = compute bytes):

  T5LayerNorm       variance of an fp32 copy (4h, kept by pow; none in fp32), its bf16 input and rsqrt (kept by the
                    multiply, c·h + 4) and the normalised tensor (c·h, for the weight's gradient).
  attention         the linears' input (c·h), q, k, v and the output's copy for o (c·inner each);
                    eager: the softmax's output, in the compute dtype (c·heads·keys per query);
                    sdpa: the position bias rules out flash, and CUDA's memory-efficient kernel keeps its output and
                    log-sum-exp (c·inner + 4·heads) and the bias mask (shared by the encoder's layers; one per
                    decoder layer, where torch.where folds in the causal mask).
  cross-attention   the decoder's queries against the encoder's output: per decoder token q's input, q, the
                    output's copy and (eager) the softmax over s_e keys; per encoder token and decoder layer k and v
                    (2·c·inner), the encoder's output itself once (c·h, the k and v linears' input).
  feed-forward      ReLU keeps its output (wo's input): c·f; gated-gelu's gelu_new is a composite keeping x, tanh,
                    1 + tanh and 0.5·x, then its output, wi_1's output and the product: 7·c·f.
  position bias     the relative buckets of each stack, int64 (s, s), kept by the embedding lookup.
  dropout           (dropout_rate > 0) a 1-byte CUDA mask after every sublayer and the embeddings, after the
                    feed-forward's activation, and on the probabilities with eager attention (mask + dropped copy).
  LoRA (frozen base)  the linears keep no input for their weights; each adapter keeps its fp32 cast of its input
                    and x·A (peft Linear.forward); the norms keep no normalised tensor, the relative bias no
                    buckets, the head no input, and the first block's first norm nothing (no gradient below it).
  loss              BertForMaskedLM's pattern: CrossEntropyLoss on the (b·s_d, V) logits as they are, so log_softmax
                    keeps c·V per target token and its backward two more.
Checked against traced steps with eager attention (tests/estimate/test_seq2seq_training.py); CPU sdpa takes its
math path with a trainable bias, so the sdpa rule follows CUDA's kernel and is not traced.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.estimate.plan import BATCH, ONE, Rule
from vramwise.estimate.train.lora import LoraModule
from vramwise.spec.model import ModelSpec
from vramwise.workload import AttentionImpl, FsdpMode, LossImpl, PeftMethod, Precision, Recompute, TrainSetup
from vramwise.workload.options import AdapterDtype
from vramwise.workload.train import ImplConfig

SRC = "transformers 5.24 models/t5/modeling_t5.py (T5LayerNorm, T5Attention, T5DenseActDense, T5DenseGatedActDense)"
SRC_SDPA = "transformers integrations/sdpa_attention.py create_position_bias_mask; torch memory-efficient attention"


def check(spec: ModelSpec, setup: TrainSetup) -> None:
    """Refuse in one line what encoder-decoder training does not model."""
    par = setup.parallel
    for bad, field, allowed in (
        (par.tp * par.pp * par.cp > 1 or par.sp, "tp", "tp, pp and cp 1 (one model per GPU, data parallel)"),
        (par.fsdp != FsdpMode.NONE or par.zero == 3, "fsdp", "none, or ZeRO 1-2 (the T5 stacks are not sharded here)"),
        (setup.peft.method not in (PeftMethod.NONE, PeftMethod.LORA), "peft", "none or lora"),
        (setup.peft.lora_dropout > 0, "lora_dropout", "0"),
        (setup.recompute != Recompute.NONE, "recompute", "none"),
        (setup.loss != LossImpl.FULL, "loss", "full"),
        # fp16: from_pretrained keeps T5's wo in fp32 (_keep_in_fp32_modules), with its fp32 input copies
        (
            setup.precision.recipe in (Precision.AMP, Precision.AMP_FP16, Precision.FP16_MIXED),
            "precision",
            "fp32, bf16 or bf16-mixed (fp16 keeps T5's wo in fp32, not modelled in training)",
        ),
        (setup.attention == AttentionImpl.FLASH, "attention", "sdpa or eager (T5's position bias rules out flash)"),
        (setup.peft.freeze_layers > 0, "freeze_layers", "0"),
        # the implementation knobs change saved tensors this module does not model for T5's stacks
        (bool(_knob(setup)), _knob(setup), "transformers' eager kernels (its default)"),
        (setup.peft.adapter_dtype == AdapterDtype.BF16, "adapter_dtype", "auto or fp32 (peft's fp32 adapters)"),
    ):
        if bad:
            error = InvalidLayoutError if field in ("tp", "fsdp") else InvalidWorkloadError
            raise error(
                f"{field}: encoder-decoder training ({spec.name}) is modelled with {allowed}",
                field=field,
                allowed=allowed,
            )


def _knob(setup: TrainSetup) -> str:
    """The first implementation knob (a flat option name of ImplConfig) set away from its default."""
    default = ImplConfig()
    # keep_logits is the loop's, not a kernel: training.py _kept_logits refuses it for an encoder-decoder
    knobs = (f.name for f in fields(ImplConfig) if f.name != "keep_logits")
    return next((name for name in knobs if getattr(setup.impl, name) != getattr(default, name)), "")


@dataclass(frozen=True)
class _Saved:
    """Per-token bytes of T5's pieces for one setup: the compute width, whether the base trains, and which peft
    module names (q, k, v, o, wi, wi_0, wi_1, wo) carry LoRA adapters of rank r."""

    spec: ModelSpec
    c: int
    base: bool
    adapted: frozenset[str]
    r: int

    def norm(self) -> int:
        """T5LayerNorm: the fp32 copy (none in fp32), the input and rsqrt; the normalised tensor for its weight."""
        h, c = self.spec.hidden_size, self.c
        return (4 * h if c < 4 else 0) + c * h + 4 + (c * h if self.base else 0)

    def inputs(self, width: int, readers: tuple[str, ...], *, kept: bool = False) -> int:
        """One tensor of ``width`` read by the linears ``readers``: kept for their weights, or per LoRA adapter its
        fp32 cast (the tensor itself in fp32) and x·A (peft tuners/lora/layer.py Linear.forward)."""
        n = sum(1 for name in readers if name in self.adapted)
        if self.base:
            return 0 if kept else self.c * width
        shared = self.c * width if self.c == 4 and n and not kept else 0
        return shared + n * ((4 * width if self.c != 4 else 0) + 4 * self.r)

    def ffn(self) -> int:
        """ReLU keeps its output (wo's input); gelu_new's composite x, tanh, 1 + tanh and 0.5·x; a gated MLP also
        the activation's output and wi_1's (the product's factors), and wo's input when something reads it."""
        c, f, mlp = self.c, self.spec.mlp.intermediate_size, self.spec.mlp
        relu = mlp.activation == "relu"
        kept = 4 if mlp.activation == "gelu_new" else 1
        gated = 2 if mlp.gated else 0
        wo_input_kept = relu and not mlp.gated  # relu's saved output is wo's input
        wi = ("wi_0", "wi_1") if mlp.gated else ("wi",)
        h = self.spec.hidden_size
        return self.inputs(h, wi) + (kept + gated) * c * f + self.inputs(f, ("wo",), kept=wo_input_kept)

    def attention(self, keys: int, eager: bool, *, cross: bool = False) -> int:
        """Per query token: the input (self-attention: q, k and v read it), q, the probabilities (eager) or the
        kernel's output and log-sum-exp (sdpa), and o's input; k and v are counted per key token."""
        heads = self.spec.attention.num_heads
        inner = heads * self.spec.attention.head_dim
        c, h = self.c, self.spec.hidden_size
        scores = c * heads * keys if eager else c * inner + 4 * heads
        readers = ("q",) if cross else ("q", "k", "v")
        return self.inputs(h, readers) + c * inner + scores + self.inputs(inner, ("o",))


def activation_rules(spec: ModelSpec, setup: TrainSetup, c: int, lora: list[LoraModule]) -> list[Rule]:
    """The saved tensors of both stacks, per sequence (BATCH) and once (ONE): the plan is built per sequence
    length (training.py keys encoder-decoder plans on seq)."""
    ed = spec.encoder_decoder
    assert ed is not None
    base = not setup.peft.adapters
    t = _Saved(spec=spec, c=c, base=base, adapted=frozenset(m.name for m in lora), r=setup.peft.lora_r)
    h, heads = spec.hidden_size, spec.attention.num_heads
    inner = heads * spec.attention.head_dim
    f = spec.mlp.intermediate_size
    se, sd = setup.seq, setup.decoder_seq or setup.seq
    le, ld = ed.encoder_layers, spec.num_layers
    eager = setup.attention == AttentionImpl.EAGER
    kv = 2 * c * inner  # k and v of one layer, per key token
    enc_layer = 2 * t.norm() + t.attention(se, eager) + kv + t.ffn()
    dec_layer = 3 * t.norm() + t.attention(sd, eager) + kv + t.attention(se, eager, cross=True) + t.ffn()
    drop = spec.dropout > 0
    if drop:
        enc_layer += 2 * h + f + ((1 + c) * heads * se if eager else 0)
        dec_layer += 3 * h + f + ((1 + c) * heads * (sd + se) if eager else 0)
    # the encoder's output, read by every decoder layer's cross k and v: kept once for their weights, or by
    # each layer's adapters
    memory = c * h if base else sum(t.inputs(h, ("k", "v")) for _ in range(ld))
    head = c * h if base else 0  # lm_head's input, for its weight
    # with the base frozen nothing below the first block needs a gradient: its first norm keeps nothing
    first = 0 if base else t.norm()
    encoder = se * (le * enc_layer - first + t.norm() + memory + 8 + (2 * h if drop else 0) + ld * kv)
    decoder = sd * (ld * dec_layer - first + t.norm() + head + 8 + 16 + (2 * h if drop else 0))
    rules = [
        Rule(
            name="activations/encoder",
            coef=encoder,
            var=BATCH,
            formula=lambda v: (
                f"b {v.b} x s_e {se} x ({le} layers x {enc_layer:,} + norm, output, ids, the decoder's cross k and v "
                f"{ld} x {kv}) B"
            ),
            source=SRC,
        ),
        Rule(
            name="activations/decoder",
            coef=decoder,
            var=BATCH,
            formula=lambda v: f"b {v.b} x s_d {sd} x ({ld} layers x {dec_layer:,} + norm, head input, ids, labels) B",
            source=SRC,
        ),
    ]
    if base:  # the relative attention bias trains: its lookup keeps the buckets
        rules.append(
            Rule(
                name="activations/position_buckets",
                coef=8 * (se * se + sd * sd),
                var=ONE,
                formula=lambda v: f"int64 relative buckets: 8 x (s_e² {se}² + s_d² {sd}²) B",
                source=SRC + " T5Attention.compute_bias",
            )
        )
    if not eager:
        # the bias masks sdpa keeps: the encoder's (shared), each decoder layer's causal one, the cross zeros (shared)
        masks = c * heads * (se * se + ld * sd * sd + sd * se)
        rules.append(
            Rule(
                name="activations/position_bias_masks",
                coef=masks,
                var=ONE,
                formula=lambda v: f"{c} B x {heads} heads x (s_e² + {ld} x s_d² + s_d·s_e): float attn_bias masks",
                source=SRC_SDPA,
            )
        )
    return rules


def loss_rules(spec: ModelSpec, setup: TrainSetup, c: int) -> tuple[Rule, Rule]:
    """The logits' log-softmax over the target's tokens, in the compute dtype, and its backward."""
    sd, vocab = setup.decoder_seq or setup.seq, spec.vocab_size
    saved = Rule(
        name="activations/loss",
        coef=c * vocab * sd,
        var=BATCH,
        formula=lambda v: f"log-softmax of the logits: b {v.b} x s_d {sd} x V {vocab} x {c} B (no fp32 upcast)",
        source=SRC + " T5ForConditionalGeneration.forward (CrossEntropyLoss)",
    )
    temp = Rule(
        name="loss/backward",
        coef=2 * c * vocab * sd,
        var=BATCH,
        formula=lambda v: f"incoming and outgoing gradients of log-softmax: 2 x b {v.b} x s_d {sd} x V {vocab} x {c} B",
        source=SRC + " T5ForConditionalGeneration.forward",
    )
    return saved, temp

"""The backward's own temporaries at the two moments that can beat the loss backward when the loss is small
(a classifier's num_labels-wide loss, an encoder's pooled head): read off traced steps
(tests/estimate/test_encoder_training.py), op by op, of BERT and Llama classifiers at batch 8 x 512 tokens.

  the last layer's MLP backward  down_proj's backward makes the gradient of its input (c·i per token) while
                    every layer's activations are still held; a gated MLP's multiply then makes the gradients of
                    act(gate) and up while the product's saved copy is freed: two c·i tensors above the held
                    ones (one for a plain MLP), and down's weight gradient when it trains. The head's and the
                    final norm's saved tensors are freed by then.
  eager attention's backward  the last layer's matmul backward makes the gradient of the probabilities and
                    softmax's backward the gradient of the scores, each (b, heads, s, s), in the softmax's dtype
                    (fp32 for Llama's code, whose compute-dtype copy of the probabilities is freed first).
  the final RMSNorm's backward  LlamaRMSNorm computes in fp32 (hidden_states.to(torch.float32), pow, mean,
                    rsqrt): its composite backward holds four fp32 h-wide tensors per token at once (the upcast
                    gradient, pow's and mean's and the product's), three when the model is fp32 already (the
                    upcast is a no-op), on top of everything the forward saved but the loss. A LayerNorm's
                    backward is one fused kernel (native_layer_norm_backward): its output gradient only.
"""

from __future__ import annotations

from vramwise.estimate.plan import BATCH_SEQ_SEQ, ONE, TOKENS, Rule, Transients
from vramwise.estimate.term import PhaseKind
from vramwise.estimate.train.autocast import softmax_fp32
from vramwise.estimate.train.layout import Stage
from vramwise.estimate.train.recipe import Recipe
from vramwise.spec.model import ModelSpec
from vramwise.workload import AttentionImpl, FsdpMode, Recompute, TrainSetup

SRC = "traced backward (verify/trace.py), op by op: aten.mm (down_proj), aten.mul (gated MLP), RMSNorm's fp32 ops"


def layer_workspace(spec: ModelSpec, c: int, tp: int, grad_bytes: int, base_trains: bool) -> list[Rule]:
    """The last layer's MLP backward: gradients of down_proj's input (and of the gate's two factors)."""
    i = spec.mlp.intermediate_size // tp
    n = 2 if spec.mlp.gated else 1
    rules = [
        Rule(
            name="backward/mlp_grads",
            coef=n * c * i,
            var=TOKENS,
            formula=lambda v: (
                f"{n} x T {v.T} x intermediate {i} x {c} B: down_proj's input gradient"
                + (" and act(gate)'s and up's" if n == 2 else "")
            ),
            source=SRC,
        )
    ]
    if base_trains:
        h = spec.hidden_size
        rules.append(
            Rule(
                name="backward/down_weight_grad",
                coef=h * i * grad_bytes,
                var=ONE,
                formula=lambda v: f"down_proj's weight gradient h {h} x i {i} x {grad_bytes} B",
                source=SRC,
            )
        )
    return rules


def final_norm_workspace(spec: ModelSpec, c: int) -> Rule | None:
    """The final RMSNorm's fp32 composite backward (None for a LayerNorm or no final norm)."""
    if not spec.norm.final or spec.norm.kind == "layer":
        return None
    h, n = spec.hidden_size, 4 if c < 4 else 3
    return Rule(
        name="backward/final_norm",
        coef=n * 4 * h,
        var=TOKENS,
        formula=lambda v: f"{n} fp32 tensors x T {v.T} x h {h} x 4 B (RMSNorm's composite backward)",
        source=SRC,
    )


def attention_workspace(spec: ModelSpec, c: int, tp: int, cp: int, amp: bool = False) -> Rule:
    """Eager attention's backward: the gradients of the probabilities and of the scores, in the softmax's dtype;
    an fp32 softmax's compute-dtype copy of the probabilities (kept by the matmul) is freed before. The last
    layer's MLP tensors are freed by then too, which this leaves in (traced: up to 5% over). Context parallelism
    gives each GPU s / cp queries against all s keys. ``amp``: CUDA autocast, whose softmax is fp32 (autocast.py)."""
    heads = spec.attention.num_heads // tp
    fp32 = softmax_fp32(spec, amp)
    per = (8 - (c if c < 4 else 0)) if fp32 else 2 * c
    return Rule(
        name="backward/attention_scores",
        coef=per * heads / cp,
        var=BATCH_SEQ_SEQ,
        formula=lambda v: (
            f"gradients of the probabilities and scores: b {v.b} x {heads} heads x s {v.s}² x {per} B"
            + (f" / cp {cp}" if cp > 1 else "")
        ),
        source=SRC,
    )


# What the head and the final norm save: freed by the time the last layer's backward runs.
HEAD_SAVED = frozenset(
    (
        "activations/final_norm",
        "activations/mlm_head",
        "activations/pooler",
        "activations/pooled",
        "activations/classifier_input",
        "activations/lora_head",
        "activations/dora_head",
    )
)


def workspace_phases(
    spec: ModelSpec,
    setup: TrainSetup,
    stage: Stage,
    recipe: Recipe,
    held: tuple[list[int], list[int]],
    out: Transients,
) -> list[tuple[PhaseKind, list[int]]]:
    """Without FSDP or recompute: the last layer's MLP backward (and eager attention's), and the final norm's,
    whose temporaries can beat a small loss's backward. ``held``: the forward's transients without the head's and
    final norm's saved tensors (``HEAD_SAVED``), and with them."""
    layer_only, in_layers = held
    if setup.parallel.fsdp != FsdpMode.NONE or setup.recompute != Recompute.NONE or not layer_only:
        return []
    if spec.encoder_decoder is not None:  # T5's own norms and stacks: its loss backward is the traced peak
        return []
    phases = []
    last = stage.layers[-1] if stage.layers else None
    if last is not None and not (spec.moe and last in spec.moe.moe_layers):
        c, tp = recipe.compute, setup.parallel.tp
        rules = layer_workspace(spec, c, tp, recipe.grad, not setup.peft.adapters)
        phases.append((PhaseKind.BACKWARD_LAYER, layer_only + out.add(*rules)))
        if setup.attention == AttentionImpl.EAGER and spec.attention.kind != "mla":
            scores = attention_workspace(spec, c, tp, setup.parallel.cp, recipe.autocast_cache)
            phases.append((PhaseKind.BACKWARD_ATTENTION, layer_only + out.add(scores)))
    norm = final_norm_workspace(spec, recipe.compute) if stage.last else None
    if norm is not None:
        phases.append((PhaseKind.BACKWARD_HEAD, in_layers + out.add(norm)))
    return phases

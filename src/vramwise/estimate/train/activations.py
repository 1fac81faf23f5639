"""Activations autograd saves for backward, per token of one decoder layer, as transformers implements it.

Each entry is a tensor the backward of some op keeps (c = compute bytes, 4 for the fp32 parts):
  RMSNorm (Llama):  the fp32 copy of its input (4h), rsqrt (4), and, when its weight trains, the normalised
                    tensor (c·h); Gemma's norm works in fp32 throughout, so its normalised tensor is 4h.
  LayerNorm:        its input (c·h), mean and rstd (c each).
  linear input:     kept by the linear when its weight trains; a LoRA adapter keeps its own fp32 cast of it
                    (peft runs adapters in fp32) and the rank-r product x·A (4r), dropout adds mask + copy.
  attention (sdpa/flash): q and k after rotary, v, the output (c each) and the fp32 log-sum-exp (4 per head);
                    fused qkv projections keep the whole fused output alive through the v view.
  eager attention:  the fp32 softmax (4·s per head) and its cast back (c·s), k/v repeated for GQA.
  gated MLP:        gate, up, act(gate) (c·i each) and their product when down's weight trains.
  plain MLP:        the up output (kept by GELU/SiLU; ReLU keeps its output instead); GPT-2's gelu_new is
                    a Python composite that keeps four tensors.
  MoE (Mixtral-style, one loop over experts): router logits, fp32 softmax, top-k; per routed copy of a
                    token the gathered input, gate_up, act, product, expert output and its routing weight.
  dropout:          a 1-byte mask per element (CUDA's bool mask; the CPU kernel keeps a mask in the input
                    dtype, so CPU traces of dropout models read higher).
Derived from the saved-tensor lists and checked against traced steps (tests/estimate/test_train_vs_trace.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vramwise.estimate.sharding import kv_heads_per_gpu
from vramwise.estimate.train.lora import LoraModule
from vramwise.spec.model import ModelSpec

_SOFTMAX_IN_COMPUTE_DTYPE = frozenset({"gpt2"})


@dataclass(frozen=True, kw_only=True)
class Grads:
    """What needs gradients inside a layer: the base weights, and which groups carry LoRA adapters."""

    base: bool
    lora: tuple[LoraModule, ...] = ()
    lora_r: int = 0
    lora_dropout: bool = False

    def adapted(self, group: str) -> list[LoraModule]:
        return [m for m in self.lora if group in m.groups]


@dataclass(frozen=True, kw_only=True)
class Shape:
    """Per-rank widths: heads split by tp, the replicated parts split by sp."""

    c: int
    h: int
    heads: int
    kv_heads: int
    head_dim: int
    tp: int
    sp: bool
    kv_len: int  # keys each query attends to (the sequence, or the window)
    amp: bool  # fp32 weights under autocast: norms and the residual stream stay fp32, each matmul casts


@dataclass
class Saved:
    """Per-token bytes of one layer, by name."""

    items: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, n: float) -> None:
        if n:
            self.items[name] = self.items.get(name, 0) + n

    @property
    def total(self) -> float:
        return sum(self.items.values())


def _norm(out: Saved, spec: ModelSpec, s: Shape, g: Grads, name: str) -> None:
    rep = s.tp if s.sp else 1
    if spec.norm.kind == "layer":
        width = 4 if s.amp else s.c  # autocast runs layer_norm in fp32
        out.add(name, (width * s.h + 2 * width) / rep)  # input, mean and rstd
        return
    gemma = spec.model_type.startswith("gemma")
    out.add(name, (4 * s.h + 4) / rep)  # fp32 input copy (pow, mul) and rsqrt
    if g.base:
        out.add(name, (4 if gemma or s.amp else s.c) * s.h / rep)  # normalised, for the weight's gradient


def _linear_input(
    out: Saved,
    s: Shape,
    g: Grads,
    name: str,
    width: float,
    groups: tuple[str, ...],
    rep: int,
    *,
    kept: bool = False,
    readers: int = 1,
) -> None:
    """Input of the linears ``groups`` (one shared tensor of ``width``), kept for their weight or adapters.

    ``kept``: another op's backward already holds that tensor, so only the adapters' copies add to it.
    ``readers``: separate modules reading it; under autocast each keeps its own 16-bit cast of an fp32 input.
    """
    adapters = {m.name: m for grp in groups for m in g.adapted(grp)}
    if not kept and (g.base or (adapters and s.c == 4)):
        out.add(name, s.c * width / rep * (readers if s.amp else 1))
    for _ in adapters.values():
        if s.amp:
            out.add("lora", 2 * width / rep + 2 * g.lora_r)  # autocast's 16-bit casts of x and x·A
        elif g.lora_dropout:
            out.add("lora", 5 * width / rep)  # dropout mask (1) + dropped copy (4, fp32)
        elif s.c != 4:
            out.add("lora", 4 * width / rep)  # peft casts the input to the adapter's fp32
        out.add("lora", 4 * g.lora_r)  # x·A, kept by B


def _attention(out: Saved, spec: ModelSpec, s: Shape, g: Grads, attention: str, recompute: str) -> None:
    att, c, d = spec.attention, s.c, s.head_dim
    q, kv = s.heads * d, s.kv_heads * d
    fused = spec.model_type in ("phi3", "gpt2", "gpt_neox", "falcon")
    rotary = spec.model_type not in ("gpt2", "opt")
    rep = s.tp if s.sp else 1
    readers = 1 if fused else 2 if att.kind == "mla" else 3
    _linear_input(
        out, s, g, "attention/input", s.h, ("attention.q", "attention.k", "attention.v"), rep, readers=readers
    )
    if att.qk_norm != "none":
        out.add("attention/qk_norm", (4 + (c if g.base else 0)) * (q + kv) + 4 * (s.heads + s.kv_heads))
    if fused:
        # The fused projection's output stays alive (v is a view of it); rotary makes new q and k.
        out.add("attention/qkv", c * (q + 2 * kv) + (c * (q + kv) if rotary else 0))
    else:
        out.add("attention/qkv", c * (q + 2 * kv))
    if attention == "eager":
        rep_kv = 2 * (q - kv) if s.heads != s.kv_heads else 0  # repeat_kv copies for GQA
        out.add("attention/qkv", c * rep_kv)
        if recompute != "selective":
            probs = s.heads * s.kv_len
            # Llama-style eager attention takes the softmax in fp32 and casts back; GPT-2 stays in c.
            fp32_softmax = spec.model_type not in _SOFTMAX_IN_COMPUTE_DTYPE
            cast = c if c != 4 and fp32_softmax else 0
            soft = 4 if fp32_softmax else c
            if spec.attention_dropout:
                out.add("attention/scores", probs * (soft + 1 + c))  # softmax, mask, dropped copy
            else:
                out.add("attention/scores", probs * (soft + cast))  # softmax and its cast back
        out.add("attention/output", c * q)  # transpose(1, 2).contiguous() copy, read by o_proj
    else:
        out.add("attention/output", c * q + 4 * s.heads)  # kernel output + fp32 log-sum-exp
    _linear_input(out, s, g, "attention/o_input", q, ("attention.o",), 1, kept=True)
    if spec.dropout:
        out.add("dropout", s.h / rep)


def _mlp(out: Saved, spec: ModelSpec, s: Shape, g: Grads) -> None:
    c, mlp = s.c, spec.mlp
    i = mlp.intermediate_size / s.tp
    rep = s.tp if s.sp else 1
    readers = 2 if mlp.gated and spec.model_type != "phi3" else 1
    _linear_input(out, s, g, "mlp/input", s.h, ("mlp.gate", "mlp.up"), rep, readers=readers)
    if mlp.gated:
        out.add("mlp/intermediate", 3 * c * i)  # gate, up, act(gate)
        _linear_input(out, s, g, "mlp/intermediate", i, ("mlp.down",), 1)
    else:
        act = mlp.activation
        kept = 4 if act == "gelu_new" else 1  # gelu_new: x, tanh, 0.5x, 1 + tanh; others: x (or relu's output)
        out.add("mlp/intermediate", kept * c * i)
        _linear_input(out, s, g, "mlp/intermediate", i, ("mlp.down",), 1, kept=act == "relu")
    if spec.dropout:
        out.add("dropout", s.h / rep)


def _moe(out: Saved, spec: ModelSpec, s: Shape, g: Grads) -> None:
    moe = spec.moe
    assert moe is not None
    c, k, e = s.c, moe.top_k, moe.num_experts
    rep = s.tp if s.sp else 1
    _linear_input(out, s, g, "experts/input", s.h, ("experts_shared.gate", "experts_shared.up"), rep)
    out.add("experts/router", 4 * e + 4 * k + 8 * k + 4)  # fp32 softmax, top-k values and indices, their sum
    i = moe.expert_intermediate_size / s.tp
    per_copy = (c * s.h if g.base else 0) + 3 * c * i + (c * i if g.base else 0) + c * s.h + 4
    out.add("experts/routed", k * per_copy)
    if moe.shared_intermediate_size:
        si = moe.shared_intermediate_size / s.tp
        out.add("experts/shared", 3 * c * si + (c * si if g.base else 0))
        if moe.shared_expert_gate:
            out.add("experts/shared", c * s.h + 4)


def layer_saved(
    spec: ModelSpec,
    *,
    layer: int,
    c: int,
    grads: Grads,
    attention: str,
    recompute: str,
    seq: int,
    tp: int,
    sp: bool,
    amp: bool = False,
) -> Saved:
    """Bytes per token that layer ``layer`` keeps from its forward until its backward."""
    att = spec.attention
    window = att.sliding_window if spec.layer_attention(layer) == "sliding" else None
    if att.kind == "mla" and att.mla:
        m = att.mla
        heads, kv_heads, head_dim = att.num_heads // tp, att.num_heads // tp, m.qk_nope_head_dim + m.qk_rope_head_dim
    else:
        heads, kv_heads, head_dim = att.num_heads // tp, kv_heads_per_gpu(spec, tp), att.head_dim
    shape = Shape(
        c=c,
        h=spec.hidden_size,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        tp=tp,
        sp=sp,
        kv_len=min(seq, window) if window else seq,
        amp=amp,
    )
    out = Saved()
    for _ in range(spec.norm.per_layer):
        _norm(out, spec, shape, grads, "norms")
    _attention(out, spec, shape, grads, attention, recompute)
    is_moe = spec.moe is not None and layer in spec.moe.moe_layers
    if is_moe:
        _moe(out, spec, shape, grads)
    else:
        _mlp(out, spec, shape, grads)
    return out

"""Activations autograd saves for backward, per token of one decoder layer, as transformers implements it.

Each entry is a tensor the backward of some op keeps (c = compute bytes, 4 for the fp32 parts):
  RMSNorm (Llama):  the fp32 copy of its input (4h), rsqrt (4), and, when its weight trains, the normalised
                    tensor (c·h); Gemma's norm works in fp32 throughout, so its normalised tensor is 4h.
  LayerNorm:        its input (c·h), mean and rstd (c each).
  linear input:     kept by the linear when its weight trains; a LoRA adapter keeps its own fp32 cast of it
                    (peft runs adapters in fp32) and the rank-r product x·A (4r), dropout adds mask + copy.
  attention (sdpa/flash): q after rotary, k and v as the KV cache's copies (transformers fills a cache in
                    training too), the output (c each) and the fp32 log-sum-exp (4 per head); without rotary,
                    a fused qkv projection stays alive through the q view.
  eager attention:  the fp32 softmax (4·s per head) and its cast back (c·s), k/v repeated for GQA; families
                    whose softmax runs in the compute dtype get the fp32 one too under CUDA autocast
                    (autocast.py: softmax is on CUDA's fp32 list, not the CPU's). Before torch 1.11 the
                    softmax's backward node also keeps its input, the masked scores (--torch-version).
  gated MLP:        gate, up, act(gate) (c·i each) and their product when down's weight trains.
  plain MLP:        the up output (kept by GELU/SiLU; ReLU keeps its output instead); GPT-2's gelu_new is
                    a Python composite that keeps four tensors.
  MoE (Mixtral-style, one loop over experts): router logits, fp32 softmax, top-k; per routed copy of a
                    token the gathered input, gate_up, act, product, expert output and its routing weight.
  dropout:          a 1-byte mask per element (CUDA's bool mask; the CPU kernel keeps a mask in the input
                    dtype, so CPU traces of dropout models read higher).
Derived from the saved-tensor lists and checked against traced steps (tests/estimate/test_train_vs_trace.py).
Fused kernels (--norm-impl / --mlp-impl fused, Liger-Kernel): LigerRMSNormFunction saves its input X, the weight and
the fp32 rstd per row (ops/rms_norm.py rms_norm_forward, save_for_backward(X, W, RSTD)); LigerSiLUMulFunction and
LigerGELUMulFunction save their two inputs a (gate) and b (up) (ops/swiglu.py, ops/geglu.py) and recompute the
activation in backward. Routed experts keep transformers' code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vramwise.estimate.sharding import kv_heads_per_gpu
from vramwise.estimate.train.autocast import gelu_new_amp, softmax_fp32
from vramwise.estimate.train.lora import LoraModule
from vramwise.estimate.train.peft_extras import dora_saved, ia3_saved
from vramwise.estimate.train.peft_methods import Ia3Module
from vramwise.spec.model import ModelSpec

# Family behaviour (fused projections, fp32 norm multiply, softmax dtype, ...) comes from spec.traits,
# which the adapters set and spec/traits.py documents with its transformers sources.


@dataclass(frozen=True, kw_only=True)
class Grads:
    """What needs gradients inside a layer: the base weights, and which groups carry LoRA adapters."""

    base: bool
    lora: tuple[LoraModule, ...] = ()
    lora_r: int = 0
    lora_dropout: bool = False
    adapter: int = 4  # bytes per adapter element: peft's fp32, or bf16 (--adapter-dtype)
    # a frozen LLM.int8() base keeps its input A (bitsandbytes autograd/_functions.py MatMul8bitLt.forward:
    # ctx.tensors = (CAt, subA, A) whenever A needs a gradient; CAt is None for a frozen weight; subA, the outlier
    # columns above llm_int8_threshold (6.0), depends on the data and is not counted)
    inputs_kept: bool = False
    dora: bool = False  # DoRA: each adapter also keeps the base output and its own (peft_extras.py)
    ia3: tuple[Ia3Module, ...] = ()  # IA3's scaled modules (peft_extras.py)

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
    fused_norm: bool = False  # Liger's RMSNorm kernel: saves its input and the fp32 rstd only
    fused_mlp: bool = False  # Liger's SwiGLU/GeGLU kernel: saves gate and up only
    compiled: bool = False  # torch.compile per layer: inductor recomputes layout copies (measured, see knobs.py)
    # bytes per score element of eager softmax's input, kept by torch < 1.11's SoftmaxBackward0 (0: not kept;
    # workload/train.py ImplConfig.softmax_keeps_input has the source)
    softmax_input: int = 0
    kv_to_heads: bool = False  # k and v copied to every query head before the kernel (torchtune's attention)
    rope_gather: bool = False  # torchtune's rotary embedding gathers its cache by input_pos (TORCHTUNE_ROPE_GATHER)


@dataclass
class Saved:
    """Per-token bytes of one layer, by name."""

    items: dict[str, float] = field(default_factory=dict)
    # each ``add`` in the order the forward saves it: the tensors the allocator replay allocates one by one
    # (estimate/train/allocation.py; an ``add`` of a tensor with its small companion, such as rsqrt, is one)
    pieces: list[float] = field(default_factory=list)

    def add(self, name: str, n: float) -> None:
        if n:
            self.items[name] = self.items.get(name, 0) + n
            self.pieces.append(n)

    @property
    def total(self) -> float:
        return sum(self.items.values())


def _norm(out: Saved, spec: ModelSpec, s: Shape, g: Grads, name: str) -> None:
    rep = s.tp if s.sp else 1
    if spec.norm.kind == "layer":
        width = 4 if s.amp else s.c  # autocast runs layer_norm in fp32
        out.add(name, (width * s.h + 2 * width) / rep)  # input, mean and rstd
        return
    if s.fused_norm:
        # Liger LigerRMSNormFunction (ops/rms_norm.py): save_for_backward(X, W, RSTD), RSTD fp32 per row
        out.add(name, ((4 if s.amp else s.c) * s.h + 4) / rep)
        return
    fp32 = spec.traits.norm_weight_fp32 or s.amp
    out.add(name, (4 * s.h + 4) / rep)  # fp32 input copy (pow, mul) and rsqrt
    if g.base:
        out.add(name, (4 if fp32 else s.c) * s.h / rep)  # normalised, for the weight's gradient


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
    a = g.adapter
    # adapters in the input's own dtype keep the input itself (peft's cast is a no-op), shared like a weight's
    same = bool(adapters) and s.c == a and not s.amp
    if not kept and (g.base or same or g.inputs_kept):
        out.add(name, s.c * width / rep * (readers if s.amp else 1))
    for _ in adapters.values():
        if s.amp:
            out.add("lora", 2 * width / rep + 2 * g.lora_r)  # autocast's 16-bit casts of x and x·A
        elif g.lora_dropout:
            out.add("lora", (1 + a) * width / rep)  # dropout mask (1) + dropped copy in the adapter dtype
        elif s.c != a:
            out.add("lora", a * width / rep)  # peft casts the input to the adapter's dtype
        out.add("lora", a * g.lora_r)  # x·A, kept by B
    if g.dora:
        for m in adapters.values():
            out.add("dora", dora_saved(m, c=s.c, amp=s.amp, dropout=g.lora_dropout))


# torchtune's MultiHeadAttention.forward (modules/attention.py at 30b8519, 1814feb and v0.7.0 bd2a0fc7) brings a
# GQA model's k and v to every query head before the kernel: ``k.unsqueeze(2).expand(b, n_kv, q_per_kv, s, d)
# .flatten(1, 2)`` (30b8519: ``expand`` then ``reshape``). Flattening an expanded tensor cannot be a view, so each
# is a new (b, n_h, s, d) tensor, and the kernel saves those for its backward: flex_attention with the packed
# BlockMask (modules/attention_utils.py _sdpa_or_flex_attention: FlexAttention's autograd saves query, key, value,
# out, logsumexp; compile_friendly_flex_attention is torch.compiler.disable'd, so under compile=True the copies
# are a compiled graph's outputs, not recomputed) or sdpa without a mask. The un-expanded k (rotary's output) and
# v (a view of v_proj's output) are then kept by nothing: expand's backward is a sum that saves no input. With as
# many KV heads as query heads nothing is copied. Unpacked under compile=True inductor's partitioner may recompute
# the copies instead (sdpa inside the graph); kept here, the larger of the two.
TORCHTUNE_KV_COPY = "torchtune modules/attention.py MultiHeadAttention.forward (expand + flatten of k and v)"

# torchtune's rotary embedding (models/llama3_1/_position_embeddings.py Llama3ScaledRoPE.forward, and
# modules/position_embeddings.py RotaryPositionalEmbeddings.forward, at 30b8519, 1814feb and bd2a0fc7):
# ``rope_cache = self.cache[:seq_len] if input_pos is None else self.cache[input_pos]``. A packed batch carries
# input_pos (datasets/_packed.py PackedDataset, data/_collate.py padded_collate_packed), so each call, q's and k's
# in every layer, indexes the fp32 (max_seq_len, head_dim/2, 2) cache into a new (b, s, head_dim/2, 2) tensor:
# head_dim x 4 B per token. ``xshaped[..., 0] * rope_cache[..., 0]`` and the three other products save their
# rope_cache operand (the x operand requires grad, the cache does not), so each gathered tensor lives until the
# layer's backward. Unpacked, ``self.cache[:seq_len]`` is a view of the buffer. Under compile inductor lowers the
# index as a load fused into the rotation's kernel, which recomputes it in backward: not counted there.
TORCHTUNE_ROPE_GATHER = "torchtune Llama3ScaledRoPE.forward / RotaryPositionalEmbeddings.forward: cache[input_pos]"


def _attention(out: Saved, spec: ModelSpec, s: Shape, g: Grads, attention: str, recompute: str) -> None:
    att, c, d = spec.attention, s.c, s.head_dim
    q, kv = s.heads * d, s.kv_heads * d
    fused, rotary = spec.traits.fused_qkv, spec.traits.rotary
    rep = s.tp if s.sp else 1
    readers = 1 if fused else 2 if att.kind == "mla" else 3
    _linear_input(
        out, s, g, "attention/input", s.h, ("attention.q", "attention.k", "attention.v"), rep, readers=readers
    )
    if att.qk_norm != "none":
        # fp32 input copy and rsqrt per head; the normalised tensor for the weight (fp32 in Gemma's norm)
        normalised = (4 if spec.traits.norm_weight_fp32 else c) if g.base else 0
        if s.fused_norm:  # Liger's RMSNorm replaces every RMSNorm class of the family, q/k norms too
            out.add("attention/qk_norm", c * (q + kv) + 4 * (s.heads + s.kv_heads))
        else:
            out.add("attention/qk_norm", (4 + normalised) * (q + kv) + 4 * (s.heads + s.kv_heads))
    # In training transformers still fills a DynamicCache (use_cache defaults to true without checkpointing):
    # its torch.cat hands attention fresh copies of k and v. q is rotary's new tensor, or, without rotary, a
    # view that keeps the whole fused projection output alive.
    if spec.traits.kv_broadcast:
        kv = q  # Falcon broadcasts its KV heads to every query head before calling the kernel
    if s.kv_to_heads:
        kv = q  # TORCHTUNE_KV_COPY: the kernel keeps the copies at every query head, in place of k and v
    if s.rope_gather and rotary:
        out.add("attention/rope_gather", 2 * 4 * d)  # TORCHTUNE_ROPE_GATHER: q's and k's gathered fp32 cache rows
    out.add("attention/qkv", c * ((q + 2 * kv) if fused and not rotary else q) + c * 2 * kv)
    if attention == "eager":
        rep_kv = 2 * (q - kv) if s.heads != s.kv_heads else 0  # repeat_kv copies for GQA
        out.add("attention/qkv", c * rep_kv)
        _scores(out, spec, s, recompute)
        out.add("attention/output", c * q)  # transpose(1, 2).contiguous() copy, read by o_proj
    else:
        out.add("attention/output", c * q + 4 * s.heads)  # kernel output + fp32 log-sum-exp
        if spec.traits.rotary_cat_copy and not s.compiled:
            out.add("attention/output", c * q)  # q from torch.cat is (b, a, s, d)-contiguous: o_proj's copy
    _linear_input(out, s, g, "attention/o_input", q, ("attention.o",), 1, kept=True)
    if spec.dropout:
        out.add("dropout", s.h / rep)


def _scores(out: Saved, spec: ModelSpec, s: Shape, recompute: str) -> None:
    """Eager attention's s² tensors: the softmax (fp32 for Llama-style code) and its cast back to c."""
    if recompute == "selective":
        return
    probs = s.heads * (s.kv_len + (1 if spec.attention.sinks else 0))  # a sink is one more column
    if spec.attention.sinks:
        out.add("attention/scores", 8 * s.heads)  # int64 argmax of the max-subtraction, per query
    if spec.attention.logit_softcap:
        out.add("attention/scores", probs * s.c)  # tanh(scores / cap), kept for its backward
    # torch < 1.11: the softmax's input (the masked scores) is saved beside its output, allocated before it
    out.add("attention/scores", probs * s.softmax_input)
    # fp32 when the family upcasts, or under CUDA autocast (softmax is fp32_set_opt_dtype there: autocast.py)
    fp32_softmax = softmax_fp32(spec, s.amp)
    soft = 4 if fp32_softmax else s.c
    cast = s.c if s.c != 4 and fp32_softmax else 0
    if spec.attention_dropout:
        out.add("attention/scores", probs * (soft + 1 + s.c))  # softmax, mask, dropped copy
    else:
        out.add("attention/scores", probs * (soft + cast))


def _mla_attention(out: Saved, spec: ModelSpec, s: Shape, g: Grads, attention: str, recompute: str) -> None:
    """DeepSeek's multi-head latent attention as transformers runs it in training (the latent is decompressed).

    q and k come out of ``torch.cat`` (nope and rotary parts), v is the KV cache's copy of kv_b's output; the
    latent norms keep their fp32 inputs. Different q/k and v head dims rule out flash: on CUDA sdpa takes the
    memory-efficient kernel (q, k, v, output, log-sum-exp); the CPU falls back to its math path instead.
    """
    m, c, a = spec.attention.mla, s.c, s.heads
    assert m is not None
    qk, vd = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    rep = s.tp if s.sp else 1
    first = ("attention.q_a", "attention.q", "attention.kv_a")
    _linear_input(out, s, g, "attention/input", s.h, first, rep, readers=2)
    if m.q_lora_rank:
        out.add("attention/latent_norms", 4 * m.q_lora_rank + 4 + (c * m.q_lora_rank if g.base else 0))
        _linear_input(out, s, g, "attention/latent_norms", m.q_lora_rank, ("attention.q_b",), 1)
    out.add("attention/latent_norms", 4 * m.kv_lora_rank + 4 + (c * m.kv_lora_rank if g.base else 0))
    _linear_input(out, s, g, "attention/latent_norms", m.kv_lora_rank, ("attention.kv_b",), 1)
    out.add("attention/qkv", c * a * (2 * qk + vd))
    if attention == "eager":
        _scores(out, spec, s, recompute)
        out.add("attention/output", c * a * vd)  # transpose(1, 2).contiguous() copy, read by o_proj
    else:
        # kernel output + fp32 log-sum-exp; q from cat is (b, a, s, d)-contiguous, so o_proj needs a copy
        out.add("attention/output", 2 * c * a * vd + 4 * a)
    _linear_input(out, s, g, "attention/o_input", a * vd, ("attention.o",), 1, kept=True)


def _mlp(out: Saved, spec: ModelSpec, s: Shape, g: Grads) -> None:
    c, mlp = s.c, spec.mlp
    i = mlp.intermediate_size / s.tp
    rep = s.tp if s.sp else 1
    readers = 2 if mlp.gated and not spec.traits.fused_gate_up else 1
    # A parallel block with a single norm feeds attention and MLP the same tensor, already kept there.
    shared = spec.parallel_block and spec.norm.per_layer == 1
    _linear_input(out, s, g, "mlp/input", s.h, ("mlp.gate", "mlp.up"), rep, readers=readers, kept=shared)
    if mlp.gated:
        # gate, up, act(gate); Liger's LigerSiLUMulFunction / LigerGELUMulFunction save only gate and up
        out.add("mlp/intermediate", (2 if s.fused_mlp else 3) * c * i)
        _linear_input(out, s, g, "mlp/intermediate", i, ("mlp.down",), 1)
    else:
        act = mlp.activation
        # gelu_new: x, tanh, 0.5x, 1 + tanh; others: x (or relu's output). Under CUDA autocast pow casts x to fp32
        # and keeps that copy, and tanh and 1 + tanh follow it in fp32; only 0.5x stays in c (autocast.py)
        kept = (gelu_new_amp(c) if s.amp else 4 * c) if act == "gelu_new" else c
        out.add("mlp/intermediate", kept * i)
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
    if spec.traits.router_input_fp32:
        out.add("experts/router", 4 * s.h)  # DeepSeek routes in fp32: a copy of the input
    i = moe.expert_intermediate_size / s.tp
    kept = spec.traits.expert_intermediates
    per_copy = (c * s.h if g.base else 0) + kept * c * i + (c * i if g.base else 0) + c * s.h + 4
    out.add("experts/routed", k * per_copy)
    if moe.shared_intermediate_size:
        si = moe.shared_intermediate_size / s.tp
        out.add("experts/shared", (2 if s.fused_mlp else 3) * c * si + (c * si if g.base else 0))
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
    fused_norm: bool = False,
    fused_mlp: bool = False,
    compiled: bool = False,
    litgpt: bool = False,
    softmax_input: int = 0,
    kv_to_heads: bool = False,
    rope_gather: bool = False,
) -> Saved:
    """Bytes per token that layer ``layer`` keeps from its forward until its backward (``fused_*``: Liger's
    kernels instead of transformers' eager modules; ``litgpt``: LitGPT's own model code, litgpt_code.py;
    ``kv_to_heads``: torchtune's attention, see TORCHTUNE_KV_COPY; ``rope_gather``: TORCHTUNE_ROPE_GATHER)."""
    att = spec.attention
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
        # transformers masks a sliding window in training rather than skipping keys: eager keeps all of them
        kv_len=seq,
        amp=amp,
        fused_norm=fused_norm or compiled,
        fused_mlp=fused_mlp or compiled,
        compiled=compiled,
        softmax_input=softmax_input,
        kv_to_heads=kv_to_heads,
        rope_gather=rope_gather,
    )
    if litgpt:
        from vramwise.estimate.train.litgpt_code import litgpt_layer_saved  # it imports this module's helpers

        return litgpt_layer_saved(spec, shape, grads)
    out = Saved()
    for n in range(spec.norm.per_layer):
        if n == 1 and spec.parallel_block and spec.norm.kind == "layer":
            # GPT-NeoX / Falcon: both norms read the same input, so the second adds only its mean and rstd
            width = 4 if shape.amp else c
            out.add("norms", 2 * width / (tp if sp else 1))
        else:
            _norm(out, spec, shape, grads, "norms")
    if att.kind == "mla":
        _mla_attention(out, spec, shape, grads, attention, recompute)
    else:
        _attention(out, spec, shape, grads, attention, recompute)
    is_moe = spec.moe is not None and layer in spec.moe.moe_layers
    if is_moe:
        _moe(out, spec, shape, grads)
    else:
        _mlp(out, spec, shape, grads)
    out.add("ia3", ia3_saved(grads.ia3, c=c))
    return out

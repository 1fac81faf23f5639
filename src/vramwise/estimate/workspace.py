"""Inference activation workspace: the largest set of tensors live inside one layer during a forward.

No autograd state is kept at inference, so only one layer's temporaries exist at a time. The live sets
below follow the transformers forward of a pre-norm decoder (T = tokens in the forward, c = compute bytes);
besides the layer's own tensors, the model keeps its input embeddings and the caller keeps the layer's
input alive for the whole layer:
  attention: embeddings, layer input, norm output (3·T·h·c), q/k/v and their rotary copies
             (2·T·(a + 2·n_kv)·d·c / t), the attention output (T·a·d·c / t), and for eager attention only
             the scores: QKᵀ in c bytes, its fp32 softmax and the cast back (b·(a/t)·s_q·s_kv·(2c + 4));
             SDPA/flash kernels never materialise the s² matrix.
  MLP:       embeddings, layer input, residual, norm output (4·T·h·c) and, gated, act(gate), up and their
             product (3·T·i·c / t; Phi-3's fused gate_up four); plain, the up projection and its activation
             (2·T·i·c / t; GPT-2's composite gelu_new holds four). MoE: the top-k routed copies.
  mask:      with a sliding window shorter than the keys (and no flash-attention), a boolean b·s_q·s_kv mask.
Checked against traced prefills (tests/estimate/test_infer_vs_trace.py).
"""

from __future__ import annotations

import functools

from vramwise.estimate.kv_cache import sliding_layers
from vramwise.estimate.plan import BATCH, Rule, Vars
from vramwise.estimate.sharding import kv_heads_per_gpu
from vramwise.estimate.ssm_state import with_mamba
from vramwise.spec.model import ModelSpec
from vramwise.spec.ssm import attention_layer_count
from vramwise.spec.traits import Positions
from vramwise.workload import AttentionImpl


@functools.lru_cache(maxsize=1024)
def _attention_live(spec: ModelSpec, tp: int) -> tuple[int, str]:
    """Elements live per token inside attention, and their breakdown."""
    att, h = spec.attention, spec.hidden_size
    heads = att.num_heads // tp
    if att.kind == "mla" and att.mla:
        m = att.mla
        # Prefill decompresses the latent: per head q and k of nope+rope dims, v of v_head_dim.
        qkv = heads * (2 * (m.qk_nope_head_dim + m.qk_rope_head_dim) + m.v_head_dim)
        out = heads * m.v_head_dim
    else:
        qkv = (heads + 2 * kv_heads_per_gpu(spec, tp)) * att.head_dim
        out = heads * att.head_dim
    if spec.traits.positions is Positions.ALIBI:
        # BloomAttention: q, k and v are views of the fused output; k and v enter the cache, q is reshaped to
        # (b·a, s, d), a copy for b > 1 (counted whatever b); the context is made once the scores are freed
        return 3 * h + qkv + out, f"3·h {3 * h} + fused qkv {qkv} + q copy {out}"
    return 3 * h + 2 * qkv + out, f"3·h {3 * h} + 2·qkv {2 * qkv} + out {out}"


@functools.lru_cache(maxsize=1024)
def _mlp_live(spec: ModelSpec, tp: int) -> tuple[int, str]:
    """Elements live per token inside the MLP, and their breakdown."""
    h, mlp, moe = spec.hidden_size, spec.mlp, spec.moe
    per_i = 3 if mlp.gated else 4 if mlp.activation == "gelu_new" else 2
    if mlp.gated and spec.traits.fused_gate_up:
        per_i = 4  # one fused gate_up output (2i) stays alive beside act(gate) and the product
    if mlp.activation == "bloom_gelu":
        # modeling_bloom.bloom_gelu_forward: x * 0.5 * (1.0 + tanh(0.79788456 * x * (1 + 0.044715 * x * x)));
        # when 0.044715 * x * x is formed, x, x * 0.5, 0.79788456 * x, 0.044715 * x and the product are live
        per_i = 5
    widths = []
    if spec.dense_layers:
        widths.append(("dense", per_i * mlp.intermediate_size // tp))
    if moe and moe.moe_layers:
        # transformers' grouped_mm experts compute gate and up as one fused output: 2i + act + product per copy
        per_copy = per_i + 1 if mlp.gated else per_i
        routed = moe.top_k * per_copy * moe.expert_intermediate_size // tp
        shared = per_i * moe.shared_intermediate_size // tp
        widths.append(("moe", routed + shared + moe.top_k * h))  # + the permuted top-k copies of the input
    kind, width = max(widths, key=lambda w: w[1])
    if spec.traits.mlp_sees_attention_output:
        return 5 * h + width, f"5·h {5 * h} (attention output kept) + {kind} intermediates {width}"
    return 4 * h + width, f"4·h {4 * h} + {kind} intermediates {width}"


def _scores(spec: ModelSpec, q_len: int, kv_len: int, c: int, tp: int) -> int:
    """Eager attention's scores of one sequence: QKᵀ in c bytes, its fp32 softmax and the cast back.

    ALiBi (BloomAttention.forward): the baddbmm scores stay referenced (attention_scores) beside their masked
    sum (attn_weights) through the softmax; F.softmax(dtype=torch.float32) converts a 16-bit input to an fp32
    copy before computing its fp32 output (aten SoftMax.cpp softmax(): input_.toType(dtype); only CUDA fp16
    takes the half_to_float path without the copy, counted here all the same), then the output is cast
    back: 2c + 4 + max(copy 4, cast c) per score, 2c + 4 in fp32 (no copy, no cast). The previous layer's
    probabilities (c per score) are still alive: BloomAttention returns them, and BloomModel.forward's
    ``outputs = block(...)`` holds that layer's result until the next block returns. The (b·a, 1, s_kv) alibi
    tensor (modeling_bloom.build_alibi_tensor, in the compute dtype) and the eager (b, 1, s_q, s_kv) causal mask
    in the compute dtype (masking_utils.create_causal_mask) live through the whole forward.
    Checked against traced prefills (tests/estimate/test_infer_vs_trace.py)."""
    heads = spec.attention.num_heads // tp
    if spec.traits.positions is Positions.ALIBI:
        previous = c if spec.num_layers > 1 else 0
        per_score = 2 * c + 4 + (max(4, c) if c < 4 else 0) + previous
        return heads * q_len * kv_len * per_score + heads * kv_len * c + q_len * kv_len * c
    return heads * q_len * kv_len * (2 * c + 4)


def _sliding_mask(spec: ModelSpec, chunk: int, kv_len: int, attention: AttentionImpl) -> int:
    # a window shorter than the keys rules out is_causal: transformers builds a boolean (b, 1, s, s) mask
    window = spec.attention.sliding_window
    if not window or kv_len <= window or attention == "flash" or not sliding_layers(spec):
        return 0
    return chunk * kv_len


def prefill_workspace(spec: ModelSpec, *, chunk: int, kv_len: int, c: int, attention: AttentionImpl, tp: int) -> Rule:
    """Largest one-layer live set for a forward of ``chunk`` tokens per sequence against ``kv_len`` keys."""
    if spec.traits.eager_only:
        attention = AttentionImpl.EAGER  # the family's own attention code materialises its scores (traits.py)
    att_w, att_f = _attention_live(spec, tp)
    has_attention = attention_layer_count(spec) > 0  # a hybrid's Mamba layers have none (spec/ssm.py)
    att = chunk * c * att_w if has_attention else 0
    scores = _scores(spec, chunk, kv_len, c, tp) if attention == "eager" and has_attention else 0
    mlp_w, mlp_f = _mlp_live(spec, tp)
    mlp = chunk * c * mlp_w
    # which live set is larger does not depend on the batch: every size above is per sequence
    in_attention = att + scores >= mlp
    mask = _sliding_mask(spec, chunk, kv_len, attention)

    def formula(v: Vars) -> str:
        b = v.b
        f = f"T {b * chunk} x c {c} x ({att_f if in_attention else mlp_f})"
        if in_attention and attention == "eager" and spec.traits.positions is Positions.ALIBI:
            f += f" + scores, probabilities, alibi and mask (BloomAttention) = {b * scores:,}"
        elif in_attention and attention == "eager":
            f += f" + scores b·(a/t)·s_q·s_kv·(2c+4) = {b * scores:,}"
        if mask:
            f += f" + sliding-window mask b·s_q·s_kv x 1 B = {b * mask:,}"
        return f"max(attention, MLP) = {'attention' if in_attention else 'MLP'}: {f}"

    rule = Rule(
        name="activations/prefill_workspace",
        coef=max(att + scores, mlp) + mask,
        var=BATCH,
        formula=formula,
        source="one layer's live tensors in an HF/vLLM forward (module docstring); eager attention adds s²",
    )
    return with_mamba(rule, spec, chunk=chunk, kv_len=kv_len, c=c) if spec.ssm else rule

"""Parameter inventory of a ModelSpec, by tensor group, summed over layers.

Each group names one kind of tensor (``attention.v``, ``mlp.down``, ``norms``) so that storage formats can
treat linear weights, embeddings, norms and biases differently, and so that LoRA targets and tensor
parallelism can find the matrices they act on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

from vramwise.spec.model import ModelSpec
from vramwise.spec.ssm import attention_layer_count, ssm_groups
from vramwise.spec.traits import HeadKind

ParamKind = Literal["linear", "bias", "norm", "embedding", "head", "router", "other"]
CATEGORIES = ("embeddings", "attention", "mlp", "experts", "norms", "head", "other", "ssm", "vision", "projector")


@dataclass(frozen=True, kw_only=True)
class ParamGroup:
    """Tensors of one kind over the whole model: ``count`` elements in ``tensors`` tensors."""

    name: str  # hierarchical: "<category>.<tensor>"
    count: int
    kind: ParamKind
    tensors: int  # number of separate tensors (matters for per-tensor overheads and block rounding)
    in_features: int = 0  # for linear weights: the reduction dimension (quantization groups run along it)
    per_expert: bool = False  # routed expert weights: only top_k of num_experts are active per token
    fp32: bool = False  # the framework keeps these in fp32 whatever the model's dtype

    def width(self, nominal: int) -> int:
        """Bytes per element when the model's dtype is ``nominal`` bytes wide."""
        return 4 if self.fp32 and nominal < 4 else nominal

    @functools.cached_property
    def category(self) -> str:
        # cached: the training plans ask every group's category for every stage and layout they build
        return self.name.split(".", 1)[0]


def _linear(name: str, n_in: int, n_out: int, layers: int, *, copies: int = 1) -> ParamGroup:
    return ParamGroup(
        name=name, count=n_in * n_out * layers * copies, kind="linear", tensors=layers * copies, in_features=n_in
    )


def _vec(name: str, size: int, tensors: int, kind: ParamKind) -> ParamGroup:
    return ParamGroup(name=name, count=size * tensors, kind=kind, tensors=tensors)


def _attention_groups(spec: ModelSpec) -> list[ParamGroup]:
    # a hybrid's Mamba layers have no attention (spec/ssm.py)
    att, h, L = spec.attention, spec.hidden_size, attention_layer_count(spec)
    groups: list[ParamGroup] = []
    if att.kind == "mla":
        mla = att.mla
        assert mla is not None  # adapters always set it for kind "mla"
        qk_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        if mla.q_lora_rank:
            groups.append(_linear("attention.q_a", h, mla.q_lora_rank, L))
            groups.append(_vec("attention.q_a_norm", mla.q_lora_rank, L, "norm"))
            groups.append(_linear("attention.q_b", mla.q_lora_rank, att.num_heads * qk_dim, L))
            if att.qkv_bias:
                groups.append(_vec("attention.q_a_bias", mla.q_lora_rank, L, "bias"))
        else:
            groups.append(_linear("attention.q", h, att.num_heads * qk_dim, L))
        groups.append(_linear("attention.kv_a", h, mla.kv_lora_rank + mla.qk_rope_head_dim, L))
        groups.append(_vec("attention.kv_a_norm", mla.kv_lora_rank, L, "norm"))
        groups.append(
            _linear("attention.kv_b", mla.kv_lora_rank, att.num_heads * (mla.qk_nope_head_dim + mla.v_head_dim), L)
        )
        groups.append(_linear("attention.o", att.num_heads * mla.v_head_dim, h, L))
        if att.qkv_bias:
            groups.append(_vec("attention.kv_a_bias", mla.kv_lora_rank + mla.qk_rope_head_dim, L, "bias"))
        if att.out_bias:
            groups.append(_vec("attention.o_bias", h, L, "bias"))
        return groups

    q_out, kv_out = att.num_heads * att.head_dim, att.num_kv_heads * att.head_dim
    groups += [
        _linear("attention.q", h, q_out, L),
        _linear("attention.k", h, kv_out, L),
        _linear("attention.v", h, kv_out, L),
        _linear("attention.o", q_out, h, L),
    ]
    if att.qkv_bias:
        groups.append(_vec("attention.qkv_bias", q_out + 2 * kv_out, L, "bias"))
    if att.out_bias:
        groups.append(_vec("attention.o_bias", h, L, "bias"))
    if att.qk_norm != "none":
        per_norm = att.head_dim * (2 if att.qk_norm == "layer" else 1)  # LayerNorm: weight and bias
        groups.append(_vec("attention.qk_norm", per_norm, 2 * L, "norm"))
    if att.sinks:
        groups.append(_vec("attention.sinks", att.num_heads, L, "other"))
    return groups


def _mlp_groups(prefix: str, h: int, i: int, layers: int, *, gated: bool, bias: bool, copies: int = 1) -> list:
    per_expert = prefix == "experts"
    groups = []
    names = ("gate", "up", "down") if gated else ("up", "down")
    for name in names:
        n_in, n_out = (i, h) if name == "down" else (h, i)
        g = _linear(f"{prefix}.{name}", n_in, n_out, layers, copies=copies)
        groups.append(replace(g, per_expert=per_expert))
    if bias:
        size = (2 * i if gated else i) + h
        groups.append(
            ParamGroup(
                name=f"{prefix}.bias",
                count=size * layers * copies,
                kind="bias",
                tensors=layers * copies,
                per_expert=per_expert,
            )
        )
    return groups


def _ffn_groups(spec: ModelSpec) -> list[ParamGroup]:
    h, mlp = spec.hidden_size, spec.mlp
    groups = []
    if spec.dense_layers:
        groups += _mlp_groups("mlp", h, mlp.intermediate_size, spec.dense_layers, gated=mlp.gated, bias=mlp.bias)
    moe = spec.moe
    if moe and moe.moe_layers:
        n = len(moe.moe_layers)
        groups += _mlp_groups(
            "experts",
            h,
            moe.expert_intermediate_size,
            n,
            gated=mlp.gated,
            bias=moe.expert_bias,
            copies=moe.num_experts,
        )
        groups.append(
            ParamGroup(
                name="experts.router",
                count=h * moe.num_experts * n,
                kind="router",
                tensors=n,
                in_features=h,
                fp32=moe.router_fp32,
            )
        )
        if moe.router_bias:
            groups.append(_vec("experts.router_bias", moe.num_experts, n, "router"))
        if moe.shared_intermediate_size:
            groups += _mlp_groups(
                "experts_shared", h, moe.shared_intermediate_size, n, gated=mlp.gated, bias=moe.shared_bias
            )
            if moe.shared_expert_gate:
                groups.append(
                    ParamGroup(name="experts_shared.gate_proj", count=h * n, kind="router", tensors=n, in_features=h)
                )
    return groups


def _embedding_groups(spec: ModelSpec) -> list[ParamGroup]:
    emb, h = spec.embedding, spec.hidden_size
    width = emb.proj_dim or h
    groups = [ParamGroup(name="embeddings.tokens", count=emb.vocab_size * width, kind="embedding", tensors=1)]
    if emb.learned_positions:
        groups.append(_vec("embeddings.positions", emb.learned_positions * h, 1, "embedding"))
    if emb.token_types:
        groups.append(_vec("embeddings.token_types", emb.token_types * h, 1, "embedding"))
    if emb.norm:
        groups.append(_vec("embeddings.norm", h * (2 if spec.norm.bias else 1), 1, "norm"))
    if emb.proj_dim and emb.proj_dim != h:
        groups.append(_linear("embeddings.project_in", emb.proj_dim, h, 1))
        groups.append(_linear("embeddings.project_out", h, emb.proj_dim, 1))
    return groups


def _norm_groups(spec: ModelSpec) -> list[ParamGroup]:
    norm, h = spec.norm, spec.hidden_size
    per_norm = h * (2 if norm.bias else 1)
    groups = [_vec("norms.layers", per_norm, norm.per_layer * spec.num_layers, "norm")]
    if norm.final:
        groups.append(_vec("norms.final", per_norm, 1, "norm"))
    return groups


def _head_groups(spec: ModelSpec) -> list[ParamGroup]:
    h, groups = spec.hidden_size, []
    width = spec.embedding.proj_dim or h
    if spec.lm_head and not spec.tied_embeddings:
        groups.append(_linear("head.lm_head", width, spec.vocab_size, 1))
    if spec.lm_head and spec.head_bias:
        groups.append(_vec("head.bias", spec.vocab_size, 1, "bias"))
    if spec.pooler:
        groups.append(_linear("other.pooler", h, h, 1))
        groups.append(_vec("other.pooler_bias", h, 1, "bias"))
    return groups + _task_head_groups(spec)


def _task_head_groups(spec: ModelSpec) -> list[ParamGroup]:
    """Masked-LM transform and classifiers (spec/traits.py HeadKind says which transformers class each is)."""
    h, head = spec.hidden_size, spec.traits.head
    if head is HeadKind.MASKED_LM:  # BertPredictionHeadTransform: dense h x h with bias, then a LayerNorm
        return [
            _linear("head.transform", h, h, 1),
            _vec("head.transform_bias", h, 1, "bias"),
            _vec("head.transform_norm", 2 * h, 1, "norm"),
        ]
    if head in (HeadKind.SEQUENCE_CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION):
        groups = [_linear("head.classifier", h, spec.num_labels, 1)]
        if head is HeadKind.TOKEN_CLASSIFICATION or spec.traits.pooled_classifier:
            groups.append(_vec("head.classifier_bias", spec.num_labels, 1, "bias"))
        return groups
    return []


@functools.lru_cache(maxsize=256)
def parameter_groups(spec: ModelSpec) -> tuple[ParamGroup, ...]:
    """Every parameter of the model, grouped by tensor kind; tied weights are counted once.

    Cached: specs are frozen, and the solvers ask for the same model's groups thousands of times.
    """
    groups = _embedding_groups(spec) + _attention_groups(spec) + _ffn_groups(spec) + _norm_groups(spec)
    if spec.encoder_decoder is not None:
        from vramwise.spec.seq2seq_params import encoder_decoder_groups  # imports this module: read on first use

        groups += encoder_decoder_groups(spec)
    return tuple(groups + _head_groups(spec) + ssm_groups(spec) + _vision_groups(spec))


def _vision_groups(spec: ModelSpec) -> list[ParamGroup]:
    """A vision-language model's tower and projector (and mllama's cross-attention extras), as its adapter
    counted them (spec/adapters/vision.py)."""
    if spec.vision is None:
        return []
    return [
        ParamGroup(name=name, count=count, kind=kind, tensors=tensors, in_features=n_in)  # type: ignore[arg-type]
        for name, count, kind, tensors, n_in in spec.vision.groups
    ]


def total_params(spec: ModelSpec) -> int:
    """Unique parameters, as ``sum(p.numel() for p in model.parameters())`` counts them."""
    return sum(g.count for g in parameter_groups(spec))


def active_params(spec: ModelSpec) -> int:
    """Parameters one token passes through: for MoE, top_k of the routed experts."""
    total = total_params(spec)
    if not spec.moe:
        return total
    routed = sum(g.count for g in parameter_groups(spec) if g.per_expert)
    return total - routed * (spec.moe.num_experts - spec.moe.top_k) // spec.moe.num_experts

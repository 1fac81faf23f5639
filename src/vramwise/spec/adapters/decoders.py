"""Adapters for Llama-style decoders: RMSNorm, rotary positions, (gated) MLP, optional MoE.

llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, phi3, gemma, gemma2, gemma3_text, gpt_oss.
Defaults for absent keys follow the transformers config class of each family.
"""

from __future__ import annotations

from typing import Any

from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.adapters.storage import storage
from vramwise.spec.model import (
    AttentionSpec,
    EmbeddingSpec,
    LayerAttention,
    MlpSpec,
    ModelSpec,
    MoeSpec,
    NormSpec,
)
from vramwise.spec.traits import LLAMA_IA3, LLAMA_QV, QWEN_IA3, HeadKind, ImplTraits

_LAYER_TYPE = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "full"}


def layer_types(cfg: RawConfig, num_layers: int) -> tuple[LayerAttention, ...]:
    """Per-layer attention kinds from ``layer_types`` when the config lists them."""
    raw = cfg.data.get("layer_types")
    if raw is None:
        return ()
    if (
        not isinstance(raw, list)
        or len(raw) != num_layers
        or any(not isinstance(t, str) or t not in _LAYER_TYPE for t in raw)
    ):
        raise cfg.error(
            "layer_types",
            f"field 'layer_types' must list {num_layers} entries from {sorted(_LAYER_TYPE)}",
            ", ".join(sorted(_LAYER_TYPE)),
        )
    return tuple(_LAYER_TYPE[t] for t in raw)  # type: ignore[misc]


# Defaults of each transformers config class for keys a config.json may omit: KV heads (None: one per
# attention head) and head_dim (None: hidden / heads). E.g. Qwen2Config says 32 KV heads, GemmaConfig
# head_dim 256, whatever the other sizes are.
_KV_DEFAULT = {
    "mistral": 8,
    "mixtral": 8,
    "qwen2": 32,
    "qwen2_moe": 16,
    "qwen3": 32,
    "qwen3_moe": 4,
    "gemma": 16,
    "gemma2": 4,
    "gemma3_text": 4,
    "gpt_oss": 8,
}
_HEAD_DIM_DEFAULT = {"gemma": 256, "gemma2": 256, "gemma3_text": 256, "qwen3": 128, "gpt_oss": 64}

# Family traits (spec/traits.py says what each changes). Llama, Mistral, Mixtral, Qwen2/3 (and their MoE)
# run Llama's code: LLAMA_QV. Where vramwise's LoRA default differs from peft 0.21's mapping (Qwen2-MoE,
# Qwen3-MoE and Phi-3 get one peft lacks, gemma3_text none where peft has q/v), tests/spec/test_traits.py
# lists it; changing it changes which setups are refused.
_PHI3 = ImplTraits(
    fused_qkv=True,  # Phi3Attention.qkv_proj
    fused_gate_up=True,  # Phi3MLP.gate_up_proj
    rotary_cat_copy=True,  # modeling_phi3.apply_rotary_pos_emb concatenates q_rot and q_pass
    peft_modules=(
        ("qkv_proj", ("attention.q", "attention.k", "attention.v")),
        ("o_proj", ("attention.o",)),
        ("gate_up_proj", ("mlp.gate", "mlp.up")),
        ("down_proj", ("mlp.down",)),
    ),
    peft_default_targets=("qkv_proj",),
)
_GEMMA = ImplTraits(  # GemmaRMSNorm, Gemma2RMSNorm; peft's IA3 mapping as Qwen's
    norm_weight_fp32=True,
    peft_default_targets=("q_proj", "v_proj"),
    ia3_targets=QWEN_IA3.ia3_targets,
    ia3_feedforward=QWEN_IA3.ia3_feedforward,
)
# Gemma3RMSNorm; transformers has no Gemma3 token classifier (models/auto/modeling_auto.py)
_GEMMA3 = ImplTraits(norm_weight_fp32=True, heads=(HeadKind.CAUSAL_LM, HeadKind.SEQUENCE_CLASSIFICATION, HeadKind.BARE))
_GPT_OSS = ImplTraits(
    norm_weight_fp32=True,  # GptOssRMSNorm multiplies the bf16 weight by the fp32 normalised tensor
    softmax_in_compute_dtype=True,  # modeling_gpt_oss.eager_attention_forward
    expert_intermediates=7,  # GptOssExperts._apply_gate (see ImplTraits.expert_intermediates)
    sglang_hybrid_swa=True,  # GptOssForCausalLM is in SGLang's is_hybrid_swa_model list
)


def _attention(cfg: RawConfig, h: int, *, qkv_bias: bool, out_bias: bool, **extra) -> AttentionSpec:
    heads = cfg.pos_int("num_attention_heads")
    model_type = cfg.text("model_type")
    kv = cfg.pos_int("num_key_value_heads", _KV_DEFAULT.get(model_type, heads))
    # An explicit head_dim (Gemma 256, Mistral-Nemo 128, Qwen3 128) need not equal hidden / heads.
    head_dim = cfg.pos_int("head_dim", _HEAD_DIM_DEFAULT.get(model_type, 0)) or cfg.divides(
        "num_attention_heads", h, "hidden_size"
    )
    check_kv_heads(cfg, heads, kv, "num_key_value_heads")
    return AttentionSpec(
        num_heads=heads, num_kv_heads=kv, head_dim=head_dim, qkv_bias=qkv_bias, out_bias=out_bias, **extra
    )


def decoder_spec(
    cfg: RawConfig,
    name: str,
    *,
    attention: AttentionSpec,
    traits: ImplTraits,
    tied_default: bool,
    norms_per_layer: int = 2,
    moe: MoeSpec | None = None,
    mlp_bias: bool = False,
    **extra: Any,
) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    return ModelSpec(
        name=name,
        model_type=cfg.text("model_type"),
        hidden_size=h,
        num_layers=L,
        embedding=EmbeddingSpec(vocab_size=cfg.pos_int("vocab_size")),
        attention=attention,
        mlp=MlpSpec(
            gated=True,
            intermediate_size=cfg.pos_int("intermediate_size"),
            bias=mlp_bias,
            activation=activation(cfg, "silu"),
        ),
        norm=NormSpec(kind="rms", per_layer=norms_per_layer),
        traits=traits,
        moe=moe,
        tied_embeddings=cfg.flag("tie_word_embeddings", tied_default),
        max_position_embeddings=cfg.optional_int("max_position_embeddings", None),
        **storage(cfg),
        source=cfg.source,
        **extra,
    )


def check_kv_heads(cfg: RawConfig, heads: int, kv: int, kv_key: str) -> None:
    """Grouped-query attention shares each KV head among heads / kv query heads: kv must divide heads."""
    if heads % kv:
        raise cfg.error(
            kv_key,
            f"'num_attention_heads' ({heads}) must be a multiple of '{kv_key}' ({kv})",
            f"a divisor of {heads}",
        )


def activation(cfg: RawConfig, default: str) -> str:
    """The MLP's activation name (``hidden_act``; Gemma configs may say ``hidden_activation``)."""
    key = "hidden_act" if cfg.has("hidden_act") or not cfg.has("hidden_activation") else "hidden_activation"
    return cfg.text(key, default)


def experts_top_k(cfg: RawConfig, experts: int, experts_key: str) -> int:
    """Experts each token is routed to: at least 1, at most the experts there are (transformers' topk
    refuses k > experts: "k not in range for dimension")."""
    return cfg.at_most("num_experts_per_tok", experts, experts_key)


def _sliding(cfg: RawConfig, L: int, absent: int | None = None) -> dict:
    """A window on every layer (Mistral v0.1) unless layer_types says which; ``absent``: the class default."""
    return {"sliding_window": cfg.optional_int("sliding_window", absent), "layer_types": layer_types(cfg, L)}


def llama(cfg: RawConfig, name: str) -> ModelSpec:
    h = cfg.pos_int("hidden_size")
    bias = cfg.flag("attention_bias", False)  # Llama's attention_bias applies to q, k, v and o alike
    att = _attention(cfg, h, qkv_bias=bias, out_bias=bias)
    return decoder_spec(
        cfg, name, attention=att, traits=LLAMA_IA3, tied_default=False, mlp_bias=cfg.flag("mlp_bias", False)
    )


def mistral(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    # MistralConfig defaults sliding_window to 4096 when the key is absent; an explicit null disables it.
    att = _attention(cfg, h, qkv_bias=False, out_bias=False, **_sliding(cfg, L, absent=4096))
    return decoder_spec(cfg, name, attention=att, traits=LLAMA_IA3, tied_default=False)


def mixtral(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    att = _attention(cfg, h, qkv_bias=False, out_bias=False, **_sliding(cfg, L))
    moe = MoeSpec(
        num_experts=cfg.pos_int("num_local_experts"),
        top_k=experts_top_k(cfg, cfg.pos_int("num_local_experts"), "num_local_experts"),
        expert_intermediate_size=cfg.pos_int("intermediate_size"),
        moe_layers=tuple(range(L)),
    )
    return decoder_spec(cfg, name, attention=att, traits=LLAMA_QV, tied_default=False, moe=moe)


def _qwen_sliding(cfg: RawConfig, L: int) -> dict:
    # Qwen2 only slides when use_sliding_window is set, and then only on layers >= max_window_layers.
    if cfg.has("layer_types"):
        return _sliding(cfg, L)
    if not cfg.flag("use_sliding_window", False) or not cfg.has("sliding_window"):
        return {}
    first = cfg.nonneg_int("max_window_layers", 28)
    types = tuple("sliding" if i >= first else "full" for i in range(L))
    return {"sliding_window": cfg.pos_int("sliding_window"), "layer_types": types}


def _qwen_moe_layers(cfg: RawConfig, L: int) -> tuple[int, ...]:
    step = cfg.pos_int("decoder_sparse_step", 1)
    dense = set(cfg.int_list("mlp_only_layers"))
    return tuple(i for i in range(L) if i not in dense and (i + 1) % step == 0)


def qwen2(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    att = _attention(cfg, h, qkv_bias=True, out_bias=False, **_qwen_sliding(cfg, L))  # q/k/v bias, o none
    return decoder_spec(cfg, name, attention=att, traits=QWEN_IA3, tied_default=False)


def qwen2_moe(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    att = _attention(cfg, h, qkv_bias=cfg.flag("qkv_bias", True), out_bias=False, **_qwen_sliding(cfg, L))
    moe = MoeSpec(
        num_experts=cfg.pos_int("num_experts"),
        top_k=experts_top_k(cfg, cfg.pos_int("num_experts"), "num_experts"),
        expert_intermediate_size=cfg.pos_int("moe_intermediate_size"),
        moe_layers=_qwen_moe_layers(cfg, L),
        shared_intermediate_size=cfg.nonneg_int("shared_expert_intermediate_size", 0),
        shared_expert_gate=cfg.nonneg_int("shared_expert_intermediate_size", 0) > 0,
    )
    return decoder_spec(cfg, name, attention=att, traits=LLAMA_QV, tied_default=False, moe=moe)


def qwen3(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    bias = cfg.flag("attention_bias", False)
    att = _attention(cfg, h, qkv_bias=bias, out_bias=bias, qk_norm="rms", **_qwen_sliding(cfg, L))
    return decoder_spec(cfg, name, attention=att, traits=QWEN_IA3, tied_default=False)


def qwen3_moe(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    bias = cfg.flag("attention_bias", False)
    att = _attention(cfg, h, qkv_bias=bias, out_bias=bias, qk_norm="rms", **_qwen_sliding(cfg, L))
    moe = MoeSpec(
        num_experts=cfg.pos_int("num_experts"),
        top_k=experts_top_k(cfg, cfg.pos_int("num_experts"), "num_experts"),
        expert_intermediate_size=cfg.pos_int("moe_intermediate_size"),
        moe_layers=_qwen_moe_layers(cfg, L),
    )
    return decoder_spec(cfg, name, attention=att, traits=LLAMA_QV, tied_default=False, moe=moe)


def phi3(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    # Phi-3 fuses qkv and gate/up into single matrices; the parameter count is the same as separate ones.
    att = _attention(cfg, h, qkv_bias=False, out_bias=False, **_sliding(cfg, L))
    return decoder_spec(cfg, name, attention=att, traits=_PHI3, tied_default=False)


def gemma(cfg: RawConfig, name: str) -> ModelSpec:
    h = cfg.pos_int("hidden_size")
    bias = cfg.flag("attention_bias", False)
    att = _attention(cfg, h, qkv_bias=bias, out_bias=bias)
    return decoder_spec(cfg, name, attention=att, traits=_GEMMA, tied_default=True)


def _alternating(cfg: RawConfig, L: int, pattern: int) -> tuple[LayerAttention, ...]:
    # Every `pattern`-th layer is global, the rest slide (Gemma2 and gpt-oss: 2, Gemma3: 6), as transformers
    # derives it when layer_types is absent.
    return layer_types(cfg, L) or tuple("sliding" if (i + 1) % pattern else "full" for i in range(L))


def _gemma_local_global(
    cfg: RawConfig,
    name: str,
    *,
    pattern: int,
    qk_norm: bool,
    softcaps: tuple[float | None, float | None],
    traits: ImplTraits,
) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    bias = cfg.flag("attention_bias", False)
    # Soft-capping changes what training keeps (a tanh output per score and per logit), not the parameters.
    attn_cap = cfg.data.get("attn_logit_softcapping", softcaps[0])
    final_cap = cfg.data.get("final_logit_softcapping", softcaps[1])
    att = _attention(
        cfg,
        h,
        qkv_bias=bias,
        out_bias=bias,
        qk_norm="rms" if qk_norm else "none",
        sliding_window=cfg.pos_int("sliding_window", 4096),
        layer_types=_alternating(cfg, L, pattern),
        logit_softcap=attn_cap is not None,
    )
    # Gemma2/3 norm both before and after attention and MLP: four norms per layer.
    return decoder_spec(
        cfg,
        name,
        attention=att,
        traits=traits,
        tied_default=True,
        norms_per_layer=4,
        final_logit_softcap=final_cap is not None,
    )


def gemma2(cfg: RawConfig, name: str) -> ModelSpec:
    # Gemma2Config defaults for the soft-caps
    return _gemma_local_global(cfg, name, pattern=2, qk_norm=False, softcaps=(50.0, 30.0), traits=_GEMMA)


def gemma3_text(cfg: RawConfig, name: str) -> ModelSpec:
    pattern = cfg.pos_int("sliding_window_pattern", 6)
    return _gemma_local_global(cfg, name, pattern=pattern, qk_norm=True, softcaps=(None, None), traits=_GEMMA3)


def gpt_oss(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    bias = cfg.flag("attention_bias", True)
    att = _attention(
        cfg,
        h,
        qkv_bias=bias,
        out_bias=bias,
        sinks=True,
        sliding_window=cfg.pos_int("sliding_window", 128),
        layer_types=_alternating(cfg, L, 2),
    )
    moe = MoeSpec(
        num_experts=cfg.pos_int("num_local_experts"),
        top_k=experts_top_k(cfg, cfg.pos_int("num_local_experts"), "num_local_experts"),
        expert_intermediate_size=cfg.pos_int("intermediate_size"),
        moe_layers=tuple(range(L)),
        router_bias=True,
        expert_bias=True,
    )
    return decoder_spec(cfg, name, attention=att, traits=_GPT_OSS, tied_default=False, moe=moe)

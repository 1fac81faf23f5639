"""DeepSeek-V2/V3: multi-head latent attention and fine-grained MoE with shared experts."""

from __future__ import annotations

from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.adapters.decoders import decoder_spec, experts_top_k
from vramwise.spec.model import AttentionSpec, MlaSpec, ModelSpec, MoeSpec
from vramwise.spec.traits import HeadKind, ImplTraits

# DeepseekV2/V3TopkRouter route in fp32: F.linear(hidden_states.type(torch.float32), ...). Rotary on the
# qk_rope_head_dim part of q and k; peft 0.21 lists no default LoRA targets for deepseek_v2/v3.
_TRAITS = ImplTraits(router_input_fp32=True)
# transformers has no DeepseekV2ForTokenClassification (models/auto/modeling_auto.py); V3 has one.
_V2_TRAITS = ImplTraits(
    router_input_fp32=True, heads=(HeadKind.CAUSAL_LM, HeadKind.SEQUENCE_CLASSIFICATION, HeadKind.BARE)
)


def _q_lora_rank(cfg: RawConfig) -> int | None:
    # An explicit null means a plain q_proj (V2-Lite); an absent key takes transformers' default of 1536.
    if "q_lora_rank" in cfg.data and cfg.data["q_lora_rank"] is None:
        return None
    return cfg.pos_int("q_lora_rank", 1536)


def deepseek(cfg: RawConfig, name: str) -> ModelSpec:
    L = cfg.pos_int("num_hidden_layers")
    heads = cfg.pos_int("num_attention_heads")
    mla = MlaSpec(
        q_lora_rank=_q_lora_rank(cfg),
        kv_lora_rank=cfg.pos_int("kv_lora_rank"),
        qk_nope_head_dim=cfg.pos_int("qk_nope_head_dim"),
        qk_rope_head_dim=cfg.pos_int("qk_rope_head_dim"),
        v_head_dim=cfg.pos_int("v_head_dim"),
    )
    bias = cfg.flag("attention_bias", False)
    attention = AttentionSpec(
        kind="mla",
        num_heads=heads,
        # MLA caches one latent shared by all heads; num_kv_heads is kept for reference only.
        num_kv_heads=cfg.pos_int("num_key_value_heads", heads),
        head_dim=mla.qk_nope_head_dim + mla.qk_rope_head_dim,
        qkv_bias=bias,
        out_bias=bias,
        mla=mla,
    )
    experts = cfg.nonneg_int("n_routed_experts", 0)
    moe = None
    if experts:
        # transformers makes every layer from first_k_dense_replace on an MoE layer (moe_layer_freq is 1 in
        # every published DeepSeek-V2/V3 config).
        first_dense = cfg.nonneg_int("first_k_dense_replace", 0)
        moe = MoeSpec(
            num_experts=experts,
            top_k=experts_top_k(cfg, experts, "n_routed_experts"),
            expert_intermediate_size=cfg.pos_int("moe_intermediate_size"),
            moe_layers=tuple(range(first_dense, L)),
            shared_intermediate_size=cfg.pos_int("moe_intermediate_size") * cfg.nonneg_int("n_shared_experts", 0),
            shared_bias=cfg.flag("mlp_bias", False),
            router_fp32=True,
        )
    return decoder_spec(
        cfg,
        name,
        attention=attention,
        traits=_V2_TRAITS if cfg.text("model_type") == "deepseek_v2" else _TRAITS,
        tied_default=False,
        moe=moe,
        mlp_bias=cfg.flag("mlp_bias", False),
        mtp_layers=cfg.nonneg_int("num_nextn_predict_layers", 0),
    )

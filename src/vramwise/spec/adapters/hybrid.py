"""Hybrid attention / state-space models: Jamba (transformers ``models/jamba``, 5.24).

Read from ``configuration_jamba.py`` (JambaConfig) and ``modeling_jamba.py``:
  - layer kinds: ``layers_block_type`` (config lines 107-112): layer i is attention when
    ``i % attn_layer_period == attn_layer_offset``, else Mamba; ``validate_architecture`` (lines 126-136)
    requires offset < period for both patterns.
  - feed-forward: ``layers_num_experts`` (lines 119-124): ``num_experts`` experts when
    ``i % expert_layer_period == expert_layer_offset``, else 1; a layer with more than one expert is a
    JambaSparseMoeBlock (modeling lines 735-739, 774-777), else the gated JambaMLP (lines 627-640). Experts
    and the dense MLP share ``intermediate_size`` (JambaExperts, lines 647-654); the router is a bias-free
    (E, h) weight (JambaTopKRouter, lines 687-692) fed the hidden states in the compute dtype.
  - attention: JambaAttention (lines 158-170): q/k/v/o without bias, head_dim = getattr(config, "head_dim",
    h // heads); no rotary or other position encoding is applied (the forward never calls
    apply_rotary_pos_emb).
  - two RMSNorms per layer (input_layernorm, pre_ff_layernorm) and final_layernorm; lm_head untied by
    default (tie_word_embeddings False).
Defaults follow JambaConfig (lines 66-98) for keys a config.json may omit.
"""

from __future__ import annotations

import math

from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.adapters.decoders import check_kv_heads, decoder_spec, experts_top_k
from vramwise.spec.model import AttentionSpec, ModelSpec, MoeSpec
from vramwise.spec.ssm import SsmSpec
from vramwise.spec.traits import ImplTraits, Positions

# Training is refused for hybrids (estimate/ssm_state.py), so no training trait is read; peft 0.21 lists no
# default LoRA targets for jamba (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING has no entry).
_JAMBA = ImplTraits(positions=Positions.NONE)


def _period(cfg: RawConfig, period_key: str, offset_key: str, period: int, offset: int) -> tuple[int, int]:
    """(period, offset) of a layer pattern; JambaConfig.validate_architecture refuses offset >= period."""
    p, o = cfg.pos_int(period_key, period), cfg.nonneg_int(offset_key, offset)
    if o >= p:
        raise cfg.error(offset_key, f"'{offset_key}' ({o}) must be smaller than '{period_key}' ({p})", f"0 to {p - 1}")
    return p, o


def _dt_rank(cfg: RawConfig, h: int) -> int:
    # "auto" (the default) is ceil(h / 16), JambaConfig.__post_init__ (line 104)
    if cfg.data.get("mamba_dt_rank", "auto") == "auto":
        return math.ceil(h / 16)
    return cfg.pos_int("mamba_dt_rank")


def jamba(cfg: RawConfig, name: str) -> ModelSpec:
    h, L = cfg.pos_int("hidden_size"), cfg.pos_int("num_hidden_layers")
    attn_period, attn_offset = _period(cfg, "attn_layer_period", "attn_layer_offset", 8, 4)
    expert_period, expert_offset = _period(cfg, "expert_layer_period", "expert_layer_offset", 2, 1)
    heads = cfg.pos_int("num_attention_heads")
    # absent: JambaConfig's 8; an explicit null: one per query head (JambaConfig.__post_init__, line 101)
    kv = heads if "num_key_value_heads" in cfg.data and cfg.data["num_key_value_heads"] is None else 8
    kv = cfg.pos_int("num_key_value_heads", kv)
    check_kv_heads(cfg, heads, kv, "num_key_value_heads")
    head_dim = cfg.pos_int("head_dim", 0) or cfg.divides("num_attention_heads", h, "hidden_size")
    attention = AttentionSpec(num_heads=heads, num_kv_heads=kv, head_dim=head_dim)

    experts = cfg.pos_int("num_experts", 16)
    moe = None
    moe_layers = tuple(i for i in range(L) if i % expert_period == expert_offset)
    if experts > 1 and moe_layers:
        moe = MoeSpec(
            num_experts=experts,
            # absent: JambaConfig's 2 (experts > 1 here, so it never exceeds them)
            top_k=experts_top_k(cfg, experts, "num_experts") if cfg.has("num_experts_per_tok") else 2,
            expert_intermediate_size=cfg.pos_int("intermediate_size"),
            moe_layers=moe_layers,
        )
    ssm = SsmSpec(
        layers=tuple(i for i in range(L) if i % attn_period != attn_offset),
        d_inner=cfg.pos_int("mamba_expand", 2) * h,
        d_state=cfg.pos_int("mamba_d_state", 16),
        d_conv=cfg.pos_int("mamba_d_conv", 4),
        dt_rank=_dt_rank(cfg, h),
        conv_bias=cfg.flag("mamba_conv_bias", True),
        proj_bias=cfg.flag("mamba_proj_bias", False),
    )
    return decoder_spec(cfg, name, attention=attention, traits=_JAMBA, tied_default=False, moe=moe, ssm=ssm)

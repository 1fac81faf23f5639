"""Oracle: the parameter count of the real transformers model built on the meta device."""

from __future__ import annotations

import pytest
from hf_oracle import SHARED_CONFIGS, hf_param_count, hf_params, shared_config
from tiny_configs import BLOOM, ENCODER_DECODER, GPT_BIGCODE, HEADS

from vramwise.catalog import models
from vramwise.estimate.weights import weight_terms
from vramwise.formats import get_format
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import total_params

# The shared configs stay outside the repository (their README asks not to copy them in): without them, one
# named skip says what did not run, instead of pytest's anonymous "got empty parameter set".
SHARED = sorted(p.stem for p in SHARED_CONFIGS.glob("*.json")) or [
    pytest.param("absent", marks=pytest.mark.skip(reason=f"{SHARED_CONFIGS} absent: shared-config oracles not run"))
]

# At least one more config per adapter family, each exercising a key the shared configs leave at its default.
_SMALL = {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4}
EXTRA = {
    "llama-bias-tied-headdim": {
        **_SMALL,
        "model_type": "llama",
        "intermediate_size": 128,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "attention_bias": True,
        "mlp_bias": True,
        "tie_word_embeddings": True,
    },
    "mistral-headdim-nowindow": {
        **_SMALL,
        "model_type": "mistral",
        "intermediate_size": 96,
        "num_key_value_heads": 1,
        "head_dim": 24,
        "sliding_window": None,
    },
    "mixtral-small": {
        **_SMALL,
        "model_type": "mixtral",
        "intermediate_size": 80,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
    "qwen2-tied-sliding": {
        **_SMALL,
        "model_type": "qwen2",
        "intermediate_size": 96,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "use_sliding_window": True,
        "sliding_window": 16,
        "max_window_layers": 1,
    },
    "qwen2-moe-sparse-step": {
        **_SMALL,
        "num_hidden_layers": 4,
        "model_type": "qwen2_moe",
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48,
        "num_experts": 6,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 2,
        "mlp_only_layers": [3],
        "num_key_value_heads": 2,
    },
    "qwen3-bias": {
        **_SMALL,
        "model_type": "qwen3",
        "intermediate_size": 96,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "attention_bias": True,
    },
    "qwen3-moe-dense-layers": {
        **_SMALL,
        "model_type": "qwen3_moe",
        "intermediate_size": 96,
        "moe_intermediate_size": 24,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "mlp_only_layers": [0],
        "num_key_value_heads": 2,
    },
    "gemma-default-tie": {
        **_SMALL,
        "model_type": "gemma",
        "intermediate_size": 96,
        "num_key_value_heads": 1,
        "head_dim": 32,
    },
    "gemma2-small": {
        **_SMALL,
        "model_type": "gemma2",
        "intermediate_size": 96,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "sliding_window": 32,
    },
    "gemma3-text-small": {
        **_SMALL,
        "num_hidden_layers": 7,
        "model_type": "gemma3_text",
        "intermediate_size": 96,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "sliding_window": 32,
    },
    "phi-qk-layernorm": {
        **_SMALL,
        "model_type": "phi",
        "intermediate_size": 128,
        "qk_layernorm": True,
        "num_key_value_heads": 2,
    },
    "phi3-small": {
        **_SMALL,
        "model_type": "phi3",
        "intermediate_size": 96,
        "num_key_value_heads": 2,
        "pad_token_id": 0,
    },
    # No num_key_value_heads and no head_dim: each family's config-class default applies.
    "qwen2-default-kv": {**_SMALL, "num_attention_heads": 64, "model_type": "qwen2", "intermediate_size": 96},
    "qwen3-default-head-dim": {**_SMALL, "num_attention_heads": 32, "model_type": "qwen3", "intermediate_size": 96},
    "gemma2-default-kv-head-dim": {
        **_SMALL,
        "model_type": "gemma2",
        "intermediate_size": 96,
        "num_attention_heads": 8,
    },
    "gpt2-n-inner": {
        "model_type": "gpt2",
        "vocab_size": 1000,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 128,
        "n_inner": 100,
    },
    "gpt-neox-tied-nobias": {
        **_SMALL,
        "model_type": "gpt_neox",
        "intermediate_size": 128,
        "attention_bias": False,
        "tie_word_embeddings": True,
    },
    "falcon-new-arch": {
        **_SMALL,
        "model_type": "falcon",
        "num_kv_heads": 2,
        "new_decoder_architecture": True,
        "bias": True,
    },
    "falcon-sequential": {
        **_SMALL,
        "model_type": "falcon",
        "parallel_attn": False,
        "multi_query": False,
        "ffn_hidden_size": 100,
    },
    "opt-350m-style": {
        **_SMALL,
        "model_type": "opt",
        "ffn_dim": 128,
        "word_embed_proj_dim": 32,
        "do_layer_norm_before": False,
        "max_position_embeddings": 64,
    },
    "bert-small": {**_SMALL, "model_type": "bert", "intermediate_size": 128, "type_vocab_size": 3},
    "deepseek-v2-mlp-bias": {
        **_SMALL,
        "model_type": "deepseek_v2",
        "intermediate_size": 96,
        "moe_intermediate_size": 16,
        "q_lora_rank": None,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "n_routed_experts": 4,
        "n_shared_experts": 2,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "attention_bias": True,
        "mlp_bias": True,
    },
    "deepseek-v3-small": {
        **_SMALL,
        "model_type": "deepseek_v3",
        "intermediate_size": 96,
        "moe_intermediate_size": 16,
        "q_lora_rank": 24,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 2,
        "n_group": 2,
        "topk_group": 1,
    },
    # d_kv x num_heads (96) != d_model (64), more decoder than encoder layers; the head tied (T5 v1.0)
    "t5-v1.0-asymmetric": {
        "model_type": "t5",
        "vocab_size": 1000,
        "d_model": 64,
        "d_kv": 16,
        "d_ff": 128,
        "num_layers": 2,
        "num_decoder_layers": 3,
        "num_heads": 6,
        "relative_attention_num_buckets": 8,
    },
    # v1.1 / flan-t5 and mT5 (gated-gelu, their own lm_head: hf_params unties it as from_pretrained does), and
    # v1.0 with its head tied: the tiny configs the encoder-decoder estimates are tested on
    **{f"tiny-{name}": config for name, config in ENCODER_DECODER.items()},
    # gated-gelu (wi_0, wi_1, wo); tie_word_embeddings left at MT5Config's default (true)
    "mt5-gated-tied": {
        "model_type": "mt5",
        "vocab_size": 1200,
        "d_model": 48,
        "d_kv": 8,
        "d_ff": 80,
        "num_layers": 2,
        "num_heads": 4,
        "feed_forward_proj": "gated-gelu",
    },
    "gpt-oss-small": {
        **_SMALL,
        "model_type": "gpt_oss",
        "intermediate_size": 48,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 8,
    },
    # Jamba (spec/adapters/hybrid.py): Mamba layers without attention, MoE on a layer pattern of its own
    "jamba-hybrid-moe": {
        **_SMALL,
        "num_hidden_layers": 4,
        "model_type": "jamba",
        "intermediate_size": 96,
        "num_key_value_heads": 2,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "attn_layer_period": 2,
        "attn_layer_offset": 1,
        "expert_layer_period": 2,
        "expert_layer_offset": 0,
        "mamba_d_state": 8,
        "mamba_d_conv": 3,
    },
    "jamba-dense-tied-bias-dtrank": {  # one expert: every MLP dense; projection biases, no conv bias
        **_SMALL,
        "num_hidden_layers": 5,
        "model_type": "jamba",
        "hidden_size": 48,
        "intermediate_size": 80,
        "num_key_value_heads": 1,
        "num_experts": 1,
        "mamba_dt_rank": 5,
        "mamba_conv_bias": False,
        "mamba_proj_bias": True,
        "tie_word_embeddings": True,
        "attn_layer_period": 3,
        "attn_layer_offset": 2,
    },
    "gpt-bigcode-mqa": {**GPT_BIGCODE, "n_layer": 2, "vocab_size": 1000},
    "gpt-bigcode-mha-untied": {
        **GPT_BIGCODE,
        "vocab_size": 1000,
        "multi_query": False,
        "n_inner": None,
        "tie_word_embeddings": False,
    },
    "bloom-n-embed": {**BLOOM, "vocab_size": 1000},
    "bloom-hidden-size-untied": {
        "model_type": "bloom",
        "hidden_size": 64,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 1000,
        "tie_word_embeddings": False,
    },
    # architectures[0] picks the head (spec/heads.py); the oracle builds the same class (hf_oracle.hf_model_class)
    **{f"head-{name}": config for name, config in HEADS.items()},
}


@pytest.mark.parametrize("name", SHARED)
def test_shared_configs_match_transformers(name: str) -> None:
    config = shared_config(name)
    spec = spec_from_config(config, name=name, source=name)
    assert (total_params(spec), _bf16_bytes(spec)) == hf_params(config)


def _bf16_bytes(spec: ModelSpec) -> int:
    return sum(t.bytes for t in weight_terms(spec, get_format("bf16"), hp_bytes=2))


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_extra_family_configs_match_transformers(name: str) -> None:
    # Counts and bf16 bytes: the bytes catch tensors transformers keeps in fp32 (DeepSeek's routers).
    config = EXTRA[name]
    spec = spec_from_config(config, name=name, source=name)
    assert (total_params(spec), _bf16_bytes(spec)) == hf_params(config)


@pytest.mark.parametrize("name", list(models()))
def test_catalog_entries_match_transformers(name: str) -> None:
    config = models()[name].config
    assert total_params(spec_from_config(dict(config), name=name, source=name)) == hf_param_count(config)


def test_every_adapter_family_is_exercised() -> None:
    from tiny_configs import VLM  # vision-language models: tests/spec/test_vision_params.py

    from vramwise.spec.adapters import SUPPORTED_MODEL_TYPES

    seen = {c["model_type"] for c in (*EXTRA.values(), *VLM.values())}
    assert set(SUPPORTED_MODEL_TYPES) <= seen

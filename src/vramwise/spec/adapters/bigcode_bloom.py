"""Adapters for gpt_bigcode (StarCoder, SantaCoder) and bloom: LayerNorm-and-bias decoders with fused qkv.

gpt_bigcode (models/gpt_bigcode/modeling_gpt_bigcode.py): GPT-2's layout with nn.Linear instead of Conv1D, and
multi-query attention: c_attn outputs h + 2·head_dim (one key and one value head) when ``multi_query`` (the
default). transformers 5 caches that key and value as two (b, 1, s, d) tensors per layer (DynamicCache.update
from GPTBigCodeAttention.forward); the StarCoder-era code kept them fused in one (b, s, 2d) tensor: either way
2·d elements per token per layer, the KV formula for one KV head.

bloom (models/bloom/modeling_bloom.py): ALiBi instead of positions (no table, no rotary, so no position limit
in the model), an embedding LayerNorm (word_embeddings_layernorm), fused query_key_value with bias, a 4h GELU MLP
with bias, tied lm_head. BloomAttention computes its scores itself (alibi.baddbmm), whatever attention
implementation is asked for: BloomPreTrainedModel declares no SDPA or flash support.
"""

from __future__ import annotations

from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.adapters.storage import storage
from vramwise.spec.model import AttentionSpec, EmbeddingSpec, MlpSpec, ModelSpec, NormSpec
from vramwise.spec.traits import ImplTraits, Positions

_QKV = ("attention.q", "attention.k", "attention.v")
# GPTBigCodeAttention.c_attn (fused q, k, v), c_proj; GPTBigCodeMLP.c_fc, c_proj; wpe (learned positions);
# eager_attention_forward's softmax in fp32 (Llama's). peft's default for gpt_bigcode: c_attn.
_BIGCODE = ImplTraits(
    positions=Positions.LEARNED,
    fused_qkv=True,
    mlp_sees_attention_output=True,
    peft_modules=(("c_attn", _QKV), ("c_proj", ("attention.o",)), ("c_fc", ("mlp.up",)), ("c_proj", ("mlp.down",))),
    peft_default_targets=("c_attn",),
)
# BloomAttention.query_key_value (fused), dense; BloomMLP.dense_h_to_4h, dense_4h_to_h; ALiBi; softmax in fp32
# (F.softmax(attn_weights, dim=-1, dtype=torch.float32)). peft's default for bloom: query_key_value.
_BLOOM = ImplTraits(
    positions=Positions.ALIBI,
    fused_qkv=True,
    eager_only=True,
    peft_modules=(
        ("query_key_value", _QKV),
        ("dense", ("attention.o",)),
        ("dense_h_to_4h", ("mlp.up",)),
        ("dense_4h_to_h", ("mlp.down",)),
    ),
    peft_default_targets=("query_key_value",),
)


def gpt_bigcode(cfg: RawConfig, name: str) -> ModelSpec:
    h = cfg.pos_int("n_embd", 768)  # GPTBigCodeConfig's defaults
    heads = cfg.pos_int("n_head", 12)
    if h % heads:
        raise cfg.error("n_head", f"'n_embd' ({h}) is not divisible by 'n_head' ({heads})", f"a divisor of {h}")
    if cfg.flag("add_cross_attention", False):
        raise cfg.error("add_cross_attention", "field 'add_cross_attention' = true is not supported", "false")
    positions = cfg.pos_int("n_positions", 1024)
    return ModelSpec(
        name=name,
        model_type="gpt_bigcode",
        traits=_BIGCODE,
        hidden_size=h,
        num_layers=cfg.pos_int("n_layer", 12),
        embedding=EmbeddingSpec(vocab_size=cfg.pos_int("vocab_size", 50257), learned_positions=positions),
        attention=AttentionSpec(
            num_heads=heads,
            num_kv_heads=1 if cfg.flag("multi_query", True) else heads,
            head_dim=h // heads,
            qkv_bias=True,
            out_bias=True,
        ),
        mlp=MlpSpec(
            gated=False,
            intermediate_size=cfg.pos_int("n_inner", 4 * h),
            bias=True,
            activation=cfg.text("activation_function", "gelu_pytorch_tanh"),
        ),
        norm=NormSpec(kind="layer", bias=True),
        tied_embeddings=cfg.flag("tie_word_embeddings", True),
        max_position_embeddings=positions,
        buffer_bytes=positions * positions,  # GPTBigCodeModel.__init__: torch.tril(torch.ones((p, p), dtype=bool))
        # GPTBigCodeConfig defaults: 0.1 each; embedding and residual dropout share one probability here (GPT-2's)
        dropout=max(cfg.probability("resid_pdrop", 0.1), cfg.probability("embd_pdrop", 0.1)),
        attention_dropout=cfg.probability("attn_pdrop", 0.1),
        **storage(cfg),
        source=cfg.source,
    )


def bloom(cfg: RawConfig, name: str) -> ModelSpec:
    # BloomConfig reads the published checkpoints' "n_embed" as hidden_size (BloomConfig.__post_init__)
    h = cfg.pos_int("n_embed") if cfg.has("n_embed") else cfg.pos_int("hidden_size", 64)
    heads = cfg.pos_int("n_head", 8)
    if h % heads:
        raise cfg.error("n_head", f"'hidden_size' ({h}) is not divisible by 'n_head' ({heads})", f"a divisor of {h}")
    if cfg.flag("slow_but_exact", False):
        # BloomAttention/BloomMLP then slice the output projections into pretraining_tp partial sums
        raise cfg.error("slow_but_exact", "field 'slow_but_exact' = true is not supported (allowed: false)", "false")
    return ModelSpec(
        name=name,
        model_type="bloom",
        traits=_BLOOM,
        hidden_size=h,
        num_layers=cfg.pos_int("n_layer", 2),
        embedding=EmbeddingSpec(vocab_size=cfg.pos_int("vocab_size", 250880), norm=True),
        attention=AttentionSpec(num_heads=heads, num_kv_heads=heads, head_dim=h // heads, qkv_bias=True, out_bias=True),
        # BloomMLP: dense_h_to_4h and dense_4h_to_h with bias, BloomGelu (tanh approximation)
        mlp=MlpSpec(gated=False, intermediate_size=4 * h, bias=True, activation="bloom_gelu"),
        norm=NormSpec(kind="layer", bias=True),
        tied_embeddings=cfg.flag("tie_word_embeddings", True),
        max_position_embeddings=None,  # ALiBi: nothing in the model bounds the positions
        dropout=cfg.probability("hidden_dropout", 0.0),
        attention_dropout=cfg.probability("attention_dropout", 0.0),
        **storage(cfg),
        source=cfg.source,
    )

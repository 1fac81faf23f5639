"""Adapters for LayerNorm-era models with biases: gpt2, gpt_neox, opt, bert, roberta, phi, falcon."""

from __future__ import annotations

import dataclasses

from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.adapters.decoders import check_kv_heads
from vramwise.spec.adapters.storage import storage
from vramwise.spec.model import AttentionSpec, EmbeddingSpec, MlpSpec, ModelSpec, NormSpec
from vramwise.spec.traits import HeadKind, ImplTraits, Positions

_QKV = ("attention.q", "attention.k", "attention.v")
# GPT-2: Conv1D c_attn (fused qkv), both output projections named c_proj; learned positions (wpe); eager
# softmax in the compute dtype (modeling_gpt2.eager_attention_forward).
_GPT2 = ImplTraits(
    positions=Positions.LEARNED,
    fused_qkv=True,
    softmax_in_compute_dtype=True,
    peft_modules=(("c_attn", _QKV), ("c_proj", ("attention.o",)), ("c_fc", ("mlp.up",)), ("c_proj", ("mlp.down",))),
    peft_default_targets=("c_attn",),
)
# GPT-NeoX and Falcon name their linears alike (query_key_value, dense, dense_h_to_4h, dense_4h_to_h).
_NEOX_MODULES = (
    ("query_key_value", _QKV),
    ("dense", ("attention.o",)),
    ("dense_h_to_4h", ("mlp.up",)),
    ("dense_4h_to_h", ("mlp.down",)),
)
# GPT-NeoX: fused qkv; partial rotary written as torch.cat (modeling_gpt_neox.apply_rotary_pos_emb).
_NEOX = ImplTraits(
    fused_qkv=True, rotary_cat_copy=True, peft_modules=_NEOX_MODULES, peft_default_targets=("query_key_value",)
)
# Falcon: fused qkv; softmax in hidden_states.dtype; KV heads broadcast to the query heads before the kernel
# (FalconAttention: torch.broadcast_to(key, query.shape)). Rotary: configs with alibi=true (falcon-rw) use
# ALiBi instead in transformers; the adapter does not model them and counts them as rotary.
_FALCON = ImplTraits(
    fused_qkv=True,
    softmax_in_compute_dtype=True,
    kv_broadcast=True,
    peft_modules=_NEOX_MODULES,
    peft_default_targets=("query_key_value",),
)
# OPT: separate q/k/v/out_proj and fc1/fc2; learned positions (OPTLearnedPositionalEmbedding).
_OPT = ImplTraits(
    positions=Positions.LEARNED,
    peft_modules=(
        ("q_proj", ("attention.q",)),
        ("k_proj", ("attention.k",)),
        ("v_proj", ("attention.v",)),
        ("out_proj", ("attention.o",)),
        ("fc1", ("mlp.up",)),
        ("fc2", ("mlp.down",)),
    ),
    peft_default_targets=("q_proj", "v_proj"),
    heads=(HeadKind.CAUSAL_LM, HeadKind.SEQUENCE_CLASSIFICATION, HeadKind.BARE),  # no OPTForTokenClassification
)
# Phi-2: separate q/k/v, dense, fc1/fc2; partial rotary written as torch.cat (modeling_phi.apply_rotary_pos_emb).
_PHI = ImplTraits(
    rotary_cat_copy=True,
    peft_modules=(
        ("q_proj", ("attention.q",)),
        ("k_proj", ("attention.k",)),
        ("v_proj", ("attention.v",)),
        ("dense", ("attention.o",)),
        ("fc1", ("mlp.up",)),
        ("fc2", ("mlp.down",)),
    ),
    peft_default_targets=("q_proj", "v_proj", "fc1", "fc2"),
)
# BERT: learned positions; BertModel (no LM head, a pooler) unless architectures[0] names a head
# (spec/heads.py). Its training refuses peft (estimate/train/training.py _check_classifier), so its peft names
# (query, key, value, dense) are never asked for; they are left at the default.
_BERT = ImplTraits(
    positions=Positions.LEARNED,
    head=HeadKind.BARE,
    heads=(HeadKind.MASKED_LM, HeadKind.SEQUENCE_CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION, HeadKind.BARE),
    pooled_classifier=True,
    causal_kv_cache=False,  # BertModel.forward: use_cache = False unless config.is_decoder (the encoder default)
    softmax_in_compute_dtype=True,  # modeling_bert.eager_attention_forward: softmax(attn_weights, dim=-1)
)


def _mha(cfg: RawConfig, h: int, heads_key: str, kv: int | None = None, *, bias: bool = True) -> AttentionSpec:
    heads = cfg.pos_int(heads_key)
    return AttentionSpec(
        num_heads=heads,
        num_kv_heads=kv or heads,
        head_dim=cfg.divides(heads_key, h, "hidden_size"),
        qkv_bias=bias,
        out_bias=bias,
    )


def gpt2(cfg: RawConfig, name: str) -> ModelSpec:
    h = cfg.pos_int("n_embd")
    return ModelSpec(
        name=name,
        model_type="gpt2",
        traits=_GPT2,
        hidden_size=h,
        num_layers=cfg.pos_int("n_layer"),
        embedding=EmbeddingSpec(vocab_size=cfg.pos_int("vocab_size"), learned_positions=cfg.pos_int("n_positions")),
        attention=_mha(cfg, h, "n_head"),
        mlp=MlpSpec(
            gated=False,
            intermediate_size=cfg.pos_int("n_inner", 4 * h),
            bias=True,
            activation=cfg.text("activation_function", "gelu_new"),
        ),
        norm=NormSpec(kind="layer", bias=True),
        tied_embeddings=cfg.flag("tie_word_embeddings", True),
        max_position_embeddings=cfg.pos_int("n_positions"),
        # GPT2Config defaults: 0.1 for all three; the embedding and residual sites share one probability here.
        dropout=max(cfg.probability("resid_pdrop", 0.1), cfg.probability("embd_pdrop", 0.1)),
        attention_dropout=cfg.probability("attn_pdrop", 0.1),
        **storage(cfg),
        source=cfg.source,
    )


def gpt_neox(cfg: RawConfig, name: str) -> ModelSpec:
    h = cfg.pos_int("hidden_size")
    return ModelSpec(
        name=name,
        model_type="gpt_neox",
        traits=_NEOX,
        hidden_size=h,
        num_layers=cfg.pos_int("num_hidden_layers"),
        embedding=EmbeddingSpec(vocab_size=cfg.pos_int("vocab_size")),
        attention=_mha(cfg, h, "num_attention_heads", bias=cfg.flag("attention_bias", True)),
        mlp=MlpSpec(gated=False, intermediate_size=cfg.pos_int("intermediate_size"), bias=True, activation="gelu"),
        norm=NormSpec(kind="layer", bias=True),
        tied_embeddings=cfg.flag("tie_word_embeddings", False),
        parallel_block=cfg.flag("use_parallel_residual", True),
        max_position_embeddings=cfg.optional_int("max_position_embeddings", None),
        **storage(cfg),
        source=cfg.source,
    )


def opt(cfg: RawConfig, name: str) -> ModelSpec:
    h = cfg.pos_int("hidden_size")
    proj = cfg.pos_int("word_embed_proj_dim", h)
    bias = cfg.flag("enable_bias", True)
    pre_norm = cfg.flag("do_layer_norm_before", True)
    if not cfg.flag("layer_norm_elementwise_affine", True):
        raise cfg.error(
            "layer_norm_elementwise_affine",
            "field 'layer_norm_elementwise_affine' = false is not supported (allowed: true)",
            "true",
        )
    max_pos = cfg.pos_int("max_position_embeddings", 2048)  # OPTConfig's default
    return ModelSpec(
        name=name,
        model_type="opt",
        traits=_OPT,
        hidden_size=h,
        num_layers=cfg.pos_int("num_hidden_layers"),
        # OPT's learned positions start at an offset of 2 (a fairseq legacy): the table has max_pos + 2 rows.
        embedding=EmbeddingSpec(
            vocab_size=cfg.pos_int("vocab_size"), learned_positions=max_pos + 2, proj_dim=proj if proj != h else None
        ),
        attention=_mha(cfg, h, "num_attention_heads", bias=bias),
        mlp=MlpSpec(gated=False, intermediate_size=cfg.pos_int("ffn_dim"), bias=bias, activation="relu"),
        # OPT-350m normalises after each block and has no final norm.
        norm=NormSpec(kind="layer", bias=True, final=pre_norm and not cfg.flag("_remove_final_layer_norm", False)),
        tied_embeddings=cfg.flag("tie_word_embeddings", True),
        max_position_embeddings=max_pos,
        dropout=cfg.probability("dropout", 0.1),
        attention_dropout=cfg.probability("attention_dropout", 0.0),
        **storage(cfg),
        source=cfg.source,
    )


def bert(cfg: RawConfig, name: str) -> ModelSpec:
    """BERT as ``BertModel`` (encoder plus pooler), the count model cards publish; no LM head."""
    h = cfg.pos_int("hidden_size")
    return ModelSpec(
        name=name,
        model_type="bert",
        # is_decoder true (BertLMHeadModel's setup): causal attention with a cache, use_cache from the config
        traits=dataclasses.replace(_BERT, causal_kv_cache=True) if cfg.flag("is_decoder", False) else _BERT,
        hidden_size=h,
        num_layers=cfg.pos_int("num_hidden_layers"),
        embedding=EmbeddingSpec(
            vocab_size=cfg.pos_int("vocab_size"),
            learned_positions=cfg.pos_int("max_position_embeddings", 512),
            token_types=cfg.pos_int("type_vocab_size", 2),
            norm=True,
        ),
        attention=_mha(cfg, h, "num_attention_heads"),
        mlp=MlpSpec(gated=False, intermediate_size=cfg.pos_int("intermediate_size"), bias=True, activation="gelu"),
        norm=NormSpec(kind="layer", bias=True, final=False),
        tied_embeddings=True,
        pooler=True,
        max_position_embeddings=cfg.pos_int("max_position_embeddings", 512),
        # BertConfig defaults (training only): hidden dropout after the embeddings and each sublayer, and on the
        # attention probabilities (inside sdpa's kernel; a mask with eager attention)
        dropout=cfg.probability("hidden_dropout_prob", 0.1),
        attention_dropout=cfg.probability("attention_probs_dropout_prob", 0.1),
        **storage(cfg),
        source=cfg.source,
    )


def roberta(cfg: RawConfig, name: str) -> ModelSpec:
    """RoBERTa: BERT's layers and heads (modeling_roberta.py copies them), one token type, and learned positions
    that start after the padding index (RobertaEmbeddings.create_position_ids_from_input_ids: cumsum of the
    non-pad mask + padding_idx), so the table's max_position_embeddings rows (514) hold 514 - pad - 1 = 512
    tokens. RobertaForSequenceClassification's RobertaClassificationHead (dense h x h, tanh, out_proj) has the
    pooler's and classifier's shapes, on the first token's view as BertPooler."""
    spec = bert(cfg, name)
    rows = cfg.pos_int("max_position_embeddings", 514)
    pad = cfg.nonneg_int("pad_token_id", 1)
    if rows <= pad + 1:
        raise cfg.error(
            "max_position_embeddings",
            f"'max_position_embeddings' ({rows}) must exceed pad_token_id + 1 ({pad + 1}): RoBERTa's positions "
            "start after the padding index",
            f"more than {pad + 1}",
        )
    return dataclasses.replace(
        spec,
        model_type="roberta",
        embedding=dataclasses.replace(
            spec.embedding, learned_positions=rows, token_types=cfg.pos_int("type_vocab_size", 1)
        ),
        max_position_embeddings=rows - pad - 1,
    )


def phi(cfg: RawConfig, name: str) -> ModelSpec:
    h = cfg.pos_int("hidden_size")
    heads = cfg.pos_int("num_attention_heads")
    kv = cfg.pos_int("num_key_value_heads", heads)
    check_kv_heads(cfg, heads, kv, "num_key_value_heads")
    att = AttentionSpec(
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=cfg.divides("num_attention_heads", h, "hidden_size"),
        qkv_bias=True,
        out_bias=True,
        qk_norm="layer" if cfg.flag("qk_layernorm", False) else "none",
    )
    return ModelSpec(
        name=name,
        model_type="phi",
        traits=_PHI,
        hidden_size=h,
        num_layers=cfg.pos_int("num_hidden_layers"),
        embedding=EmbeddingSpec(vocab_size=cfg.pos_int("vocab_size")),
        attention=att,
        mlp=MlpSpec(
            gated=False,
            intermediate_size=cfg.pos_int("intermediate_size"),
            bias=True,
            activation=cfg.text("hidden_act", "gelu_new"),
        ),
        # Phi-2 runs attention and MLP in parallel off one LayerNorm.
        norm=NormSpec(kind="layer", bias=True, per_layer=1),
        tied_embeddings=cfg.flag("tie_word_embeddings", False),
        head_bias=True,
        parallel_block=True,
        max_position_embeddings=cfg.optional_int("max_position_embeddings", None),
        **storage(cfg),
        source=cfg.source,
    )


def falcon(cfg: RawConfig, name: str) -> ModelSpec:
    """Falcon in both formats: the in-library ``falcon`` keys and the original RefinedWeb(Model) keys.

    The RW format (falcon-7b/40b as first published) names layers ``n_layer``, heads ``n_head`` and the
    KV heads of the new decoder architecture ``n_head_kv``; it is read here as data, never as remote code.
    """
    h = cfg.pos_int("hidden_size")
    layers = cfg.pos_int("num_hidden_layers") if cfg.has("num_hidden_layers") else cfg.pos_int("n_layer")
    heads_key = "num_attention_heads" if cfg.has("num_attention_heads") else "n_head"
    heads = cfg.pos_int(heads_key)
    new_arch = cfg.flag("new_decoder_architecture", cfg.text("model_type") == "RefinedWeb")
    parallel = cfg.flag("parallel_attn", True)
    if new_arch:
        kv_key = "num_kv_heads" if cfg.has("num_kv_heads") else "n_head_kv"
        kv = cfg.pos_int(kv_key, heads)
        check_kv_heads(cfg, heads, kv, kv_key)
    else:
        kv = 1 if cfg.flag("multi_query", True) else heads
    # Sequential blocks norm twice; parallel ones once (falcon-7b) or once per branch (new architecture).
    per_layer = cfg.pos_int("num_ln_in_parallel_attn", 2 if new_arch else 1) if parallel else 2
    bias = cfg.flag("bias", False)
    return ModelSpec(
        name=name,
        model_type="falcon",
        traits=_FALCON,
        hidden_size=h,
        num_layers=layers,
        embedding=EmbeddingSpec(vocab_size=cfg.pos_int("vocab_size")),
        attention=AttentionSpec(
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=cfg.divides(heads_key, h, "hidden_size"),
            qkv_bias=bias,
            out_bias=bias,
        ),
        mlp=MlpSpec(gated=False, intermediate_size=cfg.pos_int("ffn_hidden_size", 4 * h), bias=bias, activation="gelu"),
        norm=NormSpec(kind="layer", bias=True, per_layer=per_layer),
        tied_embeddings=cfg.flag("tie_word_embeddings", True),
        parallel_block=parallel,
        **storage(cfg),
        source=cfg.source,
    )

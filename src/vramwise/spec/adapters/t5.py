"""T5 and mT5 as ``T5ForConditionalGeneration`` / ``MT5ForConditionalGeneration``: encoder, decoder, LM head.

The ``ModelSpec`` fields describe the decoder stack; ``encoder_decoder`` adds the encoder and the decoder's
cross-attention (spec/encoder_decoder.py, spec/seq2seq_params.py). What each key means is T5Config's
(models/t5/configuration_t5.py, the same in models/mt5/configuration_mt5.py); absent keys take its defaults.
"""

from __future__ import annotations

from vramwise.spec.adapters.config import RawConfig, shown
from vramwise.spec.adapters.storage import storage
from vramwise.spec.encoder_decoder import EncoderDecoderSpec
from vramwise.spec.model import AttentionSpec, EmbeddingSpec, MlpSpec, ModelSpec, NormSpec
from vramwise.spec.traits import HeadKind, ImplTraits, PeftModules, Positions

_FFN_ALLOWED = "'<act>' or 'gated-<act>' (relu, gated-gelu, gated-silu, ...)"
# The classes whose parameters this adapter counts: the encoder, the decoder and the LM head. T5EncoderModel
# (diffusion pipelines' text encoders), T5Model and the classification heads hold other parameters.
_ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration")


def _peft_modules(gated: bool) -> PeftModules:
    """peft's names for T5's linears: q, k, v, o in every attention (encoder, decoder, cross), wi or wi_0 and
    wi_1, and wo in every MLP (modeling_t5.T5Attention, T5DenseActDense, T5DenseGatedActDense)."""
    modules: list[tuple[str, tuple[str, ...]]] = []
    for prefix in ("attention.encoder.", "attention.", "attention.cross."):
        modules += [(name, (prefix + name,)) for name in ("q", "k", "v", "o")]
    mlp = (("wi_0", "gate"), ("wi_1", "up"), ("wo", "down")) if gated else (("wi", "up"), ("wo", "down"))
    for prefix in ("mlp.encoder.", "mlp."):
        modules += [(name, (prefix + group,)) for name, group in mlp]
    return tuple(modules)


def _traits(gated: bool) -> ImplTraits:
    return ImplTraits(
        positions=Positions.RELATIVE,
        # T5 has a head over the vocabulary (tied or not); the encoder-decoder shape itself is spec.encoder_decoder.
        head=HeadKind.CAUSAL_LM,
        # eager_attention_forward in modeling_t5.py: nn.functional.softmax(attn_weights, dim=-1), no fp32
        softmax_in_compute_dtype=True,
        peft_modules=_peft_modules(gated),
        # peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: "t5" and "mt5": ["q", "v"]
        peft_default_targets=("q", "v"),
    )


def _feed_forward(cfg: RawConfig) -> tuple[bool, str]:
    """(gated, activation) from ``feed_forward_proj``, validated as T5Config.validate_architecture does."""
    proj = cfg.text("feed_forward_proj", "relu")
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or not parts[-1]:
        raise cfg.error(
            "feed_forward_proj", f"field 'feed_forward_proj' must be {_FFN_ALLOWED}, got '{proj[:60]}'", _FFN_ALLOWED
        )
    # T5Config.__post_init__: "gated-gelu" runs gelu_new (kept for backwards compatibility)
    activation = "gelu_new" if proj == "gated-gelu" else parts[-1]
    return parts[0] == "gated" and len(parts) == 2, activation


def _check_architecture(cfg: RawConfig) -> None:
    """Refuse a checkpoint of another T5 class rather than count the seq2seq model's parameters for it."""
    value = cfg.data.get("architectures")
    if value is None:
        return  # a hand-written config: the LM, as T5's own examples build it
    first = value[0] if isinstance(value, list) and value else value
    if first not in _ARCHITECTURES:
        allowed = ", ".join(_ARCHITECTURES)
        raise cfg.error(
            "architectures",
            f"field 'architectures' names {shown(first)}: only the encoder-decoder LM ({allowed}) is modelled",
            allowed,
        )


def t5(cfg: RawConfig, name: str) -> ModelSpec:
    """t5 v1.0 (ReLU, tied head scaled by d_model^-0.5), v1.1 / flan-t5 / mt5 (gated-gelu, separate lm_head)."""
    _check_architecture(cfg)
    h = cfg.pos_int("d_model", 512)
    heads = cfg.pos_int("num_heads", 8)
    encoder_layers = cfg.pos_int("num_layers", 6)
    gated, activation = _feed_forward(cfg)
    # tie_word_embeddings: transformers >= 5 builds the head tied whatever the config says (T5Config and
    # MT5Config force True), then from_pretrained unties it when the checkpoint holds a distinct lm_head.weight
    # (modeling_utils.PreTrainedModel.tie_weights: "both are present in the checkpoints with different values,
    # so we will NOT tie them"). v1.1, flan-t5 and mT5 checkpoints do, and say tie_word_embeddings: false; so
    # the config's flag tells the loaded model's parameters. Absent: true (T5Config's default, t5 v1.0).
    tied = cfg.flag("tie_word_embeddings", True)
    return ModelSpec(
        name=name,
        model_type=cfg.text("model_type"),
        traits=_traits(gated),
        hidden_size=h,
        num_layers=cfg.pos_int("num_decoder_layers", encoder_layers),  # T5Config: default = symmetry
        embedding=EmbeddingSpec(vocab_size=cfg.pos_int("vocab_size", 32128)),
        attention=AttentionSpec(num_heads=heads, num_kv_heads=heads, head_dim=cfg.pos_int("d_kv", 64)),
        mlp=MlpSpec(gated=gated, intermediate_size=cfg.pos_int("d_ff", 2048), activation=activation),
        # T5LayerNorm: a weight, no bias, no mean (RMS); decoder blocks norm before self-attention,
        # cross-attention and the MLP, and each stack ends in a final_layer_norm
        norm=NormSpec(kind="rms", per_layer=3, final=True),
        tied_embeddings=tied,
        dropout=cfg.probability("dropout_rate", 0.1),
        attention_dropout=cfg.probability("dropout_rate", 0.1),
        encoder_decoder=EncoderDecoderSpec(
            encoder_layers=encoder_layers,
            relative_buckets=cfg.pos_int("relative_attention_num_buckets", 32),
            # T5ForConditionalGeneration scales when the config's flag was not false; MT5ForConditionalGeneration
            # never does (modeling_mt5.py: lm_head(sequence_output) as it comes)
            scale_decoder_outputs=tied and cfg.text("model_type") == "t5",
        ),
        **storage(cfg),
        source=cfg.source,
    )

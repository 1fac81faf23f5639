"""Typed, validated access to the raw keys of a config.json: the only place raw keys are read.

Every integer read here has a finite upper bound (``SIZE_BOUNDS``). A config is data from the internet: a
``vocab_size`` of 10^400 or a ``num_hidden_layers`` of 10^9 is refused in one line instead of overflowing a
float or looping for minutes. The bounds are generous (tens to thousands of times the largest published
model) so that no real checkpoint meets them; each names the published extreme it is measured against.
"""

from __future__ import annotations

from typing import Any

from vramwise.errors import ConfigError, shown

_MISSING = object()

# Estimates do O(layers) work: the per-layer attention kinds and MoE layer indices built by the adapters
# (decoders.py, deepseek.py), the KV cache summed layer by layer (estimate/kv_cache.py), GGUF's per-layer bit
# mix (formats.py), pipeline stages (estimate/train). This bound keeps that work to milliseconds.
# The deepest published transformer is DeepNet's 1,000 layers (Wang et al. 2022, "DeepNet: Scaling
# Transformers to 1,000 Layers"); the deepest LLM checkpoint has 126 (Llama-3.1-405B). 10x DeepNet.
MAX_LAYERS = 10_000
# The widest published model: Megatron-Turing NLG 530B, hidden 20,480 (PaLM 540B: 18,432). 2^20 is ~50x.
MAX_HIDDEN = 2**20
# The widest published MLP: Megatron-Turing NLG, 4 x 20,480 = 81,920 (PaLM: 73,728). 2^22 is ~50x.
MAX_FFN = 2**22
# The largest published vocabulary: 262,144 (Gemma 3; Gemma 2 and PaLM 256,000). 2^24 is 64x.
MAX_VOCAB = 2**24
# The most attention heads in a published model: 128 (DeepSeek-V3, Llama-3.1-405B, MT-NLG). 2^16 is 512x;
# the bound also keeps the "allowed tp" list (estimate/sharding.py divisors) instant.
MAX_HEADS = 2**16
# The widest published head: 256 (Gemma, Gemma 2). 2^16 is 256x.
MAX_HEAD_DIM = 2**16
# The most experts in a published checkpoint: 2,048 (Switch-C 1.6T; Kimi K2 has 384, DeepSeek-V3 256).
# 2^16 is 32x.
MAX_EXPERTS = 2**16
# The longest published context: 10,485,760 tokens (Llama 4 Scout, max_position_embeddings). 2^32 is ~400x.
MAX_POSITIONS = 2**32
# The largest published SSM state per channel: 256 (Falcon-H1's mamba_d_state default, transformers
# FalconH1Config; Mamba-2 128, Jamba 16). 2^16 is 256x.
MAX_SSM_STATE = 2**16
# Mamba's convolution width and expansion factor: 4 and 2 in every published config (JambaConfig, FalconH1Config,
# Mamba2Config defaults). 2^10 is 256x the width.
MAX_SSM_SMALL = 2**10
# A key not named below (e.g. num_ln_in_parallel_attn, a small count): a 32-bit count, far past any
# meaningful value, and the total-parameter bound (adapters/__init__.py) still holds the products.
MAX_OTHER = 2**32

SIZE_BOUNDS: dict[str, int] = {
    **dict.fromkeys(
        (
            "num_hidden_layers",
            "n_layer",
            "first_k_dense_replace",
            "max_window_layers",
            "decoder_sparse_step",
            "sliding_window_pattern",
            "num_nextn_predict_layers",
        ),
        MAX_LAYERS,
    ),
    **dict.fromkeys(("hidden_size", "n_embd", "word_embed_proj_dim", "q_lora_rank", "kv_lora_rank"), MAX_HIDDEN),
    "n_embed": MAX_HIDDEN,  # BLOOM's name for hidden_size
    # A classifier's outputs: no published classifier has more classes than the largest vocabulary (a token
    # classifier over a vocabulary is that vocabulary), so MAX_VOCAB bounds them too.
    "num_labels": MAX_VOCAB,
    **dict.fromkeys(
        (
            "intermediate_size",
            "n_inner",
            "ffn_dim",
            "ffn_hidden_size",
            "moe_intermediate_size",
            "shared_expert_intermediate_size",
        ),
        MAX_FFN,
    ),
    **dict.fromkeys(("vocab_size", "type_vocab_size"), MAX_VOCAB),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_key_value_heads", "num_kv_heads", "n_head_kv"), MAX_HEADS),
    **dict.fromkeys(("head_dim", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"), MAX_HEAD_DIM),
    **dict.fromkeys(
        ("num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok", "n_shared_experts"),
        MAX_EXPERTS,
    ),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "sliding_window"), MAX_POSITIONS),
    # rope_scaling's (and Phi-3's top-level) pre-extension context (spec/rope.py): a context like any other
    "original_max_position_embeddings": MAX_POSITIONS,
    # State-space hybrids (spec/adapters/hybrid.py): layer patterns are layer indices; the dt rank is at most a
    # hidden size (Jamba's "auto" is ceil(h / 16)).
    **dict.fromkeys(
        ("attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset"), MAX_LAYERS
    ),
    "mamba_dt_rank": MAX_HIDDEN,
    "mamba_d_state": MAX_SSM_STATE,
    **dict.fromkeys(("mamba_d_conv", "mamba_expand"), MAX_SSM_SMALL),
}
# T5 / mT5 (T5Config) name their sizes their own way; the same published extremes bound them.
SIZE_BOUNDS.update(
    {
        **dict.fromkeys(("num_layers", "num_decoder_layers"), MAX_LAYERS),
        "d_model": MAX_HIDDEN,
        "d_ff": MAX_FFN,
        "num_heads": MAX_HEADS,
        "d_kv": MAX_HEAD_DIM,
    }
)

# Vision towers (spec/adapters/vision.py). The largest published tower input is Gemma 3's 896 pixels (SigLIP;
# mllama 560, idefics3 364); 2^16 is 73x. Patches are 14 to 32 pixels wide, merges and pixel shuffles 2 to 4,
# Qwen2-VL's temporal patch 2, mllama's tiles 4, an MLP ratio 4, 3 colour channels: 2^10 is 32x the largest.
# Gemma 3 gives an image 256 tokens; 2^20 is 4,096x. The widths, depths and heads take the text model's bounds.
MAX_IMAGE_SIZE = 2**16
MAX_VISION_FACTOR = 2**10
SIZE_BOUNDS.update(
    {
        "image_size": MAX_IMAGE_SIZE,
        "mm_tokens_per_image": 2**20,
        **dict.fromkeys(
            (
                "patch_size",
                "spatial_merge_size",
                "temporal_patch_size",
                "scale_factor",
                "max_num_tiles",
                "mlp_ratio",
                "num_channels",
                "in_channels",
            ),
            MAX_VISION_FACTOR,
        ),
        **dict.fromkeys(("depth", "num_global_layers"), MAX_LAYERS),
        **dict.fromkeys(("embed_dim", "out_hidden_size", "vision_output_dim"), MAX_HIDDEN),
        **dict.fromkeys(("num_heads", "attention_heads"), MAX_HEADS),
    }
)


def _int_like(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class RawConfig:
    """A config dict whose reads name the offending field when a value is missing or invalid."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def error(self, key: str, message: str, allowed: str | None = None) -> ConfigError:
        """A one-line ConfigError about field ``key``, naming the config it came from."""
        return ConfigError(f"{self.source}: {message}", field=key, allowed=allowed)

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, f"field '{key}' is missing (required for this architecture)")
            return default
        return value

    def _bounded(self, key: str, value: Any, low: int, what: str) -> int:
        top = SIZE_BOUNDS.get(key, MAX_OTHER)
        if not _int_like(value) or not low <= value <= top:
            allowed = f"an integer from {low} to {top:,}"
            raise self.error(key, f"field '{key}' must be {what} up to {top:,}, got {shown(value)}", allowed)
        return value

    def pos_int(self, key: str, default: Any = _MISSING) -> int:
        """A required positive integer, at most ``SIZE_BOUNDS[key]`` (or ``default`` when absent or null)."""
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        return self._bounded(key, value, 1, "a positive integer")

    def optional_int(self, key: str, absent: int | None) -> int | None:
        """A positive integer that may be explicitly null (None); ``absent`` when the key is not there."""
        if key not in self.data:
            return absent
        if self.data[key] is None:
            return None
        return self.pos_int(key)

    def nonneg_int(self, key: str, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        return self._bounded(key, value, 0, "a non-negative integer")

    def at_most(self, key: str, limit: int, limit_key: str) -> int:
        """A positive integer no larger than another field's value (top-k experts of num_experts)."""
        value = self.pos_int(key)
        if value > limit:
            raise self.error(
                key, f"'{key}' ({value}) must not exceed '{limit_key}' ({limit})", f"an integer from 1 to {limit}"
            )
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"field '{key}' must be true or false, got {shown(value)}", "true or false")
        return value

    def probability(self, key: str, default: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise self.error(key, f"field '{key}' must be a probability in [0, 1), got {shown(value)}", "[0, 1)")
        return float(value)

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"field '{key}' must be a string, got {shown(value)}", "a string")
        return value

    def int_list(self, key: str) -> list[int]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(_int_like(v) for v in value):
            raise self.error(key, f"field '{key}' must be a list of integers, got {shown(value)}", "integers")
        return value

    def divides(self, key: str, total: int, total_key: str) -> int:
        """``total / config[key]``, requiring exact division (e.g. head_dim = hidden / heads)."""
        parts = self.pos_int(key)
        if total % parts:
            raise self.error(
                key, f"'{total_key}' ({total}) is not divisible by '{key}' ({parts})", f"a divisor of {total}"
            )
        return total // parts

    def positive_float(self, key: str, default: float) -> float:
        """A finite positive number (rope_scaling's factor); ``default`` when absent or null."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_OTHER:
            raise self.error(key, f"field '{key}' must be a positive number, got {shown(value)}", "a number > 0")
        return float(value)

    def fraction(self, key: str) -> float:
        """A share in (0, 1] (partial_rotary_factor, rotary_pct)."""
        value = self._get(key, _MISSING)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise self.error(key, f"field '{key}' must be a number in (0, 1], got {shown(value)}", "(0, 1]")
        return float(value)

    def mapping(self, key: str) -> RawConfig | None:
        """A nested object (rope_scaling) read with the same checks, its errors naming ``key``; None when absent."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"field '{key}' must be an object, got {shown(value)}", "a JSON object")
        return RawConfig(value, f"{self.source} ({key})")

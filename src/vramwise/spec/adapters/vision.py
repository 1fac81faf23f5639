"""Vision-language models: the language model as its own adapter reads it, plus the vision tower and projector.

llava, gemma3, idefics3, smolvlm, qwen2_vl, qwen2_5_vl, mllama. Each counts the tensors its transformers
``*ForConditionalGeneration`` builds (``tests/spec/test_vision_params.py`` compares with the model on the meta
device) and says how many tokens an image adds to the text context. Keys a hub config omits take the default of
the transformers config class named beside each table below.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from vramwise.spec.adapters.config import RawConfig, shown
from vramwise.spec.model import ModelSpec, VisionSpec

Group = tuple[str, int, str, int, int]  # (name, count, kind, tensors, in_features): spec/params.ParamGroup's fields
TextAdapter = Callable[[RawConfig, str], ModelSpec]

# --- config-class defaults (transformers 5.x) ---------------------------------------------------------------------
_CLIP = {  # CLIPVisionConfig
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
}
_SIGLIP = {**_CLIP, "hidden_act": "gelu_pytorch_tanh", "patch_size": 16, "vision_use_head": True}  # SiglipVisionConfig
# Idefics3VisionConfig, SmolVLMVisionConfig
_IDEFICS3 = {**_CLIP, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152, "num_attention_heads": 16}
_QWEN2_VL = {  # Qwen2VLVisionConfig (hidden_size: the merger's output, the language model's width)
    "depth": 32,
    "hidden_act": "quick_gelu",
    "embed_dim": 1280,
    "hidden_size": 3584,
    "mlp_ratio": 4,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}
_QWEN2_5_VL = {  # Qwen2_5_VLVisionConfig (hidden_size: the tower's width; out_hidden_size: the merger's output)
    "depth": 32,
    "hidden_size": 3584,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 3584,
}
_MLLAMA = {  # MllamaVisionConfig
    "hidden_size": 1280,
    "num_hidden_layers": 32,
    "num_global_layers": 8,
    "attention_heads": 16,
    "num_channels": 3,
    "intermediate_size": 5120,
    "vision_output_dim": 7680,
    "image_size": 448,
    "patch_size": 14,
    "max_num_tiles": 4,
    "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
}
# Text-config defaults where a hub config leaves the language model's sizes to its class (llava-1.5's text_config
# names only the vocabulary; gemma-3's omits vocab_size, heads and head_dim).
_TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {  # LlamaConfig
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "gemma3_text": {  # Gemma3TextConfig
        "vocab_size": 262208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
    },
    "qwen2": {  # Qwen2VLTextConfig, Qwen2_5_VLTextConfig (read by the qwen2 adapter: the same decoder layer)
        "vocab_size": 152064,
        "hidden_size": 8192,
        "intermediate_size": 29568,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
    },
    "mllama_text_model": {  # MllamaTextConfig
        "vocab_size": 128256,
        "hidden_size": 4096,
        "num_hidden_layers": 40,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
    },
}


# --- tensor groups ------------------------------------------------------------------------------------------------
def _lin(name: str, n_in: int, n_out: int, layers: int = 1) -> Group:
    return (name, n_in * n_out * layers, "linear", layers, n_in)


def _vec(name: str, size: int, tensors: int, kind: str) -> Group:
    return (name, size * tensors, kind, tensors, 0)


def _encoder(prefix: str, h: int, i: int, L: int, *, bias: bool = True, norm_bias: bool = True) -> list[Group]:
    """L pre-norm layers of attention (q, k, v, o) and a plain two-layer MLP, as CLIP, SigLIP and Qwen2-VL
    build them (CLIPEncoderLayer, SiglipEncoderLayer, Qwen2VLVisionBlock: one fused qkv, the same count)."""
    groups = [
        _lin(f"{prefix}.attention", h, h, 4 * L),
        _lin(f"{prefix}.mlp.fc1", h, i, L),
        _lin(f"{prefix}.mlp.fc2", i, h, L),
    ]
    if bias:
        groups.append(_vec(f"{prefix}.bias", 4 * h + i + h, L, "bias"))
    groups.append(_vec(f"{prefix}.norms", h * (2 if norm_bias else 1), 2 * L, "norm"))
    return groups


def _patch_conv(h: int, channels: int, kernel: int, *, bias: bool) -> list[Group]:
    groups = [("vision.patch_embedding", h * channels * kernel, "other", 1, 0)]
    if bias:
        groups.append(_vec("vision.patch_embedding_bias", h, 1, "bias"))
    return groups


# --- families ------------------------------------------------------------------------------------------------------
def _vit(cfg: RawConfig, *, clip: bool) -> tuple[list[Group], int, int]:
    """CLIPVisionModel / SiglipVisionModel / Idefics3VisionTransformer: (groups, patches per side, width)."""
    h, i, L = cfg.pos_int("hidden_size"), cfg.pos_int("intermediate_size"), cfg.pos_int("num_hidden_layers")
    patch, channels = cfg.pos_int("patch_size"), cfg.pos_int("num_channels")
    side = cfg.pos_int("image_size") // patch
    positions = side * side + (1 if clip else 0)  # CLIP's class token has a position too
    groups = _patch_conv(h, channels, patch * patch, bias=not clip)  # CLIP's Conv2d has bias=False
    groups.append(_vec("vision.position_embedding", positions * h, 1, "embedding"))
    if clip:
        groups += [_vec("vision.class_embedding", h, 1, "embedding"), _vec("vision.pre_layernorm", 2 * h, 1, "norm")]
    groups += _encoder("vision.layers", h, i, L)
    groups.append(_vec("vision.post_layernorm", 2 * h, 1, "norm"))
    if not clip and cfg.flag("vision_use_head", False):
        # SiglipMultiheadAttentionPoolingHead: a probe, nn.MultiheadAttention (in_proj 3h x h, out_proj), a
        # LayerNorm and an MLP, all with biases
        groups += [
            _vec("vision.head_probe", h, 1, "other"),
            _lin("vision.head_attention", h, h, 4),
            _lin("vision.head_mlp.fc1", h, i),
            _lin("vision.head_mlp.fc2", i, h),
            _vec("vision.head_bias", 4 * h + i + h, 1, "bias"),
            _vec("vision.head_norm", 2 * h, 1, "norm"),
        ]
    return groups, side, h


def _mlp_copies(cfg: RawConfig) -> int:
    """Intermediates a plain vision MLP holds at its peak: fc1's output and its activation, and for quick_gelu
    (activations.QuickGELUActivation: x·sigmoid(1.702·x)) the scaled input and its sigmoid too."""
    return 3 if cfg.text("hidden_act") == "quick_gelu" else 2


def _vision_raw(data: Mapping[str, Any], defaults: dict[str, Any], source: str) -> RawConfig:
    raw = data.get("vision_config")
    if raw is not None and not isinstance(raw, dict):
        raise RawConfig(dict(data), source).error("vision_config", "field 'vision_config' must be an object", "{...}")
    return RawConfig({**defaults, **(raw or {})}, f"{source} (vision_config)")


def _spec(text: ModelSpec, **fields: Any) -> ModelSpec:
    return dataclasses.replace(text, vision=VisionSpec(**fields))


def llava(data: Mapping[str, Any], text: ModelSpec, source: str) -> ModelSpec:
    top = RawConfig(dict(data), source)
    vraw = data.get("vision_config") or {}
    clip = not (isinstance(vraw, dict) and vraw.get("model_type") == "siglip_vision_model")
    cfg = _vision_raw(data, _CLIP if clip else _SIGLIP, source)
    groups, side, h = _vit(cfg, clip=clip)
    t = text.hidden_size
    # LlavaMultiModalProjector: linear_1 (vision width x len(vision_feature_layer)) -> text, act, linear_2
    layers = data.get("vision_feature_layer", -2)
    width = h * (len(layers) if isinstance(layers, list) else 1)
    groups += [_lin("projector.linear_1", width, t), _lin("projector.linear_2", t, t)]
    if top.flag("multimodal_projector_bias", True):
        groups.append(_vec("projector.bias", 2 * t, 1, "bias"))
    # modeling_llava.LlavaModel.get_image_features: strategy "default" drops the CLS token ([:, 1:]); "full" keeps it
    strategy = top.text("vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise top.error(
            "vision_feature_select_strategy", f"must be 'default' or 'full', got '{strategy}'", "default, full"
        )
    cls = 1 if clip else 0
    tokens = side * side + (cls if strategy == "full" else 0)
    return _spec(
        text,
        family="clip" if clip else "siglip",
        groups=tuple(groups),
        hidden_size=h,
        intermediate_size=cfg.pos_int("intermediate_size"),
        num_heads=cfg.pos_int("num_attention_heads"),
        num_layers=cfg.pos_int("num_hidden_layers"),
        patches_per_sequence=side * side + cls,
        tokens_per_image=tokens,
        mlp_copies=_mlp_copies(cfg),
    )


def gemma3(data: Mapping[str, Any], text: ModelSpec, source: str) -> ModelSpec:
    top = RawConfig(dict(data), source)
    cfg = _vision_raw(data, _SIGLIP, source)
    groups, side, h = _vit(cfg, clip=False)
    # Gemma3MultiModalProjector: mm_input_projection_weight (vision x text) and mm_soft_emb_norm (Gemma3RMSNorm);
    # the average pool to mm_tokens_per_image has no parameters
    groups += [_lin("projector.input_projection", h, text.hidden_size), _vec("projector.soft_emb_norm", h, 1, "norm")]
    return _spec(
        text,
        family="siglip",
        groups=tuple(groups),
        hidden_size=h,
        intermediate_size=cfg.pos_int("intermediate_size"),
        num_heads=cfg.pos_int("num_attention_heads"),
        num_layers=cfg.pos_int("num_hidden_layers"),
        patches_per_sequence=side * side,
        tokens_per_image=top.pos_int("mm_tokens_per_image", 256),  # Gemma3Config default
        mlp_copies=_mlp_copies(cfg),
        assumption="gemma3: mm_tokens_per_image per image (Gemma3ImageProcessor's pan-and-scan crops, off by default, "
        "are not counted)",
    )


# Idefics3ImageProcessor / SmolVLMImageProcessor defaults: size longest_edge 4 x 364, max_image_size 364, splitting
# on: a large image becomes 4 x 4 tiles plus the global image, 17 sequences through the tower.
SPLITS_PER_SIDE = 4


def idefics3(data: Mapping[str, Any], text: ModelSpec, source: str) -> ModelSpec:
    top = RawConfig(dict(data), source)
    cfg = _vision_raw(data, _IDEFICS3, source)
    groups, side, h = _vit(cfg, clip=False)
    scale = top.pos_int("scale_factor", 2)  # Idefics3Config / SmolVLMConfig default
    if side % scale:
        raise top.error(
            "scale_factor",
            f"'scale_factor' ({scale}) must divide the patches per side ({side})",
            f"a divisor of {side}",
        )
    # Idefics3SimpleMLP: modality_projection Linear(vision x scale^2 -> text, bias=False) after the pixel shuffle
    groups.append(_lin("projector.modality_projection", h * scale * scale, text.hidden_size))
    # processing_idefics3: image_seq_len = ((image_size // patch_size) ** 2) / (scale_factor ** 2) per split
    per_split = side * side // (scale * scale)
    splits = SPLITS_PER_SIDE * SPLITS_PER_SIDE + 1
    return _spec(
        text,
        family="siglip",
        groups=tuple(groups),
        hidden_size=h,
        intermediate_size=cfg.pos_int("intermediate_size"),
        num_heads=cfg.pos_int("num_attention_heads"),
        num_layers=cfg.pos_int("num_hidden_layers"),
        sequences_per_image=splits,
        patches_per_sequence=side * side,
        tokens_per_image=splits * per_split,
        resolution="idefics3",
        patch_size=cfg.pos_int("image_size"),
        tokens_per_tile=per_split,
        mlp_copies=_mlp_copies(cfg),
        # get_image_features copies the real images' pixels (pixel_values[real_images_inds]) and their boolean
        # mask, both held while the tower runs
        held_elements=3 * cfg.pos_int("image_size") ** 2,
        held_bytes=cfg.pos_int("image_size") ** 2,
        assumption=f"{text.model_type}: without --image-size, an image split as far as the image processor's defaults "
        f"allow (4 x 4 tiles + the global image = {splits} splits of {per_split} tokens); the row/column marker "
        "tokens are not counted",
    )


# Qwen2VLImageProcessor's default size: longest_edge (max_pixels) 28 x 28 x 1280, so an image is resized to at
# most 1280 merged tokens (28 = patch 14 x merge 2); smaller images use fewer, down to shortest_edge (min_pixels)
# 56 x 56.
QWEN_MAX_PIXELS = 28 * 28 * 1280
QWEN_MIN_PIXELS = 56 * 56


def qwen2_vl(data: Mapping[str, Any], text: ModelSpec, source: str) -> ModelSpec:
    v2_5 = data.get("model_type") == "qwen2_5_vl"
    cfg = _vision_raw(data, _QWEN2_5_VL if v2_5 else _QWEN2_VL, source)
    h = cfg.pos_int("hidden_size" if v2_5 else "embed_dim")
    out = cfg.pos_int("out_hidden_size" if v2_5 else "hidden_size")
    i = cfg.pos_int("intermediate_size") if v2_5 else h * cfg.pos_int("mlp_ratio")
    L, patch, merge = cfg.pos_int("depth"), cfg.pos_int("patch_size"), cfg.pos_int("spatial_merge_size")
    kernel = cfg.pos_int("temporal_patch_size") * patch * patch  # Conv3d over (frames, patch, patch)
    groups = _patch_conv(h, cfg.pos_int("in_channels"), kernel, bias=False)
    if v2_5:
        # Qwen2_5_VLVisionBlock: RMSNorms, fused qkv and proj with biases, a SwiGLU MLP with biases
        groups += [
            _lin("vision.layers.attention", h, h, 4 * L),
            _lin("vision.layers.mlp.gate", h, i, L),
            _lin("vision.layers.mlp.up", h, i, L),
            _lin("vision.layers.mlp.down", i, h, L),
            _vec("vision.layers.bias", 4 * h + 2 * i + h, L, "bias"),
            _vec("vision.layers.norms", h, 2 * L, "norm"),
        ]
    else:
        groups += _encoder("vision.layers", h, i, L)
    # PatchMerger: ln_q over the tower's width, then Linear(h·m², h·m²), GELU, Linear(h·m², out), with biases
    wide = h * merge * merge
    groups += [
        _vec("projector.ln_q", h if v2_5 else 2 * h, 1, "norm"),
        _lin("projector.mlp.0", wide, wide),
        _lin("projector.mlp.2", wide, out),
        _vec("projector.bias", wide + out, 1, "bias"),
    ]
    tokens = QWEN_MAX_PIXELS // (patch * merge) ** 2
    return _spec(
        text,
        family="qwen2_5_vl" if v2_5 else "qwen2_vl",
        groups=tuple(groups),
        hidden_size=h,
        intermediate_size=i,
        num_heads=cfg.pos_int("num_heads"),
        num_layers=L,
        gated_mlp=v2_5,
        patches_per_sequence=tokens * merge * merge,
        tokens_per_image=tokens,
        resolution="qwen2_vl",
        patch_size=patch,
        merge_size=merge,
        mlp_copies=3 if v2_5 else _mlp_copies(cfg),  # SwiGLU: act(gate), up and their product
        rotary_fp32=True,
        scores_one_image=True,
        assumption=f"{text.model_type}: without --image-size, each image at the image processor's default max_pixels "
        f"({QWEN_MAX_PIXELS:,} pixels: {tokens:,} tokens); smaller images use fewer",
    )


def mllama(data: Mapping[str, Any], text: ModelSpec, source: str) -> ModelSpec:
    cfg = _vision_raw(data, _MLLAMA, source)
    h, i = cfg.pos_int("hidden_size"), cfg.pos_int("intermediate_size")
    local, global_ = cfg.pos_int("num_hidden_layers"), cfg.pos_int("num_global_layers")
    patch, tiles = cfg.pos_int("patch_size"), cfg.pos_int("max_num_tiles")
    side = cfg.pos_int("image_size") // patch
    patches = side * side + 1  # MllamaVisionModel.num_patches: the class token included
    ratios = cfg.data["supported_aspect_ratios"]
    if not isinstance(ratios, list) or not ratios:
        raise cfg.error(
            "supported_aspect_ratios", "field 'supported_aspect_ratios' must be a non-empty list", "[[1, 1], ...]"
        )
    ids = len(ratios) + 1  # MllamaVisionConfig.max_aspect_ratio_id = len(supported_aspect_ratios); Embedding(id + 1)
    L = local + global_
    groups = [
        *_patch_conv(h, cfg.pos_int("num_channels"), patch * patch, bias=False),
        _vec("vision.class_embedding", h, 1, "embedding"),
        # MllamaPrecomputedPositionEmbedding: gate, embedding (patches x h), tile_embedding (ids x tiles·patches·h)
        _vec("vision.position_embedding", patches * h, 1, "embedding"),
        _vec("vision.tile_position_embedding", ids * tiles * patches * h, 1, "embedding"),
        # MllamaPrecomputedAspectRatioEmbedding before and after the local layers: ids x tiles·h each
        _vec("vision.aspect_ratio_embeddings", ids * tiles * h, 2, "embedding"),
        _vec("vision.gates", 1, 3 + 2 * global_, "other"),  # 3 embedding gates, gate_attn and gate_ffn per global layer
        _vec("vision.pre_post_layernorm", 2 * h, 2, "norm"),
        # MllamaVisionEncoderLayer: q, k, v, o without bias, fc1/fc2 with bias, two LayerNorms
        _lin("vision.layers.attention", h, h, 4 * L),
        _lin("vision.layers.mlp.fc1", h, i, L),
        _lin("vision.layers.mlp.fc2", i, h, L),
        _vec("vision.layers.bias", i + h, L, "bias"),
        _vec("vision.layers.norms", 2 * h, 2 * L, "norm"),
    ]
    t = text.hidden_size
    groups += [_lin("projector.linear", cfg.pos_int("vision_output_dim"), t), _vec("projector.bias", t, 1, "bias")]
    cross = text.vision.cross_layers if text.vision else ()
    # MllamaCrossAttentionDecoderLayer: besides the q/k/v/o, norms and MLP a self-attention layer has (counted
    # with the text layers), a q_norm and k_norm over head_dim and two scalar gates
    d = text.attention.head_dim
    groups += [
        _vec("attention.cross_qk_norm", d, 2 * len(cross), "norm"),
        _vec("attention.cross_gates", 1, 2 * len(cross), "other"),
    ]
    # MllamaTextModel.embed_tokens has vocab_size + 8 rows (the image token and padding); lm_head has vocab_size
    groups.append(_vec("embeddings.extra_tokens", 8 * t, 1, "embedding"))
    # The tiles of one image are concatenated and each padded to a multiple of 8 patches before the transformer
    # (MllamaVisionModel.forward: num_padding_patches); the padding is sliced off before the projector.
    padded = -(-patches // 8) * 8
    return _spec(
        text,
        family="mllama",
        groups=tuple(groups),
        hidden_size=h,
        intermediate_size=i,
        num_heads=cfg.pos_int("attention_heads"),
        num_layers=L,
        patches_per_sequence=tiles * padded,
        # processing_mllama: one <|image|> token per image in the text; the features enter through cross-attention
        tokens_per_image=1,
        cross_layers=cross,
        cross_tokens_per_image=tiles * patches,
        retained_layers=local,
        # the (S x S) aspect-ratio attention mask in the compute dtype and the patch embeddings (the conv output)
        held_elements=(tiles * padded) ** 2 + tiles * side * side * h,
        assumption=f"mllama: every image padded to max_num_tiles {tiles} (the image processor pads to the maximum)",
    )


def mllama_text(cfg: RawConfig, name: str, llama: TextAdapter) -> ModelSpec:
    """MllamaTextModel: Llama layers, those in cross_attention_layers cross-attending to the image instead."""
    spec = llama(cfg, name)
    layers = cfg.int_list("cross_attention_layers")
    if any(not 0 <= i < spec.num_layers for i in layers) or len(set(layers)) != len(layers):
        raise cfg.error(
            "cross_attention_layers",
            f"field 'cross_attention_layers' must list distinct layer indices below {spec.num_layers}",
            f"distinct integers from 0 to {spec.num_layers - 1}",
        )
    # A placeholder VisionSpec carries the cross layers to the mllama adapter above, which replaces it.
    return dataclasses.replace(
        spec,
        vision=VisionSpec(
            family="mllama",
            groups=(),
            hidden_size=1,
            intermediate_size=1,
            num_heads=1,
            num_layers=1,
            patches_per_sequence=1,
            tokens_per_image=0,
            cross_layers=tuple(sorted(layers)),
        ),
    )


VisionAdapter = Callable[[Mapping[str, Any], ModelSpec, str], ModelSpec]
# model_type -> (the language model's model_type when text_config omits it, the vision adapter)
MULTIMODAL: dict[str, tuple[str, VisionAdapter]] = {
    "llava": ("llama", llava),  # LlavaConfig's default text_config
    "gemma3": ("gemma3_text", gemma3),
    "idefics3": ("llama", idefics3),
    "smolvlm": ("llama", idefics3),  # SmolVLM is Idefics3 with another processor; the same modules
    "qwen2_vl": ("qwen2", qwen2_vl),
    "qwen2_5_vl": ("qwen2", qwen2_vl),
    "mllama": ("mllama_text_model", mllama),
}
# Where tie_word_embeddings is absent everywhere: each wrapper config class's default.
_TIED_DEFAULT = {"gemma3": True}


def text_config(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The language model's keys with the defaults its config class supplies and the checkpoint-wide keys.

    Qwen2-VL configs on the hub are flat (the text keys at the top level, beside vision_config); newer ones and
    every other family nest them in text_config. transformers 5 reads tie_word_embeddings from the outer config
    (falling back to text_config's for older saves), so the top level wins here too."""
    model_type = data["model_type"]
    default_type, _ = MULTIMODAL[model_type]
    raw = data.get("text_config")
    if raw is not None and not isinstance(raw, dict):
        raise RawConfig(dict(data), source).error("text_config", "field 'text_config' must be an object", "{...}")
    if raw is None:
        inner = (
            {k: v for k, v in data.items() if k not in ("vision_config", "model_type")}
            if model_type.startswith("qwen2")
            else {}
        )
    else:
        inner = dict(raw)
    inner_type = inner.get("model_type") or default_type
    if not isinstance(inner_type, str):
        raise RawConfig(inner, f"{source} (text_config)").error(
            "model_type", f"the language model's model_type must be a string, got {shown(inner_type)}", "a string"
        )
    if model_type.startswith("qwen2"):
        inner_type = "qwen2"  # Qwen2VLTextModel's layers are Qwen2's (q/k/v biases); only the rotary differs
    text = {**_TEXT_DEFAULTS.get(inner_type, {}), **inner, "model_type": inner_type}
    # as spec/adapters/__init__.py's _with_wrapper_storage: the wrapper's quantization_config, and its dtype when
    # text_config names none
    if "quantization_config" in data and "quantization_config" not in text:
        text["quantization_config"] = data["quantization_config"]
    if not ({"torch_dtype", "dtype"} & text.keys()):
        text |= {k: data[k] for k in ("torch_dtype", "dtype") if k in data}
    tied = data.get("tie_word_embeddings", inner.get("tie_word_embeddings", _TIED_DEFAULT.get(model_type, False)))
    text["tie_word_embeddings"] = tied
    return text


# The skip-list keys transformers' quantization configs use (spec/adapters/quant_config.py _SKIP_KEYS), and the
# module names of the towers and projectors of the families above.
_SKIP_KEYS = ("modules_to_not_convert", "ignore", "ignored_layers", "llm_int8_skip_modules", "skip_modules")
_TOWER = re.compile(r"vision|visual|multi_modal|connector|merger")


def _tower_quantized(data: Mapping[str, Any]) -> bool:
    """Whether the checkpoint's quantization reaches the vision tower (see VisionSpec.quantized)."""
    q = data.get("quantization_config")
    if not isinstance(q, dict):
        return True  # 16-bit, or a format the user picks: bitsandbytes and fp8 quantize every nn.Linear
    if q.get("quant_method") == "gptq":
        return False  # optimum's GPTQ quantizes the blocks of block_name_to_quantize: the language model's layers
    skipped = [e for key in _SKIP_KEYS if isinstance(q.get(key), list) for e in q[key] if isinstance(e, str)]
    return not any(_TOWER.search(e) for e in skipped)


def multimodal_spec(
    data: Mapping[str, Any], *, name: str, source: str, adapters: Mapping[str, TextAdapter]
) -> ModelSpec:
    """A vision-language model's spec: its language model (by that model's own adapter) with the vision tower."""
    model_type = data["model_type"]
    text = text_config(data, source)
    cfg = RawConfig(text, f"{source} (text_config)")
    inner_type = text["model_type"]
    if inner_type == "mllama_text_model":
        spec = mllama_text(cfg, name, adapters["llama"])
    elif inner_type in adapters:
        spec = adapters[inner_type](cfg, name)
    else:
        supported = ", ".join(sorted(k for k in adapters if k.islower()))
        raise cfg.error(
            "model_type",
            f"the language model's model_type '{inner_type}' is not supported; supported: {supported}",
            supported,
        )
    # peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING has no entry for these wrappers (peft 0.21): LoRA on
    # them needs target_modules, so there is no default to assume
    traits = dataclasses.replace(spec.traits, peft_default_targets=())
    spec = dataclasses.replace(spec, model_type=model_type, source=source, traits=traits)
    spec = MULTIMODAL[model_type][1](data, spec, source)
    if spec.vision is not None and not _tower_quantized(data):
        spec = dataclasses.replace(spec, vision=dataclasses.replace(spec.vision, quantized=False))
    return spec

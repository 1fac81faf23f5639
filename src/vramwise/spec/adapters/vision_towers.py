"""The vision towers and projectors of vision-language models, counted tensor by tensor as each family's
transformers ``*ForConditionalGeneration`` builds them (``tests/spec/test_vision_params.py`` compares with the
model on the meta device), and how many tokens an image adds to the text context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.adapters.vision_defaults import (
    CLIP,
    IDEFICS3,
    MLLAMA,
    QWEN2_5_VL,
    QWEN2_VL,
    QWEN_MAX_PIXELS,
    SIGLIP,
    SPLITS_PER_SIDE,
)
from vramwise.spec.model import ModelSpec, VisionSpec

Group = tuple[str, int, str, int, int]  # (name, count, kind, tensors, in_features): spec/params.ParamGroup's fields
TextAdapter = Callable[[RawConfig, str], ModelSpec]


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
    cfg = _vision_raw(data, CLIP if clip else SIGLIP, source)
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
    cfg = _vision_raw(data, SIGLIP, source)
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


def idefics3(data: Mapping[str, Any], text: ModelSpec, source: str) -> ModelSpec:
    top = RawConfig(dict(data), source)
    cfg = _vision_raw(data, IDEFICS3, source)
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


def qwen2_vl(data: Mapping[str, Any], text: ModelSpec, source: str) -> ModelSpec:
    v2_5 = data.get("model_type") == "qwen2_5_vl"
    cfg = _vision_raw(data, QWEN2_5_VL if v2_5 else QWEN2_VL, source)
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
    cfg = _vision_raw(data, MLLAMA, source)
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

"""Images at inference: the tokens they add to the context, mllama's cross-attention cache, the vision tower's
activations at prefill.

Symbols: N images per sequence, q tower sequences per image (idefics3's splits), S patches per sequence, hv the
tower's width, iv its MLP width, av its heads, c compute bytes, t the tensor-parallel degree.

The tower encodes every image of the batch in one forward before the language model's prefill, one layer's
temporaries at a time, as the text workspace (``estimate/workspace.py``) models a layer:
  attention: layer input, norm output, residual (3·hv) + q, k, v and their copies (2·3·hv) + output (hv), per
             patch; eager attention adds the scores q·(av/t)·S²·(2c + 4) per image (QKᵀ, its fp32 softmax, the
             cast back); SDPA never materialises them.
  MLP:       4·hv + 2·iv per patch (fc1 and its activation; Qwen2.5-VL's SwiGLU 3·iv).
  mask:      mllama builds a (S x S) attention mask over the tiles of each image in the compute dtype
             (modeling_mllama._prepare_aspect_ratio_attention_mask), with SDPA too.
The image features (N·tokens·h·c per sequence) that replace the placeholders outlive the tower but are smaller
than one layer's activations of the text prefill; they are not a term.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.kv_cache import kv_elements_per_token
from vramwise.estimate.plan import BATCH, Rule, Vars
from vramwise.spec.adapters.vision import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS, SPLITS_PER_SIDE
from vramwise.spec.model import ModelSpec, VisionSpec
from vramwise.workload import AttentionImpl


def _vision(spec: ModelSpec, images: int) -> VisionSpec | None:
    """The model's vision tower when images are asked for; refuses images on a text-only model."""
    if images and spec.vision is None:
        raise InvalidWorkloadError(
            f"--images ({images}): {spec.name} has no vision tower (a text-only model); images apply to "
            "vision-language models (llava, gemma3, idefics3, smolvlm, qwen2_vl, qwen2_5_vl, mllama)",
            field="images",
            allowed="0 for a text-only model",
        )
    return spec.vision if images else None


class ImageShape(NamedTuple):
    """One image as the model sees it: text-context tokens, tower sequences, patches per sequence."""

    tokens: int
    sequences: int
    patches: int


def _qwen_resize(width: int, height: int, factor: int) -> tuple[int, int]:
    """Qwen2VLImageProcessor's smart_resize (image_processing_qwen2_vl.py): each side a multiple of ``factor``
    (patch x merge), the area within [min_pixels, max_pixels], the aspect ratio kept as closely as it can."""
    if max(width, height) / min(width, height) > 200:  # smart_resize raises ValueError past this
        raise InvalidWorkloadError(
            f"image_size {width}x{height}: Qwen2-VL's image processor refuses an aspect ratio above 200",
            field="image_size",
            allowed="an aspect ratio of at most 200",
        )
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > QWEN_MAX_PIXELS:
        beta = math.sqrt(height * width / QWEN_MAX_PIXELS)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < QWEN_MIN_PIXELS:
        beta = math.sqrt(QWEN_MIN_PIXELS / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return w, h


# Idefics3ImageProcessor's MAX_IMAGE_SIZE: "4k resolution as absolute maximum"
_IDEFICS3_MAX_SIDE = 4096


def _scaled(width: int, height: int, longest: int) -> tuple[int, int]:
    """The longest side set to ``longest``, the other in proportion (truncated, as int() does)."""
    ratio = width / height
    return (longest, int(longest / ratio)) if width >= height else (int(longest * ratio), longest)


def _idefics3_tiles(width: int, height: int, tile: int) -> int:
    """Sequences one image becomes in Idefics3ImageProcessor (do_image_splitting on): the longest edge rescaled to
    4 x tile, the other side made even (_resize_output_size_rescale_to_max_len), both within 4,096
    (_resize_output_size_scale_below_upper_bound); each side rounded up to a multiple of the tile
    (resize_for_vision_encoder); then rows x columns tiles plus the global image when larger than one tile
    (split_images)."""
    w, h = _scaled(width, height, SPLITS_PER_SIDE * tile)
    w, h = (w, h + h % 2) if w >= h else (w + w % 2, h)
    if max(w, h) > _IDEFICS3_MAX_SIDE:
        w, h = _scaled(w, h, _IDEFICS3_MAX_SIDE)
    w, h = max(w, 1), max(h, 1)
    ratio = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / ratio) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * ratio) / tile) * tile
    if h > tile or w > tile:
        return (h // tile) * (w // tile) + 1
    return 1


def image_shape(vision: VisionSpec, pixels: tuple[int, int] | None) -> ImageShape:
    """An image of ``pixels`` (width, height) as ``vision``'s processor prepares it; None: the stated default."""
    if pixels is None or vision.resolution == "fixed":
        return ImageShape(vision.tokens_per_image, vision.sequences_per_image, vision.patches_per_sequence)
    width, height = pixels
    if vision.resolution == "qwen2_vl":
        factor = vision.patch_size * vision.merge_size
        w, h = _qwen_resize(width, height, factor)
        tokens = (w // factor) * (h // factor)
        return ImageShape(tokens, 1, tokens * vision.merge_size**2)
    tiles = _idefics3_tiles(width, height, vision.patch_size)
    return ImageShape(tiles * vision.tokens_per_tile, tiles, vision.patches_per_sequence)


def image_tokens(spec: ModelSpec, images: int, pixels: tuple[int, int] | None = None) -> int:
    """Tokens ``images`` images add to each sequence's text context (0 without images)."""
    vision = _vision(spec, images)
    return images * image_shape(vision, pixels).tokens if vision else 0


def image_notes(spec: ModelSpec, images: int, context: int, pixels: tuple[int, int] | None = None) -> list[str]:
    """What the image terms assume, for the report."""
    vision = _vision(spec, images)
    if vision is None:
        return []
    shape = image_shape(vision, pixels)
    notes = [
        f"{images} image(s) per sequence, {shape.tokens:,} token(s) each, join the context: {context:,} text + "
        f"{images * shape.tokens:,} image tokens (the KV cache and the prefill count them)"
    ]
    if pixels is not None and vision.resolution == "fixed":
        notes.append(f"--image-size does not change {spec.name}'s tokens: its processor resizes every image")
    if pixels is not None and vision.resolution == "idefics3":
        notes.append(
            f"{spec.name}: a {pixels[0]}x{pixels[1]} image becomes {shape.sequences} tile(s) of "
            f"{vision.tokens_per_tile} tokens (the image processor's defaults: longest edge 4 tiles, splitting on); "
            "the row/column marker tokens are not counted"
        )
    if (pixels is None or vision.resolution == "fixed") and vision.assumption:
        notes.append(vision.assumption)
    return notes


def format_note(spec: ModelSpec, fmt_name: str) -> list[str]:
    """Quantizers disagree on the vision tower; the estimate quantizes it like the language model and says so."""
    if spec.vision is None or fmt_name in ("fp32", "fp16", "bf16"):
        return []
    return [
        f"{fmt_name}: the vision tower's and projector's linear weights are counted in {fmt_name} like the language "
        "model's (bitsandbytes and vLLM's fp8 quantize them; GPTQ/AWQ checkpoints and llama.cpp's mmproj file "
        "usually keep them in 16 bit)"
    ]


def cross_kv_cache(spec: ModelSpec, *, images: int, dtype: str, dtype_bytes: int, tp: int) -> Rule | None:
    """mllama: each cross-attention layer keeps K and V of every image's vision tokens (computed once at
    prefill, modeling_mllama.MllamaTextCrossAttention stores them in the cache at its layer index)."""
    vision = _vision(spec, images)
    if vision is None or not vision.cross_layers:
        return None
    layers, per_image = len(vision.cross_layers), vision.cross_tokens_per_image
    per = kv_elements_per_token(spec, tp)
    return Rule(
        name="kv_cache/cross",
        coef=layers * images * per_image * per * dtype_bytes,
        var=BATCH,
        formula=lambda v: (
            f"b {v.b} x cross layers {layers} x images {images} x vision tokens {per_image:,} x K/V {per} x "
            f"{dtype} {dtype_bytes:g} B"
        ),
        source="modeling_mllama: cross-attention K/V over max_num_tiles x ((image_size/patch)^2 + 1) vision tokens "
        "per image, one per cross_attention_layers entry",
    )


def vision_activations(
    spec: ModelSpec, *, images: int, c: int, attention: AttentionImpl, tp: int, pixels: tuple[int, int] | None = None
) -> Rule | None:
    """The vision tower's largest one-layer live set at prefill, for every image of the batch."""
    vision = _vision(spec, images)
    if vision is None:
        return None
    shape = image_shape(vision, pixels)
    hv, q, S = vision.hidden_size, shape.sequences, shape.patches
    heads, iv = max(1, vision.num_heads // tp), vision.intermediate_size // tp
    qkv = 3 * hv // tp
    att_w = 3 * hv + 2 * qkv + hv // tp
    scores = q * heads * S * S * (2 * c + 4) if attention == "eager" else 0
    mlp_w = 4 * hv + (3 if vision.gated_mlp else 2) * iv
    mask = q * S * S * c if vision.family == "mllama" else 0
    att = q * S * c * att_w + scores
    mlp = q * S * c * mlp_w
    per_image = max(att, mlp) + mask
    which = "attention" if att >= mlp else "MLP"
    width = f"3·hv + 2·qkv + out = {att_w}" if att >= mlp else f"4·hv + MLP = {mlp_w}"

    def formula(v: Vars) -> str:
        f = f"b {v.b} x images {images} x ({which}: patches {q} x {S:,} x c {c} x ({width})"
        if scores and att >= mlp:
            f += f" + eager scores q·(av/t)·S²·(2c+4) = {scores:,}"
        if mask:
            f += f" + aspect-ratio mask S²·c = {mask:,}"
        return f + ")"

    return Rule(
        name="activations/vision",
        coef=images * per_image,
        var=BATCH,
        formula=formula,
        source="one vision-tower layer's live tensors over every image of the batch (estimate/vision.py docstring)",
    )

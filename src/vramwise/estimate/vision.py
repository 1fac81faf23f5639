"""Images at inference: the tokens they add to the context, mllama's cross-attention cache, the vision tower's
activations at prefill.

Symbols: N images per sequence, q tower sequences per image (idefics3's splits), S patches per sequence, hv the
tower's width, iv its MLP width, av its heads, c compute bytes, t the tensor-parallel degree.

The tower encodes every image of the batch in one forward before the language model's prefill, one layer's
temporaries at a time (as ``estimate/workspace.py`` models a text layer), measured on traced forwards
(tests/estimate/test_vision_trace.py):
  attention: layer input, norm output, residual, q, k, v, the attention output and o_proj's (8·hv per patch);
             Qwen2-VL's rotary works on fp32 copies (apply_rotary_pos_emb_vision: q.float(), k.float()), six fp32
             hv-wide tensors at its peak. Eager attention adds the scores (av/t)·S²·(c + 8) per sequence: QKᵀ in c
             bytes, its fp32 copy and the fp32 softmax (aten softmax converts a bf16 input before _softmax); SDPA
             never materialises them. Qwen2-VL's eager attention runs image by image (one image's scores).
  MLP:       layer input, norm output, residual, the MLP output (4·hv) and fc1 with its activation (2·iv;
             quick_gelu keeps 1.702·x and its sigmoid too, SwiGLU act, up and product: 3·iv).
  held:      mllama keeps every local layer's output (its intermediate layers feed the projector), its S x S
             aspect-ratio mask and the patch embeddings; idefics3 a copy of the pixels and of their boolean mask.
The image features (N·tokens·h·c per sequence) that replace the placeholders outlive the tower but are smaller
than one layer's activations of the text prefill; they are not a term.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.kv_cache import kv_elements_per_token
from vramwise.estimate.plan import BATCH, ONE, Rule, Transients, Vars
from vramwise.estimate.term import PhaseKind
from vramwise.spec.adapters.vision_defaults import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS, SPLITS_PER_SIDE
from vramwise.spec.model import ModelSpec, VisionSpec
from vramwise.workload import AttentionImpl, InferSetup


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
    if not spec.vision.quantized:
        return [f"{fmt_name}: the checkpoint's quantization leaves the vision tower and projector in 16 bit"]
    return [
        f"{fmt_name}: the vision tower's and projector's linear weights are counted in {fmt_name} like the language "
        "model's (bitsandbytes and vLLM's fp8 quantize them; GPTQ/AWQ checkpoints and llama.cpp's mmproj file "
        "usually keep them in 16 bit)"
    ]


def with_image_tokens(spec: ModelSpec, setup: InferSetup) -> InferSetup:
    """``setup`` with each prompt lengthened by its images' tokens (itself without images)."""
    extra = image_tokens(spec, setup.images, setup.image_pixels)
    return dataclasses.replace(setup, context=setup.context + extra) if extra else setup


def vision_phases(spec: ModelSpec, setup: InferSetup, out: Transients, *, c: int) -> list[tuple[PhaseKind, list[int]]]:
    """The tower's prefill phase, before the text layers' (none without images)."""
    pixels = setup.image_pixels
    tower = vision_activations(spec, images=setup.images, c=c, attention=setup.attention, tp=setup.tp, pixels=pixels)
    return [(PhaseKind.PREFILL_VISION, out.add(*tower))] if tower else []


def cross_kv_cache(spec: ModelSpec, *, images: int, dtype: str, dtype_bytes: int, tp: int) -> tuple[Rule, ...]:
    """mllama: each cross-attention layer keeps K and V of every image's vision tokens (computed once at
    prefill, modeling_mllama.MllamaTextCrossAttention stores them in the cache at its layer index)."""
    vision = _vision(spec, images)
    if vision is None or not vision.cross_layers:
        return ()
    layers, per_image = len(vision.cross_layers), vision.cross_tokens_per_image
    per = kv_elements_per_token(spec, tp)
    return (
        Rule(
            name="kv_cache/cross",
            coef=layers * images * per_image * per * dtype_bytes,
            var=BATCH,
            formula=lambda v: (
                f"b {v.b} x cross layers {layers} x images {images} x vision tokens {per_image:,} x K/V {per} x "
                f"{dtype} {dtype_bytes:g} B"
            ),
            source="modeling_mllama: cross-attention K/V over max_num_tiles x ((image_size/patch)^2 + 1) vision tokens "
            "per image, one per cross_attention_layers entry",
        ),
    )


def _attention_bytes(vision: VisionSpec, c: int, tp: int) -> tuple[int, str]:
    """Bytes live per patch inside a tower layer's attention (scores aside), and their breakdown."""
    hv = vision.hidden_size
    if vision.rotary_fp32:
        # layer input and norm output, the fused qkv output, then apply_rotary_pos_emb_vision's fp32 tensors while
        # it builds k_embed: q and k upcast, q_embed, k·cos, rotate_half(k), rotate_half(k)·sin; cos and sin (fp32)
        d = hv // vision.num_heads
        n = c * (2 * hv + 3 * hv // tp) + 4 * 6 * hv // tp + 4 * 2 * d
        return n, f"c·(2·hv + 3·hv/t) + 4 B·6·hv/t (fp32 rotary) + 4 B·2·d = {n}"
    # layer input, norm output, residual, q, k, v, the attention output and o_proj's
    n = c * (4 * hv + 4 * hv // tp)
    return n, f"c·(4·hv + 4·hv/t) = {n}"


def vision_activations(
    spec: ModelSpec, *, images: int, c: int, attention: AttentionImpl, tp: int, pixels: tuple[int, int] | None = None
) -> tuple[Rule, ...]:
    """The vision tower's largest one-layer live set at prefill over every image of the batch, with what its
    forward holds beside it; Qwen2-VL's eager scores, one image at a time, as a rule of their own."""
    vision = _vision(spec, images)
    if vision is None:
        return ()
    shape = image_shape(vision, pixels)
    hv, q, S = vision.hidden_size, shape.sequences, shape.patches
    heads, iv = max(1, vision.num_heads // tp), vision.intermediate_size // tp
    att_b, att_f = _attention_bytes(vision, c, tp)
    # eager: QKᵀ (c), its fp32 copy and fp32 softmax (aten softmax converts a bf16 input before _softmax)
    scores = heads * S * S * (c + 8) if attention == "eager" else 0
    per_seq_scores = 0 if vision.scores_one_image else scores
    mlp_b = c * (4 * hv + vision.mlp_copies * iv)
    att, mlp = S * att_b + per_seq_scores, S * mlp_b
    held = vision.held_elements * c + vision.held_bytes + vision.retained_layers * S * hv * c
    per_image = q * (max(att, mlp) + held)
    which = f"attention S·({att_f})" if att >= mlp else f"MLP S·c·(4·hv + {vision.mlp_copies}·iv/t) = S·{mlp_b}"

    def formula(v: Vars) -> str:
        f = f"b {v.b} x images {images} x sequences {q} x ({which}, S = {S:,}"
        if per_seq_scores and att >= mlp:
            f += f" + eager scores (av/t)·S²·(c+8) = {per_seq_scores:,}"
        if held:
            f += f" + held beside the layer {held:,}"
        return f + ")"

    rules = [
        Rule(
            name="activations/vision",
            coef=images * per_image,
            var=BATCH,
            formula=formula,
            source="one vision-tower layer's live tensors over every image of the batch, and what the forward "
            "holds beside them (estimate/vision.py docstring; traced: tests/estimate/test_vision_trace.py)",
        )
    ]
    if scores and vision.scores_one_image:
        # The peak is the larger of the layer's widest moment over every patch and, while one image's scores live,
        # the attention's own tensors (c·(4·hv + 4·hv/t) per patch) over every patch plus those scores. The first
        # rule counts the widest moment for every patch; this one adds the scores less what that already counts
        # beyond the attention's tensors for the image's patches: an upper bound, exact for a single image.
        widest = max(att, mlp) // S
        plain = c * (4 * hv + 4 * hv // tp)
        extra = max(0, scores - q * (widest - plain) * S)
        rules.append(
            Rule(
                name="activations/vision/scores",
                coef=extra,
                var=ONE,
                formula=lambda _: (
                    f"one image's eager scores (av/t {heads})·S² {S:,}²·(c+8) {c + 8} B = {scores:,}, less the "
                    f"layer's widest moment beyond attention's tensors for its patches ({widest} - {plain}) x {S:,}"
                ),
                source="modeling_qwen2_vl VisionAttention: without flash attention, images attend one at a time "
                "(torch.split by cu_seqlens)",
            )
        )
    return tuple(rules)


def vision_training_notes(spec: ModelSpec, *, adapters: bool) -> list[str]:
    """What training a vision-language model on text assumes (training takes no images)."""
    if spec.vision is None:
        return []
    notes = [
        "text-only fine-tuning: the vision tower and projector are frozen (weights held, no gradients or optimizer "
        "states); training with images is not modelled"
    ]
    if adapters:
        notes.append(
            "LoRA adapters are counted on the language model's linears only; peft's name-based targets (q_proj, "
            "all-linear) also match the vision tower's modules unless target_modules names the language model"
        )
    if spec.vision.cross_layers:
        notes.append(
            f"the {len(spec.vision.cross_layers)} cross-attention layers are counted like the others, although a "
            "text-only forward skips them (MllamaTextModel.forward): activations, gradients and optimizer states "
            "are overestimated by their share"
        )
    return notes

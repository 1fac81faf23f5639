"""Defaults the transformers config classes and image processors supply for keys a vision-language model's hub
config omits (transformers 5.x), read by spec/adapters/vision_towers.py and estimate/vision.py."""

from __future__ import annotations

from typing import Any

# --- config-class defaults (transformers 5.x) ---------------------------------------------------------------------
CLIP = {  # CLIPVisionConfig
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
}
SIGLIP = {**CLIP, "hidden_act": "gelu_pytorch_tanh", "patch_size": 16, "vision_use_head": True}  # SiglipVisionConfig
# Idefics3VisionConfig, SmolVLMVisionConfig
IDEFICS3 = {**CLIP, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152, "num_attention_heads": 16}
QWEN2_VL = {  # Qwen2VLVisionConfig (hidden_size: the merger's output, the language model's width)
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
QWEN2_5_VL = {  # Qwen2_5_VLVisionConfig (hidden_size: the tower's width; out_hidden_size: the merger's output)
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
MLLAMA = {  # MllamaVisionConfig
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
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
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


# Idefics3ImageProcessor / SmolVLMImageProcessor defaults: size longest_edge 4 x 364, max_image_size 364, splitting
# on: a large image becomes 4 x 4 tiles plus the global image, 17 sequences through the tower.
SPLITS_PER_SIDE = 4


# Qwen2VLImageProcessor's default size: longest_edge (max_pixels) 28 x 28 x 1280, so an image is resized to at
# most 1280 merged tokens (28 = patch 14 x merge 2); smaller images use fewer, down to shortest_edge (min_pixels)
# 56 x 56.
QWEN_MAX_PIXELS = 28 * 28 * 1280
QWEN_MIN_PIXELS = 56 * 56

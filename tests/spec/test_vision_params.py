"""Vision-language models: parameter counts against transformers on the meta device (the *ForConditionalGeneration
class architectures[0] names), image tokens per image by hand from the config."""

from __future__ import annotations

import copy

import pytest
from hf_oracle import hf_params
from tiny_configs import VLM

from vramwise.errors import ConfigError
from vramwise.estimate.weights import weight_terms
from vramwise.formats import get_format
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups, total_params


def _bf16_bytes(spec: ModelSpec) -> int:
    return sum(t.bytes for t in weight_terms(spec, get_format("bf16"), hp_bytes=2))


# Variants exercising keys the tiny configs leave at one value.
_VARIANTS = {
    "llava-siglip-full": {
        **VLM["llava"],
        "vision_feature_select_strategy": "full",
        "multimodal_projector_bias": False,
        "vision_config": {**VLM["llava"]["vision_config"], "model_type": "siglip_vision_model"},
    },
    "gemma3-siglip-head": {
        **VLM["gemma3"],
        "vision_config": {**VLM["gemma3"]["vision_config"], "vision_use_head": True},
    },
}
CASES = {**VLM, **_VARIANTS}


@pytest.mark.parametrize("name", sorted(CASES))
def test_vlm_counts_match_transformers(name: str) -> None:
    config = copy.deepcopy(CASES[name])
    spec = spec_from_config(config, name=name, source=name)
    assert (total_params(spec), _bf16_bytes(spec)) == hf_params(config)


@pytest.mark.parametrize("name", sorted(VLM))
def test_vision_and_projector_are_categories(name: str) -> None:
    categories = {g.category for g in parameter_groups(spec_from_config(VLM[name], name=name, source=name))}
    assert {"vision", "projector"} <= categories


def _tokens(name: str) -> int:
    spec = spec_from_config(VLM[name], name=name, source=name)
    assert spec.vision is not None
    return spec.vision.tokens_per_image


def test_image_tokens_by_hand() -> None:
    # llava: (image_size / patch_size)^2 = (56 / 14)^2 = 16; "default" drops CLS (modeling_llava [:, 1:])
    assert _tokens("llava") == (56 // 14) ** 2 == 16
    # gemma3: mm_tokens_per_image as the config says
    assert _tokens("gemma3") == 16
    # idefics3: per split ((64 / 8)^2) / 2^2 = 16 tokens; 4 x 4 tiles + the global image = 17 splits
    assert _tokens("idefics3") == 17 * (64 // 8) ** 2 // 2**2 == 272
    # smolvlm: scale_factor 4: 64 / 16 = 4 per split
    assert _tokens("smolvlm") == 17 * 4
    # qwen2_vl: max_pixels 28·28·1280 / (patch 14 · merge 2)^2 = 1280 tokens
    assert _tokens("qwen2_vl") == 28 * 28 * 1280 // (14 * 2) ** 2 == 1280
    # mllama: one <|image|> token in the text; cross-attention over max_num_tiles x ((56 / 14)^2 + 1) vision tokens
    spec = spec_from_config(VLM["mllama"], name="mllama", source="mllama")
    assert spec.vision is not None
    assert (spec.vision.tokens_per_image, spec.vision.cross_tokens_per_image) == (1, 2 * ((56 // 14) ** 2 + 1))
    assert spec.vision.cross_layers == (1, 3)
    # its tower attends over both tiles, each of 17 patches padded to 24 (a multiple of 8)
    assert spec.vision.patches_per_sequence == 2 * 24


def test_llava_full_strategy_keeps_cls() -> None:
    spec = spec_from_config(_VARIANTS["llava-siglip-full"], name="x", source="x")
    assert spec.vision is not None and spec.vision.tokens_per_image == 16  # SigLIP has no CLS token to keep
    clip_full = {**VLM["llava"], "vision_feature_select_strategy": "full"}
    spec = spec_from_config(clip_full, name="x", source="x")
    assert spec.vision is not None and spec.vision.tokens_per_image == 17


# gemma-3-4b-it's config.json as published (hub, Dec 2025): the text_config omits vocab_size, heads and head_dim,
# which Gemma3TextConfig supplies; the top level holds torch_dtype.
GEMMA3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "eos_token_id": [1, 106],
    "image_token_index": 262144,
    "initializer_range": 0.02,
    "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "model_type": "gemma3_text",
        "num_hidden_layers": 34,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0",
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "vision_use_head": False,
    },
}


def test_gemma3_published_config_loads() -> None:
    spec = spec_from_config(copy.deepcopy(GEMMA3_4B), name="gemma-3-4b-it", source="gemma-3-4b-it")
    assert spec.stored_dtype == "bf16" and spec.vocab_size == 262208
    assert spec.vision is not None and spec.vision.patches_per_sequence == (896 // 14) ** 2
    assert (total_params(spec), _bf16_bytes(spec)) == hf_params(GEMMA3_4B)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vision_config": [1]}, "vision_config"),
        ({"text_config": "x"}, "text_config"),
        ({"scale_factor": 3}, "scale_factor"),
        ({"vision_config": {"hidden_size": -1}}, "hidden_size"),
        ({"vision_config": {"image_size": 10**30}}, "image_size"),  # bounded (config.SIZE_BOUNDS), never computed
        ({"scale_factor": 2**40}, "scale_factor"),
    ],
)
def test_bad_vision_keys_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        spec_from_config({**VLM["idefics3"], **change}, name="x", source="x")
    assert err.value.field == field


# Published configs (hub config.json files, abridged to the keys that size the model): the hub's own omissions
# (llava-1.5's text_config names only the vocabulary; Qwen2-VL's text keys sit at the top level beside an old
# "in_chans"; mllama's nested text and vision configs) are what the adapters must fill as transformers does.
LLAVA_1_5_7B = {
    "architectures": ["LlavaForConditionalGeneration"],
    "image_token_index": 32000,
    "model_type": "llava",
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "text_config": {
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32064,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
}
QWEN2_VL_7B = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2_vl",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}
LLAMA_3_2_11B_VISION = {
    "architectures": ["MllamaForConditionalGeneration"],
    "image_token_index": 128256,
    "model_type": "mllama",
    "torch_dtype": "bfloat16",
    "text_config": {
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "max_position_embeddings": 131072,
        "model_type": "mllama_text_model",
        "num_attention_heads": 32,
        "num_hidden_layers": 40,
        "num_key_value_heads": 8,
        "pad_token_id": 128004,
        "rope_theta": 500000.0,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "attention_heads": 16,
        "hidden_size": 1280,
        "image_size": 560,
        "intermediate_layers_indices": [3, 7, 15, 23, 30],
        "intermediate_size": 5120,
        "max_num_tiles": 4,
        "model_type": "mllama_vision_model",
        "num_channels": 3,
        "num_global_layers": 8,
        "num_hidden_layers": 32,
        "patch_size": 14,
        "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
        "vision_output_dim": 7680,
    },
}
PUBLISHED = {"llava-1.5-7b": LLAVA_1_5_7B, "qwen2-vl-7b": QWEN2_VL_7B, "llama-3.2-11b-vision": LLAMA_3_2_11B_VISION}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_vlm_configs_match_transformers(name: str) -> None:
    config = copy.deepcopy(PUBLISHED[name])
    spec = spec_from_config(config, name=name, source=name)
    assert (total_params(spec), _bf16_bytes(spec)) == hf_params(config)


def test_published_image_tokens_by_hand() -> None:
    llava = spec_from_config(copy.deepcopy(LLAVA_1_5_7B), name="l", source="l")
    assert llava.vision is not None and llava.vision.tokens_per_image == (336 // 14) ** 2 == 576
    mllama = spec_from_config(copy.deepcopy(LLAMA_3_2_11B_VISION), name="m", source="m")
    # 4 tiles x (40^2 + 1) = 6,404 vision tokens per image in each of the 8 cross-attention layers
    assert mllama.vision is not None and mllama.vision.cross_tokens_per_image == 4 * ((560 // 14) ** 2 + 1) == 6404
    assert len(mllama.vision.cross_layers) == 8


# Which transformers submodules are the tower and which the projector, per family.
_PROJECTOR = ("multi_modal_projector", "connector", "visual.merger")
_TOWER = ("vision_tower", "vision_model", "visual.")


@pytest.mark.parametrize("name", sorted(VLM))
def test_vision_and_projector_equal_the_transformers_submodules(name: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    data = copy.deepcopy(VLM[name])
    hf_config = transformers.AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        model = getattr(transformers, data["architectures"][0])._from_config(hf_config)
    params = dict(model.named_parameters())
    projector = sum(p.numel() for n, p in params.items() if any(k in n for k in _PROJECTOR))
    tower = sum(
        p.numel() for n, p in params.items() if any(k in n for k in _TOWER) and not any(k in n for k in _PROJECTOR)
    )
    groups = parameter_groups(spec_from_config(VLM[name], name=name, source=name))
    assert sum(g.count for g in groups if g.category == "vision") == tower
    assert sum(g.count for g in groups if g.category == "projector") == projector

"""The vision tower's prefill activations against a traced forward of the real transformers model.

Oracle: the live tensor storages (verify/live.py's LiveStorages, 512-byte rounding as CUDA's allocator) while
``get_image_features`` (mllama: ``vision_model``) encodes the images, on CPU with real bf16 tensors (the qwen2_vl
and idefics3 forwards read values, so fake tensors cannot run them). Towers are small but shaped like the real
ones (hv 256, 4 heads, hundreds to thousands of patches).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
import transformers
from tiny_configs import VLM

from vramwise.estimate.vision import vision_activations
from vramwise.spec.adapters import spec_from_config
from vramwise.verify.live import LiveStorages

_TOWER = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2}
CONFIGS: dict[str, dict[str, Any]] = {
    "llava": {
        **VLM["llava"],
        "vision_config": {**_TOWER, "model_type": "clip_vision_model", "num_attention_heads": 4, "image_size": 336,
                          "patch_size": 14},
    },
    "gemma3": {
        **VLM["gemma3"],
        "vision_config": {**_TOWER, "model_type": "siglip_vision_model", "num_attention_heads": 4, "image_size": 448,
                          "patch_size": 14, "vision_use_head": False},
    },
    "idefics3": {**VLM["idefics3"], "vision_config": {**_TOWER, "num_attention_heads": 4, "image_size": 224,
                                                      "patch_size": 14}},
    "qwen2_vl": {**VLM["qwen2_vl"], "vision_config": {"depth": 2, "embed_dim": 256, "hidden_size": 64, "num_heads": 4}},
    "qwen2_5_vl": {
        **VLM["qwen2_5_vl"],
        "vision_config": {"depth": 2, "hidden_size": 256, "intermediate_size": 640, "num_heads": 4,
                          "out_hidden_size": 64, "fullatt_block_indexes": [1]},
    },
    "mllama": {
        **VLM["mllama"],
        "vision_config": {**VLM["mllama"]["vision_config"], **_TOWER, "attention_heads": 4, "image_size": 224,
                          "max_num_tiles": 4, "vision_output_dim": 768,
                          "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1], [2, 2], [1, 4], [4, 1]]},
    },
}  # fmt: skip
QWEN_IMAGE = (560, 448)  # width x height: a 40 x 32 patch grid, 320 tokens


def _inputs(name: str, config: dict[str, Any], images: int) -> dict[str, Any]:
    vc, bf16 = config["vision_config"], torch.bfloat16
    if name.startswith("qwen"):
        grid = [1, QWEN_IMAGE[1] // 14, QWEN_IMAGE[0] // 14]
        patches = grid[1] * grid[2]
        return {
            "pixel_values": torch.zeros(images * patches, 3 * 2 * 14 * 14, dtype=bf16),
            "image_grid_thw": torch.tensor([grid] * images),
        }
    side = vc["image_size"]
    if name == "idefics3":  # 17 tiles per image; all-zero tiles would be dropped as padding
        tiles = 17 * images
        return {
            "pixel_values": torch.ones(1, tiles, 3, side, side, dtype=bf16),
            "pixel_attention_mask": torch.ones(1, tiles, side, side, dtype=torch.bool),
        }
    if name == "mllama":
        tiles = vc["max_num_tiles"]
        return {
            "pixel_values": torch.ones(1, images, tiles, 3, side, side, dtype=bf16),
            "aspect_ratio_ids": torch.tensor([[4] * images]),
            "aspect_ratio_mask": torch.ones(1, images, tiles, dtype=torch.long),
        }
    return {"pixel_values": torch.zeros(images, 3, side, side, dtype=bf16)}


def _traced(name: str, attention: str, images: int) -> int:
    data = copy.deepcopy(CONFIGS[name])
    hf = transformers.AutoConfig.for_model(data.pop("model_type"), **data)
    cls = getattr(transformers, data["architectures"][0])
    tracker = LiveStorages()
    with tracker, torch.no_grad():
        model = cls._from_config(hf, dtype=torch.bfloat16, attn_implementation=attention).eval()
        kw = _inputs(name, CONFIGS[name], images)
        base = tracker.current
        tracker.reset_peak()
        encode = model.model.vision_model if name == "mllama" else model.model.get_image_features
        encode(**kw)  # its output is dropped at once: the peak is reached inside
    return tracker.peak - base


CASES = [(n, a, i) for n in CONFIGS for a in ("sdpa", "eager") for i in (1, 2)]


@pytest.mark.parametrize(("name", "attention", "images"), CASES, ids=[f"{n}-{a}-{i}" for n, a, i in CASES])
def test_vision_activations_match_a_traced_forward(name: str, attention: str, images: int) -> None:
    spec = spec_from_config(copy.deepcopy(CONFIGS[name]), name=name, source=name)
    pixels = QWEN_IMAGE if name.startswith("qwen") else None
    rules = vision_activations(spec, images=images, c=2, attention=attention, tp=1, pixels=pixels)
    estimate = sum(r.coef for r in rules)  # batch 1
    traced = _traced(name, attention, images)
    # never below the trace; above it by at most 8% (eager: the score's fp32 copies are counted at their widest)
    assert traced * 0.99 <= estimate <= traced * 1.08, (estimate, traced, estimate / traced)

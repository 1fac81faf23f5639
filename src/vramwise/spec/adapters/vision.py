"""Vision-language models: the language model as its own adapter reads it, plus the vision tower and projector.

llava, gemma3, idefics3, smolvlm, qwen2_vl, qwen2_5_vl, mllama. The towers are counted in vision_towers.py; keys a
hub config omits take the defaults in vision_defaults.py (each names its transformers config class).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from vramwise.spec.adapters.config import RawConfig, shown
from vramwise.spec.adapters.vision_defaults import TEXT_DEFAULTS
from vramwise.spec.adapters.vision_towers import TextAdapter, gemma3, idefics3, llava, mllama, mllama_text, qwen2_vl
from vramwise.spec.model import ModelSpec

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
    text = {**TEXT_DEFAULTS.get(inner_type, {}), **inner, "model_type": inner_type}
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
_TOWER = r"vision|visual|multi_modal|connector|merger"  # compiled by re's cache when a skip list is read


def _tower_quantized(data: Mapping[str, Any]) -> bool:
    """Whether the checkpoint's quantization reaches the vision tower (see VisionSpec.quantized)."""
    q = data.get("quantization_config")
    if not isinstance(q, dict):
        return True  # 16-bit, or a format the user picks: bitsandbytes and fp8 quantize every nn.Linear
    if q.get("quant_method") == "gptq":
        return False  # optimum's GPTQ quantizes the blocks of block_name_to_quantize: the language model's layers
    skipped = [e for key in _SKIP_KEYS if isinstance(q.get(key), list) for e in q[key] if isinstance(e, str)]
    return not any(re.search(_TOWER, e) for e in skipped)


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
    # them needs target_modules, so there is no default to assume; nor in its IA3 mappings
    traits = dataclasses.replace(spec.traits, peft_default_targets=(), ia3_targets=(), ia3_feedforward=())
    spec = dataclasses.replace(spec, model_type=model_type, source=source, traits=traits)
    spec = MULTIMODAL[model_type][1](data, spec, source)
    if spec.vision is not None and not _tower_quantized(data):
        spec = dataclasses.replace(spec, vision=dataclasses.replace(spec.vision, quantized=False))
    return spec

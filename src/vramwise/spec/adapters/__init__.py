"""One adapter per Hugging Face ``model_type``: the only code that reads raw config keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vramwise.errors import ConfigError, UnsupportedArchitectureError
from vramwise.spec.adapters import classic, decoders, deepseek
from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.model import ModelSpec

Adapter = Callable[[RawConfig, str], ModelSpec]

ADAPTERS: dict[str, Adapter] = {
    "llama": decoders.llama,
    "mistral": decoders.mistral,
    "mixtral": decoders.mixtral,
    "qwen2": decoders.qwen2,
    "qwen2_moe": decoders.qwen2_moe,
    "qwen3": decoders.qwen3,
    "qwen3_moe": decoders.qwen3_moe,
    "gemma": decoders.gemma,
    "gemma2": decoders.gemma2,
    "gemma3_text": decoders.gemma3_text,
    "phi": classic.phi,
    "phi3": decoders.phi3,
    "gpt2": classic.gpt2,
    "gpt_neox": classic.gpt_neox,
    "falcon": classic.falcon,
    "RefinedWebModel": classic.falcon,  # falcon-7b as first published (remote-code format, parsed as data)
    "RefinedWeb": classic.falcon,  # falcon-40b as first published
    "opt": classic.opt,
    "bert": classic.bert,
    "deepseek_v2": deepseek.deepseek,
    "deepseek_v3": deepseek.deepseek,
    "gpt_oss": decoders.gpt_oss,
}

SUPPORTED_MODEL_TYPES = tuple(sorted(k for k in ADAPTERS if k.islower()))


def language_config(data: dict[str, Any]) -> dict[str, Any]:
    """The language model's keys: the one rule for unwrapping ``text_config``, shared by the spec and the twin.

    Multimodal wrappers (Gemma3ForConditionalGeneration, ...) keep the language model in text_config; a
    top-level model_type that has an adapter is read as it stands."""
    text = data.get("text_config")
    if isinstance(text, dict) and data.get("model_type") not in ADAPTERS:
        return {**text, "model_type": text.get("model_type", "")}
    return data


def spec_from_config(data: Any, *, name: str, source: str) -> ModelSpec:
    """Build a ModelSpec from the parsed JSON of a config.json."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a JSON object, got {type(data).__name__}")
    data = language_config(data)
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(f"{source}: field 'model_type' is missing; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        raise UnsupportedArchitectureError(
            f"{source}: model_type '{model_type}' is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return adapter(RawConfig(data, source), name)

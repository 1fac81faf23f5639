"""One adapter per Hugging Face ``model_type``: the only code that reads raw config keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from vramwise.errors import ConfigError, UnsupportedArchitectureError
from vramwise.spec.adapters import bigcode_bloom, classic, decoders, deepseek, hybrid, t5, vision
from vramwise.spec.adapters.config import RawConfig, shown
from vramwise.spec.adapters.rope import read_rope
from vramwise.spec.heads import apply_head
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import total_params

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
    "t5": t5.t5,
    "mt5": t5.t5,
    "jamba": hybrid.jamba,
    "gpt_bigcode": bigcode_bloom.gpt_bigcode,
    "bloom": bigcode_bloom.bloom,
    "roberta": classic.roberta,
}

SUPPORTED_MODEL_TYPES = tuple(sorted(k for k in (*ADAPTERS, *vision.MULTIMODAL) if k.islower()))

# Every size a config gives is bounded on its own (config.SIZE_BOUNDS); their product is bounded here. The
# largest published model has 1.6e12 parameters (Switch-C); 2^48 (2.8e14) is ~175x that, and keeps 16 bytes
# per parameter (mixed-precision Adam: weights, gradients, two moments, fp32 master) below 2^52 bytes, so
# every byte count the estimates add up stays an exact integer even where it passes through a float.
MAX_PARAMS = 2**48


def language_config(data: dict[str, Any]) -> dict[str, Any]:
    """The language model's keys: the one rule for unwrapping ``text_config``, shared by the spec and the twin.

    Multimodal wrappers (Gemma3ForConditionalGeneration, ...) keep the language model in text_config; a
    top-level model_type that has an adapter is read as it stands."""
    text = data.get("text_config")
    model_type = data.get("model_type")
    if isinstance(text, dict) and not (isinstance(model_type, str) and model_type in ADAPTERS):
        return {**text, "model_type": text.get("model_type", "")}
    return data


def _with_wrapper_storage(text: dict[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    """A multimodal wrapper keeps ``quantization_config`` and the dtype at its top level, beside text_config (a
    Gemma-3 or Qwen2.5-VL GPTQ/AWQ repo): the language model's weights are stored that way too, so the spec
    reads them from there when text_config has none (else a 4-bit checkpoint would be estimated at 16 bit)."""
    if text is outer:
        return text
    carried = {k: outer[k] for k in ("quantization_config",) if k in outer and k not in text}
    if not ({"torch_dtype", "dtype"} & text.keys()):
        carried |= {k: outer[k] for k in ("torch_dtype", "dtype") if k in outer}
    return {**text, **carried} if carried else text


def spec_from_config(data: Any, *, name: str, source: str) -> ModelSpec:
    """Build a ModelSpec from the parsed JSON of a config.json."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a JSON object, got {type(data).__name__}")
    if isinstance(data.get("model_type"), str) and data["model_type"] in vision.MULTIMODAL:
        # a vision-language model: its language model by that model's adapter, and the vision tower
        spec = vision.multimodal_spec(data, name=name, source=source, adapters=ADAPTERS)
        if spec.traits.rotary:  # the language model's rope configuration (spec/adapters/rope.py)
            text = vision.text_config(data, source)
            spec = replace(spec, rope=read_rope(RawConfig(text, f"{source} (text_config)"), str(text["model_type"])))
        return _bounded(spec, source)
    data = _with_wrapper_storage(language_config(data), data)
    model_type = data.get("model_type")
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if model_type is None or model_type == "":
        raise ConfigError(f"{source}: field 'model_type' is missing; supported: {supported}", field="model_type")
    if not isinstance(model_type, str):
        raise ConfigError(
            f"{source}: field 'model_type' must be a string naming the architecture, got {shown(model_type)}; "
            f"supported: {supported}",
            field="model_type",
            allowed=supported,
        )
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        raise UnsupportedArchitectureError(
            f"{source}: model_type {shown(model_type)} is not supported; supported: {supported}",
            field="model_type",
            allowed=supported,
        )
    raw = RawConfig(data, source)
    spec = apply_head(adapter(raw, name), raw)  # architectures[0]: the head on top of any family's layers
    if spec.traits.rotary:  # the rope configuration, which no parameter depends on (spec/adapters/rope.py)
        spec = replace(spec, rope=read_rope(raw, model_type))
    return _bounded(spec, source)


def _bounded(spec: ModelSpec, source: str) -> ModelSpec:
    params = total_params(spec)
    if params > MAX_PARAMS:
        raise ConfigError(
            f"{source}: the sizes in the config (layers, hidden_size, intermediate_size, vocab_size, experts) "
            f"give {params:.3g} parameters; at most {MAX_PARAMS:.3g} are accepted (the largest published model "
            "has 1.6e12)",
            allowed=f"sizes giving at most {MAX_PARAMS:,} parameters",
        )
    return spec

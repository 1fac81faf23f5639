"""The independent oracle for parameter counts: the real transformers model built on the meta device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "configs"

# RW-format falcon keys, renamed to what FalconConfig reads (the remote-code config class is never run).
# Encoder-decoder families, built as *ForConditionalGeneration. transformers >= 5 builds their head tied whatever
# tie_word_embeddings says (T5Config forces True) and from_pretrained unties it when the checkpoint holds its own
# lm_head.weight (v1.1, flan-t5, mT5: tie_word_embeddings false); hf_params does the same.
SEQ2SEQ = ("t5", "mt5")
_RW_KEYS = {"n_layer": "num_hidden_layers", "n_head": "num_attention_heads", "n_head_kv": "num_kv_heads"}


def shared_config(name: str) -> dict[str, Any]:
    path = SHARED_CONFIGS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} not present (shared configs live beside the repository)")
    return json.loads(path.read_text())


def hf_param_count(config: dict[str, Any]) -> int:
    """Unique parameters of the transformers model for ``config``, built on the meta device."""
    return hf_params(config)[0]


def hf_model_class(transformers: Any, config: dict[str, Any]) -> Any:
    """The Auto class of the head architectures[0] names, by its suffix, as vramwise reads it (spec/heads.py);
    without one, the family's default (BertModel for bert, the causal LM for every decoder). The class is
    then looked up in transformers' own mapping for the model_type, so a head it lacks fails here too."""
    names = config.get("architectures") or []
    name = names[0] if names else ""
    for suffix, auto in (
        ("ForSequenceClassification", transformers.AutoModelForSequenceClassification),
        ("ForTokenClassification", transformers.AutoModelForTokenClassification),
        ("ForMaskedLM", transformers.AutoModelForMaskedLM),
        ("ForCausalLM", transformers.AutoModelForCausalLM),
        ("LMHeadModel", transformers.AutoModelForCausalLM),
        ("Model", transformers.AutoModel),
    ):
        if name.endswith(suffix):
            return auto
    return transformers.AutoModel if config.get("model_type") == "bert" else transformers.AutoModelForCausalLM


def hf_params(config: dict[str, Any]) -> tuple[int, int]:
    """(unique parameters, their bytes when loaded in bf16) of the transformers model, on the meta device.

    The bytes count what transformers keeps in fp32 whatever the requested dtype (_keep_in_fp32_modules).
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    data = dict(config)
    data.pop("auto_map", None)
    data.pop("quantization_config", None)  # quantizers are irrelevant to the parameter count
    model_type = data.pop("model_type")
    if model_type in ("RefinedWebModel", "RefinedWeb"):
        data = {_RW_KEYS.get(k, k): v for k, v in data.items()}
        data.setdefault("new_decoder_architecture", model_type == "RefinedWeb")
        model_type = "falcon"
    hf_config = transformers.AutoConfig.for_model(model_type, **data)
    auto = hf_model_class(transformers, config)
    if model_type in SEQ2SEQ:
        auto = transformers.AutoModelForSeq2SeqLM  # T5ForConditionalGeneration, MT5ForConditionalGeneration
    arch = (data.get("architectures") or [""])[0]
    with torch.device("meta"):
        if arch.endswith("ForConditionalGeneration") and model_type not in SEQ2SEQ:
            # a vision-language model: the class architectures[0] names
            model = getattr(transformers, arch)._from_config(hf_config, dtype=torch.bfloat16)
        else:
            model = auto.from_config(hf_config, dtype=torch.bfloat16)
        if model_type in SEQ2SEQ and data.get("tie_word_embeddings") is False:
            # what from_pretrained does with a checkpoint holding its own lm_head.weight (checked for real in
            # tests/estimate/test_encoder_decoder.py): the head is not tied to the shared embedding
            model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)

"""safetensors_headers.category_of against the real tensor names: every tiny family of tests/tiny_configs.py is
built by transformers on the meta device, and its parameters (names, shapes, dtypes: what save_pretrained writes,
one name per tied tensor) are filed into categories. Oracle: the elements per category equal spec/params.py's
parameter_groups per category (the config arithmetic, itself checked against transformers' total in
test_params_vs_transformers.py), so a checkpoint of any of these families raises no header-vs-config note."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hf_oracle import SEQ2SEQ, hf_model_class
from tiny_configs import BLOOM, ENCODER_DECODER, FAMILIES, GPT_BIGCODE, HEADS, JAMBA, MISTRAL_WINDOW, VLM

from vramwise.estimate.weights import checkpoint_note
from vramwise.formats import get_format
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.params import parameter_groups
from vramwise.spec.safetensors_headers import TensorHeader, checkpoint_from_tensors

CONFIGS: dict[str, dict[str, Any]] = {
    **FAMILIES,
    "mistral-window": MISTRAL_WINDOW,
    "jamba": JAMBA,
    **ENCODER_DECODER,
    "gpt_bigcode": GPT_BIGCODE,
    "bloom": BLOOM,
    **{f"head-{name}": config for name, config in HEADS.items()},
    **{f"vlm-{name}": config for name, config in VLM.items()},
}
_DTYPE = {2: "BF16", 4: "F32"}  # element size -> the safetensors dtype save_pretrained writes


def _tensors(config: dict[str, Any]) -> list[TensorHeader]:
    """The model's parameters as a safetensors header lists them (bf16, fp32 where transformers keeps it)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    data = dict(config)
    model_type = data.pop("model_type")
    auto = transformers.AutoModelForSeq2SeqLM if model_type in SEQ2SEQ else hf_model_class(transformers, config)
    arch = (data.get("architectures") or [""])[0]
    hf_config = transformers.AutoConfig.for_model(model_type, **data)
    with torch.device("meta"):
        if arch.endswith("ForConditionalGeneration") and model_type not in SEQ2SEQ:  # a vision-language model
            model = getattr(transformers, arch)._from_config(hf_config, dtype=torch.bfloat16)
        else:
            model = auto.from_config(hf_config, dtype=torch.bfloat16)
    out = []
    for name, p in model.named_parameters():  # one name per tensor, tied ones once (as save_pretrained writes)
        shape = tuple(p.shape)
        out.append(TensorHeader(name=name, dtype=_DTYPE[p.element_size()], shape=shape, bytes=p.numel() * 2))
        if model_type in SEQ2SEQ and name == "shared.weight" and data.get("tie_word_embeddings") is False:
            # transformers >= 5 builds the head tied; the untied checkpoints (v1.1, mT5) hold their own lm_head
            # (hf_oracle.hf_params does the same)
            out.append(TensorHeader(name="lm_head.weight", dtype="BF16", shape=shape, bytes=p.numel() * 2))
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_header_categories_equal_the_config_arithmetic(name: str) -> None:
    config = CONFIGS[name]
    spec = spec_from_config(dict(config), name=name, source=name)
    tensors = _tensors(config)
    ckpt = checkpoint_from_tensors(tensors, source=name, files=1, num_layers=spec.num_layers)
    headers = {c.category: c.elements for c in ckpt.categories}
    arithmetic: dict[str, int] = {}
    for g in parameter_groups(spec):
        cat = "experts" if g.category == "experts_shared" else g.category  # as the weights terms file them
        arithmetic[cat] = arithmetic.get(cat, 0) + g.count
    arithmetic = {k: v for k, v in arithmetic.items() if v}
    if headers != arithmetic:
        from vramwise.spec.safetensors_headers import category_of

        by = sorted((category_of(t.name, spec.num_layers), t.name, t.elements) for t in tensors)
        pytest.fail(f"{name}: headers {headers} vs config {arithmetic}\n" + "\n".join(map(str, by)))
    assert checkpoint_note(replace(spec, checkpoint=ckpt), get_format("bf16"), hp_bytes=2) is None

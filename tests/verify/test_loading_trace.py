"""transformers' ``from_pretrained`` traced on a tiny saved checkpoint (CPU): what the CPU twin can and cannot say
about the loading phase (estimate/train/loading.py).

Can: the hf path's model is the weights and nothing more; loading a 16-bit checkpoint into fp32 parameters leaves
the fp32 weights (W = parameters x 4 B), with only small temporaries beside them at the peak.
Cannot: the 16-bit source tensors safetensors reads are created outside the dispatch mode that counts storages, so a
cast's staged source (hf-device-map's ``c``) and any GPU-side staging are not visible on a CPU; and no process
group, so no FSDP or ZeRO-3 loading. That is why ``verify`` leaves the loading phase out (twin._steps_only).
"""

from __future__ import annotations

import os

import pytest
from tiny_configs import FAMILIES

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vramwise.verify.live import LiveStorages, rounded  # noqa: E402


def test_from_pretrained_holds_the_weights(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = transformers.LlamaConfig(**{k: v for k, v in FAMILIES["llama"].items() if k != "model_type"})
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float16).save_pretrained(tmp_path)
    monkeypatch.setenv("HF_DEACTIVATE_ASYNC_LOAD", "1")  # one tensor at a time, as on-the-fly quantization loads
    live = LiveStorages()
    with live:
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    weights = sum(rounded(p.numel() * 4) for p in model.parameters())
    # hidden 256, 3 layers, MLP 688, vocabulary 8,000 (untied): embeddings and head 8,000 x 256 each; a layer:
    # q and o 256 x 256, k and v 256 x 64 (2 KV heads of 32), gate, up, down 256 x 688, two norms; final norm 256
    layer = 2 * 256 * 256 + 2 * 256 * 64 + 3 * 256 * 688 + 2 * 256
    assert sum(p.numel() for p in model.parameters()) == 2 * 8_000 * 256 + 3 * layer + 256
    assert weights <= live.peak < weights * 1.005  # the weights, and temporaries under 0.5% of them

"""The hf engine: today's inference estimate unchanged, and the device_map split per GPU (the placement itself is
checked against transformers and accelerate in test_device_map.py; here, what each GPU then holds)."""

from __future__ import annotations

import pytest
from tiny_configs import FAMILIES

from vramwise.catalog.gpu_spec import get_gpu, parse_gpu
from vramwise.engines import hf
from vramwise.engines.device_map import module_tree, rotary_bytes
from vramwise.errors import InvalidWorkloadError, NeedsArchitectureError, UnsupportedArchitectureError
from vramwise.estimate.inference import estimate_inference
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup
from vramwise.workload.hf_flags import HfFlags, parse_max_memory

MB = 10**6


def _spec(name: str = "llama", layers: int = 8):
    return spec_from_config({**FAMILIES[name], "num_hidden_layers": layers}, name=name, source="test")


@pytest.mark.parametrize("model", ["llama-3.1-8b", "qwen2-7b", "mixtral-8x7b"])
def test_without_device_map_it_is_the_inference_estimate(model: str) -> None:
    spec = catalog_spec(model)
    for setup in (InferSetup(), InferSetup(batch=4, context=8192, new_tokens=512, attention="eager", tp=2)):
        got = hf.plan(spec, setup, HfFlags(), get_gpu("h100"))
        assert got.engine == "hf" and got.version == "5.24.0"
        assert got.estimate == estimate_inference(spec, setup)
        assert got.kv_tokens is None and got.max_sequences is None and got.per_gpu == ()


def test_version_is_the_pinned_transformers() -> None:
    from pathlib import Path

    pins = (Path(__file__).resolve().parents[1] / "constraints.txt").read_text()
    assert f"transformers=={hf.VERSION}" in pins


def test_one_gpu_device_map_holds_what_the_estimate_holds() -> None:
    spec, setup = _spec(), InferSetup(batch=2, context=512, new_tokens=64)
    got = hf.plan(spec, setup, HfFlags(device_map="auto"), get_gpu("h100"))
    full = estimate_inference(spec, setup)
    assert len(got.per_gpu) == 1 and got.host_bytes == 0
    gpu0 = got.per_gpu[0]
    # the whole model on GPU 0: the weights plus the rotary tables (buffers the estimate leaves out, 2 x 16 fp32)
    assert gpu0.term("weights/placed").bytes == full.bytes_of("weights") + rotary_bytes(spec) == full.bytes_of(
        "weights"
    ) + 128
    assert gpu0.term("kv_cache").bytes == full.term("kv_cache").bytes
    peak_phase = gpu0.peak_phase
    assert peak_phase is not None and full.peak_phase is not None
    assert {t.name for t in peak_phase.transient} == {t.name for t in full.peak_phase.transient}


def test_two_gpus_split_layers_kv_and_logits() -> None:
    spec, setup = _spec(layers=8), InferSetup(batch=2, context=512, new_tokens=64)
    # llama tiny in bf16: 12.3 MB. sequential, 10 MB and 16 MB: GPU 0 keeps room for the largest module left (the
    # head, 4,096,000 B): 5,904,000 B take the embedding (4,096,000) and layer 0 (1,385,472), not layer 1; GPU 1
    # takes layers 1-7, the norm (512), the rotary tables (128) and the head
    flags = HfFlags(device_map="sequential", max_memory=(10 * MB, 16 * MB))
    got = hf.plan(spec, setup, flags, get_gpu("h100"), 2)
    g0, g1 = got.per_gpu
    layer = 1_385_472
    assert g0.term("weights/placed").bytes == 4_096_000 + layer
    assert g1.term("weights/placed").bytes == 7 * layer + 512 + 128 + 4_096_000
    full = estimate_inference(spec, setup)
    assert g0.term("kv_cache").bytes + g1.term("kv_cache").bytes == full.term("kv_cache").bytes
    assert g0.term("kv_cache").bytes * 7 == g1.term("kv_cache").bytes  # 1 layer and 7 layers
    assert all(not t.name.startswith("activations/logits") for p in g0.phases for t in p.transient)
    assert any(t.name.startswith("activations/logits") for p in g1.phases for t in p.transient)
    worst = max(got.per_gpu, key=lambda e: e.peak_bytes)
    assert got.estimate.terms == worst.terms and got.estimate.phases == worst.phases  # the notes add the split
    assert got.notes[1].startswith("GPU 0: embed_tokens, layer 0;") and got.host_bytes == 0


def test_what_does_not_fit_is_offloaded_and_said() -> None:
    spec = _spec(layers=8)
    flags = HfFlags(device_map="sequential", max_memory=(5 * MB,))
    got = hf.plan(spec, InferSetup(context=128), flags, get_gpu("h100"))
    total = module_tree(spec, 2).size
    assert got.host_bytes == total - got.per_gpu[0].term("weights/placed").bytes > 0
    assert any("offloads them to disk" in n for n in got.notes)


def test_default_max_memory_is_each_gpus_free_memory() -> None:
    # llama-3.1-8b (16 GB) on two 4090s, balanced: about half the layers each, the head on the last
    choice = parse_gpu("2x4090")
    got = hf.plan(catalog_spec("llama-3.1-8b"), InferSetup(), HfFlags(device_map="balanced"), choice.gpu, 2)
    assert got.host_bytes == 0 and len(got.per_gpu) == 2
    assert "layers 0-15" in got.notes[1] and "lm_head" in got.notes[2]


def test_parse_max_memory() -> None:
    assert parse_max_memory("20GiB, 1.5GB") == (20 * 2**30, 1_500_000_000)
    with pytest.raises(InvalidWorkloadError) as err:
        parse_max_memory("20G")
    assert err.value.field == "max_memory"


def test_refusals_are_one_line() -> None:
    spec, gpu = _spec(), get_gpu("h100")
    cases = [
        (InferSetup(tp=2), HfFlags(device_map="auto"), UnsupportedArchitectureError),
        (InferSetup(weight_format="nf4"), HfFlags(device_map="auto"), UnsupportedArchitectureError),
        (InferSetup(), HfFlags(device_map="auto", max_memory=(MB, MB, MB)), InvalidWorkloadError),
    ]
    for setup, flags, error in cases:
        with pytest.raises(error) as err:
            hf.plan(spec, setup, flags, gpu, 2)
        assert "\n" not in str(err.value)
    with pytest.raises(InvalidWorkloadError):
        HfFlags(max_memory=(MB,))  # max_memory without a device_map
    with pytest.raises(InvalidWorkloadError):
        HfFlags(device_map="everywhere")
    from vramwise.spec.load import resolve_model

    with pytest.raises(NeedsArchitectureError):
        hf.plan(resolve_model("7b"), InferSetup(), HfFlags(device_map="auto"), gpu)


def test_max_memory_text_and_the_dispatch_entry() -> None:
    assert HfFlags(device_map="auto", max_memory="1GiB,2GiB").max_memory == (2**30, 2 * 2**30)
    spec = _spec()
    assert hf.hf_plan(spec, InferSetup(), get_gpu("h100")).estimate == estimate_inference(spec, InferSetup())


def test_a_non_llama_tree_is_named() -> None:
    spec = spec_from_config(FAMILIES["gpt2"], name="gpt2", source="test")  # wpe: learned positions
    got = hf.plan(spec, InferSetup(context=128), HfFlags(device_map="auto"), get_gpu("h100"), 2)
    assert any("modelled as Llama's" in n for n in got.notes)

"""`vramwise infer --engine sglang` and `--device-map` through the application layer: the table, the verdict and
the capacity come from the one plan the engine modules return."""

from __future__ import annotations

import pytest

from vramwise.app.run import InferRequest, infer
from vramwise.catalog.gpu_spec import get_gpu, parse_gpu
from vramwise.engines import hf, sglang
from vramwise.errors import InapplicableOptionError, InvalidLayoutError
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup
from vramwise.workload.hf_flags import HfFlags
from vramwise.workload.sglang_flags import SglangFlags


def test_sglang_engine_is_the_plan() -> None:
    r = infer(InferRequest(model="qwen2-7b", gpu="h100", options={"engine": "sglang", "mem_fraction_static": 0.8}))
    flags = SglangFlags(mem_fraction_static=0.8)
    setup = InferSetup.from_flat(engine="sglang", mem_fraction_static=0.8, compute_capability="9.0")  # --gpu h100's
    assert r.setup == setup
    assert r.engine == sglang.plan(catalog_spec("qwen2-7b"), setup, flags, get_gpu("h100"))
    assert r.estimate == r.engine.estimate and r.capacity is not None
    assert r.capacity.kv_tokens == r.engine.kv_tokens


def test_device_map_is_the_hf_plan_over_the_counted_gpus() -> None:
    r = infer(InferRequest(model="llama-3.1-8b", gpu="2x4090", options={"device_map": "balanced"}))
    assert r.setup.tp == 1 and r.engine is not None and len(r.engine.per_gpu) == 2
    choice = parse_gpu("2x4090")
    want = hf.plan(catalog_spec("llama-3.1-8b"), r.setup, HfFlags(device_map="balanced"), choice.gpu, 2)
    assert r.engine.per_gpu == want.per_gpu
    assert r.capacity is None  # transformers has no pool: no serving capacity beside the verdict


def test_device_map_refusals() -> None:
    with pytest.raises(InvalidLayoutError):
        infer(InferRequest(model="llama-3.1-8b", gpu="2x4090", options={"device_map": "auto", "tp": 2}))
    with pytest.raises(InapplicableOptionError, match="mem_fraction_static is a flag of sglang"):
        infer(InferRequest(model="llama-3.1-8b", gpu="h100", options={"mem_fraction_static": 0.8}))
    with pytest.raises(InapplicableOptionError, match="device_map is a flag of hf"):
        infer(InferRequest(model="llama-3.1-8b", gpu="h100", options={"engine": "sglang", "device_map": "auto"}))


def test_fit_refuses_a_device_map() -> None:
    from vramwise.app.engines import hf_only

    with pytest.raises(InapplicableOptionError, match="--device-map applies to `vramwise infer`"):
        hf_only(InferSetup(hf=HfFlags(device_map="auto")), "fit")


def test_device_map_needs_a_gpu() -> None:
    from vramwise.errors import InvalidWorkloadError

    with pytest.raises(InvalidWorkloadError, match="--device-map needs --gpu"):
        infer(InferRequest(model="llama-3.1-8b", options={"device_map": "auto"}))

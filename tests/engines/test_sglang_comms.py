"""SGLang's distributed-init buffers at tp > 1 and where they enter the token pool, by hand from sglang 0.5.5
(model_runner.py init_torch_distributed / profile_max_num_token, distributed/parallel_state.py GroupCoordinator,
device_communicators/custom_all_reduce.py, pynccl.py) and NVIDIA/nccl v2.27.3-1 src/init.cc computeBuffSizes."""

from __future__ import annotations

from tiny_configs import FAMILIES

from vramwise.catalog.gpu_spec import get_gpu
from vramwise.engines import sglang
from vramwise.engines.log_figures import plan_figures
from vramwise.engines.sglang_comms import distributed_init_terms, torch_group_term
from vramwise.estimate.cuda_context import context_term
from vramwise.spec.adapters import spec_from_config
from vramwise.workload import InferSetup, Overheads
from vramwise.workload.sglang_flags import SglangFlags

MIB = 2**20
# the project's CUDA context without a GPU architecture (estimate/cuda_context.py; its rows are tested there)
CONTEXT = context_term(Overheads()).bytes
# NCCL per channel: SIMPLE 1 << 22 + LL 8 x 512 x 8 x 16 (512 KiB) + LL128 120 x 640 x 8 x 8 = 9,633,792 B;
# 32 channels = 308,281,344 B per communicator
NCCL_COMM = 32 * (4_194_304 + 524_288 + 4_915_200)
# custom_all_reduce.py: meta (max_size + meta_size, the latter not counted), buffer, rank_data of 8192 x 1024 each
CUSTOM_AR = 3 * 8_388_608


def test_no_buffers_at_tp_1() -> None:
    assert distributed_init_terms(1) == ()
    assert torch_group_term(1) is None


def test_tp4_one_pynccl_communicator_and_custom_all_reduce() -> None:
    # ep_size 1: the moe_ep groups and (pp 1) the pp groups hold one GPU each; only the tp group gets PyNccl
    terms = {t.name: t.bytes for t in distributed_init_terms(4)}
    assert terms == {"overhead/nccl": 308_281_344, "overhead/custom_all_reduce": 25_165_824}
    assert terms["overhead/nccl"] == NCCL_COMM and terms["overhead/custom_all_reduce"] == CUSTOM_AR


def test_custom_all_reduce_only_at_its_world_sizes() -> None:
    # CustomAllreduce._SUPPORTED_WORLD_SIZES = [2, 4, 6, 8]
    assert [t.name for t in distributed_init_terms(3)] == ["overhead/nccl"]
    assert [t.name for t in distributed_init_terms(2)] == ["overhead/nccl", "overhead/custom_all_reduce"]


def test_pool_loses_the_fraction_of_the_init_bytes() -> None:
    # profile_max_num_token: rest = available - total x (1 - f), total measured after the distributed init, so
    # tokens = (f x (CUDA total - context - init) - weights) // cell
    spec, gpu = spec_from_config(FAMILIES["llama"], name="llama", source="test"), get_gpu("h100")
    flags = SglangFlags(mem_fraction_static=0.5, context_length=4096)
    got = sglang.plan(spec, InferSetup(context=1000, new_tokens=24, tp=2), flags, gpu, gpu_count=2)
    # llama tiny at tp 2: 2 KV heads / 2 = 1 of 32 dims, 3 layers, K and V, bf16: 1 x 32 x 3 x 2 x 2 = 384 B
    cell = 1 * 32 * 3 * 2 * 2
    weights = got.estimate.bytes_of("weights")
    free = gpu.memory_bytes - CONTEXT - NCCL_COMM - CUSTOM_AR
    assert got.budget == int(0.5 * free)
    assert got.kv_tokens == (int(0.5 * free) - weights) // cell
    names = [t.name for t in got.estimate.persistent]
    # torch's own communicator (first eager all-reduce above 8 MiB, in the first prefill) is held, not subtracted
    assert {"overhead/nccl", "overhead/custom_all_reduce", "overhead/nccl_torch"} <= set(names)
    assert got.estimate.term("overhead/nccl_torch").bytes == NCCL_COMM
    figures = plan_figures(got, gpu_bytes=gpu.memory_bytes, block=1)
    assert figures["distributed_init"] == NCCL_COMM + CUSTOM_AR
    assert any("NVLink" in n for n in got.notes)


def test_tp1_pool_unchanged() -> None:
    spec, gpu = spec_from_config(FAMILIES["llama"], name="llama", source="test"), get_gpu("h100")
    got = sglang.plan(spec, InferSetup(context=1000), SglangFlags(mem_fraction_static=0.5), gpu)
    assert got.budget == int(0.5 * (gpu.memory_bytes - CONTEXT))
    assert not any(t.name.startswith("overhead/nccl") for t in got.estimate.persistent)

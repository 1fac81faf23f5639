"""SGLang's distributed-init buffers at tp > 1 and where they enter the token pool, by hand from sglang 0.5.5
(model_runner.py init_torch_distributed / profile_max_num_token, distributed/parallel_state.py GroupCoordinator,
device_communicators/custom_all_reduce.py, pynccl.py, entrypoints/engine.py _set_envs_and_config: NCCL_CUMEM_ENABLE=0,
NCCL_NVLS_ENABLE=0) and NVIDIA/nccl v2.27.3-1 (src/transport/p2p.cc, src/init.cc initTransportsRank: no runtime
connect without cuMem, so rings and trees at init)."""

from __future__ import annotations

from tiny_configs import FAMILIES

from vramwise.catalog.gpu_spec import get_gpu
from vramwise.engines import sglang
from vramwise.engines.log_figures import plan_figures
from vramwise.engines.sglang_comms import distributed_init_terms, torch_group_term
from vramwise.estimate.cuda_context import context_term
from vramwise.spec.adapters import spec_from_config
from vramwise.workload import InferSetup, Overheads
from vramwise.workload.options import Interconnect
from vramwise.workload.sglang_flags import SglangFlags

MIB = 2**20
# the project's CUDA context without a GPU architecture (estimate/cuda_context.py; its rows are tested there)
CONTEXT = context_term(Overheads()).bytes
# p2p.cc, one send and one receive connection at NCCL's defaults, NVLink (P2P read): send 4,096 + SIMPLE 4 MiB and
# receive 4,096 + LL 524,288 + LL128 4,915,200, each rounded up to 2 MiB: 6 + 6 MiB = 12 MiB per ring channel;
# H100 SXM (NVSwitch) 32 channels: 384 MiB. At 2 ranks the tree's peer is the ring's (nothing more)
NCCL_COMM = 32 * 12 * MIB
# at 4 ranks, init connects trees too: one more send and receive per channel for a rank inside the chain
NCCL_COMM_TP4 = 32 * 12 * MIB + 32 * 12 * MIB
# custom_all_reduce.py: meta (max_size + meta_size, the latter not counted), buffer, rank_data of 8192 x 1024 each
CUSTOM_AR = 3 * 8_388_608


NVSWITCH, PCIE = Interconnect.NVSWITCH, Interconnect.PCIE


def test_no_buffers_at_tp_1() -> None:
    assert distributed_init_terms(1, NVSWITCH) == ()
    assert torch_group_term(1, NVSWITCH) is None


def test_tp4_one_pynccl_communicator_and_custom_all_reduce() -> None:
    # ep_size 1: the moe_ep groups and (pp 1) the pp groups hold one GPU each; only the tp group gets PyNccl;
    # NCCL_NVLS_ENABLE=0: no NVLS buffers on the NVSwitch node
    terms = {t.name: t.bytes for t in distributed_init_terms(4, NVSWITCH)}
    assert terms == {"overhead/nccl": 805_306_368, "overhead/custom_all_reduce": 25_165_824}
    assert terms["overhead/nccl"] == NCCL_COMM_TP4 and terms["overhead/custom_all_reduce"] == CUSTOM_AR


def test_custom_all_reduce_only_at_its_world_sizes_and_on_nvlink_above_2() -> None:
    # CustomAllreduce._SUPPORTED_WORLD_SIZES = [2, 4, 6, 8]; line 144: off above 2 GPUs without full NVLink
    assert [t.name for t in distributed_init_terms(3, NVSWITCH)] == ["overhead/nccl"]
    assert [t.name for t in distributed_init_terms(2, NVSWITCH)] == ["overhead/nccl", "overhead/custom_all_reduce"]
    assert [t.name for t in distributed_init_terms(4, PCIE)] == ["overhead/nccl"]
    assert [t.name for t in distributed_init_terms(2, PCIE)] == ["overhead/nccl", "overhead/custom_all_reduce"]
    # PCIe: 2 ring channels (P2P write: send 2 MiB + receive 10 MiB), and at 4 ranks the tree's as many again
    assert distributed_init_terms(4, PCIE)[0].bytes == 2 * 12 * MIB + 2 * 12 * MIB


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
    assert any("NCCL_CUMEM_ENABLE=0" in n for n in got.notes)


def test_tp1_pool_unchanged() -> None:
    spec, gpu = spec_from_config(FAMILIES["llama"], name="llama", source="test"), get_gpu("h100")
    got = sglang.plan(spec, InferSetup(context=1000), SglangFlags(mem_fraction_static=0.5), gpu)
    assert got.budget == int(0.5 * (gpu.memory_bytes - CONTEXT))
    assert not any(t.name.startswith("overhead/nccl") for t in got.estimate.persistent)

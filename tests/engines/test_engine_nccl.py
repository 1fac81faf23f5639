"""The serving engines' NCCL communicators and custom all-reduce, by hand from NVIDIA/nccl v2.21.5-1 / v2.27.3-1 and
the engines' sources (the oracles are named beside each figure; nothing here was read off the code's output).

NCCL: src/transport/p2p.cc p2pSendSetup / p2pRecvSetup (each side's header 4,096 B plus its protocol buffers,
rounded up to CUDA_IPC_MIN 2 MiB; under P2P read, NVLink, the sender holds SIMPLE), src/init.cc computeBuffSizes
(SIMPLE 4 MiB, LL 524,288 B, LL128 4,915,200 B), src/init.cc initTransportsRank (``runtimeConn = cuMemSupport &&
ncclParamRuntimeConnect()``; without it rings and trees are connected at init), src/transport/generic.cc
ncclTransportTreeConnect, src/channel.cc initChannel (3 device allocations per channel) and src/include/alloc.h
ncclCuMemAlloc (each rounded up to the 2 MiB allocation granularity), src/transport/nvls.cc (NVLS buffers).
"""

from __future__ import annotations

from vramwise.catalog import get_gpu, parse_gpu
from vramwise.catalog.gpu_spec import gpu_interconnect
from vramwise.engines.nccl_comm import SGLANG_NCCL, VLLM_NCCL, communicator, custom_all_reduce_on, link_of
from vramwise.engines.vllm import vllm_plan
from vramwise.engines.vllm_comms import v1_comm_terms
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup
from vramwise.workload.options import Interconnect

MIB = 2**20
NVSWITCH, NVLINK, PCIE = Interconnect.NVSWITCH, Interconnect.NVLINK, Interconnect.PCIE
# p2p.cc at NCCL's defaults. Read (NVLink): send 4,096 + 4 MiB -> 6 MiB; receive 4,096 + 524,288 + 4,915,200 =
# 5,443,584 -> 6 MiB. Write (PCIe): send 4,096 -> 2 MiB; receive 4,096 + 4 MiB + 524,288 + 4,915,200 = 9,637,888 ->
# 10 MiB. One send and one receive side: 12 MiB either way.
PAIR = 12 * MIB


def test_the_interconnect_comes_from_the_catalog_s_form_factor() -> None:
    # SXM Hopper: NVSwitch; A100 (HGX): NVLink; the A10, L4, L40S datasheets list no NVLink: PCIe
    assert [gpu_interconnect(get_gpu(n)) for n in ("h100-80gb", "a100-80gb", "a10", "l4", "l40s", "h100-pcie")] == [
        "nvswitch", "nvlink", "pcie", "pcie", "pcie", "pcie"]
    assert link_of(get_gpu("h100-80gb")) == (NVSWITCH, False)
    assert link_of(parse_gpu("24GiB").gpu) == (NVSWITCH, True)  # a bare size: an HGX node assumed, as training does


def test_cumem_on_connects_the_ring_only_and_rounds_every_small_allocation() -> None:
    # vLLM 0.11.0 (NCCL 2.27.3, cuMem on): runtime connect; the warm-up connects the ring: 32 channels x 12 MiB on
    # H100 SXM; initChannel's 3 allocations per channel + devCommSetup's 2, 2 MiB each
    c = communicator(2, NVSWITCH, VLLM_NCCL["0.11.0"])
    assert (c.ring, c.tree, c.nvls, c.structures) == (32 * PAIR, 0, 0, (3 * 32 + 2) * 2 * MIB)
    # at 4 H100s NVLS too (2.27.3 ncclNvlsBufferSetup): 16 channels x 2 x 128 KiB x 8 steps x 4 heads = 128 MiB,
    # and ncclNvlsSetup's credits 16 x 2 x 64 B x 4 = 8 KiB, rounded up to 2 MiB
    c4 = communicator(4, NVSWITCH, VLLM_NCCL["0.11.0"])
    assert c4.nvls == 128 * MIB + 2 * MIB and c4.tree == 0


def test_cumem_off_connects_rings_and_trees_at_init() -> None:
    # vLLM 0.9.2 (NCCL_CUMEM_ENABLE=0): no runtime connect; at 4 ranks the tree chain adds one send and one receive
    # per channel for a rank inside it: 32 x 12 MiB more; no cuMem rounding of small allocations
    c = communicator(4, NVSWITCH, VLLM_NCCL["0.9.2"])
    assert (c.ring, c.tree, c.structures) == (32 * PAIR, 32 * PAIR, 0)
    assert communicator(2, NVSWITCH, VLLM_NCCL["0.9.2"]).tree == 0  # 2 ranks: the tree's peer is the ring's
    # vLLM 0.8.5 runs NCCL 2.21.5 (torch 2.6.0): NVLS of 16 x 2 x (1 MiB + 2 MiB) x 4 = 384 MiB
    assert communicator(4, NVSWITCH, VLLM_NCCL["0.8.5"]).nvls == 384 * MIB
    # sglang sets NCCL_NVLS_ENABLE=0: none; A100 (NVLink, 24 channels); PCIe (2 channels)
    assert communicator(4, NVSWITCH, SGLANG_NCCL).nvls == 0
    assert communicator(4, NVLINK, SGLANG_NCCL).bytes == 24 * PAIR + 24 * PAIR
    assert communicator(4, PCIE, SGLANG_NCCL).bytes == 2 * PAIR + 2 * PAIR


def test_custom_all_reduce_off_above_two_pcie_gpus() -> None:
    # custom_all_reduce.py CustomAllreduce.__init__: world_size > 2 and not fully connected -> disabled
    assert custom_all_reduce_on(2, PCIE) and not custom_all_reduce_on(4, PCIE) and not custom_all_reduce_on(8, PCIE)
    assert custom_all_reduce_on(4, NVLINK) and custom_all_reduce_on(8, NVSWITCH)
    assert not custom_all_reduce_on(3, NVSWITCH)  # _SUPPORTED_WORLD_SIZES = [2, 4, 6, 8]
    # vllm-qwen3-30b-a3b-a10-tp4-1.log's setup: 4 A10s (PCIe), vLLM 0.8.5: no custom all-reduce, one tp
    # communicator of 2 ring + 2 tree channels x 12 MiB
    setup = InferSetup.from_flat(engine="vllm", tp=4, vllm_version="0.8", max_model_len=8192)
    t = {x.name: x.bytes for x in vllm_plan(catalog_spec("qwen3-30b-a3b"), setup, get_gpu("a10")).estimate.persistent}
    assert "overhead/custom_all_reduce" not in t and t["overhead/nccl"] == 4 * PAIR


def test_symmetric_memory_caps_custom_all_reduce_only_with_multicast() -> None:
    def terms(tp: int, link: Interconnect, release: str = "0.11.0", symm: bool = True) -> dict[str, int]:
        got = v1_comm_terms(tp=tp, pp=1, compute_capability="9.0", link=link, nccl=VLLM_NCCL[release], symm_mem=symm)
        return {t.name: t.bytes for t in got}

    # v0.11.0 H100 SXM tp 8: SymmMemCommunicator enabled (multicast), so CustomAllreduce's max_size is
    # min(CUSTOM_ALL_REDUCE_MAX_SIZES["9.0"][8] = 256 KiB, 8 MiB): meta 256 KiB + buffer 256 KiB + rank_data 8 MiB;
    # the symmetric buffer SYMM_MEM_ALL_REDUCE_MAX_SIZES["9.0"][8] = 64 MiB
    t8 = terms(8, NVSWITCH)
    assert t8["overhead/custom_all_reduce"] == 2 * 256 * 1024 + 8 * MIB and t8["overhead/symm_mem"] == 64 * MIB
    # tp 2: min(64 MiB, 8 MiB) = 8 MiB, unchanged
    assert terms(2, NVSWITCH)["overhead/custom_all_reduce"] == 24 * MIB
    # H100 PCIe tp 2: no multicast, the symmetric buffer is allocated but stays disabled: no cap
    t2 = terms(2, PCIE)
    assert t2["overhead/symm_mem"] == 64 * MIB and t2["overhead/custom_all_reduce"] == 24 * MIB
    # v0.10.2: VLLM_ALLREDUCE_USE_SYMM_MEM defaults to 0: no buffer, no cap
    t10 = terms(8, NVSWITCH, "0.10.2", symm=False)
    assert "overhead/symm_mem" not in t10 and t10["overhead/custom_all_reduce"] == 24 * MIB


def test_without_gpu_p2p_the_connections_are_host_memory_and_custom_all_reduce_is_off() -> None:
    """--interconnect shm: NCCL's SHM transport keeps every connection buffer in host memory (shm.cc
    ncclShmAllocateShareableBuffer: cuMemHostAlloc or an mmap of /dev/shm, NCCL_SHM_USE_CUDA_MEMCPY 0), so what a
    rank holds on the device is initChannel's structures only; custom all-reduce needs P2P (custom_all_reduce.py
    _can_p2p)."""
    shm = Interconnect.SHM
    assert not custom_all_reduce_on(2, shm) and custom_all_reduce_on(2, PCIE)
    assert link_of(get_gpu("h100-80gb"), shm) == (shm, False)  # given wins over the catalog's form factor
    # cuMem on (vLLM 0.11.0): PCIe's rings, 2 channels (search 1 x 2), each 3 allocations + 2 per communicator,
    # each rounded to 2 MiB; no connection bytes on the device
    on = communicator(2, shm, VLLM_NCCL["0.11.0"])
    assert on.channels == 2 and on.ring == 0 and on.tree == 0 and on.nvls == 0
    assert on.bytes == (3 * 2 + 2) * 2 * MIB
    # cuMem off (vLLM 0.9.2): cudaMalloc packs the small structures (not counted): nothing on the device
    assert communicator(4, shm, VLLM_NCCL["0.9.2"]).bytes == 0
    # against PCIe with P2P at tp 2 and cuMem off: 2 channels x 12 MiB
    assert communicator(2, PCIE, VLLM_NCCL["0.9.2"]).bytes == 2 * PAIR


def test_a_v1_plan_at_tp_2_without_p2p_holds_no_nccl_buffers_or_custom_all_reduce() -> None:
    spec = catalog_spec("llama-3-8b")
    terms = {}
    for link in ("pcie", "shm"):
        setup = InferSetup(engine="vllm", tp=2, interconnect=link, context=1, new_tokens=1)
        est = vllm_plan(spec, setup, get_gpu("l40s")).estimate
        terms[link] = {t.name: t.bytes for t in est.persistent}
    assert "overhead/custom_all_reduce" in terms["pcie"] and "overhead/custom_all_reduce" not in terms["shm"]
    # 0.11.0 (cuMem on): PyNccl's tp and ep (dp x tp = 2 GPUs) communicators and torch's own tp one, structures
    # only: (3 x 2 + 2) x 2 MiB each
    assert terms["shm"]["overhead/nccl"] == 2 * 16 * MIB
    assert terms["shm"].get("overhead/nccl_torch", 0) == 16 * MIB


def test_shm_formula_says_the_rings_are_in_host_memory() -> None:
    """Under --interconnect shm the ring's connections hold no device bytes: the formula must not read
    '2 channels x 12 MiB ... = 0' (arithmetic that does not hold), but say where the buffers are."""
    from vramwise.engines.nccl_comm import nccl_term

    term = nccl_term("overhead/nccl", [("tp", 4)], Interconnect.SHM, VLLM_NCCL["0.11.0"], when="w", source="s")
    assert term.bytes == 8 * 2 * 1024 * 1024  # cuMem on: 3 allocations per channel (2) + 2, each 2 MiB
    assert "x 12 MiB" not in term.formula and "host memory" in term.formula
    pcie = nccl_term("overhead/nccl", [("tp", 4)], Interconnect.PCIE, VLLM_NCCL["0.11.0"], when="w", source="s")
    assert "ring 2 channels x 12 MiB" in pcie.formula  # 2 x 12 MiB = 25,165,824 on a device link


def test_interconnect_is_refused_where_no_engine_reads_it() -> None:
    """--interconnect sizes a serving engine's NCCL communicators (vLLM, SGLang); transformers' generate and
    llama.cpp run none (the hf plan counts no communicator at any tp), so the option was ignored in silence."""
    import pytest

    from vramwise.errors import InapplicableOptionError

    for engine in ("hf", "llama.cpp"):
        with pytest.raises(InapplicableOptionError) as err:
            InferSetup(engine=engine, interconnect="shm")
        assert err.value.field == "interconnect" and "\n" not in str(err.value)
        assert InferSetup(engine=engine).interconnect == Interconnect.AUTO  # the default stays accepted
    for engine in ("vllm", "sglang"):
        assert InferSetup(engine=engine, interconnect="shm").interconnect == Interconnect.SHM

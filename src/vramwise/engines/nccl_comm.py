"""NCCL and custom all-reduce as each serving engine release runs them: the one NCCL model (estimate/nccl.py), fed
with the GPU's interconnect and the NCCL environment the engine sets.

What differs per release (read in the engines' sources, the pip wheels):

- The NCCL its torch pin brings (the wheels' ``Requires-Dist: torch==``, read for vLLM 0.6.6, 0.8.5, 0.9.2, 0.10.2,
  0.11.0 and sglang 0.5.5; torch's own nvidia-nccl-cu12 pins taken from torch's wheel metadata, not re-read here):
  vLLM 0.6.x torch 2.5.1 and vLLM 0.8.5 torch 2.6.0 -> NCCL 2.21.5 (MAXCHANNELS 32,
  no runtime connect, NVLS padded by 2 MiB: ``nvls_bytes_v2_21``); vLLM 0.9.2 torch 2.7.0 -> NCCL 2.26.2, sglang
  0.4.9 torch 2.7.1 -> 2.26.2 (not read: taken as 2.27.3's rules); vLLM 0.10.2, 0.11.0 and sglang 0.5.5 torch
  2.8.0 -> NCCL 2.27.3.
- NCCL_CUMEM_ENABLE: vLLM sets it to 0 in every worker from 0.6.x to 0.10.1 (vllm/worker/worker_base.py
  ``WorkerWrapperBase.init_worker`` at v0.6.4/v0.6.6 "see https://github.com/NVIDIA/nccl/issues/1234";
  vllm/env_override.py at v0.8.5, v0.9.2 and v0.10.0, unless /dev/nvidia-caps-imex-channels exists); v0.10.2's
  and v0.11.0's env_override.py no longer set it (``--vllm-version 0.10`` follows v0.10.2; a 0.10.0 or 0.10.1 log
  ran with cuMem off, as 0.9.2 did), so NCCL's default (auto: on with a CUDA 12 driver and VMM,
  src/misc/cudawrap.cc ``ncclCuMemEnable``) holds. sglang sets NCCL_CUMEM_ENABLE=0 and NCCL_NVLS_ENABLE=0
  unless --enable-symm-mem / --enable-nccl-nvls (0.5.5 python/sglang/srt/entrypoints/engine.py
  ``_set_envs_and_config`` lines 679-688; 0.4.9 lines 623-624). vLLM leaves NVLS at NCCL's default.
- Custom all-reduce (vllm/distributed/device_communicators/custom_all_reduce.py ``CustomAllreduce.__init__``,
  v0.6.6 lines 132-138, v0.8.5 lines 133-140, v0.11.0 lines 141-148; sglang 0.5.5 line 144): off at a world size
  above 2 unless the GPUs are fully connected by NVLink (NVML's NVLink P2P status); then off without GPU P2P
  (``_can_p2p``). PCIe cards: on at tp 2 (assumed: the P2P test passes, as on bare-metal datacenter cards; a
  consumer card or a VM without P2P leaves it off), off at tp 4, 6 and 8.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.catalog import Gpu
from vramwise.catalog.gpu_spec import gpu_interconnect
from vramwise.estimate.nccl import Communicator, engine_communicator
from vramwise.estimate.term import Term
from vramwise.workload.options import Interconnect

# A GPU whose catalog entry names no form factor (a custom size, H200, B200): an HGX node, as training assumes
# (estimate/train/comms.py AUTO_INTERCONNECT)
ASSUMED = Interconnect.NVSWITCH


@dataclass(frozen=True, kw_only=True)
class EngineNccl:
    """The NCCL an engine release runs: its version and the environment the engine leaves it."""

    version: str  # the NCCL release the engine's torch pin brings
    cumem: bool  # NCCL_CUMEM_ENABLE (cuMem allocations, and with them runtime connect)
    nvls: bool  # NCCL_NVLS_ENABLE
    source: str  # where the engine sets them

    @property
    def v2_21(self) -> bool:
        return self.version.startswith("2.21")


_VLLM_OFF_V06 = "vllm/worker/worker_base.py WorkerWrapperBase.init_worker: NCCL_CUMEM_ENABLE=0"
_VLLM_OFF = "vllm/env_override.py: NCCL_CUMEM_ENABLE=0 (no multi-node NVLink)"
_VLLM_ON = "vllm/env_override.py sets no NCCL_CUMEM_ENABLE: NCCL's default, cuMem on (src/misc/cudawrap.cc)"
# engine release -> its NCCL
VLLM_NCCL = {
    "0.6.4": EngineNccl(version="2.21.5", cumem=False, nvls=True, source=f"torch 2.5.1; {_VLLM_OFF_V06}"),
    "0.6.6": EngineNccl(version="2.21.5", cumem=False, nvls=True, source=f"torch 2.5.1; {_VLLM_OFF_V06}"),
    "0.8.5": EngineNccl(version="2.21.5", cumem=False, nvls=True, source=f"torch 2.6.0; {_VLLM_OFF}"),
    "0.9.2": EngineNccl(version="2.26.2", cumem=False, nvls=True, source=f"torch 2.7.0; {_VLLM_OFF}"),
    "0.10.2": EngineNccl(version="2.27.3", cumem=True, nvls=True, source=f"torch 2.8.0; {_VLLM_ON}"),
    "0.11.0": EngineNccl(version="2.27.3", cumem=True, nvls=True, source=f"torch 2.8.0; {_VLLM_ON}"),
}
SGLANG_NCCL = EngineNccl(
    version="2.27.3", cumem=False, nvls=False,
    source="torch 2.8.0; python/sglang/srt/entrypoints/engine.py _set_envs_and_config: NCCL_CUMEM_ENABLE=0, "
           "NCCL_NVLS_ENABLE=0 (no --enable-symm-mem, --enable-nccl-nvls)",
)


def link_of(gpu: Gpu, given: Interconnect = Interconnect.AUTO) -> tuple[Interconnect, bool]:
    """The interconnect: ``--interconnect`` when given, else the GPU's (catalog/gpu_spec.py ``gpu_interconnect``),
    and whether it was assumed."""
    if given != Interconnect.AUTO:
        return Interconnect(given), False
    named = gpu_interconnect(gpu)
    return (Interconnect(named), False) if named else (ASSUMED, True)


def custom_all_reduce_on(tp: int, link: Interconnect) -> bool:
    """Custom all-reduce at ``tp`` (vLLM and sglang alike): a supported world size (2, 4, 6, 8), and above 2 GPUs
    full NVLink (NVLink bridges pair two cards only: taken as full NVLink here, a note says so); never without GPU
    peer-to-peer access (custom_all_reduce.py CustomAllreduce.__init__, vLLM v0.6.6.post1-v0.11.0 and sglang 0.5.5:
    ``_can_p2p`` fails, "Custom allreduce is disabled because your platform lacks GPU P2P capability")."""
    if link == Interconnect.SHM:
        return False
    return tp in (2, 4, 6, 8) and (tp == 2 or link != Interconnect.PCIE)


def communicator(tp: int, link: Interconnect, nccl: EngineNccl) -> Communicator:
    """One rank's device memory for one engine communicator of ``tp`` GPUs."""
    return engine_communicator(tp, link, cumem=nccl.cumem, nvls=nccl.nvls, nvls_v2_21=nccl.v2_21)


def described(comm: Communicator, link: Interconnect, nccl: EngineNccl) -> str:
    """The communicator's bytes in words, each part with the rule it follows."""
    parts = [f"ring {comm.channels} channels x 12 MiB (a send and a receive connection, SIMPLE 4 MiB + LL 512 KiB "
             "+ LL128 4,915,200 B, each side rounded to 2 MiB) = " f"{comm.ring:,}"]
    if link == Interconnect.SHM:  # estimate/nccl.py _on_device: the SHM transport's buffers are host memory
        parts = [f"ring {comm.channels} channels, their connections in host memory (SHM transport) = 0"]
    if comm.tree:
        parts.append(f"tree {comm.channels} channels x one more send and receive = {comm.tree:,} (no runtime connect: "
                     "trees connected at init)")
    if comm.nvls:
        parts.append(f"NVLS {comm.nvls:,}")
    if comm.structures:
        parts.append(f"{comm.structures // (2 << 20)} cuMem allocations of 2 MiB (3 per channel + 2) = "
                     f"{comm.structures:,}")
    env = f"NCCL {nccl.version}, {link} link, cuMem {'on' if nccl.cumem else 'off'}, NVLS " + (
        "on" if nccl.nvls else "off")
    return f"{' + '.join(parts)} ({env})"


NCCL_SOURCE = ("NVIDIA/nccl src/transport/p2p.cc p2pSendSetup/p2pRecvSetup, src/graph/connect.cc ncclTopoPostset, "
               "src/init.cc initTransportsRank (runtimeConn), src/transport/generic.cc, src/channel.cc initChannel, "
               "src/transport/nvls.cc (v2.21.5-1, v2.27.3-1); estimate/nccl.py engine_communicator")


def nccl_term(name: str, groups: list[tuple[str, int]], link: Interconnect, nccl: EngineNccl, *,
              when: str, source: str) -> Term:
    """One term for the communicators of ``groups`` (name, GPUs), each one of the engine's PyNccl communicators."""
    comms = [communicator(n, link, nccl) for _, n in groups]
    what = "; ".join(f"{g} group of {n}: {described(c, link, nccl)}" for (g, n), c in zip(groups, comms, strict=True))
    return Term(name=name, bytes=sum(c.bytes for c in comms), formula=f"{len(comms)} communicator(s): {what}; {when}",
                source=f"{source}; {NCCL_SOURCE}; {nccl.source}")


def topology_note(gpu: Gpu, tp: int, engine: str, given: Interconnect = Interconnect.AUTO) -> str | None:
    """What the plan assumed about the node, or None at tp 1."""
    if tp <= 1:
        return None
    link, assumed = link_of(gpu, given)
    how = (f"assumed {link} (an HGX node: {gpu.name}'s catalog entry names no form factor)" if assumed else
           f"{link} as given (--interconnect, or the log's own line)" if given != Interconnect.AUTO else
           f"{link} from {gpu.name}'s form factor (catalog/gpu_spec.py gpu_interconnect)")
    words = (f"{engine}'s communicators at tp {tp}: the interconnect {how} sizes NCCL's channels "
             f"(estimate/nccl.py SEARCH_CHANNELS) and decides custom all-reduce (off above 2 PCIe GPUs)")
    if link == Interconnect.PCIE and tp == 2:
        words += ("; at tp 2 on PCIe custom all-reduce is counted on (it needs GPU P2P, which VMs and consumer cards "
                  "lack), and NCCL's P2P transport (without P2P NCCL uses host memory, SHM)")
    if link == Interconnect.SHM:
        words += ("; without GPU peer-to-peer access NCCL's connection buffers are in host memory (SHM transport) "
                  "and custom all-reduce is off")
    if link == Interconnect.NVLINK and tp > 2:
        words += ("; NVLink is taken as full NVLink (HGX A100); NVLink-bridged pairs (H100 NVL, A40) are not, and "
                  "vLLM and sglang turn custom all-reduce off there")
    return words

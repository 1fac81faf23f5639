"""The communicators a training layout creates on one GPU, and NCCL's device buffers for each.

torch.distributed's ProcessGroupNCCL creates one NCCL communicator per process group and device the first time
a collective runs on it (torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp ``initNCCLComm``, called lazily from
``collective`` and ``pointToPoint``; batched send/recv, ``batch_isend_irecv``, coalesces onto the group's
communicator). DDP, FSDP and DeepSpeed run their collectives on the data-parallel group (the default group when
the layout is data parallel only); Megatron-style layouts add a group per dimension (megatron/core/
parallel_state.py ``initialize_model_parallel``, rank order ``tp-cp-ep-dp-pp``): tensor parallel (all-reduce /
all-gather of activations: a ring, NVLS on an NVSwitch node), pipeline (send/recv with the neighbouring stages),
context parallel (ring attention's send/recv with the neighbours; gradients then reduce over dp x cp,
``get_data_parallel_group(with_context_parallel=True)``), expert parallel (all-to-all: send/recv with every other
rank). FSDP's hybrid shard reduces over a shard group and all-reduces over a replicate group. When no group spans
every GPU, the default group gets a communicator of its own for barriers. The buffers are NCCL's own (cudaMalloc /
cuMem), outside PyTorch's caching allocator: they count on the device but not in the allocator's reserve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vramwise.estimate.nccl import (
    CHANNEL_SOURCES,
    GPUS_PER_NODE,
    NVLS_CHANNELS_SM90,
    Communicator,
    NcclEnv,
    communicator,
    p2p_communicator,
)
from vramwise.estimate.term import Term
from vramwise.workload import FsdpMode, TrainSetup
from vramwise.workload.comms import nccl_environment
from vramwise.workload.options import Interconnect

# Without --gpu naming a catalog GPU's form factor (app layer), the interconnect is taken as an HGX H100 node's
AUTO_INTERCONNECT = Interconnect.NVSWITCH
NCCL_SOURCE = (
    "NVIDIA/nccl v2.27.3-1 (torch 2.8's): src/init.cc computeBuffSizes, src/transport/p2p.cc p2pSendSetup/"
    "p2pRecvSetup, src/graph/connect.cc ncclTopoPostset, src/transport/nvls.cc ncclNvlsBufferSetup (estimate/nccl.py)"
)


@dataclass(frozen=True, kw_only=True)
class Group:
    """One process group this GPU belongs to: its size and the rank stride between its members."""

    name: str
    size: int
    stride: int
    peers: int = 0  # > 0: send/recv only, with this many peers (pipeline neighbours, all-to-all's every other rank)
    barrier_only: bool = False  # only tiny collectives (barriers): a ring, no NVLS

    @property
    def local(self) -> int:
        """Members on this GPU's node, with ranks laid out tp-innermost on nodes of GPUS_PER_NODE GPUs."""
        return max(1, min(self.size, GPUS_PER_NODE // self.stride)) if self.stride < GPUS_PER_NODE else 1


def groups(setup: TrainSetup, *, pipeline_end: bool = False) -> list[Group]:
    """The process groups of more than one GPU that this GPU's training step runs collectives on;
    ``pipeline_end``: this GPU holds the first or the last pipeline stage (one pipeline neighbour)."""
    p = setup.parallel
    tp, cp, dp, pp, ep = p.tp, p.cp, p.dp, p.pp, p.ep
    out = [Group(name="tp", size=tp, stride=1)]
    if cp > 1:
        out.append(Group(name="cp", size=cp, stride=tp, peers=_neighbours(cp)))  # ring attention: send/recv
        out.append(Group(name="dp x cp", size=dp * cp, stride=tp))
    elif p.fsdp == FsdpMode.HYBRID:
        shard = p.sharding.group
        out.append(Group(name="fsdp shard", size=shard, stride=tp))
        out.append(Group(name="fsdp replicate", size=dp // shard, stride=tp * shard))
    else:
        out.append(Group(name="dp", size=dp, stride=tp * cp))
    out.append(Group(name="ep", size=ep, stride=tp * cp, peers=ep - 1))  # all-to-all: every other rank
    out.append(Group(name="pp", size=pp, stride=tp * cp * dp, peers=1 if pipeline_end else _neighbours(pp)))
    world = p.gpus
    if world > 1 and all(g.size != world for g in out):
        # the default group: barriers (torch.distributed.barrier, accelerate's wait_for_everyone: an all-reduce of
        # one element) get it a communicator of its own when no layout group spans every GPU
        out.append(Group(name="world", size=world, stride=1, barrier_only=True))
    return [g for g in out if g.size > 1]


def _neighbours(size: int) -> int:
    """Send/recv peers of a middle rank: the one other rank of a pair, else the previous and the next."""
    return 1 if size == 2 else 2


def _communicator(group: Group, link: Interconnect, env: NcclEnv) -> Communicator:
    if group.peers:
        return p2p_communicator(group.size, group.local, link, env, group.peers)
    comm = communicator(group.size, group.local, link, env)
    return replace(comm, nvls=0) if group.barrier_only else comm


def resolved(interconnect: Interconnect) -> Interconnect:
    return AUTO_INTERCONNECT if interconnect == Interconnect.AUTO else interconnect


def nccl_env(setup: TrainSetup) -> NcclEnv:
    """The NCCL environment the setup names (``nccl_env``), NCCL's defaults for the rest."""
    return NcclEnv.from_environ(nccl_environment(setup.comms.nccl_env))


def communicators(
    setup: TrainSetup, env: NcclEnv | None = None, *, pipeline_end: bool = False
) -> list[tuple[Group, Communicator]]:
    """Each group with its communicator's device memory on this GPU."""
    env = env or nccl_env(setup)
    link = resolved(setup.comms.interconnect)
    return [(g, _communicator(g, link, env)) for g in groups(setup, pipeline_end=pipeline_end)]


def nccl_terms(setup: TrainSetup, env: NcclEnv | None = None, *, pipeline_end: bool = False) -> tuple[Term, ...]:
    """NCCL's device buffers for every communicator of the layout (persistent, outside the allocator)."""
    if not setup.comms.nccl_buffers:
        return ()
    comms = communicators(setup, env, pipeline_end=pipeline_end)
    if not comms:
        return ()
    link = resolved(setup.comms.interconnect)
    rings = [(g, c) for g, c in comms if c.ring]
    terms = []
    if rings:
        ring = " + ".join(f"{g.name} {g.size}: {c.channels} ch" for g, c in rings)
        terms.append(Term(
            name="overhead/nccl",
            bytes=sum(c.ring for _, c in rings),
            formula=f"{len(rings)} communicator(s) ({ring}) x one send + one receive side per channel (at the "
            "defaults 12 MiB: SIMPLE 4 MiB + LL 512 KiB + LL128 4,915,200 B + headers, each side rounded up to 2 MiB); "
            f"{link} channels: {CHANNEL_SOURCES[link]}",
            source=NCCL_SOURCE,
        ))
    p2p = [(g, c) for g, c in comms if c.p2p]
    if p2p:
        terms.append(Term(
            name="overhead/nccl_p2p",
            bytes=sum(c.p2p for _, c in p2p),
            formula=" + ".join(f"{g.name} {g.size}: {g.peers} peer(s) x {c.channels} ch" for g, c in p2p)
            + " x one send + one receive side per channel (12 MiB at the defaults); send/recv only: no ring",
            source=f"{NCCL_SOURCE}; src/graph/paths.cc ncclTopoComputeP2pChannels (channels per peer)",
        ))
    nvls = [(g, c) for g, c in comms if c.nvls]
    if nvls:
        terms.append(
            Term(
                name="overhead/nccl_nvls",
                bytes=sum(c.nvls for _, c in nvls),
                formula=" + ".join(
                    f"{g.name}: {NVLS_CHANNELS_SM90} ch x 2 x 128 KiB x 8 steps x {c.local} GPUs + 2 MiB of credits"
                    for g, c in nvls
                ),
                source=f"{NCCL_SOURCE}; NVLS_NCHANNELS_SM90 (set NCCL_NVLS_ENABLE=0 or --interconnect nvlink "
                "where the node has no NVLS)",
            )
        )
    return tuple(terms)


def comms_notes(setup: TrainSetup) -> list[str]:
    """What the communication terms assume, when the layout has any communicator."""
    if not setup.comms.nccl_buffers or not groups(setup):
        return []
    link = setup.comms.interconnect
    where = (
        f"interconnect {AUTO_INTERCONNECT} assumed (an HGX H100/H200 node; --interconnect nvlink|pcie otherwise)"
        if link == Interconnect.AUTO
        else f"interconnect {link}"
    )
    return [
        f"NCCL 2.27-2.29 (torch 2.8's and later), {setup.comms.nccl_env or 'its defaults (no NCCL_* variable set)'}"
        f", runtime connect: {where}, {GPUS_PER_NODE} GPUs a node, ranks ordered tp-cp-ep-dp-pp; rings (and NVLS at "
        "Hopper's 16 channels; a B200 node's 24 are not modelled) for collectives, send/recv channels for pp and cp "
        "neighbours and ep's all-to-all; not modelled: tree, NVLS-tree and CollNet "
        "connections of multi-node collectives, network buffers beyond the ring's, the tied-embedding group of a "
        "pipeline's first and last stages; GPUs without peer access (many VMs and consumer boards) use host "
        "memory: --interconnect shm"
    ] + (
        ["FSDP2: forward holds three layer units at a copy-out, backward the current and prefetched layer, one "
         "layer's gradients and its reduce-scatter input (four), as traced on a fake world; the all-gather and "
         "reduce-scatter streams' caching-allocator pools are reserve (overhead/allocator/fsdp_*, fsdp_streams.py)"]
        if setup.parallel.fsdp != FsdpMode.NONE
        else []
    )

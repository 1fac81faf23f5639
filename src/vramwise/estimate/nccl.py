"""NCCL's device memory per communicator: the one NCCL model the engines and training share (pure, no torch).

Read in NVIDIA/nccl at v2.27.3-1 (torch 2.8's CUDA 12 wheel pins nvidia-nccl-cu12 2.27.3) and v2.21.5-1 (torch
2.5.1's, the vLLM 0.6 line's); v2.28.9-1 and v2.29.7-1 keep every rule below (the default sizes, MAXCHANNELS 64,
the CUDA_IPC_MIN rounding in p2p.cc, the channel doubling in connect.cc, NVLS's sizes, runtime connect on):

- Buffers per connection, one per protocol (src/init.cc ``computeBuffSizes``, its defaults just above it):
  SIMPLE ``DEFAULT_BUFFSIZE`` 1 << 22 = 4 MiB (``NCCL_BUFFSIZE``), LL ``DEFAULT_LL_BUFFSIZE`` =
  NCCL_LL_LINES_PER_THREAD 8 x NCCL_LL_MAX_NTHREADS 512 x NCCL_STEPS 8 x sizeof(ncclLLFifoLine) 16 = 512 KiB
  (``NCCL_LL_BUFFSIZE``), LL128 ``DEFAULT_LL128_BUFFSIZE`` = NCCL_LL128_ELEMS_PER_THREAD 120 x
  NCCL_LL128_MAX_NTHREADS 640 x NCCL_STEPS 8 x 8 B = 4,915,200 B (``NCCL_LL128_BUFFSIZE``); the constants in
  src/include/device.h.
- Where they live (src/transport/p2p.cc ``p2pSendSetup``, ``p2pRecvSetup``): the receiver allocates every
  protocol's buffer but SIMPLE under P2P read, which the sender then holds; each side's allocation is rounded up
  to CUDA_IPC_MIN, 2 MiB (``NcclEnv.connection``). A ring channel connects each rank to one sender and one
  receiver, so each rank holds one send and one receive side per ring channel: 12 MiB at the defaults. The
  serving engines' communicators (``engine_communicator``, below) use the same connections.
- Channels (src/graph/connect.cc ``ncclTopoPostset``): the topology search's channels doubled (``min(MAXCHANNELS,
  nChannels*2)``), then capped by ``NCCL_MAX_NCHANNELS`` and raised to ``NCCL_MIN_NCHANNELS`` (``ncclMaxNchannels``,
  ``ncclMinNchannels``). MAXCHANNELS is 32 at 2.21.5 and 64 at 2.27.3 (src/include/device.h). The search itself
  (src/graph/search.cc ``ncclTopoCompute``) depends on the machine; ``SEARCH_CHANNELS`` takes it from published
  NCCL logs per interconnect.
- NVLS (NVLink SHARP, NVSwitch systems with multicast: H100/H200/B200 HGX; src/transport/nvls.cc): off when the
  communicator sees 2 GPUs or fewer, or ``NCCL_NVLS_ENABLE=0`` (``ncclNvlsInit``); ``ncclNvlsBufferSetup`` allocates
  nvlsChannels x 2 x (NCCL_NVLS_CHUNKSIZE 128 KiB x NCCL_STEPS 8) x nHeads (one head a local GPU), with
  NVLS_NCHANNELS_SM90 16 (24 on a single sm100 node). 2.21.5 also padded each buffer by NVLS_MEM_ALIGN_SIZE 2 MiB
  (``nvls_bytes_v2_21``, the vLLM 0.6 line's).
- Send/recv (src/graph/paths.cc ``ncclTopoComputeP2pChannels``): p2pnChannelsPerPeer channels to each peer, each
  connection with the same buffers (``p2p_communicator``).
- NCCL_RUNTIME_CONNECT (src/init.cc, default 1 from 2.22): an algorithm's buffers are allocated when it is first
  used, not at ``ncclCommInitRank``; host memory (proxy, pinned buffers) is not device memory and not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError, shown
from vramwise.workload.options import Interconnect

NCCL_STEPS = 8  # src/include/device.h
SIMPLE_BUFFSIZE = 1 << 22  # src/init.cc DEFAULT_BUFFSIZE (NCCL_BUFFSIZE)
LL_BUFFSIZE = 8 * 512 * NCCL_STEPS * 16  # DEFAULT_LL_BUFFSIZE (NCCL_LL_BUFFSIZE)
LL128_BUFFSIZE = 120 * 640 * NCCL_STEPS * 8  # DEFAULT_LL128_BUFFSIZE (NCCL_LL128_BUFFSIZE)
# One ring channel's buffers on one rank: one connection's SIMPLE + LL + LL128 (p2p.cc, see the docstring)
BUFFERS_PER_CHANNEL = SIMPLE_BUFFSIZE + LL_BUFFSIZE + LL128_BUFFSIZE
MAXCHANNELS = 64  # src/include/device.h at v2.27.3-1 (32 at v2.21.5-1)
# p2p.cc p2pSendSetup / p2pRecvSetup: each side's allocation is its ncclSendMem / ncclRecvMem header (MEM_ALIGN,
# 4096 B, src/include/comm.h) plus its buffers, rounded up with ALIGN_SIZE to CUDA_IPC_MIN (2 MiB, comm.h)
CUDA_IPC_MIN = 2 * 1024 * 1024
MEM_ALIGN = 4096

# The topology search's channels per interconnect, before ncclTopoPostset doubles them, from published NCCL logs:
# NVSwitch H100 HGX: 16 search channels (Hopper's 18 NVLinks; "execution channels are typically 2x the search
# channels", NVIDIA/nccl issue #1041), 32 coll channels. NVLink through A100's NVSwitch (no NVLS): "Channel 23/24",
# 24 channels on an HGX A100 (NVIDIA/nccl-tests issue #100). PCIe: "Ring 00", "Ring 01", 2 channels on 8 RTX 4090
# (NVIDIA/nccl-tests issue #307).
# Without GPU peer-to-peer access (SHM) the rings are PCIe's, their buffers in host memory (``_on_device``).
SEARCH_CHANNELS = {Interconnect.NVSWITCH: 16, Interconnect.NVLINK: 12, Interconnect.PCIE: 1, Interconnect.SHM: 1}
CHANNEL_SOURCES = {
    Interconnect.NVSWITCH: "https://github.com/NVIDIA/nccl/issues/1041 (H100: 2 x 16 search channels)",
    Interconnect.NVLINK: "https://github.com/NVIDIA/nccl-tests/issues/100 (HGX A100: 24 channels)",
    Interconnect.PCIE: "https://github.com/NVIDIA/nccl-tests/issues/307 (8 x RTX 4090: 2 rings)",
    Interconnect.SHM: "https://github.com/NVIDIA/nccl-tests/issues/307 (PCIe's 2 rings; the buffers in host memory)",
}

NVLS_CHANNELS_SM90 = 16  # src/transport/nvls.cc NVLS_NCHANNELS_SM90 (v2.21.5-1 and v2.27.3-1)
NVLS_CHUNKSIZE = 128 * 1024  # src/transport/nvls.cc NCCL_NVLS_CHUNKSIZE default
NVLS_MEM_ALIGN_V2_21 = 1 << 21  # v2.21.5-1 src/transport/nvls.cc NVLS_MEM_ALIGN_SIZE, added to each buffer
NVLS_PER_CHANNEL_HEAD_V2_21 = 2 * (NVLS_CHUNKSIZE * NCCL_STEPS + NVLS_MEM_ALIGN_V2_21)
GPUS_PER_NODE = 8  # assumed: an HGX/DGX node; NVLS counts the communicator's GPUs on one node


def nvls_bytes_v2_21(gpus: int) -> int:
    """NCCL 2.21.5's NVLS buffers for one communicator of ``gpus`` GPUs on an NVSwitch node (0 at 2 or fewer):
    NVLS_NCHANNELS 16 x 2 x (NVLS_CHUNKSIZE 128 KiB x NCCL_STEPS 8 + NVLS_MEM_ALIGN_SIZE 2 MiB) x nHeads
    (v2.21.5-1 src/transport/nvls.cc ncclNvlsInit: off when gpuCount <= 2; ncclNvlsSetup: nvlsTotalSize)."""
    return NVLS_CHANNELS_SM90 * NVLS_PER_CHANNEL_HEAD_V2_21 * gpus if gpus > 2 else 0


@dataclass(frozen=True, kw_only=True)
class NcclEnv:
    """The NCCL environment variables that size its device buffers; None: NCCL's default."""

    buffsize: int | None = None  # NCCL_BUFFSIZE
    ll_buffsize: int | None = None  # NCCL_LL_BUFFSIZE
    ll128_buffsize: int | None = None  # NCCL_LL128_BUFFSIZE
    min_channels: int | None = None  # NCCL_MIN_NCHANNELS
    max_channels: int | None = None  # NCCL_MAX_NCHANNELS
    nvls_enable: bool = True  # NCCL_NVLS_ENABLE (default 2: on where multicast is supported)

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> NcclEnv:
        """The variables read from ``env`` (a process environment), each a non-negative integer."""
        names = {
            "buffsize": "NCCL_BUFFSIZE",
            "ll_buffsize": "NCCL_LL_BUFFSIZE",
            "ll128_buffsize": "NCCL_LL128_BUFFSIZE",
            "min_channels": "NCCL_MIN_NCHANNELS",
            "max_channels": "NCCL_MAX_NCHANNELS",
        }
        values = {field: _int(var, env[var]) for field, var in names.items() if var in env}
        nvls = _int("NCCL_NVLS_ENABLE", env["NCCL_NVLS_ENABLE"]) != 0 if "NCCL_NVLS_ENABLE" in env else True
        return cls(**values, nvls_enable=nvls)

    @property
    def per_channel(self) -> int:
        """One ring channel's buffers on one rank: SIMPLE + LL + LL128 (computeBuffSizes: env or default)."""
        return _or(self.buffsize, SIMPLE_BUFFSIZE) + _or(self.ll_buffsize, LL_BUFFSIZE) + _or(
            self.ll128_buffsize, LL128_BUFFSIZE
        )

    def connection(self, read: bool) -> int:
        """One rank's device memory for one send and one receive connection (a ring channel, or a send/recv
        peer's channel), as p2p.cc allocates them: the sender's ncclSendMem (+ SIMPLE under P2P read, NVLink on
        Ampere and later) and the receiver's ncclRecvMem + LL + LL128 (+ SIMPLE without read), each rounded up
        to CUDA_IPC_MIN. At NCCL's defaults 2 + 10 MiB (write) or 6 + 6 MiB (read): 12 MiB either way, as the
        10,485,760 B and 2,097,152 B allocations NCCL logs for P2P/CUMEM (NVIDIA/nccl issue #1685)."""
        simple = _or(self.buffsize, SIMPLE_BUFFSIZE)
        others = _or(self.ll_buffsize, LL_BUFFSIZE) + _or(self.ll128_buffsize, LL128_BUFFSIZE)
        send = _align(MEM_ALIGN + (simple if read else 0))
        recv = _align(MEM_ALIGN + others + (0 if read else simple))
        return send + recv


def _on_device(interconnect: Interconnect) -> bool:
    """Whether a connection's buffers sit in device memory. Without GPU peer-to-peer access NCCL connects the
    ranks of a node through its SHM transport, whose buffers are host memory shared between the processes
    (NVIDIA/nccl v2.21.5-1 to v2.27.3-1 src/transport/shm.cc ``ncclShmAllocateShareableBuffer``: cuMemHostAlloc,
    or an mmap of /dev/shm; device memory only with NCCL_SHM_USE_CUDA_MEMCPY=1, default 0)."""
    return interconnect != Interconnect.SHM


def _align(n: int) -> int:
    return -(-n // CUDA_IPC_MIN) * CUDA_IPC_MIN


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _int(var: str, text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidWorkloadError(
            f"{var} must be a non-negative integer, got {shown(text)}", field=var, allowed="a non-negative integer"
        )
    return value


def channels(interconnect: Interconnect, env: NcclEnv) -> int:
    """Ring channels of one communicator: the search's channels doubled, capped at MAXCHANNELS and
    NCCL_MAX_NCHANNELS, raised to NCCL_MIN_NCHANNELS (src/graph/connect.cc ncclTopoPostset)."""
    n = min(MAXCHANNELS, 2 * SEARCH_CHANNELS[interconnect])
    if env.max_channels is not None:
        n = min(n, env.max_channels)
    if env.min_channels is not None:
        n = max(n, min(env.min_channels, MAXCHANNELS))
    return max(1, n)


def p2p_channels_per_peer(interconnect: Interconnect, same_node: bool, env: NcclEnv) -> int:
    """Channels NCCL connects to one send/recv peer (src/graph/paths.cc ncclTopoComputeP2pChannels, v2.27.3-1):
    over NVLink 2 x (the path's bandwidth / one NVLink's), over PCIe 2, through the network 2 per NIC
    (ncclTopoGetNchannels), capped by the communicator's channels and rounded up to a power of 2."""
    coll = channels(interconnect, env)
    if not same_node or interconnect in (Interconnect.PCIE, Interconnect.SHM):
        return min(2, _pow2_up(coll))
    return _pow2_up(coll)


def _pow2_up(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True, kw_only=True)
class Communicator:
    """One rank's NCCL device memory for one communicator."""

    ranks: int
    local: int  # the communicator's GPUs on this rank's node
    channels: int
    ring: int  # channels x (SIMPLE + LL + LL128)
    nvls: int  # NVLS buffers (NVSwitch with multicast, more than 2 local GPUs)
    p2p: int = 0  # send/recv connections: peers x channels per peer x (SIMPLE + LL + LL128)
    tree: int = 0  # tree connections to peers the ring does not reach (connected at init without runtime connect)
    structures: int = 0  # per-channel device structures, rounded to cuMem's granularity (NCCL_CUMEM_ENABLE on)

    @property
    def bytes(self) -> int:
        return self.ring + self.nvls + self.p2p + self.tree + self.structures


def p2p_communicator(ranks: int, local: int, interconnect: Interconnect, env: NcclEnv, peers: int) -> Communicator:
    """Device memory of one rank of a communicator used only for send/recv (runtime connect builds no ring or
    NVLS for it): with ``peers`` peers, to each of which it sends and from each of which it receives
    (a pipeline: activations one way, gradients the other; all-to-all: every other rank), one send and one
    receive connection per peer and channel. All-to-all connects p2pnChannelsPerPeer channels to each peer (32
    per pair of 8 H100s, NVIDIA/nccl issue #1685; enqueue.cc: nChannelsMax = p2pnChannelsPerPeer)."""
    per_peer = p2p_channels_per_peer(interconnect, local > 1, env)
    p2p = peers * per_peer * env.connection(_read(interconnect, local > 1)) if _on_device(interconnect) else 0
    return Communicator(ranks=ranks, local=local, channels=per_peer, ring=0, nvls=0, p2p=p2p)


def _read(interconnect: Interconnect, same_node: bool) -> bool:
    """P2P read: NVLink between Ampere-or-later GPUs (p2p.cc p2pGetInfo, ncclTopoCheckP2p)."""
    return same_node and interconnect not in (Interconnect.PCIE, Interconnect.SHM)


def communicator(ranks: int, local: int, interconnect: Interconnect, env: NcclEnv) -> Communicator:
    """Device memory of one rank of a communicator of ``ranks`` ranks, ``local`` of them on its node, once its
    ring and (on an NVSwitch node) NVLS algorithms are connected (NCCL 2.27.3)."""
    n = channels(interconnect, env)
    nvls = 0
    if interconnect == Interconnect.NVSWITCH and env.nvls_enable and local > 2:
        # ncclNvlsBufferSetup's buffers, and ncclNvlsSetup's credits (64 B per channel, direction and head),
        # each a unicast allocation rounded up to the device's granularity (nvlsAllocateMem; 2 MiB assumed)
        credits = _align(NVLS_CHANNELS_SM90 * 2 * 64 * local)
        nvls = NVLS_CHANNELS_SM90 * 2 * NVLS_CHUNKSIZE * NCCL_STEPS * local + credits
    ring = n * env.connection(_read(interconnect, local > 1)) if _on_device(interconnect) else 0
    return Communicator(ranks=ranks, local=local, channels=n, ring=ring, nvls=nvls)


# --- A communicator as a serving engine creates it (engines/nccl_comm.py picks the arguments per release) ---
# cuMem's allocation granularity: src/include/alloc.h ncclCuMemAlloc rounds every device allocation up to
# cuMemGetAllocationGranularity(CU_MEM_ALLOC_GRANULARITY_MINIMUM), 2 MiB on NVIDIA GPUs (the CUDA_IPC_MIN NCCL
# rounds its IPC buffers to, src/include/comm.h); assumed the same on every GPU here.
CUMEM_GRANULARITY = CUDA_IPC_MIN
# src/channel.cc initChannel (v2.21.5-1 and v2.27.3-1): three device allocations per channel, sharedRes->devPeers,
# channel->devPeers and channel->devRingUserRanks (ncclCudaCallocAsync, each a few hundred bytes); src/init.cc
# devCommSetup: devCommAndChans and rankToLocalRank, two more per communicator
ALLOCS_PER_CHANNEL = 3
ALLOCS_PER_COMM = 2


def engine_communicator(ranks: int, interconnect: Interconnect, *, cumem: bool, nvls: bool,
                        nvls_v2_21: bool = False) -> Communicator:
    """One rank's device memory for a communicator of ``ranks`` GPUs on one node, created with ncclCommInitRank and
    warmed up with one all-reduce (a serving engine's PyNccl communicator):

    - NCCL_CUMEM_ENABLE on: every device allocation is a cuMem allocation rounded up to CUMEM_GRANULARITY
      (alloc.h ncclCudaCallocAsync -> ncclCuMemAlloc), so initChannel's three small allocations per channel and
      devCommSetup's two cost 2 MiB each; and runtime connect is on (init.cc initTransportsRank:
      ``comm->runtimeConn = comm->cuMemSupport && ncclParamRuntimeConnect()``), so only the warm-up's algorithm is
      connected: its ring (and NVLS where enabled), as ``communicator`` counts them.
    - NCCL_CUMEM_ENABLE=0: cudaMalloc, which packs small allocations (not counted), and no runtime connect: init
      connects every channel's ring and tree (ncclTransportRingConnect, ncclTransportTreeConnect in
      src/transport/generic.cc) and sets NVLS's buffers up (ncclNvlsBufferSetup). A tree inside one node is a chain
      (up to one peer, down to one): a rank inside the chain sends to and receives from both chain neighbours, one
      send and one receive connection per channel more than its ring's, assumed in the ring's order (at 2 ranks
      the tree's peer is the ring's, nothing more).
    ``nvls_v2_21``: NCCL 2.21.5's NVLS sizes (``nvls_bytes_v2_21``) instead of 2.27.3's."""
    base = communicator(ranks, ranks, interconnect, NcclEnv(nvls_enable=nvls))
    read = _read(interconnect, ranks > 1)
    tree = 0 if cumem or ranks <= 2 or not _on_device(interconnect) else base.channels * NcclEnv().connection(read)
    structures = (ALLOCS_PER_CHANNEL * base.channels + ALLOCS_PER_COMM) * CUMEM_GRANULARITY if cumem else 0
    nvls_bytes = base.nvls
    if nvls_v2_21:
        nvls_bytes = nvls_bytes_v2_21(ranks) if base.nvls else 0
    return Communicator(ranks=ranks, local=ranks, channels=base.channels, ring=base.ring, nvls=nvls_bytes,
                        tree=tree, structures=structures)

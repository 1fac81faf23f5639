"""vLLM v0.11.0's communication buffers at tp or pp > 1, all set up before its first memory snapshot.

vllm/v1/worker/gpu_worker.py ``Worker.init_device`` (v0.11.0) runs ``init_worker_distributed_environment`` and only
then takes ``init_snapshot`` ("Initialize the distributed environment BEFORE taking memory snapshot. This ensures
NCCL buffers are allocated before we measure available memory", vllm-project/vllm PR #25359). Everything below is
allocated there, so it sits outside ``gpu_memory_utilization``'s budget, as the CUDA context does, and counts only
in the startup check (free memory at the snapshot >= utilization x total) and in what the GPU holds.

Every group of more than one GPU gets a ``CudaCommunicator`` (vllm/distributed/parallel_state.py
``init_model_parallel_group``: ``use_device_communicator=True``), and with it a PyNcclCommunicator
(device_communicators/cuda_communicator.py ``CudaCommunicator.__init__``: ``if self.world_size > 1``), whose
``__init__`` runs a warm-up all-reduce. ``initialize_model_parallel`` builds the tp, dcp, pp, dp and ep groups; at
data parallel 1 and dcp 1 the ep group has ``data_parallel_size x tensor_model_parallel_size`` = tp GPUs, so a tp
of n > 1 makes two communicators of n (tp and ep), for every model, MoE or not. Only the tp group gets custom
all-reduce and torch symmetric memory (``if "tp" not in unique_name``).
"""

from __future__ import annotations

from vramwise.engines.vllm_terms import CUSTOM_AR_SIZES
from vramwise.estimate.nccl import BUFFERS_PER_CHANNEL as NCCL_BUFFERS_PER_CHANNEL
from vramwise.estimate.nccl import ENGINE_CHANNELS as NCCL_CHANNELS
from vramwise.estimate.term import Term
from vramwise.units import MIB

_COMM = "vllm/distributed/device_communicators"
# device_communicators/all_reduce_utils.py (v0.11.0) SYMM_MEM_ALL_REDUCE_MAX_SIZES, by compute capability and tp
SYMM_MEM_MAX_SIZES = {
    "9.0": {2: 64 * MIB, 4: 32 * MIB, 6: 64 * MIB, 8: 64 * MIB},
    "10.0": {2: 8 * MIB, 4: 32 * MIB, 6: 128 * MIB, 8: 128 * MIB},
}
# Custom all-reduce keeps max_size 8192 x 1024 unless symmetric memory is enabled, which needs multicast (NVSwitch):
# SymmMemCommunicator allocates its buffer, then stays disabled when ``handle.multicast_ptr == 0``. Assumed here: no
# NVSwitch (as for NCCL's NVLS, estimate/nccl.py nvls_bytes_v2_21); on an NVSwitch node CustomAllreduce caps max_size at
# CUSTOM_ALL_REDUCE_MAX_SIZES (all_reduce_utils.py; 256 KiB at sm 9.0 tp 8), a smaller buffer than counted here.
CUSTOM_AR_DEFAULT_MAX = 8192 * 1024
RANK_DATA = 8 * 1024 * 1024  # custom_all_reduce.py: rank_data = torch.empty(8 * 1024 * 1024, uint8)


def _cc(compute_capability: str | None) -> str | None:
    """The capability as vLLM spells it (``as_version_str``: "9.0"), or None."""
    if not compute_capability:
        return None
    return compute_capability if "." in compute_capability else f"{compute_capability}.0"


def v1_comm_terms(*, tp: int, pp: int, compute_capability: str | None) -> tuple[Term, ...]:
    """The NCCL communicators, custom all-reduce and symmetric-memory buffers of one tp rank (v0.11.0)."""
    groups = [(name, n) for name, n in (("tp", tp), ("ep", tp), ("pp", pp)) if n > 1]
    terms = []
    if groups:
        per = NCCL_CHANNELS * NCCL_BUFFERS_PER_CHANNEL
        terms.append(Term(
            name="overhead/nccl",
            bytes=len(groups) * per,
            formula=f"{len(groups)} PyNccl communicator(s) ({', '.join(f'{g} group of {n}' for g, n in groups)}) x "
                    f"{NCCL_CHANNELS} channels x (SIMPLE 4 MiB + LL 512 KiB + LL128 4,915,200 B); set up before "
                    "vLLM's first snapshot: outside the budget",
            source="vllm/distributed/parallel_state.py initialize_model_parallel (tp, pp and ep = dp x tp groups), "
                   f"{_COMM}/cuda_communicator.py, pynccl.py warm-up all-reduce; vllm/v1/worker/gpu_worker.py "
                   "init_device (v0.11.0); NVIDIA/nccl v2.27.3-1 (torch 2.8's) src/init.cc computeBuffSizes; "
                   "assumed: 32 channels, one algorithm connected by the warm-up (NCCL_RUNTIME_CONNECT=1 connects on "
                   "first use; MAXCHANNELS is 64 in 2.27, src/include/device.h)",
        ))
    cc = _cc(compute_capability)
    symm = SYMM_MEM_MAX_SIZES.get(cc or "", {}).get(tp, 0)
    if symm:
        terms.append(Term(
            name="overhead/symm_mem",
            bytes=symm,
            formula=f"torch symmetric-memory all-reduce buffer of max_size {symm:,} B (sm {cc}, tp {tp}), "
                    "allocated whether or not multicast is there to enable it",
            source=f"{_COMM}/symm_mem.py SymmMemCommunicator.__init__ (torch_symm_mem.empty, allocated before "
                   "the multicast check), all_reduce_utils.py SYMM_MEM_ALL_REDUCE_MAX_SIZES (v0.11.0; "
                   "VLLM_ALLREDUCE_USE_SYMM_MEM defaults to 1)",
        ))
    if tp in CUSTOM_AR_SIZES:
        size = CUSTOM_AR_DEFAULT_MAX
        terms.append(Term(
            name="overhead/custom_all_reduce",
            bytes=2 * size + RANK_DATA,
            formula=f"IPC meta+signal {size:,} B + IPC buffer {size:,} B + rank_data 8 MiB (max_size {size:,} B; "
                    "the signal struct, ops.meta_size(), not counted)",
            source=f"{_COMM}/custom_all_reduce.py CustomAllreduce.__init__ (v0.11.0; assumed: no NVSwitch, so "
                   "symmetric memory stays disabled and max_size is not capped)",
        ))
    return tuple(terms)

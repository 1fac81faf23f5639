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

from vramwise.engines.nccl_comm import EngineNccl, custom_all_reduce_on, nccl_term
from vramwise.estimate.term import Term
from vramwise.units import MIB
from vramwise.workload.options import Interconnect

_COMM = "vllm/distributed/device_communicators"
# device_communicators/all_reduce_utils.py (v0.11.0) SYMM_MEM_ALL_REDUCE_MAX_SIZES, by compute capability and tp
SYMM_MEM_MAX_SIZES = {
    "9.0": {2: 64 * MIB, 4: 32 * MIB, 6: 64 * MIB, 8: 64 * MIB},
    "10.0": {2: 8 * MIB, 4: 32 * MIB, 6: 128 * MIB, 8: 128 * MIB},
}
# all_reduce_utils.py (v0.10.2, v0.11.0) CUSTOM_ALL_REDUCE_MAX_SIZES: custom all-reduce's max_size where symmetric
# memory is enabled (CustomAllreduce.__init__ lines 115-119: min(this, 8 MiB))
CUSTOM_AR_MAX_WITH_SYMM = {
    "9.0": {2: 64 * MIB, 4: 32 * MIB, 6: MIB // 2, 8: MIB // 4},
    "10.0": {2: 2 * MIB, 4: 2 * MIB, 6: 1 * MIB, 8: 1 * MIB},
}
CUSTOM_AR_DEFAULT_MAX = 8192 * 1024
RANK_DATA = 8 * 1024 * 1024  # custom_all_reduce.py: rank_data = torch.empty(8 * 1024 * 1024, uint8)


def _cc(compute_capability: str | None) -> str | None:
    """The capability as vLLM spells it (``as_version_str``: "9.0"), or None."""
    if not compute_capability:
        return None
    return compute_capability if "." in compute_capability else f"{compute_capability}.0"


def v1_comm_terms(*, tp: int, pp: int, compute_capability: str | None, link: Interconnect, nccl: EngineNccl,
                  symm_mem: bool = True) -> tuple[Term, ...]:
    """The NCCL communicators, custom all-reduce and symmetric-memory buffers of one tp rank (v0.9.2-v0.11.0;
    ``symm_mem``: VLLM_ALLREDUCE_USE_SYMM_MEM's default, 1 at v0.11.0, 0 at v0.10.2, vllm/envs.py)."""
    groups = [(name, n) for name, n in (("tp", tp), ("ep", tp), ("pp", pp)) if n > 1]
    terms = []
    if groups:
        terms.append(nccl_term(
            "overhead/nccl", groups, link, nccl,
            when="set up before vLLM's first snapshot: outside the budget",
            source="vllm/distributed/parallel_state.py initialize_model_parallel (tp, pp and ep = dp x tp groups), "
                   f"{_COMM}/cuda_communicator.py, pynccl.py warm-up all-reduce; vllm/v1/worker/gpu_worker.py "
                   "init_device (v0.11.0)",
        ))
    cc = _cc(compute_capability)
    symm = SYMM_MEM_MAX_SIZES.get(cc or "", {}).get(tp, 0) if symm_mem else 0
    # SymmMemCommunicator stays disabled without multicast (handle.multicast_ptr == 0): NVSwitch only
    multicast = bool(symm) and link == Interconnect.NVSWITCH
    if symm:
        terms.append(Term(
            name="overhead/symm_mem",
            bytes=symm,
            formula=f"torch symmetric-memory all-reduce buffer of max_size {symm:,} B (sm {cc}, tp {tp}), "
                    "allocated whether or not multicast is there to enable it"
                    + ("" if multicast else " (no NVSwitch: no multicast, so it stays disabled)"),
            source=f"{_COMM}/symm_mem.py SymmMemCommunicator.__init__ (torch_symm_mem.empty, allocated before "
                   "the multicast check), all_reduce_utils.py SYMM_MEM_ALL_REDUCE_MAX_SIZES (v0.11.0; "
                   "VLLM_ALLREDUCE_USE_SYMM_MEM defaults to 1, vllm/envs.py; 0 at v0.10.2)",
        ))
    if custom_all_reduce_on(tp, link):
        size = CUSTOM_AR_DEFAULT_MAX
        capped = CUSTOM_AR_MAX_WITH_SYMM.get(cc or "", {}).get(tp) if multicast else None
        if capped is not None:
            size = min(capped, size)
        why = (f"max_size min(CUSTOM_ALL_REDUCE_MAX_SIZES[{cc}][{tp}], 8 MiB) = {size:,} B, symmetric memory "
               "being enabled" if capped is not None else f"max_size {size:,} B")
        terms.append(Term(
            name="overhead/custom_all_reduce",
            bytes=2 * size + RANK_DATA,
            formula=f"IPC meta+signal {size:,} B + IPC buffer {size:,} B + rank_data 8 MiB ({why}; the signal "
                    "struct, ops.meta_size(), not counted)",
            source=f"{_COMM}/custom_all_reduce.py CustomAllreduce.__init__ (v0.11.0 lines 115-119, 141-148: off "
                   "above 2 GPUs without full NVLink), all_reduce_utils.py CUSTOM_ALL_REDUCE_MAX_SIZES",
        ))
    return tuple(terms)

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
all-reduce and torch symmetric memory (``if "tp" not in unique_name``). v0.9.2, v0.10.1.1 and v0.10.2 build the same
ep group but give it no PyNccl (cuda_communicator.py ``use_pynccl = "ep" not in unique_name``, "ep does not use
pynccl"): one communicator of n there, the tp group's.

One more communicator is made later, in the profile run, by every V1 release: torch.distributed's own NCCL
communicator for the tp group (``logits_gather_term``).
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
                  symm_mem: bool = True, ep: bool = True) -> tuple[Term, ...]:
    """The NCCL communicators, custom all-reduce and symmetric-memory buffers of one tp rank (v0.9.2-v0.11.0;
    ``symm_mem``: VLLM_ALLREDUCE_USE_SYMM_MEM's default, 1 at v0.11.0, 0 at v0.10.2, vllm/envs.py; ``ep``: the ep
    group has a PyNccl communicator, v0.11.0 only, the module docstring)."""
    groups = [(name, n) for name, n in (("tp", tp), ("ep", tp if ep else 1), ("pp", pp)) if n > 1]
    terms = []
    if groups:
        terms.append(nccl_term(
            "overhead/nccl", groups, link, nccl,
            when="set up before vLLM's first snapshot: outside the budget",
            source="vllm/distributed/parallel_state.py initialize_model_parallel (tp, pp and ep = dp x tp groups), "
                   f"{_COMM}/cuda_communicator.py CudaCommunicator.__init__ (v0.9.2-v0.10.2: no PyNccl for ep), "
                   "pynccl.py warm-up all-reduce; vllm/v1/worker/gpu_worker.py init_device (v0.11.0)",
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


def logits_gather_term(*, tp: int, link: Interconnect, nccl: EngineNccl, release: str) -> Term | None:
    """torch.distributed's NCCL communicator for the tp group, created in the profile run (None at tp 1).

    V1 gathers the vocab-parallel logits with all-gather (vllm/platforms/interface.py ``Platform.use_all_gather``:
    True under VLLM_USE_V1; layers/logits_processor.py ``LogitsProcessor._gather_logits`` ->
    ``tensor_model_parallel_all_gather``). CudaCommunicator has no all_gather of its own (v0.8.5 to v0.11.0: only
    all_reduce, reduce_scatter, send, recv, all_gatherv), so the call reaches
    ``DeviceCommunicatorBase.all_gather`` (device_communicators/base_device_communicator.py), which runs
    ``torch.distributed.all_gather_into_tensor`` on the group's ``device_group``. torch's ProcessGroupNCCL creates
    its NCCL communicator at a group's first collective (vLLM calls ``init_process_group`` without ``device_id``,
    distributed/parallel_state.py ``init_distributed_environment``; every earlier exchange goes through the gloo
    ``cpu_group`` or PyNccl): that is ``_dummy_sampler_run``'s ``compute_logits`` inside ``profile_run``, after every
    memory snapshot, so ``memory_profiling`` counts it in ``non_torch_increase``, inside the budget, at every V1
    release. Its buffers are those of a PyNccl communicator of the same group under the same NCCL environment."""
    if tp <= 1:
        return None
    return nccl_term(
        "overhead/nccl_torch", [("tp", tp)], link, nccl,
        when="torch.distributed's ProcessGroupNCCL communicator, created by the logits all-gather of the profile "
             "run's sampler warm-up: non-torch growth inside the budget",
        source=f"vllm/model_executor/layers/logits_processor.py LogitsProcessor._gather_logits, {_COMM}/"
               "base_device_communicator.py DeviceCommunicatorBase.all_gather (dist.all_gather_into_tensor on "
               f"device_group), vllm/v1/worker/gpu_model_runner.py profile_run, _dummy_sampler_run (v{release})",
    )

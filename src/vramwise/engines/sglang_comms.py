"""SGLang 0.5's communication buffers at tp > 1: what its distributed init allocates before the pool is sized.

Read in sglang 0.5.5 (the wheel, python/sglang/srt/; it pins torch 2.8.0, whose CUDA 12 wheel brings NCCL 2.27.3):

- model_executor/model_runner.py ``ModelRunner.init_torch_distributed`` (line 568) takes ``before_avail_memory``
  (line 601, after ``set_device``: the CUDA context exists already), runs ``init_distributed_environment`` and
  ``initialize_model_parallel``, then returns ``min_per_gpu_memory`` (line 653: free memory, the minimum over the
  ranks through the gloo cpu_group) and logs "Init torch distributed ends. mem usage=" their difference.
  ``ModelRunner.__init__`` (line 309) passes it on as ``total_gpu_memory`` to ``profile_max_num_token`` (line
  1260), whose ``rest_memory = available - total x (1 - mem_fraction_static)`` (line 1317): every byte the init
  takes is gone from ``total``, so the pool loses mem_fraction_static x those bytes.
- distributed/parallel_state.py ``init_model_parallel_group`` (line 1356: ``use_pynccl`` on CUDA) and
  ``GroupCoordinator.__init__`` (line 355: a ``PyNcclCommunicator`` for a group of more than one GPU; line 371:
  ``CustomAllreduce`` where ``_ENABLE_CUSTOM_ALL_REDUCE``, line 1445 True unless --disable-custom-all-reduce;
  lines 363 and 397: mscclpp and torch symmetric memory only with --enable-mscclpp / --enable-torch-symm-mem,
  server_args.py lines 479-480, off by default). ``initialize_model_parallel``: the tp group; at --ep-size 1
  (server_args.py line 393) the moe_ep groups (line 1633) and at pp 1 the pp groups (line 1669) hold one GPU each,
  so they get no communicator; the world group (``init_world_group``) and the attention-tp group
  (layers/dp_attention.py ``initialize_dp_attention``, SYNC_TOKEN_IDS_ACROSS_TP off) are built without PyNccl.
- device_communicators/pynccl.py ``PyNcclCommunicator.__init__`` (line 113): ``ncclCommInitRank`` and a warm-up
  all-reduce of one float. SGLang sets NCCL_CUMEM_ENABLE=0 (entrypoints/engine.py ``_set_envs_and_config``), which
  turns NCCL's runtime connect off (src/init.cc initTransportsRank), so ``ncclCommInitRank`` itself connects every
  channel's ring and tree (engines/nccl_comm.py, estimate/nccl.py ``engine_communicator``).
- device_communicators/custom_all_reduce.py ``CustomAllreduce`` (``_MAX_CAR_SIZE`` 8192 x 1024, line 56; tp 2, 4,
  6 or 8, line 55): meta (signal + max_size) and buffer IPC allocations of max_size each (lines 172, 177,
  cudaMalloc outside torch) and ``rank_data`` of max_size (line 183, torch); disabled above 2 GPUs without full
  NVLink (line 144).

torch.distributed's own NCCL communicators (``new_group(backend="nccl")``) are created lazily, on the first
collective on ``device_group``: ``GroupCoordinator._all_reduce_in_place`` sends an eager all-reduce that custom
all-reduce declines (above 8 MiB) to ``torch.distributed.all_reduce`` while PyNccl stays ``disabled`` outside CUDA
graph capture (pynccl.py "by default it is disabled, e.g. in profiling models and prefill phase"), which happens in
the first prefill, after the pool is sized: held on the GPU, in the share the pool leaves.

``--sglang-version 0.4`` gets the same terms: sglang 0.4.9 (torch 2.7.1) builds the same PyNccl communicator with its
warm-up (pynccl.py lines 109-114; parallel_state.py line 1055, no moe_ep group yet) and the same three 8 MiB
custom all-reduce buffers (custom_all_reduce.py lines 147-148, 275), measured the same way (model_runner.py lines
547, 959); torch 2.7.1's NCCL 2.26 was not read: its default buffer sizes are taken as those of 2.21.5 and
2.27.3 (estimate/nccl.py), which agree.
"""

from __future__ import annotations

from vramwise.engines.nccl_comm import SGLANG_NCCL, custom_all_reduce_on, nccl_term
from vramwise.estimate.term import Term
from vramwise.workload.options import Interconnect

_SRT = "sglang python/sglang/srt"
# custom_all_reduce.py CustomAllreduce._MAX_CAR_SIZE (CUDA): max_size of each of its three buffers
MAX_CAR_SIZE = 8192 * 1024

# What the notes say where a term rests on the node's topology
TOPOLOGY = (
    "SGLang's distributed init at tp={tp}: NCCL as sglang sets it (NCCL_CUMEM_ENABLE=0, so no runtime connect: "
    "rings and trees connected at init; NCCL_NVLS_ENABLE=0), no --enable-mscclpp / --enable-torch-symm-mem / "
    "--enable-symm-mem; not modelled: the device code NCCL's warm-up all-reduce loads (CUDA lazy loading) and any "
    "other growth the init's before/after free-memory measure sees"
)


def distributed_init_terms(tp: int, link: Interconnect) -> tuple[Term, ...]:
    """Buffers ``init_torch_distributed`` allocates on one tp rank, before ``min_per_gpu_memory`` is measured:
    they come out of the total the static share is taken from."""
    if tp <= 1:
        return ()
    terms = [nccl_term(
        "overhead/nccl", [("tp", tp)], link, SGLANG_NCCL,
        when="set up in the distributed init, before the pool's total is measured",
        source=f"{_SRT}/distributed/parallel_state.py GroupCoordinator.__init__ (0.5.5 line 355), "
               "device_communicators/pynccl.py PyNcclCommunicator.__init__ (line 113, warm-up all-reduce)",
    )]
    if custom_all_reduce_on(tp, link):
        terms.append(Term(
            name="overhead/custom_all_reduce",
            bytes=3 * MAX_CAR_SIZE,
            formula=f"IPC meta {MAX_CAR_SIZE:,} B + IPC buffer {MAX_CAR_SIZE:,} B + rank_data {MAX_CAR_SIZE:,} B "
                    "(max_size 8192 x 1024; the signal struct, meta_size(), not counted)",
            source=f"{_SRT}/distributed/device_communicators/custom_all_reduce.py CustomAllreduce.__init__ (0.5.5 "
                   "lines 55-56, 172-185; off above 2 GPUs without full NVLink, line 144)",
        ))
    return tuple(terms)


def torch_group_term(tp: int, link: Interconnect) -> Term | None:
    """torch.distributed's NCCL communicator for the tp group, created by the first eager all-reduce above custom
    all-reduce's size (in the first prefill), after the pool is sized."""
    if tp <= 1:
        return None
    return nccl_term(
        "overhead/nccl_torch", [("tp", tp)], link, SGLANG_NCCL,
        when="torch.distributed's ProcessGroupNCCL communicator for the tp group, created after the pool is sized",
        source=f"{_SRT}/distributed/parallel_state.py GroupCoordinator._all_reduce_in_place (0.5.5 line 647: "
               "torch.distributed.all_reduce while PyNccl is disabled outside graph capture)",
    )

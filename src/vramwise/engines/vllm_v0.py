"""vLLM's V0 engine memory plan, the 0.6 line (``--vllm-version 0.6`` and ``0.6.4``), for one GPU: the driver rank
(tp rank 0) of the last pipeline stage, the one that gathers the logits and samples.

The budget (vllm/worker/worker.py ``Worker.determine_num_available_blocks``): ``total x gpu_memory_utilization``
minus the profile run's memory; ``num_gpu_blocks = available // cache_block_size`` where one block holds
``block_size`` tokens of every attention layer of the stage (vllm/worker/cache_engine.py
``CacheEngine.get_cache_block_size``: no sliding-window or MLA saving in the 0.6 line's paged cache). The executor
takes the smallest count over the workers (the driver, which also samples). What the profile subtracts depends on
the release:

- v0.6.4 (worker.py at 6ae5229): ``peak_memory`` is torch's ``allocated_bytes.all.peak`` over the profile (the
  weights in it) plus every byte in use outside torch afterwards (``mem_get_info`` used - torch allocated): the CUDA
  context counts inside the budget.
- v0.6.5 and v0.6.6 (vllm/utils.py ``memory_profiling`` from vllm-project/vllm PR #10511): ``non_kv_cache_memory =
  weights + torch_peak_increase + non_torch_increase``, where the non-torch increase is measured from a baseline
  taken in ``Worker.init_device`` after the CUDA context exists (``baseline_memory_in_bytes = total -
  init_gpu_memory``), so the context sits outside the budget and NCCL's buffers (set up after it) inside.

At tp > 1 the profile run also creates torch.distributed's own NCCL communicator on the tp group in every 0.6
release: the driver gathers the logits with ``torch.distributed.gather(..., group=self.device_group)``
(vllm/distributed/parallel_state.py ``GroupCoordinator.gather``, called by vllm/model_executor/layers/
logits_processor.py ``LogitsProcessor._get_logits`` through ``tensor_model_parallel_gather``), the first collective
on that group; torch 2.5.1's ProcessGroupNCCL runs a gather through ``collective()`` (torch/csrc/distributed/c10d/
ProcessGroupNCCL.cpp ``ProcessGroupNCCL::gather``, OpType::GATHER), which creates the group's communicator on first
use; the gather itself is one ncclRecv per other rank on the driver, whose receive connectors NCCL connects then
(vllm_v0_terms.py ``v0_gather_receive``). v0.6.4 reaches the same communicator earlier through its all-reduce
fallback (engines/vllm_terms.py ``non_torch_terms``).

CUDA graphs are captured after the KV cache is allocated (``Worker.initialize_cache`` -> ``_warm_up_model``), in
the memory beside the budget. The refusals quote ``raise_if_cache_size_invalid``.
"""

from __future__ import annotations

from vramwise.catalog import Gpu
from vramwise.engines.nccl_comm import VLLM_NCCL, link_of, topology_note
from vramwise.engines.result import EngineEstimate
from vramwise.engines.vllm_load import loaded_weights, max_model_len, rope_notes
from vramwise.engines.vllm_terms import non_torch_terms
from vramwise.engines.vllm_v0_terms import (
    V0_MAX_NUM_SEQS,
    v0_batched_tokens,
    v0_cuda_graphs,
    v0_gather_receive,
    v0_profile_peak,
)
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.cuda_context import context_term
from vramwise.estimate.encoder_decoder import refuse
from vramwise.estimate.kv_cache import kv_elements_per_token
from vramwise.estimate.precision import compute_bytes, kv_dtype
from vramwise.estimate.term import Estimate, Term
from vramwise.estimate.weights import own_format
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.workload import InferSetup

# --vllm-version -> the release the plan reports (the rules of 0.6.5 and 0.6.6 are the same in the files read)
V0_RELEASES = {"0.6": "0.6.6", "0.6.4": "0.6.4"}
_WORKER = "vllm/worker/worker.py"
# vllm/engine/arg_utils.py EngineArgs.add_cli_args (0.6 line): --block-size choices [8, 16, 32, 64, 128];
# --kv-cache-dtype choices auto, fp8, fp8_e5m2, fp8_e4m3 (vramwise's fp8 stands for the fp8 ones).
V0_BLOCK_SIZES = (8, 16, 32, 64, 128)
V0_KV_DTYPES = ("auto", "fp8")


def vllm_v0_plan(spec: ModelSpec, setup: InferSetup, gpu: Gpu) -> EngineEstimate:
    """vLLM 0.6.x's (V0) plan for ``spec`` on one ``gpu``."""
    release = V0_RELEASES[setup.vllm.version]
    refuse(spec, f"--engine vllm --vllm-version {setup.vllm.version}")
    _refuse_unmodelled(spec, setup)
    flags, tp, pp = setup.vllm, setup.tp, setup.vllm.pipeline_parallel_size
    if pp > spec.num_layers:
        raise InvalidWorkloadError(f"pp {pp} is more than the model's {spec.num_layers} layers", field="pp")
    max_len = max_model_len(spec, setup)
    S = flags.max_num_seqs or V0_MAX_NUM_SEQS
    sliding = bool(spec.attention.sliding_window)
    T, chunked = v0_batched_tokens(given=flags.max_num_batched_tokens, max_len=max_len, sliding=sliding,
                                   release=release)
    if T < S:  # vllm/config.py SchedulerConfig._verify_args (0.6 line)
        raise InvalidWorkloadError(
            f"vLLM refuses: max_num_batched_tokens ({T}) must be greater than or equal to max_num_seqs ({S})",
            field="max_num_batched_tokens",
        )
    fmt = get_format(setup.weight_format or own_format(spec))
    c = compute_bytes(fmt.name)
    kv_name, kv_b = kv_dtype(setup, fmt.name)
    last = spec.num_layers // pp  # the last stage's layers, as the V1 plan counts them (get_pp_indices)
    weights = loaded_weights(spec, setup, fmt_name=fmt.name, c=c, layers=last, gpu=gpu)
    w_bytes = sum(t.bytes for t in weights)
    peak = v0_profile_peak(spec, tokens=T, seqs=S, c=c, tp=tp, compute_capability=gpu.compute_capability)
    context = context_term(setup.overheads)
    link, _ = link_of(gpu, setup.interconnect)
    # torch's tp-group communicator: created in the profile run by the logits gather in every 0.6 release (above)
    non_torch = non_torch_terms(tp=tp, pp=pp, link=link, nccl=VLLM_NCCL[release], torch_tp_group=True)
    if gather := v0_gather_receive(tp, link):
        non_torch = (*non_torch, gather)
    inside = (*non_torch, context) if release == "0.6.4" else non_torch  # what the release subtracts
    nt_bytes = sum(t.bytes for t in inside)

    requested = int(setup.gpu_utilization * gpu.memory_bytes)
    available = requested - w_bytes - peak.bytes - nt_bytes
    per_token = int(kv_elements_per_token(spec, tp) * kv_b) * last
    block = setup.kv_block
    per_block = block * per_token
    blocks = max(0, available) // per_block if per_block else 0
    pool = Term(
        name="kv_cache/pool",
        bytes=blocks * per_block,
        formula=f"gpu_memory_utilization {setup.gpu_utilization:g} x CUDA total {gpu.memory_bytes:,} = "
                f"{requested:,} - weights {w_bytes:,} - profile peak {peak.bytes:,} - non-torch {nt_bytes:,} = "
                f"{available:,}; {blocks:,} blocks of {block} tokens x {per_token:,} B/token ({last} layers, "
                f"{kv_name})",
        source=f"{_WORKER} Worker.determine_num_available_blocks (v{release}); vllm/worker/cache_engine.py "
               "CacheEngine.get_cache_block_size",
    )
    graphs = () if flags.enforce_eager else (v0_cuda_graphs(spec, max_num_seqs=S, c=c, tp=tp),)
    persistent = (*weights, peak, *non_torch, pool, *graphs, context)
    notes = _notes(release, T, chunked, setup)
    notes += rope_notes(spec, setup, c)
    if topo := topology_note(gpu, tp * pp, "vLLM", setup.interconnect):
        notes += (topo,)
    refusal, message = _refusal(blocks, block, max_len)
    fits = refusal is None
    kv_tokens = blocks * block
    return EngineEstimate(
        engine="vllm",
        version=release,
        estimate=Estimate(persistent=persistent, notes=notes),
        budget=requested,
        kv_pool=pool,
        kv_tokens=kv_tokens,
        max_sequences=blocks // -(-setup.tokens // block) if fits else 0,
        max_context=min(max_len, kv_tokens),
        refusal=refusal,
        refusal_message=message,
        kv_bytes_per_token=per_token,
        sequence_tokens=setup.tokens,
        context_len=max_len,
        # vllm/executor/gpu_executor.py initialize_cache (0.6 line): num_gpu_blocks x block_size / max_model_len
        concurrency=kv_tokens / max_len if fits else 0.0,
        notes=notes,
    )


def _refuse_unmodelled(spec: ModelSpec, setup: InferSetup) -> None:
    """What the 0.6 line did differently and this plan does not model: one line, never a silent approximation."""
    why = None
    if spec.ssm:
        why = "its Mamba layers (the 0.6 line keeps their state in a separate MambaCacheManager)"
    elif spec.attention.kind == "mla":
        why = "MLA attention (the 0.6 line cached every head's K and V for DeepSeek-V2; MLA came in 0.7)"
    elif spec.vision is not None:
        why = "a vision model (the 0.6 line's profile run adds the encoder's dummy images)"
    if why:
        raise InvalidWorkloadError(
            f"--vllm-version {setup.vllm.version}: {spec.name} has {why}: not modelled; use --vllm-version 0.11",
            field="vllm_version",
            allowed="0.11",
        )
    if setup.kv_block not in V0_BLOCK_SIZES:
        allowed = ", ".join(map(str, V0_BLOCK_SIZES))
        raise InvalidWorkloadError(
            f"vLLM {setup.vllm.version} refuses --block-size {setup.kv_block}; allowed: {allowed} "
            "(vllm/engine/arg_utils.py --block-size choices)",
            field="kv_block",
            allowed=allowed,
        )
    if setup.kv_dtype not in V0_KV_DTYPES:
        allowed = ", ".join(V0_KV_DTYPES)
        raise InvalidWorkloadError(
            f"vLLM {setup.vllm.version} has no --kv-cache-dtype {setup.kv_dtype}; allowed here: {allowed}",
            field="kv_dtype",
            allowed=allowed,
        )
    if setup.vllm.kv_cache_memory_bytes is not None:
        raise InvalidWorkloadError(
            f"vLLM {setup.vllm.version} has no --kv-cache-memory-bytes (a later flag); drop it or use "
            "--vllm-version 0.11",
            field="kv_cache_memory",
        )


def _refusal(blocks: int, block: int, max_len: int) -> tuple[str | None, str | None]:
    """raise_if_cache_size_invalid (vllm/worker/worker.py), in its own words."""
    if blocks <= 0:
        return "KV pool negative", (
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing "
            f"the engine. [{_WORKER} raise_if_cache_size_invalid]"
        )
    if max_len > blocks * block:
        return "max_model_len larger than the KV cache", (
            f"The model's max seq len ({max_len}) is larger than the maximum number of tokens that can be stored in "
            f"KV cache ({blocks * block}). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` "
            f"when initializing the engine. [{_WORKER} raise_if_cache_size_invalid]"
        )
    return None, None


def _notes(release: str, batched: int, chunked: bool, setup: InferSetup) -> tuple[str, ...]:
    context = ("the CUDA context counts inside gpu_memory_utilization's budget (v0.6.4 subtracts every byte used "
               "outside torch after the profile)" if release == "0.6.4" else
               "the CUDA context is outside gpu_memory_utilization's budget (memory_profiling's baseline is taken "
               "after it exists; the rules of v0.6.5 and v0.6.6)")
    prefill = (f"chunked prefill at max_num_batched_tokens {batched:,} (vllm/config.py SchedulerConfig: 512 at "
               "v0.6.4, 2048 from v0.6.5)" if chunked else
               f"no chunked prefill: the profile run is one prefill of max_num_batched_tokens {batched:,} "
               "(max(max_model_len, 2048))")
    notes = [
        f"vLLM {release} (V0 engine): {context}; {prefill}; CUDA graphs are captured after the KV cache, beside "
        "the budget",
        "the KV cache: every layer's blocks at full length (the 0.6 line's CacheEngine has no sliding-window "
        "saving); the refusal and concurrency follow max_model_len as vLLM 0.6 logs them",
        "not modelled: non-torch growth at tp 1 (CUDA kernel modules loaded lazily on first use; cuBLAS/cuBLASLt "
        "workspaces are torch memory, from the caching allocator: pytorch aten/src/ATen/cuda/CublasHandlePool.cpp "
        "getNewWorkspace), NCCL's own kernels, the other tp ranks (which do not sample and "
        "hold smaller peaks), the largest max_model_len that fits under a smaller profile run",
    ]
    if release != "0.6.4":
        notes.append(
            "non_torch_memory as v0.6.5/v0.6.6 log it also counts torch segments that torch.cuda.empty_cache() "
            "cannot release because a live block sits in them: their memory_profiling takes torch's memory as "
            "allocated_bytes.all.current, not memory_reserved() (fixed in vllm-project/vllm PR #11809, vLLM 0.7.0); "
            "that allocator slack is not modelled here")
    if setup.vllm.pipeline_parallel_size > 1:
        notes.append("pp > 1: the last stage is shown (head and sampler); vLLM takes the smallest pool over stages")
    return tuple(notes)


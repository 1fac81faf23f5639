"""vLLM's V0 engine (the 0.6 line) outside the weights: its batch defaults, the profile run, CUDA graphs.

Files read (vllm-project/vllm, the PyPI sdists of v0.6.4.post1, v0.6.5, v0.6.6 and v0.6.6.post1): vllm/worker/
worker.py ``Worker.determine_num_available_blocks``; vllm/worker/model_runner.py ``GPUModelRunnerBase.profile_run``
(the same in all four: max_num_seqs dummy prompts sharing max_num_batched_tokens, SamplingParams(top_p=0.99,
top_k=vocab_size - 1), LoRA dummies only with --enable-lora, fewer sequences only for a multimodal model);
vllm/model_executor/layers/sampler.py ``Sampler.forward``, ``_apply_top_k_top_p`` (the same in all four);
vllm/config.py ``SchedulerConfig`` and vllm/engine/arg_utils.py ``EngineArgs.create_engine_config`` (chunked prefill
by default above 32K; usage contexts only change V1's defaults, ``_override_v1_engine_args``, VLLM_USE_V1=1);
pytorch aten/src/ATen/cuda/CublasHandlePool.cpp ``parseChosenWorkspaceSize`` (torch 2.5.1, which vLLM 0.6.4-0.6.6
pin in requirements-cuda.txt).
"""

from __future__ import annotations

from vramwise.engines.vllm_terms import SORT_LIVE_BYTES_PER_LOGIT, VOCAB_PADDING, forward_live, sort_scratch
from vramwise.estimate.nccl import (
    CUDA_IPC_MIN,
    LL128_BUFFSIZE,
    LL_BUFFSIZE,
    MEM_ALIGN,
    SIMPLE_BUFFSIZE,
    NcclEnv,
    p2p_channels_per_peer,
)
from vramwise.estimate.term import Term
from vramwise.spec.model import ModelSpec
from vramwise.workload.options import Interconnect

_RUNNER = "vllm/worker/model_runner.py"
# vllm/engine/arg_utils.py EngineArgs (0.6 line): --max-num-seqs defaults to 256.
V0_MAX_NUM_SEQS = 256
# vllm/config.py SchedulerConfig (v0.6.4.post1 __init__, v0.6.5 and v0.6.6.post1 __post_init__): without chunked
# prefill max_num_batched_tokens is max(max_model_len, 2048) ("use 2048 as the default value for higher
# throughput"); with it, 512 at v0.6.4.post1 and 2048 from v0.6.5 ("a balance between ITL and TTFT").
V0_MIN_BATCHED_TOKENS = 2048
V0_CHUNKED_TOKENS = {"0.6.4": 512, "0.6.6": 2048}
# vllm/engine/arg_utils.py create_engine_config (0.6 line): use_long_context = max_model_len > 32768 turns
# chunked prefill on by default ("Chunked prefill is enabled by default for models with max_model_len > 32K"),
# unless the model has a sliding window (or spec decode, LoRA, prefix caching, seqlen-agnostic layers).
V0_LONG_CONTEXT = 32768
# Bytes per logit at the scatter, one of the two peaks inside _apply_top_k_top_p (the other is the sort: v0_sampler).
# The profile run's SamplingParams(top_p=0.99, top_k=vocab_size - 1) turns both on; FlashInfer sampling is opt-in
# through VLLM_USE_FLASHINFER_SAMPLER. Live: the fp32 copy Sampler.forward makes "to apply temperature scaling" (4,
# held by the caller), the ascending sort's values (4) and int64 indices (8), the top-k mask (1), probs_sort =
# softmax (4), probs_sum = cumsum, not in place (4), the top-p mask (1) and logits_sort.scatter's out-of-place result
# (4) = 30; every one a local until the function returns. After it, probs, logprobs and the sampling noise (4 each)
# beside the fp32 logits are less.
V0_SAMPLER_BYTES_PER_LOGIT = 4 + 4 + 8 + 1 + 4 + 4 + 1 + 4
# torch's cuBLAS workspace, allocated through the caching allocator at the first GEMM (the profile run), so it is
# torch memory vLLM counts in the profile's peak: CUBLAS_WORKSPACE_CONFIG's default ":4096:2:16:8" = 2 x 4096 KiB +
# 8 x 16 KiB, and ":4096:8" = 32 MiB on compute capability 9.0 (CublasHandlePool.cpp parseChosenWorkspaceSize).
CUBLAS_WORKSPACE = 4096 * 1024 * 2 + 16 * 1024 * 8
CUBLAS_WORKSPACE_SM90 = 4096 * 8 * 1024
# The sizes V0 captures: v0.6.4.post1 vllm/worker/model_runner.py _BATCH_SIZES_TO_CAPTURE = [1, 2, 4] + [8 i for i in
# 1..1024] ("1, 2, 4, 8, 16, 24, 32, 40, ..., 8192"), up to _get_max_graph_batch_size(max_num_seqs); v0.6.5 and
# v0.6.6.post1 vllm/config.py VllmConfig._set_cudagraph_sizes, the same list up to the smallest size >= max_num_seqs.
V0_CAPTURE_SIZES = (1, 2, 4, *range(8, 8193, 8))


def v0_batched_tokens(*, given: int | None, max_len: int, sliding: bool, release: str) -> tuple[int, bool]:
    """(max_num_batched_tokens, whether prefill is chunked) as ``release``'s SchedulerConfig sets them. A given
    value below max_model_len is only accepted by vLLM with chunked prefill on (SchedulerConfig._verify_args)."""
    if given is not None:
        return given, given < max_len
    if max_len > V0_LONG_CONTEXT and not sliding:
        return V0_CHUNKED_TOKENS[release], True
    return max(max_len, V0_MIN_BATCHED_TOKENS), False


def cublas_workspace(compute_capability: str | None) -> int:
    return CUBLAS_WORKSPACE_SM90 if compute_capability == "9.0" else CUBLAS_WORKSPACE


def v0_sampler(spec: ModelSpec, *, rows: int, tokens: int, c: int) -> tuple[int, str]:
    """The V0 sampler's peak in the profile run: ``rows`` sequence groups each sample one token (the last of its
    prompt: LogitsProcessor._prune_hidden_states keeps those rows), the forward's hidden states still held.
    The driver rank gathers every rank's logits (tensor_model_parallel_gather), so it holds the full padded row.
    The peak per logit is the larger of two moments inside _apply_top_k_top_p: the scatter (V0_SAMPLER_BYTES_PER_LOGIT)
    and the ascending sort itself, whose outputs and scratch (engines/vllm_terms.py SORT_SCRATCH_MANY_ROWS: torch
    2.5.1's SortStable.cu, the same kernel the V1 sampler's sort runs) sit beside the fp32 copy."""
    V, h = spec.vocab_size, spec.hidden_size
    padded = -(-V // VOCAB_PADDING) * VOCAB_PADDING
    at_sort = SORT_LIVE_BYTES_PER_LOGIT + sort_scratch(rows)
    per_logit = max(V0_SAMPLER_BYTES_PER_LOGIT, at_sort)
    moment = (f"at the sort: fp32 copy, sort values and int64 indices {SORT_LIVE_BYTES_PER_LOGIT} + torch.sort "
              f"scratch {sort_scratch(rows)} B" if at_sort >= V0_SAMPLER_BYTES_PER_LOGIT else
              "at the scatter: fp32 copy, sort values, int64 indices, top-k mask, softmax, cumsum, top-p mask, scatter")
    total = tokens * h * c + rows * h * c + rows * padded * c + rows * V * per_logit
    return total, (
        f"hidden states T {tokens} x h {h} x c {c} + pruned rows {rows} x h x c + logits rows x V {padded} (padded "
        f"to {VOCAB_PADDING}) x c + rows x V {V} x {per_logit} B ({moment})"
    )


def v0_profile_peak(
    spec: ModelSpec, *, tokens: int, seqs: int, c: int, tp: int, compute_capability: str | None
) -> Term:
    """The torch peak increase of V0's profile run: max(one layer's forward live set, the sampler) + the cuBLAS
    workspace its first GEMM allocates."""
    fwd, fwd_f = forward_live(spec, tokens=tokens, c=c, tp=tp, eager=True)
    rows = min(seqs, tokens)
    smp, smp_f = v0_sampler(spec, rows=rows, tokens=tokens, c=c)
    ws = cublas_workspace(compute_capability)
    return Term(
        name="activations/profile_peak",
        bytes=max(fwd, smp) + ws,
        formula=f"max(forward of {tokens} tokens {fwd:,} = {fwd_f}; sampler over {rows} sequence groups {smp:,} = "
                f"{smp_f}) + cuBLAS workspace {ws:,} (compute capability {compute_capability or 'unknown'})",
        source=f"{_RUNNER} GPUModelRunnerBase.profile_run (max_num_seqs dummy SequenceGroups sharing "
               "max_num_batched_tokens); vllm/model_executor/layers/sampler.py Sampler.forward, _apply_top_k_top_p "
               "(0.6 line); pytorch CublasHandlePool.cpp parseChosenWorkspaceSize (torch 2.5.1)",
    )


def v0_capture_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """The sizes captured: up to max_num_seqs padded as _get_graph_batch_size pads a batch (itself up to 2, 4 up to
    4, else the next multiple of 8), at most 8192 (_get_max_graph_batch_size; _set_cudagraph_sizes from v0.6.5)."""
    S = max_num_seqs
    padded = S if S <= 2 else 4 if S <= 4 else -(-S // 8) * 8
    return tuple(s for s in V0_CAPTURE_SIZES if s <= min(padded, V0_CAPTURE_SIZES[-1]))


def v0_cuda_graphs(spec: ModelSpec, *, max_num_seqs: int, c: int, tp: int) -> Term:
    """The graphs' shared pool: captured after the KV cache (Worker.initialize_cache -> _warm_up_model), largest
    batch first, one pool for all, sized by the largest batch's decode forward."""
    sizes = v0_capture_sizes(max_num_seqs)
    live, f = forward_live(spec, tokens=max(sizes), c=c, tp=tp, eager=True)
    return Term(
        name="cuda_graphs",
        bytes=live,
        formula=f"{len(sizes)} batch sizes, the pool sized by the largest ({max(sizes)} tokens): {f}; each graph's "
                "own driver memory is not modelled",
        source=f"{_RUNNER} ModelRunner.capture_model, _BATCH_SIZES_TO_CAPTURE (0.6 line); vllm/worker/worker.py "
               "Worker._warm_up_model",
    )


def v0_gather_receive(tp: int, link: Interconnect) -> Term | None:
    """The driver's receive connections for the profile run's logits gather, at tp > 1 (None at tp 1).

    The gather (vllm/distributed/parallel_state.py ``GroupCoordinator.gather``, v0.6.4.post1-v0.6.6.post1) is
    ``torch.distributed.gather``, which torch 2.5.1 runs as one ncclRecv per other rank on the root
    (torch/csrc/cuda/nccl.cpp ``gather``; the root copies its own slice). NCCL v2.21.5-1 connects point-to-point
    lazily: the first receive from a peer pre-connects its receive connector on every one of p2pnChannelsPerPeer
    channels (src/enqueue.cc, "Mark channels that need pre-connect": ``recv[1]``, "P2P uses only 1 connector"),
    p2pnChannelsPerPeer being the next power of 2 of min(the communicator's channels, 2 x the path's NVLink count,
    2 over PCIe) (src/graph/paths.cc ``ncclTopoComputeP2pChannels``, ``ncclTopoGetNchannels``; estimate/nccl.py
    ``p2p_channels_per_peer``). Each receive connector is one allocation (src/transport/p2p.cc ``p2pRecvSetup``):
    ncclRecvMem (MEM_ALIGN, 4096 B) + every protocol's buffer but SIMPLE under P2P read (NVLink), rounded up to
    CUDA_IPC_MIN: 4,096 + LL 524,288 + LL128 4,915,200 -> 6 MiB with read, + SIMPLE 4 MiB -> 10 MiB without. The
    senders' SIMPLE buffers sit on the other ranks."""
    if tp <= 1 or link == Interconnect.SHM:  # without P2P the connectors are host memory (estimate/nccl.py _on_device)
        return None
    read = link != Interconnect.PCIE  # p2p.cc p2pGetInfo: P2P read over NVLink (Ampere and later)
    per_peer = p2p_channels_per_peer(link, True, NcclEnv())
    size = MEM_ALIGN + LL_BUFFSIZE + LL128_BUFFSIZE + (0 if read else SIMPLE_BUFFSIZE)
    connector = -(-size // CUDA_IPC_MIN) * CUDA_IPC_MIN
    return Term(
        name="overhead/nccl_gather",
        bytes=(tp - 1) * per_peer * connector,
        formula=f"{tp - 1} peer(s) x {per_peer} channels (p2pnChannelsPerPeer, {link}) x one receive connector "
                f"{connector:,} B (ncclRecvMem 4,096 + LL + LL128{'' if read else ' + SIMPLE'}, rounded to 2 MiB; "
                f"P2P read {'on' if read else 'off'}): connected in the profile run, inside the budget",
        source="vllm/distributed/parallel_state.py GroupCoordinator.gather (v0.6.4.post1-v0.6.6.post1); torch 2.5.1 "
               "torch/csrc/cuda/nccl.cpp gather (ncclRecv per peer on the root); NVIDIA/nccl v2.21.5-1 src/enqueue.cc "
               "(p2p pre-connect of recv[1] on p2pnChannelsPerPeer channels), src/graph/paths.cc "
               "ncclTopoComputeP2pChannels, src/transport/p2p.cc p2pRecvSetup",
    )

"""vLLM's memory plan at v0.11.0 (V1 engine, ``vllm serve``), for one GPU: one tensor-parallel rank of the last
pipeline stage (the one that also holds the head and runs the sampler).

The budget (vllm/v1/worker/gpu_worker.py ``Worker.init_device`` and ``determine_available_memory``):
``requested = gpu_memory_utilization x total``, total being the CUDA-visible total (``Gpu.memory_bytes``;
torch.cuda.mem_get_info's, not nvidia-smi's); startup refuses when the free memory is below it. The KV pool is
``requested - weights - the profile run's torch peak - non-torch memory since the first snapshot``
(``memory_profiling``: ``non_kv_cache_memory``), or ``--kv-cache-memory-bytes`` as given. The CUDA context exists
before that first snapshot, so it sits outside the budget, and CUDA graphs are captured after the KV cache is
allocated (``compile_or_warm_up_model``), in the memory left beside the budget: both count against the GPU, not
against the pool. The startup checks quote vLLM's own errors (vllm/v1/core/kv_cache_utils.py
``check_enough_kv_cache_memory``).
"""

from __future__ import annotations

from vramwise.catalog import Gpu
from vramwise.engines.nccl_comm import VLLM_NCCL, link_of, topology_note
from vramwise.engines.result import EngineEstimate
from vramwise.engines.vllm_comms import logits_gather_term, v1_comm_terms
from vramwise.engines.vllm_kv import KvLayout, layer_kinds
from vramwise.engines.vllm_load import loaded_weights, max_model_len, rope_notes
from vramwise.engines.vllm_mxfp4 import MARLIN, backend_for
from vramwise.engines.vllm_releases import V1_RULES, V1Rules
from vramwise.engines.vllm_terms import (
    FUSED_MOE_CHUNK_SIZE,
    cuda_graph_term,
    flashinfer_v1_sampler_warmup,
    forward_live,
    fp8_activation_group,
    non_torch_terms,
    sampler_warmup,
)
from vramwise.engines.vllm_v0_terms import cublas_workspace
from vramwise.engines.vllm_v085 import flashinfer_sampler_warmup, runner_buffers
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.cuda_context import context_term
from vramwise.estimate.encoder_decoder import refuse
from vramwise.estimate.kv_cache import kv_elements_per_token
from vramwise.estimate.precision import compute_bytes, kv_dtype
from vramwise.estimate.ssm_state import check_inference, vllm_block
from vramwise.estimate.term import Estimate, Term
from vramwise.estimate.weights import own_format
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.workload import InferSetup
from vramwise.workload.engines import VLLM_VERSION, vllm_batch_defaults

_GIB = 2**30
_WORKER = "vllm/v1/worker/gpu_worker.py"
_KV_UTILS = "vllm/v1/core/kv_cache_utils.py"
# Categories of weights that live in the decoder layers, split over pipeline stages (vllm/distributed/utils.py
# get_pp_indices: L // pp layers each, the remainder to the stages before the last).


def vllm_plan(spec: ModelSpec, setup: InferSetup, gpu: Gpu) -> EngineEstimate:
    """vLLM v0.11.0's plan for ``spec`` on one ``gpu`` (per tp rank of the last pp stage); with ``--vllm-version
    0.8`` the same plan under v0.8.5's rules (engines/vllm_releases.py); the V0 engine's (engines/vllm_v0.py) with
    ``--vllm-version 0.6`` or ``0.6.4``."""
    _check_sampler(setup)
    if setup.vllm.version not in V1_RULES:
        from vramwise.engines.vllm_v0 import vllm_v0_plan

        return vllm_v0_plan(spec, setup, gpu)
    rules = V1_RULES[setup.vllm.version]
    refuse(spec, "--engine vllm and --serve (vLLM's decoder-only V1 plan)")
    flags, tp, pp = setup.vllm, setup.tp, setup.vllm.pipeline_parallel_size
    check_inference(spec, tp)
    if spec.ssm and not rules.hybrid_groups:
        raise InvalidWorkloadError(
            f"vLLM {rules.release}'s V1 engine has no KV cache spec for Mamba layers (MambaSpec arrives in 0.9.2); "
            "use --vllm-version 0.11", field="vllm_version", allowed="0.11")
    gpu_name = f"{gpu.name} {gpu.label}" if rules.a100_exception else ""
    tokens_default, seqs_default = vllm_batch_defaults(gpu.memory_bytes, gpu_name)
    T = flags.max_num_batched_tokens or tokens_default
    S = flags.max_num_seqs or seqs_default
    max_len = max_model_len(spec, setup)
    if T < S:  # vllm/config/scheduler.py SchedulerConfig._verify_args
        raise InvalidWorkloadError(
            f"vLLM refuses: max_num_batched_tokens ({T}) must be greater than or equal to max_num_seqs ({S})",
            field="max_num_batched_tokens",
        )
    _check_cache_flags(setup)
    if pp > spec.num_layers:
        raise InvalidWorkloadError(f"pp {pp} is more than the model's {spec.num_layers} layers", field="pp")
    fmt = get_format(setup.weight_format or own_format(spec))
    c = compute_bytes(fmt.name)
    kv_name, kv_b = kv_dtype(setup, fmt.name)
    last = range(spec.num_layers - spec.num_layers // pp, spec.num_layers)
    weights = loaded_weights(spec, setup, fmt_name=fmt.name, c=c, layers=len(last), gpu=gpu)
    w_bytes = sum(t.bytes for t in weights)

    # --enforce-eager: no torch.compile either (vllm/config.py VllmConfig.__post_init__, 0.8-0.11: the compilation
    # level is PIECEWISE only when not model_config.enforce_eager), so the profile run's forward is the eager
    # module's, each block's last projection output beside its locals (vllm_terms.py, the comment on forward_live)
    # MXFP4 experts on Marlin run fused_marlin_moe, which takes every token at once (vllm_terms.py _moe_live)
    marlin = fmt.name == "mxfp4" and backend_for(gpu.compute_capability, flags.mxfp4_backend) is MARLIN
    fp8_group = fp8_activation_group(fmt.name, gpu.compute_capability)
    fwd, fwd_f = forward_live(spec, tokens=T, c=c, tp=tp, eager=flags.enforce_eager,
                              moe_chunk=None if marlin else FUSED_MOE_CHUNK_SIZE, fp8_group=fp8_group)
    rows = min(S, T)
    smp, smp_f = _sampler(spec, setup, rules, rows=rows, tokens=T, c=c)
    # torch's cuBLAS workspace: allocated through the caching allocator by the first cuBLAS GEMM on the stream
    # (CublasHandlePool.cpp getCurrentCUDABlasHandle -> setCublasWorkspace -> getNewWorkspace) and kept; V1 runs
    # no GEMM before its profile (a bf16 model's load multiplies nothing), so the profile's torch peak holds it, as
    # in the V0 plan (vllm_v0_terms.py cublas_workspace)
    ws = cublas_workspace(gpu.compute_capability)
    peak = max(fwd, smp) + ws
    activation = Term(
        name="activations/profile_peak",
        bytes=peak,
        formula=f"max(forward of {T} tokens {fwd:,} = {fwd_f}; sampler warm-up over {rows} requests {smp:,} = {smp_f})"
                f" + cuBLAS workspace {ws:,} (compute capability {gpu.compute_capability or 'unknown'})",
        source=f"vllm/v1/worker/gpu_model_runner.py profile_run, _dummy_run, _dummy_sampler_run (v{rules.release}); "
               "pytorch aten/src/ATen/cuda/CublasHandlePool.cpp parseChosenWorkspaceSize, setCublasWorkspace",
    )
    # 0.11: set up in init_device before vLLM's first snapshot: outside the budget, beside the context
    # (vllm_comms.py); 0.8: counted inside it with every other byte outside torch; 0.9.2-0.10.x: the same groups as
    # 0.11 (tp, ep, pp) set up after the snapshot, so inside it (vllm_releases.py)
    link, _ = link_of(gpu, setup.interconnect)
    nccl = VLLM_NCCL[rules.release]
    if not rules.ep_group:
        non_torch = non_torch_terms(tp=tp, pp=pp, link=link, nccl=nccl)
    else:
        non_torch = v1_comm_terms(tp=tp, pp=pp, compute_capability=gpu.compute_capability, link=link, nccl=nccl,
                                  symm_mem=rules.symm_mem, ep=rules.ep_pynccl)
        if rules.comms_in_budget:
            non_torch = tuple(_inside_budget(t, rules.release) for t in non_torch)
    nt_bytes = sum(t.bytes for t in non_torch)
    # torch's own tp communicator, made by the profile run's logits all-gather: inside the budget at every release
    gather = logits_gather_term(tp=tp, link=link, nccl=nccl, release=rules.release)
    gathered = (gather,) if gather else ()
    context = context_term(setup.overheads)
    inside = (nt_bytes if rules.comms_in_budget else 0) + (context.bytes if rules.context_in_budget else 0) + sum(
        t.bytes for t in gathered)
    # 0.8.5: torch's absolute peak, the model runner's persistent buffers in it (engines/vllm_v085.py)
    buffers = (runner_buffers(spec, tokens=T, seqs=S, max_len=max_len, block=setup.kv_block, c=c, mid_stage=pp > 1),
               ) if rules.runner_buffers_in_budget else ()
    b_bytes = sum(t.bytes for t in buffers)

    layout = _layout(spec, setup, c=c, kv_b=kv_b, layers=last, batched=T, rules=rules)
    requested = int(setup.gpu_utilization * gpu.memory_bytes)
    if flags.kv_cache_memory_bytes is not None:
        available = flags.kv_cache_memory_bytes
        how = f"--kv-cache-memory-bytes {available:,}"
    else:
        available = requested - w_bytes - peak - b_bytes - inside
        outside = f" - non-torch memory (context, communicators) {inside:,}" if inside else ""
        held = f" - runner buffers {b_bytes:,}" if buffers else ""
        how = (f"gpu_memory_utilization {setup.gpu_utilization:g} x CUDA total {gpu.memory_bytes:,} = {requested:,} - "
               f"weights {w_bytes:,} - profile peak {peak:,}{held}{outside} = {available:,}")
    num_blocks = layout.blocks(available)
    # g pool tensors of num_blocks pages, each shared by one layer of every group: the groups draw their blocks
    # from one block pool (kv_cache_utils._get_kv_cache_config_uniform_page_size, get_num_blocks)
    pool_bytes = num_blocks * layout.page * layout.group
    kv_tokens = layout.tokens(num_blocks)
    pool = Term(
        name="kv_cache/pool",
        bytes=pool_bytes,
        formula=f"{how}; {num_blocks:,} blocks of {layout.block} tokens x {layout.page:,} B/layer x {layout.group} "
                f"layers, shared by {layout.groups} group(s) of layers, {kv_name}",
        source=f"{_WORKER} determine_available_memory; {_KV_UTILS} get_kv_cache_config (v{rules.release})",
    )
    graphs = () if flags.enforce_eager else (
        cuda_graph_term(spec, sizes=rules.capture_sizes(S, T), c=c, tp=tp, release=rules.release,
                        fp8_group=fp8_group),
    )
    persistent = (*weights, activation, *buffers, *non_torch, *gathered, pool, *graphs, context)
    notes = _notes(spec, setup, T, rules)
    notes += rope_notes(spec, setup, c)
    if (gpu.compute_capability or "").split(".")[0] in ("10", "12"):
        notes += (f"cuBLAS workspace counted at {ws:,} B (parseChosenWorkspaceSize's size off Hopper, torch 2.5.1); "
                  "torch gives Blackwell 32 MiB from pytorch PR #175344 (2026): the torch of this vLLM release is not "
                  "read for it",)
    if topo := topology_note(gpu, tp * pp, "vLLM", setup.interconnect):
        notes += (topo,)
    if fmt.name == "mxfp4" and spec.moe and backend_for(gpu.compute_capability, flags.mxfp4_backend) is None:
        notes += ("MXFP4 experts: vLLM's MoE backend for this GPU is not modelled (no compute capability in the "
                  "catalog); the checkpoint's layout is counted, without the backend's padding or second copy of "
                  "the scales (engines/vllm_mxfp4.py)",)
    elif fmt.name == "mxfp4" and spec.moe and flags.mxfp4_backend is None:
        notes += ("MXFP4 experts in the Marlin backend's layout: vLLM 0.11.0 as pip installs it has neither "
                  "FlashInfer nor triton_kernels, so get_mxfp4_backend picks Marlin on every NVIDIA GPU; where they "
                  "are installed (vLLM's docker image) give --mxfp4-backend triton (Hopper) or flashinfer "
                  "(Blackwell) (engines/vllm_mxfp4.py)",)
    est = Estimate(persistent=persistent, notes=notes)
    # in use at the free-memory check: the context, and the communicators where they precede the snapshot (0.11)
    startup = context.bytes + (0 if rules.comms_in_budget else nt_bytes) if rules.free_memory_check else None
    refusal, message = _refusal(setup, gpu, startup, requested, available, layout, max_len)
    per_token = layout.page // layout.block * (layout.full + layout.sliding)
    fits = refusal is None
    return EngineEstimate(
        engine="vllm",
        version=rules.release,
        estimate=est,
        budget=requested if flags.kv_cache_memory_bytes is None else None,
        kv_pool=pool,
        kv_tokens=kv_tokens,
        max_sequences=int(layout.concurrency(num_blocks, setup.tokens)) if fits else 0,
        max_context=layout.largest_fit(available, max_len),
        refusal=refusal,
        refusal_message=message,
        kv_bytes_per_token=per_token,
        sequence_tokens=setup.tokens,
        context_len=max_len,
        concurrency=(kv_tokens / max_len if rules.concurrency_by_tokens else layout.concurrency(num_blocks, max_len))
        if fits else 0.0,
        notes=est.notes,
    )


def _check_sampler(setup: InferSetup) -> None:
    """--vllm-sampler is read for the V1 releases whose TopKTopPSampler was read (V1Rules.flashinfer_sampler)."""
    version = setup.vllm.version
    if setup.vllm.sampler is not None and not (version in V1_RULES and V1_RULES[version].flashinfer_sampler):
        raise InvalidWorkloadError(
            f"--vllm-sampler is modelled for the V1 plans (--vllm-version 0.11, 0.10, 0.9, 0.8), not {version}",
            field="vllm_sampler", allowed="--vllm-version 0.11, 0.10, 0.9 or 0.8")


def _sampler(spec: ModelSpec, setup: InferSetup, rules: V1Rules, *, rows: int, tokens: int, c: int) -> tuple[int, str]:
    """The sampler warm-up's peak and formula: FlashInfer's path (v0.8.5 with FlashInfer < 0.2.3, engines/
    vllm_v085.py; v0.9.2-v0.11.0 with FlashInfer >= 0.2.3, vllm_terms.py flashinfer_v1_sampler_warmup) or torch's
    sort (vllm_terms.py), beside the hidden states the release keeps."""
    held = rules.sampler_holds_all_tokens
    if setup.vllm.sampler == "flashinfer":
        if not held:  # v0.8.5: FlashInfer < 0.2.3's forward_cuda, one hidden row per request
            return flashinfer_sampler_warmup(spec, rows=rows, c=c)
        return flashinfer_v1_sampler_warmup(spec, rows=rows, tokens=tokens, c=c, row_copies=2)
    return sampler_warmup(spec, rows=rows, tokens=tokens if held else rows, c=c, row_copies=2 if held else 0)


def _inside_budget(term: Term, release: str) -> Term:
    """A v0.11.0 communicator term (vllm_comms.py) as v0.9.2-v0.10.x count it: the same buffers, set up after the
    first snapshot (gpu_worker.py init_device), so inside the budget as non-torch growth."""
    what = term.formula.split("; set up before")[0]
    return Term(name=term.name, bytes=term.bytes,
                formula=f"{what}; set up after vLLM {release}'s first snapshot: inside the budget",
                source=f"{term.source}; vllm/v1/worker/gpu_worker.py init_device (v{release}: MemorySnapshot() before "
                       "init_worker_distributed_environment)")


# vllm/config/cache.py at v0.11.0: BlockSize = Literal[1, 8, 16, 32, 64, 128]; CacheDType = Literal["auto",
# "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla"] (vramwise's fp8 stands for the fp8 ones)
VLLM_BLOCK_SIZES = (1, 8, 16, 32, 64, 128)
VLLM_KV_DTYPES = ("auto", "bf16", "fp8")


def _check_cache_flags(setup: InferSetup) -> None:
    """Refuse what vLLM's CacheConfig rejects, in one line, rather than model a setup vLLM cannot start."""
    if setup.kv_block not in VLLM_BLOCK_SIZES:
        allowed = ", ".join(map(str, VLLM_BLOCK_SIZES))
        raise InvalidWorkloadError(
            f"vLLM refuses --block-size {setup.kv_block}; allowed: {allowed} (vllm/config/cache.py BlockSize)",
            field="kv_block",
            allowed=allowed,
        )
    if setup.kv_dtype not in VLLM_KV_DTYPES:
        allowed = ", ".join(VLLM_KV_DTYPES)
        raise InvalidWorkloadError(
            f"vLLM has no --kv-cache-dtype {setup.kv_dtype}; allowed here: {allowed} (vllm/config/cache.py CacheDType)",
            field="kv_dtype",
            allowed=allowed,
        )


def _layout(
    spec: ModelSpec, setup: InferSetup, *, c: int, kv_b: int, layers: range, batched: int, rules: V1Rules
) -> KvLayout:
    full, sliding, mamba = layer_kinds(spec, layers)
    if not rules.hybrid_groups and full and sliding:  # 0.8: unify_hybrid_kv_cache_specs, every layer at full length
        full, sliding = full + sliding, 0
    layer_token = int(kv_elements_per_token(spec, setup.tp) * kv_b)
    block = setup.kv_block
    if spec.ssm:  # vLLM's hybrid rule grows the attention block until its page holds a Mamba state (ssm_state.py)
        block, _ = vllm_block(spec, attention_page_per_token=layer_token, c=c, block=setup.kv_block)
    return KvLayout(
        full=full,
        sliding=sliding,
        mamba=mamba,
        window=spec.attention.sliding_window or 0 if sliding else 0,
        block=block,
        page=block * layer_token,
        batched_tokens=batched,
    )


def _gib(n: int) -> str:
    return f"{n / _GIB:.2f}"


def _refusal(
    setup: InferSetup, gpu: Gpu, context: int | None, requested: int, available: int, layout: KvLayout, max_len: int
) -> tuple[str | None, str | None]:
    """(reason in a few words, vLLM's own error text) when vLLM would refuse to start; (None, None) otherwise.
    ``context``: the memory in use at the free-memory check, None where the release has no such check."""
    if context is not None and setup.vllm.kv_cache_memory_bytes is None and gpu.memory_bytes - context < requested:
        util = setup.gpu_utilization
        return "free memory below gpu_memory_utilization", (
            f"Free memory on device ({_gib(gpu.memory_bytes - context)}/{_gib(gpu.memory_bytes)} GiB) on startup is "
            f"less than desired GPU memory utilization ({util:g}, {_gib(requested)} GiB). Decrease GPU memory "
            f"utilization or reduce GPU memory used by other processes. [{_WORKER} Worker.init_device]"
        )
    if available <= 0:
        return "KV pool negative", (
            f"No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing "
            f"the engine. [{_KV_UTILS} check_enough_kv_cache_memory; available {_gib(available)} GiB]"
        )
    needed = layout.needed(max_len)
    if needed > available:
        fit = layout.largest_fit(available, max_len)
        estimated = f"Based on the available memory, the estimated maximum model length is {fit}. " if fit else ""
        return "max_model_len larger than the KV cache", (
            f"To serve at least one request with the models's max seq len ({max_len}), ({_gib(needed)} GiB KV "
            f"cache is needed, which is larger than the available KV cache memory ({_gib(available)} GiB). "
            f"{estimated}Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the "
            f"engine. [{_KV_UTILS} check_enough_kv_cache_memory] {_v0_words(layout, available, max_len)}"
        )
    return None, None


def _v0_words(layout: KvLayout, available: int, max_len: int) -> str:
    """The same refusal as the V0 engine (vLLM before 0.10) words it, every layer's blocks in one pool of full
    length (vllm/worker/worker.py raise_if_cache_size_invalid: num_gpu_blocks x block_size tokens)."""
    layers = layout.full + layout.sliding + layout.mamba
    tokens = max(0, available) // (layout.page * layers) * layout.block if layers else 0
    return (
        f"[V0 engine, vLLM < 0.10: The model's max seq len ({max_len}) is larger than the maximum number of tokens "
        f"that can be stored in KV cache ({tokens}). Try increasing `gpu_memory_utilization` or decreasing "
        "`max_model_len` when initializing the engine. (vllm/worker/worker.py raise_if_cache_size_invalid)]"
    )


def _notes(spec: ModelSpec, setup: InferSetup, batched: int, rules: V1Rules) -> tuple[str, ...]:
    pp, eager = setup.vllm.pipeline_parallel_size, setup.vllm.enforce_eager
    graphs = "" if eager else ", and so are the CUDA graphs (captured after the KV pool)"
    budget = (
        f"vLLM {VLLM_VERSION} (V1, `vllm serve` defaults): the CUDA context and, at tp or pp > 1, the NCCL "
        "communicators, custom all-reduce and symmetric-memory buffers are outside gpu_memory_utilization's budget "
        f"(they exist before vLLM's first memory snapshot, gpu_worker.py init_device){graphs}"
        + ("; torch's own NCCL communicator for the tp group, made by the profile run's logits all-gather, counts "
           "inside it" if setup.tp > 1 else "")
    ) if not rules.comms_in_budget else (
        f"vLLM {rules.release} (V1 of v0.9.2-v0.10.x, `vllm serve` defaults): the CUDA context is outside "
        "gpu_memory_utilization's budget, but at tp or pp > 1 the NCCL communicators (tp and ep groups, pp) and "
        "custom all-reduce count inside it: init_device takes vLLM's first memory snapshot before the distributed "
        f"init (gpu_worker.py; reordered in 0.11.0 by vllm-project/vllm PR #25359){graphs}"
    ) if not rules.context_in_budget else (
        f"vLLM {rules.release} (V1 of 0.7.x-0.8.x, `vllm serve` defaults): every byte outside torch after the profile "
        "run, the CUDA context and at tp or pp > 1 the NCCL communicators and custom all-reduce, counts inside "
        "gpu_memory_utilization's budget (gpu_worker.py determine_available_memory), as does torch's absolute "
        "allocated peak, the model runner's persistent buffers in it"
        + ("" if eager else "; the CUDA graphs are captured after the KV pool, beside the budget") + "; "
        + ("the sampler warm-up on FlashInfer's path (--vllm-sampler flashinfer: FlashInfer < 0.2.3 installed, as "
           "in vLLM's v0.8.5 docker image; topk_topp_sampler.py forward_cuda sorts nothing)"
           if setup.vllm.sampler == "flashinfer" else
           "the sampler warm-up on torch's top-k/top-p path (pip's vLLM 0.8.5 has no FlashInfer; vLLM's v0.8.5 "
           "docker image has FlashInfer 0.2.1.post2, whose path sorts nothing: --vllm-sampler flashinfer)")
        + "; an LLM() run (UsageContext.LLM_CLASS) takes 8192 batched tokens below 70 GiB and 16384 above instead "
        "of `vllm serve`'s 2048 / 8192 (engine/arg_utils.py _set_default_args_v1): give --max-num-batched-tokens"
        + "; vLLM 0.7.x differs (no sampler warm-up in the profile run, only logits: of every batched token at "
        "v0.7.1, of max_num_seqs rows at v0.7.3; max_num_seqs 1024 on every GPU: vllm_releases.py), not modelled, "
        "and 0.8.0-0.8.4 set other batch defaults (vllm_releases.py)"
    )
    notes = [
        budget,
        f"V1 always chunks prefill at max_num_batched_tokens ({batched:,}): a longer prompt runs in steps of that "
        "many tokens, so the profile run's peak bounds every step's activations",
        "not modelled: the small non-torch growth at tp 1 (kernel modules loaded on first use); "
        + ("NCCL 2.27's runtime connect (torch 2.8's NCCL, cuMem on): an algorithm other than the warm-up's, first "
           "used in the profile run, connects its buffers there, inside the budget; "
           if VLLM_NCCL[rules.release].cumem else "")
        + "NCCL's own kernels (loaded on first use)"
        + ("" if rules.runner_buffers_in_budget else
           "; the model runner's persistent input buffers (torch memory vLLM's profile does not count)"),
    ]
    if not eager:
        notes.append("CUDA graphs: only their shared memory pool is modelled; vLLM itself only measures the rest")
    if spec.vision is not None:  # v0.8.5 gpu_model_runner.py profile_run lines 1586-1649 (and every V1 release since)
        notes.append("not modelled: the profile run's vision encoder pass (vLLM runs the encoder over dummy items "
                     "filling the encoder cache budget, min(max_num_encoder_input_tokens, encoder_cache_size), and "
                     "holds their outputs through the text forward: gpu_model_runner.py profile_run); the peak shown "
                     "is the text decoder's")
    if spec.moe and setup.weight_format not in (None, "bf16", "fp16", "fp32"):
        notes.append("MoE workspace modelled as vLLM's fused_experts (Triton; fused_marlin_moe's unchunked caches "
                     "for MXFP4 on Marlin); a quantized checkpoint's other MoE kernels (GPTQ/AWQ Marlin, FlashInfer, "
                     "triton_kernels for mxfp4) allocate their own")
    elif spec.moe and spec.checkpoint is not None:
        notes.append("MoE workspace modelled as vLLM's fused_experts (Triton); a quantized checkpoint's own MoE "
                     "kernel may allocate differently")
    if pp > 1:
        notes.append(
            f"pp {pp}: the last stage is shown (head, sampler, L // pp layers); the others' pools differ and vLLM "
            "takes the smallest"
        )
    return tuple(notes)


def vllm_figures(plan: EngineEstimate) -> dict[str, float]:
    """The plan's numbers under the names vLLM's startup log prints them, for ``verify --log``: "Model loading took
    X GiB" (weights), memory_profiling's "non_torch_memory takes", "PyTorch activation peak memory takes", "Available
    KV cache memory: X GiB", "GPU KV cache size: N tokens", "Maximum concurrency for L tokens per request: Yx" and
    "Graph capturing finished in S secs, took X GiB" (0 with --enforce-eager). Bytes, tokens and a ratio."""
    terms = {t.name: t.bytes for t in plan.estimate.persistent}
    weights = sum(b for n, b in terms.items() if n.startswith("weights/"))
    # v0.11.0 sets its PyNccl communicators up before its first snapshot (vllm_comms.py): of them only torch's own,
    # made in the profile run (overhead/nccl_torch, vllm_comms.py logits_gather_term), is logged here
    non_torch = terms.get("overhead/nccl_torch", 0) if plan.version == VLLM_VERSION else sum(
        b for n, b in terms.items() if n.startswith("overhead/nccl")) + terms.get("overhead/custom_all_reduce", 0)
    # v0.6.4 and the V1 of 0.7-0.8 count every byte outside torch, the CUDA context too (vllm_v0.py, vllm_releases.py)
    if plan.version in ("0.6.4", "0.8.5"):
        non_torch += terms.get("overhead/cuda_context", 0)
    peak = terms["activations/profile_peak"]
    held = terms.get("overhead/runner_buffers", 0)  # 0.8.5: torch memory in its absolute peak (vllm_v085.py)
    available = plan.budget - weights - peak - held - non_torch if plan.budget is not None else terms["kv_cache/pool"]
    return {
        "weights": weights,
        "non_torch": non_torch,
        "activation_peak": peak,
        "available_kv_cache": available,
        "kv_tokens": plan.kv_tokens or 0,
        "concurrency": plan.concurrency or 0.0,
        "cuda_graphs": terms.get("cuda_graphs", 0),
    }

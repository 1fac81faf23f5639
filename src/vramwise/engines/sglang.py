"""SGLang's memory plan per GPU (one tp rank), as its 0.5 server sizes it at startup.

1. Defaults by GPU memory (server_args.py ``ServerArgs._handle_gpu_memory_settings``): ``gpu_mem`` is nvidia-smi's
   ``memory.total`` in MiB (utils/common.py ``get_nvgpu_memory_capacity``, the minimum over the GPUs). It picks
   ``chunked_prefill_size`` and ``cuda_graph_max_bs`` by that size and tp, then ``mem_fraction_static`` =
   round((gpu_mem - reserved) / gpu_mem, 3) with reserved (MiB) = 512 + 1.5 x max(chunked_prefill_size, 2048)
   + 2 x cuda_graph_max_bs + 1024 x tp x pp / 8, at least 10 GiB on GPUs over 60 GiB.
2. The token pool (model_executor/model_runner.py ``ModelRunner.profile_max_num_token``): with ``total`` the free
   memory after the distributed init (before the weights; at tp > 1 the init's NCCL and custom all-reduce buffers,
   engines/sglang_comms.py, are gone from it) and ``available`` the free memory after loading them,
   rest = available - total x (1 - mem_fraction_static); max_total_num_tokens = rest // cell_size, cell_size =
   KV bytes of one token over every layer (MHA/GQA: kv_heads/tp x head_dim x 2 x L x dtype; MLA:
   (kv_lora_rank + qk_rope_head_dim) x L x dtype). Then ``--max-total-tokens`` caps it and it is rounded down to
   ``--page-size`` (``ModelRunner.init_memory_pool``); zero or less raises "Not enough memory. Please try to
   increase --mem-fraction-static." A hybrid sliding-window architecture (gpt-oss) then splits those
   token-layers into a full pool and a sliding-window pool of 0.8 x its tokens (``set_num_token_hybrid``);
   max_total_num_tokens is the full pool's.
3. Requests (``init_memory_pool``): max_num_reqs = min(max(int(tokens / context_len x 512), 2048), 4096) unless
   ``--max-running-requests`` is given; the scheduler runs at most min(that, tokens // 2). The request-to-token
   map is (max_num_reqs + 1) x (context_len + 4) int32 (mem_cache/memory_pool.py ``ReqToTokenPool``).
Everything else (activations of a chunked prefill, CUDA graphs, the request map, torch's own NCCL communicator)
lives in the (1 - mem_fraction_static) share the pool leaves.

SGLang 0.4 (``version="0.4"``, read at 0.4.9.post2, the release of mid-2025) set the defaults in
``ServerArgs.__post_init__`` instead (server_args.py lines 279-353): mem_fraction_static = round((gpu_mem -
reserved) / gpu_mem, 3) with reserved (MiB) = (2.8 + tp x pp / 10) x 1024 below 35 GiB, (9.5 + tp x pp / 2) x 1024
below 90 GiB, (12 + tp x pp / 2) x 1024 below 160 GiB, else 32 x 1024; chunked_prefill_size 2048 below 35 GiB,
8192 below 160 GiB, else 16384; cuda_graph_max_bs 8 (80 at tp >= 4) below 35 GiB, else unset, so the capture list
(model_executor/cuda_graph_runner.py ``get_batch_sizes_to_capture``) ends at 160, at 256 above 90 GiB and at 512
above 160,000 MiB. Its pool and request rules are the ones above.
"""

from __future__ import annotations

from vramwise.catalog.gpu_spec import Gpu
from vramwise.engines.nccl_comm import link_of, topology_note
from vramwise.engines.result import EngineEstimate
from vramwise.engines.rope_cache import rope_cache_term
from vramwise.engines.sglang_comms import TOPOLOGY, distributed_init_terms, torch_group_term
from vramwise.errors import InvalidWorkloadError, UnsupportedArchitectureError
from vramwise.estimate.cuda_context import context_term
from vramwise.estimate.kv_cache import kv_elements_per_token, sliding_layers
from vramwise.estimate.plan import Vars
from vramwise.estimate.precision import compute_bytes, kv_dtype
from vramwise.estimate.sharding import check_tp
from vramwise.estimate.term import Estimate, Phase, PhaseKind, Term
from vramwise.estimate.weights import own_format, reads_headers, weight_terms
from vramwise.estimate.workspace import prefill_workspace
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.spec.ssm import attention_layer_count
from vramwise.units import MIB
from vramwise.workload import InferSetup
from vramwise.workload.sglang_flags import SglangFlags

VERSION = "0.5"
_ARGS = "sglang python/sglang/srt/server_args.py ServerArgs._handle_gpu_memory_settings"
_PROFILE = "sglang python/sglang/srt/model_executor/model_runner.py ModelRunner.profile_max_num_token"
_POOL = "sglang python/sglang/srt/model_executor/model_runner.py ModelRunner.init_memory_pool"
_GIB_MIB = 1024
_NOT_ENOUGH = "Not enough memory. Please try to increase --mem-fraction-static."  # init_memory_pool's RuntimeError

# (gpu_mem below, in MiB; chunked_prefill_size; cuda_graph_max_bs at tp < 4; at tp >= 4), CUDA branch of
# _handle_gpu_memory_settings: T4/4080, A10/4090/5090, A100-40G/L40, H100/A100-80G, H20/H200; above: B200/MI300.
_BY_MEMORY = (
    (20 * _GIB_MIB, 2048, 8, 8),
    (35 * _GIB_MIB, 2048, 24, 80),
    (60 * _GIB_MIB, 4096, 32, 160),
    (90 * _GIB_MIB, 8192, 256, 512),
    (160 * _GIB_MIB, 8192, 256, 512),
)
_LARGEST = (16384, 512)


def gpu_mem_mib(gpu: Gpu) -> float:
    """What SGLang calls ``gpu_mem``: nvidia-smi's memory.total in MiB (the CUDA total where it is not known)."""
    return (gpu.smi_bytes or gpu.memory_bytes) / MIB


def memory_defaults(gpu_mem: float, tp: int) -> tuple[int, int]:
    """(chunked_prefill_size, cuda_graph_max_bs) SGLang picks for a GPU of ``gpu_mem`` MiB at tensor parallel ``tp``."""
    for below, chunk, small_tp, large_tp in _BY_MEMORY:
        if gpu_mem < below:
            return chunk, small_tp if tp < 4 else large_tp
    return _LARGEST


def reserved_mib(gpu_mem: float, *, chunk: int, max_prefill_tokens: int, graph_bs: int, tp: int, pp: int = 1) -> float:
    """The MiB SGLang keeps outside the static share (activations, CUDA graphs, metadata), before the fraction."""
    prefill = max(chunk, 2048) if chunk > 0 else max(max_prefill_tokens, 2048)
    reserved = 512 + prefill * 1.5 + graph_bs * 2 + tp * pp / 8 * 1024
    if gpu_mem > 60 * _GIB_MIB:
        reserved = max(reserved, 10 * _GIB_MIB)
    return reserved


def mem_fraction_static(gpu_mem: float, *, chunk: int, max_prefill_tokens: int, graph_bs: int, tp: int) -> float:
    """SGLang's default --mem-fraction-static: round((gpu_mem - reserved) / gpu_mem, 3)."""
    reserved = reserved_mib(gpu_mem, chunk=chunk, max_prefill_tokens=max_prefill_tokens, graph_bs=graph_bs, tp=tp)
    return round((gpu_mem - reserved) / gpu_mem, 3)


# sglang 0.4.9.post2 server_args.py ServerArgs.__post_init__ (lines 296-317): (gpu_mem below, in MiB; reserved MiB
# = (base + tp x pp x per_gpu) x 1024), the CUDA branch; above the last: 32 x 1024
_V04_RESERVED = ((20 * _GIB_MIB, 2.8, 1 / 10), (35 * _GIB_MIB, 2.8, 1 / 10), (90 * _GIB_MIB, 9.5, 1 / 2),
                 (100 * _GIB_MIB, 12, 1 / 2), (160 * _GIB_MIB, 12, 1 / 2))
_V04_SMALL_GPU_MIB = 35 * _GIB_MIB  # "gpu_mem < 35 * 1024": chunked prefill 2048 and few CUDA graphs below it


def defaults_v04(gpu_mem: float, tp: int, pp: int = 1) -> tuple[int, int, float]:
    """(chunked_prefill_size, cuda_graph_max_bs, mem_fraction_static) SGLang 0.4.9.post2 picks (the module
    docstring); cuda_graph_max_bs where it is unset: the largest batch size cuda_graph_runner.py captures."""
    reserved = next(((base + tp * pp * per) * _GIB_MIB for below, base, per in _V04_RESERVED if gpu_mem < below),
                    32 * _GIB_MIB)
    fraction = round((gpu_mem - reserved) / gpu_mem, 3)
    if gpu_mem < _V04_SMALL_GPU_MIB:
        return 2048, 8 if tp < 4 else 80, fraction
    chunk = 8192 if gpu_mem < 160 * _GIB_MIB else 16384
    # cuda_graph_runner.py get_batch_sizes_to_capture: up to 160, + range(160, 257, 8) above 90 GiB, + range(256,
    # 513, 16) above 160 * 1000 MiB
    graphs = 512 if gpu_mem > 160 * 1000 else 256 if gpu_mem > 90 * _GIB_MIB else 160
    return chunk, graphs, fraction


# server_args.py --swa-full-tokens-ratio: the sliding-window layers' tokens per full layer's token (default 0.8)
SWA_FULL_TOKENS_RATIO = 0.8


def hybrid_swa_tokens(spec: ModelSpec, tokens: int) -> tuple[int, int] | None:
    """(full, swa) tokens of a hybrid sliding-window model's two pools (model_runner.py
    ``ModelRunner.set_num_token_hybrid``): the profiled pool's token-layers, tokens x L, shared out as
    full x full_layers + swa x swa_layers with swa = ratio x full. None where SGLang keeps one pool."""
    swa_layers = sliding_layers(spec)
    if not spec.traits.sglang_hybrid_swa or not swa_layers:
        return None
    layers = attention_layer_count(spec)
    full = int(tokens * layers / (SWA_FULL_TOKENS_RATIO * swa_layers + layers - swa_layers))
    return full, int(full * SWA_FULL_TOKENS_RATIO)


def cell_size(spec: ModelSpec, tp: int, kv_bytes: int) -> int:
    """KV bytes of one token over every attention layer on one tp rank (MLA: the latent and rope key)."""
    return kv_elements_per_token(spec, tp) * attention_layer_count(spec) * kv_bytes


def max_num_reqs(tokens: int, context_len: int, asked: int | None) -> int:
    """Rows of the request-to-token map: --max-running-requests, else clamp(tokens / context_len x 512, 2048, 4096)."""
    if asked is not None:
        return asked
    return min(max(int(tokens / context_len * 512), 2048), 4096)


def _refuse(spec: ModelSpec) -> None:
    if spec.encoder_decoder is not None:
        raise UnsupportedArchitectureError(
            f"--engine sglang: {spec.name} is an encoder-decoder model; SGLang serves decoder-only models",
            field="engine",
            allowed="hf for encoder-decoder models",
        )
    if spec.ssm is not None:
        raise UnsupportedArchitectureError(
            f"--engine sglang: {spec.name} has Mamba layers; SGLang's hybrid state pool is not modelled",
            field="engine",
            allowed="vllm or hf for state-space hybrids",
        )


def plan(spec: ModelSpec, setup: InferSetup, flags: SglangFlags, gpu: Gpu, gpu_count: int = 1) -> EngineEstimate:
    """SGLang's plan on one GPU of ``gpu_count`` (tp = ``setup.tp``): the static budget, the token pool, the
    requests it runs, and the terms live on that GPU."""
    _refuse(spec)
    tp = setup.tp
    if tp > gpu_count:
        raise InvalidWorkloadError(
            f"--tp {tp} needs {tp} GPUs, --gpu gives {gpu_count}", field="tp", allowed=f"1 to {gpu_count}"
        )
    check_tp(spec, tp)
    mem = gpu_mem_mib(gpu)
    chunk, graph_bs, fraction = _settings(flags, mem, tp)

    fmt = get_format(setup.weight_format or own_format(spec))
    c = compute_bytes(fmt.name)
    kv_name, kv_b = kv_dtype(setup, fmt.name)
    weights = weight_terms(spec, fmt, hp_bytes=c, tp=tp, own_format=reads_headers(spec, setup.weight_format))
    rope, rope_note = rope_cache_term(spec, c=c, engine="sglang", release=flags.version)  # loaded with the model
    weights = (*weights, rope) if rope is not None else weights
    weight_bytes = sum(t.bytes for t in weights)
    context = context_term(setup.overheads)
    link, _ = link_of(gpu, setup.interconnect)
    dist = distributed_init_terms(tp, link)  # allocated before min_per_gpu_memory is measured (sglang_comms.py)
    dist_bytes = sum(t.bytes for t in dist)
    free = gpu.memory_bytes - context.bytes - dist_bytes  # SGLang's total_gpu_memory: free after the distributed init
    budget = int(fraction * free)
    rest = budget - weight_bytes
    cell = cell_size(spec, tp, kv_b)
    tokens = max(0, rest) // cell if cell else 0
    if flags.max_total_tokens is not None:
        tokens = min(tokens, flags.max_total_tokens)
    tokens = tokens // flags.page_size * flags.page_size
    context_len = flags.context_length or spec.max_position_embeddings or setup.tokens
    _check_request(setup.tokens, context_len, given=flags.context_length is not None)
    reqs = max_num_reqs(tokens, context_len, flags.max_running_requests)
    pool_bytes, split = tokens * cell, hybrid_swa_tokens(spec, tokens)
    formula = (
        f"max_total_num_tokens {tokens:,} x cell_size {cell:,} B; tokens = (mem_fraction_static {fraction:g} x "
        f"free {free:,} - weights {weight_bytes:,}) // cell_size"
        + (f" (free: CUDA total - context - distributed init {dist_bytes:,})" if dist_bytes else "")
        + (f", capped at --max-total-tokens {flags.max_total_tokens:,}" if flags.max_total_tokens else "")
        + (f", rounded down to pages of {flags.page_size}" if flags.page_size > 1 else "")
    )
    per_seq = -(-setup.tokens // flags.page_size) * flags.page_size
    fit = tokens // per_seq
    if split is not None:  # the sliding-window layers get a pool of their own (set_num_token_hybrid)
        (full, swa), swa_layers = split, sliding_layers(spec)
        layer_cell = cell // attention_layer_count(spec)
        full_layers = attention_layer_count(spec) - swa_layers
        pool_bytes = layer_cell * (full * full_layers + swa * swa_layers)
        formula += (
            f"; hybrid SWA: {tokens:,} x {attention_layer_count(spec)} layers = full {full:,} x {full_layers} + "
            f"swa {swa:,} x {swa_layers} (swa = {SWA_FULL_TOKENS_RATIO} x full), {layer_cell:,} B per token per layer"
        )
        window = min(setup.tokens, spec.attention.sliding_window or setup.tokens)
        tokens, fit = full, min(full // per_seq, swa // (-(-window // flags.page_size) * flags.page_size))
    running = min(reqs, tokens // 2)
    sequences = min(running, fit)

    pool = Term(name="kv_cache", bytes=pool_bytes, formula=formula, source=_PROFILE)
    req_map = Term(
        name="sglang/req_to_token",
        bytes=(reqs + 1) * (context_len + 4) * 4,
        formula=f"(max_num_reqs {reqs:,} + 1) x (context_len {context_len:,} + 4) x int32 4 B",
        source="sglang python/sglang/srt/mem_cache/memory_pool.py ReqToTokenPool (sized in " + _POOL + ")",
    )
    graphs = _graph_term(graph_bs, flags.disable_cuda_graph)  # captured graphs keep their memory pool
    torch_nccl = torch_group_term(tp, link)  # created in the first prefill, in the share the pool leaves
    persistent = (*weights, pool, req_map, *((graphs,) if graphs else ()), context, *dist,
                  *((torch_nccl,) if torch_nccl else ()))
    phases = [_prefill_phase(spec, setup, chunk if chunk > 0 else flags.max_prefill_tokens, c)]
    notes = [
        f"SGLang {flags.version} settings: mem_fraction_static {fraction:g}, chunked_prefill_size {chunk}, "
        f"cuda_graph_max_bs {graph_bs}, max_running_requests {running:,}, context_len {context_len:,} "
        f"(gpu_mem {mem:,.0f} MiB, nvidia-smi's total)",
        *_notes(spec, fraction, tokens, rest, setup, context_len, kv_name, tp),
        *((topo,) if (topo := topology_note(gpu, tp, "SGLang", setup.interconnect)) else ()),
        *((rope_note,) if rope_note else ()),
    ]
    if spec.vision is not None and flags.mem_fraction_static is None:
        # server_args.py: "Multimodal models need more memory for the image processing" (adjust_mem_fraction_for_vlm)
        notes.append(
            "SGLang lowers the default mem_fraction_static for a vision-language model (adjust_mem_fraction_for_vlm); "
            "that adjustment is not modelled: give --mem-fraction-static"
        )
    return EngineEstimate(
        engine="sglang",
        version=flags.version,
        estimate=Estimate(persistent=persistent, phases=tuple(phases), notes=tuple(notes)),
        budget=budget,
        kv_pool=pool,
        kv_tokens=tokens,
        max_sequences=sequences,
        max_context=min(context_len, tokens),
        # a hybrid SWA pool: bytes per full-pool token, its sliding layers' 0.8 share included
        kv_bytes_per_token=pool_bytes // tokens if split is not None and tokens else cell,
        sequence_tokens=setup.tokens,
        context_len=context_len,
        concurrency=tokens / context_len,
        refusal=None if tokens > 0 else "KV pool negative",
        refusal_message=None if tokens > 0 else _NOT_ENOUGH + f" [{_POOL}]",
        notes=tuple(notes),
    )


def sglang_plan(spec: ModelSpec, setup: InferSetup, gpu: Gpu, count: int = 1) -> EngineEstimate:
    """The dispatch table's entry (app/engines.py PLANS): the flags from the setup's ``sglang`` group."""
    return plan(spec, setup, setup.sglang, gpu, max(count, setup.tp))


def _settings(flags: SglangFlags, mem: float, tp: int) -> tuple[int, int, float]:
    """chunked_prefill_size, cuda_graph_max_bs and mem_fraction_static: as given, else the release's defaults."""
    if flags.version == "0.4":
        chunk_default, graph_default, fraction_default = defaults_v04(mem, tp)
    else:
        chunk_default, graph_default = memory_defaults(mem, tp)
        fraction_default = None
    chunk = flags.chunked_prefill_size if flags.chunked_prefill_size is not None else chunk_default
    graph_bs = flags.cuda_graph_max_bs if flags.cuda_graph_max_bs is not None else graph_default
    fraction = flags.mem_fraction_static or fraction_default
    if fraction is None:  # 0.5: from what the chunk and the graphs are expected to take
        fraction = mem_fraction_static(
            mem, chunk=chunk, max_prefill_tokens=flags.max_prefill_tokens, graph_bs=graph_bs, tp=tp
        )
    return chunk, graph_bs, fraction


def _prefill_phase(spec: ModelSpec, setup: InferSetup, chunk: int, c: int) -> Phase:
    """One chunk of a prefill, the largest forward the scheduler runs (tokens of one request or several)."""
    rule = prefill_workspace(spec, chunk=chunk, kv_len=chunk, c=c, attention=setup.attention, tp=setup.tp)
    return Phase(kind=PhaseKind.PREFILL_LAYER, transient=(rule.term(Vars.inference(1)),))


def _graph_term(graph_bs: int, disabled: bool) -> Term | None:
    """SGLang does not compute its CUDA graphs' memory; it reserves 2 MiB per captured batch size unit."""
    if disabled:
        return None
    return Term(
        name="cuda_graphs",
        bytes=graph_bs * 2 * MIB,
        formula=f"cuda_graph_max_bs {graph_bs} x 2 MiB (SGLang's own reservation, not a measured size)",
        source=_ARGS + " (reserved_mem += cuda_graph_max_bs * 2)",
    )


def _check_request(tokens: int, context_len: int, *, given: bool) -> None:
    """SGLang refuses a request longer than its context_len (managers/tokenizer_manager.py
    ``TokenizerManager._validate_one_request``: "The input (N tokens) is longer than the model's context length" and
    "Requested token count exceeds the model's maximum context length" for input + max_new_tokens; sgl-project/sglang
    at 001067f, the same check as in 0.4/0.5), unless --allow-auto-truncate cuts the input, which is not modelled."""
    if tokens > context_len:
        what = "--context-length" if given else "the model's context (max_position_embeddings)"
        raise InvalidWorkloadError(
            f"context + new tokens ({tokens:,}) is more than SGLang's context_len ({context_len:,}, {what}): SGLang "
            "rejects such a request; give a shorter --context or a larger --context-length",
            field="context_length",
        )


def _notes(
    spec: ModelSpec, fraction: float, tokens: int, rest: int, setup: InferSetup, context_len: int, kv: str, tp: int
) -> list[str]:
    notes = [f"SGLang: weights and the KV pool take mem_fraction_static {fraction:g} of the free memory"]
    if tokens <= 0:
        notes.append(f"SGLang stops at startup: '{_NOT_ENOUGH}' (the static share less the weights is {rest:,} B)")
    if spec.attention.sliding_window and sliding_layers(spec) and not spec.traits.sglang_hybrid_swa:
        notes.append("sliding-window layers get full-length pool slots: SGLang splits the pool only for the "
                     "architectures in its is_hybrid_swa_model list")
    if tp > 1:
        notes.append(f"per GPU of tp={tp}; " + TOPOLOGY.format(tp=tp))
    if kv != "bf16":
        notes.append(f"KV cache in {kv}")
    return notes

"""llama.cpp's memory plan (and Ollama's, which runs it): weights per device, the KV cache, the compute buffers.

Modelled from ggml-org/llama.cpp at commit 7049736b (the tree ollama v0.12.10 vendors in ``llama/llama.cpp``;
ollama's patches there change no size read here). Each rule cites its function:

- Devices (``src/llama-model.cpp`` ``llama_model::load_tensors``): ``-ngl n`` puts the last ``n`` repeating layers
  on the GPUs (``i_gpu_start = max(n_layer - n, 0)``), and the output layer (``output``, ``output_norm``) too when
  ``n > n_layer`` (``act_gpu_layers = min(n, n_layer + 1)``: the output counts as layer ``n_layer``). The input
  layer (``token_embd``) always stays on the CPU ("very little benefit to offloading the input layer"). With
  several GPUs (split mode layer) layer ``il`` goes to the first GPU whose cumulative share of ``--tensor-split``
  exceeds ``(il - i_gpu_start) / act_gpu_layers`` (``std::upper_bound`` over the normalised cumulative splits);
  without ``--tensor-split`` the shares are each GPU's free memory, equal for identical idle GPUs.
  A model without ``output.weight`` (tied embeddings) loads ``token_embd`` a second time as the output
  (``TENSOR_DUPLICATED``), on the output's device.
- Weights: a GGUF's bytes exactly, per layer (``CheckpointBytes.layer_bytes``); otherwise the storage format's
  bytes (``formats/``), split evenly over the layers.
- KV cache (``src/llama-kv-cache.cpp`` ``llama_kv_cache::llama_kv_cache``): per attention layer one K tensor
  ``[n_embd_k_gqa, kv_size, n_stream]`` in ``type_k`` and one V ``[n_embd_v_gqa, kv_size, n_stream]`` in
  ``type_v``; bytes by ``ggml_row_size`` (block types: q8_0 34 B per 32 values, q4_0 18 B per 32). The cells
  (``llama_model::create_memory``): ``kv_size = GGML_PAD(ceil(n_ctx / n_seq_max), pad)`` per stream, one stream
  per sequence unless ``--kv-unified``, ``pad`` 256 when flash attention is not off, 32 when it is
  (``llama_kv_cache::get_padding``; AUTO counts as on, since the cache is made before AUTO is resolved).
  Sliding-window layers (``src/llama-kv-cache-iswa.cpp``) keep ``min(kv_size, GGML_PAD(n_swa x (unified ?
  n_seq_max : 1) + n_ubatch, pad))`` cells unless ``--swa-full``. On the layer's device, or in host RAM with
  ``--no-kv-offload``.
- Compute buffers (``src/llama-context.cpp`` ``llama_context::llama_context``): the scheduler reserves the
  prompt graph of ``n_tokens = min(n_ctx, n_ubatch)`` tokens with every token an output (``graph_reserve(n_tokens,
  n_seqs, n_tokens)``), so each device's buffer is the largest set of tensors its part of that graph holds at
  once. ggml-alloc's exact schedule is not derived here: the dominant tensors are, per device, the larger of (a
  layer: the attention scores ``n_kv x n_tokens x n_head`` f32 without flash attention (``build_attn_mha``:
  ``ggml_mul_mat(k, q)``, softmax in place), the feed-forward's intermediates, plus two ``n_embd x n_tokens`` f32
  hidden states, plus the attention masks, ``llm_graph_input_attn_kv``: ``n_kv x GGML_PAD(n_tokens / n_stream,
  GGML_KQ_MASK_PAD = 64)`` per stream, f32, or its f16 copy with flash attention) and (the output: logits
  ``n_vocab x n_tokens`` f32 and the normed hidden state; ggml-alloc has freed the masks by then); with flash
  attention the GPU of layer 0 also holds, while it casts the mask to f16, the f32 mask's split-input copy beside
  the f16 result (``llamacpp_compute.mask_cast_phase``). Host: the
  CPU backend's buffer holds the graph inputs (the token embeddings and the f32 masks). With several GPUs and
  everything offloaded, pipeline parallelism keeps 4 copies of each split input (``ggml-backend.cpp``).
- Flash attention (``-fa auto``) is on when ggml-cuda has a kernel for the model and cache (``fattn.cu``): see
  ``llamacpp_context.cuda_flash_attn``.
- Host: the output buffer ``n_vocab x n_seq_max`` f32 (``llama_context::output_reserve``, a pinned host buffer),
  CPU-side weights (page cache with mmap, allocated with ``--no-mmap``), CPU-side KV.
- Refused as llama.cpp refuses (``llama_init_from_model``, the ``llama_context`` ctor): a quantized V cache with
  ``-fa off`` ("V cache quantization requires flash_attn") or with ``-fa auto`` where CUDA has no kernel ("quantized
  V cache was requested, but this requires Flash Attention"), and a block type that does not divide the head size.
- Not modelled (said in the notes): ggml-alloc's exact placement (the compute buffer is its dominant tensors;
  Llama-3 8B at -c 8192 without flash attention: 544 MiB here, 560 MiB in public logs), the CUDA backend's memory
  pool (cuBLAS dequantization temporaries), op offload of CPU layers' weights, the 128-byte alignment and
  MATRIX_ROW_PADDING of weight tensors, and the mmproj file of a vision model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vramwise.catalog.gpu_spec import Gpu
from vramwise.engines.llamacpp_compute import (
    host_compute,
    layer_phase,
    mask_cast_phase,
    mask_terms,
    output_phase,
    pipeline_copies,
)
from vramwise.engines.llamacpp_context import (
    F32,
    SCHED_MAX_COPIES,
    SRC,
    VERSION,
    Context,
    context,
    cuda_flash_attn,
    devices,
    kv_layer_bytes,
    kv_rows,
    pipeline,
)
from vramwise.engines.result import EngineEstimate
from vramwise.errors import InvalidWorkloadError, UnsupportedArchitectureError
from vramwise.estimate.overheads import cuda_context_term
from vramwise.estimate.precision import compute_bytes
from vramwise.estimate.term import Estimate, Phase, Term
from vramwise.estimate.weights import own_format, reads_headers, weight_terms
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.workload.infer import InferSetup
from vramwise.workload.llamacpp_flags import CACHE_TYPES, LlamaCppFlags, is_quantized, ollama_flags, row_bytes


def _refuse(spec: ModelSpec, flags: LlamaCppFlags, gpu_count: int) -> None:
    if spec.ssm is not None or spec.encoder_decoder is not None:
        what = "state-space (Mamba) layers" if spec.ssm is not None else "an encoder-decoder"
        raise UnsupportedArchitectureError(
            f"{spec.name}: {what} under llama.cpp is not modelled (llama_memory_recurrent / hybrid caches)",
            field="engine",
            allowed="decoder-only attention models",
        )
    if is_quantized(flags.cache_type_v) and flags.flash_attn == "auto" and not cuda_flash_attn(spec, flags):
        # llama_context ctor: auto resolves off when the FA node leaves its layer's device
        raise InvalidWorkloadError(
            f"-ctv {flags.cache_type_v} with -fa auto: CUDA has no flash-attention kernel for this model and cache "
            "(head size, or K and V types), so llama.cpp disables it and stops: quantized V cache was requested, "
            "but this requires Flash Attention",
            field="cache_type_v",
            allowed="-ctk and -ctv of one type among f16, q4_0, q8_0, or -ctv f16",
        )
    if is_quantized(flags.cache_type_v) and flags.flash_attn == "off":
        # llama_init_from_model: LLAMA_LOG_ERROR("V cache quantization requires flash_attn")
        raise InvalidWorkloadError(
            f"-ctv {flags.cache_type_v} with -fa off: V cache quantization requires flash_attn (llama.cpp refuses "
            "it); use -fa on or -ctv f16",
            field="cache_type_v",
            allowed="f16, f32, bf16 with -fa off; any type with -fa on/auto",
        )
    k_row, v_row = kv_rows(spec)
    heads = spec.attention.head_dim
    for name, ctype, row in (("K", flags.cache_type_k, k_row), ("V", flags.cache_type_v, v_row)):
        block = CACHE_TYPES[ctype][0]
        # llama_init_from_model checks the head size with -fa auto ("... does not divide n_embd_head_k"); a row
        # (n_embd_gqa values) that is not whole blocks cannot be a ggml tensor of that type at all
        if (flags.flash_attn == "auto" and heads % block) or row % block:
            raise InvalidWorkloadError(
                f"{name} cache type {ctype} with block size {block} does not divide n_embd_head={heads}",
                field=f"cache_type_{name.lower()}",
                allowed="f16, bf16, f32, or a type whose block divides the head size",
            )
    if flags.split_mode == "row":
        raise InvalidWorkloadError(
            "-sm row splits every matrix by rows over the GPUs; its buffers are not modelled: use -sm layer",
            field="split_mode",
            allowed="layer, none",
        )
    if flags.tensor_split and len(flags.tensor_split) != gpu_count:
        raise InvalidWorkloadError(
            f"--tensor-split has {len(flags.tensor_split)} shares for {gpu_count} GPUs: give one share per GPU",
            field="tensor_split",
            allowed=f"{gpu_count} comma-separated shares",
        )


@dataclass(frozen=True)
class _Weights:
    layers: tuple[int, ...]  # bytes of each repeating layer
    input: int  # token_embd (always on the CPU)
    output: int  # output.weight + output_norm (+ the duplicated token_embd when tied)
    source: str


def _weights(spec: ModelSpec, setup: InferSetup) -> _Weights:
    ckpt = spec.checkpoint
    n = spec.num_layers
    own = reads_headers(spec, setup.weight_format)
    if own and ckpt is not None and len(ckpt.layer_bytes) == n:
        inp = ckpt.bytes_of("embeddings")
        out = ckpt.total_bytes - inp - sum(ckpt.layer_bytes)
        if not ckpt.bytes_of("head"):  # no output.weight: token_embd duplicated as the output
            out += inp
        return _Weights(ckpt.layer_bytes, inp, out, ckpt.source)
    fmt = get_format(setup.weight_format or own_format(spec))
    terms = weight_terms(spec, fmt, hp_bytes=compute_bytes(fmt.name), own_format=own)
    by = {t.name.removeprefix("weights/"): t.bytes for t in terms}
    inp, head = by.get("embeddings", 0), by.get("head", 0)
    rest = sum(by.values()) - inp - head
    out = head or (inp if spec.lm_head else 0)
    per = rest // n
    layers = tuple(per + (1 if i < rest - per * n else 0) for i in range(n))
    return _Weights(layers, inp, out, f"{fmt.name} ({fmt.source}); layers assumed equal, final norm with them")


@dataclass(frozen=True)
class _Device:
    """What one device holds."""

    layers: tuple[int, ...]
    output: bool
    weights: int  # the repeating layers' (and on the CPU, token_embd's)
    output_weights: int
    k: int
    v: int


def _empty() -> dict:
    return {"layers": [], "output": False, "weights": 0, "out_w": 0, "k": 0, "v": 0}


def _place(
    spec: ModelSpec, ctx: Context, flags: LlamaCppFlags, w: _Weights, devs: list[int | None]
) -> dict[int | None, _Device]:
    n = spec.num_layers
    acc: dict[int | None, dict] = {}
    for il in range(n + 1):
        d = acc.setdefault(devs[il], _empty())
        if il == n:
            d["output"] = True
            d["out_w"] = w.output
            continue
        d["layers"].append(il)
        d["weights"] += w.layers[il]
        kv_where = None if flags.no_kv_offload else devs[il]
        k, v = kv_layer_bytes(spec, ctx, flags, il, gpu=kv_where is not None)
        kv_dev = acc.setdefault(kv_where, _empty())
        kv_dev["k"] += k
        kv_dev["v"] += v
    cpu = acc.setdefault(None, _empty())
    cpu["weights"] += w.input
    return {
        d: _Device(tuple(a["layers"]), a["output"], a["weights"], a["out_w"], a["k"], a["v"]) for d, a in acc.items()
    }


def _span(layers: tuple[int, ...]) -> str:
    return f"layers {layers[0]}-{layers[-1]}" if layers else "no layers"


def _gpu_estimate(spec: ModelSpec, ctx: Context, flags: LlamaCppFlags, dev: _Device, cuda_mib: int | None) -> Estimate:
    persistent = [
        Term(
            name="weights/layers",
            bytes=dev.weights,
            formula=f"{len(dev.layers)} repeating {_span(dev.layers)}",
            source=f"{SRC} src/llama-model.cpp load_tensors (-ngl {flags.n_gpu_layers})",
        ),
        Term(
            name="weights/output",
            bytes=dev.output_weights,
            formula="output + output_norm (token_embd duplicated when the model ties them)",
            source=f"{SRC} src/llama-model.cpp load_tensors (dev_output; TENSOR_DUPLICATED)",
        ),
        *_kv_terms(ctx, flags, dev),
        cuda_context_term(cuda_mib),
    ]
    masks = mask_terms(spec, ctx) if dev.layers else []
    kept = [pipeline_copies(spec, ctx)] if ctx.copies > 1 and dev.layers else []
    phases = []
    if dev.layers:
        phases.append(layer_phase(spec, ctx, [*masks, *kept]))
    cast = mask_cast_phase(spec, ctx) if 0 in dev.layers else None
    if cast is not None:  # the GPU of layer 0 casts the f32 mask for flash attention (llamacpp_compute.py)
        phases.append(cast)
    if dev.output:
        out = output_phase(spec, ctx)
        phases.append(Phase(kind=out.kind, transient=(*out.transient, *kept)))
    return Estimate(
        persistent=tuple(t for t in persistent if t.bytes or t.name.startswith("overhead")), phases=tuple(phases)
    )


def _kv_terms(ctx: Context, flags: LlamaCppFlags, dev: _Device) -> list[Term]:
    src = f"{SRC} src/llama-kv-cache.cpp llama_kv_cache ctor (ggml_row_size)"
    cells = f"{ctx.cells:,} cells x {ctx.n_stream} stream(s)"
    return [
        Term(name="kv_cache/k", bytes=dev.k, formula=f"{flags.cache_type_k}: {cells}, {_span(dev.layers)}", source=src),
        Term(name="kv_cache/v", bytes=dev.v, formula=f"{flags.cache_type_v}: {cells}, {_span(dev.layers)}", source=src),
    ]


def _host_terms(spec: ModelSpec, ctx: Context, flags: LlamaCppFlags, cpu: _Device) -> tuple[Term, ...]:
    where = "allocated (--no-mmap)" if flags.no_mmap else "page cache (mmap)"
    terms = [
        Term(
            name="host/weights",
            bytes=cpu.weights + cpu.output_weights,
            formula="token_embd"
            + (f" + {len(cpu.layers)} {_span(cpu.layers)}" if cpu.layers else "")
            + (" + the output layer" if cpu.output else "")
            + f", {where}",
            source=f"{SRC} src/llama-model.cpp load_tensors (dev_input is always the CPU)",
        ),
        Term(
            name="host/output_buffer",
            bytes=(spec.vocab_size + (spec.hidden_size if flags.embeddings else 0)) * flags.parallel * F32,
            formula=f"(n_vocab {spec.vocab_size:,}"
            + (f" + n_embd {spec.hidden_size:,} (--embeddings)" if flags.embeddings else "")
            + f") x n_seq_max {flags.parallel} x 4 B",
            source=f"{SRC} src/llama-context.cpp output_reserve (pinned host buffer)",
        ),
    ]
    terms.append(host_compute(spec, ctx))
    if cpu.k or cpu.v:
        terms.append(
            Term(
                name="host/kv_cache",
                bytes=cpu.k + cpu.v,
                formula=f"K and V of {spec.num_layers if flags.no_kv_offload else len(cpu.layers)} layers in host RAM",
                source=f"{SRC} src/llama-kv-cache.cpp (offload false or layer on the CPU: CPU buffer type)",
            )
        )
    return tuple(t for t in terms if t.bytes)


def plan(spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu: Gpu, gpu_count: int = 1) -> EngineEstimate:
    """llama.cpp's plan for ``spec`` on ``gpu_count`` x ``gpu``: the fullest GPU's terms, host RAM, capacity."""
    if gpu_count < 1:
        raise InvalidWorkloadError(f"gpu_count {gpu_count}: at least 1", field="gpu", allowed="1 or more GPUs")
    _refuse(spec, flags, gpu_count)
    if flags.fit_gpu_layers:
        return fit_gpu_layers(spec, setup, flags, gpu, gpu_count)
    return _plan(spec, setup, flags, gpu, gpu_count)


def fit_gpu_layers(
    spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu: Gpu, gpu_count: int = 1
) -> EngineEstimate:
    """Ollama's ``num_gpu -1``: the largest -ngl (0 .. n_layer + 1, the output counting as one) whose plan fits
    every GPU. Ollama fits with its own per-architecture graph estimate (fs/ggml/ggml.go GraphSize) and one
    extra layer of headroom (llm/memory.go estimateGPULayers); this fits with the plan's own bytes, and says so."""
    _refuse(spec, flags, gpu_count)
    lo, hi = 0, spec.num_layers + 1  # more GPU layers never use less GPU memory: bisect on the fullest GPU
    while lo < hi:
        mid = (lo + hi + 1) // 2
        trial = _plan(spec, setup, replace(flags, n_gpu_layers=mid), gpu, gpu_count, search=False)
        if trial.estimate.peak_bytes <= gpu.memory_bytes:
            lo = mid
        else:
            hi = mid - 1
    result = _plan(spec, setup, replace(flags, n_gpu_layers=lo), gpu, gpu_count)
    note = (
        f"-ngl {lo} of {spec.num_layers + 1}: the most layers that fit (Ollama's num_gpu -1; fitted with this "
        "plan's bytes, not Ollama's GraphSize estimate)"
    )
    est = replace(result.estimate, notes=(*result.estimate.notes, note))
    return replace(result, estimate=est, notes=(*result.notes, note))


def _devices_plan(
    spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu_count: int
) -> tuple[Context, _Weights, dict[int | None, _Device], dict[int, Estimate]]:
    ctx = context(spec, setup, flags)
    w = _weights(spec, setup)
    devs = devices(spec.num_layers, flags, gpu_count)
    if pipeline(flags, spec.num_layers, gpu_count):
        ctx = replace(ctx, copies=SCHED_MAX_COPIES)
    placed = _place(spec, ctx, flags, w, devs)
    cuda_mib = setup.overheads.cuda_context_mib
    estimates = {d: _gpu_estimate(spec, ctx, flags, dev, cuda_mib) for d, dev in placed.items() if d is not None}
    return ctx, w, placed, estimates


def per_gpu(spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu_count: int = 1) -> dict[int, Estimate]:
    """Every GPU's estimate (by index; a GPU holding nothing is absent): the table shows the fullest one."""
    _refuse(spec, flags, gpu_count)
    return _devices_plan(spec, setup, flags, gpu_count)[3]


def kv_totals(spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu_count: int = 1) -> tuple[int, int]:
    """K and V bytes over every device, host included (llama_kv_cache's "K (f16): X MiB, V (f16): X MiB")."""
    _refuse(spec, flags, gpu_count)
    placed = _devices_plan(spec, setup, flags, gpu_count)[2]
    return sum(d.k for d in placed.values()), sum(d.v for d in placed.values())


def _plan(
    spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu: Gpu, gpu_count: int, *, search: bool = True
) -> EngineEstimate:
    """The plan at these exact flags; ``search`` also finds the largest context that fits (the solvers' own
    trial plans skip it)."""
    ctx, w, placed, estimates = _devices_plan(spec, setup, flags, gpu_count)
    gpus = {d: dev for d, dev in placed.items() if d is not None}
    cpu = placed[None]
    host = _host_terms(spec, ctx, flags, cpu)
    notes = _notes(spec, ctx, flags, w, gpus, estimates, cpu, gpu_count)
    if estimates:
        fullest = max(estimates, key=lambda d: estimates[d].peak_bytes)
        est = estimates[fullest]
    else:  # -ngl 0: nothing on the GPU but the context
        est = Estimate(persistent=(cuda_context_term(setup.overheads.cuda_context_mib),))
    est = Estimate(persistent=est.persistent, phases=est.phases, host=host, notes=tuple(notes))
    kv_total = sum(d.k + d.v for d in placed.values())
    kv_pool = Term(
        name="kv_cache",
        bytes=kv_total,
        formula=f"{ctx.n_ctx:,} cells ({flags.cache_type_k}/{flags.cache_type_v}) over every device",
        source=f"{SRC} src/llama-model.cpp create_memory",
    )
    refusal, message = _refusal(est, gpu, ctx, setup)
    k_row, v_row = kv_rows(spec)
    per_cell = spec.num_layers * (row_bytes(flags.cache_type_k, k_row) + row_bytes(flags.cache_type_v, v_row))
    # one stream per sequence: each holds `cells`; a unified cache lets any sequence take what the others leave
    sequences = ctx.n_ctx // setup.tokens if flags.kv_unified else (flags.parallel if setup.tokens <= ctx.cells else 0)
    return EngineEstimate(
        engine="llama.cpp",
        version=VERSION,
        estimate=est,
        budget=gpu.memory_bytes,
        kv_pool=kv_pool,
        kv_tokens=ctx.n_ctx,
        max_sequences=min(sequences, flags.parallel),
        max_context=largest_context(spec, setup, flags, gpu, gpu_count) if search else None,
        host_bytes=sum(t.bytes for t in host),
        notes=tuple(notes),
        refusal=refusal,
        refusal_message=message,
        kv_bytes_per_token=per_cell,
        context_len=ctx.cells,  # llama.cpp's n_ctx_seq: the cells one sequence can fill
        concurrency=ctx.n_ctx / ctx.cells,
        sequence_tokens=setup.tokens,
    )


def _refusal(est: Estimate, gpu: Gpu, ctx: Context, setup: InferSetup) -> tuple[str | None, str | None]:
    """Why llama.cpp would stop, and its own words: the first of its allocations that does not fit the fullest GPU
    (the model buffer in load_tensors, the KV buffer in the llama_kv_cache ctor, the compute buffers in the
    llama_context ctor, each a cudaMalloc failing with "out of memory"), or a request longer than a sequence's
    cells (llama-server refuses the request: "the request exceeds the available context size")."""
    budget = gpu.memory_bytes
    weights = est.bytes_of("weights") + est.bytes_of("overhead")
    kv = est.bytes_of("kv_cache")
    if weights > budget:
        return "the weights exceed the GPU", "unable to allocate CUDA0 buffer"
    if weights + kv > budget:
        return "the KV cache exceeds the GPU", "failed to allocate buffer for kv cache"
    if est.peak_bytes > budget:
        return "the compute buffers exceed the GPU", "failed to allocate compute pp buffers"
    if setup.tokens > ctx.cells:
        return (
            f"a sequence has {ctx.cells:,} cells (-c / -np), fewer than the {setup.tokens:,} tokens asked",
            "the request exceeds the available context size, try increasing it",
        )
    return None, None


def _notes(
    spec: ModelSpec,
    ctx: Context,
    flags: LlamaCppFlags,
    w: _Weights,
    gpus: dict[int, _Device],
    estimates: dict[int, Estimate],
    cpu: _Device,
    gpu_count: int,
) -> list[str]:
    notes = [
        f"llama.cpp {VERSION}: n_ctx {ctx.n_ctx:,} ({ctx.cells:,} cells x {ctx.n_stream} stream(s)), n_ubatch "
        f"{ctx.n_tokens}, flash attention {'on' if ctx.flash else 'off'} (-fa {flags.flash_attn}), "
        f"KV {flags.cache_type_k}/{flags.cache_type_v}",
        f"weights from {w.source}",
    ]
    if gpu_count > 1 or len(gpus) > 1:
        per = ", ".join(
            f"GPU{d}: {len(dev.layers)} layers{' + output' if dev.output else ''}, "
            f"{estimates[d].peak_bytes / 2**30:.2f} GiB"
            for d, dev in sorted(gpus.items())
        )
        notes.append(f"split mode {flags.split_mode}: {per}; the table shows the fullest GPU")
    if cpu.layers or cpu.output:
        on_cpu = [f"{len(cpu.layers)} {'layer' if len(cpu.layers) == 1 else 'layers'}"] if cpu.layers else []
        on_cpu += ["the output layer"] if cpu.output else []
        notes.append(
            f"-ngl {flags.n_gpu_layers}: {' and '.join(on_cpu)} on the CPU; ggml's op offload may copy their weights "
            "to the GPU per batch, and the CPU computes their part of the graph in host RAM (neither is modelled)"
        )
    notes.append(
        "compute buffers: the dominant tensors of the reserved prompt graph (attention scores or feed-forward, "
        "hidden states, logits, masks, pipeline-parallel input copies); ggml-alloc's exact placement and the CUDA "
        "backend's pool (cuBLAS dequantization temporaries) are not modelled"
    )
    if spec.vision is not None:
        notes.append("the vision projector (mmproj GGUF) is a separate file and not counted")
    return notes


def llamacpp_plan(spec: ModelSpec, setup: InferSetup, gpu: Gpu, count: int = 1) -> EngineEstimate:
    """The dispatch entry (app/engines.py PLANS): the flags from ``setup.llamacpp`` (LlamaCppFlags), on ``count``
    GPUs of this kind (``--gpu 2xH100``).

    ``--batch`` is llama-server's ``-np`` (concurrent sequences, each with its own slice of ``-c``): a batch with
    the default ``-np 1`` becomes ``-np batch``; a batch and an ``-np`` that disagree are refused, never ignored."""
    flags = setup.llamacpp
    _foreign_setup(setup)
    if setup.batch > 1:
        if flags.parallel not in (1, setup.batch):
            raise InvalidWorkloadError(
                f"--batch {setup.batch} and -np {flags.parallel} disagree: with llama.cpp the batch is -np/--parallel "
                "(sequences served together); give one of them",
                field="parallel",
                allowed=f"-np {setup.batch}, or --batch 1",
            )
        flags = replace(flags, parallel=setup.batch)
    if flags.ollama:
        return _as_ollama(spec, setup, flags, gpu, count)
    return plan(spec, setup, flags, gpu, count)


def _as_ollama(spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu: Gpu, count: int) -> EngineEstimate:
    """``--ollama``: the flags Ollama 0.12.10's runner passes to llama.cpp for the same request (ollama_flags),
    the layer count fitted as num_gpu -1 does unless -ngl is given."""
    n_seq = flags.parallel
    if flags.ctx_size == 0:
        per_seq = spec.max_position_embeddings or setup.tokens
    else:
        per_seq = (flags.ctx_size or setup.tokens * n_seq) // n_seq
    derived = ollama_flags(
        num_ctx=per_seq,
        num_parallel=n_seq,
        flash_attention=flags.flash_attn == "on",
        kv_cache_type=flags.cache_type_k,
        num_gpu=flags.n_gpu_layers,
    )
    derived = replace(derived, tensor_split=flags.tensor_split, no_mmap=flags.no_mmap)
    result = plan(spec, setup, derived, gpu, count)
    note = (
        f"--ollama: Ollama 0.12.10's runner flags: num_ctx {per_seq:,} x {n_seq} parallel, num_batch "
        f"{derived.batch_size}, flash attention {derived.flash_attn}, KV {derived.cache_type_k} (llm/server.go "
        "NewLlamaServer; a quantized KV type needs OLLAMA_FLASH_ATTENTION, -fa on), swa_full and embeddings on "
        "(llama/llama.go NewContextParams)"
    )
    est = replace(result.estimate, notes=(*result.estimate.notes, note))
    return replace(result, estimate=est, notes=(*result.notes, note))


# InferSetup fields llama.cpp has no use for, or spells as its own flag: set away from their default, refused in one
# line naming what llama.cpp takes instead (never ignored).
_NOT_LLAMACPP = {
    "tp": "llama.cpp has no tensor parallelism: give --gpu Nx<GPU> (layers split with -sm layer, --tensor-split)",
    "kv_dtype": "llama.cpp's cache types are -ctk/--cache-type-k and -ctv/--cache-type-v (f16, q8_0, q4_0, ...)",
    "kv_block": "llama.cpp's cache has no paged blocks: its cells are padded to 256 (32 with -fa off)",
    "prefill_chunk": "llama.cpp processes the prompt in -ub/--ubatch-size chunks",
    "attention": "llama.cpp's attention is -fa/--flash-attn on|off|auto",
    "gpu_utilization": "llama.cpp takes no memory fraction: it allocates what its buffers need",
    "all_logits": "llama.cpp's reserved graph already outputs every token of a ubatch",
    "images": "a vision model's mmproj GGUF is not modelled for llama.cpp",
    "image_size": "a vision model's mmproj GGUF is not modelled for llama.cpp",
    "mode": "llama.cpp's plan has no textbook mode",
}


def _foreign_setup(setup: InferSetup) -> None:
    default = InferSetup()
    for name, why in _NOT_LLAMACPP.items():
        if getattr(setup, name) != getattr(default, name):
            raise InvalidWorkloadError(
                f"{name} {getattr(setup, name)} does not apply to --engine llama.cpp: {why}",
                field=name,
                allowed="its default with --engine llama.cpp",
            )


def largest_context(spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu: Gpu, gpu_count: int = 1) -> int:
    """The most tokens one sequence can hold (cells per stream) with the largest -c whose plan still fits every GPU,
    the other flags kept; up to the model's n_ctx_train (llama.cpp allows more, with a warning: "possible training
    context overflow"), or the configured context when that is larger. 0 when even the smallest does not fit."""
    n_seq = flags.parallel
    top = max(spec.max_position_embeddings or 0, context(spec, setup, flags).cells)

    def fits(per_seq: int) -> bool:
        trial = replace(flags, ctx_size=per_seq * n_seq, fit_gpu_layers=False)
        return _plan(spec, setup, trial, gpu, gpu_count, search=False).estimate.peak_bytes <= gpu.memory_bytes

    if not fits(1):
        return 0
    lo, hi = 1, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return context(spec, setup, replace(flags, ctx_size=lo * n_seq)).cells

"""Advice for a miss: the single changes that each make a setup fit, cheapest in quality and speed first.

Every suggestion is the question asked again through the application layer (``app.run.infer`` / ``train``) with
that one change, never guessed: its peak and headroom are that run's. A numeric change is the smallest that fits
(the largest context, micro-batch, chunk or count that fits, by bisection over its steps, which relies on the
estimate's memory growing with each of them, as fit/solve.py's searches do). The user's own GPUs come first;
more GPUs come last.

Order (each kind tried once, in this order, and kept when it fits):
  training: under FSDP a sharded loading path (no cost at run time), recompute (op-sac, then full), chunked loss, a
  smaller micro-batch with more gradient accumulation (micro-batch x grad_accum kept, so the global batch is the
  same), an 8-bit or paged optimizer, LoRA, QLoRA, activation offload, ZeRO over the data-parallel GPUs already
  there, ZeRO-Offload, then more GPUs (fit's fewest-GPU search). ``fit --min-gpus`` lists the same kinds (and ZeRO-3
  for ZeRO-1/2) by the fewer GPUs each needs (``advise_min_gpus``), then a tensor/pipeline-parallel layout on
  fewer GPUs (its search is data parallel only; ``fit --layouts N``'s search finds the layout).
  inference: a chunked prefill (transformers), fp8 KV where the GPU runs it (llama.cpp: -ctk/-ctv q8_0, q4_0), a
  smaller weight format, a shorter context (max_model_len, --context-length or -c under a serving engine, a
  multiple of 256), fewer concurrent sequences, vLLM's --gpu-memory-utilization (larger when vLLM refuses inside
  its share, smaller when its share is over the budget less --margin), llama.cpp's -ngl (the most layers on the
  GPU), then tensor parallelism over more GPUs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vramwise.app.run import InferRequest, InferResult, TrainRequest, TrainResult, infer, train
from vramwise.errors import VramwiseError
from vramwise.report.advice_out import Suggestion
from vramwise.workload.engines import Engine

if TYPE_CHECKING:
    from vramwise.app.fitting import FitRequest
    from vramwise.catalog import Gpu
    from vramwise.fit.layouts import Layout

CONTEXT_STEP = 256  # contexts are suggested in multiples of 256 tokens (a usable max_model_len / -c)
GPU_COUNTS = (2, 4, 8)  # tensor parallelism suggested over this many GPUs (one node)

# From the most to the least faithful to the checkpoint (fit/solve.py FORMATS_BY_QUALITY, without importing fit)
FORMATS = ("bf16", "fp8-e4m3", "int8", "q8_0", "q6_k", "q5_k_m", "awq-4bit-g128", "q4_k_m", "nf4", "q4_0")

# fp8 support by compute capability. transformers 5.24 runs fp8 weights from compute capability 8.9 (Ada, Hopper)
# only: below it quantizers/quantizer_finegrained_fp8.py validate_environment warns and dequantizes the model to
# bf16, so fp8 saves nothing there (and its fp8 arithmetic, KV included, needs 8.9 too). vLLM runs fp8 weights on
# Ampere (8.0+) as weight-only W8A16 through its FP8 Marlin kernels (vLLM docs, features/quantization/fp8.md), and
# stores an fp8 KV cache on any GPU it builds for, converting in software (csrc/quantization/fp8/nvidia/
# quant_utils.cuh, used by csrc/cache_kernels.cu reshape_and_cache_flash, v0.11.0).
FP8_COMPUTE_CC = 8.9
VLLM_FP8_CC = 8.0


_SPELLED = {"gpu_util": "--gpu-memory-utilization"}  # vLLM's own spelling, not the short alias


def flag_text(options: Mapping[str, Any]) -> str:
    """``{"recompute": "full", "activation_offload": True}`` as ``--recompute full --activation-offload``."""
    parts = []
    for name, value in options.items():
        spelled = _SPELLED.get(name, "--" + name.replace("_", "-"))
        parts.append(spelled if value is True else f"{spelled} {value}")
    return " ".join(parts)


def _cc(gpu: Gpu) -> float:
    try:
        return float(gpu.compute_capability or 0)
    except ValueError:
        return 0.0


# --- training ------------------------------------------------------------------------------------------------


def _train_check(req: TrainRequest, changes: Mapping[str, Any], gpu: str | None = None) -> TrainResult | None:
    """The training question with these changes, or None when the change cannot apply (one refused option)."""
    options = {k: v for k, v in {**req.options, **changes}.items() if v is not None}
    if _misses_without_reserve(replace(req, options=options, gpu=gpu or req.gpu, per_stage=False)):
        return None  # only a result that fits is read (``_train_fits``): None reads as one that does not
    try:
        return train(replace(req, options=options, gpu=gpu or req.gpu, per_stage=False))
    except VramwiseError:
        return None


def _misses_without_reserve(req: TrainRequest) -> bool:
    """Whether the question misses its GPU even with no allocator reserve (``--allocator-fraction 0``: the peak
    without it, never above the peak with it, the flat fraction's or the replay's; FSDP's stream pools, left out
    at 0, only add too). It costs no caching-allocator replay, which under --allocator-replay is the most of the
    advice's time on a large MoE model (one replay per candidate change, each of hundreds of expert tensors per
    layer), and most candidates miss."""
    o = req.options
    replayed = o.get("allocator_replay") or o.get("expandable_segments") or o.get("max_split_size_mb") is not None
    if not replayed or o.get("allocator_fraction") is not None:
        return False  # no replay to skip (AllocatorSettings.replayed): the check would only cost an estimate
    try:
        floor = train(replace(req, options={**req.options, "allocator_fraction": 0.0}))
    except VramwiseError:
        return False  # the question itself answers
    return not _train_fits(floor)


def _train_fits(r: TrainResult | None) -> bool:
    return r is not None and all(s.verdict is not None and s.verdict.fits for s in r.stages)


def _train_suggestion(kind: str, r: TrainResult, changes: Mapping[str, Any], *, gpu: str | None = None,
                      gpus: int = 1, note: str = "", change: str | None = None) -> Suggestion:
    worst = r.stages[0]
    assert worst.verdict is not None  # advice is asked with a GPU
    return Suggestion(
        kind=kind,
        change=change or flag_text(changes),
        options=dict(changes),
        gpu=gpu,
        gpus=gpus,
        peak_bytes=worst.estimate.peak_bytes,
        headroom_bytes=worst.verdict.headroom_bytes,
        note=note,
    )


def advise_train(req: TrainRequest) -> tuple[Suggestion, ...]:
    """The single changes that make a training step fit ``req.gpu``, cheapest first (empty when it fits or no
    GPU is given, or when no single change does)."""
    if req.gpu is None:
        return ()
    base = train(replace(req, per_stage=False))
    if _train_fits(base):
        return ()
    flat = base.setup.to_flat()
    count = base.stages[0].verdict.count if base.stages[0].verdict else 1
    found: list[Suggestion] = []

    def first(kind: str, candidates: list[dict[str, Any]]) -> None:
        for changes in candidates:
            r = _train_check(req, changes)
            if _train_fits(r):
                assert r is not None
                found.append(_train_suggestion(kind, r, changes, gpus=count))
                return

    for kind, candidates in _train_candidates(flat):
        if kind == "micro_batch":
            micro = _micro_batch(req, flat)
            if micro is not None:
                found.append(replace(micro, gpus=count))
        else:
            first(kind, candidates)
    more = _more_gpus(req, base, flat)
    if more is not None:
        found.append(more)
    if all(s.kind in SHRINKING for s in found):  # nothing keeps the GPUs and the workload: the cheapest pairs do
        found = _with_pairs(found, _pairs(_train_candidates(flat), lambda c: _train_check(req, c), _train_fits,
                                          lambda r, c: _train_suggestion("pair", r, c, gpus=count, note=PAIR_NOTE)))
    return tuple(found)


# single changes that keep neither the GPUs given nor the workload asked (a shorter context, fewer sequences, more
# GPUs, layers on the CPU): when every suggestion is one of them, pairs of the other kinds are tried as well
SHRINKING = frozenset({"context", "batch", "tp", "gpus", "gpu_layers"})


def _with_pairs(found: list[Suggestion], pairs: list[Suggestion]) -> list[Suggestion]:
    """The pairs after the suggestions on the GPUs given, before those that need more GPUs."""
    own = [s for s in found if s.gpu is None]
    return [*own, *pairs, *(s for s in found if s.gpu is not None)]


PAIR_NOTE = "two changes together; values not minimised"
PAIRS_SHOWN = 3  # the cheapest pairs that fit, at most this many


def _pairs(steps: list[tuple[str, list[dict[str, Any]]]], check: Callable[[dict[str, Any]], Any],
           fits: Callable[[Any], bool], make: Callable[[Any, dict[str, Any]], Suggestion]) -> list[Suggestion]:
    """When no single change fits: two kinds together (each at its strongest value, the last it tries), cheapest
    pairs first (by the kinds' order), at most PAIRS_SHOWN."""
    strongest = [(kind, values[-1]) for kind, values in steps if values]
    found: list[Suggestion] = []
    for i, (kind_a, a) in enumerate(strongest):
        for kind_b, b in strongest[i + 1 :]:
            if kind_a == kind_b or set(a) & set(b):
                continue
            changes = {**a, **b}
            r = check(changes)
            if fits(r):
                found.append(make(r, changes))
                if len(found) == PAIRS_SHOWN:
                    return found
    return found


def _train_candidates(flat: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each kind of change that can apply to this setup, cheapest first, with its values in the order tried (the
    first that fits is kept); "micro_batch" is searched by ``_micro_batch``."""
    steps: list[tuple[str, list[dict[str, Any]]]] = []
    if flat["fsdp"] != "none" and flat["loading"] in ("auto", "fsdp-full"):  # each GPU loads its shard only
        steps.append(("loading", [{"loading": "fsdp-meta"}, {"loading": "fsdp-sync"}]))
    if flat["recompute"] != "full":  # op-sac rebuilds less than full recompute: tried first
        steps.append(("recompute", [{"recompute": r} for r in ("op-sac", "full") if r != flat["recompute"]]))
    if flat["loss"] in ("full", "compute-dtype"):
        steps.append(("loss", [{"loss": "chunked"}]))
    steps.append(("micro_batch", []))
    if flat["optimizer"] in ("adamw", "adam"):
        steps.append(("optimizer", [{"optimizer": o} for o in ("adamw-8bit", "paged-adamw-8bit", "paged-adamw")]))
    if flat["peft"] == "none":
        steps.append(("peft", [{"peft": "lora"}]))
    if flat["peft"] in ("none", "lora", "lora-8bit"):
        steps.append(("peft", [{"peft": "qlora"}]))
    if not flat["activation_offload"]:
        steps.append(("activation_offload", [{"activation_offload": True}]))
    if flat["dp"] >= 2 and not flat["zero"] and flat["fsdp"] == "none":  # shard over the GPUs already there
        steps.append(("zero", [{"zero": z} for z in (1, 2, 3)]))
    if flat["offload"] == "none":
        steps.append(("offload", [{"offload": "optimizer"}, {"offload": "params"}]))
    return steps


def _micro_batch(req: TrainRequest, flat: Mapping[str, Any]) -> Suggestion | None:
    """The largest smaller micro-batch that fits, with grad_accum raised so micro-batch x grad_accum is kept."""
    batch, accum = int(flat["batch"]), int(flat["grad_accum"])
    total = batch * accum
    for micro in sorted((d for d in range(1, batch) if total % d == 0), reverse=True):  # the largest first
        changes = {"batch": micro, "grad_accum": total // micro}
        r = _train_check(req, changes)
        if _train_fits(r):
            assert r is not None
            note = f"global batch kept: micro-batch {micro} x grad-accum {total // micro} = {batch} x {accum}"
            return _train_suggestion("micro_batch", r, changes, note=note)
    return None


def _more_gpus(req: TrainRequest, base: TrainResult, flat: Mapping[str, Any]) -> Suggestion | None:
    """fit's fewest-GPU search (ZeRO-3 unless --zero or --fsdp is given) at the user's own setup, checked again as
    a training run on that many GPUs."""
    from vramwise.app.fitting import FitRequest, Question, fit

    gpu = base.gpu
    if gpu is None:
        return None
    own = {k: v for k, v in req.options.items() if k != "dp"}
    try:
        answer = fit(FitRequest(model=req.model, gpu=gpu.name, question=Question.MIN_GPUS, options=own)).answer
    except VramwiseError:
        return None
    if answer is None:
        return None
    dp = int(answer.value)
    ranks = int(flat["tp"]) * int(flat["pp"]) * int(flat["cp"])
    total = dp * ranks
    count = base.stages[0].verdict.count if base.stages[0].verdict else 1
    if total <= count:
        return None
    # fit's own choice (app/fitting.py): ZeRO-3, or FSDP full for torchao's optimizer (modelled under FSDP only)
    shard: dict[str, Any] = {"fsdp": "full"} if str(flat["optimizer"]) == "ao-adamw-8bit" else {"zero": 3}
    sharding: dict[str, Any] = {} if flat["zero"] or flat["fsdp"] != "none" else shard
    text = f"{total}x{gpu.name}"
    r = _train_check(replace(req, options=own), sharding, gpu=text)
    if not _train_fits(r):
        return None
    assert r is not None
    change = f"--gpu {text}" + (f" {flag_text(sharding)}" if sharding else "")
    return _train_suggestion("gpus", r, sharding, gpu=text, gpus=total, change=change,
                             note=f"dp {dp}" + (f" x tp/pp/cp {ranks}" if ranks > 1 else ""))


# --- inference -----------------------------------------------------------------------------------------------


def _infer_check(req: InferRequest, changes: Mapping[str, Any], gpu: str | None = None) -> InferResult | None:
    options = {k: v for k, v in {**req.options, **changes}.items() if v is not None}
    try:
        return infer(replace(req, options=options, gpu=gpu or req.gpu))
    except VramwiseError:
        return None


def _infer_fits(r: InferResult | None) -> bool:
    return r is not None and r.verdict is not None and r.verdict.fits


def _infer_suggestion(kind: str, r: InferResult, changes: Mapping[str, Any], *, gpu: str | None = None,
                      gpus: int = 1, note: str = "") -> Suggestion:
    assert r.verdict is not None
    change = flag_text(changes) if gpu is None else f"--gpu {gpu}"
    return Suggestion(kind=kind, change=change, options=dict(changes), gpu=gpu, gpus=gpus,
                      peak_bytes=r.verdict.peak_bytes, headroom_bytes=r.verdict.headroom_bytes, note=note)


def _largest(fits: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """The largest k in [lo, hi] with fits(k), fits true up to some k and false beyond; None if not even lo."""
    if hi < lo or not fits(lo):
        return None
    if fits(hi):
        return hi
    good, bad = lo, hi
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def advise_infer(req: InferRequest) -> tuple[Suggestion, ...]:
    """The single changes that make an inference setup fit ``req.gpu``, cheapest first."""
    if req.gpu is None:
        return ()
    base = infer(req)
    if _infer_fits(base) or base.gpu is None or base.verdict is None:
        return ()
    count, setup = base.verdict.count, base.setup
    engine = Engine(setup.engine)
    found: list[Suggestion] = []

    def first(kind: str, candidates: list[dict[str, Any]]) -> None:
        for changes in candidates:
            r = _infer_check(req, changes)
            if _infer_fits(r):
                assert r is not None
                found.append(_infer_suggestion(kind, r, changes, gpus=count))
                return

    def largest(kind: str, name: str, lo: int, hi: int, step: int = 1, note: str = "",
                changes: Callable[[int], dict[str, Any]] | None = None) -> None:
        def at(k: int) -> dict[str, Any]:
            return changes(k * step) if changes else {name: k * step}

        k = _largest(lambda k: _infer_fits(_infer_check(req, at(k))), lo, hi)
        if k is not None:
            r = _infer_check(req, at(k))
            assert r is not None
            found.append(_infer_suggestion(kind, r, at(k), gpus=count, note=note))

    _cheap(base, first, largest, engine)
    _formats(req, base, first, engine)
    _shorter(req, base, largest, engine)
    _fewer(req, base, largest, engine)
    if engine is Engine.VLLM:
        _utilization(req, base, found)
    if engine is Engine.LLAMA_CPP:
        _partial_offload(base, largest)
    return tuple(_then_gpus_and_pairs(req, base, found, engine, count))


def _then_gpus_and_pairs(req: InferRequest, base: InferResult, found: list[Suggestion], engine: Engine,
                         count: int) -> list[Suggestion]:
    """Tensor parallelism over more GPUs last; pairs when no single change keeps the GPUs and the workload."""
    tp = _more_gpus_infer(req, base)
    if tp is not None:
        found.append(tp)
    if all(s.kind in SHRINKING for s in found):  # nothing keeps the GPUs and the workload: the cheapest pairs do
        pairs = _pairs(_infer_pair_steps(base, engine), lambda c: _infer_check(req, c), _infer_fits,
                       lambda r, c: _infer_suggestion("pair", r, c, gpus=count, note=PAIR_NOTE))
        found = _with_pairs(found, pairs)
    return found


# vLLM's own prefill chunk on a GPU under 70 GiB (workload/engines.py OTHER_GPU_DEFAULTS, EngineArgs.
# get_batch_defaults at v0.11.0): the chunk a pair tries under transformers
PAIR_PREFILL_CHUNK = 2048


def _infer_pair_steps(base: InferResult, engine: Engine) -> list[tuple[str, list[dict[str, Any]]]]:
    """The kinds a pair combines, each at one strong value: a 2,048-token prefill chunk (transformers), fp8 KV (or
    llama.cpp's q4_0 cells) where the GPU runs it, a 4-bit format the engine runs."""
    setup, gpu = base.setup, base.gpu
    assert gpu is not None
    steps: list[tuple[str, list[dict[str, Any]]]] = []
    if engine is Engine.HF and setup.prefill_chunk is None and setup.context > PAIR_PREFILL_CHUNK:
        steps.append(("prefill_chunk", [{"prefill_chunk": PAIR_PREFILL_CHUNK}]))
    if engine is Engine.LLAMA_CPP:
        steps.append(("kv_dtype", [{"cache_type_k": "q4_0", "cache_type_v": "q4_0"}]))
    elif str(setup.kv_dtype) != "fp8" and _cc(gpu) >= (VLLM_FP8_CC if engine is Engine.VLLM else FP8_COMPUTE_CC):
        steps.append(("kv_dtype", [{"kv_dtype": "fp8"}]))
    steps.append(("format", [{"format": "q4_k_m" if engine is Engine.LLAMA_CPP else "awq-4bit-g128"}]))
    return steps


def _cheap(base: InferResult, first: Callable[..., None], largest: Callable[..., None], engine: Engine) -> None:
    """The changes that cost no quality: a chunked prefill (transformers), then an fp8 KV cache where it runs."""
    setup, gpu = base.setup, base.gpu
    assert gpu is not None
    if engine is Engine.HF and setup.prefill_chunk is None and setup.context > CONTEXT_STEP:
        largest("prefill_chunk", "prefill_chunk", 1, (setup.context - 1) // CONTEXT_STEP, CONTEXT_STEP,
                "the prompt in chunks of this many tokens")
    if str(setup.kv_dtype) != "fp8" and engine in (Engine.HF, Engine.VLLM, Engine.SGLANG):
        needed = VLLM_FP8_CC if engine is Engine.VLLM else FP8_COMPUTE_CC
        if _cc(gpu) >= needed:
            first("kv_dtype", [{"kv_dtype": "fp8"}])
    if engine is Engine.LLAMA_CPP and str(setup.llamacpp.cache_type_k) == "f16":
        # llama.cpp's quantized KV cache (-ctk/-ctv q8_0, then q4_0), any GPU: ggml's own block types
        first("kv_dtype", [{"cache_type_k": t, "cache_type_v": t} for t in ("q8_0", "q4_0")])


def _formats(req: InferRequest, base: InferResult, first: Callable[[str, list[dict[str, Any]]], None],
             engine: Engine) -> None:
    """The most faithful format smaller than the one run (fp8 only where the GPU runs it)."""
    assert base.gpu is not None
    current = base.setup.weight_format
    start = FORMATS.index(str(current)) + 1 if current is not None and str(current) in FORMATS else 0
    needed = VLLM_FP8_CC if engine is Engine.VLLM else FP8_COMPUTE_CC
    candidates = [f for f in FORMATS[start:] if not (f.startswith("fp8") and _cc(base.gpu) < needed)]
    peak = base.verdict.peak_bytes if base.verdict else 0

    def smaller(changes: dict[str, Any]) -> bool:
        r = _infer_check(req, changes)
        return r is not None and r.verdict is not None and r.verdict.peak_bytes < peak

    first("format", [{"format": f} for f in candidates if smaller({"format": f})])


_CONTEXT_OPTION = {Engine.VLLM: "max_model_len", Engine.SGLANG: "context_length", Engine.LLAMA_CPP: "ctx_size"}


def _shorter(req: InferRequest, base: InferResult, largest: Callable[..., None], engine: Engine) -> None:
    """The largest context that fits, a multiple of 256: the prompt under transformers, the engine's own context
    (max_model_len, --context-length, -c) under a serving engine."""
    setup = base.setup
    name = _CONTEXT_OPTION.get(engine, "context")
    if engine is Engine.HF:
        current = setup.context
    else:
        current = base.engine.context_len if base.engine is not None and base.engine.context_len else 0
    hi = (current - 1) // CONTEXT_STEP
    if engine is Engine.HF:
        largest("context", name, 1, hi, CONTEXT_STEP, f"a multiple of {CONTEXT_STEP} tokens")
        return
    # the engine refuses a request longer than its context: one the user gave (-s) is kept, so the context must
    # hold it; the default request (2,048 tokens, an assumption) shrinks with the context it is served at
    given = any(req.options.get(k) is not None for k in ("context", "seq"))
    need = setup.context + setup.new_tokens
    lo = -(-need // CONTEXT_STEP) if given else 1

    def changes(n: int) -> dict[str, Any]:
        if given or n >= need:
            return {name: n}
        return {name: n, "context": max(1, n - setup.new_tokens)}

    largest("context", name, lo, hi, CONTEXT_STEP, f"a multiple of {CONTEXT_STEP} tokens", changes)


def _fewer(req: InferRequest, base: InferResult, largest: Callable[..., None], engine: Engine) -> None:
    """Fewer concurrent sequences: the batch under transformers, vLLM's --max-num-seqs."""
    setup = base.setup
    if engine is Engine.HF and setup.batch > 1:
        largest("batch", "batch", 1, setup.batch - 1)
    elif engine is Engine.VLLM and base.gpu is not None:
        from vramwise.workload.engines import vllm_batch_defaults

        current = setup.vllm.max_num_seqs or vllm_batch_defaults(base.gpu.memory_bytes, base.gpu.name)[1]
        if current > 1:
            largest("batch", "max_num_seqs", 1, current - 1)


def _partial_offload(base: InferResult, largest: Callable[..., None]) -> None:
    """llama.cpp's -ngl: the most repeating layers on the GPU that fit, the rest (and the output layer) computed on
    the CPU, much slower; -ngl counts the output layer as one more (llama_model_default_params, n_gpu_layers)."""
    layers = int(getattr(base.model, "num_layers", 0) or 0)
    if layers and base.setup.llamacpp.gpu_layers > layers:
        largest("gpu_layers", "n_gpu_layers", 0, layers, 1, f"of {layers} layers on the GPU, the rest on the CPU")


def _utilization(req: InferRequest, base: InferResult, found: list[Suggestion]) -> None:
    """vLLM's --gpu-memory-utilization, in steps of 0.01. When vLLM refuses to start inside its share, its own advice
    ("increase gpu_memory_utilization"): the smallest larger fraction that fits, at most 1 - margin. When it starts
    but its plan, which fills that share, is over the budget less --margin: the largest smaller fraction."""
    assert base.verdict is not None
    now = round(base.setup.gpu_utilization * 100)
    if base.verdict.refusal is not None:
        steps = range(now + 1, int((1.0 - req.margin) * 100) + 1)
        note = "less of the GPU left to other processes"
    else:
        steps = range(now - 1, 0, -1)
        note = "a smaller KV pool: vLLM fills this share of the GPU"
    for k in steps:
        r = _infer_check(req, {"gpu_util": k / 100})
        if _infer_fits(r):
            assert r is not None
            found.append(_infer_suggestion("gpu_util", r, {"gpu_util": k / 100}, gpus=base.verdict.count, note=note))
            return


def _more_gpus_infer(req: InferRequest, base: InferResult) -> Suggestion | None:
    """Tensor parallelism over more GPUs of the same kind: the fewest of 2, 4, 8 that fits."""
    assert base.gpu is not None and base.verdict is not None
    have = max(base.verdict.count, base.setup.tp)
    own = {k: v for k, v in req.options.items() if k != "tp"}
    for n in (n for n in GPU_COUNTS if n > have):
        text = f"{n}x{base.gpu.name}"
        r = _infer_check(replace(req, options=own), {}, gpu=text)
        if _infer_fits(r):
            assert r is not None
            return _infer_suggestion("tp", r, {}, gpu=text, gpus=n, note=f"tensor parallel over {n} GPUs")
    return None


# --- fit ---------------------------------------------------------------------------------------------------------


def advise_fit(req: FitRequest) -> tuple[Suggestion, ...]:
    """When a fit question has no answer: the single changes that make its smallest setup fit (micro-batch 1 for
    ``--max batch``, the shortest sequence for ``--max seq``/``context``, the setup as given otherwise), on the
    GPUs given (``--layouts N``: N of them)."""
    from vramwise.app.fitting import Question
    from vramwise.catalog import parse_gpu

    if req.question is Question.MIN_GPUS:
        return advise_min_gpus(req, None)
    options = dict(req.options)
    if req.question is Question.MAX:
        smallest = {"batch": {"batch": 1}, "seq": {"seq": int(options.get("cp") or 1)}, "context": {"context": 1}}
        if not (req.infer and req.target in ("seq", "context") and options.get("engine") not in (None, "hf")):
            options |= smallest.get("context" if req.infer and req.target == "seq" else str(req.target), {})
    try:
        gpu = req.gpu
        if req.question is Question.LAYOUTS and req.gpus:
            gpu = f"{req.gpus}x{parse_gpu(req.gpu).gpu.name}"
        if req.infer:
            return advise_infer(InferRequest(model=req.model, options=options, gpu=gpu, serve=req.serve,
                                             margin=req.margin))
        return advise_train(TrainRequest(model=req.model, options=options, gpu=gpu, margin=req.margin))
    except VramwiseError:  # the smallest setup cannot be built either: the reason already says why
        return ()


def advise_min_gpus(req: FitRequest, fewest: int | None) -> tuple[Suggestion, ...]:
    """``fit --min-gpus``: the single changes that need fewer GPUs than ``fewest`` (None: no count fits), each
    found by the same search run again with that change (the trial's 70B full fine-tune: 115 H100s, and
    ``--recompute full`` alone brings it under 20)."""
    from vramwise.app.fitting import FitRequest as Fit
    from vramwise.app.fitting import Question, fit

    sharded = req.options.get("zero") or str(req.options.get("fsdp") or "none") != "none"
    own = {**req.options, "dp": 2} if sharded and req.options.get("dp") is None else req.options  # as fit builds it
    flat = train(TrainRequest(model=req.model, options=own)).setup.to_flat()
    ranks = int(flat["tp"]) * int(flat["pp"]) * int(flat["cp"])
    found: list[Suggestion] = []
    steps = _train_candidates(flat)
    if flat["zero"] in (1, 2):  # ZeRO-1/2 keep the 16-bit weights whole on each GPU: ZeRO-3 shards them too
        steps.append(("zero", [{"zero": 3}]))
    for kind, candidates in steps:
        if kind == "micro_batch":  # the micro-batch is the user's recipe
            continue
        best = fewest
        for changes in candidates:  # each value of the kind that needs fewer GPUs than the cheaper one before it
            try:
                r = fit(Fit(model=req.model, gpu=req.gpu, question=Question.MIN_GPUS, margin=req.margin,
                            options={**req.options, **changes}))
            except VramwiseError:
                continue
            if r.answer is None or (best is not None and int(r.answer.value) >= best):
                continue
            best = int(r.answer.value)
            n = int(r.answer.value) * ranks
            gpu = r.gpu.name if n == 1 else f"{n}x{r.gpu.name}"
            than = f" instead of {fewest * ranks}" if fewest is not None else ""
            found.append(Suggestion(kind=kind, change=flag_text(changes), options=dict(changes),
                                    gpu=gpu, gpus=n, peak_bytes=r.answer.at.peak_bytes,
                                    headroom_bytes=r.answer.budget - r.answer.at.peak_bytes,
                                    note=f"{n} GPU{'s' if n > 1 else ''}{than}"))
    layout = _fewer_with_layout(req, flat, None if fewest is None else fewest * ranks)
    return tuple(found) if layout is None else (*found, layout)


# --- fit --min-gpus: a tensor/pipeline-parallel layout on fewer GPUs ----------------------------------------------

# The GPU counts a layout is tried on, below the answer. Powers of two first: tp must divide the attention heads
# (estimate/sharding.py check_tp), and head counts are powers of two or multiples of 8 in practice, so other counts
# leave tp at 1 or 2; then the multiples of 8 (a node holds 8 GPUs, fit/layouts.py GPUS_PER_NODE) between the
# last power of two that missed and the first that fits. Each count is one fit --layouts search (0.1-0.7 s for a
# dense 8B-70B model on this machine), so at most LAYOUT_TRIES counts are searched: the advice stays within ~2 s.
LAYOUT_TRIES = 6
LAYOUT_CEILING = 512  # with no answer at all (fewest None), the largest count tried: 64 nodes of 8


def _layout_counts(below: int) -> list[int]:
    """The powers of two from 2 below ``below``, ascending."""
    counts, n = [], 2
    while n < below:
        counts.append(n)
        n *= 2
    return counts


def _fewer_with_layout(req: FitRequest, flat: Mapping[str, Any], total: int | None) -> Suggestion | None:
    """The fewest GPUs (fewer than ``total``, the answer's count; None: none fits) on which a layout with tp or pp
    above 1 fits at the user's own recompute, offload and micro-batch, by the same search as ``fit --layouts N``
    (its best-ranked such layout), checked again as a training run with its flags."""
    if int(flat["cp"]) > 1:
        return None  # the layout search splits the GPUs over tp x pp x dp only (fit/layouts.py _splits)
    tries = 0
    missed = 1
    for n in _layout_counts(total or LAYOUT_CEILING):
        if tries == LAYOUT_TRIES:
            return None
        tries += 1
        if _layout_at(req, flat, n) is None:
            missed = n
            continue
        # a power of two fits: the multiples of 8 between the last count that missed and it may fit too
        for m in range(max(8, missed - missed % 8 + 8), n, 8):
            if tries == LAYOUT_TRIES:
                break
            tries += 1
            found = _layout_at(req, flat, m)
            if found is not None:
                return found
        return _layout_at(req, flat, n)
    return None


def _layout_at(req: FitRequest, flat: Mapping[str, Any], n: int) -> Suggestion | None:
    """The best-ranked layout of ``n`` GPUs with tp * pp > 1 that ``train`` with its flags, at the user's own
    recompute, offload and micro-batch, confirms fits; None when the search finds none (or refuses the setup). The
    search tries recompute none and full only: a row at no more recompute and offload than the user's is taken (the
    user's own keeps no more memory), and the re-run with the user's gives the peak shown."""
    from vramwise.app.fitting import FitRequest as Fit
    from vramwise.app.fitting import Question, fit
    from vramwise.catalog import parse_gpu

    own = {k: v for k, v in req.options.items() if k not in _LAYOUT_SET}  # the search sets each of these itself
    try:
        gpu = f"{n}x{parse_gpu(req.gpu).gpu.name}"
        searched = fit(Fit(model=req.model, gpu=gpu, question=Question.LAYOUTS, margin=req.margin, options=own))
    except VramwiseError:
        return None
    assert searched.layouts is not None
    for x in searched.layouts.fitting:  # best first
        if x.tp * x.pp == 1 or not _no_more(x, flat):
            continue
        changes: dict[str, Any] = {k: v for k, v in (("tp", x.tp), ("pp", x.pp)) if v > 1}
        if x.zero:
            changes["zero"] = x.zero
        elif x.fsdp != "none":
            changes["fsdp"] = x.fsdp
        if x.grad_accum != int(flat["grad_accum"]):
            changes["grad_accum"] = x.grad_accum  # 1F1B needs at least pp micro-batches (fit/layouts.py _bases)
        req_train = TrainRequest(model=req.model, options=own, gpu=gpu, margin=req.margin)
        r = _train_check(req_train, changes)
        if not _train_fits(r):
            continue
        assert r is not None
        return _train_suggestion("layout", r, changes, gpu=gpu, gpus=n, change=f"--gpu {gpu} {flag_text(changes)}",
                                 note=f"tp {x.tp} x pp {x.pp} x dp {x.dp}; fit --layouts {n} ranks the rest")
    return None


def _no_more(x: Layout, flat: Mapping[str, Any]) -> bool:
    """Whether the layout recomputes and offloads no more than the user's setup does: none of either, or the same
    as the user's (every recompute policy keeps no more activations than none, every offload no more on the GPU)."""
    return x.recompute in ("none", flat["recompute"]) and x.offload in ("none", flat["offload"])


_LAYOUT_SET = frozenset({"tp", "pp", "dp", "zero", "fsdp"})

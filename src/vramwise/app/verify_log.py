"""``vramwise verify --log FILE``: a serving engine's startup log beside the plan built from the same setup.

The log is parsed (engines/logs), its model, flags and GPU total become an ``infer`` request for that engine
(``app.run.infer``, so the plan, its checks and its notes are exactly those of ``vramwise infer --engine``), and
every figure the log printed is set beside the plan's number of the same meaning (engines/log_figures.py,
engines/compare.py). Nothing here imports torch: the PyTorch twin is ``verify MODEL``'s, not ``--log``'s.

Choices made here, each said in the result's notes: the model is ``--model`` when given, else the catalog entry
whose hub id the log names (the hub id itself when no entry has it); the GPU is a GPU of exactly the CUDA total the
log reports, of the kind ``--gpu`` names when it is given (its interconnect and compute capability: NCCL's channels
and the kernels the engine picks follow them), else ``--gpu`` itself when the log prints no total or ``--gpu`` is a
size (a total, no kind); the logged flags
are mapped to vramwise's options (``_VLLM``, ``_SGLANG``) and options given on the command line override them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vramwise.engines.compare import LogComparison, figure_rows
from vramwise.engines.logs import ParsedLog, load_log
from vramwise.engines.vllm_releases import V1_RULES
from vramwise.errors import InvalidWorkloadError, UnknownModelError, shown

# logged flag (dashes and case normalised) -> vramwise option name. vLLM's names: vllm/engine/arg_utils.py
# EngineArgs (the command line) and the config repr "Initializing ... with config:" (vllm/config ModelConfig,
# ParallelConfig, CacheConfig, SchedulerConfig fields); max_seq_len is the config repr's name for max_model_len.
_VLLM: dict[str, str] = {
    "tensor_parallel_size": "tp",
    "tp": "tp",
    "pipeline_parallel_size": "pp",
    "pp": "pp",
    "max_model_len": "max_model_len",
    "max_seq_len": "max_model_len",
    "gpu_memory_utilization": "gpu_util",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "kv_cache_dtype": "kv_dtype",
    "enforce_eager": "enforce_eager",
    "block_size": "kv_block",
    "kv_cache_memory_bytes": "kv_cache_memory",
    "mxfp4_backend": "mxfp4_backend",  # from the backend line the log prints (engines/logs/vllm.py)
    "vllm_sampler": "vllm_sampler",  # from the sampler line a V1 log prints (engines/logs/vllm.py)
    "interconnect": "interconnect",  # shm from custom all-reduce's "lacks GPU P2P capability" (engines/logs/vllm.py)
}
# SGLang's names: python/sglang/srt/server_args.py ServerArgs fields (tp_size is --tp's field).
_SGLANG: dict[str, str] = {
    "tp_size": "tp",
    "tp": "tp",
    "tensor_parallel_size": "tp",
    "mem_fraction_static": "mem_fraction_static",
    "context_length": "context_length",
    "chunked_prefill_size": "chunked_prefill_size",
    "cuda_graph_max_bs": "cuda_graph_max_bs",
    "max_running_requests": "max_running_requests",
    "max_total_tokens": "max_total_tokens",
    "page_size": "page_size",
    "disable_cuda_graph": "disable_cuda_graph",
    "max_prefill_tokens": "max_prefill_tokens",
    "kv_cache_dtype": "kv_dtype",
}
# llama.cpp's names: the llama_context / llama_init_from_model lines (src/llama-context.cpp) print n_ctx, n_batch,
# n_ubatch, flash_attn; llama_kv_cache prints type_k / type_v (kept in the parsed log's extras).
_LLAMACPP: dict[str, str] = {
    "n_ctx": "ctx_size",
    "n_batch": "batch_size",
    "n_ubatch": "ubatch_size",
    "type_k": "cache_type_k",
    "type_v": "cache_type_v",
    "n_gpu_layers": "n_gpu_layers",
    "flash_attn": "flash_attn",
}
_FLAGS = {"vllm": _VLLM, "sglang": _SGLANG, "llama.cpp": _LLAMACPP}
_INTEGER = {"ctx_size", "batch_size", "ubatch_size", "n_gpu_layers",
            "tp", "pp", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "kv_block", "kv_cache_memory",
            "context_length", "chunked_prefill_size", "cuda_graph_max_bs", "max_running_requests", "max_total_tokens",
            "page_size", "max_prefill_tokens"}
_REAL = {"gpu_util", "mem_fraction_static"}
_SWITCH = {"enforce_eager", "disable_cuda_graph"}
# the engines' kv_cache_dtype spellings -> vramwise's KV dtypes; "auto" and "None" are the defaults
# llama.cpp's flash_attn line: "%d" of the bool cparams.flash_attn before the -fa auto change (b3640-era logs print
# 0/1), then llama_flash_attn_type_name's "auto"/"enabled"/"disabled" (src/llama-context.cpp, llama_context ctor)
_FLASH_ATTN = {"0": "off", "false": "off", "disabled": "off", "1": "on", "true": "on", "enabled": "on",
               "auto": "auto"}
_KV_DTYPES = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "fp8": "fp8", "fp8_e4m3": "fp8",
              "fp8_e5m2": "fp8"}
# flags that name the weights' or compute dtype: the weights keep the checkpoint's own format (its
# quantization_config), which is what the engine loads; --format overrides it. Said in a note, never guessed.
_SET_ASIDE = ("dtype", "quantization")
_DEFAULT_VALUES = {"auto", "none", "null", ""}


@dataclass(frozen=True, kw_only=True)
class LogRequest:
    path: str | os.PathLike[str]
    model: str | None = None  # --model: a catalog name or config path instead of the logged model
    gpu: str | None = None  # --gpu: the GPU's kind (with the logged CUDA total where the log prints one)
    options: Mapping[str, Any] = field(default_factory=dict)  # setup options given; they override the log's


def verify_log(req: LogRequest) -> LogComparison:
    """Parse the log, build the same setup, run the engine's plan, and set every logged figure beside it."""
    return compare_parsed(load_log(req.path), model=req.model, gpu=req.gpu, options=req.options)


def compare_parsed(
    parsed: ParsedLog, *, model: str | None = None, gpu: str | None = None, options: Mapping[str, Any] | None = None
) -> LogComparison:
    """``verify_log`` of an already parsed log (``bench/engines.py`` calls this with the manifest's model/GPU)."""
    from vramwise.app.engines import PLANS
    from vramwise.app.run import InferRequest, infer
    from vramwise.engines.log_figures import plan_figures
    from vramwise.workload.engines import Engine

    engine = Engine(parsed.engine)
    if engine not in PLANS:
        built = ", ".join(e.value for e in PLANS if e is not Engine.HF)
        raise InvalidWorkloadError(
            f"log: a {parsed.engine} log, whose memory plan is not built yet; verify --log compares {built} logs",
            field="log",
            allowed=built,
        )
    asked = (options or {}).get("engine")
    if asked not in (None, engine.value):
        raise InvalidWorkloadError(
            f"--engine {asked}: the log is {engine.value}'s; verify --log follows the logged engine",
            field="engine",
            allowed=engine.value,
        )
    name, model_note = _model(parsed, model)
    gpu_text, gpu_words, gpu_total = _gpu(parsed, gpu)
    mapped, flag_notes = logged_options(parsed)
    release, release_note = vllm_release(parsed) if engine is Engine.VLLM else (None, None)
    if release is not None:
        mapped["vllm_version"] = release
    opts: dict[str, Any] = {**mapped, **(options or {}), "engine": engine.value}
    if opts.get("vllm_version", "0.11") not in V1_RULES and "vllm_sampler" not in (options or {}):
        opts.pop("vllm_sampler", None)  # a logged sampler line is read for the V1 plans only (engines/vllm.py)
    opts.setdefault("batch", 1)
    # the comparison reads the engine's own sizes (the pool, max_model_len), not one request: keep the request short
    opts.setdefault("context", 1)
    opts.setdefault("new_tokens", 1)
    result = infer(InferRequest(model=name, options=opts, gpu=gpu_text, gpu_total=gpu_total))
    plan = result.engine
    if plan is None or result.gpu is None:  # pragma: no cover - an engine other than hf always returns its plan
        raise InvalidWorkloadError(f"--engine {engine.value} gave no plan", field="engine")
    modelled = plan_figures(plan, gpu_bytes=result.gpu.memory_bytes, block=result.setup.kv_block)
    inferred = release_note is not None and opts.get("vllm_version") == release
    notes = [model_note, *flag_notes, *((release_note,) if inferred else _version_notes(parsed, plan.version))]
    return LogComparison(
        engine=parsed.engine,
        logged_version=parsed.version,
        modelled_version=plan.version,
        logged_model=parsed.model,
        model=name,
        gpu_bytes=result.gpu.memory_bytes,
        gpu=gpu_words,
        options={k: v for k, v in opts.items() if k not in ("batch", "context", "new_tokens")},
        rows=figure_rows(parsed, modelled),
        notes=tuple(notes) + tuple(n for n in result.estimate.notes if gpu is not None or not _size_note(n, gpu_text)),
    )


def _size_note(note: str, gpu_text: str) -> bool:
    """app/gpu_rules.py's note for a bare size ("a real GPU shows CUDA a few hundred MiB less"): wrong for the
    log's own CUDA total, which is what CUDA reported, so it is dropped when the GPU came from the log."""
    return note.startswith(f"budget: the {gpu_text} given")


def _model(parsed: ParsedLog, given: str | None) -> tuple[str, str]:
    """The model to estimate and a note saying how it was chosen."""
    if given:
        logged = f" (the log names {shown(parsed.model)})" if parsed.model else ""
        return given, f"model: {given}, as given with --model{logged}"
    if not parsed.model:
        raise UnknownModelError(
            "log: the log does not name its model; give it with --model (a catalog name or a config.json)",
            field="model",
        )
    from vramwise.catalog import models

    logged = parsed.model.strip().rstrip("/")
    for key, entry in models().items():
        if entry.hf_id.lower() == logged.lower():
            return key, f"model: catalog {key}, whose hub id is the logged {logged}"
    return logged, f"model: {logged}, as logged (not in the catalog; --model overrides it)"


def _gpu(parsed: ParsedLog, given: str | None) -> tuple[str, str, int | None]:
    """The --gpu text for the request, where its total came from, and the logged total that replaces a named
    GPU's (None: the text's own total)."""
    total = parsed.best("gpu_total")
    if given and total is not None and not _a_size(given):
        # the name says the kind, the log what CUDA reported on that machine (driver, ECC, MIG change it); a size
        # names no kind, only a total, which replaces the log's (below)
        return given, f"{given} with the log's CUDA total {total.printed} {total.unit}", int(total.value)
    if given:
        return given, f"--gpu {given}", None
    if total is None:
        raise InvalidWorkloadError(
            "log: the log does not print the GPU's total memory; give the GPU with --gpu (a name or a size)",
            field="gpu",
        )
    # the printed total is rounded (%.2f GiB): the plan's budget inherits that rounding, inside its tolerance
    return f"{int(total.value)}B", f"the log's CUDA total {total.printed} {total.unit}", None


def _a_size(given: str) -> bool:
    """Whether --gpu is a size (24GiB, 2x24GiB) rather than a catalog GPU: parse_gpu's custom entry."""
    from vramwise.catalog.gpu_spec import parse_gpu

    return parse_gpu(given).gpu.segment == "custom"


def logged_options(parsed: ParsedLog) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The logged flags as vramwise options, and a note for each flag read or set aside."""
    table = _FLAGS.get(parsed.engine, {})
    out: dict[str, Any] = {}
    read: list[str] = []
    aside: list[str] = []
    logged = {**parsed.flags, **{k: v for k, v in parsed.extras.items() if k in ("type_k", "type_v")}}
    implied = _implied_max_model_len(parsed, logged)
    for key, raw in logged.items():
        norm = key.lstrip("-").replace("-", "_").lower()
        if norm in _SET_ASIDE and raw.strip("'\"").lower() not in _DEFAULT_VALUES:
            aside.append(f"{key}={raw}")
        option = table.get(norm)
        if option is None or option in out:
            continue
        value = _value(option, raw.strip())
        if value is None:
            continue
        out[option] = value
        read.append(f"{key}={raw}")
    if parsed.engine == "llama.cpp" and "freq_base" in parsed.flags and "flash_attn" not in parsed.flags:
        # llama_new_context_with_model prints flash_attn between n_ubatch and freq_base since flash attention came
        # in (ggml-org/llama.cpp PR #5021, "ggml : add Flash Attention", April 2024); a context block without it is
        # an older build, which has no flash attention
        out.setdefault("flash_attn", "off")
        read.append("flash_attn=off (the context lines print freq_base but no flash_attn: a build before flash "
                    "attention)")
    if implied is not None and "max_model_len" not in out:
        out["max_model_len"] = implied
        read.append(f"max_model_len={implied} (its 'Maximum concurrency for {implied:,} tokens per request' line)")
    notes = [f"flags read from the log: {', '.join(read)}" if read else "the log prints no flag the plan reads"]
    if aside:
        notes.append(f"{', '.join(aside)}: the weights are estimated in the checkpoint's own format (give --format to "
                     "override)")
    return out, tuple(notes)


def _implied_max_model_len(parsed: ParsedLog, logged: Mapping[str, str]) -> int | None:
    """vLLM's max_model_len where only its concurrency line states it: "Maximum concurrency for %s tokens per
    request" prints model_config.max_model_len and divides the pool by it (V0 vllm/executor/executor_base.py
    initialize_cache; V1 vllm/v1/core/kv_cache_utils.py, beside "GPU KV cache size"), so a log without the flag or
    the config repr still says it.
    Without this the plan would take the model's own context, and compare a different setup."""
    if parsed.engine != "vllm":
        return None
    named = {k.lstrip("-").replace("-", "_").lower() for k in logged}
    tokens = parsed.extras.get("max_concurrency_tokens", "")
    if named & {"max_model_len", "max_seq_len"} or not tokens.isdigit():
        return None
    return int(tokens)


def _value(option: str, raw: str) -> Any:
    text = raw.strip("'\"")
    if text.lower() in _DEFAULT_VALUES:
        return None
    try:
        if option in _SWITCH:
            return True if text.lower() in ("true", "1") else None
        if option in _INTEGER:
            return int(text)
        if option in _REAL:
            return float(text)
    except ValueError:
        raise InvalidWorkloadError(
            f"log: flag value {shown(raw)} for {option} is not a number", field=option
        ) from None
    if option == "flash_attn":
        if text.lower() not in _FLASH_ATTN:
            raise InvalidWorkloadError(f"log: flash_attn {shown(raw)} is not one llama.cpp prints; allowed: "
                                       f"{', '.join(_FLASH_ATTN)}", field="flash_attn", allowed=", ".join(_FLASH_ATTN))
        return _FLASH_ATTN[text.lower()]
    if option == "kv_dtype":
        mapped = _KV_DTYPES.get(text.lower())
        if mapped is None:
            allowed = ", ".join(sorted(_KV_DTYPES))
            raise InvalidWorkloadError(
                f"log: kv_cache_dtype {shown(raw)} is not one the plan models; allowed: auto, {allowed}",
                field="kv_dtype",
                allowed=allowed,
            )
        return mapped
    return text


def _version_notes(parsed: ParsedLog, modelled: str) -> tuple[str, ...]:
    if parsed.version is None:
        return (f"the log does not print its {parsed.engine} version; the plan follows {parsed.engine} {modelled}",)
    if parsed.version.split(".")[:2] != modelled.split(".")[:2]:
        notes = [f"the log is {parsed.engine} {parsed.version}; the plan follows {parsed.engine} {modelled}: figures "
                 "whose rule changed between the two differ for that reason"]
        m = _VERSION.match(parsed.version.strip())
        if modelled.startswith("0.11") and m and (0, 7) <= (int(m.group(1)), int(m.group(2))) < (0, 11):
            notes.append("one such rule: vLLM before 0.11.0 took its first memory snapshot before NCCL and custom "
                         "all-reduce were set up, so their buffers counted inside its budget and its KV pool is "
                         "smaller by them than this plan's (vllm/v1/worker/gpu_worker.py init_device, reordered by "
                         "vllm-project/vllm PR #25359)")
        return tuple(notes)
    return ()


_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def vllm_release(parsed: ParsedLog) -> tuple[str | None, str | None]:
    """The --vllm-version whose plan a vLLM log is compared with, and a note when the choice is not exact.

    A 0.6.x log: v0.6.0-v0.6.4 follow the 0.6.4 plan, v0.6.5 on the 0.6 plan (memory_profiling); a log that prints no
    version but only V0 wordings (logs/vllm.py ``_V0_WORDING``) is placed by its memory report: the one-line
    "Memory profiling results: ... initial_memory_usage" of v0.6.2-v0.6.4 -> 0.6.4, memory_profiling's
    "the current vLLM instance can use" (v0.6.5 on) -> 0.6. A 0.7.x-0.9.1 log without V0 wording -> 0.8 (the V1
    rules read at v0.7.3 and v0.8.5; v0.9.0 keeps their budget rule); v0.9.2-v0.9.x -> 0.9 and v0.10.x -> 0.10
    (memory_profiling's snapshot taken before the distributed init: the communicators inside the budget,
    vllm_releases.py). Any other log keeps the default plan (0.11)."""
    if parsed.version is not None:
        m = _VERSION.match(parsed.version.strip())
        v1 = parsed.extras.get("generation") != "V0"  # 0.7.x ran V0 by default, V1 only with VLLM_USE_V1=1
        if v1 and m is not None and (0, 7) <= (int(m.group(1)), int(m.group(2))) < (0, 11):
            return _v1_release(parsed.version, int(m.group(2)), int(m.group(3) or 0))
        if m is None or (int(m.group(1)), int(m.group(2))) != (0, 6):
            return None, None
        patch = int(m.group(3) or 0)
        release, exact = ("0.6.4", (4,)) if patch <= 4 else ("0.6", (5, 6))
        if patch in exact:
            return release, None
        return release, (f"the log is vLLM {parsed.version}; compared with --vllm-version {release} (the rules read "
                         f"at {'v0.6.4' if release == '0.6.4' else 'v0.6.5-v0.6.6'}), the nearest release modelled")
    if parsed.extras.get("generation") != "V0":
        return None, None
    if parsed.best("initial_usage") is not None or parsed.best("torch_peak") is not None:
        return "0.6.4", ("the log prints no version; its one-line 'Memory profiling results' report is "
                         "v0.6.2-v0.6.4's: compared with --vllm-version 0.6.4")
    if parsed.best("budget") is not None:
        return "0.6", ("the log prints no version; its V0 wording and memory_profiling report ('the current vLLM "
                       "instance can use') are v0.6.5 and later: compared with --vllm-version 0.6 (v0.6.5-v0.6.6)")
    return None, None


def _v1_release(logged: str, minor: int, patch: int) -> tuple[str | None, str | None]:
    """A V1 log of 0.7-0.10: the 0.8 plan where its budget rule holds (v0.7.x-v0.9.1), else the 0.9 (v0.9.2) or 0.10
    (v0.10.0-v0.10.2) plan."""
    if minor == 10:
        if patch in (0, 2):
            return "0.10", None
        return "0.10", (f"the log is vLLM {logged}; compared with --vllm-version 0.10, whose rules read at v0.10.0 "
                        "and v0.10.2 are the same (engines/vllm_releases.py)")
    if minor == 9 and patch >= 2:
        return "0.9", None if patch == 2 else (f"the log is vLLM {logged}; compared with --vllm-version 0.9 (the "
                                               "rules read at v0.9.2)")
    if minor == 8:
        return "0.8", None
    if minor == 7:
        return "0.8", (f"the log is vLLM {logged}; compared with --vllm-version 0.8, whose rules read at v0.7.3 and "
                       "v0.8.5 are the same (engines/vllm_releases.py)")
    return "0.8", (f"the log is vLLM {logged}; compared with --vllm-version 0.8 (v0.8.5's rules): v0.9.0 keeps "
                   "their budget rule, but its batch defaults exempt the A100 and its CUDA graph sizes differ")

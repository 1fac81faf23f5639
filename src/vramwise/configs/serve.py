"""Serving command lines (``vllm serve``, SGLang's ``launch_server``, ``llama-server``) and Ollama Modelfiles as
vramwise's inference options.

Each engine's flags are read by the names the engine's own parser gives them, at the releases its plan follows:
vLLM 0.11.0 ``vllm/engine/arg_utils.py`` ``EngineArgs.add_cli_args``; SGLang 0.5 ``python/sglang/srt/server_args.py``
``ServerArgs.add_cli_args``; llama.cpp 7049736b ``common/arg.cpp``; Ollama v0.12.10 ``docs/modelfile.md`` (FROM,
PARAMETER num_ctx/num_gpu/num_batch). Defaults are the engines' own (workload/engines.py, sglang_flags.py,
llamacpp_flags.py hold them): a flag the line does not give keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vramwise.configs.imported import Imported
from vramwise.configs.ollama_names import is_library_reference, resolve
from vramwise.configs.values import Keys, prefixed, refuse

# flag -> (option name, type); type "switch" is a flag without a value
Table = Mapping[str, tuple[str, str]]

_KV = {"auto": "auto", "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "bfloat16": "bf16", "float16": "fp16"}
_DTYPE = {"auto": None, "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}

VLLM: Table = {
    "--model": ("model", "str"),
    "--max-model-len": ("max_model_len", "int"),
    "--max-num-seqs": ("max_num_seqs", "int"),
    "--max-num-batched-tokens": ("max_num_batched_tokens", "int"),
    "--enforce-eager": ("enforce_eager", "switch"),
    "--kv-cache-memory-bytes": ("kv_cache_memory", "int"),
    "--gpu-memory-utilization": ("gpu_util", "float"),
    "--tensor-parallel-size": ("tp", "int"), "-tp": ("tp", "int"),
    "--pipeline-parallel-size": ("pp", "int"), "-pp": ("pp", "int"),
    "--block-size": ("kv_block", "int"),
    "--kv-cache-dtype": ("kv_dtype", "kv"),
    "--dtype": ("format", "dtype"),
}  # fmt: skip
_VLLM_HARMLESS = prefixed(
    "--host",
    "--port",
    "--served-model-name",
    "--api-key",
    "--trust-remote-code",
    "--disable-log",
    "--enable-log",
    "--max-logprobs",
    "--seed",
    "--download-dir",
    "--tokenizer",
    "--revision",
    "--uvicorn",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--enable-chunked-prefill",
    "--swap-space",
    "--data-parallel-size",
    "-dp",
    "--chat-template",
    "--generation-config",
    "--load-format",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "--reasoning-parser",
    "--distributed-executor-backend",
    "--disable-custom-all-reduce",
    "--response-role",
    "--allowed-",
    "--ssl-",
    "--root-path",
    "--middleware",
    "--config-format",
    "--tokenizer-mode",
)
_VLLM_REFUSED = {
    "--cpu-offload-gb": "vLLM's CPU weight offload is not modelled",
    "--num-gpu-blocks-override": "a fixed number of KV blocks is not modelled (use --kv-cache-memory-bytes)",
    "--speculative-config": "speculative decoding's draft model is not modelled",
    "--enable-lora": "vLLM's LoRA adapters are not modelled",
    "--quantization": "give the weight format with --format (vramwise reads the checkpoint's quantization_config)",
    "-q": "give the weight format with --format (vramwise reads the checkpoint's quantization_config)",
    "--max-lora-rank": "vLLM's LoRA adapters are not modelled",
    "--kv-offloading-size": "KV offloading is not modelled",
}

SGLANG: Table = {
    "--model-path": ("model", "str"), "--model": ("model", "str"),
    "--tp-size": ("tp", "int"), "--tp": ("tp", "int"),
    "--mem-fraction-static": ("mem_fraction_static", "float"),
    "--chunked-prefill-size": ("chunked_prefill_size", "int"),
    "--cuda-graph-max-bs": ("cuda_graph_max_bs", "int"),
    "--max-running-requests": ("max_running_requests", "int"),
    "--max-total-tokens": ("max_total_tokens", "int"),
    "--context-length": ("context_length", "int"),
    "--page-size": ("page_size", "int"),
    "--disable-cuda-graph": ("disable_cuda_graph", "switch"),
    "--max-prefill-tokens": ("max_prefill_tokens", "int"),
    "--kv-cache-dtype": ("kv_dtype", "kv"),
    "--dtype": ("format", "dtype"),
}  # fmt: skip
_SGLANG_HARMLESS = prefixed(
    "--host",
    "--port",
    "--served-model-name",
    "--api-key",
    "--trust-remote-code",
    "--log-",
    "--random-seed",
    "--tokenizer",
    "--revision",
    "--dp-size",
    "--dp",
    "--attention-backend",
    "--sampling-backend",
    "--chat-template",
    "--enable-metrics",
    "--disable-radix-cache",
    "--schedule-policy",
    "--download-dir",
    "--load-format",
    "--tool-call-parser",
    "--reasoning-parser",
    "--skip-server-warmup",
    "--enable-cache-report",
)
_SGLANG_REFUSED = {
    "--quantization": "give the weight format with --format (vramwise reads the checkpoint's quantization_config)",
    "--speculative-algorithm": "speculative decoding's draft model is not modelled",
    "--enable-lora": "SGLang's LoRA adapters are not modelled",
    "--lora-paths": "SGLang's LoRA adapters are not modelled",
    "--cpu-offload-gb": "SGLang's CPU weight offload is not modelled",
    "--pp-size": "SGLang's pipeline parallelism is not modelled",
    "--ep-size": "SGLang's expert parallelism is not modelled",
    "--enable-torch-compile": "torch.compile's memory in SGLang is not modelled",
}

LLAMA: Table = {
    "-m": ("model", "str"), "--model": ("model", "str"), "-hf": ("model", "str"), "--hf-repo": ("model", "str"),
    "-c": ("ctx_size", "int"), "--ctx-size": ("ctx_size", "int"),
    "-b": ("batch_size", "int"), "--batch-size": ("batch_size", "int"),
    "-ub": ("ubatch_size", "int"), "--ubatch-size": ("ubatch_size", "int"),
    "-ngl": ("n_gpu_layers", "int"), "--n-gpu-layers": ("n_gpu_layers", "int"), "--gpu-layers": ("n_gpu_layers", "int"),
    "-ctk": ("cache_type_k", "str"), "--cache-type-k": ("cache_type_k", "str"),
    "-ctv": ("cache_type_v", "str"), "--cache-type-v": ("cache_type_v", "str"),
    "-fa": ("flash_attn", "fa"), "--flash-attn": ("flash_attn", "fa"),
    "-np": ("parallel", "int"), "--parallel": ("parallel", "int"),
    "-ts": ("tensor_split", "str"), "--tensor-split": ("tensor_split", "str"),
    "-sm": ("split_mode", "str"), "--split-mode": ("split_mode", "str"),
    "--no-mmap": ("no_mmap", "switch"),
    "-nkvo": ("no_kv_offload", "switch"), "--no-kv-offload": ("no_kv_offload", "switch"),
    "-kvu": ("kv_unified", "switch"), "--kv-unified": ("kv_unified", "switch"),
    "--swa-full": ("swa_full", "switch"),
    "--embeddings": ("embeddings", "switch"), "--embedding": ("embeddings", "switch"),
}  # fmt: skip
_LLAMA_SWITCHES = (
    "--mlock",
    "--jinja",
    "--cont-batching",
    "-cb",
    "--no-webui",
    "--metrics",
    "--verbose",
    "-v",
    "--no-warmup",
    "--check-tensors",
    "--slots",
    "--props",
)
_LLAMA_HARMLESS = prefixed(
    "--host",
    "--port",
    "-t",
    "--threads",
    "-a",
    "--alias",
    "--temp",
    "--top-",
    "--min-p",
    "--repeat-",
    "--seed",
    "-s",
    "--api-key",
    "--chat-template",
    "--log-",
    "--timeout",
    "-to",
    "--n-predict",
    "-n",
    "--keep",
    "--reasoning-",
    *_LLAMA_SWITCHES,  # switches take no value, and none changes memory
    "-tb",
    "--threads-batch",
    "--prio",
    "--numa",
)
_LLAMA_REFUSED = {
    "--lora": "llama.cpp's LoRA adapters are not modelled",
    "-md": "speculative decoding's draft model is not modelled",
    "--model-draft": "speculative decoding's draft model is not modelled",
    "-ot": "tensor overrides (--override-tensor) are not modelled",
    "--override-tensor": "tensor overrides are not modelled",
    "--cpu-moe": "MoE experts on the CPU are not modelled",
    "-cmoe": "MoE experts on the CPU are not modelled",
    "--n-cpu-moe": "MoE experts on the CPU are not modelled",
    "--fit": "llama-server's --fit auto-sizing is not modelled",
}


def read_flags(
    kind: str,
    words: list[str],
    table: Table,
    harmless: Callable[[str], bool],
    refused: Mapping[str, str],
    switches: tuple[str, ...] = (),
) -> tuple[dict[str, Any], list[str], list[str]]:
    """``--flag value``, ``--flag=value`` and switches as option values; (options, flags used, flags ignored)."""
    opts: dict[str, Any] = {}
    used: list[str] = []
    ignored: list[str] = []
    i = 0
    while i < len(words):
        flag, eq, value = words[i].partition("=") if words[i].startswith("--") else (words[i], "", "")
        after = words[i + 1] if i + 1 < len(words) else None
        i += 1
        if flag in refused:
            raise refuse(kind, flag, refused[flag])
        entry = table.get(flag)
        if not flag.startswith("-") or (entry is None and not harmless(flag)):
            raise refuse(kind, flag, "unknown flag (vramwise cannot tell whether it changes the memory)")
        how = entry[1] if entry else ("switch" if flag in switches else "any")
        has_value = after is not None and (not after.startswith("-") or _number(after))
        if how == "fa":  # builds before llama.cpp PR #15434 took a bare -fa for on
            has_value = has_value and after in ("on", "off", "auto")
        if not eq and how not in ("switch",) and has_value:
            value, i = str(after), i + 1
        elif not eq and how not in ("switch", "fa", "any"):
            raise refuse(kind, flag, "needs a value")
        if entry is None:
            ignored.append(flag)
            continue
        opts[entry[0]] = _convert(kind, flag, how, value)
        used.append(flag)
    return {k: v for k, v in opts.items() if v is not None}, used, ignored


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _convert(kind: str, flag: str, how: str, value: str) -> Any:
    keys = Keys(kind, {flag: value})
    if how == "switch":
        return True
    if how == "int":
        return keys.integer(flag, -1)
    if how == "float":
        return keys.number(flag)
    if how == "kv":
        return keys.choice(flag, _KV)
    if how == "dtype":
        return keys.choice(flag, _DTYPE)
    if how == "fa":
        return value or "on"
    return value


def _model(kind: str, words: list[str], start: int, opts: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The model: a positional word after the command (``vllm serve MODEL``), or the table's --model flag."""
    rest = words[start:]
    positional = rest[0] if rest and not rest[0].startswith("-") else None
    if positional is not None:
        rest = rest[1:]
    return positional, rest


def _from_server(
    kind: str, words: list[str], start: int, table: Table, harmless: Callable[[str], bool], refused: Mapping[str, str]
) -> Imported:
    """A serving engine's command line (vLLM's and SGLang's read alike): MODEL positional or --model, then flags."""
    positional, rest = _model(kind, words, start, {})
    opts, used, ignored = read_flags(kind, rest, table, harmless, refused)
    model = _one_model(kind, positional, opts.pop("model", None))
    return Imported(
        kind=kind,
        command="infer",
        options={"engine": kind, **opts},
        model=model,
        used=tuple(used),
        ignored=tuple(ignored),
    )


def from_vllm(words: list[str], start: int) -> Imported:
    return _from_server("vllm", words, start, VLLM, _VLLM_HARMLESS, _VLLM_REFUSED)


def from_sglang(words: list[str], start: int) -> Imported:
    return _from_server("sglang", words, start, SGLANG, _SGLANG_HARMLESS, _SGLANG_REFUSED)


def from_llama(words: list[str], start: int) -> Imported:
    opts, used, ignored = read_flags(
        "llama.cpp", words[start:], LLAMA, _LLAMA_HARMLESS, _LLAMA_REFUSED, _LLAMA_SWITCHES
    )
    model = opts.pop("model", None)
    return Imported(
        kind="llama.cpp",
        command="infer",
        options={"engine": "llama.cpp", **opts},
        model=model,
        used=tuple(used),
        ignored=tuple(ignored),
    )


def _one_model(kind: str, positional: str | None, flag: str | None) -> str | None:
    if positional and flag and positional != flag:
        raise refuse(kind, "--model", f"names {flag!r} but the command names {positional!r}", "one model")
    return positional or flag


# Ollama docs/modelfile.md PARAMETER names -> option (the --ollama preset reads -c as num_ctx per sequence)
_OLLAMA = {"num_ctx": "ctx_size", "num_gpu": "n_gpu_layers", "num_batch": "batch_size"}
_OLLAMA_HARMLESS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "stop",
    "seed",
    "num_predict",
    "repeat_penalty",
    "repeat_last_n",
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "tfs_z",
    "num_thread",
    "typical_p",
    "presence_penalty",
    "frequency_penalty",
    "num_keep",
    "penalize_newline",
)
_OLLAMA_INSTRUCTIONS = (
    "FROM",
    "PARAMETER",
    "TEMPLATE",
    "SYSTEM",
    "LICENSE",
    "MESSAGE",
    "REQUIRES",
    "RENDERER",
    "PARSER",
)


def _library(model: str, opts: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """FROM's model: an Ollama library name as the catalog's model of that architecture (None: not mapped, the note
    says why), a format its tag names set in ``opts``; a GGUF file or a path as given."""
    if not is_library_reference(model):
        return model, ()
    mapped, quant, note = resolve(model)
    if quant is not None:
        opts["format"] = quant
    return mapped, (note,)


def from_modelfile(text: str) -> Imported:
    """An Ollama Modelfile: FROM (a model name or a GGUF path), PARAMETER num_ctx/num_gpu/num_batch."""
    opts: dict[str, Any] = {"engine": "llama.cpp", "ollama": True}
    model, used, ignored = None, [], []
    in_block = False
    for raw in text.splitlines():
        line = raw.strip()
        if in_block:  # a """ ... """ TEMPLATE or SYSTEM body
            in_block = line.count('"""') % 2 == 0
            continue
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        if instruction == "ADAPTER":
            raise refuse("ollama", "ADAPTER", "a LoRA adapter is not modelled")
        if instruction not in _OLLAMA_INSTRUCTIONS:
            raise refuse("ollama", word, "not a Modelfile instruction", ", ".join(_OLLAMA_INSTRUCTIONS))
        in_block = rest.count('"""') % 2 == 1
        if instruction == "FROM":
            model = rest.strip()
            used.append("FROM")
        elif instruction == "PARAMETER":
            name, _, value = rest.strip().partition(" ")
            if name in _OLLAMA:
                opts[_OLLAMA[name]] = Keys("ollama", {name: value.strip()}).integer(name, -1)
                used.append(f"PARAMETER {name}")
            elif name in _OLLAMA_HARMLESS:
                ignored.append(f"PARAMETER {name}")
            else:
                raise refuse("ollama", name, "unknown PARAMETER (vramwise cannot tell whether it changes the memory)")
        else:
            ignored.append(instruction)
    if model is None:
        raise refuse("ollama", "FROM", "a Modelfile needs FROM (the model)")
    model, notes = _library(model, opts)
    return Imported(
        kind="ollama",
        command="infer",
        options=opts,
        model=model,
        used=tuple(used),
        ignored=tuple(dict.fromkeys(ignored)),
        notes=notes,
    )

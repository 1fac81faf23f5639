"""vLLM startup logs, V0 (0.5-0.10) and V1 (0.8 on): version, config, and every memory figure the worker prints.

Format strings read in vllm-project/vllm (the commits are those stored by the reference index; the wording is
quoted in each pattern's comment and in tests/engines/test_logs.py):

- vllm/worker/model_runner.py, GPUModelRunnerBase.load_model (V0): "Loading model weights took %.4f GB" (to 0.7.x;
  the "GB" is float(2**30) bytes), in 0.8's V0 "Model loading took %.4f GB and %.6f seconds";
  vllm/v1/worker/gpu_model_runner.py, GPUModelRunner.load_model (V1, 4e17906): "Model loading took %.4f GiB and
  %.6f seconds"; later releases "Model loading took %.4f GiB memory and %.6f seconds" (all as public logs quote
  them in tests/engines/test_logs.py).
- vllm/worker/worker.py, Worker.determine_num_available_blocks (V0, 6ae5229): 0.6.2-0.6.4 "Memory profiling results:
  total_gpu_memory=%.2fGiB initial_memory_usage=%.2fGiB peak_torch_memory=%.2fGiB memory_usage_post_profile=%.2fGib
  non_torch_memory=%.2fGiB kv_cache_size=%.2fGiB gpu_memory_utilization=%.2f"; 0.6.5 on "Memory profiling takes
  %.2f seconds\\nthe current vLLM instance can use total_gpu_memory (%.2fGiB) x gpu_memory_utilization (%.2f) =
  %.2fGiB\\nmodel weights take %.2fGiB; non_torch_memory takes %.2fGiB; PyTorch activation peak memory takes
  %.2fGiB; the rest of the memory reserved for KV Cache is %.2fGiB." (V1's gpu_worker.py printed the same until
  it moved to "Available KV cache memory: %.2f GiB", Worker.determine_available_memory at 35d5cda).
- vllm/v1/worker/gpu_worker.py, Worker.compile_or_warm_up_model (35d5cda): "Free memory on device (F/T GiB) on
  startup. Desired GPU memory utilization is (U, B GiB). Actual usage is W GiB for weight, A GiB for peak
  activation, N GiB for non-torch memory, and G GiB for CUDAGraph memory." with round(x, 2), so at least two
  decimals of precision whatever Python prints ("14.0"); later "Actual usage is W GiB for consumed memory (weights
  + non-torch), ..., Current kv cache memory in use is K GiB."; vllm/utils/mem_utils.py (a6d5c39)
  MemoryProfilingResult.__repr__ "Memory profiling takes %.2f seconds. Total non KV cache memory: XGiB; torch peak
  memory increase: XGiB; non-torch forward increase memory: XGiB; weights memory: XGiB." (format_gib = round(x, 2)).
- vllm-project/vllm PR #10511's branch (before 0.6.5) printed "Memory profiling results:" as a table, one
  "name<TAB>value" per line; the corpus keeps one, so its labels are read too.
- vllm/executor/executor_base.py, initialize_cache (V0): "# %s blocks: %d, # CPU blocks: %d" (device name "GPU",
  "CUDA" or "cuda") and "Maximum concurrency for %s tokens per request: %.2fx"; vllm/v1/core/kv_cache_utils.py
  (bbf906a): "# GPU blocks: %d" (0.8.0), then "GPU KV cache size: %s tokens" and "Maximum concurrency for %s
  tokens per request: %.2fx" with thousands separators, later merged onto one line.
- vllm/worker/model_runner.py and vllm/v1/worker/gpu_model_runner.py, capture_model: "Graph capturing finished in
  %.0f secs, took %.2f GiB".
- vllm/engine/llm_engine.py (V0) "Initializing an LLM engine (v%s) with config: model=%r, ...", vllm/v1/engine/
  core.py EngineCore.__init__ "Initializing a V1 LLM engine (v%s) with config: %s"; vllm/entrypoints/openai/
  api_server.py "vLLM API server version %s"; vllm/entrypoints/utils.py log_non_default_args "non-default args: %s".
"""

from __future__ import annotations

import re
from types import MappingProxyType

from vramwise.engines.logs.lines import Line
from vramwise.engines.logs.pairs import command_flags, literal_dict, split_pairs
from vramwise.engines.logs.parsed import Figure, ParsedLog, count, memory, ratio

ENGINE = "vllm"
EXPECTED = '"Model loading took X GiB" or "GPU KV cache size: N tokens" (vLLM)'
MARKERS = re.compile(
    r"Initializing an? (?:V1 )?LLM engine|vLLM API server version|Model loading took|Loading model weights took"
    r"|the current vLLM instance can use|Memory profiling results:|GPU KV cache size:|Available KV cache memory:"
    r"|Memory profiling takes|Actual usage is|CUDA graph pool memory:"
    r"|# (?:GPU|CUDA|cuda|gpu) blocks:|vllm serve |-m vllm\.entrypoints|The model's max seq len|models?'s max seq len"
)

_N = r"(\d{1,15}(?:\.\d{1,12})?)"  # bounded: a run of digits costs O(1) per start, never O(n)
_COUNT = r"(\d{1,3}(?:,\d{3})+|\d+)"  # 293,280 or 5095
_WEIGHTS = re.compile(rf"(?:Model loading|Loading model weights) took {_N} ?(GiB|GB)\b")
_BUDGET = re.compile(rf"total_gpu_memory \({_N} ?GiB\) x gpu_memory_utilization \({_N}\) = {_N} ?GiB")
_PROFILE = (  # the one-line report (0.6.5-0.9) and the table of "Memory profiling results:" (PR #10511's branch)
    ("weights", re.compile(rf"model weights take\s+{_N} ?GiB")),
    ("non_torch", re.compile(rf"non_torch_memory(?: takes)?\s+{_N} ?GiB")),
    ("activation_peak", re.compile(rf"PyTorch activation peak memory(?: takes)?\s+{_N} ?GiB")),
    ("kv_cache", re.compile(rf"(?:reserved for KV Cache is|available_kv_cache_memory)\s+{_N} ?GiB")),
    ("gpu_total", re.compile(rf"total_gpu_memory\s+{_N} ?GiB")),
    ("budget", re.compile(rf"the current vLLM instance can use\s+{_N} ?GiB")),
)
_UTILIZATION = re.compile(r"(?:gpu_memory_utilization(?:\s+|\s*\(|=)|GPU memory utilization is \()(\d(?:\.\d+)?)")
_RESULTS = re.compile(r"Memory profiling results:")
_RESULT_FIELD = re.compile(rf"(\w{{1,64}})={_N} ?Gi[Bb]")
_RESULT_NAMES = {  # 0.6.2-0.6.4 field -> the engine-neutral name
    "total_gpu_memory": "gpu_total",
    "initial_memory_usage": "initial_usage",
    "peak_torch_memory": "torch_peak",
    "memory_usage_post_profile": "post_profile_usage",
    "non_torch_memory": "non_torch",
    "kv_cache_size": "kv_cache",
}
# signed: determine_available_memory logs a negative budget before check_enough_kv_cache_memory refuses to start
_AVAILABLE_KV = re.compile(rf"Available KV cache memory: (-?{_N[1:-1]}) ?GiB")
_FREE_ON_START = re.compile(rf"Free memory on device \({_N}/{_N} GiB\) on startup")
# Later V1 reports whose sizes come from round(x, 2) (vllm/utils/mem_utils.py format_gib at a6d5c39): the usage
# line of compile_or_warm_up_model (gpu_worker.py), MemoryProfilingResult.__repr__ (logged at DEBUG by
# determine_available_memory) and capture_model's "CUDA graph pool memory: X GiB (actual), Y GiB (estimated)".
_ROUNDED = (
    ("weights", re.compile(rf"Actual usage is {_N} GiB for weight")),
    ("consumed", re.compile(rf"Actual usage is {_N} GiB for consumed memory")),
    ("activation_peak", re.compile(rf"{_N} GiB for peak activation")),
    ("non_torch", re.compile(rf"{_N} GiB for non-torch memory")),
    ("cuda_graphs", re.compile(rf"{_N} GiB for CUDAGraph memory")),
    ("kv_cache", re.compile(rf"Current kv cache memory in use is {_N} GiB")),
    ("budget", re.compile(rf"Desired GPU memory utilization is \(\d+(?:\.\d+)?, {_N} GiB\)")),
    ("non_kv", re.compile(rf"Total non KV cache memory: {_N} ?GiB")),
    ("activation_peak", re.compile(rf"torch peak memory increase: {_N} ?GiB")),
    ("non_torch", re.compile(rf"non-torch forward increase memory: {_N} ?GiB")),
    ("consumed", re.compile(rf"total consumed \(from mem_get_info\): {_N} ?GiB")),
    ("weights", re.compile(rf"; weights memory: {_N} ?GiB")),
    ("cuda_graphs", re.compile(rf"CUDA graph pool memory: {_N} GiB \(actual\)")),
    ("cuda_graphs_estimated", re.compile(rf"{_N} GiB \(estimated\)")),
)
_BLOCKS = re.compile(rf"# (?:GPU|CUDA|cuda|gpu) blocks: {_COUNT}(?:, # CPU blocks: {_COUNT})?")
_TOKENS = re.compile(rf"GPU KV cache size: {_COUNT} tokens")
# The MXFP4 MoE backend vLLM picked (vllm/model_executor/layers/quantization/mxfp4.py get_mxfp4_backend logs
# "Using Triton backend" / "Using Marlin backend" / "Using FlashInfer MXFP4 ..."; utils/marlin_utils_fp4.py
# prepare_moe_fp4_layer_for_marlin warns "... leveraging the Marlin kernel"), as vramwise's --mxfp4-backend.
_MXFP4_BACKENDS = (
    (re.compile(r"leveraging the Marlin kernel|mxfp4\.py:\d+\] Using Marlin backend"), "marlin"),
    (re.compile(r"mxfp4\.py:\d+\] Using Triton backend"), "triton"),
    (re.compile(r"Using FlashInfer MXFP4"), "flashinfer"),
)
# The top-k/top-p path a V1 sampler took (v0.8.5 vllm/v1/sample/ops/topk_topp_sampler.py
# TopKTopPSampler.__init__: "Using FlashInfer for top-p & top-k sampling." with FlashInfer < 0.2.3; v0.9.2-v0.11.0: the
# same line with FlashInfer >= 0.2.3; "Falling back to the PyTorch-native implementation of top-p & top-k sampling"
# otherwise), as vramwise's --vllm-sampler
_SAMPLERS = (
    (re.compile(r"Using FlashInfer for top-p & top-k sampling"), "flashinfer"),
    (re.compile(r"Falling back to the PyTorch-native implementation of top-p & top-k sampling"), "torch"),
)
# No GPU peer-to-peer access: custom_all_reduce.py CustomAllreduce.__init__ (v0.6.6.post1-v0.11.0) warns "Custom
# allreduce is disabled because your platform lacks GPU P2P capability or P2P test failed" when _can_p2p fails; NCCL
# then connects through host memory (SHM), as vramwise's --interconnect shm
_NO_P2P = re.compile(r"Custom allreduce is disabled because your platform lacks GPU")
_CONCURRENCY = re.compile(rf"Maximum concurrency for {_COUNT} tokens per request: {_N}x")
_GRAPHS = re.compile(rf"Graph capturing finished in \d+ secs?, took {_N} ?GiB")
# The refusals that end a start too small for max_model_len: V0 (vllm/worker/worker.py, raise_if_cache_size_invalid)
# "The model's max seq len (%d) is larger than the maximum number of tokens that can be stored in KV cache (%d)";
# V1 (vllm/v1/core/kv_cache_utils.py, check_enough_kv_cache_memory) "... max seq len (%d), (%.2f GiB KV cache is
# needed, which is larger than the available KV cache memory (%.2f GiB). Based on the available memory, the
# estimated maximum model length is %d."
_TOO_SMALL_V0 = re.compile(r"stored in KV cache \((\d+)\)")
# (matched across line breaks: quoted logs wrap it; the sizes come from round(x, 2), so "0.9" is known to 0.005)
_TOO_SMALL_V1 = re.compile(
    rf"\(\s*{_N}\s+GiB\s+KV\s+cache\s+is\s+needed,\s+which\s+is\s+larger\s+than\s+the\s+available\s+KV\s+cache"
    rf"\s+memory\s+\(\s*{_N}\s+GiB\)"
)
_ESTIMATED_LEN = re.compile(r"estimated\s+maximum\s+model\s+length\s+is\s+(\d+)")
_MAX_SEQ_LEN = re.compile(r"max seq len \((\d+)\)")
_COMMAND = re.compile(r"(?:^|\$ ?)((?:vllm serve|python3? -m vllm\.entrypoints\.\S+)(?: .*)?)$")
_ENGINE_CONFIG = re.compile(r"Initializing an? (?:V1 )?LLM engine \(v([^)\s]+)\) with config: (.*)$")
_SERVER_VERSION = re.compile(r"vLLM API server version ([\w.+\-]+)")
_NON_DEFAULT = re.compile(r"non-default args: (\{.*\})\s*$")
_CHUNKED = re.compile(r"Chunked prefill is enabled with max_num_batched_tokens=(\d+)")
_LOADING = re.compile(r"Starting to load model (\S{1,512}?)(?:\.\.\.)?\s*$")
# Wordings only one engine generation printed, for a log that does not print its version (extras["generation"]):
# V0 "Initializing an LLM engine", "Loading model weights took X GB" / "Model loading took X GB" (GB: V0's
# float(2**30)), "Memory profiling results:" (0.6.2-0.6.4 and PR #10511's branch), "# GPU blocks: N, # CPU blocks: M"
# (V0's executors; V1's 0.8.0 line has no CPU blocks), raise_if_cache_size_invalid's "stored in KV cache (N)";
# V1 "Initializing a V1 LLM engine", "Model loading took X GiB", "GPU KV cache size:", "Available KV cache memory:".
_V0_WORDING = re.compile(
    r"Initializing an LLM engine|(?:Loading model weights|Model loading) took \S+ ?GB\b|Memory profiling results:"
    r"|blocks: \S+, # CPU blocks:|stored in KV cache \("
)
_V1_WORDING = re.compile(
    r"Initializing a V1 LLM engine|Model loading took \S+ ?GiB|GPU KV cache size:|Available KV cache memory:"
)


def _profile_figures(text: str, r: str, n: int) -> list[Figure]:
    """The weights and the memory profile, in the wordings of 0.5 to 0.9 (V0 and early V1)."""
    out: list[Figure] = []
    if m := _WEIGHTS.search(text):
        out.append(memory("weights", m.group(1), m.group(2), rank=r, line=n))
    if m := _BUDGET.search(text):
        out.append(memory("gpu_total", m.group(1), "GiB", rank=r, line=n))
        out.append(memory("budget", m.group(3), "GiB", rank=r, line=n))
    for name, pattern in _PROFILE:
        if m := pattern.search(text):
            out.append(memory(name, m.group(1), "GiB", rank=r, line=n))
    if _RESULTS.search(text):
        for m in _RESULT_FIELD.finditer(text):
            if m.group(1) in _RESULT_NAMES:
                out.append(memory(_RESULT_NAMES[m.group(1)], m.group(2), "GiB", rank=r, line=n))
    return out


def _v1_figures(text: str, r: str, n: int) -> list[Figure]:
    """The KV budget and the usage report of later V1 releases (values printed by round(x, 2))."""
    out: list[Figure] = []
    if m := _AVAILABLE_KV.search(text):
        out.append(memory("kv_cache", m.group(1), "GiB", rank=r, line=n))
    if m := _FREE_ON_START.search(text):
        out.append(memory("gpu_free", m.group(1), "GiB", rank=r, line=n, decimals=2))
        out.append(memory("gpu_total", m.group(2), "GiB", rank=r, line=n, decimals=2))
    if "GiB" in text:
        for name, pattern in _ROUNDED:
            if m := pattern.search(text):
                out.append(memory(name, m.group(1), "GiB", rank=r, line=n, decimals=2))
    return out


def _capacity_figures(text: str, r: str, n: int) -> list[Figure]:
    """KV blocks or tokens, the maximum concurrency, and the CUDA graphs' memory."""
    out: list[Figure] = []
    if m := _BLOCKS.search(text):
        out.append(count("kv_blocks", m.group(1), "blocks", rank=r, line=n))
        if m.group(2) is not None:
            out.append(count("cpu_kv_blocks", m.group(2), "blocks", rank=r, line=n))
    if m := _TOKENS.search(text):
        out.append(count("kv_tokens", m.group(1), "tokens", rank=r, line=n))
    if m := _CONCURRENCY.search(text):
        out.append(ratio("max_concurrency", m.group(2), rank=r, line=n))
    if m := _GRAPHS.search(text):
        out.append(memory("cuda_graphs", m.group(1), "GiB", rank=r, line=n))
    if m := _TOO_SMALL_V0.search(text):
        out.append(count("kv_tokens", m.group(1), "tokens", rank=r, line=n))
    return out


def _wrapped_figures(lines: list[Line]) -> list[Figure]:
    """V1's refusal when max_model_len does not fit, wherever its words were broken over lines."""
    text = "\n".join(line.text for line in lines)
    out: list[Figure] = []
    for m in _TOO_SMALL_V1.finditer(text):
        line = lines[text.count("\n", 0, m.start())]
        out.append(memory("kv_needed", m.group(1), "GiB", rank=line.rank, line=line.number, decimals=2))
        out.append(memory("kv_cache", m.group(2), "GiB", rank=line.rank, line=line.number, decimals=2))
    for m in _ESTIMATED_LEN.finditer(text):
        line = lines[text.count("\n", 0, m.start())]
        out.append(count("max_model_len_fits", m.group(1), "tokens", rank=line.rank, line=line.number))
    return out


def _memory_figures(line: Line) -> list[Figure]:
    """Every memory, block, token and concurrency figure on one line, in the order the patterns are listed."""
    args = (line.text, line.rank, line.number)
    return [*_profile_figures(*args), *_v1_figures(*args), *_capacity_figures(*args)]


def _command(command: str, flags: dict[str, str], extras: dict[str, str]) -> None:
    """The launch command a log quotes: its flags as typed ("--tensor-parallel-size": "2"), the model it serves."""
    positional, typed = command_flags(command)
    for key, value in typed.items():
        flags.setdefault(key, value)
    if positional[:2] == ["vllm", "serve"] and len(positional) > 2:
        extras.setdefault("model_command", positional[2])
    elif "--model" in typed:
        extras.setdefault("model_command", typed["--model"])


def _side_facts(text: str, flags: dict[str, str], extras: dict[str, str]) -> None:
    """Flags a line states in passing: the utilization in the memory report, the launch command, max seq len."""
    if m := _UTILIZATION.search(text):
        flags.setdefault("gpu_memory_utilization", m.group(1))
    if m := _MAX_SEQ_LEN.search(text):
        flags.setdefault("max_seq_len", m.group(1))
    if m := _COMMAND.search(text.strip()):
        _command(m.group(1), flags, extras)
    if m := _CONCURRENCY.search(text):
        extras.setdefault("max_concurrency_tokens", m.group(1).replace(",", ""))
    for pattern, backend in _MXFP4_BACKENDS:
        if pattern.search(text):
            flags.setdefault("mxfp4_backend", backend)
    for pattern, path in _SAMPLERS:
        if pattern.search(text):
            flags.setdefault("vllm_sampler", path)
    if _NO_P2P.search(text):
        flags.setdefault("interconnect", "shm")


def _facts(lines: list[Line]) -> tuple[str | None, dict[str, str], dict[str, str]]:
    """The version, the flags (engine config and non-default args, as logged) and extras."""
    version: str | None = None
    flags: dict[str, str] = {}
    extras: dict[str, str] = {}
    for line in lines:
        text = line.text
        if m := _ENGINE_CONFIG.search(text):
            version = version or m.group(1)
            for key, value in split_pairs(m.group(2)).items():
                flags.setdefault(key, value)
        elif m := _SERVER_VERSION.search(text):
            version = version or m.group(1)
        elif m := _NON_DEFAULT.search(text):
            for key, value in literal_dict(m.group(1)).items():
                flags.setdefault(key, value)
        elif m := _CHUNKED.search(text):
            flags.setdefault("max_num_batched_tokens", m.group(1))
        elif (m := _LOADING.search(text)) and "model_loading" not in extras:
            extras["model_loading"] = m.group(1)
        _side_facts(text, flags, extras)
        if "generation" not in extras and (m := _V1_WORDING.search(text) or _V0_WORDING.search(text)):
            extras["generation"] = "V1" if _V1_WORDING.search(m.group(0)) else "V0"
    return version, flags, extras


def parse(lines: list[Line]) -> ParsedLog:
    """A vLLM startup log's version, model, flags and figures (per rank, in log order)."""
    version, flags, extras = _facts(lines)
    figures = tuple(sorted((*(f for line in lines for f in _memory_figures(line)), *_wrapped_figures(lines)),
                           key=lambda f: f.line))
    model = flags.get("model") or flags.get("model_tag") or extras.get("model_loading") or extras.get("model_command")
    return ParsedLog(
        engine=ENGINE,
        version=version,
        model=model,
        flags=MappingProxyType(flags),
        figures=figures,
        extras=MappingProxyType(extras),
    )

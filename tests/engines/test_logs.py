"""Startup logs of vLLM, SGLang and llama.cpp parsed into figures: every sample is written from the engine's own
format string (file + function cited beside it) or is a short excerpt of a public log (its URL beside it); every
expected byte count is the printed number times its unit, worked out here by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vramwise.engines.logs import FIGURE_NAMES, MAX_LOG_BYTES, MAX_LOG_CHARS, ParsedLog, load_log, parse_log
from vramwise.engines.logs.pairs import split_pairs
from vramwise.errors import ConfigError

GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024


def units(digits: int, places: int, unit: int) -> int:
    """``digits / 10**places`` units in bytes, rounded half up: 7.1694 GiB is units(71694, 4, GIB)."""
    return (2 * digits * unit + 10**places) // (2 * 10**places)


def half_digit(places: int, unit: int) -> int:
    """Half a unit of the last printed digit, in whole bytes rounded up: %.2f GiB -> 0.005 GiB = 5,368,710 B."""
    return -(-unit // (2 * 10**places))


def value(log: ParsedLog, name: str, rank: str | None = None) -> int | float:
    assert all(f.name in FIGURE_NAMES for f in log.figures), [f.name for f in log.figures]
    figure = log.best(name, rank)
    assert figure is not None, f"no {name} for rank {rank!r} in {log.figures}"
    return figure.value


def test_hand_conversions() -> None:
    # 7.1694 GiB = 71694 * 1,073,741,824 / 10,000 = 7,698,084,632.87 -> 7,698,084,633 bytes, +- 0.00005 GiB = 53,688 B.
    assert units(71694, 4, GIB) == 7_698_084_633
    assert half_digit(4, GIB) == 53_688
    # 3577.56 MiB = 357756 * 1,048,576 / 100 = 375,134,355,456 / 100 = 3,751,343,554.56 -> 3,751,343,555 bytes.
    assert units(357756, 2, MIB) == 3_751_343_555


# --- vLLM -----------------------------------------------------------------------------------------------------------

# V1 (0.8-0.9), tp 2, workers tagged "(VllmWorker rank=N pid=P)", colours on. Wording: "Initializing a V1 LLM engine
# (v%s) with config: %s" (vllm/v1/engine/core.py, EngineCore.__init__); "Model loading took %.4f GiB and %.6f seconds"
# (vllm/v1/worker/gpu_model_runner.py, load_model); the three-line memory report (vllm/worker/worker.py,
# determine_num_available_blocks, also printed by V1's gpu_worker.py before 0.10); "GPU KV cache size: %s tokens" and
# "Maximum concurrency for %s tokens per request: %.2fx" (vllm/v1/core/kv_cache_utils.py, thousands separators);
# "Graph capturing finished in %.0f secs, took %.2f GiB" (gpu_model_runner.py, capture_model).
VLLM_V1_TP2 = """\
INFO 05-12 10:11:02 [api_server.py:1043] vLLM API server version 0.9.1
INFO 05-12 10:11:02 [cli_args.py:325] non-default args: {'model': 'Qwen/Qwen2.5-32B-Instruct', 'max_model_len': 32768, \
'tensor_parallel_size': 2, 'gpu_memory_utilization': 0.92}
INFO 05-12 10:11:09 [core.py:455] Initializing a V1 LLM engine (v0.9.1) with config: \
model='Qwen/Qwen2.5-32B-Instruct', \
speculative_config=None, tokenizer='Qwen/Qwen2.5-32B-Instruct', dtype=torch.bfloat16, max_seq_len=32768, \
tensor_parallel_size=2, pipeline_parallel_size=1, quantization=None, enforce_eager=False, kv_cache_dtype=auto, \
compilation_config={"level":3,"cudagraph_capture_sizes":[512,504,8,4,2,1],"max_capture_size":512}, \
use_cached_outputs=True
\x1b[1;36m(VllmWorker rank=0 pid=2110)\x1b[0;0m INFO 05-12 10:12:40 [gpu_model_runner.py:1595] Model loading took \
30.7136 GiB and 84.101562 seconds
\x1b[1;36m(VllmWorker rank=1 pid=2111)\x1b[0;0m INFO 05-12 10:12:40 [gpu_model_runner.py:1595] Model loading took \
30.7136 GiB and 84.533881 seconds
\x1b[1;36m(VllmWorker rank=0 pid=2110)\x1b[0;0m INFO 05-12 10:13:01 [gpu_worker.py:227] Memory profiling takes \
20.48 seconds
\x1b[1;36m(VllmWorker rank=0 pid=2110)\x1b[0;0m INFO 05-12 10:13:01 [gpu_worker.py:227] the current vLLM instance can \
use total_gpu_memory (79.19GiB) x gpu_memory_utilization (0.92) = 72.85GiB
\x1b[1;36m(VllmWorker rank=0 pid=2110)\x1b[0;0m INFO 05-12 10:13:01 [gpu_worker.py:227] model weights take 30.71GiB; \
non_torch_memory takes 1.43GiB; PyTorch activation peak memory takes 4.91GiB; the rest of the memory reserved for KV \
Cache is 35.80GiB.
\x1b[1;36m(VllmWorker rank=1 pid=2111)\x1b[0;0m INFO 05-12 10:13:01 [gpu_worker.py:227] Memory profiling takes \
20.49 seconds
\x1b[1;36m(VllmWorker rank=1 pid=2111)\x1b[0;0m INFO 05-12 10:13:01 [gpu_worker.py:227] the current vLLM instance can \
use total_gpu_memory (79.19GiB) x gpu_memory_utilization (0.92) = 72.85GiB
\x1b[1;36m(VllmWorker rank=1 pid=2111)\x1b[0;0m INFO 05-12 10:13:01 [gpu_worker.py:227] model weights take 30.71GiB; \
non_torch_memory takes 1.25GiB; PyTorch activation peak memory takes 4.91GiB; the rest of the memory reserved for KV \
Cache is 35.98GiB.
INFO 05-12 10:13:02 [kv_cache_utils.py:715] GPU KV cache size: 293,280 tokens
INFO 05-12 10:13:02 [kv_cache_utils.py:719] Maximum concurrency for 32,768 tokens per request: 8.95x
\x1b[1;36m(VllmWorker rank=0 pid=2110)\x1b[0;0m INFO 05-12 10:13:30 [gpu_model_runner.py:2011] Graph capturing \
finished in 28 secs, took 1.02 GiB
\x1b[1;36m(VllmWorker rank=1 pid=2111)\x1b[0;0m INFO 05-12 10:13:30 [gpu_model_runner.py:2011] Graph capturing \
finished in 28 secs, took 1.02 GiB
"""


def test_vllm_v1_tp2_per_rank() -> None:
    log = parse_log(VLLM_V1_TP2)
    assert (log.engine, log.version, log.model) == ("vllm", "0.9.1", "Qwen/Qwen2.5-32B-Instruct")
    assert log.ranks == ("rank=0", "rank=1", "")
    # 30.7136 GiB (four decimals) wins over the report's 30.71 GiB.
    assert value(log, "weights", "rank=0") == units(307136, 4, GIB)
    assert log.best("weights", "rank=0").tolerance == half_digit(4, GIB)  # type: ignore[union-attr]
    assert value(log, "non_torch", "rank=0") == units(143, 2, GIB)
    assert value(log, "non_torch", "rank=1") == units(125, 2, GIB)  # NCCL / custom all-reduce differ per rank
    assert value(log, "activation_peak", "rank=1") == units(491, 2, GIB)
    assert value(log, "kv_cache", "rank=0") == units(3580, 2, GIB)
    assert value(log, "kv_cache", "rank=1") == units(3598, 2, GIB)
    assert value(log, "gpu_total", "rank=1") == units(7919, 2, GIB)
    assert value(log, "budget", "rank=0") == units(7285, 2, GIB)
    assert log.best("budget").tolerance == half_digit(2, GIB)  # type: ignore[union-attr]
    assert value(log, "cuda_graphs", "rank=1") == units(102, 2, GIB)
    assert value(log, "kv_tokens") == 293_280
    assert value(log, "max_concurrency") == 8.95
    assert log.best("max_concurrency").tolerance == 0.005  # type: ignore[union-attr]
    assert log.extras["max_concurrency_tokens"] == "32768"


def test_vllm_flags_as_logged() -> None:
    log = parse_log(VLLM_V1_TP2)
    assert log.flags["max_seq_len"] == "32768"
    assert log.flags["tensor_parallel_size"] == "2"
    assert log.flags["dtype"] == "torch.bfloat16"
    assert log.flags["quantization"] == "None"
    assert log.flags["enforce_eager"] == "False"
    assert log.flags["kv_cache_dtype"] == "auto"
    assert log.flags["compilation_config"].startswith('{"level":3,"cudagraph_capture_sizes":[512,504')
    assert log.flags["use_cached_outputs"] == "True"  # the dict's commas did not split the line
    assert log.flags["max_model_len"] == "32768"  # from the non-default args
    assert log.flags["gpu_memory_utilization"] == "0.92"


# V0 0.7.x: "Loading model weights took %.4f GB" divides by float(2**30) (vllm/worker/model_runner.py,
# GPUModelRunnerBase.load_model), "# %s blocks: %d, # CPU blocks: %d" (vllm/executor/executor_base.py,
# initialize_cache). Excerpt of https://github.com/vllm-project/vllm/issues/13061 (two RTX 4090, tp 2); the memory
# report's second and third lines are written here without the prefix, as a plain formatter prints them.
VLLM_V0_WORKERS = """\
(VllmWorkerProcess pid=1786) INFO 02-11 07:40:45 model_runner.py:1115] Loading model weights took 13.9476 GB
INFO 02-11 07:40:45 model_runner.py:1115] Loading model weights took 13.9476 GB
(VllmWorkerProcess pid=1786) INFO 02-11 07:40:48 worker.py:267] Memory profiling takes 2.61 seconds
the current vLLM instance can use total_gpu_memory (23.64GiB) x gpu_memory_utilization (0.98) = 23.17GiB
model weights take 13.95GiB; non_torch_memory takes 0.25GiB; PyTorch activation peak memory takes 0.19GiB; the rest \
of the memory reserved for KV Cache is 8.78GiB.
INFO 02-11 07:40:49 executor_base.py:110] # CUDA blocks: 5095, # CPU blocks: 2048
INFO 02-11 07:40:49 executor_base.py:115] Maximum concurrency for 131072 tokens per request: 0.62x
"""


def test_vllm_v0_gb_is_gib_and_continuation_lines_keep_the_rank() -> None:
    log = parse_log(VLLM_V0_WORKERS)
    worker = "VllmWorkerProcess pid=1786"
    weights = log.best("weights", worker)
    assert weights is not None and (weights.unit, weights.value) == ("GB", units(139476, 4, GIB))
    assert value(log, "weights", "") == units(139476, 4, GIB)
    assert value(log, "gpu_total", worker) == units(2364, 2, GIB)  # the line after the prefixed one: same rank
    assert value(log, "kv_cache", worker) == units(878, 2, GIB)
    assert value(log, "kv_blocks") == 5095
    assert value(log, "cpu_kv_blocks") == 2048
    assert value(log, "max_concurrency") == 0.62


# V0 0.6.2-0.6.4, vllm/worker/worker.py, determine_num_available_blocks: "Memory profiling results: total_gpu_memory=
# %.2fGiB initial_memory_usage=%.2fGiB peak_torch_memory=%.2fGiB memory_usage_post_profile=%.2fGib non_torch_memory=
# %.2fGiB kv_cache_size=%.2fGiB gpu_memory_utilization=%.2f"; "# GPU blocks: %d, # CPU blocks: %d"; V0's config line
# "Initializing an LLM engine (v%s) with config: model=%r, ..." (vllm/engine/llm_engine.py).
VLLM_V063 = """\
INFO 10-20 09:00:01 llm_engine.py:237] Initializing an LLM engine (v0.6.3) with config: \
model='meta-llama/Llama-3.1-8B', \
speculative_config=None, tokenizer='meta-llama/Llama-3.1-8B', dtype=torch.bfloat16, max_seq_len=8192, \
tensor_parallel_size=1, pipeline_parallel_size=1, quantization=None, enforce_eager=False, kv_cache_dtype=fp8
INFO 10-20 09:00:20 model_runner.py:1067] Loading model weights took 14.9888 GB
INFO 10-20 09:00:22 worker.py:262] Memory profiling results: total_gpu_memory=79.10GiB initial_memory_usage=15.47GiB \
peak_torch_memory=16.20GiB memory_usage_post_profile=15.55GiB non_torch_memory=0.53GiB kv_cache_size=54.46GiB \
gpu_memory_utilization=0.90
INFO 10-20 09:00:22 gpu_executor.py:122] # GPU blocks: 55767, # CPU blocks: 4096
INFO 10-20 09:00:22 gpu_executor.py:126] Maximum concurrency for 8192 tokens per request: 108.92x
INFO 10-20 09:00:40 model_runner.py:1523] Graph capturing finished in 18 secs, took 0.47 GiB
"""


def test_vllm_063_profiling_results() -> None:
    log = parse_log(VLLM_V063)
    assert (log.version, log.model, log.flags["kv_cache_dtype"]) == ("0.6.3", "meta-llama/Llama-3.1-8B", "fp8")
    assert value(log, "gpu_total") == units(7910, 2, GIB)
    assert value(log, "torch_peak") == units(1620, 2, GIB)
    assert value(log, "post_profile_usage") == units(1555, 2, GIB)  # printed "Gib": still GiB
    assert value(log, "non_torch") == units(53, 2, GIB)
    assert value(log, "kv_cache") == units(5446, 2, GIB)
    assert value(log, "kv_blocks") == 55_767
    assert value(log, "cuda_graphs") == units(47, 2, GIB)


# Later V1 (0.10 on): "Available KV cache memory: %.2f GiB" (vllm/v1/worker/gpu_worker.py, determine_available_memory),
# the merged "GPU KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx"
# (vllm/v1/core/kv_cache_utils.py), "Model loading took %.4f GiB memory and %.6f seconds", worker tags "(Worker_TP1
# pid=..)", and the usage report of compile_or_warm_up_model, values printed by round(x, 2) ("14.0").
VLLM_V1_LATE = """\
(EngineCore_DP0 pid=301) INFO 11-02 08:00:01 [core.py:93] Initializing a V1 LLM engine (v0.11.0) with config: \
model='openai/gpt-oss-120b', dtype=torch.bfloat16, max_seq_len=131072, tensor_parallel_size=2, quantization=mxfp4
(Worker_TP0 pid=410) INFO 11-02 08:01:10 [gpu_model_runner.py:2653] Model loading took 32.8876 GiB memory and 40.1 \
seconds
(Worker_TP1 pid=411) INFO 11-02 08:01:10 [gpu_model_runner.py:2653] Model loading took 32.8876 GiB memory and 40.3 \
seconds
(Worker_TP0 pid=410) INFO 11-02 08:01:31 [gpu_worker.py:298] Available KV cache memory: 33.61 GiB
(Worker_TP1 pid=411) INFO 11-02 08:01:31 [gpu_worker.py:298] Available KV cache memory: 33.61 GiB
(EngineCore_DP0 pid=301) INFO 11-02 08:01:32 [kv_cache_utils.py:1087] GPU KV cache size: 979,008 tokens, Maximum \
concurrency for 131,072 tokens per request: 14.87x
(Worker_TP0 pid=410) DEBUG 11-02 08:01:50 [gpu_worker.py:420] Free memory on device (78.52/79.19 GiB) on startup. \
Desired GPU memory utilization is (0.9, 71.27 GiB). Actual usage is 32.89 GiB for weight, 3.2 GiB for peak activation, \
1.57 GiB for non-torch memory, and 0.6 GiB for CUDAGraph memory.
"""


def test_vllm_v1_late_wording() -> None:
    log = parse_log(VLLM_V1_LATE)
    assert (log.version, log.model, log.flags["quantization"]) == ("0.11.0", "openai/gpt-oss-120b", "mxfp4")
    assert log.ranks == ("TP0", "TP1", "")
    assert value(log, "weights", "TP1") == units(328876, 4, GIB)
    assert value(log, "kv_cache", "TP1") == units(3361, 2, GIB)
    assert value(log, "kv_tokens") == 979_008
    assert value(log, "max_concurrency") == 14.87
    peak = log.best("activation_peak", "TP0")
    assert peak is not None and peak.value == units(320, 2, GIB) and peak.tolerance == half_digit(2, GIB)
    assert value(log, "cuda_graphs", "TP0") == units(60, 2, GIB)
    assert value(log, "gpu_total", "TP0") == units(7919, 2, GIB)
    assert value(log, "gpu_free", "TP0") == units(7852, 2, GIB)


def test_vllm_newest_reports_rounded_to_two_places() -> None:
    # vllm/utils/mem_utils.py MemoryProfilingResult.__repr__ and format_gib = round(b / GiB, 2) (a6d5c39); the
    # usage line's "consumed memory" wording and the graph pool line of later gpu_worker.py / gpu_model_runner.py.
    text = (
        "(Worker_TP0 pid=7) DEBUG 01-05 10:00:00 [gpu_worker.py:290] Memory profiling takes 9.31 seconds. Total non KV "
        "cache memory: 18.5GiB; torch peak memory increase: 2.76GiB; non-torch forward increase memory: 0.24GiB; "
        "weights memory: 15.5GiB.\n"
        "(Worker_TP0 pid=7) INFO 01-05 10:00:40 [gpu_model_runner.py:4000] CUDA graph pool memory: 0.19 GiB (actual), "
        "0.64 GiB (estimated), difference: 0.45 GiB (244.2%).\n"
        "(Worker_TP0 pid=7) INFO 01-05 10:00:40 [gpu_worker.py:440] Free memory on device (93.83/95.01 GiB) on "
        "startup. Desired GPU memory utilization is (0.9, 85.51 GiB). Actual usage is 16.24 GiB for consumed memory "
        "(weights + non-torch), 2.76 GiB for peak activation, and 0.19 GiB for CUDAGraph memory. Current kv cache "
        "memory in use is 66.26 GiB.\n"
    )
    log = parse_log(text)
    weights = log.best("weights", "TP0")
    assert weights is not None and weights.value == units(1550, 2, GIB) and weights.tolerance == half_digit(2, GIB)
    assert value(log, "non_kv", "TP0") == units(1850, 2, GIB)
    assert [f.value for f in log.named("activation_peak")] == [units(276, 2, GIB)] * 2
    assert value(log, "non_torch", "TP0") == units(24, 2, GIB)
    assert value(log, "consumed", "TP0") == units(1624, 2, GIB)
    assert [f.value for f in log.named("cuda_graphs")] == [units(19, 2, GIB)] * 2
    assert value(log, "cuda_graphs_estimated", "TP0") == units(64, 2, GIB)
    assert value(log, "kv_cache", "TP0") == units(6626, 2, GIB)
    assert value(log, "gpu_total", "TP0") == units(9501, 2, GIB)
    assert value(log, "budget", "TP0") == units(8551, 2, GIB) and log.flags["gpu_memory_utilization"] == "0.9"


def test_vllm_data_parallel_engines_keep_their_figures_apart() -> None:
    # With --data-parallel-size 2 and tp 1 each engine core runs its own worker (vllm/v1/engine/core.py).
    text = (
        "(EngineCore_DP0 pid=10) INFO 01-05 10:00:00 [gpu_worker.py:298] Available KV cache memory: 60.10 GiB\n"
        "(EngineCore_DP1 pid=11) INFO 01-05 10:00:00 [gpu_worker.py:298] Available KV cache memory: 59.90 GiB\n"
    )
    log = parse_log(text)
    assert log.ranks == ("", "DP1")
    assert value(log, "kv_cache", "DP1") == units(5990, 2, GIB)


def test_vllm_v0_5_config_excerpt() -> None:
    # https://github.com/vllm-project/vllm/issues/10517 (the V0 0.5.4 config line), with a weights line to finish it.
    text = (
        "INFO 11-21 01:02:03 llm_engine.py:174] Initializing an LLM engine (v0.5.4) with config: "
        "model='/mnt/models/models--meta-llama--llama-3-1-70b-instruct', speculative_config=None, "
        "tokenizer='/mnt/models/models--meta-llama--llama-3-1-70b-instruct', skip_tokenizer_init=False, "
        "tokenizer_mode=auto, revision=None, rope_scaling=None, rope_theta=None, tokenizer_revision=None, "
        "trust_remote_code=False, dtype=torch.float16, max_seq_len=131072, download_dir=None, "
        "load_format=LoadFormat.AUTO, tensor_parallel_size=2\n"
        "INFO 11-21 01:05:00 model_runner.py:732] Loading model weights took 65.7409 GB\n"
    )
    log = parse_log(text)
    assert (log.version, log.flags["tensor_parallel_size"], log.flags["dtype"]) == ("0.5.4", "2", "torch.float16")
    assert log.model == "/mnt/models/models--meta-llama--llama-3-1-70b-instruct"
    assert value(log, "weights") == units(657409, 4, GIB)


def test_vllm_table_report_of_pr_10511_and_the_command_line() -> None:
    # https://github.com/vllm-project/vllm/pull/10511 (comment of 2024-12-14): the table form of "Memory profiling
    # results:" that lived on that branch, tab-separated, under the command that started it.
    text = (
        "$ vllm serve meta-llama/Meta-Llama-3-8B -tp 2\n"
        "INFO 12-13 19:55:25 worker.py:243] Memory profiling results:\n"
        "INFO 12-13 19:55:25 worker.py:243] duration     3.49 seconds\n"
        "INFO 12-13 19:55:25 worker.py:243] total_gpu_memory     79.22GiB\n"
        "INFO 12-13 19:55:25 worker.py:243] gpu_memory_utilization       0.90\n"
        "INFO 12-13 19:55:25 worker.py:243] the current vLLM instance can use    71.29GiB\n"
        "INFO 12-13 19:55:25 worker.py:243] model weights take   7.48GiB\n"
        "INFO 12-13 19:55:25 worker.py:243] non_torch_memory     3.58GiB\n"
        "INFO 12-13 19:55:25 worker.py:243] PyTorch activation peak memory       1.26GiB\n"
        "INFO 12-13 19:55:25 worker.py:243] available_kv_cache_memory    58.97GiB\n"
    )
    log = parse_log(text)
    assert log.model == "meta-llama/Meta-Llama-3-8B" and log.flags["-tp"] == "2"
    assert log.flags["gpu_memory_utilization"] == "0.90"
    assert value(log, "gpu_total") == units(7922, 2, GIB)
    assert value(log, "budget") == units(7129, 2, GIB)
    assert value(log, "weights") == units(748, 2, GIB)
    assert value(log, "non_torch") == units(358, 2, GIB)
    assert value(log, "activation_peak") == units(126, 2, GIB)
    assert value(log, "kv_cache") == units(5897, 2, GIB)


def test_vllm_refusals_when_max_model_len_does_not_fit() -> None:
    # V0 (vllm/worker/worker.py, raise_if_cache_size_invalid), excerpt of
    # https://github.com/vllm-project/vllm/issues/6156 with its command line.
    v0 = parse_log(
        "python3 -m vllm.entrypoints.openai.api_server --dtype float16 --trust-remote-code --model "
        "DeepSeek-Coder-V2-Lite-Instruct --port 9000 --host 0.0.0.0    --tensor-parallel-size 2\n"
        "[rank0]: ValueError: The model's max seq len (163840) is larger than the maximum number of tokens that can "
        "be stored in KV cache (63040). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
        "initializing the engine.\n"
    )
    assert (v0.model, v0.flags["--tensor-parallel-size"], v0.flags["--trust-remote-code"]) == (
        "DeepSeek-Coder-V2-Lite-Instruct", "2", "true")
    assert v0.flags["max_seq_len"] == "163840" and value(v0, "kv_tokens") == 63_040
    # V1 (vllm/v1/core/kv_cache_utils.py, check_enough_kv_cache_memory), wrapped over lines as quoted in
    # https://github.com/SemiAnalysisAI/InferenceX/issues/1587; round(x, 2) printed "0.9".
    v1 = parse_log(
        "ValueError: To serve at least one request with the model's max seq len (262144),\n"
        "(8.58 GiB KV cache is needed, which is larger than the available KV cache memory\n"
        "(0.9 GiB). Based on the available memory, the estimated maximum model length is 27392.\n"
    )
    kv = v1.best("kv_cache")
    assert kv is not None and kv.value == units(90, 2, GIB) and kv.tolerance == half_digit(2, GIB) and kv.line == 2
    assert value(v1, "kv_needed") == units(858, 2, GIB)
    assert value(v1, "max_model_len_fits") == 27_392 and v1.flags["max_seq_len"] == "262144"


# --- SGLang ---------------------------------------------------------------------------------------------------------

# python/sglang/srt/model_executor/model_runner.py (load_model, init_memory_pool, init_device_graphs),
# mem_cache/memory_pool.py (MHATokenToKVPool), managers/scheduler.py (Scheduler.__init__), server_args.py. The
# "[... TP1]" lines around the pool are from https://github.com/sgl-project/sglang/pull/15909, the distributed
# init ones from https://github.com/sgl-project/sglang/pull/11716.
SGLANG_TP2 = """\
[2025-12-28 10:39:01] server_args=ServerArgs(model_path='Qwen/Qwen3-Omni-30B-A3B-Instruct', tokenizer_path=\
'Qwen/Qwen3-Omni-30B-A3B-Instruct', mem_fraction_static=0.871, tp_size=2, kv_cache_dtype='auto', chunked_prefill_size=\
8192, cuda_graph_max_bs=512, disable_cuda_graph=False)
[2025-12-28 10:39:19 TP0] Init torch distributed ends. mem usage=1.96 GB
[2025-12-28 10:39:19 TP1] Init torch distributed ends. mem usage=2.01 GB
[2025-12-28 10:39:20 TP0] Load weight begin. avail mem=78.68 GB
[2025-12-28 10:39:20 TP1] Load weight begin. avail mem=78.68 GB
[2025-12-28 10:40:05 TP0] Load weight end. type=Qwen3OmniMoeForConditionalGeneration, dtype=torch.bfloat16, avail \
mem=60.39 GB, mem usage=18.29 GB.
[2025-12-28 10:40:05 TP1] Load weight end. type=Qwen3OmniMoeForConditionalGeneration, dtype=torch.bfloat16, avail \
mem=60.37 GB, mem usage=18.31 GB.
[2025-12-28 10:40:09 TP1] KV Cache is allocated. #tokens: 2090351, K size: 23.92 GB, V size: 23.92 GB
[2025-12-28 10:40:09 TP0] KV Cache is allocated. #tokens: 2090351, K size: 23.92 GB, V size: 23.92 GB
[2025-12-28 10:40:09 TP1] Memory pool end. avail mem=12.45 GB
[2025-12-28 10:40:09 TP0] Memory pool end. avail mem=12.68 GB
[2025-12-28 10:40:09 TP1] Capture cuda graph begin. This can take up to several minutes. avail mem=11.87 GB
[2025-12-28 10:40:31 TP1] Capture cuda graph end. Time elapsed: 21.87 s. mem usage=1.12 GB. avail mem=10.75 GB.
[2025-12-28 10:40:33 TP0] max_total_num_tokens=2090351, chunked_prefill_size=8192, max_prefill_tokens=16384, \
max_running_requests=4096, context_len=65536, available_gpu_mem=10.98 GB
"""


def test_sglang_per_rank_and_binary_gb() -> None:
    log = parse_log(SGLANG_TP2)
    assert (log.engine, log.version, log.model) == ("sglang", None, "Qwen/Qwen3-Omni-30B-A3B-Instruct")
    assert log.flags["mem_fraction_static"] == "0.871" and log.flags["tp_size"] == "2"
    assert log.flags["context_len"] == "65536" and log.flags["max_running_requests"] == "4096"
    assert log.ranks == ("TP0", "TP1")
    # SGLang's GB is 2^30 (get_available_gpu_memory divides by 1 << 30): 18.29 GB = 1829 * 2^30 / 100 bytes.
    assert value(log, "weights", "TP0") == units(1829, 2, GIB)
    assert value(log, "weights", "TP1") == units(1831, 2, GIB)
    assert value(log, "avail_before_load", "TP1") == units(7868, 2, GIB)
    assert value(log, "distributed_init", "TP1") == units(201, 2, GIB)  # as https://github.com/sgl-project/sglang/pull/11716
    assert value(log, "kv_tokens", "TP0") == 2_090_351
    kv = log.best("kv_cache", "TP1")
    # K + V = 23.92 + 23.92 GB; each rounded to 0.005 GB, so the sum is known to 0.01 GB.
    assert kv is not None and kv.value == 2 * units(2392, 2, GIB) and kv.tolerance == 2 * half_digit(2, GIB)
    assert value(log, "avail_after_pool", "TP0") == units(1268, 2, GIB)
    assert value(log, "cuda_graphs", "TP1") == units(112, 2, GIB)
    assert value(log, "avail_after_graphs", "TP1") == units(1075, 2, GIB)
    assert value(log, "avail_after_startup", "TP0") == units(1098, 2, GIB)
    assert log.extras["model_class"] == "Qwen3OmniMoeForConditionalGeneration"


def test_sglang_mla_pool_and_old_graph_line() -> None:
    # MLATokenToKVPool prints "KV size: %.2f GB" (memory_pool.py); before 0.4 the graph end line had no memory.
    text = (
        "[2025-03-01 12:00:00 TP0] Load weight end. type=DeepseekV3ForCausalLM, dtype=torch.bfloat16, "
        "avail mem=10.20 GB\n"
        "[2025-03-01 12:00:05 TP0] KV Cache is allocated. #tokens: 98765, KV size: 6.46 GB\n"
        "[2025-03-01 12:00:30 TP0] Capture cuda graph end. Time elapsed: 25.02 s\n"
    )
    log = parse_log(text)
    assert value(log, "kv_cache", "TP0") == units(646, 2, GIB)
    assert value(log, "avail_after_load", "TP0") == units(1020, 2, GIB)
    assert log.named("weights") == () and log.named("cuda_graphs") == ()


# --- llama.cpp ------------------------------------------------------------------------------------------------------

# Current wording: "%s: using device %s (%s) (%s) - %zu MiB free" (src/llama.cpp, llama_model_load_from_file_impl),
# "%s: %12s model buffer size = %8.2f MiB" and "offloaded %d/%d layers to GPU" (src/llama-model.cpp, load_tensors),
# "%s: %10s KV buffer size = %8.2f MiB" and "%s: size = %7.2f MiB (%6u cells, %3d layers, %2u/%u seqs), K (%s): %7.2f
# MiB, V (%s): %7.2f MiB" (src/llama-kv-cache.cpp), "%s: n_ctx = %u", "%s: %10s compute buffer size = %8.2f MiB"
# (src/llama-context.cpp), "build: %d (%s) with %s for %s" (common/common.cpp), "found %d CUDA devices:" and "Device
# %d: %s, compute capability %d.%d, VMM: %s" (ggml/src/ggml-cuda/ggml-cuda.cpp, ggml_cuda_init). The coloured
# "0.00.000.000 I " prefix is llama.cpp's own (as in https://github.com/ggml-org/llama.cpp/issues/27680).
LLAMACPP_NEW = """\
build: 6527 (7f766929) with cc (Ubuntu 13.3.0-6ubuntu2~24.04) 13.3.0 for x86_64-linux-gnu
ggml_cuda_init: found 1 CUDA devices:
  Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, VMM: yes
llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H100 80GB HBM3) (0000:19:00.0) - 80614 MiB free
llama_model_loader: loaded meta data with 29 key-value pairs and 291 tensors from \
/models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf (version GGUF V3 (latest))
print_info: file type   = Q4_K - Medium
print_info: file size   = 4.58 GiB (4.89 BPW)
print_info: n_layer          = 32
print_info: n_head_kv        = 8
load_tensors: offloaded 33/33 layers to GPU
load_tensors:        CUDA0 model buffer size =  4403.49 MiB
load_tensors:   CPU_Mapped model buffer size =   281.81 MiB
\x1b[34m0.01.057.524\x1b[0m \x1b[32mI \x1b[0mllama_context: n_ctx         = 8192
\x1b[34m0.01.057.524\x1b[0m \x1b[32mI \x1b[0mllama_context: n_ubatch      = 512
llama_context: flash_attn    = auto
llama_kv_cache:      CUDA0 KV buffer size =  1024.00 MiB
llama_kv_cache: size = 1024.00 MiB (  8192 cells,  32 layers,  1/1 seqs), K (f16):  512.00 MiB, V (f16):  512.00 MiB
llama_context:      CUDA0 compute buffer size =   560.00 MiB
llama_context:  CUDA_Host compute buffer size =    24.01 MiB
"""


def test_llamacpp_current_wording() -> None:
    log = parse_log(LLAMACPP_NEW)
    assert (log.engine, log.version) == ("llama.cpp", "6527 (7f766929)")
    assert log.model == "/models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    assert log.flags["n_ctx"] == "8192" and log.flags["n_ubatch"] == "512" and log.flags["flash_attn"] == "auto"
    assert log.extras["cuda.0"] == "NVIDIA H100 80GB HBM3" and log.extras["cuda.0.compute_capability"] == "9.0"
    assert log.extras["device.CUDA0"] == "NVIDIA H100 80GB HBM3"
    assert log.extras["n_layer"] == "32" and log.extras["file type"] == "Q4_K - Medium"
    assert log.extras["type_k"] == "f16" and log.extras["kv_cells"] == "8192"
    free = log.best("gpu_free", "CUDA0")
    # "%zu MiB free" is free / 1024 / 1024 in integers: truncated, so up to one MiB more was free.
    assert free is not None and free.value == 80614 * MIB and free.tolerance == MIB
    assert value(log, "weights", "CUDA0") == units(440349, 2, MIB)
    assert value(log, "weights", "CPU_Mapped") == units(28181, 2, MIB)
    assert value(log, "kv_cache", "CUDA0") == 1024 * MIB
    assert value(log, "kv_cache_k") == 512 * MIB
    assert value(log, "compute_buffer", "CUDA0") == 560 * MIB
    assert value(log, "compute_buffer", "CUDA_Host") == units(2401, 2, MIB)
    assert value(log, "file_size") == units(458, 2, GIB)
    assert value(log, "offloaded_layers") == 33 and log.extras["n_layer_offloadable"] == "33"


def test_llamacpp_old_wording_two_gpus() -> None:
    # Excerpt of https://github.com/ggml-org/llama.cpp/pull/6122 (2024): llm_load_tensors' "%10s buffer size" and
    # llama_new_context_with_model's "KV self size".
    text = """\
  Device 0: NVIDIA GeForce RTX 4070 Ti, compute capability 8.9, VMM: yes
  Device 1: NVIDIA GeForce RTX 3090 Ti, compute capability 8.6, VMM: yes
llm_load_tensors: offloaded 41/41 layers to GPU
llm_load_tensors:        CPU buffer size =  1640.62 MiB
llm_load_tensors:      CUDA0 buffer size =  5434.38 MiB
llm_load_tensors:      CUDA1 buffer size = 13989.53 MiB
llama_new_context_with_model: n_ctx      = 4096
llama_new_context_with_model: n_batch    = 2048
llama_kv_cache_init:      CUDA0 KV buffer size =  1536.00 MiB
llama_kv_cache_init:      CUDA1 KV buffer size =  3584.00 MiB
llama_new_context_with_model: KV self size  = 5120.00 MiB, K (f16): 2560.00 MiB, V (f16): 2560.00 MiB
llama_new_context_with_model:  CUDA_Host  output buffer size =     1.95 MiB
llama_new_context_with_model:      CUDA0 compute buffer size =   672.01 MiB
"""
    log = parse_log(text)
    assert log.ranks == ("", "CPU", "CUDA0", "CUDA1", "CUDA_Host")
    assert value(log, "weights", "CUDA1") == units(1398953, 2, MIB)
    assert value(log, "weights", "CPU") == units(164062, 2, MIB)
    assert value(log, "kv_cache", "CUDA0") + value(log, "kv_cache", "CUDA1") == value(log, "kv_cache_total")
    assert value(log, "kv_cache_total") == 5120 * MIB
    assert value(log, "output_buffer", "CUDA_Host") == units(195, 2, MIB)
    assert value(log, "compute_buffer", "CUDA0") == units(67201, 2, MIB)
    assert log.flags["n_batch"] == "2048" and log.extras["cuda.1"] == "NVIDIA GeForce RTX 3090 Ti"


def test_llamacpp_2023_mb_is_mib_and_failed_allocations() -> None:
    # https://huggingface.co/TheBloke/CausalLM-14B-GGUF/discussions/3: mid-2023 "MB" = bytes / 1024.0 / 1024.0
    # (llama.cpp, llama_new_context_with_model: "kv self size  = %7.2f MB").
    old = parse_log(
        "llama_new_context_with_model: n_ctx      = 4096\n"
        "llama_kv_cache_init: VRAM kv self = 3200.00 MB\n"
        "llama_new_context_with_model: kv self size  = 3200.00 MB\n"
        "llama_new_context_with_model: compute buffer total size = 364.13 MB\n"
        "llama_new_context_with_model: total VRAM used: 17125.05 MB (model: 13567.05 MB, context: 3558.00 MB)\n"
    )
    assert value(old, "kv_cache") == 3200 * MIB and value(old, "kv_cache_total") == 3200 * MIB
    assert value(old, "compute_buffer") == units(36413, 2, MIB)
    assert value(old, "weights") == units(1356705, 2, MIB) and value(old, "context") == 3558 * MIB
    assert value(old, "vram_total") == units(1712505, 2, MIB) and old.flags["n_ctx"] == "4096"
    # https://huggingface.co/MaziyarPanahi/Mixtral-8x22B-Instruct-v0.1-GGUF/discussions/32: the compute buffer that
    # did not fit, in exact bytes (ggml/src/ggml-alloc.c, ggml_gallocr_reserve_n: "failed to allocate %s buffer of
    # size %zu").
    failed = parse_log(
        "llama_kv_cache_init: CUDA0 KV buffer size = 1875.00 MiB\n"
        "ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size 3529547776\n"
    )
    # the graph allocator's failure is that device's compute buffer (llama_context reserves its compute buffers
    # through ggml_backend_sched_reserve -> ggml_gallocr_reserve_n); alloc_tensor_range's same words (a model or
    # KV buffer) stay a failed_allocation
    figure = failed.best("compute_buffer", "CUDA0")
    assert figure is not None and (figure.value, figure.tolerance, figure.unit) == (3_529_547_776, 0, "B")
    tensors = parse_log("llama_kv_cache_init: CUDA0 KV buffer size = 1875.00 MiB\n"
                        "alloc_tensor_range: failed to allocate CUDA0 buffer of size 1048576\n")
    assert tensors.best("failed_allocation", "CUDA0") is not None and tensors.best("compute_buffer") is None


def test_llamacpp_command_line() -> None:
    log = parse_log(
        "$ ./llama-server -m /models/q.gguf -ngl 99 -c 8192 --flash-attn -ctk q8_0\n"
        "llama_kv_cache:      CUDA0 KV buffer size =   576.00 MiB\n"
    )
    assert log.model == "/models/q.gguf" and log.flags["-ngl"] == "99" and log.flags["-c"] == "8192"
    assert log.flags["--flash-attn"] == "true" and log.flags["-ctk"] == "q8_0"


# --- refusals and bounds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "hello world\nthis is not a log\n", "Traceback (most recent call last):\n  File x\n", "\x1b[31m" * 50],
)
def test_unknown_text_is_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_log(text)
    message = str(err.value)
    assert "\n" not in message and err.value.field == "log"
    assert message.startswith("log: not a startup log of vLLM, SGLang or llama.cpp")
    for expected in ("Model loading took", "KV Cache is allocated", "model buffer size"):
        assert expected in message


def test_engine_log_without_figures_is_refused() -> None:
    text = "INFO 05-12 10:11:02 [api_server.py:1043] vLLM API server version 0.9.1\n"
    with pytest.raises(ConfigError, match=r"^log: a vllm log without any memory figure or KV capacity .*Model loading"):
        parse_log(text)


def test_too_large_is_refused_before_reading() -> None:
    with pytest.raises(ConfigError, match=r"^log: 33,554,433 characters; a startup log is at most a few MB"):
        parse_log("x" * (MAX_LOG_CHARS + 1))


def test_logfmt_lines_and_the_sglang_command() -> None:
    # vLLM under a JSON/logfmt logger (https://github.com/alvarobartt/hf-mem/pull/61): the message sits in msg="...".
    vllm = parse_log(
        '(EngineCore pid=118) level=INFO name=vllm.v1.worker.gpu_worker msg="Available KV cache memory: 24.54 GiB"\n'
        '(EngineCore pid=118) level=INFO name=vllm.v1.core.kv_cache_utils msg="GPU KV cache size: 26,800 tokens"\n'
    )
    assert value(vllm, "kv_cache", "") == units(2454, 2, GIB) and value(vllm, "kv_tokens") == 26_800
    # https://github.com/vllm-project/vllm/issues/21348: SGLang's command and pool line, no rank prefix.
    sglang = parse_log(
        "python3 -m sglang.launch_server --model /path/to/Qwen3-235B-A22B-FP8 --tp 4 --trust-remote-code --host "
        "0.0.0.0 --port 8000 --mem-fraction-static 0.93\n"
        "KV Cache is allocated. #tokens: 367404, K size: 8.23 GB, V size: 8.23 GB\n"
    )
    assert (sglang.engine, sglang.model, sglang.flags["--tp"]) == ("sglang", "/path/to/Qwen3-235B-A22B-FP8", "4")
    assert sglang.flags["--mem-fraction-static"] == "0.93" and "-m" not in sglang.flags
    assert value(sglang, "kv_tokens") == 367_404 and value(sglang, "kv_cache") == 2 * units(823, 2, GIB)


def test_split_pairs_keeps_nested_values() -> None:
    pairs = split_pairs("a='x, y', b={\"c\": [1, 2], \"d\": (3, 4)}, e=None, f=\"q\"")
    assert pairs == {"a": "x, y", "b": '{"c": [1, 2], "d": (3, 4)}', "e": "None", "f": "q"}


@pytest.mark.parametrize("engine_line", [
    "INFO 01-01 00:00:00 [x.py:1] Model loading took 1.0000 GiB and 1 seconds",
    "[2025-01-01 00:00:00 TP0] Memory pool end. avail mem=1.00 GB",
    "llama_kv_cache:      CUDA0 KV buffer size =     1.00 MiB",
])
def test_hostile_lines_stay_linear(engine_line: str) -> None:
    # Lines built to make a backtracking pattern quadratic (long runs of digits, words, brackets, repeated prefixes):
    # every pattern bounds its repeats, so each of these parses in milliseconds instead of minutes.
    n = 20_000
    hostile = ["1" * n + " GiB", "a" * n, "x" * n + " KV buffer size", "print_info:" * (n // 11), "a=" * (n // 2),
               "max_total_num_tokens=1, " + "a" * n, "Memory profiling results: " + "a" * n, "(" * n,
               "1 GiB for peak activation " * (n // 26)]
    log = parse_log("\n".join([engine_line, *hostile]))
    assert len(log.figures) >= 1


def test_load_log_reads_text_files_only(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    log.write_bytes(b"INFO 01-01 00:00:00 [x.py:1] Model loading took 1.5000 GiB and 2.0 seconds \xff\n")
    assert value(load_log(log), "weights") == units(15000, 4, GIB)  # the stray byte is replaced, not fatal
    cases = {
        tmp_path / "missing.log": "cannot read it",
        tmp_path: "not a regular file",
    }
    binary = tmp_path / "model.gguf"
    binary.write_bytes(b"GGUF\x03\x00\x00\x00")
    cases[binary] = "a binary file (a NUL byte at offset 5"
    big = tmp_path / "big.log"
    with big.open("wb") as f:
        f.truncate(MAX_LOG_BYTES + 1)  # sparse: no disk used
    cases[big] = "33,554,433 bytes; a startup log is at most a few MB"
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        cases[fifo] = "not a regular file"
    for path, expected in cases.items():
        with pytest.raises(ConfigError) as err:
            load_log(path)
        assert expected in str(err.value) and err.value.field == "log" and "\n" not in str(err.value)


_FRAGMENTS = [
    "Model loading took ", "GiB", " GB", " MiB", " MB", "1.5", "12,345", "(", ")", "[", "]", "{", "}", "'", '"', "=",
    ", ", "\n", "\x1b[1;36m", "(VllmWorker rank=1 pid=3) ", "[2025-01-01 00:00:00 TP1] ", "KV Cache is allocated. ",
    "#tokens: ", "K size: ", "V size: ", "llama_kv_cache: ", "CUDA0", " KV buffer size = ", "size = ", " cells, ",
    "print_info: ", "non-default args: ", "Initializing an LLM engine (v0.6.3) with config: ", "model=",
    "$ vllm serve ",
    "--tp", " -ngl ", "GPU KV cache size: ", " tokens", "Maximum concurrency for ", "x", "total_gpu_memory (",
    "Memory profiling results: ", "kv_cache_size=", "max_total_num_tokens=", "server_args=ServerArgs(", "-",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=6)), max_size=40))
def test_any_text_parses_or_is_refused_in_one_line(parts: list[str]) -> None:
    # Whatever the text, the parser returns figures or raises its one ConfigError: never another exception.
    try:
        log = parse_log("".join(parts))
    except ConfigError as err:
        assert "\n" not in str(err) and err.field == "log"
    else:
        assert log.figures and all(isinstance(f.value, int | float) and f.name in FIGURE_NAMES for f in log.figures)

"""SGLang startup logs: server args, the free memory it reads at each step, the weights, KV pool and CUDA graphs.

Format strings read in sgl-project/sglang (python/sglang/srt/, the model runner at 01cc04e, the memory pool at
14c3fee; the wording is quoted in tests/engines/test_logs.py):

- model_executor/model_runner.py, ModelRunner.init_torch_distributed: "Init torch distributed ends. mem usage=%.2f
  GB" (the CUDA context, NCCL and custom all-reduce buffers); ModelRunner.load_model: "Load weight begin. avail
  mem=%.2f GB", then "Load weight end. type=T, dtype=D, avail mem=%.2f GB, mem usage=%.2f GB." (the mem usage
  part is absent in some releases).
- mem_cache/memory_pool.py, MHATokenToKVPool: "KV Cache is allocated. #tokens: N, K size: %.2f GB, V size: %.2f GB";
  the MLA pool prints "KV size: %.2f GB" instead.
- model_executor/model_runner.py, init_memory_pool: "Memory pool end. avail mem=%.2f GB"; init_device_graphs:
  "Capture cuda graph begin. This can take up to several minutes. avail mem=%.2f GB" and "Capture cuda graph end.
  Time elapsed: %.2f s. mem usage=%.2f GB. avail mem=%.2f GB." (older: no memory figures).
- managers/scheduler.py, Scheduler.__init__: "max_total_num_tokens=N, chunked_prefill_size=C, max_prefill_tokens=P,
  max_running_requests=R, context_len=L" (later ", available_gpu_mem=%.2f GB"); server_args.py: "server_args=
  ServerArgs(...)".

Every "GB" is 2^30 bytes: get_available_gpu_memory returns free / (1 << 30) (python/sglang/srt/utils.py) and the
pool divides by GB = 1024 * 1024 * 1024. The prefix "[2025-01-10 12:00:00 TP1] " names the rank.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from vramwise.engines.logs.lines import Line
from vramwise.engines.logs.pairs import command_flags, split_pairs
from vramwise.engines.logs.parsed import Figure, ParsedLog, count, memory

ENGINE = "sglang"
EXPECTED = '"Load weight end. ... avail mem=X GB" or "KV Cache is allocated. #tokens: N" (SGLang)'
MARKERS = re.compile(
    r"Init torch distributed ends\.|Load weight (?:begin|end)\.|KV Cache is allocated\.|Memory pool end\."
    r"|Capture cuda graph (?:begin|end)\.|max_total_num_tokens=|server_args[=:] ?ServerArgs\(|-m sglang\.launch_server"
)

_N = r"(\d{1,15}(?:\.\d{1,12})?)"  # bounded: a run of digits costs O(1) per start, never O(n)
_DIST_END = re.compile(rf"Init torch distributed ends\. mem usage={_N} GB")
_LOAD_BEGIN = re.compile(rf"Load weight begin\. avail mem={_N} GB")
_LOAD_END = re.compile(
    rf"Load weight end\. type=(\w{{1,128}}), dtype=([\w.]{{1,64}}), avail mem={_N} GB(?:, mem usage={_N} GB)?"
)
_KV_SPLIT = re.compile(rf"KV Cache is allocated\. #tokens: (\d+), K size: {_N} GB, V size: {_N} GB")
_KV_JOINT = re.compile(rf"KV Cache is allocated\. #tokens: (\d+), KV size: {_N} GB")
_POOL_END = re.compile(rf"Memory pool end\. avail mem={_N} GB")
_GRAPH_BEGIN = re.compile(rf"Capture cuda graph begin\..*?avail mem={_N} GB")
_GRAPH_END = re.compile(
    rf"Capture cuda graph end\. Time elapsed: [\d.]+ s\.?(?: mem usage={_N} GB\.)?(?: avail mem={_N} GB)?"
)
_SCHEDULER = re.compile(r"max_total_num_tokens=(\d+)(.*)$")
_SCHEDULER_FIELD = re.compile(r"(\w{1,64})=([^,\s]+)")
_AVAILABLE_AFTER = re.compile(rf"available_gpu_mem={_N} GB")
_COMMAND = re.compile(r"(?:^|\$ ?)(python3? -m sglang\.launch_server(?: .*)?)$")
_SERVER_ARGS = re.compile(r"server_args[=:] ?ServerArgs\((.*)\)\s*$")


def _kv(text: str, r: str, n: int) -> list[Figure]:
    if m := _KV_SPLIT.search(text):
        k, v = memory("kv_cache_k", m.group(2), "GB", rank=r, line=n), memory("kv_cache_v", m.group(3), "GB",
                                                                                rank=r, line=n)
        # K + V is the pool's bytes (memory_pool.py sets mem_usage = (k_size + v_size) / GB); the two roundings add.
        both = Figure(name="kv_cache", value=int(k.value) + int(v.value), unit="GB",
                      printed=f"{m.group(2)}+{m.group(3)}", tolerance=k.tolerance + v.tolerance, rank=r, line=n)
        return [count("kv_tokens", m.group(1), "tokens", rank=r, line=n), k, v, both]
    if m := _KV_JOINT.search(text):
        return [count("kv_tokens", m.group(1), "tokens", rank=r, line=n),
                memory("kv_cache", m.group(2), "GB", rank=r, line=n)]
    return []


def _figures(line: Line) -> list[Figure]:
    text, r, n = line.text, line.rank, line.number
    out: list[Figure] = []
    if m := _DIST_END.search(text):
        out.append(memory("distributed_init", m.group(1), "GB", rank=r, line=n))
    if m := _LOAD_BEGIN.search(text):
        out.append(memory("avail_before_load", m.group(1), "GB", rank=r, line=n))
    if m := _LOAD_END.search(text):
        out.append(memory("avail_after_load", m.group(3), "GB", rank=r, line=n))
        if m.group(4) is not None:
            out.append(memory("weights", m.group(4), "GB", rank=r, line=n))
    out.extend(_kv(text, r, n))
    if m := _POOL_END.search(text):
        out.append(memory("avail_after_pool", m.group(1), "GB", rank=r, line=n))
    if m := _GRAPH_BEGIN.search(text):
        out.append(memory("avail_before_graphs", m.group(1), "GB", rank=r, line=n))
    if m := _GRAPH_END.search(text):
        if m.group(1) is not None:
            out.append(memory("cuda_graphs", m.group(1), "GB", rank=r, line=n))
        if m.group(2) is not None:
            out.append(memory("avail_after_graphs", m.group(2), "GB", rank=r, line=n))
    if m := _SCHEDULER.search(text):
        out.append(count("kv_tokens", m.group(1), "tokens", rank=r, line=n))
        if a := _AVAILABLE_AFTER.search(text):
            out.append(memory("avail_after_startup", a.group(1), "GB", rank=r, line=n))
    return out


def parse(lines: list[Line]) -> ParsedLog:
    """An SGLang startup log's model, server args and figures (per TP rank, in log order)."""
    flags: dict[str, str] = {}
    extras: dict[str, str] = {}
    for line in lines:
        if m := _SERVER_ARGS.search(line.text):
            for key, value in split_pairs(m.group(1)).items():
                flags.setdefault(key, value)
        elif m := _SCHEDULER.search(line.text):
            for key, value in _SCHEDULER_FIELD.findall(m.group(2)):
                if key != "available_gpu_mem":
                    flags.setdefault(key, value)
        elif m := _COMMAND.search(line.text.strip()):
            for key, value in command_flags(m.group(1))[1].items():
                flags.setdefault(key, value)
        elif m := _LOAD_END.search(line.text):
            extras.setdefault("model_class", m.group(1))
            extras.setdefault("dtype", m.group(2))
    figures = tuple(f for line in lines for f in _figures(line))
    return ParsedLog(
        engine=ENGINE,
        version=None,  # SGLang does not print its version at startup
        model=flags.get("model_path") or flags.get("--model-path") or flags.get("--model"),
        flags=MappingProxyType(flags),
        figures=figures,
        extras=MappingProxyType(extras),
    )

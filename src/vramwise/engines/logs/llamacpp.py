"""llama.cpp (and Ollama's runner) startup logs: devices, GGUF metadata, context params and every buffer it sizes.

Format strings read in ggml-org/llama.cpp (the commits are those stored by the reference index; the wording is
quoted in tests/engines/test_logs.py). Every size is bytes / 1024.0 / 1024.0 printed with %.2f, so MiB:

- src/llama-model.cpp (a5410f0), load_tensors: "%s: %12s model buffer size = %8.2f MiB" per backend buffer
  (CUDA0, CPU_Mapped, CUDA_Host...) and "%s: offloaded %d/%d layers to GPU"; before the 2025 rename the function
  was llm_load_tensors and printed "%s: %10s buffer size = %8.2f MiB".
- src/llama-kv-cache.cpp (3514e9f), llama_kv_cache::llama_kv_cache: "%s: %10s KV buffer size = %8.2f MiB" and "%s:
  size = %7.2f MiB (%6u cells, %3d layers, %2u/%u seqs), K (%s): %7.2f MiB, V (%s): %7.2f MiB" (the function was
  llama_kv_cache_unified, and before that llama_kv_cache_init with "KV self size = %7.2f MiB, K (%s): %7.2f MiB, V
  (%s): %7.2f MiB" printed by llama_new_context_with_model).
- src/llama-context.cpp (4c7103b), llama_context: "%s: n_ctx = %u" (n_batch, n_ubatch, flash_attn ...), "%s: %10s
  compute buffer size = %8.2f MiB", "%s: %10s output buffer size = %8.2f MiB".
- src/llama.cpp (5bc7a74), llama_model_load_from_file_impl: "%s: using device %s (%s) - %zu MiB free" (later "%s:
  using device %s (%s) (%s) - %zu MiB free"): integer division, so the free memory is truncated to whole MiB.
- ggml/src/ggml-cuda/ggml-cuda.cpp, ggml_cuda_init: "found %d CUDA devices:" and "  Device %d: %s, compute
  capability %d.%d, VMM: %s"; common/common.cpp: "build: %d (%s) with %s for %s"; print_info (formerly
  llm_load_print_meta): "%s: n_layer = %u", "file size = %.2f GiB (%.2f BPW)", ...
"""

from __future__ import annotations

import re
from types import MappingProxyType

from vramwise.engines.logs.lines import Line
from vramwise.engines.logs.pairs import command_flags
from vramwise.engines.logs.parsed import Figure, ParsedLog, count, memory

ENGINE = "llama.cpp"
EXPECTED = '"load_tensors: CUDA0 model buffer size = X MiB" or "llama_context: n_ctx = N" (llama.cpp)'
MARKERS = re.compile(
    r"llama_model_loader:|(?:llm_)?load_tensors:|llama_context:|llama_new_context_with_model:|ggml_cuda_init:"
    r"|print_info:|llm_load_print_meta:|llama_kv_cache|llama_model_load"
)

_N = r"(\d{1,15}(?:\.\d{1,12})?)"  # bounded: a run of digits costs O(1) per start, never O(n)
_BUFFERS = (  # "<device> <kind> buffer size = X MiB" -> figure name; the device is the figure's rank
    ("weights", re.compile(rf"(?:llm_)?load_tensors:\s+(\S{{1,64}})\s+(?:model )?buffer size\s*=\s*{_N} MiB")),
    ("kv_cache", re.compile(rf"(\S{{1,64}})\s+KV buffer size\s*=\s*{_N} MiB")),
    ("recurrent_state", re.compile(rf"(\S{{1,64}})\s+RS buffer size\s*=\s*{_N} MiB")),
    ("compute_buffer", re.compile(rf"(\S{{1,64}})\s+compute buffer size\s*=\s*{_N} MiB")),
    ("output_buffer", re.compile(rf"(\S{{1,64}})\s+output buffer size\s*=\s*{_N} MiB")),
)
# mid-2023 llama.cpp (llama.cpp, llama_new_context_with_model and llama_kv_cache_init) printed "MB" for bytes /
# 1024.0 / 1024.0: "kv self size  = %7.2f MB", "VRAM kv self = %.2f MB", "compute buffer total size = %7.2f MB",
# "VRAM scratch buffer: %.2f MB", "total VRAM used: %.2f MB (model: %.2f MB, context: %.2f MB)".
_OLD_MB = (
    ("kv_cache_total", re.compile(rf"kv self size\s*=\s*{_N} MB")),
    ("kv_cache", re.compile(rf"VRAM kv self\s*=\s*{_N} MB")),
    ("compute_buffer", re.compile(rf"compute buffer total size\s*=\s*{_N} MB")),
    ("scratch_buffer", re.compile(rf"VRAM scratch buffer:\s*{_N} MB")),
    ("vram_total", re.compile(rf"total VRAM used:\s*{_N} MB")),
    ("weights", re.compile(rf"total VRAM used:.*\(model:\s*{_N} MB")),
    ("context", re.compile(rf"total VRAM used:.*context:\s*{_N} MB\)")),
)
# ggml/src/ggml-alloc.c, ggml_gallocr_reserve_n: "failed to allocate %s buffer of size %zu" (exact bytes).
_FAILED = re.compile(r"failed to allocate (\S{1,64}) buffer of size (\d+)")
_COMMAND = re.compile(r"(?:^|\$ ?)((?:\S*/)?(?:llama-server|llama-cli|main|server)(?: .*)?)$")
_KV_SUMMARY = re.compile(
    rf"size =\s*{_N} MiB \(\s*(\d+) cells,\s*(\d+) layers,\s*(\d+)/\s*(\d+) seqs\), "
    rf"K \((\w+)\):\s*{_N} MiB, V \((\w+)\):\s*{_N} MiB"
)
_KV_SELF = re.compile(rf"KV self size\s*=\s*{_N} MiB, K \((\w+)\):\s*{_N} MiB, V \((\w+)\):\s*{_N} MiB")
_DEVICE_FREE = re.compile(r"using device (\S{1,64}) \((.*)\) - (\d+) MiB free")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_CUDA_COUNT = re.compile(r"ggml_cuda_init: found (\d+) CUDA devices")
_CUDA_DEVICE = re.compile(r"^\s*Device (\d+): (.+?), compute capability (\d+\.\d+)")
_BUILD = re.compile(r"build: (\d+) \((\w+)\)")
_MODEL_PATH = re.compile(r"llama_model_loader: loaded meta data with \d+ key-value pairs and \d+ tensors from (.+?)"
                         r" \(version")
_META = re.compile(r"(?:print_info|llm_load_print_meta):\s+(\S[^=]{0,80}?)\s*= (.*)$")
_FILE_SIZE = re.compile(rf"^{_N} (GiB|MiB)")
_CONTEXT = re.compile(r"(?:llama_context|llama_new_context_with_model):\s+(\w{1,64})\s*=\s*(\S{1,256})\s*$")


def _kv_summary(text: str, n: int) -> tuple[list[Figure], dict[str, str]]:
    """The KV cache's own summary line: totals over every device, and its cells, layers and types."""
    if m := _KV_SUMMARY.search(text):
        figures = [memory("kv_cache_total", m.group(1), "MiB", line=n), memory("kv_cache_k", m.group(7), "MiB", line=n),
                   memory("kv_cache_v", m.group(9), "MiB", line=n)]
        facts = {"kv_cells": m.group(2), "kv_layers": m.group(3), "kv_seqs": f"{m.group(4)}/{m.group(5)}",
                 "type_k": m.group(6), "type_v": m.group(8)}
        return figures, facts
    if m := _KV_SELF.search(text):
        figures = [memory("kv_cache_total", m.group(1), "MiB", line=n), memory("kv_cache_k", m.group(3), "MiB", line=n),
                   memory("kv_cache_v", m.group(5), "MiB", line=n)]
        return figures, {"type_k": m.group(2), "type_v": m.group(4)}
    return [], {}


def _facts(text: str, extras: dict[str, str], flags: dict[str, str]) -> None:
    """The CUDA devices, the model path and the build a line states, into ``extras``; a launch command's options,
    as typed ("-ngl": "99"), into ``flags``."""
    if m := _CUDA_COUNT.search(text):
        extras.setdefault("cuda_devices", m.group(1))
    elif m := _CUDA_DEVICE.search(text):
        extras.setdefault(f"cuda.{m.group(1)}", m.group(2))
        extras.setdefault(f"cuda.{m.group(1)}.compute_capability", m.group(3))
    elif m := _MODEL_PATH.search(text):
        extras.setdefault("model_path", m.group(1))
    elif m := _BUILD.search(text):
        extras.setdefault("build", f"{m.group(1)} ({m.group(2)})")
    elif m := _COMMAND.search(text.strip()):
        for key, value in command_flags(m.group(1))[1].items():
            flags.setdefault(key, value)


def _old_and_failed(text: str, n: int) -> list[Figure]:
    """The 2023 "MB" lines, and the exact size of a buffer that failed to allocate."""
    out = [memory(name, m.group(1), "MB", line=n) for name, pattern in _OLD_MB if (m := pattern.search(text))]
    if m := _FAILED.search(text):
        # ggml/src/ggml-alloc.c: "ggml_gallocr_reserve_n: failed to allocate %s buffer of size %zu" is the graph
        # allocator's, through which llama_context reserves its compute buffers (ggml_backend_sched_reserve), so the
        # size is that device's compute buffer; alloc_tensor_range's same words (a model or KV buffer) stay
        # failed_allocation
        name = "compute_buffer" if "ggml_gallocr_reserve_n" in text else "failed_allocation"
        out.append(Figure(name=name, value=int(m.group(2)), unit="B", printed=m.group(2), tolerance=0,
                          rank=m.group(1), line=n))
    return out


def _line(line: Line, extras: dict[str, str], flags: dict[str, str]) -> list[Figure]:
    """The figures on one line; the facts it states go into ``extras`` and ``flags``."""
    text, n = line.text, line.number
    out: list[Figure] = []
    for name, pattern in _BUFFERS:
        if m := pattern.search(text):
            out.append(memory(name, m.group(2), "MiB", rank=m.group(1), line=n))
            return out
    if out := _old_and_failed(text, n):
        return out
    figures, facts = _kv_summary(text, n)
    if figures:
        extras.update(facts)
        return figures
    if m := _DEVICE_FREE.search(text):
        extras.setdefault(f"device.{m.group(1)}", m.group(2).split(") (")[0])
        return [memory("gpu_free", m.group(3), "MiB", rank=m.group(1), line=n, truncated=True)]
    if m := _OFFLOADED.search(text):
        extras.setdefault("n_layer_offloadable", m.group(2))
        return [count("offloaded_layers", m.group(1), "layers", line=n)]
    if m := _META.search(text):
        key, value = m.group(1), m.group(2).strip()
        extras.setdefault(key, value)
        if key == "file size" and (s := _FILE_SIZE.search(value)):
            out.append(memory("file_size", s.group(1), s.group(2), line=n))
    elif m := _CONTEXT.search(text):
        flags.setdefault(m.group(1), m.group(2))
    else:
        _facts(text, extras, flags)
    return out


def parse(lines: list[Line]) -> ParsedLog:
    """A llama.cpp startup log's build, model, context params and figures (per backend buffer, in log order)."""
    extras: dict[str, str] = {}
    flags: dict[str, str] = {}
    figures = tuple(f for line in lines for f in _line(line, extras, flags))
    return ParsedLog(
        engine=ENGINE,
        version=extras.get("build"),
        model=extras.get("model_path") or flags.get("-m") or flags.get("--model") or extras.get("general.name"),
        flags=MappingProxyType(flags),
        figures=figures,
        extras=MappingProxyType(extras),
    )

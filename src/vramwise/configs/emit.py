"""``--emit FORMAT``: the runnable config or command of a setup, in the framework's own keys.

Each writer spells what the importer of the same format reads (``deepspeed.py``, ``hf_trainer.py``,
``axolotl.py``, ``torchtune.py``, ``serve.py``), so importing what was written gives the same setup back
(tests/configs/test_roundtrip.py). A setting the format cannot express is refused in one line when it changes the
memory, and named in a note otherwise (a training script's own code, a request's length).
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from vramwise.errors import InvalidWorkloadError

if TYPE_CHECKING:
    from vramwise.workload import InferSetup

TRAIN_FORMATS = ("deepspeed", "trainer", "axolotl", "torchtune")
SERVE_FORMATS = ("vllm", "sglang", "llama.cpp")
EMIT_FORMATS = (*TRAIN_FORMATS, *SERVE_FORMATS)


def cannot(fmt: str, what: str, allowed: str) -> InvalidWorkloadError:
    return InvalidWorkloadError(f"--emit {fmt} cannot write {what}; allowed: {allowed}", field="emit", allowed=allowed)


def hub_id(model: str) -> str:
    """The model as a framework loads it: a catalog entry's hub id, else MODEL as given."""
    from vramwise.catalog import models

    entry = models().get(model)
    return entry.hf_id if entry else model


def emit(fmt: str, model: str, setup: Any, gpus: int = 1) -> tuple[str, tuple[str, ...]]:
    """(the text, notes) of ``setup`` in format ``fmt``."""
    from vramwise.workload import TrainSetup

    train = isinstance(setup, TrainSetup)
    if fmt in TRAIN_FORMATS and not train:
        raise cannot(fmt, "an inference setup", "vllm, sglang, llama.cpp for infer")
    if fmt in SERVE_FORMATS and train:
        raise cannot(fmt, "a training setup", "deepspeed, trainer, axolotl, torchtune for train")
    notes: list[str] = []
    if fmt in TRAIN_FORMATS:
        from vramwise.configs import emit_train

        return emit_train.WRITERS[fmt](model, setup, notes), tuple(notes)
    return _serve(fmt, model, setup, notes), tuple(notes)


# --- serving command lines ---------------------------------------------------------------------------------------

_KV_OUT = {"fp8": "fp8", "bf16": "bfloat16", "fp16": "float16"}
_DTYPE_OUT = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _serve(fmt: str, model: str, s: InferSetup, notes: list[str]) -> str:
    if s.engine != fmt:
        raise cannot(fmt, f"an engine {s.engine} setup", f"--engine {fmt}")
    if s.new_tokens or s.batch != 1 or s.context != 2048:
        notes.append("batch, context and new tokens are requests' sizes, not server flags: not written")
    if fmt == "vllm":
        words = ["vllm", "serve", hub_id(model), *_vllm(s)]
    elif fmt == "sglang":
        words = ["python", "-m", "sglang.launch_server", "--model-path", hub_id(model), *_sglang(s)]
    else:
        words = ["llama-server", "-m", model, *_llama(s)]
    return " ".join(shlex.quote(w) for w in words) + "\n"


def _common(s: InferSetup, fmt: str) -> list[str]:
    out = []
    if s.weight_format is not None:
        if s.weight_format not in _DTYPE_OUT:
            raise cannot(
                fmt,
                f"weight format {s.weight_format}",
                "fp32, fp16, bf16 (a quantized checkpoint brings its own format)",
            )
        out += ["--dtype", _DTYPE_OUT[s.weight_format]]
    if s.kv_dtype != "auto":
        out += ["--kv-cache-dtype", _KV_OUT.get(str(s.kv_dtype)) or _refuse_kv(fmt, str(s.kv_dtype))]
    return out


def _refuse_kv(fmt: str, kv: str) -> str:
    raise cannot(fmt, f"kv dtype {kv}", "auto, fp8, bf16, fp16")


def _vllm(s: InferSetup) -> list[str]:
    v = s.vllm
    out = [*_common(s, "vllm"), "--gpu-memory-utilization", str(s.gpu_utilization)]
    if s.tp != 1:
        out += ["--tensor-parallel-size", str(s.tp)]
    if v.pipeline_parallel_size != 1:
        out += ["--pipeline-parallel-size", str(v.pipeline_parallel_size)]
    if s.kv_block != 16:
        out += ["--block-size", str(s.kv_block)]
    for flag, value in (
        ("--max-model-len", v.max_model_len),
        ("--max-num-seqs", v.max_num_seqs),
        ("--max-num-batched-tokens", v.max_num_batched_tokens),
        ("--kv-cache-memory-bytes", v.kv_cache_memory_bytes),
    ):
        if value is not None:
            out += [flag, str(value)]
    if v.enforce_eager:
        out.append("--enforce-eager")
    return out


def _sglang(s: InferSetup) -> list[str]:
    g = s.sglang
    out = _common(s, "sglang")
    if s.tp != 1:
        out += ["--tp-size", str(s.tp)]
    for flag, value in (
        ("--mem-fraction-static", g.mem_fraction_static),
        ("--chunked-prefill-size", g.chunked_prefill_size),
        ("--cuda-graph-max-bs", g.cuda_graph_max_bs),
        ("--max-running-requests", g.max_running_requests),
        ("--max-total-tokens", g.max_total_tokens),
        ("--context-length", g.context_length),
    ):
        if value is not None:
            out += [flag, str(value)]
    if g.page_size != 1:
        out += ["--page-size", str(g.page_size)]
    if g.max_prefill_tokens != 16384:
        out += ["--max-prefill-tokens", str(g.max_prefill_tokens)]
    if g.disable_cuda_graph:
        out.append("--disable-cuda-graph")
    return out


def _llama(s: InferSetup) -> list[str]:
    f = s.llamacpp
    if f.ollama or f.fit_gpu_layers:
        raise cannot("llama.cpp", "Ollama's preset", "a plain llama.cpp setup (no --ollama)")
    out = []
    if f.ctx_size is not None:
        out += ["-c", str(f.ctx_size)]
    out += [
        "-b",
        str(f.batch_size),
        "-ub",
        str(f.ubatch_size),
        "-ngl",
        str(f.n_gpu_layers),
        "-ctk",
        f.cache_type_k,
        "-ctv",
        f.cache_type_v,
        "-fa",
        f.flash_attn,
        "-np",
        str(f.parallel),
        "-sm",
        f.split_mode,
    ]
    if f.tensor_split:
        out += ["-ts", ",".join(f"{x:g}" for x in f.tensor_split)]
    for flag, on in (
        ("--no-mmap", f.no_mmap),
        ("--no-kv-offload", f.no_kv_offload),
        ("--kv-unified", f.kv_unified),
        ("--swa-full", f.swa_full),
        ("--embeddings", f.embeddings),
    ):
        if on:
            out.append(flag)
    return out


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"

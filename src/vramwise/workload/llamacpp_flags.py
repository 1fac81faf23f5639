"""llama.cpp's own flags (``llama-server`` / ``llama-cli``), spelled and defaulted as llama.cpp spells them.

Source: ggml-org/llama.cpp at commit 7049736b (the tree ollama v0.12.10 vendors, ``llama/llama.cpp``):
``common/common.h`` ``common_params`` holds the command line's defaults (``n_ctx = 4096``, ``n_batch = 2048``,
``n_ubatch = 512``, ``n_parallel = 1``, ``n_gpu_layers = -1`` meaning the model default, ``cache_type_k/v = F16``,
``use_mmap = true``, ``no_kv_offload = false``, ``kv_unified = false``, ``swa_full = false``);
``src/llama-model.cpp`` ``llama_model_default_params`` turns ``-ngl -1`` into 999 (every layer and the output);
``src/llama-context.cpp`` ``llama_context_default_params`` has ``flash_attn_type = AUTO``.

Later llama-server builds changed defaults that these flags can still express: from ggml-org/llama.cpp PR #16736
(Oct 2025; wording clarified in #17997) ``-np`` defaults to auto, which serves 4 slots over one unified cache of
``-c`` cells (pass ``parallel=4, kv_unified=True``); its ``--fit`` auto-sizing is not modelled.

``ollama_flags`` is Ollama's preset over the same runtime (ollama v0.12.10): ``api/types.go`` ``DefaultOptions``
(``num_ctx`` = ``OLLAMA_CONTEXT_LENGTH``, default 4096 in ``envconfig/config.go``; ``num_batch`` 512;
``num_gpu`` -1 = fitted by ``llm/memory.go`` ``estimateGPULayers``), ``llm/server.go`` ``NewLlamaServer``
(the KV size is ``num_ctx x OLLAMA_NUM_PARALLEL``; ``n_batch = min(num_batch, num_ctx)``; flash attention only
when ``OLLAMA_FLASH_ATTENTION`` is set (or the model's default, ``fs/ggml/ggml.go`` ``FlashAttention``), and
``OLLAMA_KV_CACHE_TYPE`` applies only with flash attention, else the cache stays f16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError, shown

# The cache types llama.cpp's command line accepts (common/arg.cpp kv_cache_types), with ggml's block layout:
# (elements per block, bytes per block) from ggml/src/ggml-common.h (block_q8_0: a fp16 scale + 32 int8 = 34 B;
# block_q4_0: a fp16 scale + 16 bytes of nibbles = 18 B; block_q4_1: two fp16 + 16 B = 20 B; block_q5_0: fp16 +
# 4 B high bits + 16 B = 22 B; block_q5_1: two fp16 + 4 + 16 = 24 B; block_iq4_nl: fp16 + 16 B = 18 B).
CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}
FLASH_ATTN = ("on", "off", "auto")  # common/arg.cpp -fa/--flash-attn
# common/arg.cpp -sm/--split-mode: none (one GPU), layer (layers and KV split over GPUs), row (rows of each matrix)
SPLIT_MODES = ("none", "layer", "row")
ALL_LAYERS = 999  # llama_model_default_params: n_gpu_layers = 999


def is_quantized(cache_type: str) -> bool:
    """ggml_is_quantized: a block type (more than one element per block)."""
    return CACHE_TYPES[cache_type][0] > 1


def row_bytes(cache_type: str, elements: int) -> int:
    """ggml_row_size(type, ne): bytes of one row of ``elements`` values in ``cache_type``."""
    block, size = CACHE_TYPES[cache_type]
    return elements // block * size


@dataclass(frozen=True, kw_only=True)
class LlamaCppFlags:
    """One llama.cpp run's flags. Field names follow the long flags (``--ctx-size`` -> ``ctx_size``)."""

    ctx_size: int | None = None  # -c: total KV cells over all sequences; 0 = the model's n_ctx_train; None = setup
    batch_size: int = 2048  # -b: logical batch
    ubatch_size: int = 512  # -ub: physical batch (the compute graph is reserved for this many tokens)
    n_gpu_layers: int = -1  # -ngl: repeating layers on the GPU(s), +1 for the output layer; -1 = 999
    cache_type_k: str = "f16"  # -ctk
    cache_type_v: str = "f16"  # -ctv
    flash_attn: str = "auto"  # -fa on|off|auto
    parallel: int = 1  # -np: sequences decoded together (each gets ctx_size / parallel cells)
    tensor_split: tuple[float, ...] = ()  # --tensor-split 3,1: share of layers per GPU; () = by free memory
    split_mode: str = "layer"  # -sm
    no_mmap: bool = False  # --no-mmap: host-side weights are read into RAM instead of mapped (use_mmap = false)
    no_kv_offload: bool = False  # --no-kv-offload: the KV cache stays in host RAM
    kv_unified: bool = False  # -kvu: one KV stream shared by every sequence
    swa_full: bool = False  # --swa-full: full-size cache for sliding-window layers
    embeddings: bool = False  # --embeddings: the output buffer also keeps n_embd floats per output
    # Ollama's num_gpu -1: the most layers that fit the GPU(s) (llm/memory.go estimateGPULayers), not llama.cpp's
    # 999; the plan fits them with its own bytes (engines/llamacpp.py fit_gpu_layers)
    fit_gpu_layers: bool = False
    # --ollama: the flags Ollama's runner derives from these (ollama_flags): -c per sequence as num_ctx, -np as
    # OLLAMA_NUM_PARALLEL, -fa on as OLLAMA_FLASH_ATTENTION, -ctk as OLLAMA_KV_CACHE_TYPE, -ngl as num_gpu
    ollama: bool = False

    def __post_init__(self) -> None:
        if self.ctx_size is not None:
            _int("ctx_size", self.ctx_size, 0, "-c/--ctx-size")
        _int("batch_size", self.batch_size, 1, "-b/--batch-size")
        _int("ubatch_size", self.ubatch_size, 1, "-ub/--ubatch-size")
        _int("n_gpu_layers", self.n_gpu_layers, -1, "-ngl/--n-gpu-layers")
        _int("parallel", self.parallel, 1, "-np/--parallel")
        for name in ("cache_type_k", "cache_type_v"):
            value = getattr(self, name)
            if value not in CACHE_TYPES:
                flag = "-ctk/--cache-type-k" if name.endswith("k") else "-ctv/--cache-type-v"
                raise InvalidWorkloadError(
                    f"{flag} {shown(value)}: llama.cpp's cache types are {', '.join(CACHE_TYPES)}",
                    field=name,
                    allowed=", ".join(CACHE_TYPES),
                )
        _choice("flash_attn", self.flash_attn, FLASH_ATTN, "-fa/--flash-attn")
        _choice("split_mode", self.split_mode, SPLIT_MODES, "-sm/--split-mode")
        if isinstance(self.tensor_split, str):  # the command line's text, "3,1"
            object.__setattr__(self, "tensor_split", parse_tensor_split(self.tensor_split))
        # finite: an inf share (1e400) passed the sign check and split the layers by nan arithmetic
        if any(not isinstance(x, int | float) or not math.isfinite(x) or x < 0 for x in self.tensor_split) or (
            self.tensor_split and not sum(self.tensor_split) > 0
        ):
            raise InvalidWorkloadError(
                f"--tensor-split {shown(self.tensor_split)}: finite non-negative shares, one per GPU, not all zero",
                field="tensor_split",
                allowed="comma-separated non-negative numbers, e.g. 3,1",
            )
        for name in ("no_mmap", "no_kv_offload", "kv_unified", "swa_full", "embeddings", "fit_gpu_layers", "ollama"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidWorkloadError(f"{name} must be True or False", field=name, allowed="true, false")

    @property
    def gpu_layers(self) -> int:
        """-ngl as the loader reads it: -1 is the default, 999 (llama_model_default_params)."""
        return ALL_LAYERS if self.n_gpu_layers < 0 else self.n_gpu_layers


# llama.cpp's command line parses every integer flag with std::stoi, a C int (common/arg.cpp: handler_int(params,
# std::stoi(value)), its std::out_of_range reported as "error while handling argument"): nothing past INT_MAX
# reaches llama.cpp, and without the bound -np 10^29 printed float-rounded KV bytes (exit 0 or 3, never 2)
INT_MAX = 2**31 - 1


def _int(name: str, value: object, low: int, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= INT_MAX:
        raise InvalidWorkloadError(
            f"{flag} {shown(value)}: an integer from {low} to {INT_MAX:,} (llama.cpp reads it as a C int)",
            field=name, allowed=f"an integer from {low} to {INT_MAX:,}",
        )


def _choice(name: str, value: object, allowed: tuple[str, ...], flag: str) -> None:
    if value not in allowed:
        raise InvalidWorkloadError(
            f"{flag} {shown(value)}: one of {', '.join(allowed)}", field=name, allowed=", ".join(allowed)
        )


# Ollama v0.12.10's defaults (module docstring). num_gpu -1 fits the layers to the GPU; here that is the largest
# -ngl whose plan fits (engines/llamacpp.py fit_layers), not ollama's own GraphSize estimate.
OLLAMA_NUM_CTX = 4096  # envconfig.ContextLength default (OLLAMA_CONTEXT_LENGTH); 2048 up to ollama v0.6.6
# OLLAMA_NUM_PARALLEL defaults to 1 from v0.10.0; before, 0 meant server/sched.go's defaultParallel 4 when the
# model fit with it (else 1): pass num_parallel=4 for those versions.
OLLAMA_NUM_BATCH = 512  # api.DefaultOptions NumBatch


def ollama_flags(
    *,
    num_ctx: int = OLLAMA_NUM_CTX,
    num_parallel: int = 1,
    flash_attention: bool = False,
    kv_cache_type: str = "f16",
    num_gpu: int = -1,
) -> LlamaCppFlags:
    """The llama.cpp flags Ollama's runner passes (llm/server.go NewLlamaServer, llama/llama.go NewContextParams):
    KvSize = num_ctx x num_parallel, n_batch = min(num_batch, num_ctx) (n_ubatch follows: llama.cpp's default 512
    capped by n_batch), flash attention on or off (never auto), the KV type only with flash attention (server.go
    warns "quantized kv cache requested but flash attention disabled" and keeps f16), mmap on (Linux, when the
    model fits in free RAM). NewContextParams starts from llama_context_default_params, not llama-server's
    common_params: swa_full is true there (full-size caches for sliding-window layers) and it sets embeddings.
    Models Ollama runs on its own engine instead of llama.cpp (ollama/model: gemma3, gpt-oss, qwen3, ...) are
    not planned by this preset."""
    batch = min(OLLAMA_NUM_BATCH, num_ctx)
    kv = kv_cache_type.lower() if flash_attention and kv_cache_type else "f16"
    return LlamaCppFlags(
        ctx_size=num_ctx * num_parallel,
        batch_size=batch,
        ubatch_size=batch,
        n_gpu_layers=num_gpu,
        fit_gpu_layers=num_gpu < 0,
        cache_type_k=kv,
        cache_type_v=kv,
        flash_attn="on" if flash_attention else "off",
        parallel=num_parallel,
        swa_full=True,
        embeddings=True,
    )


def parse_tensor_split(text: str) -> tuple[float, ...]:
    """``--tensor-split 3,1`` as llama.cpp reads it (common/arg.cpp: comma- or slash-separated proportions)."""
    parts = [p.strip() for p in text.replace("/", ",").split(",")]
    try:
        shares = tuple(float(p) for p in parts)
    except ValueError:
        raise InvalidWorkloadError(
            f"--tensor-split {shown(text)}: proportions such as 3,1", field="tensor_split", allowed="e.g. 3,1"
        ) from None
    return shares

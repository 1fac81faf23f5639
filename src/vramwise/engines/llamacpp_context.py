"""llama.cpp's context as its flags make it (cells, streams, ubatch, flash attention), where each layer goes, and
the KV bytes of a layer. Sources: engines/llamacpp.py's docstring, each rule citing its function at ``VERSION``."""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from vramwise.spec.model import ModelSpec
from vramwise.workload.infer import InferSetup
from vramwise.workload.llamacpp_flags import LlamaCppFlags, is_quantized, row_bytes

VERSION = "7049736b"  # llama.cpp commit (as vendored by ollama v0.12.10)
SRC = f"llama.cpp@{VERSION}"
KQ_MASK_PAD = 64  # ggml/include/ggml.h GGML_KQ_MASK_PAD
F32 = 4  # ggml's compute buffers hold f32 activations


def pad(x: int, n: int) -> int:
    """GGML_PAD: ``x`` rounded up to a multiple of ``n``."""
    return (x + n - 1) // n * n


@dataclass(frozen=True)
class Context:
    """The context parameters llama.cpp derives from the flags (llama_context ctor, create_memory)."""

    n_ctx: int  # cells over all streams, padded
    cells: int  # cells per stream (non-SWA layers)
    swa_cells: int  # cells per stream of sliding-window layers
    n_stream: int
    n_tokens: int  # tokens of the reserved graph: min(n_ctx, n_ubatch)
    flash: bool  # flash attention in the graph (-fa on, or auto resolved on a GPU that supports it)
    copies: int = 1  # the scheduler's copies of each split input: 4 with pipeline parallelism


def context(spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags) -> Context:
    """The cells, streams and ubatch llama_context and create_memory derive from the flags."""
    n_seq = flags.parallel
    if flags.ctx_size is None:
        requested = setup.tokens * n_seq
    elif flags.ctx_size == 0:  # llama_context: n_ctx 0 = hparams.n_ctx_train
        requested = spec.max_position_embeddings or setup.tokens * n_seq
    else:
        requested = flags.ctx_size
    step = 32 if flags.flash_attn == "off" else 256  # llama_kv_cache::get_padding (cparams.flash_attn before AUTO)
    n_stream = 1 if flags.kv_unified else n_seq
    cells = pad(requested if flags.kv_unified else -(-requested // n_seq), step)
    # n_batch = min(n_ctx, -b) from the unpadded n_ctx, at least GGML_KQ_MASK_PAD; n_ubatch = min(n_batch, -ub)
    n_batch = max(min(requested, flags.batch_size), KQ_MASK_PAD)
    n_ubatch = min(n_batch, flags.ubatch_size)
    n_ctx = cells * n_stream
    window = spec.attention.sliding_window or 0
    swa = cells if flags.swa_full else min(cells, pad(window * (n_seq if flags.kv_unified else 1) + n_ubatch, step))
    # -fa auto resolves to on when every FA node stays on its layer's device (llama_context ctor), i.e. when the
    # CUDA backend has a kernel for it (cuda_flash_attn); the cache was padded for FA either way.
    flash = flags.flash_attn == "on" or (flags.flash_attn == "auto" and cuda_flash_attn(spec, flags))
    return Context(n_ctx, cells, swa, n_stream, min(n_ctx, n_ubatch), flash)


CUDA_FA_HEADS = (40, 64, 80, 96, 112, 128, 256)  # ggml-cuda/fattn.cu: K head sizes with V of the same size
CUDA_FA_TYPES = ("f16", "q4_0", "q8_0")  # without GGML_CUDA_FA_ALL_QUANTS, and K and V of one type


def cuda_flash_attn(spec: ModelSpec, flags: LlamaCppFlags) -> bool:
    """Whether ggml-cuda has a flash-attention kernel for this model and cache (fattn.cu
    ggml_cuda_get_best_fattn_kernel): K head size 40..256 with an equal V, or MLA's 576/512 with a GQA ratio that is
    a multiple of 16; K and V of one type among f16, q4_0, q8_0 (an f32 cache is cast to f16 first)."""
    att = spec.attention
    k_type = "f16" if flags.cache_type_k == "f32" else flags.cache_type_k
    v_type = "f16" if flags.cache_type_v == "f32" else flags.cache_type_v
    if k_type != v_type or k_type not in CUDA_FA_TYPES:
        return False
    if att.mla is not None:
        k_row, v_row = kv_rows(spec)
        return (k_row, v_row) == (576, 512) and att.num_heads % 16 == 0
    return att.head_dim in CUDA_FA_HEADS


def kv_rows(spec: ModelSpec) -> tuple[int, int]:
    """Values per token per layer of K and V (n_embd_k_gqa, n_embd_v_gqa)."""
    att = spec.attention
    if att.mla is not None:
        # llama-model.cpp LLM_ARCH_DEEPSEEK2 with MLA: the cache holds the compressed latent, one KV head,
        # K = kv_lora_rank + n_rot (the rope part), V = kv_lora_rank
        return att.mla.kv_lora_rank + att.mla.qk_rope_head_dim, att.mla.kv_lora_rank
    return att.num_kv_heads * att.head_dim, att.num_kv_heads * att.head_dim


def _f32(x: float) -> float:
    """``x`` rounded to float32, as llama.cpp's ``float`` split arithmetic holds it (ties at a split point matter)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def devices(n_layer: int, flags: LlamaCppFlags, gpu_count: int) -> list[int | None]:
    """The device of each layer 0..n_layer-1 and of the output (index n_layer): a GPU index, or None (CPU).

    load_tensors: cumulative shares, normalised (float32), and ``std::upper_bound(splits, float(il - i_gpu_start) /
    act_gpu_layers)``: the first GPU whose cumulative share exceeds the layer's position."""
    n_gpus = 1 if flags.split_mode == "none" else gpu_count
    shares = list(flags.tensor_split[:n_gpus]) if flags.tensor_split and n_gpus > 1 else [1.0] * n_gpus
    splits, running = [], 0.0
    for share in shares:
        running = _f32(running + _f32(share))
        splits.append(running)
    splits = [_f32(x / running) for x in splits]
    ngl = flags.gpu_layers
    start = max(n_layer - ngl, 0)
    act = min(ngl, n_layer + 1)
    out: list[int | None] = []
    for il in range(n_layer + 1):
        if il < start or il - start >= act:
            out.append(None)
        else:
            out.append(min(bisect.bisect_right(splits, _f32((il - start) / act)), n_gpus - 1))
    return out


MATRIX_ROW_PADDING = 512  # ggml/src/ggml-cuda/common.cuh


def cuda_row_padding(cache_type: str, ne0: int) -> int:
    """ggml_backend_cuda_buffer_type_get_alloc_size: a quantized tensor whose rows are not a multiple of
    MATRIX_ROW_PADDING gets ggml_row_size(type, 512 - ne0 % 512) more bytes, once per tensor."""
    if not is_quantized(cache_type) or ne0 % MATRIX_ROW_PADDING == 0:
        return 0
    return row_bytes(cache_type, MATRIX_ROW_PADDING - ne0 % MATRIX_ROW_PADDING)


def kv_layer_bytes(spec: ModelSpec, ctx: Context, flags: LlamaCppFlags, il: int, gpu: bool) -> tuple[int, int]:
    """K and V bytes of layer ``il`` (llama_kv_cache ctor: ggml_new_tensor_3d(type, n_embd_gqa, kv_size, n_stream)),
    with the CUDA buffer's row padding when the layer's cache is on a GPU."""
    k_row, v_row = kv_rows(spec)
    cells = ctx.swa_cells if sliding(spec, il) else ctx.cells
    k = row_bytes(flags.cache_type_k, k_row) * cells * ctx.n_stream
    v = row_bytes(flags.cache_type_v, v_row) * cells * ctx.n_stream
    if gpu:
        k += cuda_row_padding(flags.cache_type_k, k_row)
        v += cuda_row_padding(flags.cache_type_v, v_row)
    return k, v


def sliding(spec: ModelSpec, il: int) -> bool:
    """Whether layer ``il`` keeps the sliding-window cache (llama_kv_cache_iswa's SWA half)."""
    # Only models whose config interleaves sliding and full layers (Gemma 2/3, gpt-oss, Cohere2) are converted to
    # llama.cpp architectures with an iSWA cache; a uniform sliding_window (Mistral v0.1) is a full cache there.
    return bool(spec.attention.layer_types) and spec.layer_attention(il) == "sliding"


# ggml/src/ggml-backend.cpp GGML_SCHED_MAX_COPIES: the copies of each split input with pipeline parallelism
SCHED_MAX_COPIES = 4


def pipeline(flags: LlamaCppFlags, n_layer: int, gpu_count: int) -> bool:
    """llama_context ctor: pipeline parallelism when more than one device holds the model, every layer and the
    output are offloaded (n_gpu_layers > n_layer), split mode layer and the KV cache offloaded."""
    return gpu_count > 1 and flags.split_mode == "layer" and flags.gpu_layers > n_layer and not flags.no_kv_offload

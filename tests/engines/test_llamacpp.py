"""llama.cpp's memory plan (engines/llamacpp.py) against hand arithmetic from llama.cpp's source at 7049736b.

Oracles, each written out below with the function it follows:
- ggml block layouts (ggml/src/ggml-common.h): q8_0 = a fp16 scale + 32 int8 = 34 B per 32 values; q4_0 = a fp16
  scale + 16 B of nibbles = 18 B per 32; f16 2 B per value.
- KV cells (src/llama-model.cpp create_memory, src/llama-kv-cache.cpp get_padding): per stream
  GGML_PAD(ceil(n_ctx / n_seq_max), 256 with flash attention not off, else 32); K and V per layer
  ggml_new_tensor_3d(type, n_embd_k_gqa, kv_size, n_stream) (llama_kv_cache ctor).
- Devices (src/llama-model.cpp load_tensors): -ngl n puts layers max(n_layer - n, 0).. on the GPU and the output
  when n > n_layer; token_embd stays on the CPU; --tensor-split by std::upper_bound over cumulative shares.
- llama_init_from_model refuses a quantized V cache with flash attention disabled.
The tiny GGUF files are written with the gguf package's GGUFWriter (tests/gguf/gguf_build.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gguf"))

from gguf_build import Q, write

from vramwise.catalog.gpu_spec import Gpu, get_gpu
from vramwise.engines.llamacpp import kv_totals, per_gpu, plan
from vramwise.errors import InvalidWorkloadError
from vramwise.spec.gguf_file import gguf_model
from vramwise.spec.load import resolve_model
from vramwise.spec.model import ModelSpec
from vramwise.workload.infer import InferSetup
from vramwise.workload.llamacpp_flags import LlamaCppFlags, ollama_flags

H, HEADS, KV, D, FF, V, L = 256, 4, 2, 64, 512, 96, 2
H100 = get_gpu("H100")
Q8_0, Q4_0 = 34, 18  # bytes per block of 32 values
Q4K, Q6K = 144, 210  # bytes per block of 256 weights


def _tensors(tied: bool = False) -> list:
    t = [("token_embd.weight", (V, H), Q.Q8_0), ("output_norm.weight", (H,), Q.F32)]
    if not tied:
        t.append(("output.weight", (V, H), Q.Q6_K))
    for i in range(L):
        v_type = Q.Q6_K if i == 0 else Q.Q4_K  # a Q4_K_M-like mix: layers differ in bytes
        t += [
            (f"blk.{i}.attn_norm.weight", (H,), Q.F32),
            (f"blk.{i}.ffn_norm.weight", (H,), Q.F32),
            (f"blk.{i}.attn_q.weight", (HEADS * D, H), Q.Q4_K),
            (f"blk.{i}.attn_k.weight", (KV * D, H), Q.Q4_K),
            (f"blk.{i}.attn_v.weight", (KV * D, H), v_type),
            (f"blk.{i}.attn_output.weight", (H, HEADS * D), Q.Q4_K),
            (f"blk.{i}.ffn_gate.weight", (FF, H), Q.Q4_K),
            (f"blk.{i}.ffn_up.weight", (FF, H), Q.Q4_K),
            (f"blk.{i}.ffn_down.weight", (H, FF), Q.Q4_K),
        ]
    return t


def _meta() -> dict:
    return {
        "llama.block_count": L,
        "llama.context_length": 4096,
        "llama.embedding_length": H,
        "llama.feed_forward_length": FF,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": KV,
        "llama.rope.freq_base": 500000.0,
        "general.file_type": 15,  # MOSTLY_Q4_K_M
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(V)],
    }


# Hand arithmetic of the tensors above (elements / block x bytes per block)
NORM = H * 4  # F32
LAYER_COMMON = 2 * NORM + (256 * 256 + 128 * 256 + 256 * 256 + 3 * 512 * 256) // 256 * Q4K
LAYER0 = LAYER_COMMON + 128 * 256 // 256 * Q6K
LAYER1 = LAYER_COMMON + 128 * 256 // 256 * Q4K
EMBD = V * H // 32 * Q8_0
OUTPUT = V * H // 256 * Q6K


@pytest.fixture
def tiny(tmp_path: Path):
    path = tmp_path / "tiny-Q4_K_M.gguf"
    write(path, "llama", _meta(), _tensors())
    return gguf_model(path)[0]


def _plan(spec, flags: LlamaCppFlags, gpus: int = 1, setup: InferSetup | None = None):
    return plan(spec, setup or InferSetup(), flags, H100, gpus)


def test_layer_bytes_read_from_the_gguf(tiny) -> None:
    assert tiny.checkpoint.layer_bytes == (LAYER0, LAYER1)
    assert tiny.checkpoint.total_bytes == EMBD + NORM + OUTPUT + LAYER0 + LAYER1


@pytest.mark.parametrize(
    ("ctk", "ctv", "row_k", "row_v"),
    [
        ("f16", "f16", KV * D * 2, KV * D * 2),
        ("q8_0", "q8_0", KV * D // 32 * Q8_0, KV * D // 32 * Q8_0),
        ("q4_0", "q4_0", KV * D // 32 * Q4_0, KV * D // 32 * Q4_0),
        ("q8_0", "f16", KV * D // 32 * Q8_0, KV * D * 2),
    ],
)
def test_kv_bytes_by_cache_type(tiny, ctk: str, ctv: str, row_k: int, row_v: int) -> None:
    # -c 1000, -fa auto: padded to 256 -> 1024 cells; one stream; n_embd_k_gqa = 2 heads x 64 = 128 values
    est = _plan(tiny, LlamaCppFlags(ctx_size=1000, cache_type_k=ctk, cache_type_v=ctv))
    assert est.kv_tokens == 1024
    # a quantized tensor in a CUDA buffer whose rows (128) are not a multiple of 512 gets one row of
    # 512 - 128 = 384 more values (ggml_backend_cuda_buffer_type_get_alloc_size): 384 / 32 blocks per tensor
    pad_k = 384 // 32 * (row_k * 32 // (KV * D)) if ctk != "f16" else 0
    pad_v = 384 // 32 * (row_v * 32 // (KV * D)) if ctv != "f16" else 0
    assert est.estimate.term("kv_cache/k").bytes == L * (row_k * 1024 + pad_k)
    assert est.estimate.term("kv_cache/v").bytes == L * (row_v * 1024 + pad_v)
    assert est.kv_pool is not None and est.kv_pool.bytes == L * ((row_k + row_v) * 1024 + pad_k + pad_v)


def test_padding_follows_flash_attention_and_streams(tiny) -> None:
    assert _plan(tiny, LlamaCppFlags(ctx_size=1100)).kv_tokens == 1280  # GGML_PAD(1100, 256)
    assert _plan(tiny, LlamaCppFlags(ctx_size=1100, flash_attn="off")).kv_tokens == 1120  # GGML_PAD(1100, 32)
    # -np 4: ceil(1100 / 4) = 275 -> 512 cells per stream, 4 streams
    est = _plan(tiny, LlamaCppFlags(ctx_size=1100, parallel=4))
    assert est.kv_tokens == 2048  # 4 streams of 512 cells
    assert est.estimate.term("kv_cache/k").bytes == L * KV * D * 2 * 512 * 4
    unified = _plan(tiny, LlamaCppFlags(ctx_size=1100, parallel=4, kv_unified=True))
    assert unified.kv_tokens == 1280
    assert unified.estimate.term("kv_cache/k").bytes == L * KV * D * 2 * 1280


def test_quantized_v_without_flash_attention_is_refused(tiny) -> None:
    with pytest.raises(InvalidWorkloadError, match="V cache quantization requires flash_attn") as err:
        _plan(tiny, LlamaCppFlags(cache_type_v="q8_0", flash_attn="off"))
    assert err.value.field == "cache_type_v" and "\n" not in str(err.value)
    # a quantized K alone is allowed without flash attention (llama_init_from_model checks V only)
    assert _plan(tiny, LlamaCppFlags(cache_type_k="q8_0", flash_attn="off")).kv_tokens


def test_full_offload_keeps_token_embd_on_the_host(tiny) -> None:
    est = _plan(tiny, LlamaCppFlags(ctx_size=1024))  # -ngl default 999: both layers and the output
    assert est.estimate.term("weights/layers").bytes == LAYER0 + LAYER1
    assert est.estimate.term("weights/output").bytes == OUTPUT + NORM
    host = {t.name: t.bytes for t in est.estimate.host}
    assert host["host/weights"] == EMBD
    assert host["host/output_buffer"] == V * 1 * 4  # n_vocab x n_seq_max floats


@pytest.mark.parametrize(
    ("ngl", "gpu_weights", "output_on_gpu"),
    [(0, 0, False), (1, LAYER1, False), (2, LAYER0 + LAYER1, False), (3, LAYER0 + LAYER1 + OUTPUT + NORM, True)],
)
def test_partial_offload_gpu_plus_host_is_the_file(tiny, ngl: int, gpu_weights: int, output_on_gpu: bool) -> None:
    # i_gpu_start = max(2 - ngl, 0): -ngl 1 keeps the LAST layer (1) on the GPU; the output needs ngl > n_layer
    est = _plan(tiny, LlamaCppFlags(ctx_size=1024, n_gpu_layers=ngl))
    weights = est.estimate.bytes_of("weights")
    assert weights == gpu_weights
    host = {t.name: t.bytes for t in est.estimate.host}
    assert weights + host["host/weights"] == tiny.checkpoint.total_bytes
    # KV follows its layer: the CPU layers' K and V are in host RAM
    kv_layer = 2 * KV * D * 2 * 1024
    on_gpu = min(ngl, L)
    assert est.estimate.bytes_of("kv_cache") == on_gpu * kv_layer
    assert host.get("host/kv_cache", 0) == (L - on_gpu) * kv_layer
    assert any(p.kind.value == "prefill (logits)" for p in est.estimate.phases) == output_on_gpu


def test_no_kv_offload_keeps_the_cache_in_host_ram(tiny) -> None:
    est = _plan(tiny, LlamaCppFlags(ctx_size=1024, no_kv_offload=True))
    assert est.estimate.bytes_of("kv_cache") == 0
    assert {t.name: t.bytes for t in est.estimate.host}["host/kv_cache"] == L * 2 * KV * D * 2 * 1024


def test_tied_output_duplicates_token_embd(tmp_path: Path) -> None:
    path = tmp_path / "tied.gguf"
    write(path, "llama", _meta(), _tensors(tied=True))
    est = _plan(gguf_model(path)[0], LlamaCppFlags(ctx_size=1024))
    # no output.weight: load_tensors creates token_embd again as the output (TENSOR_DUPLICATED) on the GPU
    assert est.estimate.term("weights/output").bytes == EMBD + NORM
    assert {t.name: t.bytes for t in est.estimate.host}["host/weights"] == EMBD


def test_tensor_split_over_two_gpus() -> None:
    spec = resolve_model("llama-2-7b")  # 32 layers; -ngl 999 -> act_gpu_layers = 33 (the output counts)
    setup = InferSetup(weight_format="q8_0")
    even = plan(spec, setup, LlamaCppFlags(ctx_size=4096), H100, 2)
    # upper_bound([0.5, 1.0], il / 33): GPU0 takes il / 33 < 0.5 -> layers 0..16 (17), GPU1 15 layers + output
    assert "GPU0: 17 layers, " in " ".join(even.notes) and "GPU1: 15 layers + output" in " ".join(even.notes)
    skew = plan(spec, setup, LlamaCppFlags(ctx_size=4096, tensor_split=(3, 1)), H100, 2)
    # [0.75, 1.0]: il / 33 < 0.75 -> layers 0..24 (25) on GPU0, the fuller one the table shows
    assert "GPU0: 25 layers, " in " ".join(skew.notes)
    one_layer = (skew.estimate.term("weights/layers").bytes) // 25
    kv = skew.estimate.bytes_of("kv_cache")
    assert kv == 25 * 2 * 4096 * 4096 * 2  # 25 layers x K and V x 4096 cells x n_embd_k_gqa 4096 x f16
    assert one_layer > 0
    with pytest.raises(InvalidWorkloadError, match="--tensor-split has 3 shares for 2 GPUs"):
        plan(spec, setup, LlamaCppFlags(tensor_split=(1, 1, 1)), H100, 2)


def test_compute_buffer_terms_by_hand() -> None:
    spec = resolve_model("llama-2-7b")  # 32 heads, n_embd 4096, n_ff 11008, n_vocab 32000
    setup = InferSetup(weight_format="q4_0")
    est = plan(spec, setup, LlamaCppFlags(ctx_size=4096, flash_attn="off"), H100).estimate
    # n_tokens = min(n_ctx, n_ubatch 512); KQ f32 [n_kv, n_tokens, n_head]
    assert est.term("compute/attention_scores").bytes == 4096 * 512 * 32 * 4
    assert est.term("compute/logits").bytes == 32000 * 512 * 4  # every token an output in the reserved graph
    assert est.term("compute/kq_mask").bytes == 4096 * 512 * 4  # f32, rows GGML_PAD(512, 64)
    fa = plan(spec, setup, LlamaCppFlags(ctx_size=4096), H100).estimate
    assert fa.term("compute/ffn").bytes == 3 * 11008 * 512 * 4  # gate, up, their product
    # with flash attention the layers read the f16 copy; the f32 input is freed once cast (its only child)
    assert fa.term("compute/kq_mask").bytes == 4096 * 512 * 2


def test_compute_buffer_of_a_llama3_8b_by_hand() -> None:
    """Llama-3 8B (n_embd 4096, 32 heads, n_vocab 128256), -c 512, -ub 512, no flash attention, all offloaded.

    By hand from the mechanisms cited in engines/llamacpp.py: the output moment holds the logits
    128256 x 512 x 4 B = 250.5 MiB and the normed hidden state 4096 x 512 x 4 B = 8 MiB, 258.5 MiB, more than a
    layer's 512 x 512 x 32 x 4 B = 32 MiB of scores + 16 MiB hidden + 1 MiB mask. The host buffer holds inp_embd
    (8 MiB) and the f32 mask (512 x 512 x 4 B = 1 MiB). Public llama.cpp logs of this model at these settings
    print the same figures: "CUDA0 compute buffer size = 258.50 MiB" and "CUDA_Host compute buffer size = 9.01 MiB"
    (the 0.01 MiB are token ids, positions and output ids, not modelled)."""
    spec = resolve_model("llama-3-8b")
    est = plan(spec, InferSetup(weight_format="q4_k_m"), LlamaCppFlags(ctx_size=512, flash_attn="off"), H100)
    mib = 2**20
    assert est.estimate.peak_phase is not None and est.estimate.peak_phase.bytes == int(258.5 * mib)
    host = {t.name: t.bytes for t in est.estimate.host}
    assert host["host/compute_buffer"] == 9 * mib
    assert host["host/output_buffer"] == 128256 * 4  # 0.49 MiB in the same logs


def test_sliding_window_layers_keep_a_smaller_cache() -> None:
    spec = resolve_model("gemma-2-2b")  # 26 layers alternating sliding (4096) / full; 4 KV heads of 256
    est = plan(spec, InferSetup(), LlamaCppFlags(ctx_size=8192), H100)
    row = 4 * 256 * 2  # f16
    swa = min(8192, (4096 + 512 + 255) // 256 * 256)  # GGML_PAD(n_swa + n_ubatch, 256) = 4608
    assert est.estimate.term("kv_cache/k").bytes == 13 * row * 8192 + 13 * row * swa
    full = plan(spec, InferSetup(), LlamaCppFlags(ctx_size=8192, swa_full=True), H100)
    assert full.estimate.term("kv_cache/k").bytes == 26 * row * 8192


def test_ollama_preset() -> None:
    flags = ollama_flags(num_parallel=2, kv_cache_type="q8_0")
    # KvSize = num_ctx x numParallel; batch min(512, num_ctx); without OLLAMA_FLASH_ATTENTION the KV stays f16
    assert (flags.ctx_size, flags.batch_size, flags.parallel) == (8192, 512, 2)
    assert (flags.flash_attn, flags.cache_type_k, flags.cache_type_v) == ("off", "f16", "f16")
    fa = ollama_flags(flash_attention=True, kv_cache_type="Q4_0")
    assert (fa.flash_attn, fa.cache_type_v) == ("on", "q4_0")
    # llama_context_default_params (Ollama's starting point): swa_full true; NewContextParams sets embeddings
    assert (flags.swa_full, flags.embeddings) == (True, True)


def test_requested_context_must_fit_a_sequence(tiny) -> None:
    est = _plan(tiny, LlamaCppFlags(ctx_size=2048, parallel=4), setup=InferSetup(context=1000))
    assert est.max_sequences == 0  # 1000 tokens > 512 cells per stream
    ok = _plan(tiny, LlamaCppFlags(ctx_size=4096, parallel=4), setup=InferSetup(context=1000))
    assert ok.max_sequences == 4  # 1024 cells per stream
    # the largest context that fits an H100 is the model's own 4096 (n_ctx_train caps the search)
    assert ok.max_context == 4096


def test_largest_context_is_the_edge_of_fitting() -> None:
    from vramwise.catalog.gpu_spec import Gpu

    spec = resolve_model("llama-2-7b")
    setup = InferSetup(weight_format="q4_0")
    gpu = Gpu(name="6GiB", label="6GiB", memory_bytes=6 * 2**30)
    flags = LlamaCppFlags(ctx_size=2048, flash_attn="off")
    best = plan(spec, setup, flags, gpu).max_context
    assert best is not None and 1024 < best < 4096
    # the oracle is the definition: -c at the answer fits, one padding step (32 cells without FA) more does not
    at = plan(spec, setup, LlamaCppFlags(ctx_size=best, flash_attn="off"), gpu)
    assert at.estimate.peak_bytes <= gpu.memory_bytes
    over = plan(spec, setup, LlamaCppFlags(ctx_size=best + 32, flash_attn="off"), gpu)
    assert over.estimate.peak_bytes > gpu.memory_bytes and over.max_context == best  # the answer is the same


@pytest.mark.parametrize(
    ("field", "value"),
    [("cache_type_k", "q3_k"), ("flash_attn", "yes"), ("n_gpu_layers", -2), ("parallel", 0), ("split_mode", "x")],
)
def test_bad_flags_name_their_field(field: str, value: object) -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        LlamaCppFlags(**{field: value})
    assert err.value.field == field and "\n" not in str(err.value)


def test_ollama_num_gpu_fits_the_most_layers(tiny) -> None:
    from vramwise.catalog.gpu_spec import Gpu
    from vramwise.workload.overheads import Overheads

    setup = InferSetup(overheads=Overheads(cuda_context_mib=0))
    flags = ollama_flags(num_ctx=1024)
    assert flags.fit_gpu_layers
    at_one = LlamaCppFlags(ctx_size=1024, flash_attn="off", n_gpu_layers=1, batch_size=512, ubatch_size=512)
    one = plan(tiny, setup, at_one, H100).estimate.peak_bytes
    # the solver's oracle is the plan itself at -ngl 1: a GPU of exactly that size fits one layer, a byte less none
    for size, layers in ((one, 1), (one - 1, 0), (10 * 2**30, L + 1)):
        gpu = Gpu(name="x", label="x", memory_bytes=size)
        fitted = plan(tiny, setup, flags, gpu)
        assert f"-ngl {layers} of {L + 1}" in " ".join(fitted.notes)


def test_quantized_kv_rows_are_padded_in_cuda_buffers() -> None:
    # gemma-2-2b: n_embd_k_gqa = 4 x 256 = 1024, a multiple of MATRIX_ROW_PADDING 512: no padding;
    # phi-2 (32 heads of 80 = 2560; 2560 % 512 = 0) neither. A 640-wide row (5 KV heads of 128) pads by
    # ggml_row_size(q8_0, 512 - 640 % 512 = 384) = 384 / 32 x 34 = 408 B per tensor (ggml-cuda.cu get_alloc_size).
    from vramwise.engines.llamacpp_context import cuda_row_padding as _cuda_row_padding

    assert _cuda_row_padding("q8_0", 1024) == 0
    assert _cuda_row_padding("q8_0", 640) == 384 // 32 * Q8_0
    assert _cuda_row_padding("f16", 640) == 0


def test_dispatch_entry_reads_batch_as_parallel(tiny) -> None:
    from vramwise.engines.llamacpp import llamacpp_plan

    est = llamacpp_plan(tiny, InferSetup(batch=4, context=1000), H100)
    # -np 4 from --batch, -c from the setup: 4 x 1000 tokens -> ceil(4000 / 4) = 1000 -> 1024 cells per stream
    assert (est.kv_tokens, est.max_sequences) == (4096, 4)


def test_pipeline_parallelism_keeps_four_copies_of_split_inputs() -> None:
    """Two GPUs, every layer and the output offloaded, split mode layer: llama_context turns on pipeline
    parallelism, and ggml_backend_sched_split_graph keeps GGML_SCHED_MAX_COPIES = 4 never-freed copies of each
    split input: on each GPU the incoming hidden state and the f32 mask, on the host the f32 mask (the token
    embeddings are not an input there: get_rows makes them). Public logs show it: DeepSeek-R1 (n_embd 7168) on
    8 ROCm GPUs, n_ctx 8192, n_ubatch 512: "ROCm_Host compute buffer size = 78.02 MiB" = 7168 x 512 x 4 B (14 MiB)
    + 4 x 8192 x 512 x 4 B (64 MiB)."""
    spec = resolve_model("llama-2-7b")
    setup = InferSetup(weight_format="q4_0")
    two = plan(spec, setup, LlamaCppFlags(ctx_size=4096, flash_attn="off"), H100, 2).estimate
    mib = 2**20
    assert two.term("compute/pipeline_copies").bytes == 4 * (4096 * 512 * 4 + 4096 * 512 * 4)  # 4 x (8 + 8) MiB
    assert {t.name: t.bytes for t in two.host}["host/compute_buffer"] == 8 * mib + 4 * 8 * mib
    # -ngl 32 leaves the output on the CPU: no pipeline parallelism, one mask, no copies
    partial = plan(spec, setup, LlamaCppFlags(ctx_size=4096, flash_attn="off", n_gpu_layers=32), H100, 2).estimate
    assert all(t.name != "compute/pipeline_copies" for p in partial.phases for t in p.transient)
    assert {t.name: t.bytes for t in partial.host}["host/compute_buffer"] == 8 * mib + 8 * mib


def _mixtral_8x22b():
    from vramwise.spec.adapters import spec_from_config

    config = {  # mistralai/Mixtral-8x22B-v0.1 config.json
        "model_type": "mixtral", "vocab_size": 32768, "hidden_size": 6144, "intermediate_size": 16384,
        "num_hidden_layers": 56, "num_attention_heads": 48, "num_key_value_heads": 8, "tie_word_embeddings": False,
        "max_position_embeddings": 65536, "torch_dtype": "bfloat16", "hidden_act": "silu", "num_local_experts": 8,
        "num_experts_per_tok": 2, "architectures": ["MixtralForCausalLM"],
    }
    return spec_from_config(config, name="mixtral-8x22b", source="test")


def test_four_gpu_layer_split_and_kv_per_gpu() -> None:
    """Mixtral 8x22B on 4 equal GPUs, -c 32000, every layer offloaded: act_gpu_layers = 57 (56 + the output);
    upper_bound over [0.25, 0.5, 0.75, 1] of il / 57 gives 15, 14, 14 and 13 layers (+ output on the last). KV per
    layer: K and V x 8 KV heads x 128 x 32000 cells x 2 B = 125 MiB. The same split and sizes appear in the corpus
    log bench/data/engine_logs/llamacpp-mixtral-8x22b-q4km-4xunnamed-tp1-1.log ("CUDA0 KV buffer size = 1875.00 MiB",
    1750, 1750, 1625; source https://huggingface.co/MaziyarPanahi/Mixtral-8x22B-Instruct-v0.1-GGUF/discussions/32),
    from an older llama.cpp (its compute buffer, 3366.04 MiB on CUDA0, is 3000 MiB of KQ scores
    32000 x 512 x 48 heads x 4 B plus the pipeline copies 4 x (12 + 62.5) MiB and hidden states)."""
    spec = _mixtral_8x22b()
    est = plan(spec, InferSetup(weight_format="q4_k_m"), LlamaCppFlags(ctx_size=32000, flash_attn="off"), H100, 4)
    layer_kv = 2 * 8 * 128 * 32000 * 2
    assert layer_kv == 125 * 2**20
    assert est.kv_pool is not None and est.kv_pool.bytes == 56 * layer_kv  # 7000 MiB
    notes = " ".join(est.notes)
    for gpu, layers in ((0, 15), (1, 14), (2, 14)):
        assert f"GPU{gpu}: {layers} layers, " in notes
    assert "GPU3: 13 layers + output" in notes
    assert est.estimate.bytes_of("kv_cache") == 15 * layer_kv  # the fullest GPU, GPU0: 1875 MiB
    assert est.estimate.term("compute/attention_scores").bytes == 32000 * 512 * 48 * 4
    assert est.estimate.term("compute/pipeline_copies").bytes == 4 * (6144 * 512 * 4 + 32000 * 512 * 4)


def test_tensor_split_weights_and_kv_add_up_over_gpus_and_host() -> None:
    from vramwise.engines.llamacpp import per_gpu

    spec = resolve_model("llama-2-7b")
    setup = InferSetup(weight_format="q8_0")
    flags = LlamaCppFlags(ctx_size=4096, tensor_split=(3, 1, 2))
    gpus = per_gpu(spec, setup, flags, 3)
    full = plan(spec, setup, flags, H100, 3)
    host = {t.name: t.bytes for t in full.estimate.host}
    weights = sum(e.bytes_of("weights") for e in gpus.values())
    # every layer once and the output once on some GPU, token_embd on the host: their sum is the whole model
    single = plan(spec, setup, LlamaCppFlags(ctx_size=4096), H100).estimate
    assert weights == single.bytes_of("weights")
    assert weights + host["host/weights"] == single.bytes_of("weights") + host["host/weights"]
    # KV: 32 layers x K and V x 4096 cells x 4096 values x 2 B, however split
    assert sum(e.bytes_of("kv_cache") for e in gpus.values()) == 32 * 2 * 4096 * 4096 * 2
    # cumulative shares [0.5, 0.667, 1] of il / 33: GPU0 il <= 16 (17 layers), GPU1 il 17..21 (5), GPU2 the rest
    layers = {d: e.term("weights/layers").formula.split(" ")[0] for d, e in gpus.items()}
    assert layers == {0: "17", 1: "5", 2: "10"}


def test_flash_attention_auto_follows_the_cuda_kernels() -> None:
    """-fa auto is on when ggml-cuda's fattn.cu has a kernel: head sizes 40..256 with V equal, K and V of one type
    among f16, q4_0, q8_0 (ggml_cuda_get_best_fattn_kernel, without GGML_CUDA_FA_ALL_QUANTS); otherwise llama_context
    turns it off, and a quantized V then stops it ("quantized V cache was requested, but this requires Flash
    Attention")."""
    spec = resolve_model("llama-2-7b")  # head size 128
    setup = InferSetup(weight_format="q4_0")

    def phase_terms(flags: LlamaCppFlags) -> set[str]:
        est = plan(spec, setup, flags, H100).estimate
        return {t.name for p in est.phases for t in p.transient}

    assert "compute/attention_scores" not in phase_terms(LlamaCppFlags(ctx_size=8192, cache_type_k="q8_0",
                                                                       cache_type_v="q8_0"))
    # K q8_0 with V f16: no kernel for mixed types, so the scores materialize (and the cache stays padded to 256)
    mixed = LlamaCppFlags(ctx_size=8000, cache_type_k="q8_0")
    assert "compute/attention_scores" in phase_terms(mixed)
    assert plan(spec, setup, mixed, H100).kv_tokens == 8192
    with pytest.raises(InvalidWorkloadError, match="quantized V cache was requested, but this requires Flash"):
        plan(spec, setup, LlamaCppFlags(cache_type_k="q4_1", cache_type_v="q4_1"), H100)


def test_tensor_split_text() -> None:
    from vramwise.workload.llamacpp_flags import parse_tensor_split

    assert parse_tensor_split("3,1") == (3.0, 1.0)
    assert parse_tensor_split("1/1/2") == (1.0, 1.0, 2.0)
    with pytest.raises(InvalidWorkloadError, match="--tensor-split"):
        parse_tensor_split("3,x")
    with pytest.raises(InvalidWorkloadError, match="not all zero"):
        LlamaCppFlags(tensor_split=parse_tensor_split("0,0"))


def _buffer_figures(spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu_count: int) -> dict[str, int]:
    """The plan's numbers as llama.cpp's log prints its buffers, per device: "CUDA0 KV buffer size" (gpu{i}/kv),
    "CUDA0 compute buffer size" (gpu{i}/compute), "CUDA_Host output buffer size" (host/output), and the KV summary
    "size = X MiB (N cells, ...), K (f16): X MiB, V (f16): X MiB" (kv_cells, kv_k, kv_v)."""
    # the budget plays no part in the buffers; a GPU the plan cannot overflow keeps fit_gpu_layers out of it
    whole = plan(spec, setup, flags, Gpu(name="figures", label="figures", memory_bytes=2**62), gpu_count)
    out: dict[str, int] = {}
    for i, est in sorted(per_gpu(spec, setup, flags, gpu_count).items()):
        out[f"gpu{i}/kv"] = sum(t.bytes for t in est.persistent if t.name.startswith("kv_cache/"))
        out[f"gpu{i}/compute"] = max((p.bytes for p in est.phases), default=0)
    out["host/output"] = {t.name: t.bytes for t in whole.estimate.host}.get("host/output_buffer", 0)
    out["kv_cells"] = whole.kv_tokens or 0
    out["kv_k"], out["kv_v"] = kv_totals(spec, setup, flags, gpu_count)
    return out


def test_figures_under_the_log_names() -> None:
    """The buffers llama.cpp's log prints, for Mixtral 8x22B on 4 GPUs at -c 32000 (the corpus log's setup):
    CUDA0..3 KV buffers 1875, 1750, 1750, 1625 MiB; K and V 3500 MiB each; the output buffer n_vocab x 1 x 4 B
    (0.12 MiB in that log). CUDA0's compute buffer by hand: 3000 MiB of scores + 24 MiB hidden + 4 copies of
    (12 MiB hidden + 62.5 MiB mask) = 3322 MiB; that log's failed allocation asked 3366.04 MiB (-1.3%: ggml-alloc's
    placement, not modelled)."""
    figures = _buffer_figures(_mixtral_8x22b(), InferSetup(weight_format="q4_k_m"),
                              LlamaCppFlags(ctx_size=32000, flash_attn="off"), 4)
    mib = 2**20
    assert [figures[f"gpu{i}/kv"] // mib for i in range(4)] == [1875, 1750, 1750, 1625]
    assert figures["kv_k"] == figures["kv_v"] == 3500 * mib
    assert figures["kv_cells"] == 32000
    assert figures["host/output"] == 32768 * 4
    assert figures["gpu0/compute"] == 32000 * 512 * 48 * 4 + 2 * 6144 * 512 * 4 + 4 * (6144 * 512 * 4 + 32000 * 512 * 4)


def test_setup_fields_llama_cpp_does_not_read_are_refused(tiny) -> None:
    from vramwise.engines.llamacpp import llamacpp_plan

    with pytest.raises(InvalidWorkloadError, match=r"llama\.cpp has no tensor parallelism") as err:
        llamacpp_plan(tiny, InferSetup(tp=2), H100, 2)
    assert err.value.field == "tp"
    with pytest.raises(InvalidWorkloadError, match="-ctk/--cache-type-k"):
        llamacpp_plan(tiny, InferSetup(kv_dtype="fp8"), H100)
    setup = InferSetup(batch=4)
    # the flags group InferSetup carries once --engine is wired (InferSetup.llamacpp); set by hand until then
    object.__setattr__(setup, "llamacpp", LlamaCppFlags(parallel=2))
    with pytest.raises(InvalidWorkloadError, match="--batch 4 and -np 2 disagree"):
        llamacpp_plan(tiny, setup, H100)


def test_block_types_must_divide_the_head_with_fa_auto() -> None:
    # phi-2: 32 heads of 80; 80 % 32 = 16, so a q8_0 K with -fa auto is refused (llama_init_from_model), while
    # -fa off stores whole rows of 32 x 80 = 2560 values, 80 blocks of 32
    spec = resolve_model("phi-2")
    with pytest.raises(InvalidWorkloadError, match="block size 32 does not divide n_embd_head=80"):
        plan(spec, InferSetup(), LlamaCppFlags(cache_type_k="q8_0"), H100)
    est = plan(spec, InferSetup(), LlamaCppFlags(ctx_size=1024, cache_type_k="q8_0", flash_attn="off"), H100)
    # 32 layers x 2560 / 32 blocks x 34 B x 1024 cells; 2560 % 512 == 0, so no CUDA row padding
    assert est.estimate.term("kv_cache/k").bytes == 32 * (2560 // 32 * Q8_0) * 1024


def test_refusals_name_the_allocation_that_fails() -> None:
    """llama.cpp allocates the model buffer (load_tensors), then the KV buffer (llama_kv_cache ctor), then the
    compute buffers (llama_context ctor): the first that does not fit stops it, in its own words."""
    from vramwise.catalog.gpu_spec import Gpu
    from vramwise.workload.overheads import Overheads

    spec = resolve_model("llama-2-7b")
    setup = InferSetup(weight_format="q4_0", overheads=Overheads(cuda_context_mib=0))
    flags = LlamaCppFlags(ctx_size=4096, flash_attn="off")
    roomy = plan(spec, setup, flags, H100).estimate
    weights, kv = roomy.bytes_of("weights"), roomy.bytes_of("kv_cache")

    def refusal(size: int) -> str | None:
        return plan(spec, setup, flags, Gpu(name="g", label="g", memory_bytes=size)).refusal_message

    assert refusal(weights - 1) == "unable to allocate CUDA0 buffer"
    assert refusal(weights + kv - 1) == "failed to allocate buffer for kv cache"
    assert refusal(roomy.peak_bytes - 1) == "failed to allocate compute pp buffers"
    assert refusal(roomy.peak_bytes) is None
    # a request longer than a sequence's cells: llama-server's words
    short = plan(spec, InferSetup(weight_format="q4_0", context=5000), flags, H100)
    assert short.refusal_message == "the request exceeds the available context size, try increasing it"
    assert short.max_sequences == 0


def test_capacity_fields() -> None:
    spec = resolve_model("llama-2-7b")  # 32 layers, n_embd_k_gqa 4096
    est = plan(spec, InferSetup(weight_format="q4_0", context=1000), LlamaCppFlags(ctx_size=8192, parallel=4), H100)
    assert est.kv_bytes_per_token == 32 * (4096 * 2 + 4096 * 2)  # one cell, K and V f16, every layer
    assert (est.context_len, est.concurrency, est.sequence_tokens, est.max_sequences) == (2048, 4.0, 1000, 4)
    unified = plan(spec, InferSetup(weight_format="q4_0", context=1000),
                   LlamaCppFlags(ctx_size=8192, parallel=4, kv_unified=True), H100)
    assert (unified.context_len, unified.max_sequences) == (8192, 4)  # 8192 // 1000 = 8, capped by -np 4


def test_ollama_switch_derives_the_runner_flags() -> None:
    """--ollama: -c per sequence becomes num_ctx x OLLAMA_NUM_PARALLEL, num_batch 512 (so -ub 512), -fa off unless
    on (OLLAMA_FLASH_ATTENTION), the KV type only with flash attention, and the layers fitted (num_gpu -1)."""
    from vramwise.catalog.gpu_spec import Gpu
    from vramwise.engines.llamacpp import llamacpp_plan

    spec = resolve_model("llama-3-8b")
    setup = InferSetup(weight_format="q4_k_m", context=8192)
    object.__setattr__(setup, "llamacpp", LlamaCppFlags(ollama=True, cache_type_k="q8_0"))
    est = llamacpp_plan(spec, setup, Gpu(name="6GiB", label="6GiB", memory_bytes=6 * 2**30))
    notes = " ".join(est.notes)
    assert "num_ctx 8,192 x 1 parallel, num_batch 512, flash attention off, KV f16" in notes
    assert est.kv_tokens == 8192  # GGML_PAD(8192, 32): -fa off pads to 32
    layers = int(notes.split(" of 33: the most layers that fit")[0].rsplit("-ngl ", 1)[1])
    assert 0 < layers < 33 and est.estimate.peak_bytes <= 6 * 2**30


def test_one_sequence_and_one_layer_are_singular(capsys: pytest.CaptureFixture[str]) -> None:
    """The newcomer trial read "1 concurrent sequences" and "-ngl 1: 1 layers ... on the CPU": a count of one
    takes the singular (Llama-3.1-8B has 32 layers: -ngl 31 leaves one on the CPU)."""
    from vramwise.cli import main

    assert main(["infer", "llama-3.1-8b", "--engine", "llama.cpp", "--gpu", "4090", "-f", "q4_k_m", "-ngl", "31"]) == 0
    out = capsys.readouterr().out
    assert "1 concurrent sequence of 2,048 tokens" in out and "1 concurrent sequences" not in out
    assert "-ngl 31: 1 layer and the output layer on the CPU" in out


def test_flash_attention_mask_cast_on_the_first_gpu_by_hand() -> None:
    """With flash attention the GPU of layer 0 holds the f32 mask's split-input copy and its f16 cast at once
    (llamacpp_compute.mask_cast_phase, ggml-backend.cpp / llama-graph.cpp as vendored by ollama v0.12.10).
    Llama-3.1-8B at -c 131072, -ub 512, q4_0 K and V: n_kv 131,072 cells, rows GGML_PAD(512, 64) = 512:
    f32 131072 x 512 x 4 B = 256 MiB, f16 128 MiB, layer 0's residual and normed input 2 x 4096 x 512 x 4 B = 16 MiB:
    400 MiB, above the logits' 128256 x 512 x 4 + 4096 x 512 x 4 B = 258.5 MiB."""
    spec = resolve_model("llama-3.1-8b")
    flags = LlamaCppFlags(ctx_size=131072, cache_type_k="q4_0", cache_type_v="q4_0", flash_attn="on")
    est = plan(spec, InferSetup(weight_format="q4_k_m"), flags, H100).estimate
    mib = 2**20
    assert est.peak_phase is not None and est.peak_phase.bytes == 400 * mib
    assert est.term("compute/kq_mask_input").bytes == 256 * mib
    # without flash attention the layers read the f32 input itself: no cast, no second copy
    off = plan(spec, InferSetup(weight_format="q4_k_m"), LlamaCppFlags(ctx_size=8192, flash_attn="off"), H100)
    assert all(t.name != "compute/kq_mask_input" for p in off.estimate.phases for t in p.transient)
    # with pipeline parallelism (4 GPUs, all offloaded) the split inputs are kept copies (compute/pipeline_copies)
    four = per_gpu(spec, InferSetup(weight_format="q4_k_m"), flags, 4)
    assert len(four) == 4
    assert all(t.name != "compute/kq_mask_input" for g in four.values() for p in g.phases for t in p.transient)

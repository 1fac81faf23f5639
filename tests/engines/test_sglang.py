"""SGLang's plan against its own startup arithmetic, written out here from the source the module cites
(server_args.py ServerArgs._handle_gpu_memory_settings, model_runner.py profile_max_num_token / init_memory_pool)."""

from __future__ import annotations

import pytest
from tiny_configs import FAMILIES

from vramwise.catalog.gpu_spec import get_gpu, parse_gpu
from vramwise.engines import sglang
from vramwise.errors import InvalidWorkloadError, UnsupportedArchitectureError, VramwiseError
from vramwise.estimate.cuda_context import context_term
from vramwise.spec.adapters import spec_from_config
from vramwise.workload import InferSetup, Overheads
from vramwise.workload.sglang_flags import SglangFlags

# the project's CUDA context without a GPU architecture (estimate/cuda_context.py; its rows are tested there)
CONTEXT = context_term(Overheads()).bytes

MIB, GIB = 2**20, 2**30


def _spec(name: str):
    return spec_from_config(FAMILIES[name], name=name, source="test")


@pytest.mark.parametrize(
    ("gpu_mem", "tp", "expected"),
    [
        (15360, 1, (2048, 8)),  # T4: under 20 GiB
        (24564, 1, (2048, 24)),  # 4090: under 35 GiB, tp < 4
        (24564, 4, (2048, 80)),
        (46068, 2, (4096, 32)),  # L40S: under 60 GiB
        (81559, 1, (8192, 256)),  # H100: under 90 GiB
        (81559, 8, (8192, 512)),
        (143771, 1, (8192, 256)),  # H200: under 160 GiB
        (183359, 1, (16384, 512)),  # B200
    ],
)
def test_defaults_by_gpu_memory(gpu_mem: int, tp: int, expected: tuple[int, int]) -> None:
    assert sglang.memory_defaults(gpu_mem, tp) == expected


def test_mem_fraction_static_by_hand() -> None:
    # H100 (81,559 MiB), tp 1: reserved = 512 + 1.5 x 8192 + 2 x 256 + 1 x 1 / 8 x 1024 = 13,440 MiB (> the 10 GiB
    # floor); (81,559 - 13,440) / 81,559 = 0.8352... -> 0.835
    assert sglang.mem_fraction_static(81559, chunk=8192, max_prefill_tokens=16384, graph_bs=256, tp=1) == 0.835
    # 4090 (24,564 MiB), tp 1: 512 + 3072 + 48 + 128 = 3,760 MiB; no floor under 60 GiB; 20,804 / 24,564 = 0.8469
    assert sglang.mem_fraction_static(24564, chunk=2048, max_prefill_tokens=16384, graph_bs=24, tp=1) == 0.847
    # H100 tp 8: 512 + 12288 + 1024 + 1024 = 14,848 MiB; 66,711 / 81,559 = 0.81795... -> 0.818
    assert sglang.mem_fraction_static(81559, chunk=8192, max_prefill_tokens=16384, graph_bs=512, tp=8) == 0.818
    # chunking off (-1): max(max_prefill_tokens, 2048) x 1.5 instead; 512 + 24576 + 512 + 128 = 25,728 MiB
    assert sglang.reserved_mib(81559, chunk=-1, max_prefill_tokens=16384, graph_bs=256, tp=1) == 25728


def test_token_pool_by_hand() -> None:
    spec, gpu = _spec("llama"), get_gpu("h100")
    setup = InferSetup(context=1000, new_tokens=24)
    got = sglang.plan(spec, setup, SglangFlags(mem_fraction_static=0.5, context_length=4096), gpu)
    # llama tiny: 3 layers, 2 KV heads of 256 / 8 = 32 dims, bf16: cell = 2 x 32 x 2 x 3 x 2 B = 768 B
    cell = 2 * 32 * 2 * 3 * 2
    weights = got.estimate.bytes_of("weights")
    free = gpu.memory_bytes - CONTEXT  # the CUDA context is gone before SGLang measures
    tokens = (int(0.5 * free) - weights) // cell
    assert got.kv_tokens == tokens
    assert got.budget == int(0.5 * free)
    assert got.kv_pool is not None and got.kv_pool.bytes == tokens * cell
    # requests: clamp(tokens / 4096 x 512, 2048, 4096) = 4096 here; the map is (4096 + 1) x (4096 + 4) int32
    assert got.estimate.term("sglang/req_to_token").bytes == 4097 * 4100 * 4
    assert got.max_sequences == min(4096, tokens // 2, tokens // 1024)
    assert got.max_context == 4096
    assert got.engine == "sglang" and got.version == sglang.VERSION


def test_page_size_and_caps() -> None:
    spec, gpu = _spec("llama"), get_gpu("h100")
    flags = SglangFlags(mem_fraction_static=0.5, max_total_tokens=100_001, page_size=16, max_running_requests=8)
    got = sglang.plan(spec, InferSetup(context=1000), flags, gpu)
    assert got.kv_tokens == 100_000  # capped, then rounded down to pages of 16
    assert got.max_sequences == 8  # --max-running-requests bounds the running batch
    # --max-running-requests 8 sizes the request map: (8 + 1) rows of context_len + 4 int32 slots
    context_len = spec.max_position_embeddings or 1000
    assert got.estimate.term("sglang/req_to_token").bytes == 9 * (context_len + 4) * 4
    # sequences of 1000 tokens take 63 pages of 16 = 1008 slots: 100,000 // 1008 = 99, above the 8 running
    assert got.max_sequences == min(8, 100_000 // 1008)


def test_mla_cell_is_the_latent() -> None:
    spec = _spec("deepseek_v3")
    att = spec.attention
    assert att.mla is not None
    cell = sglang.cell_size(spec, tp=2, kv_bytes=2)
    # model_runner: (kv_lora_rank + qk_rope_head_dim) x L x dtype, replicated on every tp rank
    assert cell == (att.mla.kv_lora_rank + att.mla.qk_rope_head_dim) * spec.num_layers * 2


def test_gqa_cell_splits_over_tp() -> None:
    spec = _spec("llama")  # 2 KV heads
    assert sglang.cell_size(spec, tp=2, kv_bytes=2) == 1 * 32 * 3 * 2 * 2
    assert sglang.cell_size(spec, tp=4, kv_bytes=2) == 1 * 32 * 3 * 2 * 2  # get_num_kv_heads: at least one


def test_not_enough_memory_is_said() -> None:
    spec = _spec("llama")
    got = sglang.plan(spec, InferSetup(context=128), SglangFlags(mem_fraction_static=0.01), parse_gpu("1GiB").gpu)
    assert got.kv_tokens == 0 and got.max_sequences == 0
    assert any("Not enough memory" in n for n in got.estimate.notes)


def test_terms_add_up_and_graphs_persist() -> None:
    got = sglang.plan(_spec("qwen2"), InferSetup(context=512), SglangFlags(), get_gpu("h100"))
    names = [t.name for t in got.estimate.persistent]
    assert "cuda_graphs" in names and "kv_cache" in names
    assert got.estimate.term("cuda_graphs").bytes == 256 * 2 * MIB
    assert got.estimate.peak_bytes == sum(t.bytes for t in got.estimate.terms)
    off = sglang.plan(_spec("qwen2"), InferSetup(context=512), SglangFlags(disable_cuda_graph=True), get_gpu("h100"))
    assert "cuda_graphs" not in [t.name for t in off.estimate.persistent]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mem_fraction_static", 0),
        ("mem_fraction_static", 1.5),
        ("chunked_prefill_size", 0),
        ("cuda_graph_max_bs", -3),
        ("page_size", 0),
        ("max_running_requests", True),
        ("disable_cuda_graph", "yes"),
    ],
)
def test_bad_flags_name_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        SglangFlags(**{field: value})
    assert err.value.field == field


def test_chunking_off_is_allowed() -> None:
    assert SglangFlags(chunked_prefill_size=-1).chunked_prefill_size == -1


def test_refusals_are_one_line() -> None:
    from tiny_configs import ENCODER_DECODER, JAMBA

    t5 = spec_from_config(ENCODER_DECODER["t5"], name="t5", source="test")
    jamba = spec_from_config(JAMBA, name="jamba", source="test")
    for spec in (t5, jamba):
        with pytest.raises(UnsupportedArchitectureError) as err:
            sglang.plan(spec, InferSetup(), SglangFlags(), get_gpu("h100"))
        assert "\n" not in str(err.value)
    with pytest.raises(VramwiseError):
        sglang.plan(_spec("llama"), InferSetup(tp=2), SglangFlags(), get_gpu("h100"), gpu_count=1)


# sglang 0.4.9.post2 server_args.py ServerArgs.__post_init__: reserved (MiB) by gpu_mem, fraction = round((gpu_mem -
# reserved) / gpu_mem, 3); cuda_graph_runner.py get_batch_sizes_to_capture for the largest graph batch
@pytest.mark.parametrize(
    ("gpu_mem", "tp", "expected"),
    [
        # below 35 GiB: (2.8 + tp / 10) x 1024 = 2,969.6 MiB; 21,594.4 / 24,564 = 0.8791; chunks 2048, 8 graphs
        (24564, 1, (2048, 8, 0.879)),
        # tp 4: 3,276.8 MiB; 21,287.2 / 24,564 = 0.8666; 80 graphs at tp >= 4
        (24564, 4, (2048, 80, 0.867)),
        # H100 (81,559 MiB, below 90 GiB): (9.5 + 2 / 2) x 1024 = 10,752; 70,807 / 81,559 = 0.8682; capture to 160
        (81559, 2, (8192, 160, 0.868)),
        # tp 8: (9.5 + 4) x 1024 = 13,824; 67,735 / 81,559 = 0.8305
        (81559, 8, (8192, 160, 0.831)),
        # H200 (143,771 MiB, below 160 GiB): (12 + 0.5) x 1024 = 12,800; 130,971 / 143,771 = 0.9110; capture to 256
        (143771, 1, (8192, 256, 0.911)),
        # above 160 GiB: 32 x 1024 = 32,768; 150,591 / 183,359 = 0.8213; chunks 16384, capture to 512
        (183359, 8, (16384, 512, 0.821)),
    ],
)
def test_version_04_defaults(gpu_mem: int, tp: int, expected: tuple[int, int, float]) -> None:
    assert sglang.defaults_v04(gpu_mem, tp) == expected


def test_version_04_plan_uses_its_fraction() -> None:
    spec, gpu = _spec("llama"), get_gpu("h100")
    got = sglang.plan(spec, InferSetup(context=512), SglangFlags(version="0.4"), gpu)
    free = gpu.memory_bytes - CONTEXT
    # H100's nvidia-smi total 81,559 MiB, tp 1: (9.5 + 0.5) x 1024 = 10,240; 71,319 / 81,559 = 0.8744
    assert got.budget == int(0.874 * free) and got.version == "0.4"
    assert got.estimate.term("cuda_graphs").bytes == 160 * 2 * MIB
    with pytest.raises(InvalidWorkloadError) as err:
        SglangFlags(version="0.3")
    assert err.value.field == "version"


def test_dispatch_entry_uses_the_defaults() -> None:
    spec, gpu = _spec("llama"), get_gpu("h100")
    assert sglang.sglang_plan(spec, InferSetup(), gpu) == sglang.plan(spec, InferSetup(), SglangFlags(), gpu)


def test_vision_language_default_fraction_is_named_as_not_modelled() -> None:
    from tiny_configs import VLM

    spec = spec_from_config(VLM["llava"], name="llava", source="test")
    got = sglang.plan(spec, InferSetup(), SglangFlags(), get_gpu("h100"))
    assert any("adjust_mem_fraction_for_vlm" in n for n in got.estimate.notes)


def test_hybrid_swa_pool_by_hand() -> None:
    # gpt-oss (GptOssForCausalLM is in SGLang's is_hybrid_swa_model list): layers alternate sliding and full;
    # tiny: 4 layers, 2 sliding, 2 KV heads of 32 dims, bf16: 2 x 2 x 32 x 2 B = 256 B per token per layer
    spec = spec_from_config({**FAMILIES["gpt_oss"], "num_hidden_layers": 4}, name="gpt_oss", source="test")
    assert spec.traits.sglang_hybrid_swa
    gpu = get_gpu("h100")
    got = sglang.plan(spec, InferSetup(context=1000), SglangFlags(mem_fraction_static=0.5), gpu)
    weights = got.estimate.bytes_of("weights")
    profiled = (int(0.5 * (gpu.memory_bytes - CONTEXT)) - weights) // (256 * 4)
    # set_num_token_hybrid: profiled x 4 token-layers = full x 2 + 0.8 x full x 2
    full = int(profiled * 4 / (0.8 * 2 + 2))
    swa = int(full * 0.8)
    assert got.kv_tokens == full
    assert got.kv_pool is not None and got.kv_pool.bytes == 256 * (full * 2 + swa * 2)
    # a sequence of 1000 tokens takes 1000 slots of the full pool and the window's 128 of the sliding one
    context_len = got.context_len or 0
    reqs = min(max(int(profiled / context_len * 512), 2048), 4096)  # from the pool before the split
    assert got.max_sequences == min(reqs, full // 2, full // 1000, swa // 128)
    plain = sglang.plan(_spec("llama"), InferSetup(context=1000), SglangFlags(mem_fraction_static=0.5), gpu)
    assert sglang.hybrid_swa_tokens(_spec("llama"), 1000) is None and plain.kv_pool is not None

"""vLLM's V0 engine plan, the 0.6 line (engines/vllm_v0.py): every term by hand arithmetic, with the source it follows.

Oracles: the arithmetic written out here, each step naming the vLLM (or torch) function it mirrors: vllm/worker/
worker.py Worker.determine_num_available_blocks (v0.6.4 at 6ae5229; memory_profiling in v0.6.5-v0.6.6), vllm/worker/
model_runner.py profile_run and _BATCH_SIZES_TO_CAPTURE, vllm/model_executor/layers/sampler.py _apply_top_k_top_p,
vllm/config.py SchedulerConfig (max(max_model_len, 2048); when chunked 512 at v0.6.4.post1, 2048 at v0.6.5 and
v0.6.6.post1), vllm/distributed/parallel_state.py GroupCoordinator.gather, pytorch CublasHandlePool.cpp
parseChosenWorkspaceSize; Meta-Llama-3-8B's published parameter count (8,030,261,248) and config (32 layers, 8 KV
heads, head_dim 128, h 4096, i 14336, V 128,256).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from vramwise.app.verify_log import compare_parsed, vllm_release
from vramwise.catalog import get_gpu
from vramwise.cli import main
from vramwise.engines.logs import load_log, parse_log
from vramwise.engines.vllm import vllm_figures, vllm_plan
from vramwise.engines.vllm_v0_terms import v0_batched_tokens, v0_capture_sizes
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.cuda_context import context_term
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup, Overheads

MIB = 2**20
# the project's CUDA context without a GPU architecture (estimate/cuda_context.py; its rows are tested there)
CONTEXT = context_term(Overheads()).bytes
H100 = get_gpu("h100-80gb")  # compute capability 9.0: torch's 32 MiB cuBLAS workspace
L4 = get_gpu("l4")
CORPUS = Path(__file__).resolve().parents[2] / "bench" / "data" / "engine_logs"
WEIGHTS = 8_030_261_248 * 2  # Meta-Llama-3-8B in bf16
# + the rotary table get_rope builds once for every layer (rotary_embedding.py RotaryEmbedding.__init__ at v0.6.4):
# max_position_embeddings x rotary_dim 128 (cos 64 + sin 64) x 2 B; Llama-3-8B 8,192 positions, Llama-3.1-8B
# 131,072 (rope_type llama3 keeps max_position: Llama3RotaryEmbedding passes it to RotaryEmbedding unchanged)
ROPE_L3 = 8192 * 128 * 2
ROPE_L31 = 131_072 * 128 * 2
PER_TOKEN = 32 * 2 * 8 * 128 * 2  # 32 layers x K and V x 8 KV heads x 128 x 2 B = 131,072 B
# NCCL 2.21.5 (torch 2.5.1), NCCL_CUMEM_ENABLE=0 (worker_base.py init_worker): H100 SXM's 32 ring channels x 12 MiB
# (p2p.cc: send 4,096 + SIMPLE 4 MiB -> 6 MiB, receive 4,096 + LL 524,288 + LL128 4,915,200 -> 6 MiB); at 2 ranks
# the tree's peer is the ring's
NCCL = 32 * 12 * MIB
GATHER = 32 * 6 * MIB  # the driver's receive connectors for the logits gather (test_tp_2_adds_nccl_...)


def _plan(model: str, gpu=H100, **flat):  # type: ignore[no-untyped-def]
    return vllm_plan(catalog_spec(model), InferSetup.from_flat(engine="vllm", **flat), gpu)


def _terms(p) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {t.name: t.bytes for t in p.estimate.persistent}


@pytest.mark.parametrize("release", ["0.6.4", "0.6.6"])
def test_batch_defaults_follow_the_0_6_scheduler_config(release: str) -> None:
    # SchedulerConfig: max(max_model_len, 2048) without chunked prefill; create_engine_config turns chunked prefill
    # on above 32K (not with a sliding window); a given value below max_model_len means chunked
    def batched(**kw):  # type: ignore[no-untyped-def]
        return v0_batched_tokens(release=release, **kw)

    assert batched(given=None, max_len=8192, sliding=False) == (8192, False)
    assert batched(given=None, max_len=1024, sliding=False) == (2048, False)
    assert batched(given=None, max_len=131072, sliding=True) == (131072, False)
    assert batched(given=512, max_len=8192, sliding=False) == (512, True)
    # chunked: v0.6.4.post1 SchedulerConfig.__init__ "max_num_batched_tokens = 512"; v0.6.5 and v0.6.6.post1
    # __post_init__ "max_num_batched_tokens = 2048" ("a balance between ITL and TTFT")
    assert batched(given=None, max_len=131072, sliding=False) == ({"0.6.4": 512, "0.6.6": 2048}[release], True)


def test_capture_sizes_follow_get_max_graph_batch_size() -> None:
    # [1, 2, 4] + [8 i for i in 1..1024] (v0.6.4.post1 _BATCH_SIZES_TO_CAPTURE, "..., 8192"; v0.6.6.post1
    # VllmConfig._set_cudagraph_sizes possible_sizes), up to max_num_seqs padded (<= 2 itself, <= 4 -> 4, else up to 8)
    assert v0_capture_sizes(256) == (1, 2, 4, *range(8, 257, 8)) and len(v0_capture_sizes(256)) == 35
    assert v0_capture_sizes(3) == (1, 2, 4)
    assert max(v0_capture_sizes(100)) == 104
    assert max(v0_capture_sizes(1024)) == 1024 and len(v0_capture_sizes(1024)) == 3 + 128
    assert max(v0_capture_sizes(10_000)) == 8192


def test_llama_3_8b_on_h100_term_by_term() -> None:
    p = _plan("llama-3-8b", vllm_version="0.6")
    t = _terms(p)
    assert p.version == "0.6.6"
    assert t["weights/rope_cache"] == ROPE_L3 == 2 * MIB
    assert sum(b for n, b in t.items() if n.startswith("weights/")) == WEIGHTS + ROPE_L3
    # profile_run: T = max(8192, 2048) = 8192 tokens over max_num_seqs 256 dummy sequence groups
    # one MLP's eager live set at down_proj (llama.py LlamaMLP.forward keeps gate_up as a local; the decoder layer
    # keeps the normed input): residual h + normed h + gate_up 2i + act i + down_proj's output h, bf16
    forward = 8192 * 2 * (3 * 4096 + 3 * 14336)
    # sampler: hidden 8192 x h, the pruned rows 256 x h, the bf16 logits 256 x 128,256 (a multiple of 64), and per
    # logit the larger moment of _apply_top_k_top_p: the scatter's 30 B (fp32 4, sort 4 + int64 8, masks 1 + 1,
    # softmax 4, cumsum 4, scatter 4) or the sort's 36 B (fp32 4, sort values 4 + int64 indices 8, and with 256 >= 128
    # rows SortStable.cu segmented_sort_pairs' reverse_indices 8 + cub's alternate keys 4 and values 8)
    sampler = 8192 * 4096 * 2 + 256 * 4096 * 2 + 256 * 128256 * 2 + 256 * 128256 * 36
    assert sampler == 1_316_880_384 and sampler > forward
    assert t["activations/profile_peak"] == sampler + 32 * MIB  # + the cuBLAS workspace on compute capability 9.0
    # memory_profiling (v0.6.5-v0.6.6): the context is in the baseline, and tp 1 has no NCCL: non-torch 0
    assert "overhead/nccl" not in t and vllm_figures(p)["non_torch"] == 0
    budget = int(0.9 * H100.memory_bytes)
    available = budget - WEIGHTS - ROPE_L3 - (sampler + 32 * MIB)
    assert p.budget == budget and vllm_figures(p)["available_kv_cache"] == available
    # CacheEngine.get_cache_block_size: 16 tokens x 131,072 B; num_gpu_blocks = available // that
    blocks = available // (16 * PER_TOKEN)
    assert t["kv_cache/pool"] == blocks * 16 * PER_TOKEN and p.kv_tokens == blocks * 16
    assert p.concurrency == blocks * 16 / 8192  # gpu_executor initialize_cache: blocks x block_size / max_model_len
    # capture_model: the pool of the largest batch, 256 tokens of the same MLP live set
    assert t["cuda_graphs"] == 256 * 2 * (3 * 4096 + 3 * 14336)
    assert p.refusal is None


def test_0_6_4_counts_the_cuda_context_inside_the_budget() -> None:
    # v0.6.4 determine_num_available_blocks: peak_memory += every byte used outside torch (the context included)
    p6, p4 = _plan("llama-3-8b", vllm_version="0.6"), _plan("llama-3-8b", vllm_version="0.6.4")
    assert p4.version == "0.6.4"
    assert vllm_figures(p4)["non_torch"] == CONTEXT  # the project's CUDA context default (--cuda-context)
    assert vllm_figures(p6)["available_kv_cache"] - vllm_figures(p4)["available_kv_cache"] == CONTEXT
    assert _plan("llama-3-8b", vllm_version="0.6.4", cuda_context_mib=300).kv_tokens >= p4.kv_tokens


def test_tp_2_adds_nccl_and_custom_all_reduce_and_the_driver_samples_full_rows() -> None:
    p = _plan("llama-3-8b", vllm_version="0.6", tp=2)
    t = _terms(p)
    assert t["overhead/nccl"] == NCCL and t["overhead/custom_all_reduce"] == 3 * 8 * MIB
    # the logits gather (GroupCoordinator.gather: torch.distributed.gather on device_group) makes torch's
    # ProcessGroupNCCL create its own communicator of the tp group in the profile run: the same size again
    assert t["overhead/nccl_torch"] == NCCL
    # the gather itself: one ncclRecv from rank 1 on the driver (torch/csrc/cuda/nccl.cpp gather), whose receive
    # connector NCCL v2.21.5-1 pre-connects on all p2pnChannelsPerPeer = nextPow2(min(32 channels, 2 x 18 NVLinks))
    # = 32 channels (enqueue.cc, paths.cc); p2p.cc p2pRecvSetup under P2P read: ncclRecvMem 4,096 + LL 524,288 +
    # LL128 4,915,200 = 5,443,584 B -> 6 MiB each
    assert t["overhead/nccl_gather"] == GATHER == 32 * 6 * MIB
    # the driver gathers the whole vocabulary (tensor_model_parallel_gather): the sampler term does not shrink
    sampler = 8192 * 4096 * 2 + 256 * 4096 * 2 + 256 * 128256 * 38  # bf16 2 + the sort's 36 B a logit
    assert t["activations/profile_peak"] == sampler + 32 * MIB
    weights = sum(b for n, b in t.items() if n.startswith("weights/"))
    available = int(0.9 * H100.memory_bytes) - weights - sampler - 32 * MIB - 2 * NCCL - GATHER - 24 * MIB
    assert p.kv_tokens == available // (16 * PER_TOKEN // 2) * 16  # 4 KV heads a rank: half the bytes a token


@pytest.mark.parametrize(("version", "chunk"), [("0.6", 2048), ("0.6.4", 512)])
def test_long_context_chunks_and_refuses_in_v0s_words(version: str, chunk: int) -> None:
    # Llama-3.1-8B: max_model_len 131,072 > 32K -> chunked prefill (SchedulerConfig: 2048 tokens from v0.6.5, 512 at
    # v0.6.4); on an L4 the pool is too small. v0.6.4 also counts the CUDA context inside the budget.
    p = _plan("llama-3.1-8b", gpu=L4, vllm_version=version)
    forward = chunk * 2 * (3 * 4096 + 3 * 14336)
    sampler = chunk * 4096 * 2 + 256 * 4096 * 2 + 256 * 128256 * 38  # bf16 2 + the sort's 36 B a logit
    ws = 4096 * 1024 * 2 + 16 * 1024 * 8  # CUBLAS_WORKSPACE_CONFIG ":4096:2:16:8" off Hopper (L4: 8.9)
    assert _terms(p)["activations/profile_peak"] == max(forward, sampler) + ws
    context = CONTEXT if version == "0.6.4" else 0
    blocks = (int(0.9 * L4.memory_bytes) - WEIGHTS - ROPE_L31 - sampler - ws - context) // (16 * PER_TOKEN)
    assert p.refusal == "max_model_len larger than the KV cache" and p.refusal_message is not None
    assert p.refusal_message.startswith(
        f"The model's max seq len (131072) is larger than the maximum number of tokens that can be stored in KV "
        f"cache ({blocks * 16})."
    )


@pytest.mark.parametrize(
    ("model", "flat", "field"),
    [
        ("deepseek-v2-lite", {}, "vllm_version"),  # MLA: the 0.6 line cached full heads
        ("llama-3-8b", {"kv_block": 1}, "kv_block"),
        ("llama-3-8b", {"kv_cache_memory_bytes": 2**30}, "kv_cache_memory"),
        ("llama-3-8b", {"kv_dtype": "bf16"}, "kv_dtype"),
    ],
)
def test_what_0_6_cannot_do_is_one_line(model: str, flat: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        _plan(model, vllm_version="0.6", **flat)
    assert err.value.field == field and "\n" not in str(err.value)


def _cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def test_vllm_version_option_plumbing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(["infer", "llama-3-8b", "--gpu", "h100", "--engine", "vllm", "--vllm-version", "0.6", "--json"])
    data = json.loads(out)
    assert code == 0 and data["setup"]["vllm_version"] == "0.6"
    assert _cli(["infer", "llama-3-8b", "--gpu", "h100", "--engine", "vllm", "--vllm-version", "0.7"])[0] == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vLLM version '0.7' is not modelled; allowed: 0.11, 0.8, 0.6, 0.6.4" in err
    assert _cli(["infer", "llama-3-8b", "--gpu", "h100", "--vllm-version", "0.6"])[0] == 2  # not with --engine hf
    assert "add --engine vllm" in capsys.readouterr().err


def _parsed(text: str):  # type: ignore[no-untyped-def]
    return parse_log(text)


@pytest.mark.parametrize(
    ("version", "release", "noted"),
    [("0.6.4.post1", "0.6.4", False), ("0.6.3.post1", "0.6.4", True), ("0.6.5", "0.6", False),
     ("0.6.6.post1", "0.6", False), ("0.6.1", "0.6.4", True), ("0.7.3", None, False), ("0.11.0", None, False)],
)
def test_verify_log_picks_the_release_from_the_logged_version(version: str, release: str | None, noted: bool) -> None:
    # vllm/engine/llm_engine.py (V0): "Initializing an LLM engine (v%s) with config: ..."
    parsed = _parsed(f"INFO llm_engine.py:249] Initializing an LLM engine (v{version}) with config: model='m'\n"
                     "INFO gpu_executor.py:76] # GPU blocks: 5691, # CPU blocks: 2048")
    chosen, note = vllm_release(parsed)
    assert chosen == release and (note is not None) == noted


def test_verify_log_places_an_unversioned_log_by_its_wording() -> None:
    one_line = ("Loading model weights took 14.9888 GB\nMemory profiling results: total_gpu_memory=23.58GiB "
                "initial_memory_usage=15.34GiB peak_torch_memory=17.06GiB memory_usage_post_profile=15.35GiB "
                "non_torch_memory=0.35GiB kv_cache_size=3.81GiB gpu_memory_utilization=0.90")
    assert vllm_release(_parsed(one_line))[0] == "0.6.4"
    profiling = ("INFO model_runner.py:1099] Loading model weights took 14.9595 GB\nINFO worker.py:241] the current "
                 "vLLM instance can use total_gpu_memory (39.50GiB) x gpu_memory_utilization (0.90) = 35.55GiB")
    assert vllm_release(_parsed(profiling))[0] == "0.6"
    v1 = ("INFO gpu_model_runner.py:1316] Model loading took 14.9889 GiB and 3.65 seconds\nINFO worker.py:241] the "
          "current vLLM instance can use total_gpu_memory (39.50GiB) x gpu_memory_utilization (0.90) = 35.55GiB")
    assert vllm_release(_parsed(v1)) == (None, None)


def test_corpus_log_of_0_6_4_by_hand() -> None:
    # bench/data/engine_logs/vllm-llama31-8b-rtx3090-tp1-1.log (vLLM issue #10517): the one-line 0.6.4 report;
    # max_model_len 20000 from its "Maximum concurrency for 20000 tokens per request" line; GPU: its 23.58 GiB
    c = compare_parsed(load_log(CORPUS / "vllm-llama31-8b-rtx3090-tp1-1.log"), model="llama-3.1-8b")
    assert c.modelled_version == "0.6.4" and c.options["max_model_len"] == 20000
    rows = {r.name: r.estimate for r in c.rows}
    total = rows["gpu_total"]  # the log's 23.58 GiB in bytes (verify --log's GPU)
    assert total is not None and abs(total - 23.58 * 2**30) < 1
    forward = 20000 * 2 * (3 * 4096 + 3 * 14336)  # T = max(20000, 2048), below 32K: not chunked; eager live set
    ws = 4096 * 1024 * 2 + 16 * 1024 * 8  # a GPU given by its size has no compute capability: the default size
    # allocated_bytes.all.peak, the weights and the rotary table in it
    assert rows["torch_peak"] == WEIGHTS + ROPE_L31 + forward + ws
    assert rows["non_torch"] == CONTEXT
    assert rows["kv_cache"] == int(0.9 * int(total)) - WEIGHTS - ROPE_L31 - forward - ws - CONTEXT


def test_tp_2_counts_torch_s_own_nccl_communicator_in_every_0_6_release() -> None:
    # The profile run's logits gather (v0.6.4.post1-v0.6.6.post1 parallel_state.py GroupCoordinator.gather:
    # torch.distributed.gather(..., group=self.device_group); torch 2.5.1 ProcessGroupNCCL::gather -> collective())
    # is the tp device_group's first collective: torch's ProcessGroupNCCL creates its communicator there, after
    # memory_profiling's baseline. v0.6.4's eager all-reduces above custom all-reduce's 8 MiB reach it too (PyNccl
    # disabled outside graph capture); from v0.6.5 PyNccl takes those, but the gather still goes to torch.
    # NCCL v2.21.5-1 p2p.cc: 12 MiB per ring channel (6 MiB send + 6 MiB receive under P2P read), 32 channels.
    per = 32 * 12 * MIB
    for version in ("0.6.4", "0.6"):
        p = _plan("llama-3-8b", vllm_version=version, tp=2)
        t = _terms(p)
        assert t["overhead/nccl"] == per and t["overhead/nccl_torch"] == per
        context = CONTEXT if version == "0.6.4" else 0
        assert vllm_figures(p)["non_torch"] == per + per + GATHER + 24 * MIB + context


def test_nvls_buffers_per_communicator_from_nccl_2_21_5() -> None:
    from vramwise.estimate.nccl import nvls_bytes_v2_21 as nvls_bytes

    # src/transport/nvls.cc ncclNvlsSetup: 16 channels x 2 x (128 KiB x 8 steps + 2 MiB) x nHeads; off at <= 2 GPUs
    assert nvls_bytes(2) == 0
    assert nvls_bytes(4) == 16 * 2 * (1 * MIB + 2 * MIB) * 4 == 384 * MIB
    assert nvls_bytes(8) == 768 * MIB
    # on an H100 SXM node at tp 4 the tp communicator holds them, beside its rings and (no runtime connect in
    # 2.21.5, init.cc initTransportsRank) its trees: 32 x 12 MiB each; custom all-reduce (full NVLink) 24 MiB
    t = _terms(_plan("llama-3-8b", vllm_version="0.6", tp=4))
    assert t["overhead/nccl"] == 32 * 12 * MIB + 32 * 12 * MIB + 384 * MIB
    assert t["overhead/custom_all_reduce"] == 24 * MIB
    # PCIe (L4): 2 ring channels and 2 tree channels of 12 MiB, no NVLS, and no custom all-reduce above 2 GPUs
    t = _terms(_plan("llama-3-8b", gpu=L4, vllm_version="0.6", tp=4))
    assert t["overhead/nccl"] == 4 * 12 * MIB and "overhead/custom_all_reduce" not in t
    # the gather over PCIe: 3 peers x 2 channels (paths.cc ncclTopoGetNchannels: 2 off NVLink) x a receive connector
    # without P2P read, ncclRecvMem 4,096 + SIMPLE 4 MiB + LL 524,288 + LL128 4,915,200 = 9,637,888 B -> 10 MiB
    assert t["overhead/nccl_gather"] == 3 * 2 * 10 * MIB


def test_eager_live_set_adds_the_last_projections_output_by_hand() -> None:
    # vllm/model_executor/models/llama.py: LlamaMLP.forward keeps gate_up as a local across down_proj and the decoder
    # layer keeps the normed input across self.mlp, so down_proj's output (h) joins residual h + normed h + gate_up
    # 2i + act i; LlamaAttention.forward keeps qkv and attn_output across o_proj. A compiled (V1) forward frees them.
    from vramwise.engines.vllm_terms import forward_live

    spec = catalog_spec("llama-3-8b")  # h 4096, i 14336, 32 heads and 8 KV heads of 128
    assert forward_live(spec, tokens=100, c=2, tp=1)[0] == 100 * 2 * (2 * 4096 + 3 * 14336)
    assert forward_live(spec, tokens=100, c=2, tp=1, eager=True)[0] == 100 * 2 * (3 * 4096 + 3 * 14336)
    # tp 2: i 7168 a rank; attention 3h + qkv (16 + 2 x 4) x 128 + out 16 x 128 = 17,408 < the MLP's 33,792
    assert forward_live(spec, tokens=100, c=2, tp=2, eager=True)[0] == 100 * 2 * (3 * 4096 + 3 * 7168)


def test_awq_corpus_log_by_hand_and_against_the_hub_s_shard_sizes() -> None:
    # bench/data/engine_logs/vllm-qwen25-32b-awq-a6000-tp1-1.log (vLLM issue #10360, 0.6.4.post1): Qwen2.5-32B-
    # Instruct-AWQ (h 5120, i 27648, 64 layers, 40 heads / 8 KV heads, V 152,064), --max-model-len 4096, 47.54 GiB
    config = CORPUS / "configs" / "qwen2.5-32b-instruct.json"
    c = compare_parsed(load_log(CORPUS / "vllm-qwen25-32b-awq-a6000-tp1-1.log"), model=str(config),
                       options={"format": "awq-4bit-g128", "max_model_len": 4096})
    rows = {r.name: r.estimate for r in c.rows}
    total, peak, non_torch = rows["gpu_total"], rows["torch_peak"], rows["non_torch"]
    assert total is not None and peak is not None and non_torch is not None
    weights = rows["initial_usage"] - non_torch  # type: ignore[operator]  # 0.6.4's usage after load: weights + context
    # the hub's five shards at 251a85a: 3.94 + 3.98 + 3.95 + 3.98 + 3.48 GB, each printed to 0.01 GB
    assert abs(weights - 19.33e9) <= 5 * 0.005e9
    # profile run: T = max(4096, 2048) tokens over 256 sequence groups; the sampler at torch.sort (256 >= 128 rows:
    # fp32 4 + values 4 + int64 indices 8 + scratch 20 B a logit, beside the bf16 logits 2 B) outweighs the eager MLP
    # (residual h + normed h + gate_up 2i + act i + down_proj's output h)
    forward = 4096 * 2 * (3 * 5120 + 3 * 27648)
    sampler = 4096 * 5120 * 2 + 256 * 5120 * 2 + 256 * 152064 * 2 + 256 * 152064 * 36
    ws = 4096 * 1024 * 2 + 16 * 1024 * 8  # a GPU given by its size: the default cuBLAS workspace
    assert sampler > forward and peak == weights + sampler + ws
    assert rows["kv_cache"] == int(0.9 * int(total)) - peak - non_torch

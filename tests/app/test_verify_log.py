"""``vramwise verify --log``: a startup log's figures beside the engine plan built from the log's own setup.

Oracles: arithmetic written out here (Meta-Llama-3-8B's published parameter count, its KV bytes per token from
its config, the log's digits times 2^30), and vLLM's own printing rules for the tolerance (half a unit of the last
printed digit). The logs are small fixtures in vLLM 0.11's wording (tests/engines/test_logs.py quotes the source).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vramwise.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"
CORPUS = Path(__file__).resolve().parents[2] / "bench" / "data" / "engine_logs"
GIB = 2**30

# vLLM 0.11 (V1) wording: vllm/v1/engine/core.py "Initializing a V1 LLM engine (v%s) with config: %s";
# gpu_model_runner.py "Model loading took %.4f GiB memory and %.6f seconds"; gpu_worker.py "Available KV cache
# memory: %.2f GiB" and the usage report; kv_cache_utils.py "GPU KV cache size: %s tokens, Maximum concurrency ...".
LOG = """\
INFO 11-02 08:00:01 [core.py:93] Initializing a V1 LLM engine (v0.11.0) with config: \
model='meta-llama/Meta-Llama-3-8B', dtype=torch.bfloat16, max_seq_len=8192, tensor_parallel_size=1, \
quantization=None, enforce_eager=False, kv_cache_dtype=auto
INFO 11-02 08:01:10 [gpu_model_runner.py:2653] Model loading took 14.9595 GiB memory and 20.1 seconds
INFO 11-02 08:01:31 [gpu_worker.py:298] Available KV cache memory: 1.00 GiB
INFO 11-02 08:01:32 [kv_cache_utils.py:1087] GPU KV cache size: 8,192 tokens, Maximum concurrency for 8,192 \
tokens per request: 1.00x
DEBUG 11-02 08:01:50 [gpu_worker.py:420] Free memory on device (78.52/79.19 GiB) on startup. Desired GPU memory \
utilization is (0.9, 71.27 GiB). Actual usage is 14.96 GiB for weight, 1.2 GiB for peak activation, 0.1 GiB for \
non-torch memory, and 0.6 GiB for CUDAGraph memory.
"""
# --kv-cache-memory-bytes 1 GiB fixes the pool, so the KV rows are hand arithmetic: Llama-3-8B (config: 32 layers,
# 8 KV heads, head_dim 128) holds K and V in bf16: 32 x 8 x 128 x 2 x 2 B = 131,072 B per token; vLLM's block of
# 16 tokens is 2 MiB over all layers, so 1 GiB is 512 blocks = 8,192 tokens, one request of max_model_len 8,192.
KV_ARGS = ["--kv-cache-memory-bytes", str(GIB)]


def _log(tmp_path: Path, text: str = LOG, name: str = "vllm.log") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _json(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["verify", "--log", _log(tmp_path), *KV_ARGS, "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_table_lists_every_logged_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--log", _log(tmp_path), *KV_ARGS]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[3:] if line and not line.startswith(("note", "("))}
    logged = {"weights", "kv_cache", "kv_tokens", "max_concurrency", "gpu_total", "gpu_free", "activation_peak",
              "non_torch", "cuda_graphs"}
    assert logged <= set(rows)
    assert "not modelled" in rows["gpu_free"]  # free memory at startup depends on the machine, not the plan
    assert "14.9595 GiB" in rows["weights"] and "14.95948 GiB" in rows["weights"]  # 16,062,619,648 / 2^30
    assert "8,192 tokens" in rows["kv_tokens"] and "yes" in rows["kv_tokens"]
    assert "model: catalog llama-3-8b, whose hub id is the logged meta-llama/Meta-Llama-3-8B" in out
    assert "GPU the log's CUDA total 79.19 GiB" in out


def test_errors_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r["name"]: r for r in _json(tmp_path, capsys)["rows"]}
    w = rows["weights"]
    # Meta-Llama-3-8B: 8,030,261,248 parameters (its safetensors index), bf16: 2 B each, and the rotary table vLLM
    # builds once at load (rotary_embedding.py RotaryEmbedding.__init__): 8,192 positions x 128 x 2 B = 2,097,152
    assert w["estimate"] == 8_030_261_248 * 2 + 8192 * 128 * 2 == 16_062_619_648
    assert w["logged"] == 16_062_640_816  # 14.9595 x 2^30 = 15,032,385,536 + 1,030,255,280.128
    assert w["error"] == 16_062_619_648 - 16_062_640_816 == -21_168
    assert w["relative_error"] == pytest.approx(-21_168 / 16_062_640_816)
    assert w["tolerance"] == 53_688  # %.4f: half of 0.0001 GiB = 53,687.09 B, rounded up
    assert w["within_tolerance"] is True  # the logged figure's own rounding (without the table: -2,118,320 B, out)
    assert rows["kv_tokens"]["estimate"] == 8192 and rows["kv_tokens"]["error"] == 0
    assert rows["kv_cache"]["estimate"] == GIB and rows["kv_cache"]["logged"] == GIB
    assert rows["max_concurrency"]["estimate"] == pytest.approx(1.0)
    # 79.19 x 2^30 = 84,825,604,096 + 204,010,946.56: the plan's GPU is the log's total to the byte
    assert rows["gpu_total"]["estimate"] == rows["gpu_total"]["logged"] == 85_029_615_043
    assert rows["gpu_free"]["modelled"] is False and rows["gpu_free"]["estimate"] is None


def test_logged_flags_become_options_and_the_command_line_overrides_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _json(tmp_path, capsys)
    assert out["options"]["max_model_len"] == 8192 and out["options"]["tp"] == 1
    assert out["options"]["gpu_util"] == 0.9  # "Desired GPU memory utilization is (0.9, ...)"
    assert out["logged_version"] == "0.11.0" and out["modelled_version"] == "0.11.0"
    over = _json(tmp_path, capsys, "--max-model-len", "4096")
    assert over["options"]["max_model_len"] == 4096
    assert {r["name"]: r for r in over["rows"]}["max_concurrency"]["estimate"] == pytest.approx(2.0)  # 512 / 256


def test_model_override_and_gpu_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(tmp_path, capsys, "--model", "llama-3.1-8b", "--gpu", "H100")
    assert out["model"] == "llama-3.1-8b"
    assert any("as given with --model" in n for n in out["notes"])
    # the log prints its CUDA total (79.19 GiB on the DEBUG line): --gpu names the kind, the log the bytes
    assert out["gpu"] == "H100 with the log's CUDA total 79.19 GiB"
    assert out["gpu_bytes"] == round(79.19 * GIB)
    assert {r["name"]: r for r in out["rows"]}["gpu_total"]["estimate"] == round(79.19 * GIB)


def test_a_named_gpu_sets_the_interconnect_of_a_log_with_its_total(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A tp 2 log: its bytes-only GPU leaves NCCL's interconnect assumed; --gpu l40s (PCIe, catalog form factor)
    sizes the communicators as PCIe while the budget stays the log's total."""
    text = LOG.replace("tensor_parallel_size=1", "tensor_parallel_size=2")
    path = _log(tmp_path, text)
    assert main(["verify", "--log", path, *KV_ARGS, "--json"]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert main(["verify", "--log", path, *KV_ARGS, "--gpu", "l40s", "--json"]) == 0
    named = json.loads(capsys.readouterr().out)
    assert bare["gpu_bytes"] == named["gpu_bytes"] == round(79.19 * GIB)
    link = [n for n in bare["notes"] if "the interconnect" in n]
    assert len(link) == 1 and "the interconnect assumed nvswitch" in link[0]
    link = [n for n in named["notes"] if "the interconnect" in n]
    assert len(link) == 1 and "the interconnect pcie from l40s's form factor" in link[0]


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vramwise: error: ") and words in err, err


def test_unknown_log_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _log(tmp_path, "hello\nthis is not an engine log\n", "x.log")
    _one_line_exit_2(capsys, ["verify", "--log", path], "not a startup log of vLLM, SGLang or llama.cpp")


def test_a_log_without_its_model_or_gpu_asks_for_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_model = LOG.replace("model='meta-llama/Meta-Llama-3-8B', ", "")
    _one_line_exit_2(capsys, ["verify", "--log", _log(tmp_path, no_model)], "give it with --model")
    no_gpu = "\n".join(line for line in LOG.replace(" \\\n", " ").splitlines() if "Free memory" not in line)
    path = _log(tmp_path, no_gpu, "g.log")
    _one_line_exit_2(capsys, ["verify", "--log", path], "give the GPU with --gpu")


def test_a_model_outside_the_catalog_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_exit_2(capsys, ["verify", "--log", _log(tmp_path), "--model", "no-such-model"], "unknown model")


def test_log_options_are_refused_without_log(capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_exit_2(capsys, ["verify", "llama-3-8b", "--model", "llama-3-8b"], "--model applies to verify --log")
    _one_line_exit_2(capsys, ["verify"], "verify needs MODEL")


def test_an_engine_without_a_plan_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from vramwise.app.engines import PLANS
    from vramwise.workload.engines import Engine

    if Engine.LLAMA_CPP in PLANS:
        pytest.skip("llama.cpp's plan has landed")
    path = str(CORPUS / "llamacpp-mixtral-8x22b-q4km-4xunnamed-tp1-1.log")
    _one_line_exit_2(capsys, ["verify", "--log", path], "memory plan is not built yet")


def test_sglang_corpus_log(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(CORPUS / "sglang-qwen3-235b-a22b-fp8-h100-tp4-1.log")
    # the log names a local path and no GPU total: a catalog model and GPU stand in, said in the notes
    assert main(["verify", "--log", path, "--model", "qwen3-30b-a3b", "--gpu", "4xH100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in out["rows"]}
    assert {"kv_tokens", "kv_cache"} <= names and out["options"]["mem_fraction_static"] == 0.93


def test_verify_log_imports_no_torch(tmp_path: Path) -> None:
    path = _log(tmp_path)
    code = (
        "import sys; from vramwise.cli import main; "
        f"rc = main(['verify', '--log', {path!r}, '--kv-cache-memory-bytes', '{GIB}']); "
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules); "
        "print('HEAVY', heavy, rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "HEAVY [] 0" in out.stdout, out.stdout + out.stderr


def test_llamacpp_corpus_log_per_device(capsys: pytest.CaptureFixture[str]) -> None:
    from vramwise.app.engines import PLANS
    from vramwise.workload.engines import Engine

    if Engine.LLAMA_CPP not in PLANS:
        pytest.skip("llama.cpp's plan has not landed")
    path = str(CORPUS / "llamacpp-mixtral-8x22b-q4km-4xunnamed-tp1-1.log")
    # the log names no model file: a catalog model stands in (--model), its -c 32000 and f16 cache types as logged
    argv = ["verify", "--log", path, "--model", "mixtral-8x7b", "--gpu", "4xH100", "-f", "q4_k_m", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["rows"]}
    assert out["options"]["ctx_size"] == 32000 and out["options"]["cache_type_k"] == "f16"
    assert rows["kv_cache"]["rank"] == "CUDA0" and rows["kv_cache"]["modelled"]
    # Mixtral-8x7B (config: 32 layers, 8 KV heads x 128): f16 K and V, 32,000 cells, all layers over the 4 GPUs
    assert rows["kv_cache_total"]["estimate"] == 32 * 32_000 * 8 * 128 * 2 * 2
    assert rows["kv_cache_k"]["estimate"] == rows["kv_cache_v"]["estimate"] == 32 * 32_000 * 8 * 128 * 2
    # the compute buffer that failed (ggml_gallocr_reserve_n, exact bytes) is set beside the plan's; this
    # llama-cpp-python 0.2.62 build prints no flash_attn line, so it predates flash attention: -fa off
    assert rows["compute_buffer"]["rank"] == "CUDA0" and rows["compute_buffer"]["modelled"]
    assert out["options"]["flash_attn"] == "off"


def test_max_model_len_from_the_concurrency_line(capsys: pytest.CaptureFixture[str]) -> None:
    """vllm #10517's RTX 3090 log names no flag but prints "Maximum concurrency for 20000 tokens per request:
    1.56x": vLLM prints model_config.max_model_len there, so the plan is set up for 20,000 tokens, not the model's
    131,072 (which no KV pool of that GPU holds: the estimate used to read 0.00x, -100%)."""
    log = str(CORPUS / "vllm-llama31-8b-rtx3090-tp1-1.log")
    assert main(["verify", "--log", log, "--model", "llama-3.1-8b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"]["max_model_len"] == 20000
    rows = {r["name"]: r for r in out["rows"]}
    kv_tokens = rows["kv_cache"]["estimate"] // 131_072  # Llama-3.1-8B: 32 x 8 x 128 x 2 x 2 B per token
    assert rows["max_concurrency"]["estimate"] == pytest.approx(kv_tokens / 20000, abs=0.01)
    assert rows["max_concurrency"]["estimate"] > 0
    assert any("max_model_len=20000" in n and "Maximum concurrency" in n for n in out["notes"])


def test_a_logged_cuda_total_is_not_called_a_bare_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU taken from the log's own CUDA total: the note for a size typed by hand ("a real GPU shows CUDA a
    few hundred MiB less") would contradict the header, which says the total is CUDA's."""
    assert main(["verify", "--log", _log(tmp_path), *KV_ARGS]) == 0
    out = capsys.readouterr().out
    assert "GPU the log's CUDA total 79.19 GiB" in out
    assert "a few hundred MiB less" not in out
    assert main(["verify", "--log", _log(tmp_path), *KV_ARGS, "--gpu", "80GiB"]) == 0
    assert "a few hundred MiB less" in capsys.readouterr().out  # a size the user gave keeps its note


def test_llamacpp_logged_flash_attn_becomes_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    """llama.cpp logs "flash_attn = 0" (cparams.flash_attn printed with %d before -fa auto; "enabled"/"disabled"/
    "auto" after it): the plan follows the logged choice instead of its own -fa auto, and an unknown value is one
    line naming the field."""
    from vramwise.app.verify_log import logged_options
    from vramwise.engines.logs import load_log

    off, _ = logged_options(load_log(CORPUS / "llamacpp-llama2-7b-f16-4xunnamed-tp1-1.log"))
    on, _ = logged_options(load_log(CORPUS / "llamacpp-llama31-8b-q4kv-unnamed-tp1-1.log"))
    assert off["flash_attn"] == "off" and on["flash_attn"] == "on"
    log = str(CORPUS / "llamacpp-llama2-7b-f16-4xunnamed-tp1-1.log")
    argv = ["verify", "--log", log, "--model", "llama-2-7b", "--gpu", "4xH100", "-ngl", "32", "--json"]
    assert main(argv) == 0
    logged_off = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert main([*argv, "-fa", "on"]) == 0  # the command line overrides the log
    forced_on = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    # without flash attention the prompt graph holds the attention scores: a larger compute buffer
    assert logged_off["compute_buffer"]["estimate"] > forced_on["compute_buffer"]["estimate"]


def test_llamacpp_unknown_flash_attn_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (CORPUS / "llamacpp-llama2-7b-f16-4xunnamed-tp1-1.log").read_text(encoding="utf-8")
    path = _log(tmp_path, text.replace("flash_attn = 0", "flash_attn = maybe"), "llama.log")
    assert main(["verify", "--log", path, "--model", "llama-2-7b", "--gpu", "4xH100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flash_attn" in err[0] and "maybe" in err[0]


def test_a_log_without_gpu_p2p_is_planned_with_nccl_in_host_memory(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """vLLM's custom_all_reduce.py warns "Custom allreduce is disabled because your platform lacks GPU P2P
    capability" when _can_p2p fails: NCCL then runs its SHM transport (host memory), read as --interconnect shm."""
    text = LOG.replace("tensor_parallel_size=1", "tensor_parallel_size=2") + (
        "(VllmWorker TP0 pid=1) WARNING 11-02 08:01:00 [custom_all_reduce.py:147] Custom allreduce is disabled because "
        "your platform lacks GPU P2P capability or P2P test failed. To silence this warning, specify "
        "disable_custom_all_reduce=True explicitly.\n")
    assert main(["verify", "--log", _log(tmp_path, text), *KV_ARGS, "--gpu", "l40s", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"]["interconnect"] == "shm"
    assert any("interconnect=shm" in n for n in out["notes"])
    assert any("without GPU peer-to-peer access" in n for n in out["notes"])


def test_a_size_given_with_gpu_replaces_the_logged_total(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--gpu 24GiB names no kind, only a total: the plan runs on 24 x 2^30 bytes (verify's --help: "the GPU instead
    of one of the CUDA total the log reports"), not on the log's 79.19 GiB with the size's name beside it."""
    out = _json(tmp_path, capsys, "--gpu", "24GiB")
    assert out["gpu_bytes"] == 24 * GIB
    assert out["gpu"] == "--gpu 24GiB"
    assert {r["name"]: r for r in out["rows"]}["gpu_total"]["estimate"] == 24 * GIB

"""The command line: output that adds up, the JSON contract, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run


def test_infer_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "infer", "llama-2-7b", "--context", "4096", "--gpu", "rtx-4090", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["schema"], data["version"], data["kind"]) == ("vramwise/estimate", 1, "inference")
    assert data["model"]["params"] == 6_738_415_616
    assert sum(t["bytes"] for t in data["terms"]) == data["peak"]["bytes"]
    assert max(p["bytes"] for p in data["phases"]) == data["peak"]["bytes"]
    kv = next(t for t in data["terms"] if t["name"] == "kv_cache")
    assert kv["bytes"] == 2 * 2**30 and kv["formula"] and kv["source"]
    # the budget is CUDA's total (torch: 23.64 GiB = 25,383,256,719 B), not nvidia-smi's 24,564 MiB
    assert data["gpu"]["memory_bytes"] == 25_383_256_719 and data["gpu"]["smi_bytes"] == 24564 * 2**20
    assert data["gpu"]["headroom_bytes"] == data["gpu"]["memory_bytes"] - data["peak"]["bytes"]


def test_table_rows_add_up_to_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "infer", "mixtral-8x7b", "--tp", "2", "-b", "4", "--units", "gb")
    assert code == 0
    rows = [re.match(r"^(\S[^ ]*(?: \(peak\))?)\s{2,}([\d,]+)\s", line) for line in out.splitlines()]
    byte_rows = {m.group(1): int(m.group(2).replace(",", "")) for m in rows if m}
    total = byte_rows.pop("total (peak)")
    assert len(byte_rows) >= 6
    assert sum(byte_rows.values()) == total
    assert "(units: 1 GB = 10^9 bytes)" in out


def test_explain_prints_formula_and_source(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "infer", "deepseek-v3", "--explain", "--context", "1024")
    assert "kv_lora_rank 512 + rope 64" in out
    assert out.count("source:") >= 5


def test_serve_reports_capacity(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "infer", "qwen2-7b", "--context", "8192", "--gpu", "a100-80gb", "--serve", "--json")
    cap = json.loads(out)["capacity"]
    assert code == 0 and cap["max_sequences"] > 0
    assert cap["kv_bytes_per_token"] == 28 * 2 * 4 * 128 * 2


def test_models_lists_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json")
    names = {m["name"]: m for m in json.loads(out)["models"]}
    assert code == 0 and len(names) >= 25
    assert names["llama-2-7b"]["params"] == 6_738_415_616
    # Mixtral: 12.9B of 46.7B parameters active per token (Mistral AI's announcement)
    assert round(names["mixtral-8x7b"]["active_params"] / 1e9, 1) == 12.9


def _write_bad_configs(tmp: Path) -> None:
    (tmp / "malformed.json").write_text("{ not json")
    (tmp / "no_type.json").write_text(json.dumps({"hidden_size": 64}))
    (tmp / "unknown_type.json").write_text(json.dumps({"model_type": "mamba2"}))
    (tmp / "bad_field.json").write_text(json.dumps({"model_type": "llama", "hidden_size": -4096}))
    (tmp / "missing_field.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))


def _bad_configs(tmp: Path, write: bool = True) -> dict[str, list[str]]:
    if write:
        _write_bad_configs(tmp)
    return {
        "missing config file": ["infer", str(tmp / "nope.json")],
        "malformed config": ["infer", str(tmp / "malformed.json")],
        "config without model_type": ["infer", str(tmp / "no_type.json")],
        "unknown model_type": ["infer", str(tmp / "unknown_type.json")],
        "negative config field": ["infer", str(tmp / "bad_field.json")],
        "missing config field": ["infer", str(tmp / "missing_field.json")],
        "unknown model name": ["infer", "llama-9-7b"],
        "zero batch": ["infer", "llama-2-7b", "--batch", "0"],
        "negative context": ["infer", "llama-2-7b", "--context", "-5"],
        "non-integer context": ["infer", "llama-2-7b", "--context", "lots"],
        "tp not dividing heads": ["infer", "llama-2-7b", "--tp", "3"],
        "tp not dividing kv heads": ["infer", "qwen2-7b", "--tp", "7"],
        "unknown format": ["infer", "llama-2-7b", "--format", "int3"],
        "unknown gpu": ["infer", "llama-2-7b", "--gpu", "h1000"],
        "unknown mode": ["infer", "llama-2-7b", "--mode", "guess"],
        "unknown kv dtype": ["infer", "llama-2-7b", "--kv-dtype", "int2"],
        "textbook with a quantized format": ["infer", "llama-2-7b", "--mode", "textbook", "--format", "nf4"],
        "serve without gpu": ["infer", "llama-2-7b", "--serve"],
        "train: tp not dividing heads": ["train", "llama-2-7b", "--tp", "3"],
        "train: tp not dividing kv heads": ["train", "qwen2-7b", "--tp", "7"],
        "train: pp greater than layers": ["train", "llama-2-7b", "--pp", "64"],
        "train: zero with a single GPU": ["train", "llama-2-7b", "--zero", "2"],
        "train: fsdp with a single GPU": ["train", "llama-2-7b", "--fsdp", "full"],
        "train: zero and fsdp together": ["train", "llama-2-7b", "--dp", "8", "--zero", "3", "--fsdp", "full"],
        "train: lora target the model lacks": ["train", "llama-2-7b", "--peft", "lora", "--lora-targets", "c_attn"],
        "train: unknown optimizer": ["train", "llama-2-7b", "--optimizer", "adamm"],
        "train: unknown precision": ["train", "llama-2-7b", "--precision", "fp8"],
        "train: unknown recompute": ["train", "llama-2-7b", "--recompute", "some"],
        "train: negative batch": ["train", "llama-2-7b", "--batch", "-1"],
        "train: sequence parallel without tp": ["train", "llama-2-7b", "--sp"],
        "train: expert parallel on a dense model": ["train", "llama-2-7b", "--dp", "4", "--ep", "2"],
        "train: ep not dividing experts": ["train", "mixtral-8x7b", "--dp", "16", "--ep", "16"],
        "train: offload without sharding": ["train", "llama-2-7b", "--offload", "optimizer"],
        "train: bare size in accurate mode": ["train", "7b"],
        "train: encoder model": ["train", "bert-base-uncased"],
        "train: lora with lomo": ["train", "llama-2-7b", "--peft", "lora", "--optimizer", "lomo"],
        "train: textbook seed 002 with lora": ["train", "llama-2-7b", "--mode", "textbook", "--peft", "lora"],
        "train: textbook seed 000 with zero": [
            "train",
            "llama-2-7b",
            "--mode",
            "textbook",
            "--seed",
            "000",
            "--dp",
            "8",
            "--zero",
            "1",
        ],
        "train: unknown seed": ["train", "llama-2-7b", "--mode", "textbook", "--seed", "001"],
        "serve in textbook mode": ["infer", "llama-2-7b", "--serve", "--gpu", "h100-80gb", "--mode", "textbook"],
        "tp in textbook mode": ["infer", "llama-2-7b", "--tp", "2", "--mode", "textbook"],
        "bare size with a block format": ["infer", "14b", "--format", "q4_k_m"],
    }


@pytest.mark.parametrize("case", list(_bad_configs(Path("unused"), write=False)))
def test_bad_input_is_one_line_and_exit_2(case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, *_bad_configs(tmp_path)[case])
    assert code == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vramwise: error:"), err
    assert "Traceback" not in err and out == ""


def test_error_names_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = _bad_configs(tmp_path)
    assert "'hidden_size'" in run(capsys, *cases["negative config field"])[2]
    assert "batch" in run(capsys, *cases["zero batch"])[2]
    assert "num_attention_heads (32)" in run(capsys, *cases["tp not dividing heads"])[2]
    assert "did you mean" in run(capsys, *cases["unknown gpu"])[2]
    assert "supported:" in run(capsys, *cases["unknown model_type"])[2]


def test_console_script_runs_without_torch() -> None:
    code = (
        "import sys; from vramwise.cli import main; rc = main(['infer', 'llama-2-7b']); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "total (peak)" in proc.stdout


def test_train_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "train", "llama-2-7b", "--peft", "lora", "--recompute", "full", "--gpu", "l4", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["kind"], data["mode"], data["setup"]["peft"]) == ("training", "accurate", "lora")
    assert sum(t["bytes"] for t in data["terms"]) == data["peak"]["bytes"]
    assert max(p["bytes"] for p in data["phases"]) == data["peak"]["bytes"]
    assert {p["name"] for p in data["phases"]} >= {"forward end", "backward end", "optimizer step"}
    lora = next(t for t in data["terms"] if t["name"] == "weights/lora")
    assert lora["bytes"] == 4 * 32 * 2 * 16 * (4096 + 4096)  # fp32 adapters on q_proj and v_proj, r = 16
    assert data["gpu"]["headroom_bytes"] == data["gpu"]["memory_bytes"] - data["peak"]["bytes"]


def test_train_per_stage_shows_every_pipeline_stage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "train", "llama-2-70b", "--tp", "8", "--pp", "4", "--grad-accum", "8", "--per-stage")
    assert code == 0
    assert [f"stage {k} of 4" in out for k in range(4)] == [True] * 4
    code, out, _ = run(capsys, "train", "llama-2-70b", "--tp", "8", "--pp", "4", "--per-stage", "--json")
    stages = json.loads(out)["stages"]
    assert len(stages) == 4 and all(s["kind"] == "training" for s in stages)


def test_train_offload_reports_host_ram(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "train", "llama-2-7b", "--dp", "8", "--zero", "3", "--offload", "params", "--json")
    host = {t["name"]: t["bytes"] for t in json.loads(out)["host"]}
    assert code == 0 and host["optimizer/states"] == 8 * 6_738_415_616 // 8


def test_train_textbook_seed_002_bare_size(capsys: pytest.CaptureFixture[str]) -> None:
    # seed 002, ZeRO-1 on 8 GPUs with AdamW: (2 + 2 + 12/8) x 7e9 bytes
    code, out, _ = run(capsys, "train", "7b", "--mode", "textbook", "--dp", "8", "--zero", "1", "--json")
    data = json.loads(out)
    assert code == 0 and data["peak"]["bytes"] == round(5.5 * 7e9)
    assert data["missing"] and "activations" in data["missing"][0]


def test_train_textbook_seed_000_reproduces_its_terms_for_a_catalog_model(capsys: pytest.CaptureFixture[str]) -> None:
    phi = 7_721_324_544  # Qwen1.5-7B, exact (the seed rounds it to 7.7e9)
    code, out, _ = run(capsys, "train", "qwen1.5-7b", "--mode", "textbook", "--seed", "000", "--peft", "lora", "--json")
    terms = {t["name"]: t["bytes"] for t in json.loads(out)["terms"]}
    assert code == 0
    assert terms == {
        "model": round(phi * 1.02 * 6),
        "activations": 2 * 2048 * 4096 * 32,
        "gradients": round(phi * 0.02 * 4),
        "optimizer": round(phi * 0.02 * 12),
    }


@pytest.mark.parametrize(("command", "question"), [("fit", ["--max", "batch"]), ("infer", []), ("train", [])])
def test_an_option_the_command_lacks_points_at_that_commands_help(
    command: str, question: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse reports an unknown option from the top parser; the hint used to be `vramwise --help`, which lists
    the commands and none of their options (the newcomer trial's `fit ... --json`)."""
    code, _out, err = run(capsys, command, "llama-3-8b", "--gpu", "h100", *question, "--no-such-option")
    assert code == 2
    assert err.strip() == (
        f"vramwise: error: unrecognized arguments: --no-such-option (see 'vramwise {command} --help')"
    )

"""Regressions of the review of this session's features (--range/--max-seq, the Ollama table, the rope table, the
MCP tools, llama.cpp's flags), each as the smallest reproducer that broke. The oracle is the project's rule for bad
input (errors.py): exit status 2, one stderr line naming the field, nothing on stdout, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability.conftest import run_cli

HUGE = "9" * 29  # past any C int


@pytest.mark.parametrize(
    ("flag", "field"),
    [("--ctx-size", "-c/--ctx-size"), ("--parallel", "-np/--parallel"), ("--batch-size", "-b/--batch-size"),
     ("--ubatch-size", "-ub/--ubatch-size"), ("--n-gpu-layers", "-ngl/--n-gpu-layers")],
)
def test_llamacpp_integer_flags_stop_at_a_c_int(flag: str, field: str, capsys: pytest.CaptureFixture[str]) -> None:
    # `-np 10^29` exited 3 with float-rounded KV bytes ("13,421,772,799,...,865,782,272"); `-ub 10^31` exited 0.
    # llama.cpp's own parser (common/arg.cpp std::stoi) refuses anything past INT_MAX
    rc, out, err = run_cli(["infer", "llama-3.1-8b", "--engine", "llama.cpp", "--gpu", "4090", flag, HUGE], capsys)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert field in err and "2,147,483,647" in err, err
    # INT_MAX itself is llama.cpp's to take: an answer (fits or not), not a refusal
    rc, _out, err = run_cli(["infer", "llama-3.1-8b", "--engine", "llama.cpp", "--gpu", "4090", flag, str(2**31 - 1)],
                            capsys)
    assert rc in (0, 3), err


def _train_peak(argv: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    rc, out, err = run_cli([*argv, "--json"], capsys)
    assert rc in (0, 3), err
    doc = json.loads(out)
    return max(s["peak"]["bytes"] for s in doc["stages"]) if "stages" in doc else int(doc["peak"]["bytes"])


@pytest.mark.parametrize(("framework", "gpus"), [("torchtitan", "8"), ("torchtune", "1")])
def test_fit_layouts_rows_without_sharding_are_trains_numbers(
    framework: str, gpus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # fit --layouts built every row from the framework's sharded preset (dp 2, FSDP): a dp=1 row then missed the
    # framework's unsharded defaults. torchtitan tp=8 dp=1 was listed at 19.91 GiB where `train` with the row's own
    # flags says 22.36 (amp without FSDP); torchtune on one GPU at 62.04 GiB where `train` says 31.02 (the
    # single-device recipe). The oracle: `vramwise train` with each row's flags
    fit = ["fit", "llama-3-8b", "--gpu", "h100", "--layouts", gpus, "--framework", framework, "--json"]
    rc, out, err = run_cli(fit, capsys)
    assert rc == 0, err
    doc = json.loads(out)
    rows = [r for r in doc["layouts"]["fitting"] if r["dp"] == 1]
    assert rows
    # the "assuming" line is the sharded rows': a note says what the dp=1 rows assume instead
    assert any(n.startswith("the dp=1 rows shard nothing") for n in doc["notes"]), doc["notes"]
    for r in rows:
        argv = ["train", "llama-3-8b", "--framework", framework, "--gpu", "h100", "--tp", str(r["tp"]), "--pp",
                str(r["pp"]), "--dp", "1", "--recompute", r["recompute"], "--offload", r["offload"], "-b",
                str(r["batch"]), "--grad-accum", str(r["grad_accum"])]
        assert _train_peak(argv, capsys) == r["peak"], r["label"]


def test_from_notes_never_precede_a_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a Modelfile whose FROM maps (two notes) but whose num_ctx the run refuses printed three stderr lines: the
    # notes went out before the run; now a refusal's line stands alone, and an answer still carries the notes
    bad = tmp_path / "Modelfile"
    bad.write_text("FROM llama3.1:8b\nPARAMETER num_ctx -1\n")
    rc, out, err = run_cli(["infer", "--from", str(bad), "--gpu", "4090"], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "--ctx-size" in err, err
    good = tmp_path / "Modelfile.ok"
    good.write_text("FROM llama3.1:8b\n")
    rc, out, err = run_cli(["infer", "--from", str(good), "--gpu", "4090"], capsys)
    assert rc == 0 and out and "catalog's llama-3.1-8b" in err and "vramwise: error" not in err, err


@pytest.mark.parametrize("value", ["-5", "0", str(2**30 + 1), "9" * 4000])
@pytest.mark.parametrize("command", [["infer", "llama-3-8b"], ["train", "llama-3-8b"],
                                     ["fit", "llama-3-8b", "--gpu", "h100", "--max", "batch"]])
def test_max_seq_is_bounded_before_any_run(command: list[str], value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # a 4,000-digit --max-seq came back as a 5 KB error line; -5 was "shorter than --seq 2,048", and fit with nothing
    # fitting took it silently. The bound is a sequence length's (workload/checks.py BOUNDS["seq"], 2^30)
    rc, out, err = run_cli([*command, "--range", f"--max-seq={value}"], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and len(err) < 300, err
    assert err.startswith("vramwise: error: --max-seq ") and "from 1 to 1,073,741,824" in err, err


def test_tensor_split_shares_are_finite(capsys: pytest.CaptureFixture[str]) -> None:
    # `--tensor-split 1e400,1` (an inf share) passed the sign check and exited 0 with every layer on the second GPU
    rc, out, err = run_cli(["infer", "llama-3-8b", "--engine", "llama.cpp", "--gpu", "2x4090", "--tensor-split",
                            "1e400,1"], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "--tensor-split" in err, err


@pytest.mark.parametrize("peft", [["--peft", "lora"], ["--peft", "lora", "--framework", "litgpt"], ["--peft", "ia3"]])
def test_unknown_lora_targets_are_cut_in_the_error(peft: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # a 100,000-character --lora-targets was echoed whole: a 100 KB error line (the reliability notes' U8)
    rc, out, err = run_cli(["train", "llama-3-8b", *peft, "--lora-targets", "x" * 100_000], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and len(err) < 600 and "lora_targets" in err, err


@pytest.mark.parametrize("command", ["infer", "train"])
def test_an_empty_gpu_is_refused_not_dropped(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # `--gpu ''` (and MCP's {"gpu": ""}) answered without a verdict, exit 0, while `--gpu ' '` and fit refused it
    rc, out, err = run_cli([command, "llama-3-8b", "--gpu", ""], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "--gpu '' is empty" in err, err


@pytest.mark.parametrize("given", [["--zero", "3"], ["--fsdp", "full"],
                                   ["--framework", "torchtitan", "--fsdp", "full"]])
def test_fit_layouts_names_the_sharding_it_ranks_itself(given: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # `fit --layouts 8 --zero 3` was refused with "zero=3 shards over data-parallel GPUs: dp must be >= 2, got dp=1",
    # a dp the user never gave: the search ranks the stages (or FSDP modes) itself
    rc, out, err = run_cli(["fit", "llama-3-8b", "--gpu", "h100", "--layouts", "8", *given], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert "ranks every ZeRO stage" in err and f"drop {given[-2]}" in err and "dp=1" not in err, err


def test_fit_range_with_nothing_fitting_says_so_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    # the table's stderr said "--range: nothing fits, so there is no answer to range"; --json (and so the web API and
    # MCP, which answer with that document) dropped --range in silence
    from vramwise.mcpserver.server import answer

    argv = ["fit", "llama-3-8b", "--gpu", "h100", "--max", "batch", "--range"]
    rc, out, err = run_cli([*argv, "--json"], capsys)
    doc = json.loads(out)
    assert rc == 3 and "range" not in doc and "--range: nothing fits, so there is no answer to range" in doc["notes"]
    mcp, _text, error = answer("fit", {"model": "llama-3-8b", "gpu": "h100", "max": "batch", "range": True})
    assert not error and mcp == doc
    rc, out, err = run_cli(argv, capsys)
    assert rc == 3 and "note: --range: nothing fits, so there is no answer to range" in err

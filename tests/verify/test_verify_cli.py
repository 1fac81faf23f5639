"""`vramwise verify`: estimate beside a traced run, and one-line refusals for what the twin cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli_run import run as _run

TINY = {
    "model_type": "qwen2",
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 344,
    "vocab_size": 4000,
}


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def test_verify_training_rows_match_the_trace(capsys: pytest.CaptureFixture[str], tiny: str) -> None:
    code, out, _ = _run(capsys, "verify", tiny, "--seq", "128", "--batch", "2", "--json")
    assert code == 0
    data = json.loads(out)
    rows = {r["name"]: r for r in data["rows"]}
    assert (data["schema"], data["kind"]) == ("vramwise/verify", "training")
    for exact in ("weights", "master_weights", "gradients", "optimizer_states"):
        assert rows[exact]["estimate"] == rows[exact]["measured"], exact
    assert abs(rows["peak"]["error"]) < 0.05


def test_verify_layers_extrapolates_close_to_the_full_trace(capsys: pytest.CaptureFixture[str], tiny: str) -> None:
    _, full, _ = _run(capsys, "verify", tiny, "--seq", "128", "--json")
    _, part, _ = _run(capsys, "verify", tiny, "--seq", "128", "--json", "--layers", "1")
    measured = {r["name"]: r["measured"] for r in json.loads(full)["rows"]}
    extrapolated = {r["name"]: r["measured"] for r in json.loads(part)["rows"]}
    assert extrapolated["weights"] == measured["weights"]  # parameters are linear in the depth
    assert extrapolated["peak"] == pytest.approx(measured["peak"], rel=0.02)


def test_verify_inference_table(capsys: pytest.CaptureFixture[str], tiny: str) -> None:
    code, out, _ = _run(capsys, "verify", tiny, "--infer", "--seq", "256", "-n", "4")
    assert code == 0
    assert "kv_cache" in out and "decode_peak" in out and "measured on: fake CPU tensors" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--peft", "qlora"],
        ["--optimizer", "adamw-8bit"],
        ["--dp", "8", "--zero", "3"],
        ["--loss", "chunked"],
        ["--loss", "liger"],
        ["--recompute", "selective"],
        ["--mlp-impl", "fused"],
        ["--activation-offload"],
        ["--float8"],
        ["--compile"],
        ["--torch-version", "1.10"],
        ["--peft", "lora-8bit", "--lora-targets", "q_proj"],
        ["--infer", "--format", "nf4"],
        ["--layers", "0"],
    ],
)
def test_verify_refuses_what_it_cannot_reproduce(
    argv: list[str], capsys: pytest.CaptureFixture[str], tiny: str
) -> None:
    code, out, err = _run(capsys, "verify", tiny, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("vramwise: error:")


def test_verify_needs_an_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "verify", "7b")
    assert code == 2 and "needs the architecture" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--loss", "compute-dtype"],
        ["--loss", "torchtune-chunked"],
        ["--loss", "torchtune-linear"],
        ["--recompute", "layer-sac", "--recompute-every", "2"],
        ["--recompute", "op-sac"],
        ["--optimizer-in-backward", "--precision", "bf16"],
        ["--peft", "lora", "--lora-targets", "q_proj,v_proj", "--adapter-dtype", "bf16"],
    ],
)
def test_verify_traces_the_knobs_it_can(argv: list[str], capsys: pytest.CaptureFixture[str], tiny: str) -> None:
    code, out, _ = _run(capsys, "verify", tiny, "--seq", "128", "--batch", "2", "--json", *argv)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["rows"]}
    assert rows["weights"]["estimate"] == rows["weights"]["measured"]
    assert abs(rows["peak"]["error"]) < 0.05


def test_verify_replays_the_traced_allocations(capsys: pytest.CaptureFixture[str], tiny: str) -> None:
    # oracle: the caching allocator hands out blocks of at least the 512-rounded size the trace counts, and
    # reserves segments of at least the blocks (CUDACachingAllocator.cpp round_size, get_allocation_size)
    code, out, _ = _run(capsys, "verify", tiny, "--seq", "128", "--json")
    assert code == 0
    data = json.loads(out)
    replay = data["allocator_replay"]
    peak = {r["name"]: r["measured"] for r in data["rows"]}["peak"]
    assert replay["max_reserved"] >= replay["max_allocated"] >= peak
    assert replay["allocations"] > 0
    _, grown, _ = _run(capsys, "verify", tiny, "--seq", "128", "--json", "--expandable-segments")
    # expandable segments map 2 MiB / 20 MiB pages instead of 2 MiB / 20 MiB / exact segments: the setup reaches
    # the replay (the figures differ), and every allocation is still replayed
    assert json.loads(grown)["setup"]["expandable_segments"] is True
    assert json.loads(grown)["allocator_replay"]["allocations"] == replay["allocations"]


def test_verify_does_not_extrapolate_the_replay(capsys: pytest.CaptureFixture[str]) -> None:
    # traced at 2 and 3 layers: the reserve does not grow linearly with depth, and an extrapolated replay had put
    # max_memory_reserved 2.87 GiB under max_memory_allocated on Llama-3.2-1B (impossible: reserved >= allocated)
    code, out, _ = _run(capsys, "verify", "llama-3.2-1b", "--layers", "2", "--seq", "128", "--json")
    assert code == 0
    assert json.loads(out)["allocator_replay"] is None
    code, text, _ = _run(capsys, "verify", "llama-3.2-1b", "--layers", "2", "--seq", "128")
    assert code == 0 and "allocator replay: only at the full depth" in text

"""Numbers and options as they enter (issue 11: C7, C9, C11, W6, W9, U1, U6, U10, U11, U13, K1-K5, K7).

Every refusal is exit 2 and exactly one stderr line naming the option (CLI), or an InvalidWorkloadError whose
``field`` names it (API). The oracle of each bound is its documented table (``workload/checks.py`` BOUNDS): the
bound itself is accepted and one past it refused, whatever the estimate would print.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from vramwise.cli import main
from vramwise.errors import InvalidWorkloadError, VramwiseError
from vramwise.fit.solve import SEARCH_CAP
from vramwise.workload import InferSetup, TrainSetup
from vramwise.workload.checks import BOUNDS

HUGE = "1" + "0" * 300  # C7: overflowed float conversion before


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one stderr line of a refusal (exit 2, nothing on stdout)."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("vramwise: error: "), err
    return err


CLI_CASES = [
    # (argv, text the line must hold: the option or field, and what is wrong)
    (("infer", "llama-2-7b", "-b", HUGE), ["batch must be at most 16,777,216", "301 digits"]),
    (("train", "llama-2-7b", "-b", HUGE, "--json"), ["batch must be at most"]),
    (("infer", "llama-2-7b", "-s", HUGE), ["context must be at most"]),
    (("train", "llama-2-7b", "-s", HUGE), ["seq must be at most"]),
    (("infer", "llama-2-7b", "-n", HUGE), ["new_tokens must be at most"]),
    (("infer", "llama-2-7b", "--cuda-context", HUGE), ["cuda_context_mib must be at most"]),
    (("infer", "llama-2-7b", "--kv-block", "1000000000"), ["kv_block must be at most 65,536"]),
    (("infer", "llama-2-7b", "--prefill-chunk", HUGE), ["prefill_chunk must be at most"]),
    (("infer", "llama-2-7b", "--tp", HUGE), ["tp must be at most"]),
    (("train", "llama-2-7b", "--peft", "lora", "--lora-r", "1000000000"), ["lora_r must be at most 65,536"]),
    (("train", "llama-2-7b", "--dp", HUGE), ["dp must be at most"]),
    (("train", "llama-2-7b", "--pp", HUGE), ["pp must be at most"]),
    (("train", "llama-2-7b", "--cp", HUGE), ["cp must be at most"]),
    (("train", "mixtral-8x7b", "--ep", HUGE), ["ep must be at most"]),
    (("train", "llama-2-7b", "--grad-accum", HUGE), ["grad_accum must be at most"]),
    (("train", "llama-2-7b", "--loss", "chunked", "--loss-chunk", HUGE), ["loss_chunk must be at most"]),
    (("train", "llama-2-7b", "--freeze-layers", HUGE), ["freeze_layers must be at most"]),
    (("train", "llama-2-7b", "--pp", "2", "--interleave", HUGE), ["interleave must be at most"]),
    (("train", "llama-2-7b", "--zero", HUGE, "--dp", "2"), ["zero must be 0, 1, 2 or 3", "301 digits"]),
    # C9, U11: -1 crashed on the internal negative-bytes guard, 0 silently meant the default
    (("infer", "gpt2", "--serve", "--gpu", "l4", "--max-batched-tokens", "-1"), ["max_num_batched_tokens", "positive"]),
    (("infer", "gpt2", "--serve", "--gpu", "l4", "--max-batched-tokens", "0"), ["max_num_batched_tokens", "positive"]),
    (("infer", "gpt2", "--serve", "--gpu", "l4", "--max-batched-tokens", HUGE), ["max_num_batched_tokens", "at most"]),
    # K1, K2: --top 0 printed a header, -1 cut the last row; --max-batch 0 was ignored
    (("fit", "llama-2-7b", "--gpu", "a100-80gb", "--layouts", "8", "--top", "0"), ["top must be a positive"]),
    (("fit", "llama-2-7b", "--gpu", "a100-80gb", "--layouts", "8", "--top", "-1"), ["top must be a positive"]),
    (("fit", "llama-2-7b", "--gpu", "a100-80gb", "--layouts", "8", "--max-batch", "0"), ["max_batch must be"]),
    (("fit", "llama-2-7b", "--gpu", "a100-80gb", "--layouts", "8", "--max-batch", "5000"), ["max_batch", "4,096"]),
    (("fit", "llama-2-7b", "--gpu", "a100-80gb", "--layouts", HUGE), ["layouts must be at most"]),
    # K3: a list of nothing silently meant peft's default targets
    (("train", "llama-2-7b", "--peft", "lora", "--lora-targets", ","), ["lora_targets ',' names no module"]),
    # U1: dp=1 is the search's own first step, so these options make --min-gpus impossible
    (("fit", "mixtral-8x7b", "--gpu", "a100-80gb", "--min-gpus", "--dp", "2", "--ep", "2"), ["--ep", "--min-gpus"]),
    (
        ("fit", "llama-2-7b", "--gpu", "a100-80gb", "--min-gpus", "--dp", "4", "--fsdp", "hybrid", "--fsdp-shard", "2"),
        ["--fsdp-shard", "--min-gpus"],
    ),
    # U13: phi-2 is dense; mxfp4 quantizes routed experts only, so its numbers were bf16's under mxfp4's name
    (("infer", "phi-2", "-f", "mxfp4"), ["format mxfp4 quantizes no tensor of phi-2"]),
    (("fit", "phi-2", "--gpu", "l4", "--max", "batch", "--infer", "-f", "mxfp4"), ["format mxfp4"]),
    # K7: a point is the setup's sequence or batch, with the same bound
    (("plot", "llama-2-7b", "--points", HUGE, "-o", "x.png"), ["points on the seq axis must be at most"]),
    (("plot", "llama-2-7b", "--vs", "batch", "--points", "20000000", "-o", "x.png"), ["points on the batch axis"]),
    (("plot", "llama-2-7b", "--points", ",".join(["1"] * 65), "-o", "x.png"), ["points: at most 64"]),
    (("verify", "llama-2-7b", "--layers", HUGE), ["layers must be at most"]),
]


@pytest.mark.parametrize(("argv", "says"), CLI_CASES, ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_cli_refuses_in_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: list[str]) -> None:
    line = refused(capsys, *argv)
    for text in says:
        assert text in line, line


def test_seq_tried_is_one_token_per_context_parallel_rank(capsys: pytest.CaptureFixture[str]) -> None:
    """U6: the sequence tried is 3 (one token per context-parallel rank), not 1. Nothing fits: exit 3 (the CI
    gate's "does not fit", cli/__init__.py), the reason in the first line, then the advice."""
    code = main(["fit", "llama-2-7b", "--gpu", "a100-80gb", "--max", "seq", "--cp", "3", "--seq", "3"])
    out = capsys.readouterr().out
    assert code == 3 and "with seq 3 already" in out.splitlines()[0]


def test_mxfp4_still_applies_where_there_are_routed_experts(capsys: pytest.CaptureFixture[str]) -> None:
    """The U13 refusal is about the model: gpt-oss-20b's routed experts are what mxfp4 stores (its own format)."""
    assert main(["infer", "gpt-oss-20b", "-f", "mxfp4"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("name", "where"),
    [("points", "seq"), ("points", "batch")],
)
def test_plot_points_up_to_the_bound_are_accepted(name: str, where: str) -> None:
    from vramwise.app.sweep import _points

    high = BOUNDS["seq" if where == "seq" else "batch"][0]
    assert _points(f"1,{high}", where) == (1, high)
    with pytest.raises(InvalidWorkloadError) as err:
        _points(f"1,{high + 1}", where)
    assert err.value.field == name


# --- plot -o: no folder is created, a bad path is one line (C11, K4) ---


def test_plot_output_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    a_file = tmp_path / "list.json"
    a_file.write_text("[]")
    (tmp_path / "adir.png").mkdir()
    missing = tmp_path / "nonexistent" / "dir"
    for out, says in [
        (a_file / "x.png", "does not exist or is not a folder"),  # FileExistsError before
        (tmp_path / "adir.png", "is a folder"),  # IsADirectoryError before
        (missing / "x.png", "does not exist or is not a folder"),  # created the tree before (K4)
        (tmp_path / ("a" * 300 + ".png"), "plot output"),  # a name too long for the file system
    ]:
        line = refused(capsys, "plot", "gpt2", "--points", "512", "-o", str(out))
        assert says in line, line
    assert not missing.parent.exists()


def test_plot_output_unwritable_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    if Path("/proc/self").is_dir():  # procfs refuses new files even to root
        line = refused(capsys, "plot", "gpt2", "--points", "512", "-o", "/proc/vramwise.png")
        assert "cannot write plot output" in line, line


# --- gpus --json, formats --json (K5) ---


def test_gpus_and_formats_json(capsys: pytest.CaptureFixture[str]) -> None:
    toml = tomllib.loads((Path(__file__).parents[2] / "src/vramwise/catalog/gpus.toml").read_text())
    assert main(["gpus", "--json"]) == 0
    gpus = {g["name"]: g for g in json.loads(capsys.readouterr().out)["gpus"]}
    assert set(gpus) == set(toml)
    # the budget is the CUDA-visible total as published: 79.11 GiB = 79.11 x 1,073,741,824 = 84,943,715,696.64 B
    assert toml["h100-80gb"]["visible"] == "79.11 GiB"
    assert gpus["h100-80gb"]["memory_bytes"] == 84_943_715_696
    assert gpus["h100-80gb"]["smi_bytes"] == 81559 * 2**20  # nvidia-smi's MiB
    assert main(["formats", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {f["name"] for f in data["formats"]}
    assert {"bf16", "mxfp4", "nf4", "q4_k_m"} <= names and data["grouped"]


# --- the API: the same refusals, and the type of every number (W6) ---

INFER_BAD: list[tuple[str, Any]] = [
    ("cuda_context_mib", math.nan),  # gave a NaN peak
    ("cuda_context_mib", math.inf),  # an inf peak
    ("cuda_context_mib", 0.5),  # a float byte count
    ("cuda_context_mib", True),
    ("allocator_fraction", math.nan),
    ("allocator_fraction", True),
    ("allocator_fraction", "0.1"),
    ("gpu_utilization", True),  # True == 1 passed the range test
    ("gpu_utilization", math.nan),
    ("batch", True),
    ("batch", 2.0),
    ("context", 10**5000),  # more than 4,300 digits: the message must not try to print it
    ("kv_block", 0),
    ("all_logits", 1),
]
TRAIN_BAD: list[tuple[str, Any]] = [
    ("zero", True),  # True == 1 was ZeRO-1
    ("zero", 2.0),
    ("dp", 2.0),
    ("lora_dropout", math.nan),
    ("lora_fraction", math.inf),
    ("reduce_bucket", 1 << 44),
    ("fsdp_shard", True),
    ("sp", 1),
    ("lora_targets", ("",)),
    ("cuda_context_mib", math.nan),
]


@pytest.mark.parametrize(("name", "value"), INFER_BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INFER_BAD)])
def test_infer_setup_refuses(name: str, value: Any) -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        InferSetup.from_flat(**{name: value})
    assert err.value.field == name and "\n" not in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize(("name", "value"), TRAIN_BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TRAIN_BAD)])
def test_train_setup_refuses(name: str, value: Any) -> None:
    extra = {"dp": 2, "fsdp": "hybrid"} if name == "fsdp_shard" else {"tp": 2} if name == "sp" else {}
    with pytest.raises(InvalidWorkloadError) as err:
        TrainSetup.from_flat(**{name: value}, **extra)
    assert err.value.field == name and "\n" not in str(err.value)


INFER_INTS = ["batch", "context", "new_tokens", "tp", "kv_block", "prefill_chunk", "cuda_context_mib", "images"]
TRAIN_INTS = [
    "batch", "seq", "grad_accum", "lora_r", "freeze_layers", "loss_chunk", "dp", "tp", "pp", "interleave", "cp", "ep",
    "reduce_bucket", "prefetch_bucket", "cuda_context_mib",
]  # fmt: skip


def _train_context(name: str, value: int) -> dict[str, Any]:
    """The other fields a valid setup with ``name`` = ``value`` needs (cp must divide seq, ...)."""
    if name == "cp":
        return {"seq": value}
    if name == "ep":
        return {"dp": min(value, BOUNDS["dp"][0])}  # ep must divide dp; one past the bound fails on ep itself
    if name == "interleave":
        return {"pp": 2}
    return {}


@pytest.mark.parametrize("name", INFER_INTS)
def test_infer_bound_is_the_documented_one(name: str) -> None:
    high = BOUNDS[name][0]
    InferSetup.from_flat(**{name: high})  # the bound itself is allowed
    with pytest.raises(InvalidWorkloadError) as err:
        InferSetup.from_flat(**{name: high + 1})
    assert err.value.field == name and f"at most {high:,}" in str(err.value)


@pytest.mark.parametrize("name", TRAIN_INTS)
def test_train_bound_is_the_documented_one(name: str) -> None:
    high = BOUNDS[name][0]
    TrainSetup.from_flat(**{name: high}, **_train_context(name, high))
    with pytest.raises(InvalidWorkloadError) as err:
        TrainSetup.from_flat(**{name: high + 1}, **_train_context(name, high + 1))
    assert err.value.field == name and f"at most {high:,}" in str(err.value)


def test_bounds_cover_every_fit_search() -> None:
    """fit/solve.py doubles up to SEARCH_CAP: every setup it builds must be valid (batch, context, dp)."""
    for name in ("batch", "context", "seq", "dp"):
        assert BOUNDS[name][0] >= SEARCH_CAP, name
    assert all(why for _, why in BOUNDS.values())  # every bound says why


def test_api_max_batched_tokens_and_fit_numbers() -> None:
    from vramwise.app.fitting import FitRequest, Question, fit
    from vramwise.app.run import InferRequest, infer

    with pytest.raises(InvalidWorkloadError) as err:
        infer(InferRequest(model="gpt2", gpu="l4", serve=True, options={"max_num_batched_tokens": 0}))
    assert err.value.field == "max_num_batched_tokens"
    with pytest.raises(VramwiseError) as fit_err:
        fit(FitRequest(model="gpt2", gpu="l4", question=Question.LAYOUTS, gpus=2, top=0))
    assert fit_err.value.field == "top"


# --- verify: refusals before torch, and one line from transformers' side (U10, U2, U3, K6) ---


def test_verify_bare_size_refused_before_torch_loads() -> None:
    code = (
        "import sys; from vramwise.cli import main; rc = main(['verify', '7b']); "
        "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.split() == ["2", "False", "False"], out
    assert out.stderr.count("\n") == 1 and "needs the architecture" in out.stderr


def test_verify_messages_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    # U2: falcon's RefinedWeb config (model_type "RefinedWebModel", before transformers' falcon) parses for
    # infer/train; transformers has no such type, which is now said plainly
    falcon = {
        "model_type": "RefinedWebModel", "hidden_size": 64, "n_head": 4, "n_layer": 2, "vocab_size": 100,
        "multi_query": True, "parallel_attn": True, "bias": False,
    }  # fmt: skip
    (tmp_path / "falcon.json").write_text(json.dumps(falcon))
    if main(["infer", str(tmp_path / "falcon.json")]) == 0:  # the estimate reads it: verify must say why it cannot
        capsys.readouterr()
        line = refused(capsys, "verify", str(tmp_path / "falcon.json"), "--layers", "1", "--seq", "16")
        assert "no model type 'RefinedWebModel'" in line, line
    else:
        capsys.readouterr()
    # K6: an inference trace leaves nothing on stderr: transformers' past_key_values rename notices (a log line
    # and, from Qwen2's forward, a FutureWarning) are dropped. A fresh process: both are emitted once per process.
    script = "import sys; from vramwise.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["verify", "qwen2-7b", "--infer", "--seq", "16"]
    out = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr


# --- a closed pipe ends quietly (`vramwise models | head -1`) ---


@pytest.mark.parametrize("argv", [["models"], ["gpus", "--json"], ["infer", "llama-2-7b", "--explain"]])
def test_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """The reader has gone before the first line (`| head -0`): every write fails with EPIPE. No traceback, nothing
    on stderr, exit 1 (argparse-free, so not 2)."""
    import os

    script = "import sys; from vramwise.cli import main; sys.exit(main(sys.argv[1:]))"
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, *argv], stdout=write, stderr=subprocess.PIPE, timeout=120, check=False
        )
    finally:
        os.close(write)
    assert proc.stderr.decode() == "" and proc.returncode == 1, proc

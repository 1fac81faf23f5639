"""Regressions of the second review's findings (SGLang's context cap, --range rows that cannot move, messages that
name a preset, Ollama references, the digit count of a huge number, a JSON model that is a number). The oracle is the
project's rule for bad input (errors.py): exit status 2, one stderr line naming the field, nothing on stdout, no
traceback; and for SGLang, its own request check (tokenizer_manager.py _validate_one_request)."""

from __future__ import annotations

import json

import pytest

from reliability.conftest import run_cli


def _one_line_refusal(rc: int, out: str, err: str) -> None:
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_sglang_refuses_a_request_past_its_context_length(capsys: pytest.CaptureFixture[str]) -> None:
    # `--context-length 100 --context 2048` was an answer with "0 concurrent sequences" and exit 0, where SGLang
    # refuses the request ("The input (N tokens) is longer than the model's context length", TokenizerManager.
    # _validate_one_request) and vLLM's plan refuses the same thing under --max-model-len
    base = ["infer", "llama-3-8b", "--engine", "sglang", "--gpu", "h100"]
    rc, out, err = run_cli([*base, "--context-length", "100", "--context", "2048"], capsys)
    _one_line_refusal(rc, out, err)
    assert "--context-length" in err and "2,048" in err and "100" in err, err
    # at the cap itself: an answer
    rc, _out, err = run_cli([*base, "--context-length", "2048", "--context", "2048"], capsys)
    assert rc in (0, 3), err
    # --range --max-seq past the cap: said in one line, as for vLLM's --max-model-len
    rc, out, err = run_cli([*base, "--context-length", "4096", "--context", "2048", "--range", "--max-seq", "8192"],
                           capsys)
    _one_line_refusal(rc, out, err)
    assert "--max-seq" in err and "4,096" in err, err


def test_sglang_range_stops_at_its_context_length(capsys: pytest.CaptureFixture[str]) -> None:
    # without --max-seq the range's longest sequence is SGLang's --context-length, not the model's 8,192 positions
    argv = ["infer", "llama-3-8b", "--engine", "sglang", "--gpu", "h100", "--context-length", "4096", "--context",
            "2048", "--range", "--json"]
    rc, out, err = run_cli(argv, capsys)
    assert rc in (0, 3), err
    assert "4096" in out.replace(",", "") and "8192" not in json.dumps(json.loads(out).get("range", {})), out[:2000]


@pytest.mark.parametrize("digits", [20, 21, 100, 101, 4000, 4001])
def test_a_huge_number_is_described_by_its_true_digit_count(digits: int) -> None:
    # errors._huge said "4,001 digits" for 10^3999 (4,000 digits): bit_length x log10(2) overcounts. The oracle:
    # 10^(d-1) and 10^d - 1 are the smallest and largest numbers of d digits, written out by hand
    from vramwise.errors import _huge

    for x in (10 ** (digits - 1), 10**digits - 1, -(10 ** (digits - 1))):
        assert f"of {digits:,} digits (about 10^{digits - 1})" in _huge(x), (digits, _huge(x))


@pytest.mark.parametrize("value", [14, 14.0, True, ["14b"]])
def test_a_json_model_must_be_a_string(value: object) -> None:
    # MCP/web {"model": 14} ran a model of 14 parameters (the CLI's bare size): a JSON caller sending a number
    # surely meant something else, so the JSON front ends refuse it in one line
    from vramwise.cli.json_args import parse
    from vramwise.errors import UsageError

    with pytest.raises(UsageError) as caught:
        parse("infer", {"model": value})
    assert caught.value.field == "model" and "model is a string" in str(caught.value), caught.value
    assert "\n" not in str(caught.value)
    assert parse("infer", {"model": "14b"})["model"] == "14b"  # the size as text is still a size


@pytest.mark.parametrize(
    ("argv", "gone", "why"),
    [(["--gpu", "h100", "--mode", "textbook"], {"allocator", "CUDA context"}, "textbook"),
     (["--gpu", "h100", "--engine", "llama.cpp"], {"allocator", "CUDA context"}, "llama.cpp"),
     (["--gpu", "m3-max"], {"CUDA context"}, "not an NVIDIA GPU"),
     (["--gpu", "mi300x"], {"CUDA context"}, "not an NVIDIA GPU")],
)
def test_range_leaves_out_rows_the_setup_does_not_model(
    argv: list[str], gone: set[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # textbook mode and llama.cpp showed "flat 0.03" and CUDA releases of equal bytes; Apple and AMD GPUs showed a
    # span "CUDA 11.7 .. CUDA 13.0" though they run no CUDA. Such a row is left out, and a note says why
    rc, out, err = run_cli(["infer", "llama-3-8b", *argv, "--range", "--json"], capsys)
    assert rc in (0, 3), err
    rng = json.loads(out)["range"]
    names = {u["name"] for u in rng["uncertainties"]}
    assert not names & gone and "sequence length" in names, names
    for row in gone:
        assert any(n.startswith(f"no {row} row:") and why in n for n in rng["notes"]), rng["notes"]


def test_cuda_context_on_a_gpu_without_cuda_is_named_a_stand_in(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["infer", "llama-3-8b", "--gpu", "m3-max", "--json"], capsys)
    assert rc in (0, 3), err
    doc = json.loads(out)
    term = next(t for t in doc["terms"] if t["name"] == "overhead/cuda_context")
    assert "stands in" in term["formula"], term
    assert any("not an NVIDIA GPU" in n and "stand-in" in n for n in doc["notes"]), doc["notes"]


@pytest.mark.parametrize(
    ("argv", "sets", "field"),
    [(["bert-large", "--framework", "torchtune"], "--framework torchtune sets --loss torchtune-linear;", "loss:"),
     (["llama-3-8b", "--framework", "torchtune", "--tp", "2"], "--framework torchtune sets --loss torchtune-linear;",
      "loss:"),
     (["llama-3-8b", "--framework", "torchtune", "--zero-grad", "zeros"],
      "--framework torchtune sets --optimizer-in-backward;", "zero_grad zeros")],
)
def test_a_refusal_of_a_preset_option_names_the_preset(
    argv: list[str], sets: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # "loss: bert-large has a masked LM head" blamed --loss, which the user never gave: torchtune's preset set it
    rc, out, err = run_cli(["train", *argv], capsys)
    _one_line_refusal(rc, out, err)
    assert sets in err and field in err, err


def test_a_refusal_of_the_users_own_option_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["train", "bert-large", "--loss", "torchtune-linear"], capsys)
    _one_line_refusal(rc, out, err)
    assert "--framework" not in err and "loss:" in err, err


@pytest.mark.parametrize(("line", "model", "fmt"),
                         [("FROM Llama3.1:8B", "llama-3.1-8b", None),
                          ("FROM LLAMA3.1:8b-Instruct-Q4_K_M", "llama-3.1-8b", "q4_k_m"),
                          ("FROM hf.co/user/repo:Q4_K_M", "user/repo:Q4_K_M", None),
                          ("FROM huggingface.co/user/repo:latest", "user/repo", None)])
def test_ollama_references_are_case_insensitive_and_hub_ggufs_map(line: str, model: str, fmt: str | None) -> None:
    # ollama's names compare down-cased (types/model/name.go: "Mistral" and "mistral" are the same model); FROM
    # hf.co/USER/REPO:QUANT is a hub GGUF, vramwise's USER/REPO:QUANT (spec/load.py). Nothing is fetched here
    from vramwise.configs.serve import from_modelfile

    got = from_modelfile(line)
    assert got.model == model and got.options.get("format") == fmt, (got.model, got.options, got.notes)


def test_a_second_from_is_refused_in_one_line() -> None:
    # ollama's CreateRequest keeps the last FROM name but merges local files (parser/parser.go): not guessed
    from vramwise.configs.serve import from_modelfile
    from vramwise.errors import VramwiseError

    with pytest.raises(VramwiseError) as caught:
        from_modelfile("FROM llama3.1:8b\nPARAMETER num_ctx 4096\nFROM llama3:8b\n")
    assert "second FROM" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("question", [["--max", "batch"], ["--max", "seq"], ["--min-gpus"], ["--layouts", "2"]])
def test_fit_names_the_preset_too(question: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # fit said "loss: bert-large has a masked LM head" (--layouts: "no layout of 2 x h100-80gb fits: ; no ZeRO-3
    # advice (loss: ...)"), blaming an option the user never gave
    rc, out, err = run_cli(["fit", "bert-large", "--gpu", "h100", *question, "--framework", "torchtune"], capsys)
    _one_line_refusal(rc, out, err)
    assert "--framework torchtune sets --loss torchtune-linear;" in err, err

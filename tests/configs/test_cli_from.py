"""--from and --emit through the command line: bad files are one line and exit 2; options given win over the file;
the notes name the keys used and ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD = [
    ("ds.json", json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}}),
     "zero_optimization.offload_param.device"),
    ("ds.json", json.dumps({"train_micro_batch_size_per_gpu": "four"}), "train_micro_batch_size_per_gpu"),
    ("ds.json", json.dumps({"zero_optimization": {"stage": 5}}), "zero_optimization.stage"),
    ("ds.json", json.dumps({"bf16": {"enabled": True}, "fp16": {"enabled": True}}), "fp16.enabled"),
    ("ds.json", json.dumps({"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4,
                            "gradient_accumulation_steps": 1}), "train_batch_size"),
    ("ds.json", json.dumps({"zero_optimization": {"stage": 2, "stage_two_typo": 1}}),
     "zero_optimization.stage_two_typo"),
    ("ds.json", "{not json", "cannot parse"),
    ("ds.json", "[1, 2]", "mapping"),
    ("args.json", json.dumps({"output_dir": "o", "bf16": True, "fp16": True}), "fp16"),
    ("args.json", json.dumps({"output_dir": "o", "optim": "galore_adamw"}), "optim"),
    ("args.json", json.dumps({"output_dir": "o", "per_device_train_batch_size": True}), "per_device_train_batch_size"),
    ("args.json", json.dumps({"output_dir": "o", "beta": 0.1}), "beta"),
    ("ax.yaml", "base_model: x\nadapter: qlora\nload_in_4bit: false\n", "adapter"),
    ("ax.yaml", "base_model: x\nmicro_batch_size: 2\nmystery_knob: 3\n", "mystery_knob"),
    ("ax.yaml", "base_model: x\nlora_modules_to_save: [embed_tokens]\nadapter: lora\n", "lora_modules_to_save"),
    ("ax.yaml", "base_model: [unclosed\n", "cannot parse"),
    ("tt.yaml", "model:\n  _component_: torchtune.models.llama3_1.lora_llama3_1_8b\n"
     "  lora_attn_modules: [q_proj, w9]\n", "model.lora_attn_modules"),
    ("tt.yaml", "model:\n  _component_: my.own.builder\n", "model._component_"),
    ("Modelfile", "FROM x.gguf\nPARAMETER num_ctx lots\n", "num_ctx"),
    ("Modelfile", "FROM x.gguf\nADAPTER ./lora.gguf\n", "ADAPTER"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "field"), BAD)
def test_bad_files_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, text: str,
                                       field: str) -> None:
    command = "infer" if name == "Modelfile" else "train"
    code, out, err = run(capsys, command, "llama-3-8b", "--from", _write(tmp_path, name, text))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("line", [
    "vllm serve m --cpu-offload-gb 10",  # refused: not modelled
    "vllm serve m --max-model-len lots",  # wrong type
    "vllm serve m --new-flag-from-2030 3",  # unknown
    "llama-server -m x.gguf --lora a.gguf",
    "python -m sglang.launch_server --model-path m --speculative-algorithm EAGLE",
    "rm -rf /",  # not a command vramwise reads
])  # fmt: skip
def test_bad_command_lines(capsys: pytest.CaptureFixture[str], line: str) -> None:
    code, out, err = run(capsys, "infer", "llama-3-8b", "--from", line)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err


def test_a_missing_file_and_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for source in (str(tmp_path / "absent.json"), str(tmp_path)):
        code, _, err = run(capsys, "train", "llama-3-8b", "--from", source)
        assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_command_line_options_win_and_notes_say_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ds = _write(tmp_path, "ds.json", json.dumps({"train_micro_batch_size_per_gpu": 4, "train_batch_size": 32,
                                                 "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
                                                 "zero_optimization": {"stage": 2}, "steps_per_print": 10}))
    code, out, err = run(capsys, "train", "llama-3-8b", "--from", ds, "--batch", "2", "--json")
    assert code == 0
    setup = json.loads(out)["setup"]
    assert (setup["batch"], setup["dp"], setup["zero"], setup["framework"]) == (2, 8, 2, "deepspeed")
    assert "used train_micro_batch_size_per_gpu" in err and "steps_per_print" in err
    assert "the command line overrides batch" in err


def test_the_file_names_the_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ax = _write(tmp_path, "ax.yaml", "base_model: meta-llama/Llama-3.1-8B\nadapter: lora\nsequence_len: 1024\n")
    code, out, err = run(capsys, "train", "--from", ax, "--json")  # no MODEL: the file's, the catalog's entry
    assert code == 0 and json.loads(out)["setup"]["seq"] == 1024
    assert "catalog's llama-3.1-8b" in err
    code, _, err = run(capsys, "train")
    assert code == 2 and "MODEL is needed" in err


def test_serving_file_for_train_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "llama-3-8b", "--from", "vllm serve m --max-model-len 4096")
    assert code == 2 and "serving config" in err


def test_emit_prints_the_config_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "infer", "llama-3.1-8b", "--engine", "vllm", "--gpu", "h100", "--max-model-len",
                         "8192", "--emit", "vllm")
    assert code == 0
    assert out.startswith("vllm serve meta-llama/") and "--max-model-len 8192" in out
    code, _, err = run(capsys, "train", "llama-3-8b", "--emit", "vllm")
    assert code == 2 and "--emit vllm cannot write a training setup" in err


def test_fit_emits_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "fit", "llama-3.1-8b", "--gpu", "h100", "--max", "batch", "--framework", "axolotl",
                         "--peft", "qlora", "--seq", "1024", "--emit", "axolotl")
    assert code == 0 and "micro_batch_size:" in out and "setup at fit's answer" in err
    import yaml  # type: ignore[import-untyped]

    batch = yaml.safe_load(out)["micro_batch_size"]
    code, out2, _ = run(capsys, "fit", "llama-3.1-8b", "--gpu", "h100", "--max", "batch", "--framework", "axolotl",
                        "--peft", "qlora", "--seq", "1024")
    assert f"{batch}" in out2  # the answer fit printed is the batch written


def test_deepspeed_auto_buckets_follow_the_hidden_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # transformers integrations/deepspeed.py trainer_config_finalize: hidden², int(0.9 hidden²), 10 hidden
    ds = {"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                "stage3_param_persistence_threshold": "auto"}, "bf16": {"enabled": True},
          "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1}
    path = _write(tmp_path, "ds.json", json.dumps(ds))
    code, out, err = run(capsys, "train", "llama-3-8b", "--from", path, "--dp", "8", "--json")
    assert code == 0, err
    setup = json.loads(out)["setup"]
    h = 4096  # Llama-3-8B hidden_size
    assert setup["reduce_bucket"] == h * h and setup["prefetch_bucket"] == int(0.9 * h * h)
    assert setup["param_persistence_threshold"] == 10 * h


def test_an_ollama_name_without_a_catalog_model_is_one_line(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    code, out, err = run(capsys, "infer", "--from", _write(tmp_path, "Modelfile", "FROM llama3.3:70b\n"))
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and "llama3.3:70b" in lines[0] and "give MODEL" in lines[0]


def test_an_ollama_name_is_the_catalog_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "infer", "--from", _write(tmp_path, "Modelfile", "FROM llama3.1:8b-instruct-q4_K_M\n"),
                         "--gpu", "4090", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["model"]["name"] == "llama-3.1-8b" and doc["setup"]["weight_format"] == "q4_k_m"
    # the notes of --from are in the JSON too (docs/json-schema.md "from")
    assert doc["from"]["notes"] and any("catalog's llama-3.1-8b" in n for n in doc["from"]["notes"])


@pytest.mark.parametrize(("fmt", "framework"), [("trainer", "hf-trainer"), ("axolotl", "axolotl")])
def test_emit_without_precision_says_why_and_how(capsys: pytest.CaptureFixture[str], fmt: str, framework: str) -> None:
    # the default bf16-mixed keeps an fp32 master copy the Trainer and Axolotl keep only under DeepSpeed: written as
    # bf16 it would be another run than the one estimated; the framework's preset resolves its own precision
    code, out, err = run(capsys, "train", "llama-3-8b", "--peft", "lora", "--emit", fmt)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and f"--framework {framework}" in lines[0]
    code, out, _ = run(capsys, "train", "llama-3-8b", "--peft", "lora", "--framework", framework, "--emit", fmt)
    assert code == 0 and "bf16" in out

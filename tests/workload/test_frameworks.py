"""--framework presets (workload/frameworks.py): each framework's defaults against the values its source gives,
written out here from the source (repository, commit, file and key named beside each), the user's options winning,
and each combination a framework does not run refused in one line, exit status 2, through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cli_run import run

from vramwise.app.fitting import Question, _framework_search
from vramwise.app.setups import train_setup, train_setup_noted
from vramwise.errors import InvalidWorkloadError
from vramwise.spec.load import resolve_model
from vramwise.spec.model import ModelSpec
from vramwise.workload import TrainSetup
from vramwise.workload.frameworks import PRESETS, VERSIONS, Applied, preset
from vramwise.workload.options import Framework

README = Path(__file__).resolve().parents[2] / "README.md"
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# (framework, options given, what its source says for each option it sets): the values are the sources', copied
# by hand at the commit in VERSIONS; a name vramwise has no option for yet (issue 14's knobs, loading) must then
# appear as a "not modelled yet" note instead (unless the value is off, which changes nothing).
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # transformers 5.24.0 training_args.py: optim 'adamw_torch_fused' (torch >= 2.8), bf16 False, activation
    # checkpointing None; modeling_utils.py from_pretrained dtype 'auto' (bf16 checkpoints stay bf16);
    # loss/loss_utils.py ForCausalLMLoss logits.float()
    ("hf-trainer", {}, {"precision": "bf16", "optimizer": "adamw", "optimizer_impl": "fused", "recompute": "none",
                        "loss": "full"}),
    # peft utils/other.py prepare_model_for_kbit_training(use_gradient_checkpointing=True) and its fp32 cast of
    # every non-4-bit parameter; get_peft_model(autocast_adapter_dtype=True); transformers BitsAndBytesConfig
    # bnb_4bit_use_double_quant=False
    ("hf-trainer", {"peft": "qlora"}, {"recompute": "full", "adapter_dtype": "fp32", "double_quant": False}),
    # accelerate state.py: ACCELERATE_MIXED_PRECISION 'no'; torch _default_to_fused_or_foreach: foreach on CUDA
    ("accelerate", {}, {"precision": "fp32", "optimizer_impl": "foreach"}),
    # DeepSpeed runtime/zero/config.py: reduce_bucket_size 5e8, stage3_prefetch_bucket_size 5e7,
    # stage3_max_live_parameters 1e9, stage3_param_persistence_threshold 1e5; engine.py: FusedAdam unless
    # torch_adam, grad_accum_dtype None -> model dtype
    ("deepspeed", {"dp": 4, "zero": 3}, {"precision": "bf16-mixed", "grad_dtype": "half", "optimizer_impl": "fused",
                                         "reduce_bucket": 500_000_000, "prefetch_bucket": 50_000_000,
                                         "max_live_params": 1_000_000_000, "param_persistence_threshold": 100_000}),
    # torchtune 0.7.0 recipes/configs/llama3_1/8B_lora_single_device.yaml: lora_rank 8, q/v/output_proj + MLP,
    # AdamW fused True, enable_activation_checkpointing True, enable_activation_offloading False, compile False,
    # dtype bf16, LinearCrossEntropyLoss
    ("torchtune", {"peft": "lora"}, {"precision": "bf16", "optimizer": "adamw", "optimizer_impl": "fused",
                                     "recompute": "full", "lora_r": 8,
                                     "lora_targets": ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj"),
                                     "adapter_dtype": "bf16", "activation_offload": False, "compile": False,
                                     "loss": "torchtune-linear"}),
    # 8B_lora.yaml (distributed): enable_activation_checkpointing False; FSDP2 fully_shard
    ("torchtune", {"peft": "lora", "dp": 2}, {"recompute": "none", "fsdp": "full"}),
    # 8B_full.yaml, 70B_full.yaml (distributed): custom_sharded_layers ['tok_embeddings', 'output']
    ("torchtune", {"dp": 2}, {"fsdp": "full", "fsdp_outer_units": True}),
    ("torchtune", {"peft": "lora", "dp": 2}, {"fsdp_outer_units": False}),
    # 8B_full_single_device.yaml: PagedAdamW8bit, optimizer_in_bwd True, enable_activation_checkpointing True
    ("torchtune", {}, {"optimizer": "paged-adamw-8bit", "optimizer_in_backward": True, "recompute": "full"}),
    # torchao to_nf4(block_size=64, scaler_block_size=256): the scalers are themselves quantized
    ("torchtune", {"peft": "qlora"}, {"double_quant": True, "recompute": "full", "adapter_dtype": "bf16"}),
    # torchtitan: mixed_precision_param bfloat16 over fp32 params (autocast alone, or FSDP2's MixedPrecisionPolicy
    # with mixed_precision_reduce float32), AdamW implementation 'fused', SelectiveAC (per op), compile off, no
    # float8 converter, ChunkedLossWrapper num_chunks 8, data_parallel_shard_degree -1
    ("torchtitan", {}, {"precision": "amp", "fsdp": "none"}),  # one GPU: autocast over fp32 parameters
    ("torchtitan", {"dp": 8}, {"precision": "bf16-mixed", "grad_dtype": "fp32", "optimizer": "adamw",
                               "optimizer_impl": "fused",
                               "recompute": "op-sac", "compile": False, "float8": False, "loss": "chunked",
                               "loss_chunk": 2048 // 8, "fsdp": "full"}),
    # 8 chunks of the micro-batch's tokens on each context-parallel rank: 2 x 4096 / 2 / 8
    ("torchtitan", {"batch": 2, "seq": 4096, "dp": 2, "cp": 2}, {"loss_chunk": 2 * 4096 // 2 // 8}),
    # axolotl 0.18.0 schemas: bf16 'auto', optimizer 'adamw_torch_fused', gradient_checkpointing False (passed to
    # prepare_model_for_kbit_training), activation_offloading False; loaders/model.py double quant True
    ("axolotl", {"peft": "qlora"}, {"precision": "bf16", "optimizer_impl": "fused", "recompute": "none",
                                    "activation_offload": False, "adapter_dtype": "fp32", "double_quant": True}),
    # unsloth 2026.8.19: from_pretrained(load_in_4bit=True), double quant True; get_peft_model(r=16, the seven
    # projections, lora_dropout=0.0, use_gradient_checkpointing='unsloth'), unsloth_fused_ce_loss
    ("unsloth", {}, {"peft": "qlora", "precision": "bf16", "lora_r": 16, "lora_targets": LLAMA_LINEAR,
                     "lora_dropout": 0.0, "recompute": "full", "activation_offload": True, "loss": "chunked",
                     "adapter_dtype": "fp32", "double_quant": True}),
    # apply_unsloth_gradient_checkpointing: below 512 tokens plain checkpointing, no offload
    ("unsloth", {"seq": 256}, {"recompute": "full"}),
    # LLaMA-Factory: finetuning_type 'lora', lora_rank 8, lora_target 'all', lora_dropout 0.0,
    # disable_gradient_checkpointing False, adapters cast to fp32, HF Trainer's adamw_torch_fused
    ("llama-factory", {}, {"peft": "lora", "lora_r": 8, "lora_targets": ("all-linear",), "lora_dropout": 0.0,
                           "recompute": "full", "precision": "bf16", "adapter_dtype": "fp32",
                           "optimizer_impl": "fused"}),
    # full fine-tuning: the trainable (all) parameters cast to fp32 under bf16 autocast; not under ZeRO-3
    ("llama-factory", {"peft": "none"}, {"precision": "amp"}),
    ("llama-factory", {"peft": "none", "dp": 4, "zero": 3}, {"precision": "bf16-mixed"}),
    ("llama-factory", {"peft": "qlora"}, {"double_quant": True}),
    # Megatron-LM core 0.20.0: bf16 -> accumulate_allreduce_grads_in_fp32, Float16OptimizerWithFloat16Params,
    # --optimizer adam (FusedAdam), recompute_granularity None, use_distributed_optimizer False, fp32 loss
    ("megatron", {}, {"precision": "bf16-mixed", "grad_dtype": "fp32", "optimizer": "adamw", "optimizer_impl": "fused",
                      "recompute": "none", "zero": 0, "loss": "full"}),
]  # fmt: skip


def _applied(framework: str, given: dict[str, Any]) -> Applied:
    return preset({"framework": framework, **given})


@pytest.mark.parametrize(("framework", "given", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_preset_sets_its_sources_values(framework: str, given: dict[str, Any], expected: dict[str, Any]) -> None:
    applied = _applied(framework, given)
    defaults = TrainSetup().to_flat()
    for name, value in expected.items():
        if name in defaults:  # an option this checkout has: the preset must set it (or leave it at that value)
            assert applied.flat.get(name, defaults[name]) == value, name
        elif value is not False:
            assert any(f"{name}=" in n and "not modelled yet" in n for n in applied.notes), (name, applied.notes)
    TrainSetup.from_flat(**applied.flat)  # and the setup builds


def test_a_condition_not_met_sets_nothing() -> None:
    """torchtune's optimizer_in_bwd needs gradient_accumulation_steps=1; unsloth offloads from 512 tokens on."""
    assert "optimizer_in_backward" not in _applied("torchtune", {"grad_accum": 4}).flat
    assert not any("optimizer_in_backward" in n for n in _applied("torchtune", {"grad_accum": 4}).notes)
    assert "activation_offload" not in _applied("unsloth", {"seq": 256}).flat
    assert not any("activation_offload" in n for n in _applied("unsloth", {"seq": 256}).notes)
    assert "fsdp" not in _applied("torchtune", {"peft": "lora"}).flat  # one GPU: nothing to shard


def test_options_given_win() -> None:
    given = {"recompute": "none", "precision": "bf16-mixed", "lora_r": 64, "peft": "lora", "loss": "full"}
    for framework in Framework:
        flat = _applied(framework, given).flat
        assert {k: flat[k] for k in given} == given, framework
    setup = train_setup({"framework": "torchtune", "recompute": "full", "fsdp": "grad-op", "dp": 2, "peft": "lora"})
    assert (setup.recompute, setup.parallel.fsdp) == ("full", "grad-op")


def test_options_given_win_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "train", "llama-3-8b", "--framework", "torchtune", "--recompute", "none",
                       "--precision", "bf16-mixed", "--json")  # fmt: skip
    assert code == 0
    setup = json.loads(out)["setup"]
    assert (setup["framework"], setup["recompute"], setup["precision"]) == ("torchtune", "none", "bf16-mixed")
    assert setup["optimizer_impl"] == "fused"  # the rest is still torchtune's


def test_none_is_todays_behaviour() -> None:
    assert train_setup({"framework": "none"}) == TrainSetup()
    assert train_setup_noted({})[1] == ()
    assert _applied("none", {"dp": 2}).notes == ()


def test_a_note_per_default_that_changed_the_setup() -> None:
    """HF Trainer's adamw and full loss are vramwise's defaults already: no note; bf16 and fused changed it."""
    notes = _applied("hf-trainer", {}).notes
    assert notes[0].startswith("--framework hf-trainer: defaults of transformers 5.24.0")
    changed = [n.split(": ", 1)[1].split(" ", 1)[0] for n in notes[1:]]
    assert changed == ["precision=bf16", "optimizer_impl=fused"]
    assert all("[" in n and n.endswith("]") for n in notes[1:])  # each cites its source


def test_the_notes_reach_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "train", "llama-3-8b", "--framework", "megatron", "--json")
    assert code == 0
    notes = json.loads(out)["notes"]
    assert any(n.startswith("--framework megatron: defaults of Megatron-LM core 0.20.0") for n in notes)
    assert any(n.startswith("--framework megatron: grad_dtype=fp32") for n in notes)


# (argv after the model, the option the refusal names, a word of the framework's rule)
REFUSALS = [
    (["--framework", "torchtune", "--dp", "2", "--zero", "3"], "zero=3", "FSDP2"),
    (["--framework", "torchtune", "--pp", "2", "--grad-accum", "2"], "pp=2", "pipeline"),
    (["--framework", "torchtitan", "--peft", "qlora"], "peft=qlora", "4-bit"),
    (["--framework", "torchtitan", "--dp", "2", "--zero", "1"], "zero=1", "FSDP2"),
    (["--framework", "unsloth", "--tp", "2"], "tp=2", "tensor"),
    (["--framework", "unsloth", "--dp", "2", "--fsdp", "full"], "fsdp=full", "DDP"),
    (["--framework", "unsloth", "--dp", "2", "--zero", "3"], "zero=3", "ZeRO-3"),
    (["--framework", "megatron", "--peft", "lora"], "peft=lora", "LoRA"),
    (["--framework", "megatron", "--dp", "2", "--zero", "2"], "zero=2", "distributed optimizer"),
    (["--framework", "deepspeed", "--dp", "2", "--fsdp", "full"], "fsdp=full", "ZeRO stages"),
    (["--framework", "deepspeed", "--dp", "2", "--zero", "2", "--pp", "2", "--grad-accum", "2"], "zero=2",
     "incompatible with pipeline parallelism"),
    (["--framework", "llama-factory", "--peft", "none", "--precision", "bf16", "--dp", "2", "--zero", "3"],
     "precision=bf16", "pure_bf16"),
]


@pytest.mark.parametrize(("argv", "what", "rule"), REFUSALS, ids=[" ".join(r[0][1:]) for r in REFUSALS])
def test_each_refusal_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], what: str, rule: str
) -> None:
    code, out, err = run(capsys, "train", "llama-3-8b", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"vramwise: error: --framework {argv[1]} does not run {what}: ") and rule in err


def test_the_refusal_names_field_and_allowed() -> None:
    with pytest.raises(InvalidWorkloadError) as caught:
        TrainSetup.from_flat(framework="torchtune", dp=2, zero=3)
    assert caught.value.field == "zero" and caught.value.allowed and "fsdp" in caught.value.allowed


def test_an_unknown_framework_lists_the_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "llama-3-8b", "--framework", "nemo")
    assert code == 2 and err.count("\n") == 1
    assert all(f.value in err for f in Framework)


def test_textbook_mode_refuses_a_framework(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "llama-3-8b", "--framework", "torchtune", "--mode", "textbook")
    assert code == 2 and "--framework applies to accurate mode" in err


def test_a_recipes_lora_modules_on_a_model_without_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "gpt2", "--framework", "torchtune", "--peft", "lora")
    assert code == 2 and err.count("\n") == 1
    assert "--framework torchtune puts LoRA on q_proj" in err and "c_attn" in err
    given = ("--framework", "torchtune", "--peft", "lora", "--lora-targets", "c_attn")
    assert run(capsys, "train", "gpt2", *given)[0] == 0


def test_fit_searches_follow_the_frameworks_sharding(capsys: pytest.CaptureFixture[str]) -> None:
    options: dict[str, Any] = {"framework": "torchtune"}
    _framework_search(Question.MIN_GPUS, options)
    assert options["fsdp"] == "full"  # torchtune shards with FSDP2, so --min-gpus searches FSDP, not ZeRO-3
    options = {"framework": "deepspeed"}
    _framework_search(Question.MIN_GPUS, options)
    assert "fsdp" not in options  # ZeRO-3, the search's own default
    code, _, err = run(capsys, "fit", "llama-3-8b", "--gpu", "H100", "--framework", "unsloth", "--min-gpus")
    assert code == 2 and err.count("\n") == 1 and "--framework unsloth does not run zero=3" in err
    # --layouts: an FSDP framework's layouts rank FSDP's modes, never a ZeRO stage it does not run; torchtune and
    # torchtitan's presets shard at dp >= 2 (their distributed recipes' fully_shard), so no unsharded replica either
    for framework in ("torchtitan", "torchtune", "litgpt"):
        code, out, err = run(capsys, "fit", "llama-3-8b", "--gpu", "H100", "--framework", framework, "--layouts", "8")
        layouts = [line for line in out.splitlines() if line.startswith("  tp=")]
        assert code == 0 and layouts and err == "", (framework, err)
        assert all(" zero=" not in line and " fsdp=" in line for line in layouts if " dp=1 " not in line), framework
    assert _framework_search(Question.LAYOUTS, {"framework": "torchtune"}) == ("full", "grad-op")
    assert _framework_search(Question.LAYOUTS, {"framework": "deepspeed"}) == ()  # ZeRO's stages
    code, out, _ = run(capsys, "fit", "llama-3-8b", "--gpu", "H100", "--framework", "torchtune", "--min-gpus")
    assert code == 0 and "--framework torchtune: defaults of torchtune 0.7.0" in out


def test_every_default_cites_a_file_at_a_stated_commit() -> None:
    for framework, table in PRESETS.items():
        assert re.search(r"\d+\.\d+", VERSIONS[framework]), framework
        assert "git " in VERSIONS[framework] or "installed" in VERSIONS[framework]
        for row in table.defaults:
            assert re.search(r"\.(py|yaml|sh)\b", row.source), (framework, row.name)  # sh: a run script's env
    assert set(PRESETS) == set(Framework) - {Framework.NONE}


def test_the_readme_lists_every_preset() -> None:
    text = README.read_text()
    section = text.split("## Framework presets", 1)[1].split("\n## ", 1)[0]
    for framework in PRESETS:
        assert f"`{framework}`" in section, framework


def test_the_model_is_not_needed_to_apply_a_preset() -> None:
    """The preset works on option values alone; the model only checks a recipe's LoRA module names."""
    model = resolve_model("llama-3-8b")
    setup, notes = train_setup_noted({"framework": "unsloth"}, model)
    assert setup.peft.method == "qlora" and setup.peft.lora_targets == LLAMA_LINEAR and notes


def test_under_fsdp_auto_loading_is_the_frameworks() -> None:
    """torchtune and torchtitan build on the meta device and fill the shards (their sources, in the notes); the
    rest load the whole model per rank before FSDP shards it (transformers' path, loading.py's auto)."""
    from vramwise.estimate.train.loading import loading_path

    model = resolve_model("llama-3-8b")
    assert isinstance(model, ModelSpec)
    for framework, path in (("torchtune", "fsdp-meta"), ("torchtitan", "fsdp-meta"), ("hf-trainer", "fsdp-full"),
                            ("none", "fsdp-full")):  # fmt: skip
        setup = train_setup({"framework": framework, "dp": 4, "fsdp": "full"}, model)
        assert loading_path(model, setup) == path, framework
    assert any("--loading auto is fsdp-meta" in n for n in _applied("torchtune", {}).notes)
    setup = train_setup({"framework": "deepspeed", "dp": 4, "zero": 3}, model)
    assert loading_path(model, setup) == "zero-init"  # auto's own choice: get_init_context's zero.Init


def test_a_default_the_options_given_rule_out_yields() -> None:
    """A preset default that a rule between options refuses with the options given (double quantization needs
    QLoRA's 4-bit base) is dropped with a note, never the user's option."""
    from vramwise.workload.frameworks import _yield_to_given

    out = {"framework": "unsloth", "peft": "lora", "double_quant": True}
    notes = _yield_to_given(Framework.UNSLOTH, out, {"framework": "unsloth", "peft": "lora"})
    assert "double_quant" not in out and out["peft"] == "lora"
    assert len(notes) == 1 and "double_quant=true not applied with the options given" in notes[0]
    # torchtune's optimizer_in_bwd steps pure bf16 weights: its own condition skips it under bf16-mixed
    setup = train_setup({"framework": "torchtune", "precision": "bf16-mixed"})
    assert setup.precision.recipe == "bf16-mixed" and not setup.optimizer.in_backward


def test_a_framework_is_a_training_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "fit", "llama-3-8b", "--gpu", "H100", "--infer", "--framework", "torchtune",
                       "--max", "batch")  # fmt: skip
    assert code == 2 and err == "vramwise: error: --framework is a training option: drop it, or drop --infer\n"


# The loops that free the model's outputs before backward (read at the commits VERSIONS names): --keep-logits says
# the loop keeps them, which these frameworks' own loops never do, so the combination is refused like any other
# they do not run. transformers 5.24.0 trainer.py Trainer.compute_loss returns the loss alone (axolotl's and
# LLaMA-Factory's trainers subclass it); torchtune bd2a0fc7 recipes/full_finetune_single_device.py _loss_step
# ``del outputs``; torchtitan b5bcd76c torchtitan/trainer.py ``del pred`` before loss.backward(); Megatron-LM
# d98e8a64 megatron/core/models/gpt/gpt_model.py GPTModel.forward returns the loss, not the logits, given labels.
DROP_LOGITS = ["hf-trainer", "axolotl", "llama-factory", "torchtune", "torchtitan", "megatron"]


@pytest.mark.parametrize("framework", DROP_LOGITS)
def test_keep_logits_is_refused_where_the_framework_frees_them(
    capsys: pytest.CaptureFixture[str], framework: str
) -> None:
    code, out, err = run(capsys, "train", "llama-3.2-1b", "--seq", "1024", "--framework", framework, "--loss", "full",
                         "--keep-logits")  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"vramwise: error: --framework {framework} does not run keep_logits=true: ")


@pytest.mark.parametrize("framework", ["none", "accelerate", "deepspeed"])
def test_keep_logits_runs_in_a_loop_of_ones_own(capsys: pytest.CaptureFixture[str], framework: str) -> None:
    code, _, err = run(capsys, "train", "llama-3.2-1b", "--seq", "1024", "--framework", framework, "--keep-logits")
    assert code == 0, err

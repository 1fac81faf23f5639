"""Each importer reads an example config written as its project documents it; the oracle is the file itself: each
expected option is the value of the key the test names beside it (and the framework's default where the file is
silent, cited in configs/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramwise.app.setups import infer_setup, train_setup
from vramwise.configs import load

# DeepSpeed docs/_pages/config-json.md and transformers docs/source/en/deepspeed.md ("ZeRO-3 example"): the HF
# Trainer's ds_config_zero3.json with "auto" values, as the docs print it (optimizer/scheduler blocks shortened)
ZERO3 = {
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto"}},
    "zero_optimization": {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": True},
        "overlap_comm": True,
        "contiguous_gradients": True,
        "sub_group_size": 1e9,
        "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_max_live_parameters": 1e9,
        "stage3_max_reuse_distance": 1e9,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 2000,
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": False,
}

# DeepSpeed docs/_pages/config-json.md: a standalone ZeRO-2 config with explicit numbers
ZERO2 = {
    "train_batch_size": 64,
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 2,
    "fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 16},
    "zero_optimization": {"stage": 2, "allgather_partitions": True, "allgather_bucket_size": 5e8,
                          "overlap_comm": False, "reduce_scatter": True, "reduce_bucket_size": 2e8,
                          "contiguous_gradients": True},
    "optimizer": {"type": "Adam", "params": {"lr": 0.0001}},
}  # fmt: skip


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_deepspeed_zero2_explicit(tmp_path: Path) -> None:
    imp = load(_write(tmp_path, "ds.json", json.dumps(ZERO2)))
    assert imp.kind == "deepspeed" and imp.command == "train"
    o = imp.options
    assert (o["batch"], o["grad_accum"], o["zero"]) == (4, 2, 2)  # micro batch, accumulation, stage
    assert o["dp"] == 64 // (4 * 2)  # train_batch_size = micro x accumulation x GPUs
    assert o["precision"] == "fp16-mixed" and o["optimizer"] == "adamw"  # fp16.enabled; "Adam" -> FusedAdam (AdamW)
    assert o["reduce_bucket"] == 200_000_000 and o["overlap_comm"] is False
    assert "zero_optimization.allgather_bucket_size" in imp.ignored and "fp16.loss_scale" in imp.ignored
    s = train_setup(o)
    assert s.parallel.dp == 8 and s.parallel.zero == 2 and s.framework == "deepspeed"


def test_deepspeed_zero3_auto_values_come_from_the_trainer(tmp_path: Path) -> None:
    ds = _write(tmp_path, "ds_config_zero3.json", json.dumps(ZERO3))
    alone = load(ds)
    assert "batch" not in alone.options and "precision" not in alone.options  # "auto": the trainer's
    assert alone.options["offload"] == "params"  # offload_optimizer and offload_param both cpu
    assert alone.options["max_live_params"] == 1_000_000_000 and "reduce_bucket" not in alone.options
    assert any("auto" in n for n in alone.notes)
    args = {"output_dir": "out", "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "bf16": True,
            "deepspeed": "ds_config_zero3.json", "gradient_checkpointing": True}
    imp = load(_write(tmp_path, "args.json", json.dumps(args)))
    o = imp.options
    assert (o["batch"], o["grad_accum"], o["precision"], o["zero"]) == (2, 4, "bf16-mixed", 3)
    assert o["framework"] == "deepspeed" and o["recompute"] == "full"
    assert "deepspeed:zero_optimization.stage" in imp.used


def test_trainer_yaml_with_trl_model_config(tmp_path: Path) -> None:
    # TRL's recipe YAML (trl/scripts/sft.py reads ScriptArguments + SFTConfig + ModelConfig from one file)
    text = """
model_name_or_path: meta-llama/Llama-3.1-8B
dataset_name: trl-lib/Capybara
per_device_train_batch_size: 4
gradient_accumulation_steps: 8
gradient_checkpointing: true
learning_rate: 2.0e-4
bf16: true
optim: paged_adamw_8bit
max_length: 4096
use_peft: true
load_in_4bit: true
lora_r: 32
lora_alpha: 16
lora_target_modules: all-linear
output_dir: out
report_to: none
"""
    imp = load(_write(tmp_path, "sft.yaml", text))
    o = imp.options
    assert imp.model == "meta-llama/Llama-3.1-8B"
    assert (o["batch"], o["grad_accum"], o["seq"], o["lora_r"]) == (4, 8, 4096, 32)
    assert (o["peft"], o["optimizer"], o["recompute"], o["lora_targets"]) == ("qlora", "paged-adamw-8bit", "full",
                                                                             "all-linear")
    assert {"learning_rate", "lora_alpha", "dataset_name"} <= set(imp.ignored)


def test_trainer_defaults_where_the_file_is_silent(tmp_path: Path) -> None:
    imp = load(_write(tmp_path, "args.json", json.dumps({"output_dir": "o", "dataset_text_field": "text"})))
    assert imp.options["batch"] == 8  # TrainingArguments.per_device_train_batch_size default
    assert imp.options["seq"] == 1024  # TRL SFTConfig.max_length default


def test_training_script_command_line() -> None:
    imp = load("torchrun --nproc_per_node 4 train.py --per_device_train_batch_size 2 --bf16 --gradient_checkpointing "
               "--optim adamw_torch --output_dir x --fsdp 'full_shard auto_wrap'")
    o = imp.options
    assert (o["dp"], o["batch"], o["precision"], o["recompute"]) == (4, 2, "bf16", "full")
    assert (o["optimizer"], o["optimizer_impl"], o["fsdp"]) == ("adamw", "foreach", "full")


def test_axolotl_qlora_example(tmp_path: Path) -> None:
    # axolotl examples/llama-3/qlora.yml (shortened: datasets and schedule keys kept, as the example has them)
    text = """
base_model: NousResearch/Meta-Llama-3-8B
load_in_8bit: false
load_in_4bit: true
datasets:
  - path: aaditya/alpaca_subset_1
    type: alpaca
dataset_prepared_path:
val_set_size: 0
output_dir: ./outputs/qlora-out
adapter: qlora
lora_model_dir:
sequence_len: 4096
sample_packing: true
pad_to_sequence_len: true
lora_r: 32
lora_alpha: 16
lora_dropout: 0.05
lora_target_linear: true
gradient_accumulation_steps: 4
micro_batch_size: 2
num_epochs: 4
optimizer: paged_adamw_32bit
lr_scheduler: cosine
learning_rate: 0.0002
bf16: auto
tf32: false
gradient_checkpointing: true
logging_steps: 1
flash_attention: true
warmup_steps: 10
evals_per_epoch: 4
saves_per_epoch: 1
weight_decay: 0.0
special_tokens:
  pad_token: "<|end_of_text|>"
"""
    imp = load(_write(tmp_path, "qlora.yml", text))
    o = imp.options
    assert imp.kind == "axolotl" and imp.model == "NousResearch/Meta-Llama-3-8B"
    assert (o["peft"], o["seq"], o["batch"], o["grad_accum"], o["lora_r"]) == ("qlora", 4096, 2, 4, 32)
    assert (o["lora_targets"], o["optimizer"], o["recompute"], o["attention"]) == ("all-linear", "paged-adamw", "full",
                                                                                  "flash")
    assert o["lora_dropout"] == 0.05 and "precision" not in o  # bf16: auto -> the axolotl preset's bf16
    s = train_setup({**o, "framework": "axolotl"})
    assert s.precision.recipe == "bf16" and s.peft.double_quant  # the preset's: axolotl's qlora double quant


def test_torchtune_lora_recipe(tmp_path: Path) -> None:
    # torchtune recipes/configs/llama3_1/8B_lora_single_device.yaml (v0.7.0), paths shortened
    text = """
output_dir: /tmp/torchtune/llama3_1_8B/lora_single_device
model:
  _component_: torchtune.models.llama3_1.lora_llama3_1_8b
  lora_attn_modules: ['q_proj', 'v_proj', 'output_proj']
  apply_lora_to_mlp: True
  apply_lora_to_output: False
  lora_rank: 8
  lora_alpha: 16
  lora_dropout: 0.0
tokenizer:
  _component_: torchtune.models.llama3.llama3_tokenizer
  path: /tmp/Meta-Llama-3.1-8B-Instruct/original/tokenizer.model
  max_seq_len: null
checkpointer:
  _component_: torchtune.training.FullModelHFCheckpointer
  checkpoint_dir: /tmp/Meta-Llama-3.1-8B-Instruct/
  model_type: LLAMA3
resume_from_checkpoint: False
save_adapter_weights_only: False
dataset:
  _component_: torchtune.datasets.alpaca_cleaned_dataset
  packed: False
seed: null
shuffle: True
batch_size: 2
optimizer:
  _component_: torch.optim.AdamW
  fused: True
  weight_decay: 0.01
  lr: 3e-4
lr_scheduler:
  _component_: torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup
  num_warmup_steps: 100
loss:
  _component_: torchtune.modules.loss.LinearCrossEntropyLoss
epochs: 1
max_steps_per_epoch: null
gradient_accumulation_steps: 8
clip_grad_norm: null
compile: False
device: cuda
enable_activation_checkpointing: True
enable_activation_offloading: False
dtype: bf16
metric_logger:
  _component_: torchtune.training.metric_logging.DiskLogger
  log_dir: ${output_dir}/logs
log_every_n_steps: 1
log_peak_memory_stats: True
"""
    imp = load(_write(tmp_path, "8B_lora_single_device.yaml", text))
    o = imp.options
    assert imp.model == "llama-3.1-8b" and o["peft"] == "lora" and o["lora_r"] == 8
    assert o["lora_targets"] == "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # output_proj is o_proj; w1-w3
    assert (o["batch"], o["grad_accum"], o["loss"], o["precision"]) == (2, 8, "torchtune-linear", "bf16")
    assert (o["optimizer"], o["optimizer_impl"], o["recompute"]) == ("adamw", "fused", "full")
    assert any("max_seq_len" in n for n in imp.notes)  # null: as long as the data, said so


def test_vllm_serve_line() -> None:
    imp = load("vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 16384 --gpu-memory-utilization 0.85 "
               "--tensor-parallel-size 2 --kv-cache-dtype fp8 --enforce-eager --port 8000")
    o = imp.options
    assert imp.command == "infer" and imp.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert o == {"engine": "vllm", "max_model_len": 16384, "gpu_util": 0.85, "tp": 2, "kv_dtype": "fp8",
                 "enforce_eager": True}
    assert imp.ignored == ("--port",)
    s = infer_setup(o)
    assert s.vllm.max_model_len == 16384 and s.gpu_utilization == 0.85 and s.tp == 2


def test_sglang_and_llama_server_lines() -> None:
    sg = load("python -m sglang.launch_server --model-path Qwen/Qwen2.5-7B-Instruct --mem-fraction-static 0.8 "
              "--chunked-prefill-size 4096 --tp 1 --host 0.0.0.0")
    assert sg.options == {"engine": "sglang", "mem_fraction_static": 0.8, "chunked_prefill_size": 4096, "tp": 1}
    ll = load("llama-server -m models/llama-3.1-8b-q4_k_m.gguf -c 16384 -ngl 99 -fa on -np 4 -ctk q8_0 -ctv q8_0 "
              "--port 8080")
    assert ll.model == "models/llama-3.1-8b-q4_k_m.gguf"
    assert ll.options == {"engine": "llama.cpp", "ctx_size": 16384, "n_gpu_layers": 99, "flash_attn": "on",
                          "parallel": 4, "cache_type_k": "q8_0", "cache_type_v": "q8_0"}


def test_ollama_modelfile(tmp_path: Path) -> None:
    # ollama docs/modelfile.md's example
    text = '''FROM llama3.2
# sets the temperature to 1 [higher is more creative, lower is more coherent]
PARAMETER temperature 1
# sets the context window size to 4096
PARAMETER num_ctx 4096
SYSTEM """You are Mario from super mario bros, acting as an assistant."""
'''
    imp = load(_write(tmp_path, "Modelfile", text))
    # "llama3.2" is llama3.2:latest, whose size the registry decides: not guessed, the note asks for MODEL
    assert imp.model is None and imp.options == {"engine": "llama.cpp", "ollama": True, "ctx_size": 4096}
    assert "names no size" in imp.notes[0]
    assert "PARAMETER temperature" in imp.ignored


@pytest.mark.parametrize(
    ("line", "model", "fmt"),
    [
        ("FROM llama3.1:8b", "llama-3.1-8b", None),  # ollama.com/library/llama3.1: Meta's Llama 3.1 8B
        ("FROM llama3.1:8b-instruct-q4_K_M", "llama-3.1-8b", "q4_k_m"),  # the tag names its quantization
        ("FROM library/qwen2.5:7b-instruct-q8_0", "qwen2.5-7b", "q8_0"),
        ("FROM gemma2:9b-text-fp16", "gemma-2-9b", "fp16"),
        ("FROM llama3.3:70b", None, None),  # not in the table: no model, a note that says so
        ("FROM ./llama-3.1-8b-q4_k_m.gguf", "./llama-3.1-8b-q4_k_m.gguf", None),  # a file stays a file
    ],
)
def test_ollama_library_names(tmp_path: Path, line: str, model: str | None, fmt: str | None) -> None:
    imp = load(_write(tmp_path, "Modelfile", line + "\n"))
    assert imp.model == model
    assert imp.options.get("format") == fmt


def test_llama_factory_lora_example(tmp_path: Path) -> None:
    # LLaMA-Factory examples/train_lora/llama3_lora_sft.yaml (ff6d4d12)
    text = """
### model
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
trust_remote_code: true
### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
### dataset
dataset: identity,alpaca_en_demo
template: llama3
cutoff_len: 2048
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 4
### output
output_dir: saves/llama3-8b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none
### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null
"""
    imp = load(_write(tmp_path, "llama3_lora_sft.yaml", text))
    o = imp.options
    assert imp.kind == "llama-factory" and imp.model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert (o["lora_r"], o["lora_targets"], o["seq"], o["batch"], o["grad_accum"]) == (8, "all-linear", 2048, 1, 8)
    assert o["framework"] == "llama-factory" and "precision" not in o  # the preset's: bf16 base, fp32 adapters
    s = train_setup(o)
    assert s.peft.method == "lora" and s.precision.recipe == "bf16" and s.recompute == "full"
    full = load(_write(tmp_path, "full.yaml", text.replace("finetuning_type: lora", "finetuning_type: full")))
    assert train_setup(full.options).peft.method == "none"
    qlora = load(_write(tmp_path, "q.yaml", text + "quantization_bit: 4\n"))
    assert qlora.options["peft"] == "qlora"


def test_torchtitan_toml(tmp_path: Path) -> None:
    # torchtitan configs/llama3_8b-8xb200-8k.toml (25079f11), shortened to the memory keys and a few others
    text = """
[job]
dump_folder = "./outputs"
description = "Llama 3 8B training"

[model]
name = "llama3"
flavor = "8B"
hf_assets_path = "./assets/hf/Llama-3.1-8B"
converters = []

[training]
local_batch_size = 3
seq_len = 8192
max_norm = 1.0  # grad norm clipping
steps = 1000
dataset = "c4"
dtype = "bfloat16"
mixed_precision_reduce = "bfloat16"

[parallelism]
data_parallel_replicate_degree = 1
data_parallel_shard_degree = 8
tensor_parallel_degree = 1
pipeline_parallel_degree = 1
context_parallel_degree = 1

[activation_checkpoint]
mode = "none"  # ["none", "selective", "full"]
selective_ac_option = "op"

[optimizer]
name = "AdamW"
lr = 3e-4
eps = 1e-8
implementation = "fused"
early_step_in_backward = true

[compile]
enable = true
components = ["model", "loss"]
"""
    imp = load(_write(tmp_path, "llama3_8b.toml", text))
    o = imp.options
    assert imp.kind == "torchtitan" and imp.model == "llama-3.1-8b"
    assert (o["batch"], o["seq"], o["dp"], o["recompute"], o["precision"]) == (3, 8192, 8, "none", "bf16")
    assert (o["grad_dtype"], o["optimizer_impl"], o["optimizer_in_backward"], o["compile"]) == ("half", "fused", True,
                                                                                                True)
    layer = load(_write(tmp_path, "sel.toml", text.replace('mode = "none"', 'mode = "selective"').replace(
        'selective_ac_option = "op"', "selective_ac_option = '2'")))
    assert (layer.options["recompute"], layer.options["recompute_every"]) == ("layer-sac", 2)


def test_megatron_arguments() -> None:
    # Megatron-LM examples/llama/train_llama3_8b_h100_fp8.sh's shape, with bf16 instead of fp8 (shortened)
    imp = load("torchrun --nproc_per_node 8 --nnodes 2 pretrain_gpt.py --num-layers 32 --hidden-size 4096 "
               "--ffn-hidden-size 14336 --num-attention-heads 32 --group-query-attention --num-query-groups 8 "
               "--tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --context-parallel-size 1 "
               "--sequence-parallel --micro-batch-size 1 --global-batch-size 128 --seq-length 8192 --bf16 "
               "--use-distributed-optimizer --recompute-granularity full --recompute-method uniform "
               "--recompute-num-layers 1 --lr 3e-4 --train-iters 1000 --use-flash-attn")
    o = imp.options
    assert imp.kind == "megatron" and o["framework"] == "megatron"
    assert (o["tp"], o["pp"], o["sp"], o["dp"]) == (2, 2, True, 16 // (2 * 2))  # 8 GPUs x 2 nodes / (tp x pp)
    assert o["grad_accum"] == 128 // (1 * 4)  # global / (micro x dp)
    assert (o["precision"], o["zero"], o["recompute"], o["seq"]) == ("bf16-mixed", 1, "full", 8192)
    assert any("--num-layers" in n for n in imp.notes)  # the shape flags are named, not read


def test_trainer_fp32_weights_make_bf16_an_autocast(tmp_path: Path) -> None:
    # TRL ModelConfig.dtype float32: from_pretrained loads fp32 weights; bf16: true autocasts over them
    imp = load(_write(tmp_path, "a.json", json.dumps({"output_dir": "o", "bf16": True, "dtype": "float32"})))
    assert imp.options["precision"] == "amp"
    imp = load(_write(tmp_path, "b.json", json.dumps({"output_dir": "o", "torch_dtype": "float32"})))
    assert imp.options["precision"] == "fp32"


def test_trl_command_line_with_a_list() -> None:
    # trl/scripts/sft.py's documented launch (TRL docs sft_trainer.md): ModelConfig's nargs="+" target modules
    imp = load("accelerate launch --num_processes 2 trl/scripts/sft.py --model_name_or_path Qwen/Qwen2.5-7B "
               "--dataset_name trl-lib/Capybara --use_peft --lora_r 16 --lora_target_modules q_proj v_proj "
               "--per_device_train_batch_size 2 --max_length 2048 --bf16 --output_dir out")
    o = imp.options
    assert (o["dp"], o["peft"], o["lora_r"], o["lora_targets"], o["seq"]) == (2, "lora", 16, "q_proj,v_proj", 2048)


def test_ollama_notes_say_what_the_tag_names(tmp_path: Path) -> None:
    # review finding: "mixtral:8x22b" was told "the tag '8x22b' names no size (give one, as in mixtral:8b)" (it names
    # one; mixtral:8b does not exist), and "llama3.1:70b-instruct-q2_K" "the tag names no quantization" (it names
    # q2_K, a type vramwise does not model)
    imp = load(_write(tmp_path, "Modelfile", "FROM mixtral:8x22b\n"))
    assert imp.model is None and "'8x22b' names no size vramwise maps for mixtral (it maps 8x7b)" in imp.notes[0]
    assert "mixtral:8b" not in imp.notes[0]
    for tag, quant in [("70b-instruct-q2_K", "q2_K"), ("8b-instruct-iq4_xs", "iq4_xs"), ("8b-q4_K_S", "q4_K_S")]:
        imp = load(_write(tmp_path, "Modelfile", f"FROM llama3.1:{tag}\n"))
        assert imp.model is not None and "format" not in imp.options, tag
        assert f"quantization {quant} is not a format vramwise models" in imp.notes[0], imp.notes
    imp = load(_write(tmp_path, "Modelfile", "FROM llama3.1:8b-instruct\n"))
    assert "the tag names no quantization" in imp.notes[0]


def test_trainer_adamw_torch_8bit_is_torchao_s_8_bit_adamw() -> None:
    # transformers 5.24.0 trainer_optimizer.py _get_torchao_optimizer: optim adamw_torch_8bit builds torchao's
    # AdamW8bit (block_size 256 by default), not bitsandbytes' (adamw_bnb_8bit)
    imp = load("python train.py --optim adamw_torch_8bit --per_device_train_batch_size 1 --bf16 --output_dir x")
    assert imp.options["optimizer"] == "ao-adamw-8bit"
    assert load("python train.py --optim adamw_bnb_8bit --output_dir x").options["optimizer"] == "adamw-8bit"

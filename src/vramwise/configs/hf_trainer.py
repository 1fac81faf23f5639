"""HF ``TrainingArguments`` and TRL's ``SFTConfig`` (with TRL's ``ModelConfig`` keys, as TRL's YAML recipes mix
them), as a JSON or YAML mapping or as a training script's command-line arguments.

Defaults: transformers 5.24.0 ``training_args.py`` ``TrainingArguments`` (per_device_train_batch_size 8,
gradient_accumulation_steps 1, bf16/fp16 False, gradient_checkpointing off, optim 'adamw_torch_fused' on
torch >= 2.8), the rest from the ``--framework hf-trainer`` preset; TRL's ``SFTConfig.max_length`` 1024 (TRL docs
v0.19.1 sft_trainer.md: "the default value will be set to min(tokenizer.model_max_length, 1024)"). A ``deepspeed``
key (a path, or the config inline) is read too (``deepspeed.py``), and its "auto" values take these arguments'.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vramwise.configs import deepspeed
from vramwise.configs.imported import Imported
from vramwise.configs.values import Keys, prefixed, refuse

KIND = "trainer"
TRAINER_BATCH = 8  # training_args.py TrainingArguments.per_device_train_batch_size default
SFT_MAX_LENGTH = 1024  # TRL SFTConfig.max_length default

# transformers 5.24.0 OptimizerNames value -> (optimizer, optimizer_impl); None impl: torch's default (foreach)
OPTIMS: dict[str, tuple[str, str | None]] = {
    "adamw_torch": ("adamw", "foreach"),
    "adamw_torch_fused": ("adamw", "fused"),
    "adafactor": ("adafactor", None),
    "adamw_bnb_8bit": ("adamw-8bit", None),
    "adamw_8bit": ("adamw-8bit", None),
    "paged_adamw_8bit": ("paged-adamw-8bit", None),
    # trainer_optimizer.py _get_torchao_optimizer: torchao's AdamW8bit, block_size 256 unless optim_args says
    "adamw_torch_8bit": ("ao-adamw-8bit", None),
    "paged_adamw_32bit": ("paged-adamw", None),
    "lion_32bit": ("lion", None),
    "sgd": ("sgd", None),
    "lomo": ("lomo", None),
}
# TrainingArguments fields (transformers 5.24.0 dataclasses.fields) with no effect on the step's memory
_ARGS = [
    "output_dir",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "average_tokens_across_devices",
    "max_grad_norm",
    "label_smoothing_factor",
    "bf16_full_eval",
    "fp16_full_eval",
    "tf32",
    "gradient_checkpointing_kwargs",
    "torch_compile_backend",
    "torch_compile_mode",
    "liger_kernel_config",
    "use_cache",
    "neftune_noise_alpha",
    "torch_empty_cache_steps",
    "auto_find_batch_size",
    "logging_strategy",
    "logging_steps",
    "logging_first_step",
    "log_on_each_node",
    "logging_nan_inf_filter",
    "include_num_input_tokens_seen",
    "log_level",
    "log_level_replica",
    "disable_tqdm",
    "report_to",
    "run_name",
    "project",
    "trackio_space_id",
    "trackio_bucket_id",
    "trackio_static_space_id",
    "eval_strategy",
    "eval_steps",
    "eval_delay",
    "per_device_eval_batch_size",
    "prediction_loss_only",
    "eval_on_start",
    "eval_do_concat_batches",
    "eval_use_gather_object",
    "eval_accumulation_steps",
    "include_for_metrics",
    "batch_eval_metrics",
    "save_only_model",
    "save_strategy",
    "save_steps",
    "save_on_each_node",
    "save_total_limit",
    "enable_jit_checkpoint",
    "push_to_hub",
    "hub_token",
    "hub_private_repo",
    "hub_model_id",
    "hub_strategy",
    "hub_always_push",
    "hub_revision",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
    "ignore_data_skip",
    "restore_callback_states_from_checkpoint",
    "full_determinism",
    "seed",
    "data_seed",
    "use_cpu",
    "accelerator_config",
    "dataloader_drop_last",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context",
    "dataloader_in_order",
    "remove_unused_columns",
    "label_names",
    "train_sampling_strategy",
    "length_column_name",
    "ddp_find_unused_parameters",
    "ddp_bucket_cap_mb",
    "ddp_broadcast_buffers",
    "ddp_static_graph",
    "ddp_backend",
    "ddp_timeout",
    "debug",
    "skip_memory_metrics",
    "do_train",
    "do_eval",
    "do_predict",
    "resume_from_checkpoint",
    "local_rank",
    "overwrite_output_dir",
    "logging_dir",
    "save_safetensors",
    "evaluation_strategy",
]
# TRL's SFTConfig, ScriptArguments and ModelConfig keys with no effect on the step's memory
_TRL = [
    "dataset_name",
    "dataset_config",
    "dataset_train_split",
    "dataset_test_split",
    "dataset_text_field",
    "dataset_kwargs",
    "dataset_num_proc",
    "packing",
    "packing_strategy",
    "padding_free",
    "completion_only_loss",
    "assistant_only_loss",
    "eos_token",
    "pad_token",
    "chat_template_path",
    "model_init_kwargs",
    "model_revision",
    "trust_remote_code",
    "dtype",
    "torch_dtype",
    "bnb_4bit_quant_type",
    "use_bnb_nested_quant_storage",
    "lora_alpha",
    "lora_task_type",
    "use_rslora",
    "use_dora",
    "lora_modules_to_save",
    "activation_offloading_disabled",
    "gradient_checkpointing_use_reentrant",
    "ignore_bias_buffers",
    "dataset_streaming",
    "shuffle_dataset",
    "pad_to_multiple_of",
]
_HARMLESS = prefixed("fsdp_config.", names=(*_ARGS, *_TRL))
_REFUSED = {
    "optim_args": "optimizer arguments are not read (GaLore, APOLLO)",
    "optim_target_modules": "GaLore/APOLLO's low-rank optimizer targets are not modelled",
    "parallelism_config": "accelerate's ParallelismConfig is not read (use --tp, --cp, --dp)",
    "activation_checkpointing": "TrainingArguments.activation_checkpointing (FSDP2's) is not read; use "
    "gradient_checkpointing",
    "beta": "DPO/KTO/ORPO: the reference model and paired sequences are not modelled (SFT only)",
    "ref_model_init_kwargs": "DPO's reference model is not modelled (SFT only)",
    "precompute_ref_log_probs": "DPO's reference model is not modelled (SFT only)",
    "max_prompt_length": "DPO's prompt/completion pairs are not modelled (SFT only)",
    "num_generations": "GRPO's generations are not modelled (SFT only)",
}
_FSDP = {"full_shard": "full", "shard_grad_op": "grad-op", "hybrid_shard": "hybrid", "no_shard": "none"}
_ATTN = {"flash_attention_2": "flash", "flash_attention_3": "flash", "sdpa": "sdpa", "eager": "eager"}


def is_trainer(data: dict[str, Any]) -> bool:
    return any(
        k in data
        for k in (
            "per_device_train_batch_size",
            "output_dir",
            "optim",
            "max_seq_length",
            "gradient_checkpointing",
            "model_name_or_path",
        )
    )


def read(
    data: dict[str, Any],
    base: Path | None = None,
    load: Callable[[Path], dict[str, Any]] | None = None,
    dp: int | None = None,
) -> Imported:
    """The options a TrainingArguments/SFTConfig mapping sets; ``load`` reads the DeepSpeed JSON it names."""
    keys = Keys(KIND, data)
    ds = _deepspeed(keys, base, load)
    opts: dict[str, Any] = {"framework": "hf-trainer"}
    notes: list[str] = []
    if ds is not None:
        opts |= ds.options  # the trainer's own arguments below fill its "auto" values
    model = keys.text("model_name_or_path")
    _batch(keys, opts, ds, notes)
    _precision(keys, opts, ds)
    gc = keys.flag("gradient_checkpointing")
    if gc is not None:
        opts["recompute"] = "full" if gc else "none"
    optim = keys.choice("optim", OPTIMS)
    if optim is not None:
        opts["optimizer"] = optim[0]
        if optim[1]:
            opts["optimizer_impl"] = optim[1]
    for key in ("max_seq_length", "max_length"):
        seq = keys.integer(key, 1)
        if seq is not None:
            opts["seq"] = seq
    if "seq" not in opts and any(k in data for k in ("dataset_text_field", "packing", "completion_only_loss")):
        opts["seq"] = SFT_MAX_LENGTH
        notes.append(f"seq {SFT_MAX_LENGTH}: TRL SFTConfig.max_length's default")
    if keys.flag("torch_compile"):
        opts["compile"] = True
    if keys.flag("use_liger_kernel"):
        # transformers trainer.py -> liger_kernel apply_liger_kernel_to_<model>: fused linear cross entropy,
        # SwiGLU and RMSNorm kernels on by default
        opts |= {"loss": "liger", "mlp_impl": "fused", "norm_impl": "fused"}
    _fsdp(keys, opts)
    _peft(keys, opts)
    if dp is not None:
        opts["dp"] = dp
    ignored = keys.finish(_HARMLESS, refused=_REFUSED)
    used, ignored = deepspeed.fold_nested(tuple(keys.used), ignored, ds)
    return Imported(
        kind=KIND if ds is None else "trainer+deepspeed",
        command="train",
        options=opts,
        model=model,
        used=used,
        ignored=ignored,
        notes=tuple(notes),
        hidden_auto=ds.hidden_auto if ds else (),
    )


def _deepspeed(keys: Keys, base: Path | None, load: Callable[[Path], dict[str, Any]] | None) -> Imported | None:
    value = keys.raw("deepspeed")
    if value is None:
        return None
    if isinstance(value, dict):
        return deepspeed.read(value)
    if not isinstance(value, str) or load is None:
        raise refuse(KIND, "deepspeed", "must be the path of a DeepSpeed JSON config or the config itself")
    return deepspeed.read_nested(value, base, load)


def _batch(keys: Keys, opts: dict[str, Any], ds: Imported | None, notes: list[str]) -> None:
    for key, name in (("per_device_train_batch_size", "batch"), ("gradient_accumulation_steps", "grad_accum")):
        value = keys.integer(key, 1)
        if value is not None and ds is not None and name in ds.options and ds.options[name] != value:
            # transformers integrations/deepspeed.py trainer_config_process: mismatching values are an error
            raise refuse(
                KIND,
                key,
                f'{value} but the DeepSpeed config says {ds.options[name]}; make them agree or use "auto" there',
            )
        if value is not None:
            opts[name] = value
    if "batch" not in opts:
        opts["batch"] = TRAINER_BATCH
        notes.append(f"batch {TRAINER_BATCH}: TrainingArguments.per_device_train_batch_size's default")


def _precision(keys: Keys, opts: dict[str, Any], ds: Imported | None) -> None:
    bf16, fp16 = keys.flag("bf16"), keys.flag("fp16")
    if bf16 and fp16:
        raise refuse(KIND, "fp16", "bf16 and fp16 are both true; the Trainer runs one", "one of them")
    if ds is not None:
        if "precision" not in ds.options:  # "auto" in the DeepSpeed config: the trainer's bf16/fp16 decide
            opts["precision"] = "bf16-mixed" if bf16 else "fp16-mixed" if fp16 else "fp32"
        given = ds.options.get("precision")
        if (
            given in ("bf16-mixed", "fp16-mixed")
            and (bf16 or fp16)
            and given != ("bf16-mixed" if bf16 else "fp16-mixed")
        ):
            raise refuse(KIND, "bf16" if bf16 else "fp16", f"contradicts the DeepSpeed config's {given}")
        return
    # TRL ModelConfig.dtype (torch_dtype before): the weights' dtype from_pretrained loads (None/"auto": the
    # checkpoint's, bf16); fp32 weights make bf16/fp16 an autocast over them
    weights = None
    for key in ("dtype", "torch_dtype"):
        weights = keys.choice(key, {"auto": None, "bfloat16": None, "float32": "float32", "float16": "float16"}) or (
            weights
        )
    if weights == "float32":
        opts["precision"] = "amp" if bf16 else "amp-fp16" if fp16 else "fp32"
    elif weights == "float16" and fp16:
        raise refuse(KIND, "fp16", "fp16 weights with fp16 mixed precision: the GradScaler refuses fp16 gradients "
                     "(load the model in float32)")  # fmt: skip
    elif bf16:
        opts["precision"] = "bf16"  # autocast over the bf16 weights from_pretrained loads (the preset's source)
    elif fp16:
        opts["precision"] = "amp-fp16"  # GradScaler needs fp32 weights: autocast fp16 over fp32 weights


def _fsdp(keys: Keys, opts: dict[str, Any]) -> None:
    value = keys.raw("fsdp")
    if value in (None, "", False, []):
        return
    words = value.split() if isinstance(value, str) else value if isinstance(value, list) else None
    if value is True:
        words = ["full_shard"]
    if words is None or not all(isinstance(w, str) for w in words):
        raise refuse(KIND, "fsdp", 'must be FSDP options such as "full_shard auto_wrap"')
    modes = [_FSDP[w] for w in words if w in _FSDP]
    unknown = [w for w in words if w not in _FSDP and w not in ("auto_wrap", "offload")]
    if unknown or len(modes) > 1 or "hybrid_shard_zero2" in words:
        raise refuse(
            KIND,
            "fsdp",
            f"{value!r} is not one vramwise models",
            "full_shard, shard_grad_op, hybrid_shard, no_shard, with auto_wrap and offload",
        )
    if modes and modes[0] != "none":
        opts["fsdp"] = modes[0]
    if "offload" in words:
        opts["offload"] = "params"  # FSDP CPUOffload(offload_params=True): parameters, gradients and optimizer
    keys.seen("fsdp_config")


def _peft(keys: Keys, opts: dict[str, Any]) -> None:
    """TRL's ModelConfig keys (use_peft, lora_r, load_in_4bit, ...), as its YAML recipes carry them."""
    four, eight = keys.flag("load_in_4bit"), keys.flag("load_in_8bit")
    if four and eight:
        raise refuse(KIND, "load_in_8bit", "load_in_4bit and load_in_8bit are both true", "one of them")
    if keys.flag("use_peft") or four or eight:
        opts["peft"] = "qlora" if four else "lora-8bit" if eight else "lora"
    r = keys.integer("lora_r", 1)
    if r is not None:
        opts["lora_r"] = r
    dropout = keys.number("lora_dropout")
    if dropout is not None:
        opts["lora_dropout"] = dropout
    targets = keys.raw("lora_target_modules")
    if targets is not None:
        opts["lora_targets"] = targets_text(KIND, "lora_target_modules", targets)
    if keys.flag("use_bnb_nested_quant"):
        opts["double_quant"] = True
    attn = keys.choice("attn_implementation", _ATTN)
    if attn is not None:
        opts["attention"] = attn


def targets_text(kind: str, key: str, value: Any) -> str:
    """LoRA targets as the command line's comma-separated text (a list, or "all-linear")."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return ",".join(v.strip() for v in value)
    raise refuse(kind, key, "must be module names (a list) or all-linear")


def from_arguments(words: list[str]) -> Imported:
    """A training script's command line: ``[torchrun --nproc_per_node 8 | accelerate launch ...] train.py --key
    value ...`` (HfArgumentParser's ``--key value``, ``--key=value`` and bare ``--flag`` for true)."""
    script = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
    launcher, args = (words[:script], words[script + 1 :]) if script is not None else ([], words)
    dp = _launcher_gpus(launcher)
    from vramwise.configs import megatron

    if megatron.is_megatron(words):
        nodes = _launcher_count(launcher, ("__nnodes",)) or 1
        return megatron.from_arguments(args, dp * nodes if dp else None)
    return read(_argument_map(args), dp=dp)


def _argument_map(args: list[str]) -> dict[str, Any]:
    """``--key value``, ``--key=value``, a bare ``--flag`` (true), and ``--key a b c`` (HfArgumentParser's nargs="+"
    fields, TRL's ``--lora_target_modules q_proj v_proj``) as a list."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--"):
            raise refuse(KIND, word, "not a --key value argument")
        key, eq, value = word[2:].partition("=")
        key = key.replace("-", "_")
        i += 1
        if eq:
            out[key] = value
            continue
        values = []
        while i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        out[key] = "true" if not values else values[0] if len(values) == 1 else values
    if isinstance(out.get("lora_target_modules"), str) and "," in out["lora_target_modules"]:
        out["lora_target_modules"] = out["lora_target_modules"].split(",")
    return out


def _launcher_gpus(words: list[str]) -> int | None:
    """GPUs from torchrun --nproc_per_node, accelerate launch --num_processes or deepspeed --num_gpus."""
    return _launcher_count(words, ("__nproc_per_node", "__num_processes", "__num_gpus"))


def _launcher_count(words: list[str], names: tuple[str, ...]) -> int | None:
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name.replace("-", "_") in names:
            text = value if eq else (words[i + 1] if i + 1 < len(words) else "")
            if not text.isdigit() or int(text) < 1:
                raise refuse(KIND, name.lstrip("-"), f"must be a number of GPUs, got {text!r}")
            return int(text)
    return None

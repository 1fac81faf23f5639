"""Axolotl's YAML config as vramwise's training options.

Keys and defaults: axolotl 0.18.0+9 (git 067b021c, the ``--framework axolotl`` preset's version)
``src/axolotl/utils/schemas/config.py`` ``AxolotlInputConfig`` (sequence_len 512, micro_batch_size 1,
gradient_accumulation_steps 1) and ``utils/schemas/training.py`` (optimizer 'adamw_torch_fused', the HF
``OptimizerNames``), as in its examples (examples/llama-3/qlora.yml, lora-8b.yml, fft-8b.yaml). The
``--framework axolotl`` preset fills the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vramwise.configs import deepspeed
from vramwise.configs.hf_trainer import OPTIMS, targets_text
from vramwise.configs.imported import Imported
from vramwise.configs.values import Keys, prefixed, refuse

KIND = "axolotl"
SEQUENCE_LEN = 512  # AxolotlInputConfig.sequence_len default
_HARMLESS = prefixed(
    "wandb_", "hub_", "eval_", "save", "logging_", "lr_", "warmup_", "dataset", "mlflow_", "comet_", "special_",
    "tokenizer", "fsdp_config", "liger_", "early_stopping", "chat_template",
    names=(
        "datasets", "test_datasets", "val_set_size", "output_dir", "num_epochs", "max_steps", "learning_rate",
        "weight_decay", "evals_per_epoch", "special_tokens", "model_type", "strict", "sample_packing",
        "pad_to_sequence_len", "train_on_inputs", "group_by_length", "resume_from_checkpoint", "local_rank",
        "debug", "lora_alpha", "lora_fan_in_fan_out", "max_grad_norm", "seed", "trust_remote_code",
        "base_model_config", "is_llama_derived_model", "plugins", "tf32", "gradient_checkpointing_kwargs",
        "flash_attn_cross_entropy", "flash_attn_rms_norm", "flash_attn_fuse_qkv", "flash_attn_fuse_mlp",
        "fsdp_version", "ddp_timeout", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "adam_beta1", "adam_beta2",
        "adam_epsilon", "cosine_min_lr_ratio", "neftune_noise_alpha", "shuffle_merged_datasets",
        "remove_unused_columns",
        "default_system_message", "auto_resume_from_checkpoints", "loss_watchdog_threshold", "loss_watchdog_patience",
        "lora_model_dir", "peft_use_rslora", "use_tensorboard", "bnb_config_kwargs", "torch_dtype", "flash_optimum",
        "torch_compile_backend", "torch_compile_mode", "peft_autocast_adapter_dtype",
    ),
)  # fmt: skip
_REFUSED = {
    "torch_dtype": "a weight dtype other than bf16 is set with bf16/fp16 (utils/config/__init__.py resolve_dtype)",
    "lora_modules_to_save": "modules_to_save trains whole modules (embeddings, lm_head) beside the adapters: not "
    "modelled",
    "xformers_attention": "xformers attention is not modelled (flash_attention or sdp_attention)",
    "s2_attention": "shifted sparse attention is not modelled",
    "relora": "ReLoRA is not modelled",
    "rl": "RL training (DPO, KTO, ORPO, GRPO) is not modelled (SFT only)",
    "unfrozen_parameters": "a partial freeze by parameter name is not modelled (use --freeze-layers)",
    "gptq": "a GPTQ base model is not modelled for training",
    "tensor_parallel_size": "axolotl's tensor parallelism is not read (use --tp)",
    "context_parallel_size": "axolotl's context parallelism is not read (use --cp)",
}


_OFF = {"torch_dtype": ("bfloat16", "auto")}


def is_axolotl(data: dict[str, Any]) -> bool:
    return "base_model" in data or ("micro_batch_size" in data and "sequence_len" in data)


def read(
    data: dict[str, Any], base: Path | None = None, load: Callable[[Path], dict[str, Any]] | None = None
) -> Imported:
    keys = Keys(KIND, data)
    opts: dict[str, Any] = {"framework": "axolotl"}
    notes: list[str] = []
    ds = _deepspeed(keys, base, load)
    if ds is not None:
        opts |= {k: v for k, v in ds.options.items() if k != "framework"}
    model = keys.text("base_model")
    opts["seq"] = keys.integer("sequence_len", 1) or SEQUENCE_LEN
    if not keys.has("sequence_len"):
        notes.append(f"seq {SEQUENCE_LEN}: axolotl's sequence_len default")
    opts["batch"] = keys.integer("micro_batch_size", 1) or 1
    accum = keys.integer("gradient_accumulation_steps", 1)
    if accum is not None:
        opts["grad_accum"] = accum
    _adapter(keys, opts)
    _precision(keys, opts, ds)
    gc = keys.raw("gradient_checkpointing")
    if gc is not None:
        if not isinstance(gc, bool):
            raise refuse(
                KIND, "gradient_checkpointing", f"{gc!r} (offloaded checkpointing) is not modelled", "true, false"
            )
        opts["recompute"] = "full" if gc else "none"
    optim = keys.choice("optimizer", OPTIMS)
    if optim is not None:
        opts["optimizer"] = optim[0]
        if optim[1]:
            opts["optimizer_impl"] = optim[1]
    _kernels(keys, opts)
    fsdp = keys.raw("fsdp")
    if fsdp:
        words = fsdp if isinstance(fsdp, list) else str(fsdp).split()
        modes = {"full_shard": "full", "shard_grad_op": "grad-op", "hybrid_shard": "hybrid"}
        picked = [modes[w] for w in words if w in modes]
        if len(picked) != 1 or any(w not in (*modes, "auto_wrap", "offload") for w in words):
            raise refuse(
                KIND,
                "fsdp",
                f"{fsdp!r} is not one vramwise models",
                "full_shard, shard_grad_op, hybrid_shard with auto_wrap, offload",
            )
        opts["fsdp"] = picked[0]
        if "offload" in words:
            opts["offload"] = "params"
    ignored = keys.finish(_HARMLESS, refused=_REFUSED, off=_OFF)
    used, ignored = deepspeed.fold_nested(tuple(keys.used), ignored, ds)
    return Imported(
        kind=KIND,
        command="train",
        options=opts,
        model=model,
        used=used,
        ignored=ignored,
        notes=tuple(notes),
        hidden_auto=ds.hidden_auto if ds else (),
    )


def _deepspeed(keys: Keys, base: Path | None, load: Callable[[Path], dict[str, Any]] | None) -> Imported | None:
    value = keys.text("deepspeed")
    if value is None or load is None:
        return None
    return deepspeed.read_nested(value, base, load)


def _adapter(keys: Keys, opts: dict[str, Any]) -> None:
    adapter = keys.text("adapter")
    four, eight = bool(keys.flag("load_in_4bit")), bool(keys.flag("load_in_8bit"))
    if four and eight:
        raise refuse(KIND, "load_in_8bit", "load_in_4bit and load_in_8bit are both true", "one of them")
    if adapter not in (None, "lora", "qlora"):
        raise refuse(KIND, "adapter", f"{adapter!r} is not modelled", "lora, qlora")
    if adapter == "qlora" and not four:
        # utils/schemas/validation.py: adapter qlora requires load_in_4bit
        raise refuse(KIND, "adapter", "qlora needs load_in_4bit: true", "load_in_4bit: true")
    if adapter == "lora" and four:
        raise refuse(KIND, "load_in_4bit", "a 4-bit base with adapter lora: use adapter qlora", "adapter: qlora")
    if adapter is None and (four or eight):
        raise refuse(
            KIND,
            "load_in_4bit" if four else "load_in_8bit",
            "a quantized base trains only adapters; set adapter",
            "adapter: lora or qlora",
        )
    if adapter:
        opts["peft"] = "qlora" if adapter == "qlora" else "lora-8bit" if eight else "lora"
        r = keys.integer("lora_r", 1)
        if r is not None:
            opts["lora_r"] = r
        dropout = keys.number("lora_dropout")
        if dropout is not None:
            opts["lora_dropout"] = dropout
        if keys.flag("lora_target_linear"):
            opts["lora_targets"] = "all-linear"
        elif keys.has("lora_target_modules"):
            opts["lora_targets"] = targets_text(KIND, "lora_target_modules", keys.raw("lora_target_modules"))


def _precision(keys: Keys, opts: dict[str, Any], ds: Imported | None) -> None:
    bf16, fp16 = keys.raw("bf16"), keys.flag("fp16")
    if bf16 not in (None, True, False, "auto", "full"):
        raise refuse(KIND, "bf16", f"{bf16!r} is not one axolotl takes", "true, false, auto, full")
    if bf16 in (True, "full", "auto") and fp16:
        raise refuse(KIND, "fp16", "bf16 and fp16 are both on", "one of them")
    if ds is not None and "precision" not in ds.options:  # DeepSpeed's "auto": axolotl's bf16/fp16 decide
        opts["precision"] = "fp16-mixed" if fp16 else "bf16-mixed" if bf16 else "fp32"
    elif ds is None and fp16:
        opts["precision"] = "amp-fp16"
    elif ds is None and bf16 is False:
        opts["precision"] = "fp32"  # utils/config/__init__.py resolve_dtype: neither -> float32


def _kernels(keys: Keys, opts: dict[str, Any]) -> None:
    if keys.flag("flash_attention"):
        opts["attention"] = "flash"
    elif keys.flag("sdp_attention"):
        opts["attention"] = "sdpa"
    if keys.flag("liger_fused_linear_cross_entropy"):
        opts["loss"] = "liger"
    if keys.flag("liger_rms_norm"):
        opts["norm_impl"] = "fused"
    if keys.flag("liger_glu_activation"):
        opts["mlp_impl"] = "fused"
    if keys.flag("cut_cross_entropy"):
        opts["loss"] = "cce"
    if keys.flag("activation_offloading"):
        opts["activation_offload"] = True
    if keys.flag("torch_compile"):
        opts["compile"] = True

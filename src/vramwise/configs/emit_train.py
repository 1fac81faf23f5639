"""The training writers of ``--emit``: DeepSpeed JSON, TrainingArguments (with TRL's ModelConfig keys) JSON,
Axolotl YAML, torchtune YAML. Each writes the keys its importer reads; see ``emit.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vramwise.configs.emit import as_json, cannot, hub_id
from vramwise.configs.hf_trainer import OPTIMS
from vramwise.configs.torchtune import LOSSES, MLP, MODELS
from vramwise.configs.torchtune import OPTIMIZERS as TT_OPTIMIZERS

if TYPE_CHECKING:
    from vramwise.workload import TrainSetup

# vramwise (optimizer, impl) -> HF optim name (the first spelling of OPTIMS)
_HF_OPTIM = {value: name for name, value in reversed(OPTIMS.items())}


def _unwritable(fmt: str, s: TrainSetup, notes: list[str], *, written: tuple[str, ...]) -> None:
    """Refuse a layout the format has no key for; note the script-side settings it cannot write."""
    p = s.parallel
    for name, value, default in (
        ("tp", p.tp, 1),
        ("pp", p.pp, 1),
        ("cp", p.cp, 1),
        ("ep", p.ep, 1),
        ("freeze_layers", s.peft.freeze_layers, 0),
    ):
        if value != default:
            raise cannot(fmt, f"{name}={value}", f"{name}={default} (this format has no key for it)")
    script = [
        n
        for n, v, d in (
            ("recompute", s.recompute, "none"),
            ("loss", s.loss, "full"),
            ("attention", s.attention, "sdpa"),
            ("seq", s.seq, None),
        )
        if n not in written and v != d
    ]
    if script:
        notes.append(f"not a key of this format, set it in the training script: {', '.join(script)}")
    if p.dp > 1:
        notes.append(f"launch on {p.dp} GPUs (torchrun --nproc_per_node {p.dp}, or accelerate/deepspeed launch)")


def deepspeed_config(s: TrainSetup, fmt: str = "deepspeed") -> dict[str, Any]:
    p, c = s.parallel, s.comms
    if p.fsdp != "none":
        raise cannot(fmt, f"fsdp={p.fsdp} into a DeepSpeed config", "zero 0-3")
    blocks = {"bf16-mixed": {"bf16": {"enabled": True}}, "fp16-mixed": {"fp16": {"enabled": True}}, "fp32": {}}
    if s.precision.recipe not in blocks:
        raise cannot(fmt, f"precision {s.precision.recipe}", "bf16-mixed, fp16-mixed, fp32 (DeepSpeed's recipes)")
    zero: dict[str, Any] = {"stage": p.zero}
    if p.offload != "none":
        zero["offload_optimizer"] = {"device": "cpu"}
        if p.offload == "params":
            zero["offload_param"] = {"device": "cpu"}
    zero |= {
        "reduce_bucket_size": p.reduce_bucket,
        "stage3_prefetch_bucket_size": p.prefetch_bucket,
        "stage3_max_live_parameters": c.max_live_params,
        "stage3_param_persistence_threshold": c.param_persistence_threshold,
        "stage3_max_reuse_distance": c.max_reuse_distance,
    }
    if p.overlap_comm is not None:
        zero["overlap_comm"] = p.overlap_comm
    out: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": s.batch,
        "gradient_accumulation_steps": s.grad_accum,
        "train_batch_size": s.batch * s.grad_accum * p.dp,
        **blocks[str(s.precision.recipe)],
        "zero_optimization": zero,
    }
    name = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "lion": "Lion"}.get(str(s.optimizer.name))
    if name is None:
        raise cannot(fmt, f"optimizer {s.optimizer.name}", "adamw, adam, sgd, lion")
    out["optimizer"] = {"type": name, "params": {"torch_adam": True} if s.step_impl == "foreach" else {}}
    if s.precision.grad_dtype == "fp32":
        out["data_types"] = {"grad_accum_dtype": "fp32"}
    return out


def write_deepspeed(model: str, s: TrainSetup, notes: list[str]) -> str:
    _unwritable("deepspeed", s, notes, written=())
    if s.peft.method != "none":
        notes.append(f"peft {s.peft.method}: set it in the training script (peft's get_peft_model)")
    return as_json(deepspeed_config(s))


def _hf_optim(fmt: str, s: TrainSetup) -> str:
    impl = "fused" if s.step_impl == "fused" else "foreach" if s.step_impl == "foreach" else None
    key = (str(s.optimizer.name), impl if s.optimizer.name in ("adamw",) else None)
    name = _HF_OPTIM.get(key)
    if name is None:
        raise cannot(
            fmt,
            f"optimizer {s.optimizer.name} ({s.step_impl})",
            ", ".join(f"{o}" for o, _ in sorted(set(OPTIMS.values()))),
        )
    return name


# Why the default precision is not written as the Trainer's or Axolotl's bf16: bf16-mixed (the setup's default without
# --precision or --framework) keeps an fp32 master copy of the trained weights, which the HF Trainer and Axolotl
# keep only under DeepSpeed (transformers 5.24.0 Trainer: bf16=True is autocast over the weights as loaded); writing
# bf16: true would hand the user a config whose run is not the estimated one. --framework hf-trainer|axolotl
# resolves the setup to the framework's own precision, which is written.
_FRAMEWORK = {"trainer": "hf-trainer", "axolotl": "axolotl"}


def _mixed(fmt: str, recipe: str) -> str:
    """What the refusal of ``recipe`` adds: why the default is not written, and the two ways to a writable one."""
    if recipe != "bf16-mixed":
        return ""
    return (f" (the default without --precision: an fp32 master copy, which {fmt} keeps only under DeepSpeed; add "
            f"--framework {_FRAMEWORK[fmt]} for its own precision, or give --precision)")


def write_trainer(model: str, s: TrainSetup, notes: list[str]) -> str:
    fmt = "trainer"
    _unwritable(fmt, s, notes, written=("recompute", "seq", "attention", "loss"))
    out: dict[str, Any] = {
        "model_name_or_path": hub_id(model),
        "output_dir": "out",
        "per_device_train_batch_size": s.batch,
        "gradient_accumulation_steps": s.grad_accum,
        "max_length": s.seq,
        "gradient_checkpointing": s.recompute == "full",
    }
    if s.recompute not in ("none", "full"):
        raise cannot(fmt, f"recompute {s.recompute}", "none, full (gradient_checkpointing)")
    recipe = str(s.precision.recipe)
    if s.parallel.zero:
        out["deepspeed"] = deepspeed_config(s, fmt)
        out["bf16"], out["fp16"] = recipe == "bf16-mixed", recipe == "fp16-mixed"
    elif recipe in ("bf16", "amp-fp16", "amp", "fp32"):
        out["bf16"], out["fp16"] = recipe in ("bf16", "amp"), recipe == "amp-fp16"
        if recipe in ("amp", "amp-fp16", "fp32"):
            out["dtype"] = "float32"  # TRL ModelConfig.dtype: fp32 weights, autocast (or none) over them
    else:
        raise cannot(fmt, f"precision {recipe} without DeepSpeed" + _mixed(fmt, recipe), "bf16, amp, amp-fp16, fp32")
    out["optim"] = _hf_optim(fmt, s)
    if s.parallel.fsdp != "none":
        mode = {"full": "full_shard", "grad-op": "shard_grad_op", "hybrid": "hybrid_shard"}[str(s.parallel.fsdp)]
        out["fsdp"] = f"{mode} auto_wrap" + (" offload" if s.parallel.offload == "params" else "")
    if s.impl.compile:
        out["torch_compile"] = True
    _kernels_hf(fmt, s, out)
    _peft_hf(fmt, s, out)
    if s.attention != "sdpa":
        out["attn_implementation"] = {"flash": "flash_attention_2", "eager": "eager"}[str(s.attention)]
    return as_json(out)


def _kernels_hf(fmt: str, s: TrainSetup, out: dict[str, Any]) -> None:
    liger = (s.loss == "liger", s.impl.mlp_impl == "fused", s.impl.norm_impl == "fused")
    if all(liger):
        out["use_liger_kernel"] = True
    elif any(liger) or s.loss != "full":
        raise cannot(
            fmt,
            f"loss {s.loss} with mlp {s.impl.mlp_impl}, norm {s.impl.norm_impl}",
            "all three of Liger's kernels (use_liger_kernel), or none",
        )


def _peft_hf(fmt: str, s: TrainSetup, out: dict[str, Any]) -> None:
    peft = s.peft
    if peft.method == "none":
        return
    out["use_peft"] = True
    out["lora_r"] = peft.lora_r
    out["lora_dropout"] = peft.lora_dropout
    if peft.lora_targets:
        out["lora_target_modules"] = list(peft.lora_targets) if peft.lora_targets != ("all-linear",) else "all-linear"
    if peft.method == "qlora":
        out["load_in_4bit"] = True
        out["use_bnb_nested_quant"] = peft.double_quant
    if peft.method == "lora-8bit":
        out["load_in_8bit"] = True


def write_axolotl(model: str, s: TrainSetup, notes: list[str]) -> str:
    import yaml  # type: ignore[import-untyped]

    fmt = "axolotl"
    _unwritable(fmt, s, notes, written=("recompute", "seq", "attention", "loss"))
    out: dict[str, Any] = {
        "base_model": hub_id(model),
        "sequence_len": s.seq,
        "micro_batch_size": s.batch,
        "gradient_accumulation_steps": s.grad_accum,
    }
    _axolotl_peft(s, out)
    recipe = str(s.precision.recipe)
    if s.parallel.zero:
        raise cannot(
            fmt,
            "ZeRO inline (axolotl's deepspeed key is a path)",
            "write --emit deepspeed to a file and set deepspeed: <path>, or zero 0",
        )
    if recipe not in ("bf16", "amp-fp16", "fp32"):
        raise cannot(fmt, f"precision {recipe}" + _mixed(fmt, recipe), "bf16, amp-fp16, fp32")
    out["bf16"], out["fp16"] = recipe == "bf16", recipe == "amp-fp16"
    if recipe == "fp32":
        out["bf16"] = False
    if s.recompute not in ("none", "full"):
        raise cannot(fmt, f"recompute {s.recompute}", "none, full")
    out["gradient_checkpointing"] = s.recompute == "full"
    out["optimizer"] = _hf_optim(fmt, s)
    _axolotl_kernels(fmt, s, out)
    if s.parallel.fsdp != "none":
        mode = {"full": "full_shard", "grad-op": "shard_grad_op", "hybrid": "hybrid_shard"}[str(s.parallel.fsdp)]
        out["fsdp"] = [mode, "auto_wrap", *(["offload"] if s.parallel.offload == "params" else [])]
    return str(yaml.safe_dump(out, sort_keys=False))


def _axolotl_peft(s: TrainSetup, out: dict[str, Any]) -> None:
    peft = s.peft
    if peft.method != "none":
        out["adapter"] = "qlora" if peft.method == "qlora" else "lora"
        out["load_in_4bit"] = peft.method == "qlora"
        out["load_in_8bit"] = peft.method == "lora-8bit"
        out["lora_r"] = peft.lora_r
        out["lora_dropout"] = peft.lora_dropout
        if peft.lora_targets == ("all-linear",):
            out["lora_target_linear"] = True
        elif peft.lora_targets:
            out["lora_target_modules"] = list(peft.lora_targets)


def _axolotl_kernels(fmt: str, s: TrainSetup, out: dict[str, Any]) -> None:
    if s.attention == "flash":
        out["flash_attention"] = True
    elif s.attention == "sdpa":
        out["sdp_attention"] = True
    else:
        raise cannot(fmt, "eager attention", "flash, sdpa")
    if s.loss == "liger":
        out["liger_fused_linear_cross_entropy"] = True
    elif s.loss == "cce":
        out["cut_cross_entropy"] = True
    elif s.loss != "full":
        raise cannot(fmt, f"loss {s.loss}", "full, liger, cce")
    if s.impl.norm_impl == "fused":
        out["liger_rms_norm"] = True
    if s.impl.mlp_impl == "fused":
        out["liger_glu_activation"] = True
    if s.impl.activation_offload:
        out["activation_offloading"] = True
    if s.impl.compile:
        out["torch_compile"] = True


_TT_ATTN = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "o_proj": "output_proj"}


def write_torchtune(model: str, s: TrainSetup, notes: list[str]) -> str:
    import yaml  # PyYAML, imported only to write YAML

    fmt = "torchtune"
    _unwritable(fmt, s, notes, written=("recompute", "seq", "loss"))
    builder = next((k for k, v in MODELS.items() if v == model), None)
    if builder is None:
        raise cannot(
            fmt,
            f"model {model}",
            "a catalog model with a torchtune builder: " + ", ".join(sorted(set(MODELS.values()))),
        )
    family, name = builder.split(".")
    peft = s.peft
    prefix = {"none": "", "lora": "lora_", "qlora": "qlora_"}.get(str(peft.method))
    if prefix is None:
        raise cannot(fmt, f"peft {peft.method}", "none, lora, qlora")
    component: dict[str, Any] = {"_component_": f"torchtune.models.{family}.{prefix}{name}"}
    if prefix:
        attn = [t for t in peft.lora_targets if t in _TT_ATTN]
        rest = [t for t in peft.lora_targets if t not in _TT_ATTN]
        if not peft.lora_targets or (rest and sorted(rest) != sorted(MLP)):
            raise cannot(
                fmt,
                f"LoRA targets {','.join(peft.lora_targets) or '(peft default)'}",
                "q_proj, k_proj, v_proj, o_proj, and the whole MLP (gate_proj, up_proj, down_proj)",
            )
        component |= {
            "lora_attn_modules": [_TT_ATTN[t] for t in attn],
            "apply_lora_to_mlp": bool(rest),
            "lora_rank": peft.lora_r,
            "lora_dropout": peft.lora_dropout,
        }
    out: dict[str, Any] = {
        "model": component,
        "tokenizer": {"max_seq_len": s.seq},
        "batch_size": s.batch,
        "gradient_accumulation_steps": s.grad_accum,
    }
    optim = {v: k for k, v in TT_OPTIMIZERS.items()}.get((str(s.optimizer.name), None))
    if optim is None:
        raise cannot(
            fmt,
            f"optimizer {s.optimizer.name}",
            "adamw, adam, sgd, paged-adamw-8bit, paged-adamw, adamw-8bit, ao-adamw-8bit",
        )
    out["optimizer"] = {"_component_": optim}
    if s.optimizer.name in ("adamw", "adam", "sgd"):
        out["optimizer"]["fused"] = s.step_impl == "fused"
    out["optimizer_in_bwd"] = s.optimizer.in_backward
    loss = {v: k for k, v in LOSSES.items()}.get(str(s.loss))
    if loss is None:
        raise cannot(fmt, f"loss {s.loss}", ", ".join(LOSSES.values()))
    out["loss"] = {"_component_": loss}
    if s.recompute not in ("none", "full"):
        raise cannot(fmt, f"recompute {s.recompute}", "none, full")
    if s.precision.recipe not in ("bf16", "fp32"):
        raise cannot(fmt, f"precision {s.precision.recipe}", "bf16, fp32 (torchtune's dtype)")
    out |= {
        "enable_activation_checkpointing": s.recompute == "full",
        "enable_activation_offloading": s.impl.activation_offload,
        "compile": s.impl.compile,
        "dtype": str(s.precision.recipe),
    }
    if s.parallel.offload == "params":
        out["fsdp_cpu_offload"] = True
    if s.parallel.fsdp_outer_units:
        out["custom_sharded_layers"] = ["tok_embeddings", "output"]
    notes.append(
        "merge into the recipe's config (tune cp <recipe> my.yaml): its tokenizer path, checkpointer and "
        "dataset are not written"
    )
    return str(yaml.safe_dump(out, sort_keys=False))


WRITERS: dict[str, Callable[[str, TrainSetup, list[str]], str]] = {
    "deepspeed": write_deepspeed,
    "trainer": write_trainer,
    "axolotl": write_axolotl,
    "torchtune": write_torchtune,
}

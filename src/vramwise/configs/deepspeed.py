"""DeepSpeed's JSON config (``ds_config.json``) as vramwise's training options.

Defaults are DeepSpeed's at the version the ``--framework deepspeed`` preset cites (workload/frameworks.py
``VERSIONS``: 0.19.5+27, git edaa7221): ``runtime/zero/config.py`` ``DeepSpeedZeroConfig`` (stage 0,
reduce_bucket_size 5e8, stage3_prefetch_bucket_size 5e7, stage3_max_live_parameters 1e9,
stage3_param_persistence_threshold 1e5, stage3_max_reuse_distance 1e9, overlap_comm on at stage 3 only),
``runtime/zero/offload_config.py`` (device "none"), ``runtime/config.py`` (no bf16/fp16 block: fp32 training).
The preset fills what the file leaves out; this module reads only what the file says.

"auto" is the HF Trainer's placeholder (transformers integrations/deepspeed.py
``HfTrainerDeepSpeedConfig.trainer_config_process``): the batch, accumulation and precision come from the
TrainingArguments (``hf_trainer.py`` reads both), the bucket sizes from the model's hidden size
(``trainer_config_finalize``: reduce_bucket_size hidden², stage3_prefetch_bucket_size 0.9·hidden²,
stage3_param_persistence_threshold 10·hidden), which ``app/imports.py`` resolves once the model is known.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vramwise.configs.imported import Imported
from vramwise.configs.values import Keys, flatten, prefixed, refuse

KIND = "deepspeed"
Z = "zero_optimization."
# DeepSpeed zero config key -> option name (all element counts)
_COUNTS = {
    Z + "reduce_bucket_size": "reduce_bucket",
    Z + "stage3_prefetch_bucket_size": "prefetch_bucket",
    Z + "stage3_max_live_parameters": "max_live_params",
    Z + "stage3_param_persistence_threshold": "param_persistence_threshold",
    Z + "stage3_max_reuse_distance": "max_reuse_distance",
}
# "auto" bucket sizes: option -> (coefficient, power of the hidden size), transformers integrations/deepspeed.py
# HfTrainerDeepSpeedConfig.trainer_config_finalize (transformers 5.24.0)
HIDDEN_AUTO = {
    "reduce_bucket": (1.0, 2),
    "prefetch_bucket": (0.9, 2),
    "param_persistence_threshold": (10.0, 1),
}
# Keys with no effect on the memory vramwise counts: schedules, logging, checkpoint names, the allgather and
# contiguous-gradient switches (DeepSpeed's buffers for them are not separate terms at the stages modelled).
_HARMLESS = prefixed(
    "optimizer.params.", "scheduler", "tensorboard", "wandb", "csv_monitor", "comet", "flops_profiler",
    "comms_logger", "checkpoint", "fp16.", "bf16.", "monitor_config", "elasticity", "aio.", "autotuning",
    names=(
        "gradient_clipping", "steps_per_print", "wall_clock_breakdown", "zero_allow_untested_optimizer",
        "prescale_gradients", "gradient_predivide_factor", "dump_state", "memory_breakdown", "sparse_gradients",
        "communication_data_type", "seq_parallel_communication_data_type", "zero_force_ds_cpu_optimizer",
        Z + "contiguous_gradients", Z + "allgather_partitions", Z + "allgather_bucket_size", Z + "reduce_scatter",
        Z + "round_robin_gradients", Z + "sub_group_size", Z + "stage3_gather_16bit_weights_on_model_save",
        Z + "gather_16bit_weights_on_model_save", Z + "load_from_fp32_weights", Z + "elastic_checkpoint",
        Z + "ignore_unused_parameters", Z + "legacy_stage1", Z + "memory_efficient_linear",
        Z + "offload_optimizer.pin_memory", Z + "offload_optimizer.buffer_count", Z + "offload_optimizer.fast_init",
        Z + "offload_param.pin_memory", Z + "offload_param.buffer_count", Z + "offload_param.buffer_size",
        Z + "offload_param.max_in_cpu", Z + "offload_optimizer.nvme_path", Z + "offload_param.nvme_path",
        Z + "offload_optimizer.pipeline_read", Z + "offload_optimizer.pipeline_write",
        "activation_checkpointing.number_checkpoints", "activation_checkpointing.synchronize_checkpoint_boundary",
        "activation_checkpointing.profile", "train_batch_size",
    ),
)  # fmt: skip
# Keys that change the memory in ways vramwise does not model: refused when set (to anything but off)
_REFUSED = {
    Z + "zero_quantized_weights": "ZeRO++ quantized weights are not modelled",
    Z + "zero_quantized_gradients": "ZeRO++ quantized gradients are not modelled",
    Z + "zero_quantized_nontrainable_weights": "ZeRO++ quantized weights are not modelled",
    Z + "zero_hpz_partition_size": "ZeRO++ hierarchical partitioning is not modelled (use 1)",
    Z + "mics_shard_size": "MiCS sharding is not modelled",
    "activation_checkpointing.partition_activations": "DeepSpeed's partitioned activation checkpoints are not "
    "modelled (use --recompute full for plain checkpointing)",
    "activation_checkpointing.cpu_checkpointing": "DeepSpeed's CPU activation checkpoints are not modelled",
    "activation_checkpointing.contiguous_memory_optimization": "DeepSpeed's contiguous checkpoint buffer is not "
    "modelled",
    "pipeline": "DeepSpeed's pipeline engine config is not read (use --pp)",
    "compression_training": "DeepSpeed compression training is not modelled",
    "sparse_attention": "DeepSpeed sparse attention is not modelled",
    "data_efficiency": "DeepSpeed data efficiency (curriculum) is not read",
    "amp": "DeepSpeed's apex AMP is not modelled (use the bf16 or fp16 block)",
}
# DeepSpeed optimizer "type" (runtime/engine.py _configure_basic_optimizer, case-insensitive) -> option value
_OPTIMIZERS = {"adam": "adamw", "adamw": "adamw", "sgd": "sgd", "lion": "lion"}
_OFF = {Z + "zero_hpz_partition_size": (1,), Z + "mics_shard_size": (-1, 0)}  # their "off" values


def is_deepspeed(data: dict[str, Any]) -> bool:
    """DeepSpeed's own keys, or its bf16/fp16 blocks (TrainingArguments' bf16/fp16 are booleans)."""
    keys = ("zero_optimization", "train_micro_batch_size_per_gpu", "train_batch_size")
    return any(k in data for k in keys) or any(isinstance(data.get(k), dict) for k in ("bf16", "fp16"))


def read(data: dict[str, Any]) -> Imported:
    """The options a DeepSpeed config sets; its "auto" values are listed in the notes for the caller."""
    keys = Keys(KIND, flatten(data))
    opts: dict[str, Any] = {"framework": "deepspeed"}
    autos: list[str] = []
    _batch(keys, opts, autos)
    _precision(keys, opts, autos)
    hidden: list[str] = []
    _zero(keys, opts, autos, hidden)
    _optimizer(keys, opts)
    grad = keys.text("data_types.grad_accum_dtype")
    if grad is not None:
        opts["grad_dtype"] = {"fp32": "fp32", "bf16": "half", "fp16": "half"}.get(grad) or _bad(
            "data_types.grad_accum_dtype", grad, "fp32, bf16, fp16"
        )
    ignored = keys.finish(_HARMLESS, refused=_REFUSED, off=_OFF)
    notes = (f'"auto" for {", ".join(autos)}: the HF Trainer fills it (its arguments, or the model\'s hidden size)',)
    return Imported(
        kind=KIND,
        command="train",
        options=opts,
        used=tuple(keys.used),
        ignored=ignored,
        notes=notes if autos else (),
        hidden_auto=tuple(hidden),
    )


def read_nested(
    value: str | dict[str, Any], base: Path | None, load: Callable[[Path], dict[str, Any]]
) -> Imported:
    """A DeepSpeed config that another framework's config names (the Trainer's and axolotl's ``deepspeed`` key): the
    config itself, or its path, relative to the naming config's folder when it is not found as given (both
    frameworks pass the path on to DeepSpeed from where the naming config was read)."""
    if isinstance(value, dict):
        return read(value)
    path = Path(value)
    if not path.is_absolute() and base is not None and not path.exists():
        path = base / path
    return read(load(path))


def fold_nested(
    used: tuple[str, ...], ignored: tuple[str, ...], ds: Imported | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The naming config's used and ignored keys with the nested DeepSpeed config's, prefixed ``deepspeed:``."""
    if ds is None:
        return used, ignored
    return (*used, *(f"deepspeed:{k}" for k in ds.used)), (*ignored, *(f"deepspeed:{k}" for k in ds.ignored))


def _bad(key: str, value: object, allowed: str) -> Any:
    raise refuse(KIND, key, f"{value!r} is not one vramwise models", allowed)


def _auto(keys: Keys, key: str, autos: list[str]) -> bool:
    if keys.data.get(key) == "auto":
        keys.seen(key)
        autos.append(key)
        return True
    return False


def _batch(keys: Keys, opts: dict[str, Any], autos: list[str]) -> None:
    micro = (
        None
        if _auto(keys, "train_micro_batch_size_per_gpu", autos)
        else keys.integer("train_micro_batch_size_per_gpu", 1)
    )
    accum = (
        None if _auto(keys, "gradient_accumulation_steps", autos) else keys.integer("gradient_accumulation_steps", 1)
    )
    total = None if _auto(keys, "train_batch_size", autos) else keys.integer("train_batch_size", 1)
    if micro is not None:
        opts["batch"] = micro
    if accum is not None:
        opts["grad_accum"] = accum
    if total is not None and micro is not None and accum is not None:
        # runtime/config.py _batch_assertion: train_batch_size = micro x accumulation x world size
        if total % (micro * accum):
            raise refuse(
                KIND,
                "train_batch_size",
                f"{total} is not train_micro_batch_size_per_gpu ({micro}) x "
                f"gradient_accumulation_steps ({accum}) x a number of GPUs",
            )
        opts["dp"] = total // (micro * accum)


def _precision(keys: Keys, opts: dict[str, Any], autos: list[str]) -> None:
    on: dict[str, bool | None] = {}
    for block in ("bf16", "fp16"):
        key = f"{block}.enabled"
        if _auto(keys, key, autos):
            on[block] = None
        else:
            on[block] = keys.flag(key)
    if on["bf16"] and on["fp16"]:
        raise refuse(KIND, "fp16.enabled", "bf16 and fp16 are both enabled; DeepSpeed runs one", "one of them")
    if on["bf16"]:
        opts["precision"] = "bf16-mixed"
    elif on["fp16"]:
        opts["precision"] = "fp16-mixed"
    elif not any(k in autos for k in ("bf16.enabled", "fp16.enabled")):
        opts["precision"] = "fp32"  # runtime/config.py: no bf16 or fp16 block enabled -> fp32 training


def _zero(keys: Keys, opts: dict[str, Any], autos: list[str], hidden: list[str]) -> None:
    stage = keys.integer(Z + "stage")
    if stage is not None:
        if stage > 3:
            raise refuse(KIND, Z + "stage", f"must be 0, 1, 2 or 3, got {stage}", "0, 1, 2, 3")
        opts["zero"] = stage
    _offload(keys, opts)
    for key, name in _COUNTS.items():
        if _auto(keys, key, autos):
            # trainer_config_finalize fills the prefetch bucket and the persistence threshold at stage 3 only
            if name == "reduce_bucket" or (name in HIDDEN_AUTO and stage == 3):
                hidden.append(name)
            continue
        value = keys.integer(key)
        if value is not None:
            opts[name] = value
    overlap = keys.flag(Z + "overlap_comm")
    if overlap is not None:
        opts["overlap_comm"] = overlap


def _offload(keys: Keys, opts: dict[str, Any]) -> None:
    where = {}
    for part in ("offload_optimizer", "offload_param"):
        device = keys.text(f"{Z}{part}.device")
        if device == "nvme":
            raise refuse(KIND, f"{Z}{part}.device", "NVMe offload (ZeRO-Infinity) is not modelled", "none, cpu")
        if device not in (None, "none", "cpu"):
            _bad(f"{Z}{part}.device", device, "none, cpu")
        where[part] = device == "cpu"
    ratio = keys.number(Z + "offload_optimizer.ratio")
    if ratio is not None and ratio != 1.0:
        raise refuse(KIND, Z + "offload_optimizer.ratio", "a partial optimizer offload is not modelled", "1.0")
    if where["offload_param"] and not where["offload_optimizer"]:
        raise refuse(
            KIND,
            Z + "offload_param.device",
            "parameters offloaded without the optimizer is not modelled",
            "offload_optimizer.device cpu with it",
        )
    if where["offload_optimizer"]:
        opts["offload"] = "params" if where["offload_param"] else "optimizer"


def _optimizer(keys: Keys, opts: dict[str, Any]) -> None:
    kind = keys.text("optimizer.type")
    if kind is not None:
        name = _OPTIMIZERS.get(kind.lower())
        if name is None:
            _bad("optimizer.type", kind, "Adam, AdamW, SGD, Lion")
        opts["optimizer"] = name
    if keys.flag("optimizer.params.torch_adam"):
        opts["optimizer_impl"] = "foreach"  # torch.optim.AdamW, torch's default implementation on CUDA

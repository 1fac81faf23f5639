"""torchtitan's TOML job config as vramwise's training options.

Keys as torchtitan's TOML ``JobConfig`` files write them (tests/integration_tests/base_config.toml at 2dfaa276,
configs/llama3_8b-8xb200-8k.toml at 25079f11): ``[model] name/flavor/converters``, ``[training] local_batch_size,
seq_len, dtype, mixed_precision_reduce, enable_cpu_offload``, ``[parallelism]`` degrees, ``[activation_checkpoint]
mode/selective_ac_option``, ``[optimizer] name/implementation/early_step_in_backward``, ``[compile] enable``. The
``--framework torchtitan`` preset (0.2.2, b5bcd76c) fills the rest: FSDP2 over the data-parallel GPUs, bf16-mixed
with fp32 reduce, op-level SAC, the chunked loss.
"""

from __future__ import annotations

from typing import Any

from vramwise.configs.imported import Imported
from vramwise.configs.values import Keys, flatten, prefixed, refuse

KIND = "torchtitan"
# (model.name, model.flavor) -> the catalog model (torchtitan's llama3 flavors are Llama 3.1's shapes:
# models/llama3/__init__.py llama3_args "8B", "70B", "405B"; hf_assets_path ./assets/hf/Llama-3.1-8B)
MODELS = {("llama3", "8B"): "llama-3.1-8b", ("llama3", "70B"): "llama-3.1-70b", ("llama3", "405B"): "llama-3.1-405b"}
_HARMLESS = prefixed(
    "job.", "metrics.", "profiling.", "checkpoint.", "validation.", "lr_scheduler.", "comm.", "quantize.",
    "memory_estimation.", "fault_tolerance.", "experimental.",
    names=("model.hf_assets_path", "model.tokenizer_path", "training.max_norm", "training.steps", "training.dataset",
           "training.dataset_path", "training.gc_freq", "training.seed", "training.deterministic",
           "optimizer.lr", "optimizer.eps", "optimizer.beta1", "optimizer.beta2", "optimizer.weight_decay",
           "parallelism.enable_async_tensor_parallel", "parallelism.pipeline_parallel_schedule",
           "parallelism.pipeline_parallel_microbatch_size", "parallelism.context_parallel_rotate_method",
           "compile.components", "activation_checkpoint.preserve_rng_state", "activation_checkpoint.early_stop",
           "training.mixed_precision_param"),
)  # fmt: skip
_REFUSED = {
    "parallelism.expert_tensor_parallel_degree": "expert tensor parallelism is not modelled (use 1)",
    "parallelism.fsdp_reshard_after_forward": "FSDP without resharding after forward is not modelled",
}
_OFF = {"parallelism.expert_tensor_parallel_degree": (1,), "parallelism.fsdp_reshard_after_forward": ("default",
        "always")}  # fmt: skip


def is_torchtitan(data: dict[str, Any]) -> bool:
    return isinstance(data.get("model"), dict) and "flavor" in data["model"] and "training" in data


def read(data: dict[str, Any]) -> Imported:
    keys = Keys(KIND, flatten(data))
    opts: dict[str, Any] = {"framework": "torchtitan"}
    notes: list[str] = []
    name = (keys.text("model.name"), keys.text("model.flavor"))
    model = MODELS.get((name[0] or "", name[1] or ""))
    if model is None:
        allowed = ", ".join(f"{n} {f}" for n, f in MODELS)
        raise refuse(KIND, "model.flavor", f"{name[0]} {name[1]} is not a catalog model", allowed)
    converters = keys.raw("model.converters") or []
    if not isinstance(converters, list) or any(c not in ("float8", "quantize.linear.float8") for c in converters):
        raise refuse(KIND, "model.converters", f"{converters!r}: only float8 is modelled", '[], ["float8"]')
    if converters:
        opts["float8"] = True
    for key, opt in (("training.local_batch_size", "batch"), ("training.seq_len", "seq")):
        value = keys.integer(key, 1)
        if value is not None:
            opts[opt] = value
    _precision(keys, opts)
    _parallel(keys, opts, notes)
    _recompute(keys, opts)
    optim = keys.text("optimizer.name")
    if optim is not None:
        opts["optimizer"] = {"AdamW": "adamw", "Adam": "adam"}.get(optim) or _bad(
            "optimizer.name", optim, "AdamW, Adam"
        )
    impl = keys.text("optimizer.implementation")
    if impl is not None:
        opts["optimizer_impl"] = {"fused": "fused", "foreach": "foreach", "for-loop": "for-loop"}.get(impl) or _bad(
            "optimizer.implementation", impl, "fused, foreach, for-loop"
        )
    for key, opt in (("optimizer.early_step_in_backward", "optimizer_in_backward"), ("compile.enable", "compile")):
        value = keys.flag(key)
        if value is not None:
            opts[opt] = value
    if keys.flag("training.enable_cpu_offload"):
        opts["offload"] = "params"  # FSDP2 CPUOffloadPolicy
    ignored = keys.finish(_HARMLESS, refused=_REFUSED, off=_OFF)
    return Imported(kind=KIND, command="train", options=opts, model=model, used=tuple(keys.used), ignored=ignored,
                    notes=tuple(notes))  # fmt: skip


def _bad(key: str, value: object, allowed: str) -> Any:
    raise refuse(KIND, key, f"{value!r} is not one vramwise models", allowed)


def _precision(keys: Keys, opts: dict[str, Any]) -> None:
    dtype = keys.text("training.dtype")
    if dtype not in (None, "float32", "bfloat16"):
        _bad("training.dtype", dtype, "float32, bfloat16")
    if dtype == "bfloat16":
        opts["precision"] = "bf16"  # the model's parameters in bf16: no fp32 master
    reduce = keys.text("training.mixed_precision_reduce")
    if reduce is not None:
        opts["grad_dtype"] = {"float32": "fp32", "bfloat16": "half"}.get(reduce) or _bad(
            "training.mixed_precision_reduce", reduce, "float32, bfloat16"
        )


def _parallel(keys: Keys, opts: dict[str, Any], notes: list[str]) -> None:
    shard = keys.integer("parallelism.data_parallel_shard_degree", -1)
    replicate = keys.integer("parallelism.data_parallel_replicate_degree", 1) or 1
    if shard == -1 or shard == 0:
        notes.append("data_parallel_shard_degree -1 takes every GPU left: give --dp (or --gpu Nx...)")
    elif shard is not None:
        opts["dp"] = shard * replicate
        if replicate > 1 and shard > 1:
            opts |= {"fsdp": "hybrid", "fsdp_shard": shard}
    for key, opt in (
        ("tensor_parallel_degree", "tp"),
        ("pipeline_parallel_degree", "pp"),
        ("context_parallel_degree", "cp"),
        ("expert_parallel_degree", "ep"),
    ):
        value = keys.integer(f"parallelism.{key}", 1)
        if value is not None:
            opts[opt] = value


def _recompute(keys: Keys, opts: dict[str, Any]) -> None:
    mode = keys.text("activation_checkpoint.mode")
    option = keys.text("activation_checkpoint.selective_ac_option")
    if mode is None:
        return
    if mode not in ("none", "full", "selective"):
        _bad("activation_checkpoint.mode", mode, "none, full, selective")
    if mode != "selective":
        opts["recompute"] = mode
    elif option in (None, "op"):
        opts["recompute"] = "op-sac"
    elif option.isdigit() and int(option) >= 1:
        opts |= {"recompute": "layer-sac", "recompute_every": int(option)}
    else:
        _bad("activation_checkpoint.selective_ac_option", option, "op, or a positive integer")

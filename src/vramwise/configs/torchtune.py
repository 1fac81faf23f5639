"""torchtune's YAML recipe configs as vramwise's training options.

Keys as torchtune 0.7.0 (git bd2a0fc7, the ``--framework torchtune`` preset's version) writes them in
``recipes/configs/llama3_1/8B_lora_single_device.yaml``, ``8B_qlora_single_device.yaml``,
``8B_full_single_device.yaml`` and read by ``recipes/lora_finetune_single_device.py`` and
``full_finetune_single_device.py``: the model builder (``model._component_``, its ``lora_rank``,
``lora_attn_modules``, ``apply_lora_to_mlp``, ``quantize_base``), ``batch_size``, ``gradient_accumulation_steps``,
``optimizer._component_``, ``optimizer_in_bwd``, ``loss._component_``, ``enable_activation_checkpointing``,
``enable_activation_offloading``, ``compile``, ``dtype`` and ``tokenizer.max_seq_len``.
"""

from __future__ import annotations

from typing import Any

from vramwise.configs.imported import Imported
from vramwise.configs.values import Keys, flatten, prefixed, refuse

KIND = "torchtune"
# torchtune.models builder (without its lora_/qlora_ prefix) -> the catalog model
MODELS = {
    "llama2.llama2_7b": "llama-2-7b", "llama2.llama2_70b": "llama-2-70b",
    "llama3.llama3_8b": "llama-3-8b", "llama3.llama3_70b": "llama-3-70b",
    "llama3_1.llama3_1_8b": "llama-3.1-8b", "llama3_1.llama3_1_70b": "llama-3.1-70b",
    "llama3_1.llama3_1_405b": "llama-3.1-405b",
    "llama3_2.llama3_2_1b": "llama-3.2-1b", "llama3_2.llama3_2_3b": "llama-3.2-3b",
    "mistral.mistral_7b": "mistral-7b", "qwen2_5.qwen2_5_0_5b": "qwen2.5-0.5b", "qwen2_5.qwen2_5_7b_base": "qwen2.5-7b",
    "qwen2_5.qwen2_5_7b_instruct": "qwen2.5-7b", "qwen2_5.qwen2_5_72b_instruct": "qwen2.5-72b",
    "qwen3.qwen3_8b_base": "qwen3-8b", "qwen3.qwen3_8b_instruct": "qwen3-8b",
    "gemma.gemma_2b": "gemma-2b", "gemma.gemma_7b": "gemma-7b", "gemma2.gemma2_2b": "gemma-2-2b",
    "gemma2.gemma2_9b": "gemma-2-9b", "phi3.phi3_mini": "phi-3-mini",
}  # fmt: skip
# torchtune's LoRA module names (modules/peft: lora_attn_modules; apply_lora_to_mlp adds w1, w2, w3) -> the HF names
# its checkpoints convert to (models/convert_weights.py _FROM_HF)
_ATTN = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
MLP = ("gate_proj", "up_proj", "down_proj")
OPTIMIZERS = {
    "torch.optim.AdamW": ("adamw", None), "torch.optim.Adam": ("adam", None), "torch.optim.SGD": ("sgd", None),
    "bitsandbytes.optim.PagedAdamW8bit": ("paged-adamw-8bit", None),
    "bitsandbytes.optim.PagedAdamW": ("paged-adamw", None), "bitsandbytes.optim.AdamW8bit": ("adamw-8bit", None),
    # torchtune docs/source/tutorials/memory_optimizations.rst (1814feb) names the prototype path; torchao 0.11
    # moved it to torchao.optim (the one emitted: the last key of a value wins in emit_train)
    "torchao.prototype.low_bit_optim.AdamW8bit": ("ao-adamw-8bit", None),
    "torchao.optim.AdamW8bit": ("ao-adamw-8bit", None),
}  # fmt: skip
LOSSES = {
    "torchtune.modules.loss.LinearCrossEntropyLoss": "torchtune-linear",
    "torchtune.modules.loss.CEWithChunkedOutputLoss": "torchtune-chunked",
    "torch.nn.CrossEntropyLoss": "compute-dtype",  # on the model's bf16 logits, no upcast
}
_DTYPES = {"bf16": "bf16", "fp32": "fp32"}
_HARMLESS = prefixed(
    "tokenizer.", "checkpointer.", "dataset", "lr_scheduler.", "metric_logger.", "profiler.", "optimizer.lr",
    "optimizer.weight_decay", "optimizer.betas", "optimizer.eps", "model.lora_alpha", "loss.num_output_chunks",
    names=(
        "output_dir", "resume_from_checkpoint", "save_adapter_weights_only", "seed", "shuffle", "epochs",
        "max_steps_per_epoch", "clip_grad_norm", "device", "log_every_n_steps", "log_peak_memory_stats",
        "log_level", "optimizer.fused", "fsdp_reshard_after_forward", "collate_fn",
        "run_val_every_n_steps", "cudnn_deterministic_mode",
    ),
)  # fmt: skip
_REFUSED = {
    "model.apply_lora_to_output": "LoRA on the output projection is not modelled",
    "tensor_parallel_dim": "torchtune's tensor parallelism is not read (use --tp)",
    "tensor_parallel_plan._component_": "torchtune's tensor parallelism is not read (use --tp)",
    "model.use_dora": "DoRA is not modelled",
    "ref_checkpointer._component_": "DPO's reference model is not modelled",
    "validation_dataset._component_": "a validation loop's memory is not modelled",
}


def is_torchtune(data: dict[str, Any]) -> bool:
    model = data.get("model")
    return isinstance(model, dict) and "_component_" in model


def read(data: dict[str, Any]) -> Imported:
    keys = Keys(KIND, flatten(data))
    opts: dict[str, Any] = {"framework": "torchtune"}
    notes: list[str] = []
    model = _model(keys, opts)
    for key, name in (("batch_size", "batch"), ("gradient_accumulation_steps", "grad_accum")):
        value = keys.integer(key, 1)
        if value is not None:
            opts[name] = value
    seq = keys.integer("tokenizer.max_seq_len", 1)
    if seq is not None:
        opts["seq"] = seq
    else:
        notes.append(
            "tokenizer.max_seq_len is not set: the sequences are as long as the data; vramwise's --seq "
            "default is used (give --seq)"
        )
    optim = keys.choice("optimizer._component_", OPTIMIZERS)
    if optim is not None:
        opts["optimizer"] = optim[0]
        fused = keys.flag("optimizer.fused")
        if optim[0] in ("adamw", "adam", "sgd"):
            opts["optimizer_impl"] = "fused" if fused else "foreach"
    loss = keys.choice("loss._component_", LOSSES)
    if loss is not None:
        opts["loss"] = loss
    dtype = keys.choice("dtype", _DTYPES)
    if dtype is not None:
        opts["precision"] = dtype
    for key, name in (
        ("enable_activation_offloading", "activation_offload"),
        ("compile", "compile"),
        ("optimizer_in_bwd", "optimizer_in_backward"),
    ):
        value = keys.flag(key)
        if value is not None:
            opts[name] = value
    ac = keys.flag("enable_activation_checkpointing")
    if ac is not None:
        opts["recompute"] = "full" if ac else "none"
    if keys.flag("fsdp_cpu_offload"):
        opts["offload"] = "params"  # training.shard_model(cpu_offload=True): FSDP2 CPUOffloadPolicy
    notes += _sharded_layers(keys, opts)
    ignored = keys.finish(_HARMLESS, refused=_REFUSED)
    return Imported(
        kind=KIND,
        command="train",
        options=opts,
        model=model,
        used=tuple(keys.used),
        ignored=ignored,
        notes=tuple(notes),
    )


def _sharded_layers(keys: Keys, opts: dict[str, Any]) -> list[str]:
    """custom_sharded_layers ['tok_embeddings', 'output'] (shard_model: each its own FSDP unit) as --fsdp-outer-units;
    any other list is named in a note."""
    outer = keys.raw("custom_sharded_layers")
    if isinstance(outer, list) and {"tok_embeddings", "output"} <= {str(x) for x in outer}:
        opts["fsdp_outer_units"] = True
        return []
    if outer:
        return [
            f"custom_sharded_layers {outer}: only ['tok_embeddings', 'output'] is modelled (--fsdp-outer-units); "
            "these modules stay in the root unit"
        ]
    return []


def _model(keys: Keys, opts: dict[str, Any]) -> str:
    component = keys.text("model._component_") or ""
    head, _, builder = component.removeprefix("torchtune.models.").rpartition(".")
    peft = "qlora" if builder.startswith("qlora_") else "lora" if builder.startswith("lora_") else "none"
    name = MODELS.get(f"{head}.{builder.removeprefix('qlora_').removeprefix('lora_')}")
    if not component.startswith("torchtune.models.") or name is None:
        raise refuse(
            KIND,
            "model._component_",
            f"{component!r} is not a torchtune builder of a catalog model",
            "torchtune.models.<family>.[lora_|qlora_]<builder> of " + ", ".join(sorted(set(MODELS.values()))),
        )
    if keys.flag("model.quantize_base"):
        peft = "qlora"
    if peft == "none":
        for key in ("model.lora_rank", "model.lora_attn_modules"):
            if keys.has(key):
                raise refuse(KIND, key, "a full-model builder has no LoRA", "a lora_ or qlora_ builder")
        return name
    opts["peft"] = peft
    rank = keys.integer("model.lora_rank", 1)
    if rank is not None:
        opts["lora_r"] = rank
    dropout = keys.number("model.lora_dropout")
    if dropout is not None:
        opts["lora_dropout"] = dropout
    attn = keys.raw("model.lora_attn_modules")
    mlp = keys.flag("model.apply_lora_to_mlp")
    if attn is not None or mlp is not None:
        if not isinstance(attn or [], list) or any(m not in _ATTN for m in attn or []):
            raise refuse(KIND, "model.lora_attn_modules", f"{attn!r}: torchtune's names", ", ".join(_ATTN))
        targets = [_ATTN[m] for m in attn or []] + (list(MLP) if mlp else [])
        if not targets:
            raise refuse(KIND, "model.lora_attn_modules", "LoRA on no module", "at least one module")
        opts["lora_targets"] = ",".join(targets)
    return name

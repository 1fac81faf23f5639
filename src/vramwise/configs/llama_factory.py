"""LLaMA-Factory's YAML (``llamafactory-cli train FILE``) as vramwise's training options.

LLaMA-Factory 0.9.6.dev0 (git ff6d4d12, the ``--framework llama-factory`` preset's version) reads one YAML into its
``ModelArguments``, ``DataArguments``, ``FinetuningArguments`` and transformers' ``Seq2SeqTrainingArguments``
(src/llamafactory/hparams/parser.py), as its examples write them (examples/train_lora/llama3_lora_sft.yaml,
examples/train_qlora/llama3_lora_sft_bnb_npu.yaml, examples/train_full/llama3_full_sft.yaml): its own keys are
read here (``finetuning_type``, ``lora_rank``, ``lora_target``, ``quantization_bit``, ``cutoff_len`` (default 2048 in
hparams/data_args.py), ``pure_bf16``, ``flash_attn``, ``enable_liger_kernel``, ``disable_gradient_checkpointing``),
the Trainer's by ``hf_trainer.py``. Precision is the preset's (bf16 base under LoRA, amp for full fine-tuning):
``bf16: true`` is its autocast, ``pure_bf16`` its bf16 weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vramwise.configs import hf_trainer
from vramwise.configs.imported import Imported
from vramwise.configs.values import Keys, refuse

KIND = "llama-factory"
CUTOFF_LEN = 2048  # hparams/data_args.py DataArguments.cutoff_len
# LLaMA-Factory keys with no effect on the step's memory (data, template, output, export)
_HARMLESS = [
    "stage",
    "do_train",
    "dataset",
    "eval_dataset",
    "dataset_dir",
    "template",
    "max_samples",
    "overwrite_cache",
    "preprocessing_num_workers",
    "plot_loss",
    "val_size",
    "lora_alpha",
    "trust_remote_code",
    "packing",
    "neat_packing",
    "train_on_prompt",
    "mask_history",
    "tokenized_path",
    "streaming",
    "buffer_size",
    "mix_strategy",
    "interleave_probs",
    "ignore_pad_token_for_loss",
    "preprocessing_batch_size",
    "media_dir",
    "image_max_pixels",
    "video_max_pixels",
    "cache_dir",
    "model_revision",
    "hf_hub_token",
    "additional_target",
    "create_new_adapter",
    "adapter_name_or_path",
    "export_dir",
    "infer_backend",
    "quantization_method",
    "quantization_type",
    "double_quantization",
    "compute_dtype",
    "default_system",
    "enable_thinking",
    "predict_with_generate",
    "include_effective_tokens_per_second",
    "upcast_layernorm",
    "upcast_lmhead_output",
    "use_rslora",
    "use_dora",
    "loraplus_lr_ratio",
]
_REFUSED = {
    "use_unsloth": "unsloth under LLaMA-Factory is not read (use --framework unsloth)",
    "use_galore": "GaLore is not modelled",
    "use_badam": "BAdam is not modelled",
    "use_apollo": "APOLLO is not modelled",
    "pissa_init": "PiSSA initialisation is not read",
    "freeze_trainable_modules": "a freeze by module name is not modelled (freeze_trainable_layers is)",
    "ref_model": "DPO/KTO's reference model is not modelled (stage sft or pt)",
    "reward_model": "PPO's reward model is not modelled (stage sft or pt)",
    "shift_attn": "shifted sparse attention is not modelled",
    "rope_scaling": "rope scaling is not read (give --seq)",
}
_FT = {"lora": None, "full": "none", "freeze": "none"}
_ATTN = {"auto": None, "fa2": "flash", "sdpa": "sdpa", "disabled": "eager"}
# hf_trainer handles these keys of the same YAML; LLaMA-Factory's own are read here
_OWN = {"finetuning_type", "lora_rank", "lora_target", "lora_dropout", "quantization_bit", "cutoff_len", "pure_bf16",
        "flash_attn", "enable_liger_kernel", "disable_gradient_checkpointing", "freeze_trainable_layers",
        "model_name_or_path", *_HARMLESS, *_REFUSED}  # fmt: skip


def is_llama_factory(data: dict[str, Any]) -> bool:
    return "finetuning_type" in data or ("stage" in data and "model_name_or_path" in data)


def read(data: dict[str, Any], base: Path | None = None, load: Callable[[Path], dict[str, Any]] | None = None
         ) -> Imported:  # fmt: skip
    keys = Keys(KIND, {k: v for k, v in data.items() if k in _OWN})
    stage = keys.text("stage")
    if stage not in (None, "sft", "pt"):
        raise refuse(KIND, "stage", f"{stage!r}: RLHF stages (rm, ppo, dpo, kto) are not modelled", "sft, pt")
    opts: dict[str, Any] = {}
    notes: list[str] = []
    _method(keys, data, opts)
    opts["seq"] = keys.integer("cutoff_len", 1) or CUTOFF_LEN
    if not keys.has("cutoff_len"):
        notes.append(f"seq {CUTOFF_LEN}: LLaMA-Factory's cutoff_len default")
    if keys.flag("pure_bf16"):
        opts["precision"] = "bf16"
    attn = keys.choice("flash_attn", _ATTN)
    if attn is not None:
        opts["attention"] = attn
    if keys.flag("enable_liger_kernel"):
        opts |= {"loss": "liger", "mlp_impl": "fused", "norm_impl": "fused"}
    no_gc = keys.flag("disable_gradient_checkpointing")
    if no_gc is not None:
        opts["recompute"] = "none" if no_gc else "full"
    keys.seen("model_name_or_path")
    ignored = keys.finish(lambda k: k in _HARMLESS, refused=_REFUSED)
    rest = {k: v for k, v in data.items() if k not in _OWN}
    trainer = hf_trainer.read({**rest, "output_dir": data.get("output_dir", "out")}, base, load)
    # the preset decides precision from the fine-tuning type; bf16/fp16 are its autocast (pure_bf16 above)
    topts = {k: v for k, v in trainer.options.items() if k not in ("precision", "framework")}
    notes += trainer.notes
    # LLaMA-Factory's preset for every layout, DeepSpeed's included (its rules for ZeRO-3 are the preset's)
    return Imported(kind=KIND, command="train", options={"framework": "llama-factory", **topts, **opts},
                    model=data.get("model_name_or_path"), used=(*keys.used, *trainer.used),
                    ignored=(*ignored, *trainer.ignored), notes=tuple(notes),
                    hidden_auto=trainer.hidden_auto)  # fmt: skip


def _method(keys: Keys, data: dict[str, Any], opts: dict[str, Any]) -> None:
    """finetuning_type, quantization_bit and the LoRA keys."""
    ft = keys.choice("finetuning_type", _FT)
    bits = keys.integer("quantization_bit")
    if bits not in (None, 4, 8):
        raise refuse(KIND, "quantization_bit", f"{bits} is not modelled", "4, 8")
    if ft == "none" and bits:
        raise refuse(KIND, "quantization_bit", "a quantized base trains adapters only", "finetuning_type: lora")
    if data.get("finetuning_type") == "freeze":
        raise refuse(
            KIND,
            "finetuning_type",
            "freeze trains the last layers only: not modelled as such (use "
            "--freeze-layers with the number of frozen layers)",
            "lora, full",
        )
    keys.seen("freeze_trainable_layers")  # applies to finetuning_type freeze only
    if ft == "none":
        opts["peft"] = "none"
    elif bits:
        opts["peft"] = "qlora" if bits == 4 else "lora-8bit"
    rank = keys.integer("lora_rank", 1)
    if rank is not None:
        opts["lora_r"] = rank
    dropout = keys.number("lora_dropout")
    if dropout is not None:
        opts["lora_dropout"] = dropout
    target = keys.text("lora_target")
    if target is not None:
        opts["lora_targets"] = "all-linear" if target.strip() == "all" else target

"""Framework presets: what each training framework does by default, at a stated version, read from its source.

``--framework torchtune`` fills every option the user did not give with torchtune's default (the user's options
always win) and refuses the combinations the framework does not run, in one line naming its rule. Each framework
is one frozen table (``PRESETS``): rows of (flat option name, value, source), some only under a condition
(``when``: QLoRA, more than one data-parallel GPU, ...). The table is data: a row whose option or value this
version of vramwise does not have yet is kept and reported as "not modelled yet" (it changes nothing), so a row
written today starts to count the day its option exists, and nothing a framework does is dropped in silence.

Sources are read at the commits named in ``VERSIONS`` (the ``fetch`` snapshot of each repository, or the installed
package for transformers and torch). Precision is the one row written as the framework's way of doing 16-bit
training rather than its literal default: DeepSpeed's and Megatron's defaults are fp32 (no bf16 block, no
``--bf16``), which nobody trains a large model with; the note says so and ``--precision fp32`` gives the literal.

    preset(flat)       the flat options with the framework's defaults filled in, and one note per default that
                       changed the setup (or is not modelled yet, or yields to a rule between the options given)
    check_rules(s)     the framework's refusals for a built TrainSetup (called by TrainSetup itself)
    refusal(fw, flat)  the first rule these options break (fit asks it before a search varies the layout)
    fsdp_loading(fw)   the loading path under FSDP when --loading is auto (estimate/train/loading.py asks it)

A row is evaluated in table order against the options so far (the user's, then earlier rows', then TrainSetup's
defaults), so a condition may read what an earlier row set (torchtitan's precision reads its fsdp row).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from vramwise.errors import InvalidWorkloadError, VramwiseError
from vramwise.workload.options import Framework

if TYPE_CHECKING:
    from vramwise.workload.train import TrainSetup

Values = Mapping[str, Any]  # flat option name -> value (the user's, else the preset's so far, else the default)


@dataclass(frozen=True, kw_only=True)
class Default:
    """One default of a framework: a flat option name, its value, and where the framework's source says so."""

    name: str  # a flat name of TrainSetup (``workload/train.py`` _FLAT), or one not modelled yet
    value: Any  # the value, or a function of the options so far (a chunk of the tokens)
    source: str  # file and function/key at the framework's stated version
    when: Callable[[Values], bool] | None = None  # applies only under this condition
    when_text: str = ""  # the condition in words, for the note

    def applies(self, values: Values) -> bool:
        return self.when is None or self.when(values)

    def value_at(self, values: Values) -> Any:
        return self.value(values) if callable(self.value) else self.value


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A combination the framework does not run: ``broken(values)`` is true for it; the message names the rule."""

    field: str  # the flat option the refusal is about
    allowed: str  # what that option may be under this framework
    broken: Callable[[Values], bool]
    rule: str  # the framework's rule, in words, with its source


@dataclass(frozen=True, kw_only=True)
class Preset:
    framework: Framework
    version: str  # what was read: package version and commit
    defaults: tuple[Default, ...]
    rules: tuple[Rule, ...] = ()
    notes: tuple[str, ...] = ()  # what the table cannot say as an option value (always shown)


def _get(values: Values, name: str, default: Any = None) -> Any:
    value = values.get(name, default)
    return default if value is None else value


def _qlora(v: Values) -> bool:
    return str(_get(v, "peft", "none")) == "qlora"


def _adapters(v: Values) -> bool:
    return str(_get(v, "peft", "none")) != "none"


def _full(v: Values) -> bool:
    return not _adapters(v)


def _multi(v: Values) -> bool:
    return int(_get(v, "dp", 1)) > 1


def _unsharded(v: Values) -> bool:
    return not int(_get(v, "zero", 0)) and str(_get(v, "fsdp", "none")) == "none"


def _eighth_of_tokens(v: Values) -> int:
    """Tokens per chunk when the micro-batch's tokens are cut in 8 (torchtitan's ChunkedLossWrapper num_chunks)."""
    tokens = int(_get(v, "batch", 1)) * int(_get(v, "seq", 2048)) // int(_get(v, "cp", 1))
    return max(1, -(-tokens // 8))


# --- the versions read, and the source of each default --------------------------------------------------------

TRANSFORMERS = "transformers 5.24.0 (installed package)"
PEFT = "peft 0.20.0+47 (git 5d602fdb)"
VERSIONS: dict[Framework, str] = {
    Framework.HF_TRAINER: f"{TRANSFORMERS}, {PEFT}",
    Framework.ACCELERATE: "accelerate 1.15.0.dev0 (git 16cb6eb8), torch 2.13.0",
    Framework.DEEPSPEED: "DeepSpeed 0.19.5+27 (git edaa7221)",
    Framework.TORCHTUNE: "torchtune 0.7.0 (git bd2a0fc7), torchao to_nf4",
    Framework.TORCHTITAN: "torchtitan 0.2.2 (git b5bcd76c)",
    Framework.AXOLOTL: f"axolotl 0.18.0+9 (git 067b021c) on {TRANSFORMERS}, {PEFT}",
    Framework.UNSLOTH: f"unsloth 2026.8.19 (git 015bdef0) on {TRANSFORMERS}, {PEFT}",
    Framework.LLAMA_FACTORY: f"LLaMA-Factory 0.9.6.dev0 (git ff6d4d12) on {TRANSFORMERS}, {PEFT}",
    Framework.MEGATRON: "Megatron-LM core 0.20.0 (git d98e8a64)",
    Framework.LITGPT: "lit-gpt 0.1.0 (git 8641822, the commit of its tutorials/resource-tables.md) on Lightning "
    "2.1.0rc0+ (git 71aed751, its requirements.txt), torch 2.1.0, bitsandbytes 0.41.1",
}

_HF_FUSED = (
    "transformers training_args.py TrainingArguments.optim: default 'adamw_torch_fused' (torch >= 2.8), torch's "
    "AdamW with fused=True"
)
_HF_DTYPE = (
    "transformers modeling_utils.py PreTrainedModel.from_pretrained: dtype None -> 'auto' (the checkpoint's, bf16), "
    "and TrainingArguments.bf16 autocasts over those 16-bit weights: no fp32 master copy, torch's AdamW keeps its "
    "states in the weights' dtype"
)
_PEFT_FP32 = (
    "peft mapping_func.py get_peft_model(autocast_adapter_dtype=True) -> tuners_utils.py _cast_adapter_dtype: bf16 "
    "and fp16 adapter weights upcast to fp32"
)
_PEFT_GC = (
    "peft utils/other.py prepare_model_for_kbit_training(use_gradient_checkpointing=True): the QLoRA recipe turns "
    "gradient checkpointing on (and casts every non-4-bit weight to fp32, which vramwise's QLoRA counts)"
)
_BNB_DQ_OFF = "transformers utils/quantization_config.py BitsAndBytesConfig(bnb_4bit_use_double_quant=False)"
_HF_AC_OFF = "transformers training_args.py TrainingArguments.activation_checkpointing: default None (off)"
_HF_LOSS = "transformers loss/loss_utils.py ForCausalLMLoss: logits.float() before cross_entropy (fp32 upcast)"

_HF_TRAINER = (
    Default(name="precision", value="bf16", source=_HF_DTYPE),
    Default(name="optimizer", value="adamw", source=_HF_FUSED),
    Default(name="optimizer_impl", value="fused", source=_HF_FUSED),
    Default(name="recompute", value="none", source=_HF_AC_OFF, when=lambda v: not _qlora(v)),
    Default(name="recompute", value="full", source=_PEFT_GC, when=_qlora, when_text="with peft=qlora"),
    Default(name="loss", value="full", source=_HF_LOSS),
    Default(name="adapter_dtype", value="fp32", source=_PEFT_FP32, when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="double_quant", value=False, source=_BNB_DQ_OFF, when=_qlora, when_text="with peft=qlora"),
)

_TORCH_FOREACH = (
    "torch optim/optimizer.py _default_to_fused_or_foreach: the script's torch.optim.AdamW runs foreach on CUDA "
    "(fused only when asked)"
)
_ACCELERATE = (
    Default(
        name="precision",
        value="fp32",
        source="accelerate state.py AcceleratorState: mixed_precision defaults to ACCELERATE_MIXED_PRECISION 'no' "
        "(no autocast; the weights stay as the script made them)",
    ),
    Default(name="optimizer_impl", value="foreach", source=_TORCH_FOREACH),
)

_DS = "DeepSpeed "
_DEEPSPEED = (
    Default(
        name="precision",
        value="bf16-mixed",
        source=_DS + "runtime/bf16_optimizer.py BF16_Optimizer and the ZeRO optimizers: bf16 weights with an fp32 "
        "master copy (with \"bf16\": {\"enabled\": true}; without a bf16/fp16 block DeepSpeed trains in fp32)",
    ),
    Default(
        name="grad_dtype",
        value="half",
        source=_DS + "runtime/engine.py get_data_types: grad_accum_dtype None -> the model's dtype (bf16)",
    ),
    Default(
        name="optimizer_impl",
        value="fused",
        source=_DS + "runtime/engine.py _configure_basic_optimizer: \"Adam\"/\"AdamW\" with torch_adam False -> "
        "deepspeed.ops.adam.FusedAdam",
    ),
    Default(name="reduce_bucket", value=500_000_000,
            source=_DS + "runtime/zero/config.py DeepSpeedZeroConfig.reduce_bucket_size = 5e8"),
    Default(name="prefetch_bucket", value=50_000_000,
            source=_DS + "runtime/zero/config.py DeepSpeedZeroConfig.stage3_prefetch_bucket_size = 5e7"),
    Default(name="max_live_params", value=1_000_000_000,
            source=_DS + "runtime/zero/config.py DeepSpeedZeroConfig.stage3_max_live_parameters = 1e9"),
    Default(name="param_persistence_threshold", value=100_000,
            source=_DS + "runtime/zero/config.py DeepSpeedZeroConfig.stage3_param_persistence_threshold = 1e5"),
)  # fmt: skip

_TT = "torchtune recipes/configs/llama3_1/"
_TORCHTUNE = (
    Default(name="precision", value="bf16",
            source=_TT + "*.yaml dtype: bf16; recipes build the model under training.set_default_dtype(bf16), no "
            "fp32 master copy"),
    Default(name="optimizer", value="adamw",
            source=_TT + "8B_lora*.yaml, 8B_qlora_single_device.yaml, 8B_full.yaml: torch.optim.AdamW, fused: True",
            when=lambda v: not (_full(v) and not _multi(v))),
    Default(name="optimizer_impl", value="fused",
            source=_TT + "8B_lora*.yaml, 8B_qlora_single_device.yaml, 8B_full.yaml: torch.optim.AdamW, fused: True"),
    Default(name="optimizer", value="paged-adamw-8bit",
            source=_TT + "8B_full_single_device.yaml: optimizer bitsandbytes.optim.PagedAdamW8bit",
            when=lambda v: _full(v) and not _multi(v), when_text="full fine-tuning on one GPU"),
    Default(name="optimizer_in_backward", value=True,
            source=_TT + "8B_full_single_device.yaml: optimizer_in_bwd: True (needs gradient_accumulation_steps=1)",
            when=lambda v: _full(v) and not _multi(v) and int(_get(v, "grad_accum", 1)) == 1
            and str(_get(v, "precision", "")) in ("bf16", "fp32"),
            when_text="full fine-tuning on one GPU, grad_accum 1"),
    Default(name="recompute", value="full",
            source=_TT + "8B_lora_single_device.yaml, 8B_qlora_single_device.yaml, 8B_full*.yaml: "
            "enable_activation_checkpointing: True",
            when=lambda v: not (str(_get(v, "peft", "none")) == "lora" and _multi(v))),
    Default(name="recompute", value="none",
            source=_TT + "8B_lora.yaml (distributed LoRA): enable_activation_checkpointing: False",
            when=lambda v: str(_get(v, "peft", "none")) == "lora" and _multi(v), when_text="LoRA on more than one GPU"),
    Default(name="activation_offload", value=False,
            source=_TT + "*.yaml: enable_activation_offloading: False"),
    Default(name="compile", value=False, source=_TT + "*.yaml: compile: False"),
    Default(name="lora_r", value=8, source=_TT + "8B_lora*.yaml, 8B_qlora_single_device.yaml: lora_rank: 8",
            when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="lora_targets", value=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            source=_TT + "8B_lora*.yaml: lora_attn_modules ['q_proj', 'v_proj', 'output_proj'], apply_lora_to_mlp: "
            "True (w1, w2, w3)", when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="adapter_dtype", value="bf16",
            source="torchtune recipes/lora_finetune_single_device.py _setup_model: the LoRA model is built under "
            "training.set_default_dtype(bf16) (adapters bf16, not peft's fp32)", when=_adapters,
            when_text="with LoRA/QLoRA"),
    Default(name="double_quant", value=True,
            source="torchtune modules/low_precision/nf4_linear.py -> torchao to_nf4(block_size=64, "
            "scaler_block_size=256): the per-block scalers are quantized to 8 bits per 256", when=_qlora,
            when_text="with peft=qlora"),
    Default(name="loss", value="torchtune-linear",
            source=_TT + "*.yaml loss: torchtune.modules.loss.LinearCrossEntropyLoss "
            "(modules/loss/cross_entropy_loss.py, num_output_chunks=8): the head runs per chunk inside the loss, each "
            "chunk's logits upcast to fp32; "
            "autograd keeps every chunk's fp32 log-softmax"),
    Default(name="fsdp", value="full",
            source="torchtune recipes/lora_finetune_distributed.py, full_finetune_distributed.py: "
            "training.shard_model with FSDP2 fully_shard, reshard_after_forward True",
            when=lambda v: _multi(v) and _unsharded(v), when_text="on more than one GPU"),
    Default(name="fsdp_outer_units", value=True,
            source=_TT + "8B_full.yaml, 70B_full.yaml: custom_sharded_layers ['tok_embeddings', 'output'] "
            "(full_finetune_distributed.py shard_model: each a unit of its own; a tied head stays in the root)",
            when=lambda v: _full(v) and str(_get(v, "fsdp", "none")) == "full",
            when_text="full fine-tuning under FSDP full shard"),
)  # fmt: skip

_TITAN = "torchtitan "
_TITAN_MP = (
    _TITAN + "config/configs.py TrainingConfig.mixed_precision_param 'bfloat16', mixed_precision_reduce 'float32': "
    "fp32 parameters and gradients"
)


def _fsdp(v: Values) -> bool:
    return str(_get(v, "fsdp", "none")) != "none"


_TORCHTITAN = (
    Default(name="fsdp", value="full",
            source=_TITAN + "config/configs.py ParallelismConfig.data_parallel_shard_degree = -1 (every GPU left "
            "after tp, pp and cp): FSDP2 fully_shard over the dp_shard x cp mesh (parallelize.py applies it when "
            "dp_shard or cp is enabled)",
            when=lambda v: (_multi(v) or int(_get(v, "cp", 1)) > 1) and _unsharded(v),
            when_text="on more than one data-parallel or context-parallel GPU"),
    Default(name="precision", value="amp", source=_TITAN_MP + ", bf16 compute by torch.autocast when not sharded",
            when=lambda v: not _fsdp(v), when_text="without FSDP"),
    Default(name="precision", value="bf16-mixed",
            source=_TITAN_MP + ": fully_shard's MixedPrecisionPolicy all-gathers bf16 copies of the fp32 shards "
            "(fp32 master, no autocast cache)", when=_fsdp, when_text="under FSDP"),
    Default(name="grad_dtype", value="fp32", source=_TITAN_MP + ": gradients reduce-scattered into fp32 shards",
            when=_fsdp, when_text="under FSDP"),
    Default(name="optimizer", value="adamw",
            source=_TITAN + "models/llama3/config_registry.py llama3_8b: optimizer default_adamw"),
    Default(name="optimizer_impl", value="fused",
            source=_TITAN + "components/optimizer/optimizer.py OptimizersContainer.Config.implementation 'fused'"),
    Default(name="recompute", value="op-sac",
            source=_TITAN + "trainer.py Trainer.Config.activation_checkpoint default SelectiveAC.Config "
            "(distributed/activation_checkpoint.py: per-op SAC, saves every second matmul, attention and "
            "collectives)"),
    Default(name="compile", value=False, source=_TITAN + "config/configs.py CompileConfig.enable False"),
    Default(name="float8", value=False,
            source=_TITAN + "models/llama3/config_registry.py llama3_8b: no Float8LinearConverter"),
    Default(name="loss", value="chunked",
            source=_TITAN + "models/llama3/config_registry.py llama3_8b: ChunkedLossWrapper "
            "(components/loss.py: lm_head + loss per chunk, backward per chunk; cross_entropy_loss upcasts each "
            "chunk's logits with pred.float())"),
    Default(name="loss_chunk", value=_eighth_of_tokens,
            source=_TITAN + "components/loss.py ChunkedLossWrapper.Config.num_chunks = 8: the tokens of the "
            "micro-batch in 8 chunks"),
    Default(name="fsdp_over_cp", value=True,
            source=_TITAN + "distributed/parallel_dims.py ParallelDims: the fsdp mesh is dp_shard x cp ('when cp is "
            "used, FSDP is also applied'), so context-parallel ranks hold shards of the weights even at dp 1",
            when=lambda v: int(_get(v, "cp", 1)) > 1,
            when_text="with cp > 1"),
    Default(name="expandable_segments", value=True,
            source=_TITAN + "run_train.sh: PYTORCH_ALLOC_CONF=\"expandable_segments:True\" before torchrun (and "
            "run_llama_train.sh's PYTORCH_CUDA_ALLOC_CONF at 9dec370, the end-2024 benchmarks'): the caching "
            "allocator's reserve is the replay with expandable segments"),
)  # fmt: skip

_AX = "axolotl src/axolotl/"
_AXOLOTL = (
    Default(name="precision", value="bf16",
            source=_AX + "utils/schemas/config.py bf16: default 'auto' (bf16 where the GPU has it); "
            "utils/config/__init__.py resolve_dtype: bf16 -> cfg.torch_dtype bfloat16, the model loads in it and "
            "trains without an fp32 master copy"),
    Default(name="optimizer", value="adamw", source=_AX + "utils/schemas/training.py optimizer: 'adamw_torch_fused'"),
    Default(name="optimizer_impl", value="fused",
            source=_AX + "utils/schemas/training.py optimizer: 'adamw_torch_fused'"),
    Default(name="recompute", value="none",
            source=_AX + "utils/schemas/config.py gradient_checkpointing: default False; loaders/model.py passes it "
            "to prepare_model_for_kbit_training(use_gradient_checkpointing=cfg.gradient_checkpointing), so QLoRA "
            "stays without it too"),
    Default(name="activation_offload", value=False,
            source=_AX + "utils/schemas/config.py activation_offloading: default False"),
    Default(name="adapter_dtype", value="fp32",
            source=_AX + "loaders/adapter.py: autocast_adapter_dtype only when peft_autocast_adapter_dtype is set; "
            "else " + _PEFT_FP32, when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="double_quant", value=True,
            source=_AX + "loaders/model.py: qlora BitsAndBytesConfig bnb_4bit_use_double_quant True",
            when=_qlora, when_text="with peft=qlora"),
)  # fmt: skip

_US = "unsloth unsloth/models/"
_UNSLOTH = (
    Default(name="peft", value="qlora",
            source=_US + "loader.py FastLanguageModel.from_pretrained(load_in_4bit=True)"),
    Default(name="precision", value="bf16",
            source=_US + "llama.py FastLlamaModel.from_pretrained: dtype None -> bfloat16 if SUPPORTS_BFLOAT16 "
            "(float16 otherwise); the base trains without an fp32 master copy"),
    Default(name="optimizer", value="adamw", source="(unsloth trains through TRL/transformers) " + _HF_FUSED),
    Default(name="optimizer_impl", value="fused", source="(unsloth trains through TRL/transformers) " + _HF_FUSED),
    Default(name="lora_r", value=16, source=_US + "llama.py FastLlamaModel.get_peft_model(r=16)",
            when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="lora_targets", value=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            source=_US + "llama.py FastLlamaModel.get_peft_model target_modules", when=_adapters,
            when_text="with LoRA/QLoRA"),
    Default(name="lora_dropout", value=0.0, source=_US + "llama.py FastLlamaModel.get_peft_model(lora_dropout=0.0)",
            when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="recompute", value="full",
            source=_US + "llama.py FastLlamaModel.get_peft_model(use_gradient_checkpointing='unsloth')"),
    Default(name="activation_offload", value=True,
            source=_US + "_utils.py apply_unsloth_gradient_checkpointing: 'unsloth' offloads each checkpointed "
            "layer input to host memory from 512 tokens on (below, plain checkpointing)",
            when=lambda v: int(_get(v, "seq", 2048)) >= 512, when_text="from seq 512 on"),
    Default(name="loss", value="chunked",
            source=_US + "llama.py CausalLM forward: unsloth_fused_ce_loss (fused linear cross entropy; its chunk "
            "size follows the free memory, estimated at --loss-chunk)"),
    Default(name="mlp_impl", value="fused",
            source="unsloth unsloth/kernels/fast_lora.py apply_lora_mlp_swiglu (set by models/llama.py "
            "get_peft_model): gate, up, SwiGLU and down with their LoRA in one autograd function"),
    Default(name="norm_impl", value="fused",
            source=_US + "llama.py LlamaDecoderLayer_fast_forward -> kernels/rms_layernorm.py fast_rms_layernorm "
            "(Triton, saves the input and the inverse RMS only)"),
    Default(name="adapter_dtype", value="fp32",
            source=_US + "llama.py get_peft_model calls peft.get_peft_model without autocast_adapter_dtype: "
            + _PEFT_FP32, when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="double_quant", value=True,
            source=_US + "llama.py from_pretrained BitsAndBytesConfig(bnb_4bit_use_double_quant=True)",
            when=_qlora, when_text="with peft=qlora"),
)  # fmt: skip

_LF = "LLaMA-Factory src/llamafactory/"
_LF_FP32 = (
    _LF + "model/adapter.py init_adapter: cast_trainable_params_to_fp32 unless pure_bf16 (default False) or ZeRO-3 "
    "without quantization"
)


def _lf_cast(v: Values) -> bool:
    """LLaMA-Factory casts the trainable parameters to fp32 unless ZeRO-3 without quantization (adapter.py)."""
    return _qlora(v) or int(_get(v, "zero", 0)) != 3


_LLAMA_FACTORY = (
    Default(name="peft", value="lora", source=_LF + "hparams/finetuning_args.py finetuning_type: default 'lora'"),
    Default(name="lora_r", value=8, source=_LF + "hparams/finetuning_args.py lora_rank: 8", when=_adapters,
            when_text="with LoRA/QLoRA"),
    Default(name="lora_targets", value=("all-linear",), source=_LF + "hparams/finetuning_args.py lora_target: 'all'",
            when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="lora_dropout", value=0.0, source=_LF + "hparams/finetuning_args.py lora_dropout: 0.0",
            when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="recompute", value="full",
            source=_LF + "hparams/model_args.py disable_gradient_checkpointing: False -> "
            "model/model_utils/checkpointing.py prepare_model_for_training turns it on"),
    Default(name="precision", value="bf16",
            source=_LF + "model/loader.py + patcher.py: the base loads in the compute dtype (bf16 > fp16 > fp32), "
            "only the adapters train", when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="precision", value="amp", source=_LF_FP32 + ": full fine-tuning trains fp32 weights under bf16 "
            "autocast", when=lambda v: _full(v) and _lf_cast(v), when_text="full fine-tuning"),
    Default(name="precision", value="bf16-mixed",
            source=_LF + "model/adapter.py init_adapter: under ZeRO-3 the weights stay bf16, DeepSpeed keeps the fp32 "
            "master", when=lambda v: _full(v) and not _lf_cast(v), when_text="full fine-tuning under zero=3"),
    Default(name="adapter_dtype", value="fp32", source=_LF_FP32,
            when=lambda v: _adapters(v) and _lf_cast(v), when_text="with LoRA/QLoRA"),
    Default(name="optimizer", value="adamw", source="(LLaMA-Factory trains with transformers' Trainer) " + _HF_FUSED),
    Default(name="optimizer_impl", value="fused",
            source="(LLaMA-Factory trains with transformers' Trainer) " + _HF_FUSED),
    Default(name="double_quant", value=True, source=_LF + "hparams/model_args.py double_quantization: True",
            when=_qlora, when_text="with peft=qlora"),
)  # fmt: skip

_MG = "Megatron-LM megatron/"
_MEGATRON = (
    Default(name="precision", value="bf16-mixed",
            source=_MG + "core/optimizer/optimizer.py Float16OptimizerWithFloat16Params: bf16 weights with fp32 main "
            "params (with --bf16; core/model_parallel_config.py bf16 defaults to False, fp32 training)"),
    Default(name="grad_dtype", value="fp32",
            source=_MG + "training/arguments.py validate_args: with --bf16, accumulate_allreduce_grads_in_fp32 = "
            "True (--main-grads-dtype fp32): fp32 main_grad buffers"),
    Default(name="optimizer", value="adamw",
            source=_MG + "training/arguments.py --optimizer default 'adam' (decoupled weight decay: TE/apex FusedAdam "
            "in AdamW mode)"),
    Default(name="optimizer_impl", value="fused",
            source=_MG + "core/optimizer/__init__.py: transformer_engine FusedAdam, else apex FusedAdam"),
    Default(name="recompute", value="none",
            source=_MG + "core/transformer/transformer_config.py recompute_granularity = None"),
    Default(name="zero", value=0,
            source=_MG + "core/distributed/distributed_data_parallel_config.py use_distributed_optimizer = False"),
    Default(name="loss", value="full",
            source=_MG + "core/tensor_parallel/cross_entropy.py VocabParallelCrossEntropy: logits .float() (fp32)"),
)  # fmt: skip


_LG = "lit-gpt 8641822 "
_LG_LORA = _LG + "finetune/lora.py"
_LG_FSDP = (
    _LG_LORA + " setup: devices > 1 -> FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block}) "
    "(Lightning's FSDPStrategy default sharding_strategy FULL_SHARD)"
)
_LITGPT = (
    Default(name="precision", value="bf16",
            source=_LG + "tutorials/resource-tables.md: 'All experiments were run using --precision bf16-true' (bf16 "
            "weights, no fp32 master; the script's own default, utils.py get_default_supported_precision(training="
            "True), is bf16-mixed: autocast over fp32 weights, vramwise's amp)"),
    Default(name="optimizer", value="adamw", source=_LG_LORA + " main: torch.optim.AdamW(trainable_params, ...)",
            when=lambda v: not _qlora(v)),
    Default(name="optimizer", value="paged-adamw",
            source=_LG_LORA + " main: bnb.optim.PagedAdamW under BitsandbytesPrecision (--quantize bnb.*)",
            when=_qlora, when_text="with peft=qlora"),
    Default(name="optimizer_impl", value="foreach", source="(LitGPT builds torch.optim.AdamW) " + _TORCH_FOREACH),
    Default(name="attention", value="sdpa",
            source=_LG + "lit_gpt/model.py CausalSelfAttention.scaled_dot_product_attention: "
            "F.scaled_dot_product_attention(is_causal=True), or flash_attn_func when flash-attn 2 is installed"),
    Default(name="loss", value="compute-dtype",
            source=_LG_LORA + " train: model(input_ids, lm_head_chunk_size=128) and utils.py chunked_cross_entropy: "
            "F.cross_entropy per chunk on the logits, which Fabric's convert_output returned in fp32 (Lightning 2.1.0 "
            "plugins/precision/half.py; estimate/train/litgpt_code.py litgpt_loss_rules)"),
    Default(name="loss_chunk", value=128, source=_LG_LORA + " train: lm_head_chunk_size=128; chunked_cross_entropy "
            "chunk_size=128"),
    Default(name="lora_r", value=8, source=_LG_LORA + ": lora_r = 8", when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="lora_dropout", value=0.05, source=_LG_LORA + ": lora_dropout = 0.05", when=_adapters,
            when_text="with LoRA/QLoRA"),
    Default(name="lora_targets", value=("q_proj", "v_proj"),
            source=_LG_LORA + ": lora_query = True, lora_value = True (key, projection, mlp, head False): one "
            "LoRAQKVLinear on the fused qkv", when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="adapter_dtype", value="bf16",
            source=_LG + "lit_gpt/lora.py: lora_A/lora_B are nn.Parameter(torch.zeros(...)) built under "
            "fabric.init_module(), in the precision's dtype", when=_adapters, when_text="with LoRA/QLoRA"),
    Default(name="double_quant", value=False,
            source=_LG_LORA + " setup(quantize='bnb.nf4'): Lightning BitsandbytesPrecision('nf4') (bnb.nf4-dq is "
            "double_quant=true)", when=_qlora, when_text="with peft=qlora"),
    Default(name="fsdp", value="full", source=_LG_FSDP, when=lambda v: _multi(v) and _unsharded(v),
            when_text="on more than one GPU"),
    Default(name="recompute", value="full", source=_LG_FSDP, when=_multi, when_text="on more than one GPU"),
    Default(name="recompute", value="none", source=_LG_LORA + " setup: strategy 'auto' on one device, no "
            "activation checkpointing"),
)  # fmt: skip


# --- the rules: combinations a framework does not run ---------------------------------------------------------


def _gt1(name: str) -> Callable[[Values], bool]:
    return lambda v: int(_get(v, name, 1)) > 1


def _peft_not_in(*methods: str) -> Callable[[Values], bool]:
    """The peft method given is not one the framework builds (it would otherwise fail on a preset default that
    only its own methods take, such as torchtune's bf16 adapters or LLaMA-Factory's all-linear targets)."""
    return lambda v: str(_get(v, "peft", "none")) not in ("none", *methods)


_RULES: dict[Framework, tuple[Rule, ...]] = {
    Framework.DEEPSPEED: (
        Rule(field="fsdp", allowed="none (use --zero 1-3)", broken=lambda v: str(_get(v, "fsdp", "none")) != "none",
             rule="DeepSpeed shards with its ZeRO stages, not FSDP (runtime/zero/config.py stage 0-3)"),
        Rule(field="zero", allowed="0 or 1 with pp > 1",
             broken=lambda v: int(_get(v, "zero", 0)) >= 2 and int(_get(v, "pp", 1)) > 1,
             rule="ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism (runtime/pipe/engine.py "
                  "PipelineEngine.__init__)"),
    ),
    Framework.LLAMA_FACTORY: (
        Rule(field="peft", allowed="none, lora, qlora, lora-8bit or dora",
             broken=_peft_not_in("lora", "qlora", "lora-8bit", "dora"),
             rule="LLaMA-Factory's finetuning_type is lora (use_dora, quantization_bit 4/8), freeze or full "
                  "(src/llamafactory/hparams/finetuning_args.py); it has no IA3 or prompt learning"),
        Rule(field="precision", allowed="bf16-mixed or amp for full fine-tuning under zero=3",
             broken=lambda v: _full(v) and str(_get(v, "precision", "")) == "bf16" and int(_get(v, "zero", 0)) == 3,
             rule="`pure_bf16` is incompatible with DeepSpeed ZeRO-3 (src/llamafactory/hparams/parser.py "
                  "get_train_args)"),
    ),
    Framework.TORCHTUNE: (
        Rule(field="peft", allowed="none, lora, qlora or dora", broken=_peft_not_in("lora", "qlora", "dora"),
             rule="torchtune's adapters are modules/peft/lora.py LoRALinear (an NF4 base for QLoRA) and dora.py "
                  "DoRALinear; it has no 8-bit base, IA3 or prompt learning"),
        Rule(field="zero", allowed="0 (torchtune shards with --fsdp full)",
             broken=lambda v: int(_get(v, "zero", 0)) != 0,
             rule="torchtune shards with FSDP2 fully_shard (training.shard_model), it has no DeepSpeed ZeRO"),
        Rule(field="pp", allowed="1", broken=_gt1("pp"),
             rule="torchtune's recipes have no pipeline parallelism"),
        Rule(field="grad_accum", allowed="1 with optimizer_in_backward",
             broken=lambda v: bool(_get(v, "optimizer_in_backward", False)) and int(_get(v, "grad_accum", 1)) > 1,
             rule="torchtune's optimizer_in_bwd requires gradient_accumulation_steps=1 "
                  "(recipes/full_finetune_single_device.py)"),
        Rule(field="activation_offload", allowed="false without recompute",
             broken=lambda v: bool(_get(v, "activation_offload", False))
             and str(_get(v, "recompute", "none")) == "none",
             rule="torchtune's enable_activation_offloading requires enable_activation_checkpointing "
                  "(recipes/full_finetune_single_device.py raises RuntimeError)"),
    ),
    Framework.TORCHTITAN: (
        Rule(field="peft", allowed="none or lora (components/lora.py LoRAConverter)",
             broken=lambda v: str(_get(v, "peft", "none")) not in ("none", "lora"),
             rule="torchtitan's only adapter is its LoRA (components/lora.py LoRAConverter): no 4-bit or 8-bit base, "
                  "no DoRA, IA3 or prompt learning"),
        Rule(field="zero", allowed="0 (torchtitan shards with --fsdp)", broken=lambda v: int(_get(v, "zero", 0)) != 0,
             rule="torchtitan shards with FSDP2 over the dp_shard x cp mesh, it has no DeepSpeed ZeRO"),
    ),
    Framework.UNSLOTH: (
        Rule(field="peft", allowed="none, lora, qlora, lora-8bit or dora",
             broken=_peft_not_in("lora", "qlora", "lora-8bit", "dora"),
             rule="unsloth's FastLanguageModel.get_peft_model builds a peft LoraConfig (LoRA on a 16-, 8- or 4-bit "
                  "base); it has no IA3 or prompt learning"),
        Rule(field="fsdp", allowed="none", broken=lambda v: str(_get(v, "fsdp", "none")) != "none",
             rule="unsloth trains each GPU with whole weights: one GPU or plain DDP (issue #2425), no FSDP"),
        Rule(field="zero", allowed="0, 1 or 2", broken=lambda v: int(_get(v, "zero", 0)) == 3,
             rule="unsloth is incompatible with DeepSpeed ZeRO-3 (LLaMA-Factory hparams/parser.py refuses it)"),
        *(Rule(field=name, allowed="1", broken=_gt1(name),
               rule=f"unsloth has no {what} parallelism (data parallel only: DDP, issue #2425)")
          for name, what in (("tp", "tensor"), ("pp", "pipeline"), ("cp", "context"), ("ep", "expert"))),
    ),
    Framework.MEGATRON: (
        Rule(field="peft", allowed="none", broken=_adapters,
             rule="Megatron-LM trains whole models; it has no LoRA/QLoRA (megatron/training has no adapter option)"),
        Rule(field="zero", allowed="0, or 1 for --use-distributed-optimizer",
             broken=lambda v: int(_get(v, "zero", 0)) > 1,
             rule="Megatron's distributed optimizer shards the optimizer states like ZeRO-1 "
                  "(core/optimizer/distrib_optimizer.py); ZeRO-2/3 are not Megatron's (use --fsdp full for FSDP2)"),
        Rule(field="fsdp", allowed="none with pp > 1",
             broken=lambda v: str(_get(v, "fsdp", "none")) != "none" and int(_get(v, "pp", 1)) > 1,
             rule="--use-torch-fsdp2 is not supported with pipeline parallelism (training/arguments.py)"),
    ),
    Framework.LITGPT: (
        Rule(field="peft", allowed="none, lora or qlora", broken=_peft_not_in("lora", "qlora"),
             rule="lit-gpt 8641822 finetune/ has full.py, lora.py (--quantize bnb.nf4 for QLoRA), adapter.py and "
                  "adapter_v2.py (LLaMA-Adapter, not peft's prefix tuning); no DoRA, IA3 or prompt learning"),
        Rule(field="zero", allowed="0 (LitGPT shards with --fsdp full)", broken=lambda v: int(_get(v, "zero", 0)) != 0,
             rule="lit-gpt 8641822 finetune/lora.py shards with Lightning's FSDPStrategy; it has no DeepSpeed ZeRO"),
        Rule(field="dp", allowed="1 with peft=qlora", broken=lambda v: _qlora(v) and _multi(v),
             rule="lit-gpt 8641822 finetune/lora.py setup: 'Quantization is currently not supported for multi-GPU "
                  "training' (NotImplementedError)"),
        Rule(field="attention", allowed="sdpa or flash", broken=lambda v: str(_get(v, "attention", "sdpa")) == "eager",
             rule="lit-gpt 8641822 lit_gpt/model.py calls F.scaled_dot_product_attention (or flash_attn_func)"),
        *(Rule(field=name, allowed="1", broken=_gt1(name),
               rule=f"lit-gpt 8641822 finetune/lora.py has no {what} parallelism (Fabric FSDP only)")
          for name, what in (("tp", "tensor"), ("pp", "pipeline"), ("cp", "context"), ("ep", "expert"))),
    ),
}  # fmt: skip

# --keep-logits (a loop that keeps the model's outputs to the next forward): the loops below free them before
# backward, so the combination is one they do not run (read at the commits VERSIONS names)
_FREES_LOGITS = {
    Framework.HF_TRAINER: "transformers' Trainer.compute_loss returns the loss alone: the outputs are freed before "
    "backward (transformers 5.24.0 trainer.py Trainer.compute_loss, training_step)",
    Framework.AXOLOTL: "axolotl's trainer is transformers' Trainer, whose compute_loss returns the loss alone "
    "(src/axolotl/core/trainers/base.py AxolotlTrainer.compute_loss; transformers 5.24.0 trainer.py)",
    Framework.LLAMA_FACTORY: "LLaMA-Factory's trainers subclass transformers' Trainer, whose compute_loss returns the "
    "loss alone (transformers 5.24.0 trainer.py Trainer.compute_loss)",
    Framework.TORCHTUNE: "torchtune's recipes free the logits before backward (recipes/full_finetune_single_device.py "
    "_loss_step: 'free outputs otherwise it peaks backward memory', del outputs)",
    Framework.TORCHTITAN: "torchtitan frees the logits before backward (torchtitan/trainer.py forward_backward_step: "
    "del pred before loss.backward())",
    Framework.MEGATRON: "Megatron's model returns the loss, not the logits, when given labels (megatron/core/models/"
    "gpt/gpt_model.py GPTModel.forward: compute_language_model_loss)",
}
for _framework, _why in _FREES_LOGITS.items():
    _RULES[_framework] = (
        *_RULES.get(_framework, ()),
        Rule(field="keep_logits", allowed="false (the framework's loop frees the outputs before backward)",
             broken=lambda v: bool(_get(v, "keep_logits", False)), rule=_why),
    )  # fmt: skip

# How the checkpoint reaches FSDP's shards when --loading is auto (estimate/train/loading.py asks): a row would fix
# the path for one layout, and fit's searches change the layout. ZeRO-3's zero.Init is auto's own choice already
# (transformers modeling_utils.py PreTrainedModel.get_init_context wraps from_pretrained in deepspeed.zero.Init).
_FSDP_LOADING = {
    Framework.TORCHTUNE: (
        "torchtune recipes/lora_finetune_distributed.py _setup_model: the model is built on torch.device('meta'), "
        "sharded, then training.load_from_full_model_state_dict fills each shard"
    ),
    Framework.TORCHTITAN: (
        "torchtitan trainer.py: the model is built on torch.device('meta'), sharded, then initialised or loaded "
        "from a DCP checkpoint per shard"
    ),
}


# Lightning's FSDP strategy materialises and shards unit by unit, then loads unit by unit: fsdp-sync (W/n + 2u)
_FSDP_SYNC_LOADING = {
    Framework.LITGPT: (
        "lit-gpt 8641822 finetune/lora.py main: GPT built under fabric.init_module(empty_init=True) (the meta device), "
        "fabric.setup_module materialises and shards each Block; load_checkpoint -> Lightning 71aed751 "
        "fabric/strategies/fsdp.py _load_raw_module_state_from_path: _lazy_load on the host, load_state_dict in the "
        "full-state-dict context, one unit unsharded at a time"
    ),
}


def fsdp_loading(framework: str) -> str:
    """The loading path under FSDP when ``--loading`` is auto: fsdp-meta for the frameworks that build on the
    meta device and fill the shards (torchtune, torchtitan), fsdp-sync for Lightning's unit-by-unit loading
    (LitGPT), else transformers' fsdp-full."""
    if framework in _FSDP_SYNC_LOADING:
        return "fsdp-sync"
    return "fsdp-meta" if framework in _FSDP_LOADING else "fsdp-full"


_NOTES: dict[Framework, tuple[str, ...]] = {
    Framework.TORCHTUNE: (
        "torchtune: 0.7.0's loss is LinearCrossEntropyLoss (--loss torchtune-linear); releases up to 0.6 used "
        "CEWithChunkedOutputLoss (--loss torchtune-chunked)",
    ),
    Framework.TORCHTITAN: (
        "torchtitan: under FSDP2 the parameters are fp32 shards and bf16 exists only while a layer is gathered: "
        "bf16-mixed counts the fp32 shard as the parameter and the master copy at once (estimate/train/states.py "
        "fsdp2_fp32_params)",
        "torchtitan: the loss chunk is an eighth of the micro-batch given; fit --max and plot keep that chunk while "
        "they vary the batch or the sequence",
    ),
    Framework.LITGPT: (
        "litgpt: the step runs LitGPT's own model code (estimate/train/litgpt_code.py: fused qkv, RMSNorm without "
        "fp32 upcast, LoRA on the fused qkv, bitsandbytes 0.41.1's 4-bit matmul keeping its input), not "
        "transformers'; a dense family lit-gpt 8641822 has no config for (lit_gpt/config.py) is estimated as its GPT "
        "would run it",
        "litgpt: finetune/lora.py's micro_batch_size 4 and gradient_accumulation_iters 32 are not filled in (give "
        "--batch and --grad-accum); the first batch holds the longest training sample (get_batch longest_seq_ix): "
        "give it as --seq",
        "litgpt: under FSDP every Block's gradient is its whole flat parameter, frozen weights included (Lightning's "
        "use_orig_params=True), kept whole on every GPU while --grad-accum > 1 accumulates under no_sync "
        "(estimate/train/lightning_fsdp.py); --loading auto is fsdp-sync ["
        + _FSDP_SYNC_LOADING[Framework.LITGPT]
        + "]",
    ),
}

def _notes(fw: Framework) -> tuple[str, ...]:
    loading = (f"{fw}: under FSDP, --loading auto is fsdp-meta [{_FSDP_LOADING[fw]}]",) if fw in _FSDP_LOADING else ()
    return (*_NOTES.get(fw, ()), *loading)


PRESETS: dict[Framework, Preset] = {
    fw: Preset(framework=fw, version=VERSIONS[fw], defaults=table, rules=_RULES.get(fw, ()), notes=_notes(fw))
    for fw, table in (
        (Framework.HF_TRAINER, _HF_TRAINER),
        (Framework.ACCELERATE, _ACCELERATE),
        (Framework.DEEPSPEED, _DEEPSPEED),
        (Framework.TORCHTUNE, _TORCHTUNE),
        (Framework.TORCHTITAN, _TORCHTITAN),
        (Framework.AXOLOTL, _AXOLOTL),
        (Framework.UNSLOTH, _UNSLOTH),
        (Framework.LLAMA_FACTORY, _LLAMA_FACTORY),
        (Framework.MEGATRON, _MEGATRON),
        (Framework.LITGPT, _LITGPT),
    )
}


# --- applying a preset ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Applied:
    flat: dict[str, Any]  # the flat options: the user's, plus the preset's defaults where the user gave none
    notes: tuple[str, ...]  # one per preset default that changed the setup, or that cannot be modelled yet


def framework_of(flat: Values) -> Framework:
    """The framework named in the flat options (none when absent), or one line listing the allowed names."""
    value = flat.get("framework")
    if value is None:
        return Framework.NONE
    try:
        return Framework(value)
    except ValueError:
        from vramwise.workload.checks import show

        allowed = ", ".join(Framework)
        raise InvalidWorkloadError(
            f"framework must be one of {allowed}, got {show(value)}", field="framework", allowed=allowed
        ) from None


def preset(flat: Values) -> Applied:
    """The flat options with the named framework's defaults under them (the user's always win), and the notes."""
    framework = framework_of(flat)
    if framework is Framework.NONE:
        return Applied(flat=dict(flat), notes=())
    table = PRESETS[framework]
    defaults = _defaults()
    given = {k: v for k, v in flat.items() if v is not None}
    out = dict(given)
    notes: list[str] = []
    for row in table.defaults:
        current = {**defaults, **out}
        if row.name in given or row.name in _set_by_preset(out, given) or not row.applies(current):
            continue
        value = row.value_at(current)
        why = f" ({row.when_text})" if row.when_text else ""
        if not _modelled(row.name, value):
            if value is False:  # an option vramwise does not have yet is off: the framework's "off" changes nothing
                continue
            notes.append(
                f"--framework {framework}: {row.name}={_shown(value)}{why} is not modelled yet, the estimate goes "
                f"without it [{row.source}]"
            )
            continue
        out[row.name] = value
        if value != defaults.get(row.name):
            notes.append(f"--framework {framework}: {row.name}={_shown(value)}{why} [{row.source}]")
    notes += _yield_to_given(framework, out, given)
    head = f"--framework {framework}: defaults of {table.version}; options given on the command line win"
    return Applied(flat=out, notes=(head, *notes, *table.notes))


def _yield_to_given(framework: Framework, out: dict[str, Any], given: Values) -> list[str]:
    """A preset default that the options given rule out (a refusal naming it) is dropped, not the user's option:
    the framework would not combine them either. ``out`` loses those defaults; the notes say which and why."""
    from vramwise.workload.train import TrainSetup

    notes: list[str] = []
    for _ in range(len(out)):
        try:
            TrainSetup.from_flat(**out)
        except VramwiseError as err:
            if err.field is None or err.field in given or err.field not in out:
                return notes  # the user's own combination: refused when the setup is built
            value = out.pop(err.field)
            shown = f"{err.field}={_shown(value)}"
            notes.append(f"--framework {framework}: {shown} not applied with the options given ({err})")
            continue
        return notes
    return notes


def _set_by_preset(out: Values, given: Values) -> set[str]:
    """Names an earlier row of the same table already set (the first applicable row of a name wins)."""
    return {k for k in out if k not in given}


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(x) for x in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@functools.cache
def _defaults() -> dict[str, Any]:
    from vramwise.workload.train import TrainSetup

    return TrainSetup().to_flat()


@functools.cache
def _modelled(name: str, value: Any) -> bool:
    """Whether TrainSetup has this flat option and, for a choice, this value among its choices (an option or
    value a later version adds makes its row count from then on). Rules between options are not asked here: a
    default the options given rule out yields when the setup is built (``_yield_to_given``)."""
    from vramwise.workload.train import FLAT_NAMES, TrainSetup

    where = FLAT_NAMES.names.get(name)
    if where is None:
        return False
    group, attr = where
    owner = FLAT_NAMES.groups[group] if group else TrainSetup
    hint = typing.get_type_hints(owner).get(attr)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return value in {member.value for member in hint}
    return True


def refusal(framework: Framework, values: Values) -> Rule | None:
    """The first of the framework's rules these flat values break (defaults fill the rest), or None."""
    current = {**_defaults(), **{k: v for k, v in values.items() if v is not None}}
    return next((rule for rule in _RULES.get(framework, ()) if rule.broken(current)), None)


def check_rules(setup: TrainSetup) -> None:
    """One line naming the framework's rule for the first combination it does not run (InvalidWorkloadError)."""
    framework = Framework(setup.framework)
    rules = _RULES.get(framework, ())
    if not rules:
        return
    values = setup.to_flat()
    for rule in rules:
        if rule.broken(values):
            raise InvalidWorkloadError(
                f"--framework {framework} does not run {rule.field}={_shown(values.get(rule.field))}: {rule.rule}; "
                f"allowed: {rule.allowed}",
                field=rule.field,
                allowed=rule.allowed,
            )

"""The one builder of each setup from option values, and the rules about which options a question can use.

Option values arrive as a mapping from option name (the CLI's ``--kv-dtype`` is ``kv_dtype``) to value; an
absent or None value means "not given", so the setup dataclass's own default applies: defaults live in
``workload.py`` only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from vramwise.errors import InapplicableOptionError, InvalidWorkloadError, VramwiseError
from vramwise.workload import InferSetup
from vramwise.workload.checks import show

if TYPE_CHECKING:
    from vramwise.workload import TrainSetup

# option name -> InferSetup field
INFER_FIELDS = {
    "batch": "batch",
    "context": "context",
    "new_tokens": "new_tokens",
    "format": "weight_format",
    "kv_dtype": "kv_dtype",
    "attention": "attention",
    "tp": "tp",
    "kv_block": "kv_block",
    "prefill_chunk": "prefill_chunk",
    "all_logits": "all_logits",
    "cuda_context": "cuda_context_mib",
    "allocator_fraction": "allocator_fraction",
    "gpu_util": "gpu_utilization",
    "mode": "mode",
    "images": "images",
    "image_size": "image_size",
    "engine": "engine",
    "max_model_len": "max_model_len",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "enforce_eager": "enforce_eager",
    "kv_cache_memory": "kv_cache_memory_bytes",
    "pp": "pp",
    "mem_fraction_static": "mem_fraction_static",
    "chunked_prefill_size": "chunked_prefill_size",
    "cuda_graph_max_bs": "cuda_graph_max_bs",
    "max_running_requests": "max_running_requests",
    "max_total_tokens": "max_total_tokens",
    "context_length": "context_length",
    "page_size": "page_size",
    "disable_cuda_graph": "disable_cuda_graph",
    "max_prefill_tokens": "max_prefill_tokens",
    "sglang_version": "sglang_version",
    "device_map": "device_map",
    "max_memory": "max_memory",
    "ctx_size": "ctx_size",
    "batch_size": "batch_size",
    "ubatch_size": "ubatch_size",
    "n_gpu_layers": "n_gpu_layers",
    "cache_type_k": "cache_type_k",
    "cache_type_v": "cache_type_v",
    "flash_attn": "flash_attn",
    "parallel": "parallel",
    "tensor_split": "tensor_split",
    "split_mode": "split_mode",
    "no_mmap": "no_mmap",
    "no_kv_offload": "no_kv_offload",
    "kv_unified": "kv_unified",
    "swa_full": "swa_full",
    "embeddings": "embeddings",
    "ollama": "ollama",
    "vllm_version": "vllm_version",
    "mxfp4_backend": "mxfp4_backend",
    "cuda_version": "cuda_version",
    "compute_capability": "compute_capability",  # from --gpu's catalog entry (app/gpu_rules.py), not a flag
    "vllm_sampler": "vllm_sampler",
    "interconnect": "interconnect",
}
# option name -> TrainSetup field
TRAIN_FIELDS = {
    "batch": "batch",
    "seq": "seq",
    "grad_accum": "grad_accum",
    "precision": "precision",
    "grad_dtype": "grad_dtype",
    "optimizer": "optimizer",
    "optimizer_impl": "optimizer_impl",
    "peft": "peft",
    "lora_r": "lora_r",
    "lora_targets": "lora_targets",
    "lora_dropout": "lora_dropout",
    "freeze_layers": "freeze_layers",
    "recompute": "recompute",
    "attention": "attention",
    "loss": "loss",
    "loss_chunk": "loss_chunk",
    "dp": "dp",
    "zero": "zero",
    "fsdp": "fsdp",
    "fsdp_shard": "fsdp_shard",
    "offload": "offload",
    "tp": "tp",
    "sp": "sp",
    "pp": "pp",
    "interleave": "interleave",
    "cp": "cp",
    "ep": "ep",
    "cuda_context": "cuda_context_mib",
    "allocator_fraction": "allocator_fraction",
    "mode": "mode",
    "seed": "seed",
    "lora_fraction": "lora_fraction",
    "adapter_dtype": "adapter_dtype",
    "double_quant": "double_quant",
    "recompute_every": "recompute_every",
    "mlp_impl": "mlp_impl",
    "norm_impl": "norm_impl",
    "activation_offload": "activation_offload",
    "compile": "compile",
    "optimizer_in_backward": "optimizer_in_backward",
    "float8": "float8",
    "zero_grad": "zero_grad",
    "framework": "framework",
    "cuda_version": "cuda_version",
    "compute_capability": "compute_capability",  # from --gpu's catalog entry (app/gpu_rules.py), not a flag
    "loading": "loading",
    "interconnect": "interconnect",
    "max_live_params": "max_live_params",
    "param_persistence_threshold": "param_persistence_threshold",
    "max_reuse_distance": "max_reuse_distance",
    "nccl_env": "nccl_env",
    "overlap_comm": "overlap_comm",
    "reduce_bucket": "reduce_bucket",  # issue 15: DeepSpeed's bucket sizes, as --from reads them from a config
    "prefetch_bucket": "prefetch_bucket",
    "expandable_segments": "expandable_segments",
    "max_split_size_mb": "max_split_size_mb",
    "allocator_replay": "allocator_replay",
    "num_virtual_tokens": "num_virtual_tokens",
    "decoder_seq": "decoder_seq",
    "fsdp_outer_units": "fsdp_outer_units",
    "fsdp_over_cp": "fsdp_over_cp",
    "replay_min_seq": "replay_min_seq",  # --range's bound (app/ranges.py), not a flag
    "keep_logits": "keep_logits",
    "torch_version": "torch_version",
    "packed": "packed",
}
# `--seq` is the inference context's other spelling in fit, plot and verify, so it is not training-only
INFERENCE_ONLY = tuple(k for k in INFER_FIELDS if k not in TRAIN_FIELDS)
TRAINING_ONLY = tuple(k for k in TRAIN_FIELDS if k not in INFER_FIELDS and k != "seq")


def flag(name: str) -> str:
    """The command-line spelling of an option name: ``kv_dtype`` -> ``--kv-dtype``."""
    return "--" + name.replace("_", "-")


def given(values: Mapping[str, Any], name: str) -> bool:
    return values.get(name) is not None


def refuse(values: Mapping[str, Any], names: Iterable[str], why: str) -> None:
    """One line for the first option given that cannot apply: ``--kv-dtype is an inference option: ...``."""
    for name in names:
        if given(values, name):
            raise InapplicableOptionError(f"{flag(name)} {why}", field=name)


@functools.cache
def _defaults(kind: str) -> dict[str, Any]:
    """Every flat field's default of one setup; the training setup is imported only when a default is asked."""
    if kind == "infer":
        return InferSetup().to_flat()
    from vramwise.workload import TrainSetup

    return TrainSetup().to_flat()


def infer_default(name: str) -> Any:
    """The default of an inference option: InferSetup's (the help text shows it, it is written nowhere else)."""
    return _defaults("infer")[INFER_FIELDS[name]]


def train_default(name: str) -> Any:
    """The default of a training option: TrainSetup's, by its flat (schema v1) name."""
    return _defaults("train")[TRAIN_FIELDS[name]]


def _kwargs(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {field: values[name] for name, field in names.items() if given(values, name)}


def infer_setup(values: Mapping[str, Any], model: object = None) -> InferSetup:
    """The InferSetup of these option values; ``seq`` is accepted as the context's other spelling. With the
    ``model``, a context the user did not give fits its learned position table (``table_length``)."""
    if given(values, "seq"):
        if given(values, "context"):
            raise InapplicableOptionError("give the context once: --context or its other spelling --seq", field="seq")
        values = {**values, "context": values["seq"]}
    kw = _kwargs(values, INFER_FIELDS)
    table = table_length(model)
    if table is not None and "context" not in kw:
        room = table - kw.get("new_tokens", 0)  # the prompt and the generated tokens share the table
        kw["context"] = min(infer_default("context"), room) if room > 0 else infer_default("context")
    setup = InferSetup.from_flat(**kw)
    if setup.image_size is not None and not setup.images:
        raise InapplicableOptionError("--image-size applies with --images (the size of each image)", field="image_size")
    return setup


def table_length(model: object) -> int | None:
    """Rows of the model's learned position table, when it has one (GPT-2 1,024, OPT 2,048): the default context
    or sequence (2,048) would index past it, so a length the user did not give is that many at most. Rotary
    models have no table (a longer context needs rope scaling and gets a note, not a smaller default)."""
    from vramwise.spec.model import ModelSpec

    if not isinstance(model, ModelSpec):
        return None
    from vramwise.estimate.positions import position_limit
    from vramwise.spec.traits import Positions

    return position_limit(model) if model.traits.positions is Positions.LEARNED else None


def check_format(model: object, setup: InferSetup) -> None:
    """Refuse a weight format that quantizes no tensor this model has: ``-f mxfp4`` on a dense model would print
    bf16's numbers under the label mxfp4 (U13). A model known only by its size has no tensors to ask about."""
    from vramwise.spec.model import ModelSpec

    if setup.weight_format is None or not isinstance(model, ModelSpec):
        return
    from vramwise.formats import FORMATS, get_format
    from vramwise.spec.params import parameter_groups

    fmt, bf16 = get_format(setup.weight_format), FORMATS["bf16"]
    if fmt.name in ("fp32", "fp16", "bf16"):
        return  # a plain dtype quantizes nothing by design
    groups = parameter_groups(model)
    if all(fmt.tensor_bytes(g, model, 2).bytes == bf16.tensor_bytes(g, model, 2).bytes for g in groups):
        raise InvalidWorkloadError(
            f"format {fmt.name} quantizes no tensor of {model.name} ({fmt.summary}): its numbers would be bf16's; "
            "choose another (see `vramwise formats`)",
            field="format",
        )


# The peft methods added with issue 14 and the options each cannot take (LoRA's and QLoRA's are unchanged).
_PEFT_INAPPLICABLE = {
    "dora": ("num_virtual_tokens",),
    "ia3": ("lora_r", "lora_dropout", "num_virtual_tokens"),
    "prompt-tuning": ("lora_r", "lora_dropout", "lora_targets"),
    "prefix-tuning": ("lora_r", "lora_dropout", "lora_targets"),
}


def _refuse_peft_options(values: Mapping[str, Any]) -> None:
    """One line for an option the chosen peft method has no use for (``--lora-r`` with prompt tuning...)."""
    method = values.get("peft")
    if method in _PEFT_INAPPLICABLE:
        refuse(values, _PEFT_INAPPLICABLE[method], f"does not apply to --peft {method}")
    elif given(values, "num_virtual_tokens"):
        refuse(values, ("num_virtual_tokens",), "applies to --peft prompt-tuning or prefix-tuning only")


def train_setup(values: Mapping[str, Any], model: object = None) -> TrainSetup:
    """The TrainSetup of these option values; ``lora_targets`` may be a comma-separated string. With the
    ``model``, a sequence the user did not give fits its learned position table. With ``framework``, its
    defaults fill the options not given (workload/frameworks.py)."""
    return train_setup_noted(values, model)[0]


def train_setup_noted(values: Mapping[str, Any], model: object = None) -> tuple[TrainSetup, tuple[str, ...]]:
    """``train_setup`` and the notes of the framework preset: one per default it set (none without one)."""
    targets = values.get("lora_targets")
    if isinstance(targets, str):
        names = tuple(x.strip() for x in targets.split(",") if x.strip())
        if not names:  # `--lora-targets ,` names nothing: refused, not peft's default in silence (K3)
            raise InvalidWorkloadError(
                f"lora_targets {show(targets)} names no module; give names such as q_proj,v_proj or all-linear",
                field="lora_targets",
            )
        values = {**values, "lora_targets": names}
    from vramwise.workload import TrainSetup  # not on the inference path (a fresh `vramwise infer` stays light)
    from vramwise.workload.frameworks import preset

    _refuse_peft_options(values)
    kw = _kwargs(values, TRAIN_FIELDS)
    table = table_length(model)
    if table is not None and "seq" not in kw:
        kw["seq"] = min(train_default("seq"), table)
    applied = preset(kw)
    if "lora_targets" in applied.flat and "lora_targets" not in kw:
        _check_preset_targets(applied.flat, model)
    try:
        setup = TrainSetup.from_flat(**applied.flat)
    except InvalidWorkloadError as err:  # a rule against an option the preset set: say the preset set it
        raise named_preset(err, values) from None
    if "recompute" in applied.flat and "recompute" not in kw:
        _check_preset_recompute(setup, model)
    if "adapter_dtype" in applied.flat and "adapter_dtype" not in kw:
        _check_preset_adapter_dtype(setup)
    return setup, applied.notes


def named_preset(err: VramwiseError, values: Mapping[str, Any]) -> VramwiseError:
    """A refusal of an option a framework preset set (or that names one), worded so it does not read as an option
    the user gave: "--framework torchtune sets --loss torchtune-chunked; loss: ...". The field stays the same."""
    from vramwise.workload.frameworks import preset

    kw = _kwargs(values, TRAIN_FIELDS)
    words = str(err)
    if not isinstance(err, InvalidWorkloadError) or str(kw.get("framework") or "none") == "none" \
            or words.startswith("--framework"):  # already the framework's own refusal
        return err
    given = {k for k, v in kw.items() if v is not None}
    flat = preset(kw).flat
    flags = {v: k for k, v in TRAIN_FIELDS.items()}
    # the refused field, or another option named in the words by its field name (one with "_": not a prose word)
    named = [k for k in flat if k not in given and flat[k] is not None
             and (k == err.field or ("_" in k and re.search(rf"(?<!\w){k}(?!\w)", words)))]
    if not named:
        return err
    sets = ", ".join(f"--{flags.get(k, k).replace('_', '-')}{_word(flat[k])}" for k in named)
    return InvalidWorkloadError(f"--framework {kw['framework']} sets {sets}; {words}", field=err.field,
                                allowed=err.allowed)


def _word(value: object) -> str:
    """The value after its flag: nothing for a switch that is on."""
    if value is True:
        return ""
    return " " + (",".join(map(str, value)) if isinstance(value, tuple) else str(value).replace("False", "false"))


def _check_preset_adapter_dtype(setup: TrainSetup) -> None:
    """A framework's bf16 adapters (torchtune's, LitGPT's) are modelled for LoRA and QLoRA only: on DoRA, say that
    the framework set them, so the refusal does not read as an option the user gave."""
    from vramwise.estimate.train.peft_methods import check_setup

    try:
        check_setup(setup)
    except InvalidWorkloadError as err:
        if err.field != "adapter_dtype":
            raise
        raise InvalidWorkloadError(
            f"--framework {setup.framework} builds its adapters in bf16 (adapter_dtype=bf16), modelled for LoRA and "
            f"QLoRA only, not {setup.peft.method}; give --adapter-dtype fp32 to count peft's fp32 adapters "
            f"(allowed: {err.allowed})",
            field="adapter_dtype",
            allowed=err.allowed,
        ) from None


def _check_preset_recompute(setup: TrainSetup, model: object) -> None:
    """A framework's own recompute policy (torchtitan's per-op SAC) on a model or method the estimate does not
    model it with: say that the framework set it, so the refusal does not read as an option the user gave."""
    from vramwise.spec.model import ModelSpec

    if not isinstance(model, ModelSpec) or setup.recompute != "op-sac":
        return
    from vramwise.estimate.train.knobs import check_recompute

    try:
        check_recompute(model, setup)
    except InvalidWorkloadError as err:
        raise InvalidWorkloadError(
            f"--framework {setup.framework} sets recompute=op-sac (its default policy), and {err}; give --recompute "
            f"(allowed: {err.allowed})",
            field="recompute",
            allowed=err.allowed,
        ) from None


def _check_preset_targets(flat: Mapping[str, Any], model: object) -> None:
    """A framework's LoRA modules (torchtune's, unsloth's) are its own model families' names: on a model without
    them, say whose names they are instead of estimating without adapters."""
    from vramwise.spec.model import ModelSpec

    if not isinstance(model, ModelSpec) or str(flat.get("peft") or "none") == "none":
        return
    if str(flat.get("framework")) == "litgpt":  # LitGPT names the parts of a fused qkv (LoRAQKVLinear)
        from vramwise.estimate.train.litgpt_code import litgpt_lora_modules

        litgpt_lora_modules(model, tuple(flat["lora_targets"]))  # its own one-line refusal
        return
    from vramwise.estimate.train.lora import linear_modules

    names = sorted({m.name for m in linear_modules(model)})
    targets = tuple(flat["lora_targets"])
    missing = [t for t in targets if t not in names and t != "all-linear"]
    if missing:
        raise InvalidWorkloadError(
            f"--framework {flat['framework']} puts LoRA on {','.join(targets)} (its recipes' modules), and "
            f"{model.name} has no {', '.join(missing)}: give --lora-targets (allowed: {', '.join(names)}, all-linear)",
            field="lora_targets",
            allowed=f"{', '.join(names)}, all-linear",
        )

"""The workload's typed setups: schema v1's flat ``setup`` object, the flat constructor, the cache keys."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.workload import (
    OPTIMIZERS,
    PRECISIONS,
    FsdpMode,
    InferSetup,
    KvDtype,
    Overheads,
    Precision,
    Sharding,
    TrainSetup,
    setup_to_flat,
)

# JSON schema v1's ``setup`` object, as ``asdict`` wrote it before the setups were grouped (docs/json-schema.md):
# the keys, their order and the defaults' values. Renaming or regrouping a field must not move these.
V1_TRAIN_DEFAULTS: dict[str, Any] = {
    "batch": 1, "seq": 2048, "grad_accum": 1, "precision": "bf16-mixed", "grad_dtype": "auto",
    "optimizer": "adamw", "optimizer_impl": "auto", "peft": "none", "lora_r": 16, "lora_targets": (),
    "lora_dropout": 0.0, "freeze_layers": 0, "recompute": "none", "attention": "sdpa", "loss": "full",
    "loss_chunk": 1024, "dp": 1, "zero": 0, "fsdp": "none", "fsdp_shard": None, "offload": "none", "tp": 1,
    "sp": False, "pp": 1, "interleave": 1, "cp": 1, "ep": 1, "reduce_bucket": 500_000_000,
    "prefetch_bucket": 50_000_000, "cuda_context_mib": None, "allocator_fraction": None, "mode": "accurate",
    "seed": "002", "lora_fraction": 0.02,
    # issue 14's implementation knobs
    "adapter_dtype": "auto", "double_quant": False, "recompute_every": 2, "mlp_impl": "composite",
    "norm_impl": "composite", "activation_offload": False, "compile": False, "optimizer_in_backward": False,
    "float8": False,
    # issue 14, added within version 1: whose defaults filled the options not given (workload/frameworks.py)
    "framework": "none",
    # issue 14, added within version 1: the CUDA context's row and the loading path
    "cuda_version": None, "compute_capability": None, "loading": "auto",
    # issue 14, added within version 1: the interconnect and DeepSpeed ZeRO-3's knobs (workload/comms.py)
    "interconnect": "auto", "nccl_buffers": True, "max_live_params": 1_000_000_000,
    "param_persistence_threshold": 100_000, "max_reuse_distance": 1_000_000_000,
    "nccl_env": "", "overlap_comm": None,
    # issue 14, added within version 1: PYTORCH_CUDA_ALLOC_CONF for the caching-allocator replay
    "expandable_segments": False, "max_split_size_mb": None, "allocator_replay": False,
    # issue 14, added within version 1 (appended): peft prompt and prefix tuning's virtual tokens
    "num_virtual_tokens": 20, "decoder_seq": None,
    # issue 14, added within version 1: torchtune's custom_sharded_layers
    "fsdp_outer_units": False,
    # issue 14, added within version 1: torchtitan's FSDP mesh dp_shard x cp (workload/layout.py)
    "fsdp_over_cp": False,
    # issue 14, added within version 1: what zero_grad leaves (torch >= 2.0 frees the gradients)
    "zero_grad": "none",
    # issue 15, added within version 1: --range's bound over a run of varied lengths (None: every step at seq)
    "replay_min_seq": None,
    # issue 14, added within version 1: a plain loop's outputs (the logits) kept until the next forward
    "keep_logits": False,
    # issue 14, added within version 1: the PyTorch release (before 1.11 softmax keeps its input)
    "torch_version": "2.13",
    # issue 14, added within version 1: torchtune's packed dataset (input_pos gathered by its rotary embedding)
    "packed": False,
}  # fmt: skip
V1_INFER_DEFAULTS: dict[str, Any] = {
    "batch": 1, "context": 2048, "new_tokens": 0, "weight_format": None, "kv_dtype": "auto", "attention": "sdpa",
    "tp": 1, "kv_block": 16, "prefill_chunk": None, "all_logits": False, "cuda_context_mib": None,
    "allocator_fraction": None, "gpu_utilization": 0.9, "mode": "accurate", "images": 0,
    "image_size": None,
    # issue 13, added within version 1: the engine and vLLM's own flags (workload/engines.py)
    "engine": "hf", "max_model_len": None, "max_num_seqs": None, "max_num_batched_tokens": None,
    "enforce_eager": False, "kv_cache_memory_bytes": None, "pp": 1,
    # SGLang's server arguments and transformers' device_map (workload/sglang_flags.py, workload/hf_flags.py)
    "mem_fraction_static": None, "chunked_prefill_size": None, "cuda_graph_max_bs": None,
    "max_running_requests": None, "max_total_tokens": None, "context_length": None, "page_size": 1,
    "disable_cuda_graph": False, "max_prefill_tokens": 16384, "sglang_version": "0.5", "device_map": None,
    "max_memory": None,
    # and llama.cpp's (workload/llamacpp_flags.py)
    "ctx_size": None, "batch_size": 2048, "ubatch_size": 512, "n_gpu_layers": -1, "cache_type_k": "f16",
    "cache_type_v": "f16", "flash_attn": "auto", "parallel": 1, "tensor_split": (), "split_mode": "layer",
    "no_mmap": False, "no_kv_offload": False, "kv_unified": False, "swa_full": False, "embeddings": False,
    "fit_gpu_layers": False, "ollama": False,
    # vLLM's release (workload/engines.py VLLM_VERSIONS), appended after the other engines' flags
    "vllm_version": "0.11",
    # vLLM's MXFP4 MoE backend (workload/engines.py MXFP4_BACKENDS; None: vLLM's choice by compute capability)
    "mxfp4_backend": None,
    # issue 14: the CUDA release and the GPU's compute capability, which pick the CUDA context's row
    "cuda_version": None, "compute_capability": None,
    # vLLM 0.8.5's sampler path (workload/engines.py VLLM_SAMPLERS; None: torch's, pip's vLLM)
    "vllm_sampler": None,
    # how the node's GPUs talk, for a serving engine's NCCL (workload/options.py INTERCONNECTS; auto: --gpu's)
    "interconnect": "auto",
}  # fmt: skip

# A non-default value for every flat training field (each one valid together with the rest at their defaults,
# or with the few companions named in _NEEDS).
OTHER: dict[str, Any] = {
    "batch": 3, "seq": 4096, "grad_accum": 4, "precision": "fp32", "grad_dtype": "fp32", "optimizer": "sgd",
    "optimizer_impl": "fused", "peft": "lora", "lora_r": 8, "lora_targets": ("q_proj",), "lora_dropout": 0.1,
    "freeze_layers": 2, "recompute": "full", "attention": "eager", "loss": "chunked", "loss_chunk": 512, "dp": 2,
    "zero": 1, "fsdp": "hybrid", "fsdp_shard": 2, "offload": "optimizer", "tp": 2, "sp": True, "pp": 2,
    "interleave": 2, "cp": 2, "ep": 2, "reduce_bucket": 1000, "prefetch_bucket": 1000, "cuda_context_mib": 0,
    "allocator_fraction": 0.0, "mode": "textbook", "seed": "000", "lora_fraction": 0.1,
    "adapter_dtype": "bf16", "double_quant": True, "recompute_every": 3, "mlp_impl": "fused", "norm_impl": "fused",
    "activation_offload": True, "compile": True, "optimizer_in_backward": True, "float8": True,
    "framework": "hf-trainer",
    "cuda_version": "11.8", "compute_capability": "8.0", "loading": "hf-device-map",
    "interconnect": "pcie", "nccl_buffers": False, "max_live_params": 1000, "param_persistence_threshold": 0,
    "max_reuse_distance": 0, "nccl_env": "NCCL_BUFFSIZE=1048576", "overlap_comm": True,
    "expandable_segments": True, "max_split_size_mb": 512, "allocator_replay": True,
    "num_virtual_tokens": 8, "decoder_seq": 128,
    "fsdp_outer_units": True,
    "fsdp_over_cp": True,
    "zero_grad": "zeros",
    "replay_min_seq": 1024,
    "keep_logits": True,
    "torch_version": "1.10",
    "packed": True,
}  # fmt: skip
_NEEDS: dict[str, dict[str, Any]] = {
    "zero": {"dp": 2},
    "fsdp": {"dp": 2},
    "fsdp_shard": {"dp": 2, "fsdp": "hybrid"},
    "offload": {"dp": 2, "zero": 2},
    "sp": {"tp": 2},
    "interleave": {"pp": 2},
    "ep": {"dp": 2},
    "double_quant": {"peft": "qlora"},
    "recompute_every": {"recompute": "layer-sac"},
    "fsdp_outer_units": {"dp": 2, "fsdp": "full"},
    "fsdp_over_cp": {"dp": 2, "fsdp": "full"},
}


def test_v1_setup_keys_and_values_do_not_move() -> None:
    assert list(setup_to_flat(TrainSetup()).items()) == list(V1_TRAIN_DEFAULTS.items())
    assert list(setup_to_flat(InferSetup()).items()) == list(V1_INFER_DEFAULTS.items())
    assert set(OTHER) == set(V1_TRAIN_DEFAULTS)


def test_flat_values_are_plain_json_strings() -> None:
    flat = setup_to_flat(TrainSetup.from_flat(precision="fp32", fsdp="full", dp=2))
    assert type(flat["precision"]) is str and type(flat["fsdp"]) is str and type(flat["seed"]) is str
    assert json.loads(json.dumps(flat))["fsdp"] == "full"


@pytest.mark.parametrize("name", list(OTHER))
def test_every_flat_field_round_trips(name: str) -> None:
    kw = {**_NEEDS.get(name, {}), name: OTHER[name]}
    setup = TrainSetup.from_flat(**kw)
    flat = setup.to_flat()
    assert flat == {**V1_TRAIN_DEFAULTS, **kw}
    assert TrainSetup.from_flat(**flat) == setup
    assert TrainSetup().with_flat(**kw) == setup


@pytest.mark.parametrize(("setup", "v1"), [(TrainSetup(), V1_TRAIN_DEFAULTS), (InferSetup(), V1_INFER_DEFAULTS)])
def test_every_group_attribute_has_one_flat_name(setup: TrainSetup | InferSetup, v1: dict[str, Any]) -> None:
    """A field added to a group without a flat name would silently drop out of the JSON and the CLI."""
    attributes = 0
    for f in dataclasses.fields(setup):
        value = getattr(setup, f.name)
        attributes += len(dataclasses.fields(value)) if dataclasses.is_dataclass(value) else 1
    assert attributes == len(v1)


@pytest.mark.parametrize("name", [n for n in OTHER if n not in ("batch", "seq")])
def test_the_static_key_sees_every_field_but_batch_and_seq(name: str) -> None:
    """Plans are cached on ``static``: a field it missed would hand one setup another's cached plan."""
    kw = _NEEDS.get(name, {})
    assert TrainSetup.from_flat(**kw).static != TrainSetup.from_flat(**kw, **{name: OTHER[name]}).static


def test_static_ignores_batch_and_seq() -> None:
    assert TrainSetup.from_flat(batch=1, seq=1024).static == TrainSetup.from_flat(batch=8, seq=4096).static


INFER_OTHER: dict[str, Any] = {
    "context": 4096, "new_tokens": 7, "weight_format": "int8", "kv_dtype": "fp8", "attention": "eager", "tp": 2,
    "kv_block": 1, "prefill_chunk": 512, "all_logits": True, "cuda_context_mib": 300, "allocator_fraction": 0.1,
    "gpu_utilization": 0.8, "mode": "textbook", "images": 3, "image_size": "640x480", "engine": "vllm",
    "max_model_len": 4096, "max_num_seqs": 8, "max_num_batched_tokens": 512, "enforce_eager": True,
    "kv_cache_memory_bytes": 2**30, "pp": 2, "mem_fraction_static": 0.8, "chunked_prefill_size": 4096,
    "cuda_graph_max_bs": 64, "max_running_requests": 32, "max_total_tokens": 100_000, "context_length": 8192,
    "page_size": 16, "disable_cuda_graph": True, "max_prefill_tokens": 8192, "sglang_version": "0.4",
    "device_map": "balanced", "max_memory": (2**30, 2**31),
    "ctx_size": 8192, "batch_size": 512, "ubatch_size": 256,
    "n_gpu_layers": 20, "cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": "on", "parallel": 4,
    "tensor_split": (3.0, 1.0), "split_mode": "none", "no_mmap": True, "no_kv_offload": True, "kv_unified": True,
    "swa_full": True, "embeddings": True, "fit_gpu_layers": True, "ollama": True, "vllm_version": "0.6",
    "mxfp4_backend": "marlin", "cuda_version": "11.8", "compute_capability": "8.0", "vllm_sampler": "flashinfer",
    "interconnect": "shm",
}  # fmt: skip


def test_infer_other_values_cover_every_flat_field_but_batch() -> None:
    assert set(INFER_OTHER) == set(V1_INFER_DEFAULTS) - {"batch"}


@pytest.mark.parametrize("name", sorted(INFER_OTHER))
def test_the_inference_static_key_sees_every_field_but_batch(name: str) -> None:
    """The inference plan is cached on ``static``: a field it missed would share a plan across setups."""
    # vLLM's flags apply with engine vllm only (an hf setup refuses them): compare within that engine
    # --interconnect is read by the serving engines only (an hf setup refuses it)
    base: dict[str, Any] = {"engine": "vllm"} if name in (*_VLLM_FLAGS, "interconnect") else {}
    if name in _SGLANG_FLAGS:
        base = {"engine": "sglang"}
    if name == "max_memory":  # accelerate's caps need a device_map
        base = {"device_map": "auto"}
    if name in _LLAMACPP_FLAGS:
        base = {"engine": "llama.cpp"}
    assert InferSetup.from_flat(**base).static != InferSetup.from_flat(**base, **{name: INFER_OTHER[name]}).static
    assert InferSetup(batch=1).static == InferSetup(batch=9).static


_SGLANG_FLAGS = (
    "mem_fraction_static", "chunked_prefill_size", "cuda_graph_max_bs", "max_running_requests", "max_total_tokens",
    "context_length", "page_size", "disable_cuda_graph", "max_prefill_tokens", "sglang_version",
)
_VLLM_FLAGS = (
    "max_model_len", "max_num_seqs", "max_num_batched_tokens", "enforce_eager", "kv_cache_memory_bytes", "pp",
    "vllm_version", "mxfp4_backend", "vllm_sampler",
)


_LLAMACPP_FLAGS = (
    "ctx_size", "batch_size", "ubatch_size", "n_gpu_layers", "cache_type_k", "cache_type_v", "flash_attn", "parallel",
    "tensor_split", "split_mode", "no_mmap", "no_kv_offload", "kv_unified", "swa_full", "embeddings",
    "fit_gpu_layers", "ollama",
)  # fmt: skip


def test_a_llamacpp_flag_with_another_engine_is_refused() -> None:
    for name in _LLAMACPP_FLAGS:
        with pytest.raises(InvalidWorkloadError, match=f"{name} is a flag of llama.cpp, not of engine hf"):
            InferSetup.from_flat(**{name: INFER_OTHER[name]})


def test_an_engine_flag_with_another_engine_is_refused() -> None:
    for name in _VLLM_FLAGS:  # the option's name (vllm_sampler, pp), not its group's attribute (sampler)
        with pytest.raises(InvalidWorkloadError, match=f"^{name} is a flag of vllm, not of engine hf: add --engine "
                           "vllm") as refused:
            InferSetup.from_flat(**{name: INFER_OTHER[name]})
        assert refused.value.field == name


def test_with_flat_shares_the_groups_it_does_not_touch() -> None:
    base = TrainSetup.from_flat(dp=8, zero=3)
    changed = base.with_flat(batch=4, tp=2)
    assert changed.precision is base.precision and changed.peft is base.peft
    assert (changed.batch, changed.parallel.tp, changed.parallel.zero) == (4, 2, 3)


def test_enums_read_as_their_strings() -> None:
    setup = TrainSetup.from_flat(precision="fp32")
    assert setup.precision.recipe is Precision.FP32 and setup.precision.recipe == "fp32"
    assert f"{setup.precision.recipe}" == "fp32"
    assert ", ".join(PRECISIONS) == "fp32, amp, amp-fp16, bf16-mixed, fp16-mixed, bf16"
    assert "paged-adamw-8bit" in OPTIMIZERS


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"precision": "fp64"}, InvalidWorkloadError, "precision 'fp64' is not allowed; allowed: fp32, amp,"),
        ({"optimizer_impl": "x"}, InvalidWorkloadError, "optimizer_impl 'x' is not allowed"),
        ({"peft": "adalora"}, InvalidWorkloadError, "peft 'adalora' is not allowed; allowed: none, lora, qlora"),
        ({"lora_r": 0}, InvalidWorkloadError, "lora_r must be a positive integer, got 0"),
        ({"dp": 8, "fsdp_shard": 3, "fsdp": "hybrid"}, InvalidLayoutError, r"fsdp_shard \(3\) .* must divide dp \(8\)"),
        ({"cp": 3}, InvalidLayoutError, r"cp \(3\) must divide seq \(2048\)"),
        ({"peft": "lora", "optimizer": "lomo"}, InvalidWorkloadError, "optimizer lomo fuses"),
        ({"cuda_context_mib": -1}, InvalidWorkloadError, "cuda_context_mib must be a non-negative integer, got -1"),
    ],
)
def test_bad_flat_input_names_the_field(kw: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        TrainSetup.from_flat(**kw)


def test_an_unknown_flat_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="no field 'dpp'"):
        TrainSetup.from_flat(dpp=2)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        # ZeRO paper §5: stage 1 partitions optimizer states, 2 adds gradients, 3 adds parameters
        ({}, Sharding(stage=0, group=1, optimizer=1, gradients=1, weights=1)),
        ({"dp": 8}, Sharding(stage=0, group=8, optimizer=1, gradients=1, weights=1)),
        ({"dp": 8, "zero": 1}, Sharding(stage=1, group=8, optimizer=8, gradients=1, weights=1)),
        ({"dp": 8, "zero": 2}, Sharding(stage=2, group=8, optimizer=8, gradients=8, weights=1)),
        ({"dp": 8, "zero": 3}, Sharding(stage=3, group=8, optimizer=8, gradients=8, weights=8)),
        # FSDP: SHARD_GRAD_OP is ZeRO-2, FULL_SHARD ZeRO-3; HYBRID_SHARD fully shards inside a shard group
        ({"dp": 8, "fsdp": "grad-op"}, Sharding(stage=2, group=8, optimizer=8, gradients=8, weights=1)),
        ({"dp": 8, "fsdp": "full"}, Sharding(stage=3, group=8, optimizer=8, gradients=8, weights=8)),
        ({"dp": 8, "fsdp": "hybrid", "fsdp_shard": 4}, Sharding(stage=3, group=4, optimizer=4, gradients=4, weights=4)),
        ({"dp": 8, "fsdp": FsdpMode.HYBRID}, Sharding(stage=3, group=8, optimizer=8, gradients=8, weights=8)),
    ],
)
def test_sharding_follows_the_zero_stages(kw: dict[str, Any], expected: Sharding) -> None:
    assert TrainSetup.from_flat(**kw).parallel.sharding == expected


# A non-default value for every flat inference field.
OTHER_INFER: dict[str, Any] = {
    "batch": 4, "context": 1024, "new_tokens": 16, "weight_format": "fp8", "kv_dtype": "fp8", "attention": "eager",
    "tp": 2, "kv_block": 1, "prefill_chunk": 512, "all_logits": True, "cuda_context_mib": 300,
    "allocator_fraction": 0.0, "gpu_utilization": 0.5, "mode": "textbook", "images": 2,
    "image_size": "1024x768",
}  # fmt: skip


@pytest.mark.parametrize("name", list(OTHER_INFER))
def test_every_flat_inference_field_round_trips(name: str) -> None:
    setup = InferSetup.from_flat(**{name: OTHER_INFER[name]})
    assert setup.to_flat() == {**V1_INFER_DEFAULTS, name: OTHER_INFER[name]}
    assert InferSetup.from_flat(**setup.to_flat()) == setup
    assert InferSetup().with_flat(**{name: OTHER_INFER[name]}) == setup


def test_inference_overheads_are_the_training_group() -> None:
    setup = InferSetup.from_flat(context=1024, kv_dtype="fp8", cuda_context_mib=300)
    assert setup == InferSetup(context=1024, kv_dtype=KvDtype.FP8, overheads=Overheads(cuda_context_mib=300))
    assert setup.overheads == TrainSetup.from_flat(cuda_context_mib=300).overheads
    assert setup.with_flat(batch=2).overheads is setup.overheads  # untouched groups are shared


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"cuda_context_mib": -1}, "cuda_context_mib must be a non-negative integer, got -1"),
        ({"allocator_fraction": 1.0}, r"allocator_fraction must be in \[0, 1\), got 1.0"),
        ({"gpu_utilization": 0}, r"gpu_utilization must be in \(0, 1\], got 0"),
        ({"kv_dtype": "int3"}, "kv_dtype 'int3' is not allowed; allowed: auto,"),
    ],
)
def test_bad_flat_inference_input_names_the_field(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidWorkloadError, match=message):
        InferSetup.from_flat(**kw)
    with pytest.raises(TypeError, match="InferSetup has no field 'seq'"):
        InferSetup.from_flat(seq=1024)


def test_layer_options_are_bounded_like_a_configs_layers() -> None:
    # freeze_layers, interleave and verify --layers count a model's layers: no looser than a config may have
    from vramwise.spec.adapters import config
    from vramwise.workload import checks

    assert checks.MAX_LAYERS == config.MAX_LAYERS
    assert all(checks.BOUNDS[name][0] == config.MAX_LAYERS for name in ("freeze_layers", "interleave", "layers"))

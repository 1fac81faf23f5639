"""docs/json-schema.md documents every term and phase name the estimators emit, and schema v1's ``setup`` keys.

The names are collected by running a broad set of estimates through the public API (every phase's transient terms,
not only those live at the peak, which is all the JSON shows). Setups are built from flat field names, the
vocabulary of the CLI and of the JSON ``setup`` object, so the test does not depend on how the setup dataclasses
group their fields.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import vramwise
from vramwise.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "json-schema.md"

FAMILIES = (
    "llama-2-7b", "mistral-7b", "mixtral-8x7b", "qwen2-7b", "qwen3-30b-a3b", "qwen1.5-moe-a2.7b", "gemma-2-2b",
    "gemma-3-1b", "phi-2", "phi-3-mini", "gpt2", "falcon-7b", "opt-125m", "pythia-160m", "deepseek-v2-lite",
    "deepseek-v3", "gpt-oss-20b",
)  # causal LMs of every adapter family (bert, an encoder, is inference only)
INFER = (
    {},
    {"new_tokens": 128, "attention": "eager", "all_logits": True},
    {"weight_format": "nf4", "kv_dtype": "fp8", "tp": 2},
    {"weight_format": "q4_k_m", "prefill_chunk": 512, "kv_block": 1},
    {"mode": "textbook", "new_tokens": 64},
)
TRAIN = (
    {},
    {"peft": "lora", "lora_targets": ("all-linear",), "recompute": "full", "seq": 4096},
    {"peft": "qlora", "lora_targets": ("all-linear",), "recompute": "selective", "lora_dropout": 0.1},
    {"recompute": "full", "attention": "eager", "loss": "chunked"},
    {"dp": 2, "attention": "eager"},
    {"optimizer": "lomo", "precision": "bf16"},
    {"dp": 8, "zero": 1, "precision": "fp16-mixed"},
    {"dp": 8, "zero": 2, "optimizer": "adamw-8bit", "precision": "amp"},
    {"dp": 8, "zero": 3, "offload": "params"},
    {"dp": 8, "fsdp": "full", "offload": "optimizer"},
    {"dp": 8, "fsdp": "grad-op", "optimizer": "adafactor", "precision": "fp32"},
    {"dp": 8, "fsdp": "hybrid", "fsdp_shard": 4, "optimizer": "lion", "optimizer_impl": "foreach"},
    {"tp": 2, "sp": True, "cp": 2, "optimizer": "sgd-momentum", "precision": "amp-fp16"},
    {"pp": 2, "interleave": 2, "grad_accum": 4, "freeze_layers": 2, "optimizer": "paged-adamw-8bit"},
    {"mode": "textbook", "seed": "000", "peft": "lora"},
    {"mode": "textbook", "seed": "002", "dp": 2, "zero": 3, "tp": 2, "sp": True, "pp": 2, "grad_accum": 2},
    # issue 14's implementation knobs (estimate/train/loss.py, knobs.py)
    {"loss": "liger", "precision": "bf16"},
    {"loss": "cce", "peft": "lora", "adapter_dtype": "bf16"},
    {"loss": "torchtune-chunked", "peft": "qlora", "double_quant": True},
    {"loss": "compute-dtype", "peft": "lora-8bit"},
    {"recompute": "layer-sac", "recompute_every": 3, "precision": "bf16", "optimizer_in_backward": True},
    {"activation_offload": True, "float8": True, "recompute": "full"},
    {"loss": "torchtune-chunked", "precision": "bf16"},  # the head's chunked matmuls' backward
)
# Families whose peft has no default targets, and the models that cannot take a given layout.
_NEEDS_TARGETS = ("gemma-3-1b", "deepseek-v2-lite", "deepseek-v3", "gpt-oss-20b")


def _setup(cls: type, flat: dict[str, Any]) -> Any:
    # `from_flat` is how a grouped setup is built from schema v1's flat names; a flat setup takes them directly.
    return getattr(cls, "from_flat", cls)(**flat)


def _within_table(spec: Any, flat: dict[str, Any], key: str) -> dict[str, Any]:
    """GPT-2, OPT and BERT look positions up in a learned table: the default 2,048 (or 4,096) would be refused."""
    from vramwise.estimate.positions import position_limit
    from vramwise.spec.traits import Positions

    limit = position_limit(spec)
    if spec.traits.positions is not Positions.LEARNED or limit is None:
        return flat
    length = min(flat.get(key, 2048), limit - flat.get("new_tokens", 0))
    return {**flat, key: length}


def _train_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in FAMILIES:
        for flat in TRAIN:
            if name == "falcon-7b" and flat.get("tp", 1) > 1:
                continue  # 71 heads: tp 2 cannot split them
            if name in _NEEDS_TARGETS and flat.get("peft", "none") != "none" and "lora_targets" not in flat:
                flat = {**flat, "lora_targets": ("all-linear",)}
            yield name, flat
    for name in ("mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v2-lite"):
        yield name, {"dp": 4, "ep": 2, "zero": 1}
        yield name, {"dp": 8, "ep": 4, "fsdp": "full"}
    # peft's other methods (estimate/train/peft_methods.py), on a family with peft's IA3 mapping
    for flat in (
        {"peft": "dora", "lora_targets": ("all-linear",)},
        {"peft": "ia3"},
        {"peft": "prompt-tuning", "num_virtual_tokens": 16},
        {"peft": "prefix-tuning"},
        {"peft": "lora", "lora_targets": ("embed_tokens", "q_proj", "lm_head")},
    ):
        yield "llama-3-8b", flat


def _estimates() -> Iterator[vramwise.Estimate]:
    for name in (*FAMILIES, "bert-base-cased"):
        spec = vramwise.resolve_model(name)
        for flat in INFER:
            if name == "falcon-7b" and flat.get("tp", 1) > 1:
                continue
            if not spec.traits.causal_kv_cache:  # an encoder (BERT) runs one forward: new tokens are refused
                flat = {k: v for k, v in flat.items() if k != "new_tokens"}
            setup = _setup(vramwise.InferSetup, _within_table(spec, flat, "context"))
            textbook = flat.get("mode") == "textbook"
            yield (vramwise.textbook_inference if textbook else vramwise.estimate_inference)(spec, setup)
    yield vramwise.textbook_inference(vramwise.resolve_model("14b"), _setup(vramwise.InferSetup, {"mode": "textbook"}))
    yield from _vision_estimates()
    yield from _encoder_decoder_estimates()
    yield from _engine_estimates()
    from tiny_configs import GPT_BIGCODE  # its causal-mask buffer ("buffers"); no catalog entry yet

    bigcode = vramwise.spec.adapters.spec_from_config(GPT_BIGCODE, name="gpt_bigcode", source="test")
    yield vramwise.estimate_inference(bigcode, _setup(vramwise.InferSetup, {"context": 512}))
    for name, flat in _train_cases():
        spec = vramwise.resolve_model(name)
        setup = _setup(vramwise.TrainSetup, _within_table(spec, flat, "seq"))
        if flat.get("mode") == "textbook":
            yield vramwise.textbook_training(spec, setup)
        else:
            yield from vramwise.estimate_stages(spec, setup)  # every pipeline stage, not only the worst


def _vision_estimates() -> Iterator[vramwise.Estimate]:
    # vision-language models (none in the catalog): their tiny configs, with images and text-only training
    from tiny_configs import VLM

    from vramwise.spec.adapters import spec_from_config

    for name, config in VLM.items():
        spec = spec_from_config(config, name=name, source=name)
        yield vramwise.estimate_inference(spec, _setup(vramwise.InferSetup, {"images": 2, "attention": "eager"}))
        yield vramwise.estimate_inference(spec, _setup(vramwise.InferSetup, {"images": 1, "image_size": "640x480"}))
        yield from vramwise.estimate_stages(spec, _setup(vramwise.TrainSetup, {"seq": 256}))
def _engine_estimates() -> Iterator[vramwise.Estimate]:
    """Serving engines' plans (--engine): their own terms (the profile peak, the pool, graphs, NCCL)."""
    from vramwise.catalog import get_gpu
    from vramwise.engines.vllm import vllm_plan

    gpu = get_gpu("h100-80gb")
    for name in ("llama-2-7b", "deepseek-v2-lite", "gemma-2-2b"):
        spec = vramwise.resolve_model(name)
        for flat in ({"engine": "vllm"}, {"engine": "vllm", "tp": 2, "pp": 2, "enforce_eager": True}):
            yield vllm_plan(spec, _setup(vramwise.InferSetup, flat), gpu).estimate


def _encoder_decoder_estimates() -> Iterator[vramwise.Estimate]:
    """T5 and mT5 (tests/tiny_configs.py): inference in accurate mode, the only question they take."""
    from tiny_configs import ENCODER_DECODER

    from vramwise.spec.adapters import spec_from_config

    for name, config in ENCODER_DECODER.items():
        spec = spec_from_config(config, name=name, source="test")
        for flat in ({}, {"new_tokens": 128, "attention": "eager", "all_logits": True}, {"weight_format": "fp16"}):
            yield vramwise.estimate_inference(spec, _setup(vramwise.InferSetup, flat))


@cache
def _emitted() -> tuple[frozenset[str], frozenset[str]]:
    terms: set[str] = set()
    phases: set[str] = set()
    for est in _estimates():
        terms.update(t.name for t in (*est.persistent, *est.host))
        for phase in est.phases:
            phases.add(phase.name)
            terms.update(t.name for t in phase.transient)
    return frozenset(terms), frozenset(phases)


def _documented() -> set[str]:
    # Every `code span` of the document; a name is documented when it appears as one, exactly.
    return set(re.findall(r"`([^`\n]+)`", DOC.read_text()))


def test_the_collected_names_are_many_and_include_the_rare_ones() -> None:
    # Vacuity guard: if the cases stopped exercising the estimators, the documentation check would pass on nothing.
    terms, phases = _emitted()
    assert len(terms) >= 50, sorted(terms)
    assert len(phases) >= 10, sorted(phases)
    rare = {
        "fsdp/root_unit", "fsdp/layer_units", "fsdp/unsharded_grads", "fsdp/head_grad", "loss/logits_grad",
        "optimizer/lomo_gradient", "kv_cache/prefill_views", "zero/gathered_params", "qlora/dequantized_weight",
        "activations/recomputed_layer", "activations/attention/scores", "ddp/buckets", "weights/all", "model_states",
        "model",
    }
    assert rare <= terms, sorted(rare - terms)
    assert {"backward (layer)", "backward (head)", "decode step", "prefill (logits)"} <= phases, sorted(phases)


def test_every_emitted_term_name_is_documented() -> None:
    terms, _ = _emitted()
    missing = sorted(terms - _documented())
    assert not missing, f"term names missing from {DOC.name}: {missing}"


def test_every_phase_kind_is_emitted_and_documented() -> None:
    # PhaseKind is the one list of moments (verify and the reports read it): each is reachable and documented
    from vramwise.estimate.term import PhaseKind

    _, phases = _emitted()
    kinds = {k.value for k in PhaseKind}
    assert kinds == set(phases), f"kinds never emitted: {sorted(kinds - phases)}; unknown: {sorted(phases - kinds)}"
    assert not sorted(kinds - _documented())


def test_every_emitted_phase_name_is_documented() -> None:
    _, phases = _emitted()
    missing = sorted(phases - _documented())
    assert not missing, f"phase names missing from {DOC.name}: {missing}"


def _setup_keys(*argv: str) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return list(json.loads(out.getvalue())["setup"])


# Schema v1's flat `setup` object, key for key and in order. Regrouping the setup dataclasses must not move it:
# a change here is a schema change (a new version and a changelog in docs/json-schema.md), not a refactor.
INFER_SETUP_KEYS = [
    "batch", "context", "new_tokens", "weight_format", "kv_dtype", "attention", "tp", "kv_block", "prefill_chunk",
    "all_logits", "cuda_context_mib", "allocator_fraction", "gpu_utilization", "mode", "images",
    "image_size", "engine", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "enforce_eager",
    "kv_cache_memory_bytes", "pp", "mem_fraction_static", "chunked_prefill_size", "cuda_graph_max_bs",
    "max_running_requests", "max_total_tokens", "context_length", "page_size", "disable_cuda_graph",
    "max_prefill_tokens", "sglang_version", "device_map", "max_memory",
    "ctx_size", "batch_size", "ubatch_size", "n_gpu_layers", "cache_type_k",
    "cache_type_v", "flash_attn", "parallel", "tensor_split", "split_mode", "no_mmap", "no_kv_offload", "kv_unified",
    "swa_full", "embeddings", "fit_gpu_layers", "ollama", "vllm_version", "mxfp4_backend",
    "cuda_version", "compute_capability", "vllm_sampler", "interconnect",
]
TRAIN_SETUP_KEYS = [
    "batch", "seq", "grad_accum", "precision", "grad_dtype", "optimizer", "optimizer_impl", "peft", "lora_r",
    "lora_targets", "lora_dropout", "freeze_layers", "recompute", "attention", "loss", "loss_chunk", "dp", "zero",
    "fsdp", "fsdp_shard", "offload", "tp", "sp", "pp", "interleave", "cp", "ep", "reduce_bucket", "prefetch_bucket",
    "cuda_context_mib", "allocator_fraction", "mode", "seed", "lora_fraction",
    # issue 14's implementation knobs
    "adapter_dtype", "double_quant", "recompute_every", "mlp_impl", "norm_impl", "activation_offload", "compile",
    "optimizer_in_backward", "float8",
    "framework",  # issue 14, appended within version 1
    "cuda_version", "compute_capability", "loading",
    "interconnect", "nccl_buffers", "max_live_params", "param_persistence_threshold", "max_reuse_distance",
    "nccl_env", "overlap_comm",
    "expandable_segments", "max_split_size_mb", "allocator_replay",  # issue 14: the allocator replay
]
TRAIN_SETUP_KEYS += ["num_virtual_tokens", "decoder_seq"]  # issue 14: peft prompt/prefix tuning, T5 (appended)
TRAIN_SETUP_KEYS += ["fsdp_outer_units"]  # issue 14: torchtune custom_sharded_layers (appended)
TRAIN_SETUP_KEYS += ["fsdp_over_cp"]  # issue 14: torchtitan dp_shard x cp (appended)
TRAIN_SETUP_KEYS += ["zero_grad"]  # issue 14: zero_grad(set_to_none) (appended)
TRAIN_SETUP_KEYS += ["replay_min_seq"]  # issue 15: --range's bound over varied lengths (appended)
TRAIN_SETUP_KEYS += ["keep_logits"]  # issue 14: a plain loop's outputs kept to the next forward (appended)
TRAIN_SETUP_KEYS += ["torch_version"]  # issue 14: autograd's saved tensors by PyTorch release (appended)
TRAIN_SETUP_KEYS += ["packed"]  # issue 14: torchtune's packed dataset, input_pos (appended)


def test_json_setup_keys_are_schema_v1() -> None:
    assert _setup_keys("infer", "llama-2-7b") == INFER_SETUP_KEYS
    assert _setup_keys("infer", "7b", "--mode", "textbook") == INFER_SETUP_KEYS
    assert _setup_keys("train", "llama-2-7b", "--dp", "2", "--zero", "3") == TRAIN_SETUP_KEYS
    assert _setup_keys("train", "7b", "--mode", "textbook", "--seed", "000") == TRAIN_SETUP_KEYS


def test_json_setup_keys_are_documented() -> None:
    documented = _documented()
    missing = sorted(set(INFER_SETUP_KEYS + TRAIN_SETUP_KEYS) - documented)
    assert not missing, f"setup keys missing from {DOC.name}: {missing}"

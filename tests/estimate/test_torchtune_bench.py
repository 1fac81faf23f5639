"""The mechanisms behind the torchtune rows of bench/training.py, against arithmetic written out here.

Llama-2-7B shapes (h 4096, 32 layers, V 32000, intermediate 11008, untied head); every expected value is computed
in the test from the shapes and the framework rule it names, never read from the estimator:
- bitsandbytes' paged optimizers (optim/optimizer.py Optimizer8bit.get_state_buffer): the states of parameters of
  at least 1e5 elements live in unified memory (functional.py get_paged, cudaMallocManaged), outside torch's figures;
- FSDP2's CPUOffloadPolicy (torch distributed/fsdp/_fully_shard): sharded gradients go to the host, the step too;
- torchtune's compiled CEWithChunkedOutputLoss (training/_compile.py compile_loss): inductor saves the 16-bit logits
  and two fp32 values per row (traced: bench/data/compile/loss-saved-cpu.json, bench/compile_loss_saved.py);
- FSDP gathers a QLoRA base as stored (torchao NF4Tensor.fsdp_pre_all_gather), and shards the adapters.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.training import estimate_training, training_peak
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

ROOT = Path(__file__).resolve().parents[2]
H, L, V, FFN = 4096, 32, 32000, 11008  # Llama-2-7B
NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}
SQUARE, WIDE = H * H, FFN * H  # q, k, v, o; gate, up, down
BIG = 2 * V * H + L * (4 * SQUARE + 3 * WIDE)  # every tensor of at least 1e5 elements: all but the norms
NORMS = (2 * L + 1) * H  # 4,096 elements each: >= min_8bit_size 4096 (8-bit), < 1e5 (not paged)


def _setup(**kw: object) -> TrainSetup:
    return TrainSetup.from_flat(**{**NO_OVERHEAD, "precision": "bf16", "batch": 1, "seq": 1024, **kw})


def _train(**kw: object) -> Estimate:
    return estimate_training(catalog_spec("llama-2-7b"), _setup(**kw))


def _host(est: Estimate, name: str) -> int:
    return sum(t.bytes for t in est.host if t.name == name)


def _device_names(est: Estimate) -> set[str]:
    return {t.name for t in est.persistent} | {t.name for p in est.phases for t in p.transient}


# --- paged optimizers: unified memory, outside PyTorch's allocator


def test_paged_adamw_8bit_keeps_its_big_states_in_unified_memory() -> None:
    paged = _train(optimizer="paged-adamw-8bit")
    # state1 and state2: uint8, 1 B per element, F.get_paged for every tensor of >= 1e5 elements
    assert _host(paged, "optimizer/paged_states") == 2 * BIG
    # on the device (torch.zeros): one fp32 absmax per 256 elements per state, and the norms' 8-bit states
    blocks = BIG // 256 + (2 * L + 1) * (H // 256)
    assert paged.term("optimizer/states").bytes == 2 * 4 * blocks + 2 * NORMS
    # the same optimizer unpaged holds both parts on the device; the peak differs by exactly the paged bytes
    spec = catalog_spec("llama-2-7b")
    assert training_peak(spec, _setup(optimizer="adamw-8bit")) - training_peak(
        spec, _setup(optimizer="paged-adamw-8bit")
    ) == 2 * BIG


def test_paged_adamw_32bit_states_are_fp32_whatever_the_params() -> None:
    # Optimizer2State.init_state with optim_bits 32: dtype torch.float32, even for bf16 parameters
    paged = _train(optimizer="paged-adamw")
    assert _host(paged, "optimizer/paged_states") == 2 * 4 * BIG
    assert paged.term("optimizer/states").bytes == 2 * 4 * NORMS
    assert "optimizer/step_transient" not in _device_names(paged)  # bitsandbytes' kernel updates in place


# --- FSDP2 CPU offload


def test_fsdp_cpu_offload_leaves_no_sharded_state_on_the_gpu() -> None:
    est = _train(dp=8, fsdp="full", offload="params", optimizer="adamw", optimizer_impl="fused")
    names = _device_names(est)
    assert "gradients" not in names and not any(n.startswith("weights/") for n in names)
    assert not any(n.startswith("optimizer/") for n in names)
    # FSDP2 foreach_reduce: each new sharded gradient .to("cpu"), in the parameters' dtype
    assert _host(est, "offload/gradients") == (BIG + NORMS) * 2 // 8
    assert _host(est, "optimizer/fp32_gradients") == 0  # no ZeRO-Offload fp32 partition: the step reads the grads
    step = next(p for p in est.phases if p.kind is PhaseKind.OPTIMIZER_STEP)
    assert sum(t.bytes for t in step.transient) == 0  # the optimizer steps on the CPU


# --- torchtune's compiled chunked cross entropy


def test_compiled_chunked_loss_saves_what_inductor_saved() -> None:
    data = json.loads((ROOT / "bench" / "data" / "compile" / "loss-saved-cpu.json").read_text(encoding="utf-8"))
    rows, vocab = data["rows"], data["vocab"]
    floats = {kind: sum(r["bytes"] for r in data[kind] if "float" in r["dtype"]) for kind in ("eager", "compiled")}
    assert floats["eager"] // rows == 4 * vocab  # eager: the fp32 log-softmax (+ a 4-byte scalar)
    assert floats["compiled"] == rows * (2 * vocab + 8)  # compiled: the bf16 logits (its input) + 2 fp32 per row
    assert any(r["is_input"] for r in data["compiled"])
    T = 2 * 1024
    est = _train(batch=2, loss="torchtune-chunked", compile=True, recompute="full")
    assert est.term("activations/loss").bytes == T * (2 * V + 8)
    # the loss backward: the head's gradient accumulating chunk by chunk, one chunk's hidden-state gradient
    assert est.term("loss/head_grad").bytes == V * H * 2
    assert est.term("loss/backward").bytes == 2 * H * T // 8
    eager = _train(batch=2, loss="torchtune-chunked", recompute="full")
    assert eager.term("activations/loss").bytes == T * 4 * V


def test_compile_with_lora_counts_the_layers_eager_and_says_so() -> None:
    kw = {"peft": "lora", "lora_targets": ("q_proj", "v_proj"), "recompute": "none", "loss": "full"}
    compiled, eager = _train(compile=True, **kw), _train(**kw)
    assert compiled.peak_bytes == eager.peak_bytes
    assert any(n.startswith("compile with adapters") for n in compiled.notes)


# --- QLoRA and LoRA under FSDP


def _bnb_nf4_dq(n: int) -> int:
    """bitsandbytes NF4 with double quantization: codes two per byte, a uint8 absmax per 64, an fp32 absmax per
    256 of those, their 256-entry fp32 code, the fp32 offset, and the 16-entry fp32 NF4 code."""
    blocks = n // 64
    return n // 2 + blocks + -(-blocks // 256) * 4 + 256 * 4 + 4 + 16 * 4


def test_fsdp_gathers_a_qlora_layer_as_stored() -> None:
    est = _train(peft="qlora", lora_targets=("q_proj", "v_proj"), double_quant=True, dp=8, fsdp="full")
    # 4 square and 3 wide linears in NF4; the two norms cast to fp32 by k-bit preparation
    layer = 4 * _bnb_nf4_dq(SQUARE) + 3 * _bnb_nf4_dq(WIDE) + 2 * H * 4
    assert est.term("fsdp/layer_units").bytes == 2 * layer
    # the adapters are sharded with their layer: r 8 x (in + out) per module, q and v in every layer, bf16, / 8
    lora = _train(peft="lora", lora_targets=("q_proj", "v_proj"), lora_r=8, adapter_dtype="bf16", dp=8, fsdp="full")
    assert lora.term("weights/lora").bytes == L * 2 * 8 * (H + H) * 2 // 8


# --- the manifest: the torchtune rows as their commits ran them


def test_torchtune_flag_rows_are_cumulative_from_their_readme() -> None:
    cases = {
        c["id"]: c["settings"]
        for c in tomllib.loads((ROOT / "bench" / "data" / "training" / "manifest.toml").read_text("utf-8"))["case"]
    }
    rows = ["packed", "packed-compile", "chunked-ce", "ac", "opt-in-bwd", "act-offload", "adamw8bit"]
    settings = [cases[f"torchtune-llama32-3b-full-{r}"] for r in rows]
    # each row adds its technique to the one before (README 1814feb, "Optimization flags"); the preset would
    # otherwise turn optimizer_in_backward on for a full one-GPU run
    assert [s["optimizer_in_backward"] for s in settings] == [False] * 4 + [True] * 3
    assert [s["loss"] for s in settings] == ["full"] * 2 + ["torchtune-chunked"] * 5
    assert [s["recompute"] for s in settings] == ["none"] * 3 + ["full"] * 4
    # torchao AdamW8bit, the tutorial's first name (test_ao_adamw8bit.py); a paged optimizer is invisible to
    # active_bytes
    assert settings[-1]["optimizer"] == "ao-adamw-8bit"
    for case in ("torchtune-llama31-8b-full-4090", "torchtune-llama31-70b-full-offload-8xa100"):
        assert cases[case]["loss"] == "torchtune-chunked"  # CEWithChunkedOutputLoss in the configs at 30b8519


@pytest.mark.parametrize("optimizer", ["paged-adamw-8bit", "paged-adamw"])
def test_paged_states_never_count_in_the_peak(optimizer: str) -> None:
    est = _train(optimizer=optimizer)
    assert est.peak_bytes == sum(t.bytes for t in est.terms)
    assert "optimizer/paged_states" not in {t.name for t in est.terms}


def test_a_rebuilt_layer_no_longer_holds_the_loss() -> None:
    # autograd runs the loss's nodes (newer) before any layer's backward and frees what each saved once it ran: by
    # the time torch.utils.checkpoint rebuilds a layer, the loss's fp32 log-softmax (4 B x V per token) is gone
    T = 1024
    est = _train(loss="torchtune-chunked", recompute="full")
    recompute = next(p for p in est.phases if p.kind is PhaseKind.BACKWARD_RECOMPUTE)
    loss_backward = next(p for p in est.phases if p.kind is PhaseKind.BACKWARD_LOSS)
    assert "activations/loss" not in {t.name for t in recompute.transient}
    assert est.term("activations/loss").bytes == 4 * V * T
    # the layers' checkpoints (each layer's input, h x 2 B a token) are still there
    ckpt = next(t for t in recompute.transient if t.name == "activations/checkpoints")
    assert ckpt.bytes == L * T * H * 2
    assert "activations/loss" in {t.name for t in loss_backward.transient}


def test_compiled_linear_loss_is_counted_eager_and_says_so() -> None:
    # torchtune 0.7 apply_compile_strategy compiles the head inside compute_cross_entropy: not measured, so eager
    compiled, eager = _train(loss="torchtune-linear", compile=True), _train(loss="torchtune-linear")
    assert compiled.term("activations/loss").bytes == eager.term("activations/loss").bytes == 1024 * (4 * V + 1)
    assert any(n.startswith("compile with torchtune-linear") for n in compiled.notes)


# --- torchtune custom_sharded_layers: the embeddings and the head as FSDP units of their own


def test_outer_units_leave_the_root_only_the_final_norm() -> None:
    kw = {"dp": 8, "fsdp": "full", "optimizer": "adamw", "optimizer_impl": "fused", "recompute": "full"}
    own, root = _train(fsdp_outer_units=True, **kw), _train(**kw)
    assert own.term("fsdp/root_unit").bytes == H * 2  # the final norm
    assert root.term("fsdp/root_unit").bytes == (2 * V * H + H) * 2
    # the head is gathered again for its backward; the embeddings' unit comes back for the last backward
    head = next(p for p in own.phases if p.kind is PhaseKind.BACKWARD_HEAD)
    assert next(t.bytes for t in head.transient if t.name == "fsdp/head_unit") == V * H * 2
    assert own.term("fsdp/embedding_unit").bytes == V * H * 2
    end = next(p for p in own.phases if p.kind is PhaseKind.BACKWARD_END)
    assert next(t.bytes for t in end.transient if t.name == "fsdp/root_grads") == V * H * 2  # the embeddings' only
    # the head's gradient is reduce-scattered after its own backward: no layer's backward waits with it
    layer = next(p for p in own.phases if p.kind is PhaseKind.BACKWARD_LAYER)
    assert "fsdp/head_grad" not in {t.name for t in layer.transient}
    layer_root = next(p for p in root.phases if p.kind is PhaseKind.BACKWARD_LAYER)
    assert "fsdp/head_grad" in {t.name for t in layer_root.transient}


def test_outer_units_are_named_where_they_cannot_apply() -> None:
    alone = _train(fsdp_outer_units=True)  # no FSDP: nothing to change, said in a note
    assert alone.peak_bytes == _train().peak_bytes
    assert any(n.startswith("fsdp_outer_units not applied: there are no FSDP units") for n in alone.notes)
    tied = catalog_spec("llama-3.2-1b")  # one parameter for the embeddings and the head: left in the root
    own = estimate_training(tied, _setup(dp=8, fsdp="full", fsdp_outer_units=True))
    assert own.peak_bytes == estimate_training(tied, _setup(dp=8, fsdp="full")).peak_bytes
    assert any(n.startswith("fsdp_outer_units not applied") for n in own.notes)


def test_verify_refuses_outer_units_in_one_line() -> None:
    from vramwise.errors import VerifyUnsupportedError
    from vramwise.verify.twin import train_recipe

    with pytest.raises(VerifyUnsupportedError, match="fsdp_outer_units"):
        train_recipe(_setup(dp=8, fsdp="full", fsdp_outer_units=True))


def test_a_torchtune_config_s_custom_sharded_layers_are_read() -> None:
    from vramwise.configs.torchtune import read

    base = {"model": {"_component_": "torchtune.models.llama3_1.llama3_1_70b"}, "fsdp_cpu_offload": True}
    both = read({**base, "custom_sharded_layers": ["tok_embeddings", "output"]})  # 70B_full.yaml
    assert both.options["fsdp_outer_units"] is True and both.options["offload"] == "params"
    one = read({**base, "custom_sharded_layers": ["tok_embeddings"]})
    assert "fsdp_outer_units" not in one.options
    assert any(n.startswith("custom_sharded_layers") for n in one.notes)

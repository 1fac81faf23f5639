"""torchao's AdamW8bit (``--optimizer ao-adamw-8bit``) against arithmetic written out here.

Llama-3.2-3B shapes (h 3072, 28 layers, 24 heads and 8 kv heads of 128, intermediate 8192, V 128256, tied
embedding). The rules, from torchao 0.7.0 torchao/prototype/low_bit_optim/:
- adam.py _AdamBase._new_buffer: an 8-bit state (subclass_8bit.py OptimState8bit.zeros: uint8 codes of the
  parameter's shape, an fp32 scale per 256-element block, a 256-entry fp32 qmap) for numel >= 4096 divisible by 256,
  else ``torch.zeros_like(p)``, the parameter's dtype;
- adam.py _AdamBase.step: ``torch.compile(single_param_adam)`` per parameter; inductor realizes the two
  block-scaled fp32 states before requantizing them (quant_utils.py scale_tensor -> quantize_8bit_with_qmap), plus
  their new fp32 scales: 2 x 4 B x (numel + numel / 256) for the tensor being updated.
bitsandbytes' AdamW8bit (``adamw-8bit``) stays a fused kernel: no step transient.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramwise.app.setups import train_setup
from vramwise.configs import load
from vramwise.configs.emit import emit
from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.optimizers import AO_BLOCK, AO_STEP_FP32
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

ROOT = Path(__file__).resolve().parents[2]
H, L, V, FFN, KV = 3072, 28, 128256, 8192, 8 * 128
NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}
MATRICES = [(V * H, 1), (H * H, 2 * L), (H * KV, 2 * L), (H * FFN, 3 * L)]  # embedding; q, o; k, v; gate, up, down
NORMS = (2 * L + 1) * H  # 3,072 elements each: under 4096, plain states


def _train(**kw: object) -> Estimate:
    flat = {**NO_OVERHEAD, "precision": "bf16", "batch": 1, "seq": 1024, "peft": "none", **kw}
    return estimate_training(catalog_spec("llama-3.2-3b"), TrainSetup.from_flat(**flat))


def _transients(est: Estimate, name: str) -> list[int]:
    return [t.bytes for p in est.phases for t in p.transient if t.name == name]


def test_states_are_codes_scales_and_a_code_map_per_quantized_tensor() -> None:
    est = _train(optimizer="ao-adamw-8bit")
    numel = sum(n * k for n, k in MATRICES)
    tensors = sum(k for _, k in MATRICES)
    assert tensors == 1 + 7 * L
    assert all(n >= 4096 and n % 256 == 0 for n, _ in MATRICES)
    # two states: codes 1 B, a 4 B scale per 256 elements, a 256 x 4 B qmap per tensor; the norms' in bf16
    expected = 2 * (numel + 4 * numel // 256 + 4 * 256 * tensors) + 2 * NORMS * 2
    assert est.term("optimizer/states").bytes == expected


def test_the_compiled_step_holds_two_fp32_states_of_the_largest_tensor() -> None:
    est = _train(optimizer="ao-adamw-8bit")
    step = next(p for p in est.phases if p.kind is PhaseKind.OPTIMIZER_STEP)
    transient = next(t for t in step.transient if t.name == "optimizer/step_transient")
    assert transient.bytes == 2 * 4 * (V * H + V * H // 256)  # the tied embedding, the largest tensor
    assert "torchao 0.7.0" in transient.source


def test_bitsandbytes_8bit_step_is_still_a_fused_kernel() -> None:
    est = _train(optimizer="adamw-8bit")
    assert _transients(est, "optimizer/step_transient") == []
    # bitsandbytes keeps the small tensors' states in fp32 where torchao keeps the parameter's dtype
    ao = _train(optimizer="ao-adamw-8bit").term("optimizer/states").bytes
    bnb = est.term("optimizer/states").bytes
    tensors = 1 + 7 * L
    assert bnb - ao == 2 * NORMS * (4 - 2) - 2 * 4 * 256 * tensors


def test_in_backward_the_largest_tensor_steps_in_its_hook() -> None:
    # torchtune optimizer_in_bwd: one optimizer per parameter, stepped in its post-accumulate-grad hook; the
    # compiled step's buffers sit beside the largest gradient (the tied embedding's, stepped last)
    est = _train(optimizer="ao-adamw-8bit", recompute="full", optimizer_in_backward=True, framework="torchtune",
                 loss="torchtune-chunked")
    end = next(p for p in est.phases if p.kind is PhaseKind.BACKWARD_END)
    names = {t.name: t.bytes for t in end.transient}
    assert names["optimizer/step_transient"] == 2 * 4 * (V * H + V * H // 256)
    assert names["optimizer/in_backward_gradient"] == V * H * 2
    assert not [p for p in est.phases if p.kind is PhaseKind.OPTIMIZER_STEP and any(
        t.name == "optimizer/step_transient" for t in p.transient)]


def test_torchtune_recipe_names_torchao_and_round_trips(tmp_path: Path) -> None:
    setup = train_setup({"framework": "torchtune", "batch": 2, "seq": 4096, "optimizer": "ao-adamw-8bit"})
    text, _ = emit("torchtune", "llama-3.2-3b", setup)
    assert "torchao.optim.AdamW8bit" in text
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert train_setup(load(str(path)).options) == setup
    prototype = text.replace("torchao.optim.AdamW8bit", "torchao.prototype.low_bit_optim.AdamW8bit")
    path.write_text(prototype)
    assert load(str(path)).options["optimizer"] == "ao-adamw-8bit"


def test_the_traced_compile_allocates_two_fp32_states_and_two_scale_vectors() -> None:
    # bench/ao_step_buffers.py: torchao 0.7.0's AdamW8bit compiled on a bf16 parameter, inductor's buffers
    traced = json.loads((ROOT / "bench" / "data" / "compile" / "ao-adamw8bit-step-cpu.json").read_text("utf-8"))
    rows, cols = traced["param"]["shape"]
    fp32 = [b["numel"] for b in traced["buffers"] if b["dtype"] == "float32"]
    assert sorted(fp32) == sorted([rows * cols] * AO_STEP_FP32 + [rows * cols // AO_BLOCK] * AO_STEP_FP32)
    assert all(b["dtype"] == "float32" for b in traced["buffers"])


def test_deepspeed_zero_is_refused() -> None:
    """DeepSpeed ZeRO hands the client optimizer one flat fp32 partition per parameter group (stage_1_and_2.py
    DeepSpeedZeroOptimizer.__init__: ``param_group['params'] = [self.single_partition_of_fp32_groups[i]]``; stage3.py
    its fp32 sub-group partitions alike): torchao would quantize and step that one tensor, whose compiled step holds
    two fp32 copies of the whole partition (Llama-3.2-3B over 4 GPUs: 2 x 4 B x 3.2e9 / 4 = 6.4 GB), not of the
    largest parameter's shard. Not modelled: refused in one line naming the optimizer; FSDP (torchao's DTensor
    path, per parameter) stays."""
    from vramwise.errors import InvalidWorkloadError

    for zero in (1, 2, 3):
        with pytest.raises(InvalidWorkloadError, match="ao-adamw-8bit") as err:
            _train(optimizer="ao-adamw-8bit", zero=zero, dp=4)
        assert err.value.field == "optimizer"
    assert _train(optimizer="ao-adamw-8bit", fsdp="full", dp=4).peak_bytes > 0
    assert _train(optimizer="adamw-8bit", zero=2, dp=4).peak_bytes > 0  # bitsandbytes' kernel steps in place


def test_fit_min_gpus_shards_it_with_fsdp(capsys: pytest.CaptureFixture[str]) -> None:
    """fit --min-gpus shards with ZeRO-3 when no sharding is given; torchao's optimizer is modelled under FSDP only
    (the refusal above), so the search shards it with FSDP full instead of refusing every count past one."""
    from vramwise.cli import main

    assert main(["fit", "llama-3-8b", "--optimizer", "ao-adamw-8bit", "--gpu", "a10", "--min-gpus", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fits"] and doc["answer"]["value"] > 1
    assert "fsdp full" in doc["assumptions"]


def test_the_advice_adds_gpus_with_fsdp(capsys: pytest.CaptureFixture[str]) -> None:
    """The advice's "more GPUs" change is fit's fewest-GPU answer with its sharding: FSDP full here, as ZeRO-3 is
    refused for torchao's optimizer."""
    from vramwise.cli import main

    assert main(["train", "llama-3-8b", "--optimizer", "ao-adamw-8bit", "--gpu", "h100", "--json"]) == 3
    gpus = [a for a in json.loads(capsys.readouterr().out)["advice"] if a["kind"] == "gpus"]
    assert len(gpus) == 1 and gpus[0]["options"] == {"fsdp": "full"} and "--fsdp full" in gpus[0]["change"]

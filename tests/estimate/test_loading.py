"""The loading phase against hand arithmetic (estimate/train/loading.py; no trace loads a checkpoint on a CPU).

Llama-2-7B (catalog llama-2-7b: vocab 32,000, hidden 4,096, 32 layers, MLP 11,008, untied head, fp16 checkpoint):
  embeddings = head = 32,000 x 4,096                          = 131,072,000 each (the largest tensor, t)
  one layer = 4 x 4,096^2 + 3 x 4,096 x 11,008 + 2 x 4,096   = 202,383,360
  parameters = 32 x 202,383,360 + 2 x 131,072,000 + 4,096    = 6,738,415,616
  the root FSDP unit = embeddings + head + final norm         = 262,148,096 (> one layer: u)
bf16-mixed keeps 2-byte weights (estimate/train/recipe.py), so W = 13,476,831,232 B and, over 8 GPUs,
W/8 = 1,684,603,904 B. Without overheads (no context, no allocator reserve) and with no buffers (Llama has
none), the loading phase's total is exactly the bytes the path holds.
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Estimate, Phase, PhaseKind
from vramwise.estimate.train.loading import BNB_FORMATS
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.spec.model import ModelSpec
from vramwise.verify.twin import _steps_only
from vramwise.workload import TrainSetup

W = 6_738_415_616 * 2
SHARD = W // 8
T = 131_072_000 * 2  # the largest tensor (embeddings, head), 2 B
U = 262_148_096 * 2  # the root unit
BARE = {"cuda_context_mib": 0, "allocator_fraction": 0.0, "nccl_buffers": False}  # NCCL: estimate/train/comms.py


@pytest.fixture(scope="module")
def llama() -> ModelSpec:
    return catalog_spec("llama-2-7b")


def _loading(est: Estimate) -> Phase | None:
    return next((p for p in est.phases if p.kind is PhaseKind.LOAD), None)


def _load_total(spec: ModelSpec, **flat: object) -> int:
    est = estimate_training(spec, TrainSetup.from_flat(**BARE, **flat))
    phase = _loading(est)
    assert phase is not None, "the loading phase holds more than the model states here"
    return est.phase_total(phase)


def test_the_parameter_count_the_arithmetic_starts_from(llama: ModelSpec) -> None:
    assert W // 2 == 6_738_415_616 == 32 * 202_383_360 + 2 * 131_072_000 + 4_096
    assert SHARD == 1_684_603_904


def test_fsdp_full_holds_the_whole_model_and_its_shard(llama: ModelSpec) -> None:
    # auto under FSDP is fsdp-full; LoRA's states are small, so loading is the run's peak
    total = _load_total(llama, peft="lora", dp=8, fsdp="full")
    assert total == W + SHARD == 15_161_435_136
    est = estimate_training(llama, TrainSetup.from_flat(**BARE, peft="lora", dp=8, fsdp="full"))
    assert est.peak_phase is not None and est.peak_phase.kind is PhaseKind.LOAD
    assert est.term("loading/fsdp-full").bytes == total - est.persistent_bytes


def test_fsdp_meta_holds_the_shard_one_whole_tensor_and_its_shard(llama: ModelSpec) -> None:
    total = _load_total(llama, peft="lora", dp=8, fsdp="full", loading="fsdp-meta")
    assert total == SHARD + T + T // 8 == 1_684_603_904 + 262_144_000 + 32_768_000


def test_fsdp_sync_holds_the_shard_and_one_unit_twice(llama: ModelSpec) -> None:
    total = _load_total(llama, peft="lora", dp=8, fsdp="full", loading="fsdp-sync")
    assert total == SHARD + 2 * U == 1_684_603_904 + 1_048_592_384


def test_zero_init_holds_the_shard_and_one_gathered_module(llama: ModelSpec) -> None:
    # a small reduce bucket: ZeRO-3's (stage3.py _setup_for_real_optimizer, 5e8 x 4 B for fp32 adapters by default)
    # is allocated after loading and would leave the loading phase below the step's states
    total = _load_total(llama, peft="lora", dp=8, zero=3, reduce_bucket=1000)
    assert total == SHARD + T


def test_a_device_map_cast_adds_four_source_tensors(llama: ModelSpec) -> None:
    # fp32 weights from an fp16 checkpoint: each tensor is staged in fp16 on the GPU, 4 threads at once
    total = _load_total(llama, peft="lora", precision="fp32", loading="hf-device-map")
    assert total == 6_738_415_616 * 4 + 4 * 131_072_000 * 2


def test_bnb_quantize_adds_one_16_bit_weight(llama: ModelSpec) -> None:
    # the largest quantized linear is an MLP projection: 4,096 x 11,008 in the checkpoint's fp16 (90,177,536 B);
    # rank 8 keeps the adapters' states (32 x 2 x 8 x 8,192 x 12 B = 50,331,648) below it
    est = estimate_training(llama, TrainSetup.from_flat(**BARE, peft="qlora", lora_r=8))
    phase = _loading(est)
    assert phase is not None
    weights = sum(t.bytes for t in est.persistent if t.name.startswith("weights/") and t.name != "weights/lora")
    assert est.phase_total(phase) == weights + 4_096 * 11_008 * 2


@pytest.mark.parametrize(
    "flat",
    [
        {},  # hf: the weights and no more, all of which the step keeps
        {"peft": "lora"},
        {"dp": 8, "fsdp": "full", "loading": "fsdp-meta"},  # full fine-tuning: the states outweigh loading
    ],
)
def test_no_loading_phase_when_the_states_outweigh_it(llama: ModelSpec, flat: dict[str, object]) -> None:
    assert _loading(estimate_training(llama, TrainSetup.from_flat(**BARE, **flat))) is None


@pytest.mark.parametrize(
    ("flat", "needs"),
    [
        ({"loading": "fsdp-full"}, "--fsdp"),
        ({"loading": "zero-init", "dp": 8, "zero": 2}, "--zero 3"),
        ({"loading": "bnb-quantize", "peft": "lora"}, "bitsandbytes"),
        ({"loading": "hf-device-map", "dp": 8, "zero": 3}, "no --fsdp"),
        ({"loading": "hf-device-map", "dp": 8, "fsdp": "full"}, "fsdp-full"),
        ({"loading": "hf", "dp": 8, "zero": 3}, "zero-init"),
        ({"loading": "hf", "dp": 8, "fsdp": "full"}, "fsdp-"),
    ],
)
def test_a_path_the_layout_cannot_run_is_refused(llama: ModelSpec, flat: dict[str, object], needs: str) -> None:
    with pytest.raises(InvalidWorkloadError, match=needs) as err:
        estimate_training(llama, TrainSetup.from_flat(**flat))
    assert err.value.field == "loading"


def test_a_run_whose_peak_is_loading_says_it_dies_while_loading() -> None:
    spec = catalog_spec("llama-3-70b")
    est = estimate_training(spec, TrainSetup.from_flat(peft="lora", dp=8, fsdp="full"))
    assert est.peak_phase is not None and est.peak_phase.kind is PhaseKind.LOAD
    assert any("dies while loading" in n and "fsdp-full" in n for n in est.notes)
    meta = estimate_training(spec, TrainSetup.from_flat(peft="lora", dp=8, fsdp="full", loading="fsdp-meta"))
    assert meta.peak_bytes < est.peak_bytes and not any("dies while loading" in n for n in meta.notes)


def test_the_bitsandbytes_formats_are_those_whose_source_is_bitsandbytes() -> None:
    from vramwise.formats import _BNB, FORMATS

    assert {name for name, f in FORMATS.items() if f.source == _BNB} == set(BNB_FORMATS)


def test_verify_leaves_the_untraced_loading_phase_out(llama: ModelSpec) -> None:
    est = estimate_training(llama, TrainSetup.from_flat(**BARE, peft="lora", dp=8, fsdp="full"))
    steps = _steps_only(est)
    assert all(p.kind is not PhaseKind.LOAD for p in steps.phases)
    assert steps.peak_bytes == max(est.phase_total(p) for p in est.phases if p.kind is not PhaseKind.LOAD)


def test_fit_says_when_loading_is_what_no_gpu_count_fits() -> None:
    from vramwise.catalog import get_gpu
    from vramwise.errors import DoesNotFitError
    from vramwise.fit.solve import min_gpus

    spec, budget = catalog_spec("llama-3-70b"), get_gpu("h100").memory_bytes
    # fsdp-full holds the whole 70B model (141 GB in bf16) on every GPU, whatever their number
    with pytest.raises(DoesNotFitError, match=r"while loading the checkpoint \(fsdp-full\)"):
        min_gpus(spec, TrainSetup.from_flat(peft="lora", dp=2, fsdp="full"), budget)
    # loading a shard, some count fits (one GPU, which shards nothing, loads with hf)
    answer = min_gpus(spec, TrainSetup.from_flat(peft="lora", dp=2, fsdp="full", loading="fsdp-meta"), budget)
    assert answer.at is not None and answer.at.peak_bytes <= budget


def test_fsdp_full_names_accelerates_fp32_upcast_without_adding_it(llama: ModelSpec) -> None:
    # accelerate fsdp2_prepare_model would upcast every trainable parameter to fp32 before fully_shard: 2 B more per
    # parameter whole (13,476,831,232) and in the shard (/ 8); torch's FSDP does not, and that is what is counted
    est = estimate_training(llama, TrainSetup.from_flat(**BARE, dp=8, fsdp="full"))  # full fine-tuning, bf16-mixed
    phase = _loading(est)
    assert phase is not None and est.phase_total(phase) == W + SHARD
    assert "13,476,831,232 more whole and 1,684,603,904 more in the shard: not counted" in phase.transient[0].formula

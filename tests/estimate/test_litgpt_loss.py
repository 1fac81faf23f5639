"""LitGPT's loss region under Lightning Fabric, against arithmetic written out here and the traced step.

Lightning 2.1.0 fabric/wrappers.py _FabricModule.forward casts the model's output with the precision plugin's
convert_output (HalfPrecision, BitsandbytesPrecision and FSDPPrecision alike: ``torch.get_default_dtype()``,
fp32), so lit-gpt 8641822's chunked cross entropy runs on fp32 logit chunks, and finetune/lora.py's loop keeps
that list in ``logits`` until the next step's forward has returned. Per token: the fp32 logits (4 B x V) in every
phase, the fp32 log-softmax (4 B x V) until the loss backward, which adds one chunk's nll and log-softmax gradients
(2 x 4 B x V x b x 128 positions); at the forward's end the previous list, the new bf16 chunks and their fp32
copies. Llama-2-7B: V 32000.

bench/litgpt_step.py traces LitGPT's own step at 8641822 under FakeTensorMode (bench/data/compile/
litgpt-step-cpu.json): the estimate's tensor peak must not be under it, and within 0.5% above.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from phase_sums import transient_sums as _phase

from vramwise.estimate.overheads import is_tensor
from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

ROOT = Path(__file__).resolve().parents[2]
V, SEQ, CHUNK = 32000, 1304, 128
NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}


def _train(batch: int, **kw: object) -> Estimate:
    # the LitGPT preset's values (workload/frameworks.py), as bench/data/training/manifest.toml's litgpt rows
    flat = {**NO_OVERHEAD, "framework": "litgpt", "precision": "bf16", "peft": "lora", "lora_r": 8,
            "lora_targets": ("q_proj", "v_proj"), "lora_dropout": 0.05, "adapter_dtype": "bf16", "optimizer": "adamw",
            "loss": "compute-dtype", "loss_chunk": CHUNK, "batch": batch, "grad_accum": 128 // batch, "seq": SEQ, **kw}
    return estimate_training(catalog_spec("llama-2-7b"), TrainSetup.from_flat(**flat))


def _tensor_peak(est: Estimate) -> int:
    base = sum(t.bytes for t in est.persistent if is_tensor(t.name))
    return base + max(sum(t.bytes for t in p.transient if is_tensor(t.name)) for p in est.phases)


@pytest.mark.parametrize("batch", [1, 2])
def test_fp32_logits_and_log_softmax_until_the_loss_backward(batch: int) -> None:
    est = _train(batch)
    T = batch * SEQ
    loss = _phase(est, PhaseKind.BACKWARD_LOSS)
    assert loss["loss/held_logits"] == 4 * V * T
    assert loss["activations/loss"] == 4 * V * T
    assert loss["loss/backward"] == 2 * 4 * V * batch * CHUNK


def test_the_loop_keeps_one_list_in_every_phase_and_two_while_the_next_cast_runs() -> None:
    est = _train(1)
    T = SEQ
    for phase in est.phases:
        if phase.kind is not PhaseKind.LOAD:
            assert {t.name: t.bytes for t in phase.transient}["loss/held_logits"] == 4 * V * T, phase.kind
    assert "activations/loss" not in _phase(est, PhaseKind.BACKWARD_LAYER)  # released by the loss backward
    # the forward's end, while Fabric casts the new chunks: the previous fp32 list, the new bf16 chunks and their
    # fp32 copies (counted in the log-softmax's place, the same bytes)
    end = _phase(est, PhaseKind.FORWARD_END)
    assert end["loss/held_logits"] + end["loss/logits"] + end["activations/loss"] == (4 + 2 + 4) * V * T


def test_qlora_casts_its_output_too() -> None:
    # BitsandbytesPrecision.convert_output: the same fp32 cast
    loss = _phase(_train(1, peft="qlora"), PhaseKind.BACKWARD_LOSS)
    assert loss["loss/held_logits"] == loss["activations/loss"] == 4 * V * SEQ


def test_not_under_the_traced_step() -> None:
    runs = json.loads((ROOT / "bench" / "data" / "compile" / "litgpt-step-cpu.json").read_text("utf-8"))["runs"]
    for run in runs:
        assert run["seq"] == SEQ
        traced = run["peak_bytes"]
        estimate = _tensor_peak(_train(run["batch"]))
        assert traced <= estimate <= traced * 1.005, (run["batch"], estimate, traced)


@pytest.mark.parametrize("loss", ["full", "chunked", "liger", "cce", "torchtune-linear"])
def test_another_loss_than_litgpts_own_is_refused(loss: str) -> None:
    """lit-gpt 8641822 finetune/lora.py computes chunked_cross_entropy on the head's chunks, cast to fp32 by Fabric
    and kept by the loop: another --loss is no flag of its script, and the plan of one would drop those held fp32
    logits (the advice offered --loss chunked to a LitGPT run: Llama-3.2-1B, seq 4096, an RTX 3060)."""
    from vramwise.errors import InvalidWorkloadError

    with pytest.raises(InvalidWorkloadError, match="--framework litgpt") as err:
        _train(1, loss=loss)
    assert err.value.field == "loss"


def test_the_advice_offers_no_other_loss_to_a_litgpt_run(capsys: pytest.CaptureFixture[str]) -> None:
    from vramwise.cli import main

    argv = ["train", "llama-3.2-1b", "--framework", "litgpt", "--peft", "lora", "--seq", "4096", "--gpu", "rtx-3060"]
    assert main([*argv, "--json"]) == 3
    advice = json.loads(capsys.readouterr().out)["advice"]
    assert advice and "loss" not in {a["kind"] for a in advice}

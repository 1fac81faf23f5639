"""Phase kinds: every phase an estimator builds has one, and verify compares every kind with a traced step."""

from __future__ import annotations

import pytest
from tiny_configs import ENCODER_DECODER, VLM

from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.term import Estimate, Phase, PhaseKind, Step, Term
from vramwise.estimate.train.training import estimate_stages
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import resolve_model
from vramwise.verify import twin
from vramwise.workload import InferSetup, TrainSetup

# Layouts that between them build every training phase: loss, recompute, FSDP's layer and head backward.
_TRAIN = [
    ("llama-3-8b", {}),
    ("llama-3-8b", {"recompute": "full", "grad_accum": 4}),
    ("llama-3-8b", {"dp": 8, "fsdp": "full", "precision": "bf16"}),
    ("mixtral-8x7b", {"pp": 4, "dp": 2, "peft": "lora"}),
    ("llama-3-8b", {"dp": 8, "fsdp": "full", "peft": "lora"}),  # loading the whole model is its peak
    ("llama-3-8b", {"peft": "dora", "attention": "eager"}),  # DoRA's rebuilt weight, eager attention's backward
    ("llama-3-8b", {"loss": "torchtune-chunked", "precision": "bf16"}),  # the head's chunked matmuls' backward
]


def _term(n: int) -> Term:
    return Term(name="x", bytes=n, formula="", source="test")


def test_every_kind_belongs_to_a_step() -> None:
    assert all(isinstance(kind.step, Step) for kind in PhaseKind)  # a kind without a step raises KeyError


@pytest.mark.parametrize("kind", list(PhaseKind), ids=[k.name for k in PhaseKind])
def test_twin_counts_a_phase_in_its_steps_peak_only(kind: PhaseKind) -> None:
    est = Estimate(persistent=(_term(5),), phases=(Phase(kind=kind, transient=(_term(100),)),))
    for step in Step:
        assert twin.step_peak(est, step) == (105 if step is kind.step else 0)


def test_every_backward_kind_counts_in_backward_peak() -> None:
    backward = [kind for kind in PhaseKind if kind.step is Step.BACKWARD]
    assert len(backward) == 7  # loss, recompute, layer, head, end, attention, head chunks
    phases = tuple(Phase(kind=kind, transient=(_term(10 * i),)) for i, kind in enumerate(backward, 1))
    est = Estimate(persistent=(), phases=phases)
    assert twin.step_peak(est, twin.TRAINING_PEAKS["backward_peak"]) == 10 * len(backward)


def test_every_phase_built_has_a_kind_that_verify_compares() -> None:
    seen: set[PhaseKind] = set()
    for model, kw in _TRAIN:
        for est in estimate_stages(resolve_model(model), TrainSetup.from_flat(**kw)):
            for p in est.phases:
                assert isinstance(p.kind, PhaseKind) and p.name == p.kind.value
                # loading is not traced (no checkpoint on a CPU): verify leaves it out (twin._steps_only)
                assert p.kind.step in twin.TRAINING_PEAKS.values() or p.kind.step is Step.LOAD
                seen.add(p.kind)
    t5 = spec_from_config(ENCODER_DECODER["t5"], name="t5", source="test")  # T5 buckets its relative positions
    llava = spec_from_config(VLM["llava"], name="llava", source="test")  # its vision tower runs before the text
    for est in (
        estimate_inference(resolve_model("mistral-7b"), InferSetup(context=8192, new_tokens=4)),
        estimate_inference(t5, InferSetup(context=512, new_tokens=4)),
        estimate_inference(llava, InferSetup(context=512, new_tokens=4, images=1)),
    ):
        for p in est.phases:
            assert isinstance(p.kind, PhaseKind) and p.kind.step in twin.INFERENCE_STEPS
            seen.add(p.kind)
    assert seen == set(PhaseKind)  # not vacuous: the setups above build every kind there is


def test_display_names_are_unchanged() -> None:
    assert [k.value for k in PhaseKind] == [
        "prefill (inside a layer)",
        "prefill (logits)",
        "decode step",
        "forward end",
        "backward (loss)",
        "backward (recompute)",
        "backward (layer)",
        "backward (head)",
        "backward end",
        "optimizer step",
        "prefill (vision encoder)",
        "prefill (position bias)",
        "loading (checkpoint)",
        "forward (layer)",  # issue 14: FSDP2's forward at a layer's all-gather copy-out
        "forward (DoRA weight norm)",
        "backward (attention)",
        "backward (head chunks)",
    ]

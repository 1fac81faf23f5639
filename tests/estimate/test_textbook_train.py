"""The seeds' training formulas, reproduced from their worked examples and written-out arithmetic."""

from __future__ import annotations

import math

import pytest

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.estimate.textbook import seed_param_formula
from vramwise.estimate.textbook.training import (
    korthikanti_activations,
    seed000_training_terms,
    seed002_model_states,
)

GIB = 2**30


def _seed_gib(n_bytes: int) -> float:
    """Seed 000 shows each term truncated (not rounded) to two decimals of GiB."""
    return math.floor(n_bytes / GIB * 100) / 100


def test_seed000_qwen15_7b_lora() -> None:
    # Qwen1.5-7B (7.7e9) + LoRA (2% extra trainable) + 2k context: 43.88 + 0.50 + 0.57 + 1.72 = 46.67 GiB
    terms = seed000_training_terms(params=7.7e9, trainable_fraction=0.02, tokens=2048, hidden=4096, layers=32)
    shown = [_seed_gib(t.bytes) for t in terms]
    assert shown == [43.88, 0.50, 0.57, 1.72]
    assert round(sum(shown), 2) == 46.67
    assert terms[0].bytes == round(7.7e9 * 1.02 * 6)  # model
    assert terms[1].bytes == 2 * 2048 * 4096 * 32  # activations, exactly 0.5 GiB


def test_seed000_qwen15_7b_full_finetune() -> None:
    # 43.02 + 0.50 + 28.68 + 86.05 = 158.25 GiB
    terms = seed000_training_terms(params=7.7e9, trainable_fraction=1.0, tokens=2048, hidden=4096, layers=32)
    shown = [_seed_gib(t.bytes) for t in terms]
    assert shown == [43.02, 0.50, 28.68, 86.05]
    assert round(sum(shown), 2) == 158.25
    assert [t.bytes for t in terms] == [46_200_000_000, 536_870_912, 30_800_000_000, 92_400_000_000]


@pytest.mark.parametrize(("optimizer", "k"), [("adamw", 12), ("sgd-momentum", 8), ("adamw-8bit", 6), ("lomo", 0)])
def test_seed002_model_states_4_plus_k(optimizer: str, k: int) -> None:
    assert seed002_model_states(params=1e9, optimizer=optimizer).bytes == (4 + k) * 10**9


def test_seed002_zero_stages() -> None:
    phi = 10**9
    assert seed002_model_states(params=phi, zero=0).bytes == 16 * phi
    assert seed002_model_states(params=phi, zero=1, dp=8).bytes == 5.5 * phi  # 16Φ -> 5.5Φ on 8 GPUs
    assert seed002_model_states(params=phi, zero=2, dp=8).bytes == (2 + 14 / 8) * phi
    assert seed002_model_states(params=phi, zero=3, dp=8).bytes == 16 * phi / 8


def test_zero_needs_data_parallel_gpus() -> None:
    with pytest.raises(InvalidLayoutError, match="dp must be >= 2"):
        seed002_model_states(params=1e9, zero=3, dp=1)
    with pytest.raises(InvalidWorkloadError, match="allowed"):
        seed002_model_states(params=1e9, optimizer="rmsprop")


# GPT-3 175B as in Korthikanti et al. (2022): s 2048, h 12288, a 96, L 96; micro-batch 1, t 8.
G = {"s": 2048, "b": 1, "h": 12288, "a": 96, "layers": 96}
SBH = 2048 * 1 * 12288
S2 = 5 * 96 * 2048 * 2048 * 1


@pytest.mark.parametrize(
    ("kwargs", "per_layer"),
    [
        ({}, 34 * SBH + S2),
        ({"recompute": "selective"}, 34 * SBH),
        ({"recompute": "full"}, 2 * SBH),
        ({"tp": 8}, SBH * (10 + 24 / 8 + 5 * 96 * 2048 / (12288 * 8))),
        ({"tp": 8, "sequence_parallel": True}, SBH / 8 * (34 + 5 * 96 * 2048 / 12288)),
        ({"tp": 8, "sequence_parallel": True, "recompute": "selective"}, 34 * SBH / 8),
    ],
)
def test_korthikanti_variants(kwargs: dict, per_layer: float) -> None:
    assert korthikanti_activations(**G, **kwargs).bytes == pytest.approx(per_layer * 96, abs=1)


def test_pipeline_first_stage_holds_all_layers_and_interleaving_adds() -> None:
    plain = korthikanti_activations(**G, tp=8, sequence_parallel=True).bytes
    assert korthikanti_activations(**G, tp=8, sequence_parallel=True, pp=8).bytes == plain
    interleaved = korthikanti_activations(**G, tp=8, sequence_parallel=True, pp=8, interleave=4).bytes
    assert interleaved == pytest.approx(plain * (1 + 7 / 32), abs=1)


def test_layouts_that_cannot_exist() -> None:
    with pytest.raises(InvalidLayoutError, match="pp"):
        korthikanti_activations(**G, pp=97)
    with pytest.raises(InvalidLayoutError, match="tp"):
        korthikanti_activations(**G, tp=7)


def test_seed_parameter_formula_gives_gpt3_175b() -> None:
    # Vh + L(12h² + 13h) for GPT-3 (V 50257, h 12288, L 96) against the published 175B
    assert seed_param_formula(50257, 12288, 96) == pytest.approx(175e9, rel=0.005)

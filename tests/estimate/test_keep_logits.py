"""``--keep-logits``: a plain loop's ``outputs = model(**batch)`` keeps the model's output logits until the next step's
forward returns (peft's MetaMathQA run.py train), so every phase of the step holds them.

Oracles: arithmetic written out (b x s x V x the compute dtype's bytes; prompt tuning's virtual tokens run through
the model too); the same estimate without the option, phase by phase.
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

LLAMA32_3B_VOCAB = 128_256  # meta-llama/Llama-3.2-3B config.json vocab_size


def _phases(flat: dict) -> dict[str, int]:
    est = estimate_training(catalog_spec("llama-3.2-3b"), TrainSetup.from_flat(**flat))
    persistent = sum(t.bytes for t in est.persistent)
    return {p.name: persistent + sum(t.bytes for t in p.transient if t.name != "overhead/allocator")
            for p in est.phases}


@pytest.mark.parametrize(("flat", "positions"), [
    ({"peft": "lora", "precision": "bf16"}, 768),
    ({"peft": "none", "precision": "bf16"}, 768),
    ({"peft": "prompt-tuning", "num_virtual_tokens": 200, "precision": "bf16"}, 768 + 200),
    ({"peft": "lora", "precision": "bf16-mixed"}, 768),
])
def test_every_phase_holds_the_logits(flat: dict, positions: int) -> None:
    base = {"batch": 4, "seq": 768, "allocator_fraction": 0.0, **flat}
    kept, plain = _phases({**base, "keep_logits": True}), _phases(base)
    logits = 4 * positions * LLAMA32_3B_VOCAB * 2  # b x positions x V x 2 B (bf16 compute)
    assert kept.keys() == plain.keys()
    assert all(kept[name] - plain[name] == logits for name in plain)


@pytest.mark.parametrize("flat", [
    {"loss": "liger"},
    {"loss": "chunked"},
    {"framework": "litgpt", "loss": "compute-dtype"},
    {"tp": 2},
])
def test_a_setup_without_whole_logits_is_refused_in_one_line(flat: dict) -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        estimate_training(catalog_spec("llama-3.2-3b"), TrainSetup.from_flat(keep_logits=True, **flat))
    assert err.value.field == "keep_logits" and "\n" not in str(err.value)


def test_default_keeps_nothing() -> None:
    assert TrainSetup().impl.keep_logits is False
    est = estimate_training(catalog_spec("llama-3.2-3b"), TrainSetup())
    assert not any(t.name == "loss/held_logits" for p in est.phases for t in p.transient)


def test_an_encoder_decoder_refusal_speaks_of_the_logits_not_of_kernels() -> None:
    """T5's refusal of --keep-logits came from the encoder-decoder check of implementation knobs, which said the
    stacks are 'modelled with transformers' eager kernels': keep_logits is no kernel; the refusal is _kept_logits'."""
    with pytest.raises(InvalidWorkloadError) as err:
        estimate_training(catalog_spec("t5-small"), TrainSetup.from_flat(keep_logits=True, seq=128))
    assert err.value.field == "keep_logits" and "kernels" not in str(err.value)
    assert "causal LM's logits" in str(err.value)

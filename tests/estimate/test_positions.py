"""W7: a learned position table refuses a longer context; a rotary model past its trained length gets a note.

Oracle: the configs' own tables. GPT-2's wpe has n_positions = 1,024 rows; OPT's embed_positions has
max_position_embeddings + 2 rows (OPTLearnedPositionalEmbedding's offset), 2,048 usable; BERT's
position_embeddings 512. transformers indexes these tables by position, so one more position is an IndexError.
Llama-3-8B is rotary with max_position_embeddings 8,192 (its config.json).
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.inference import estimate_inference, inference_peak
from vramwise.estimate.positions import position_limit
from vramwise.estimate.textbook.inference import textbook_inference
from vramwise.estimate.train.textbook_mode import textbook_training
from vramwise.estimate.train.training import estimate_stages, estimate_training, phase_totals, training_peak
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup, TrainSetup


@pytest.mark.parametrize(
    ("model", "rows"), [("gpt2", 1024), ("gpt2-xl", 1024), ("opt-1.3b", 2048), ("bert-base-cased", 512)]
)
def test_learned_tables_refuse_one_position_more_in_inference(model: str, rows: int) -> None:
    spec = catalog_spec(model)
    assert position_limit(spec) == rows
    n = 16 if spec.traits.causal_kv_cache else 0  # an encoder (BERT) generates nothing: its -n is refused
    assert inference_peak(spec, InferSetup(context=rows - n, new_tokens=n)) > 0  # exactly the table: runs
    longer = [InferSetup(context=rows + 1), *([InferSetup(context=rows - n, new_tokens=n + 1)] if n else [])]
    for setup in longer:
        for estimate in (inference_peak, estimate_inference, textbook_inference):
            with pytest.raises(InvalidWorkloadError, match=f"at most {rows:,}") as err:
                estimate(spec, setup)
            assert err.value.field == "context" and len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("model", ["gpt2", "opt-1.3b"])
def test_learned_tables_refuse_a_longer_training_sequence_even_from_a_cached_plan(model: str) -> None:
    spec = catalog_spec(model)
    rows = position_limit(spec)
    assert rows
    ok = TrainSetup.from_flat(seq=rows)
    assert training_peak(spec, ok) > 0  # builds and caches the plan that the longer sequence shares
    long = TrainSetup.from_flat(seq=rows + 1)
    for estimate in (training_peak, estimate_training, estimate_stages, phase_totals, textbook_training):
        with pytest.raises(InvalidWorkloadError, match="seq") as err:
            estimate(spec, long)
        assert err.value.field == "seq"


def test_rotary_model_past_its_trained_length_gets_a_note_not_a_refusal() -> None:
    spec = catalog_spec("llama-3-8b")
    assert position_limit(spec) == 8192
    within, beyond = InferSetup(context=8192), InferSetup(context=8000, new_tokens=193)
    assert not [n for n in estimate_inference(spec, within).notes if "rope" in n]
    assert [n for n in estimate_inference(spec, beyond).notes if "rope scaling" in n and "8,193" in n]
    train = estimate_training(spec, TrainSetup.from_flat(seq=16384))
    assert [n for n in train.notes if "rope scaling" in n and "16,384" in n]
    assert training_peak(spec, TrainSetup.from_flat(seq=16384)) == train.peak_bytes

"""fit's largest context or sequence says when memory allows more positions than the model was trained on."""

from __future__ import annotations

from vramwise.app.fitting import FitRequest, Question, fit


def test_a_context_past_the_trained_positions_is_said() -> None:
    # Llama-3.1-8B: max_position_embeddings 131,072 (its config.json); 192 GB holds far more KV cache than that
    r = fit(FitRequest(model="llama-3.1-8b", gpu="192GB", question=Question.MAX, target="context", infer=True))
    assert r.answer is not None and int(r.answer.value) > 131_072
    assert any("exceeds max_position_embeddings 131,072" in n for n in r.notes)


def test_a_context_within_the_trained_positions_has_no_such_note() -> None:
    r = fit(FitRequest(model="llama-3.1-8b", gpu="24GB", question=Question.MAX, target="context", infer=True))
    assert r.answer is not None and int(r.answer.value) <= 131_072
    assert not any("max_position_embeddings" in n for n in r.notes)

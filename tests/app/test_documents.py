"""app/documents.py: the --json documents every front end returns, built from option values by name.

The web API and the MCP server pass only the options a request names (no argparse defaults), so each request
builder must take a partial mapping; the document's own fields must agree with each other and with ``fits``."""

from __future__ import annotations

from vramwise.app.documents import (
    fit_document,
    fit_request,
    infer_document,
    infer_request,
    train_document,
    train_request,
)


def test_train_document_from_partial_values_agrees_with_itself() -> None:
    values = {"model": "llama-3-8b", "gpu": "4090"}
    answered = train_document(train_request(values, {}))
    doc = answered.doc
    assert answered.fits is doc["gpu"]["fits"] is False  # 8B full fine-tuning needs far more than 24 GB
    # headroom is the GPU's CUDA-visible total less the peak, written out
    assert doc["gpu"]["headroom_bytes"] == doc["gpu"]["memory_bytes"] - doc["peak"]["bytes"]
    assert doc["advice"], "a miss always carries the single changes that make it fit"
    for s in doc["advice"]:
        assert s["peak_bytes"] <= doc["gpu"]["memory_bytes"]


def test_a_fitting_setup_has_no_advice() -> None:
    answered = infer_document(infer_request({"model": "llama-3.2-1b", "gpu": "h100"}, {"batch": 1}))
    assert answered.fits is answered.doc["gpu"]["fits"] is True
    assert "advice" not in answered.doc


def test_fit_answer_and_miss() -> None:
    hit = fit_document(fit_request({"model": "llama-3.2-1b", "gpu": "h100", "max": "batch"}, {"peft": "lora"}))
    assert hit.fits and hit.doc["fits"] is True and hit.doc["answer"]["value"] >= 1
    miss = fit_document(fit_request({"model": "llama-3-70b", "gpu": "4090", "max": "batch"}, {}))
    assert miss.fits is miss.doc["fits"] is False
    assert miss.doc["answer"] is None and "batch 1 already needs" in miss.doc["reason"]

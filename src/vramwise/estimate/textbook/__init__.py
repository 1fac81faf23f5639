"""Textbook mode: the seeds' formulas exactly as written, so users can reproduce the literature to the cent.

    inference.py  seed 000's bytes per parameter (and its x 1.2 rule), seed 002's KV cache and parameter count;
                  ``textbook_inference`` applies them to a model and an InferSetup
    training.py   the seeds' training formulas as Terms of plain numbers: seed 000's four terms, seed 002's
                  model states with ZeRO, Korthikanti's activations

Applying the training formulas to a model and a TrainSetup needs the training layout (the padded vocabulary),
so it lives on the training floor: ``estimate/train/textbook_mode.py``.
"""

from __future__ import annotations

from vramwise.estimate.textbook.inference import seed_param_formula, textbook_inference

__all__ = ["seed_param_formula", "textbook_inference"]

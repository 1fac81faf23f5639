"""How many token positions a model can address: a learned table refuses beyond its rows, rotary gets a note.

A learned position table (GPT-2's wpe, OPT's embed_positions, BERT's position_embeddings) has one row per
position: a longer sequence indexes past it, and transformers raises an IndexError (GPT-2: "index out of range
in self" from the embedding lookup). Its limit is ``max_position_embeddings`` (GPT-2's n_positions; OPT's
table holds 2 rows more, its padding offset, ``OPTLearnedPositionalEmbedding``), else the table's rows.
Rotary positions are computed, not looked up: a longer context runs, but past the trained length the model
needs rope scaling (``rope_scaling``), so the estimate carries a note rather than a refusal.
Both estimators (inference and training, accurate and textbook) call ``inference_positions`` or
``training_positions``; they are O(1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramwise.errors import InvalidWorkloadError
from vramwise.spec.model import ModelSpec
from vramwise.spec.traits import Positions

if TYPE_CHECKING:  # annotations only: `vramwise infer` must not load the training setup
    from vramwise.workload import InferSetup, TrainSetup


def position_limit(spec: ModelSpec) -> int | None:
    """The most positions ``spec`` was built for (None: the config does not say)."""
    m = spec.max_position_embeddings
    if isinstance(m, int) and not isinstance(m, bool) and m > 0:
        return m
    if spec.traits.positions is Positions.LEARNED and spec.embedding.learned_positions:
        return spec.embedding.learned_positions
    return None


def check_positions(spec: ModelSpec, tokens: int, field: str) -> str | None:
    """Refuse ``tokens`` positions beyond a learned table; beyond a rotary model's trained length, the note to
    add (None when within it). ``field`` names the input the tokens come from ("context + new tokens")."""
    limit = position_limit(spec)
    if limit is None or tokens <= limit:
        return None
    if spec.traits.positions is Positions.LEARNED:
        raise InvalidWorkloadError(
            f"{field}: {tokens:,} positions, beyond {spec.name}'s learned position table of {limit:,} "
            f"(max_position_embeddings); at most {limit:,}",
            field=field.split()[0],
            allowed=f"at most {limit:,} positions in all (the learned position table)",
        )
    if spec.traits.positions is Positions.NONE:  # nothing to scale: the trained length is all the config says
        return (
            f"{field} {tokens:,} exceeds the {limit:,} positions the model was trained on; memory is estimated as asked"
        )
    return (
        f"{field} {tokens:,} exceeds max_position_embeddings {limit:,}: the model needs rope scaling "
        "(rope_scaling) to run it; memory is estimated as asked"
    )


def inference_positions(spec: ModelSpec, setup: InferSetup) -> str | None:
    """``check_positions`` for the prompt plus the generated tokens."""
    return check_positions(spec, setup.tokens, "context + new tokens" if setup.new_tokens else "context")


def training_positions(spec: ModelSpec, setup: TrainSetup) -> str | None:
    """``check_positions`` for the training sequence (whole: context parallelism splits it, not its positions)."""
    return check_positions(spec, setup.seq, "seq")

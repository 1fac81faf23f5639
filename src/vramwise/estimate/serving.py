"""The serving capacity as outputs report it: a serving engine's KV pool and concurrency, read from its plan.

The numbers come from the engine's one plan (engines/, ``EngineEstimate``; app/run.py ``_capacity``), never
recomputed here: a second budget rule beside vLLM's plan is what made ``fit --best-format`` print "fits" beside
"0 sequences" (it lived here as ``serving_capacity`` until issue 13).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.estimate.term import Term


@dataclass(frozen=True, kw_only=True)
class Capacity:
    budget: Term  # bytes the KV pool gets
    kv_bytes_per_token: int  # all layers, one token, one sequence (no window bound)
    kv_tokens: int  # tokens of KV that fit, as vLLM logs "GPU KV cache size"
    sequence_tokens: int  # s + n of the requested workload
    max_sequences: int  # concurrent sequences of sequence_tokens that fit
    # a hybrid's Mamba layers: their state pages per sequence in vLLM's pool, beside the attention layers' KV
    # blocks (0 for a transformer); max_sequences counts it, kv_tokens does not
    state_bytes_per_sequence: int = 0

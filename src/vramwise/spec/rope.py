"""The rotary position embedding's configuration: scaling type, factor, original context, partial rotary.

Parameter counts do not depend on it (rotary tables are buffers, not parameters); the serving engines size the
cos/sin table they build once at load from it (engines/rope_cache.py). Read by spec/adapters/rope.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RopeSpec:
    """One model's rotary configuration, as its config.json states it."""

    rope_type: str = "default"  # rope_scaling's rope_type: default, linear, dynamic, yarn, llama3, longrope, ...
    factor: float = 1.0  # rope_scaling's factor (1 without scaling)
    original_max_position: int | None = None  # rope_scaling's (or the config's) original_max_position_embeddings
    partial_rotary_factor: float = 1.0  # the share of each head the rotation covers (Phi-2 0.4, NeoX's rotary_pct)
    # vLLM's gpt_oss.py (v0.10.2, v0.11.0 GptOssAttention.__init__) and minimax_text_01.py pass dtype=torch.float32
    # to get_rope: the family's table is kept in fp32 whatever the model dtype
    fp32_table: bool = False
    # Gemma 3's sliding layers rotate with rope_local_base_freq and no scaling (vllm/model_executor/models/gemma3.py
    # Gemma3Attention.__init__ at v0.11.0): a second table beside the global layers'
    local_table: bool = False

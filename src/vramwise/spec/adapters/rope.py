"""Reads a rotary model's rope configuration into ``RopeSpec`` (spec/rope.py).

From ``rope_scaling`` (the key vLLM 0.6-0.11 and transformers 4.x read), else ``rope_parameters`` (transformers
5's name for the same dict), with the legacy spellings vLLM accepts (vllm/transformers_utils/config.py
``patch_rope_scaling_dict`` at v0.11.0: ``type`` for ``rope_type``, ``su`` for ``longrope``, ``mrope`` for
``default``).
"""

from __future__ import annotations

from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.rope import RopeSpec

# The families whose vLLM module passes dtype=torch.float32 to get_rope (RopeSpec.fp32_table): gpt_oss.py
# GptOssAttention.__init__ (v0.10.2, v0.11.0), minimax_text_01.py MiniMaxText01Attention (v0.11.0)
_FP32_TABLE = frozenset({"gpt_oss", "minimax_text_01"})
# The families whose sliding layers get a table of their own (RopeSpec.local_table)
_LOCAL_TABLE = frozenset({"gemma3_text", "gemma3"})


def _partial(cfg: RawConfig) -> float:
    for key in ("partial_rotary_factor", "rotary_pct"):  # rotary_pct: GPTNeoXConfig's name for it
        if cfg.has(key):
            return cfg.fraction(key)
    return 1.0


def read_rope(cfg: RawConfig, model_type: str) -> RopeSpec:
    """The rotary configuration of ``cfg`` (a rotary model's config); one-line ConfigErrors name the bad field."""
    sub = cfg.mapping("rope_scaling" if cfg.has("rope_scaling") else "rope_parameters")
    # Gemma 3's sliding layers rotate with rope_local_base_freq, a Gemma3TextConfig key with a class default
    # (10,000), so every Gemma 3 text model has it whether or not its config.json writes it
    local = model_type in _LOCAL_TABLE or cfg.has("rope_local_base_freq")
    partial, fp32 = _partial(cfg), model_type in _FP32_TABLE
    top_original = cfg.pos_int("original_max_position_embeddings", None)  # Phi-3 keeps it beside rope_scaling
    if sub is None:
        return RopeSpec(partial_rotary_factor=partial, fp32_table=fp32, original_max_position=top_original,
                        local_table=local)
    rope_type = sub.text("rope_type", sub.text("type", "default"))
    rope_type = {"su": "longrope", "mrope": "default"}.get(rope_type, rope_type)
    return RopeSpec(
        rope_type=rope_type,
        factor=sub.positive_float("factor", 1.0),
        original_max_position=sub.pos_int("original_max_position_embeddings", top_original),
        partial_rotary_factor=partial,
        fp32_table=fp32,
        local_table=local,
    )

"""The peer estimators as the benchmarks call them, offline, from a vramwise ModelSpec.

llm-analysis installs with ``pip install --no-deps llm-analysis fire`` (its pins would downgrade
transformers); accelerate comes with the verify extra.
"""

from __future__ import annotations

import logging
from typing import Any

from vramwise.spec.model import ModelSpec

LLM_ANALYSIS_GPU = "a100-sxm-80gb"
LLM_ANALYSIS_DTYPE = "w16a16e16"


def llm_analysis(spec: ModelSpec, max_seq: int) -> Any | None:
    """An ``LLMAnalysis`` for ``spec`` on its A100-80GB config, or None when llm-analysis is not installed.

    llm-analysis wants the MLP width as a ratio of the hidden size; passing the exact ratio alongside the
    width keeps non-integer ratios (Llama's 11008 / 4096) instead of rounding them.
    """
    try:
        import llm_analysis.analysis as la
        import llm_analysis.config as lc
    except ImportError:
        return None
    logging.disable(logging.CRITICAL)  # it logs every figure at INFO
    moe = spec.moe
    ffn = moe.expert_intermediate_size if moe else spec.mlp.intermediate_size
    model = lc.ModelConfig(
        name=spec.name,
        num_layers=spec.num_layers,
        n_head=spec.attention.num_heads,
        hidden_dim=spec.hidden_size,
        vocab_size=spec.vocab_size,
        max_seq_len=max(8192, max_seq),
        num_key_value_heads=spec.attention.num_kv_heads,
        ffn_embed_dim=ffn,
        expansion_ratio=ffn / spec.hidden_size,
        moe_num_experts=moe.num_experts if moe else 1,
        moe_top_k=moe.top_k if moe else 1,
    )
    gpu = lc.get_gpu_config_by_name(LLM_ANALYSIS_GPU)
    return la.LLMAnalysis(model, gpu, lc.get_dtype_config_by_name(LLM_ANALYSIS_DTYPE))

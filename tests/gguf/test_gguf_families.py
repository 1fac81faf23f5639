"""Round trip per family: a tiny transformers config, written as llama.cpp's convert_hf_to_gguf.py would write it
(metadata keys of TextModel.set_gguf_parameters and the family's class; llama.cpp tensor names), read back.

Oracles: the spec built from the GGUF equals the spec built from the config.json it stands for, and its
parameter count equals transformers' own model on the meta device (tests/hf_oracle.py) and the elements of the
tensors in the file (less the tensors llama.cpp stores that transformers keeps as buffers, named below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import pytest
from gguf_build import Q, write
from hf_oracle import hf_param_count
from tiny_configs import FAMILIES

from vramwise.spec.adapters import spec_from_config
from vramwise.spec.gguf_file import gguf_model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import total_params

# model_type -> general.architecture (convert_hf_to_gguf.py: each *Model class's model_arch)
ARCH = {
    "llama": "llama",
    "mixtral": "llama",
    "qwen2": "qwen2",
    "qwen2_moe": "qwen2moe",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3moe",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gpt_neox": "gptneox",
    "phi": "phi2",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "falcon": "falcon",
    "deepseek_v3": "deepseek2",
    "gpt_oss": "gpt-oss",
}
# In the file, not parameters of the transformers model: DeepSeek-V3's e_score_correction_bias is an nn.Buffer
# (modeling_deepseek_v3.DeepseekV3TopkRouter) that llama.cpp stores as exp_probs_b.
BUFFERS = ("exp_probs_b",)


def _metadata(spec: ModelSpec, cfg: dict[str, Any], arch: str) -> dict[str, Any]:
    """What set_gguf_parameters writes for this config (the keys the reader inverts)."""
    a, m = spec.attention, {}
    m["block_count"] = spec.num_layers
    m["context_length"] = spec.max_position_embeddings or 2048
    m["embedding_length"] = spec.hidden_size
    m["feed_forward_length"] = spec.mlp.intermediate_size
    m["attention.head_count"] = a.num_heads
    m["attention.head_count_kv"] = a.num_kv_heads
    if "head_dim" in cfg:
        m["attention.key_length"] = m["attention.value_length"] = a.head_dim
    if a.sliding_window:
        m["attention.sliding_window"] = a.sliding_window
    if spec.moe:
        m["expert_count"], m["expert_used_count"] = spec.moe.num_experts, spec.moe.top_k
        m["expert_feed_forward_length"] = spec.moe.expert_intermediate_size
        if spec.moe.shared_intermediate_size:
            m["expert_shared_feed_forward_length"] = spec.moe.shared_intermediate_size
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):  # Gemma2Model
        if cfg.get(key) is not None:
            m[key] = float(cfg[key])
    if "use_parallel_residual" in cfg:  # GPTNeoXModel
        m["use_parallel_residual"] = cfg["use_parallel_residual"]
    if a.mla:  # DeepseekV2Model.set_gguf_parameters
        mla = a.mla
        m.update({
            "attention.head_count_kv": 1,
            "attention.q_lora_rank": mla.q_lora_rank,
            "attention.kv_lora_rank": mla.kv_lora_rank,
            "attention.key_length": mla.kv_lora_rank + mla.qk_rope_head_dim,
            "attention.value_length": mla.kv_lora_rank,
            "attention.key_length_mla": mla.qk_nope_head_dim + mla.qk_rope_head_dim,
            "attention.value_length_mla": mla.v_head_dim,
            "rope.dimension_count": mla.qk_rope_head_dim,
            "leading_dense_block_count": cfg.get("first_k_dense_replace", 0),
            "expert_shared_count": cfg.get("n_shared_experts", 0),
            "expert_gating_func": 2 if spec.model_type == "deepseek_v3" else 1,
        })
    return {f"{arch}.{k}": v for k, v in m.items() if v is not None}


def _tensors(spec: ModelSpec) -> list:  # noqa: C901 - one branch per llama.cpp tensor family, read top to bottom
    """llama.cpp's tensors for the spec (llama-model.cpp create_tensor names and shapes, numpy order), F16/F32."""
    h, V, a, F = spec.hidden_size, spec.vocab_size, spec.attention, Q.F16
    vec = Q.F32
    t: list = [("token_embd.weight", (V, h), F), ("output_norm.weight", (h,), vec)]
    if spec.embedding.learned_positions:
        t.append(("position_embd.weight", (spec.embedding.learned_positions, h), F))
    if spec.norm.bias:
        t.append(("output_norm.bias", (h,), vec))
    if not spec.tied_embeddings:
        t.append(("output.weight", (V, h), F))
    if spec.head_bias:
        t.append(("output.bias", (V,), vec))
    norm_names = ["attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm"]
    if spec.model_type == "falcon":
        norm_names = ["attn_norm", "attn_norm_2"]
    moe_layers = set(spec.moe.moe_layers) if spec.moe else set()
    for i in range(spec.num_layers):
        b = f"blk.{i}."
        for n in norm_names[: spec.norm.per_layer]:
            t.append((b + n + ".weight", (h,), vec))
            if spec.norm.bias:
                t.append((b + n + ".bias", (h,), vec))
        if a.mla:
            mla, qk = a.mla, a.mla.qk_nope_head_dim + a.mla.qk_rope_head_dim
            t += [
                (b + "attn_q_a.weight", (mla.q_lora_rank, h), F),
                (b + "attn_q_a_norm.weight", (mla.q_lora_rank,), vec),
                (b + "attn_q_b.weight", (a.num_heads * qk, mla.q_lora_rank), F),
                (b + "attn_kv_a_mqa.weight", (mla.kv_lora_rank + mla.qk_rope_head_dim, h), F),
                (b + "attn_kv_a_norm.weight", (mla.kv_lora_rank,), vec),
                (b + "attn_kv_b.weight", (a.num_heads * (mla.qk_nope_head_dim + mla.v_head_dim), mla.kv_lora_rank), F),
                (b + "attn_output.weight", (h, a.num_heads * mla.v_head_dim), F),
            ]
        else:
            q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
            if spec.traits.fused_qkv:
                t.append((b + "attn_qkv.weight", (q + 2 * kv, h), F))
                if a.qkv_bias:
                    t.append((b + "attn_qkv.bias", (q + 2 * kv,), vec))
            else:
                for n, rows in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)):
                    t.append((b + n + ".weight", (rows, h), F))
                    if a.qkv_bias:
                        t.append((b + n + ".bias", (rows,), vec))
            t.append((b + "attn_output.weight", (h, q), F))
            if a.out_bias:
                t.append((b + "attn_output.bias", (h,), vec))
            if a.qk_norm != "none":
                t += [(b + "attn_q_norm.weight", (a.head_dim,), vec), (b + "attn_k_norm.weight", (a.head_dim,), vec)]
            if a.sinks:
                t.append((b + "attn_sinks.weight", (a.num_heads,), vec))
        if i in moe_layers and spec.moe:
            moe, E = spec.moe, spec.moe.num_experts
            ie = moe.expert_intermediate_size
            t += [
                (b + "ffn_gate_inp.weight", (E, h), vec),
                (b + "ffn_gate_exps.weight", (E, ie, h), F),
                (b + "ffn_up_exps.weight", (E, ie, h), F),
                (b + "ffn_down_exps.weight", (E, h, ie), F),
            ]
            if moe.router_bias:
                t.append((b + "ffn_gate_inp.bias", (E,), vec))
            if moe.expert_bias:
                t += [(b + f"ffn_{n}_exps.bias", (E, ie), vec) for n in ("gate", "up")]
                t.append((b + "ffn_down_exps.bias", (E, h), vec))
            if spec.model_type == "deepseek_v3":
                t.append((b + "exp_probs_b.bias", (E,), vec))
            if moe.shared_intermediate_size:
                s = moe.shared_intermediate_size
                t += [(b + f"ffn_{n}_shexp.weight", (s, h), F) for n in ("gate", "up")]
                t.append((b + "ffn_down_shexp.weight", (h, s), F))
                if moe.shared_expert_gate:
                    t.append((b + "ffn_gate_inp_shexp.weight", (h,), vec))
        else:
            i_ = spec.mlp.intermediate_size
            names = ("ffn_gate", "ffn_up", "ffn_down") if spec.mlp.gated else ("ffn_up", "ffn_down")
            for n in names:
                t.append((b + n + ".weight", (h, i_) if n == "ffn_down" else (i_, h), F))
                if spec.mlp.bias:
                    t.append((b + n + ".bias", (h,) if n == "ffn_down" else (i_,), vec))
    return t


# Qwen3-MoE has no tiny config in tests/tiny_configs.py (no traced case): a tiny one here, every layer MoE.
_LOCAL = {
    "qwen3_moe": {
        "model_type": "qwen3_moe",
        "hidden_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 512,
        "moe_intermediate_size": 128,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "vocab_size": 8000,
    }
}
_CONFIGS = {**FAMILIES, **_LOCAL}
_CASES = sorted(name for name, cfg in _CONFIGS.items() if cfg["model_type"] in ARCH)


def _comparable(spec: ModelSpec) -> tuple:
    return (spec.model_type, spec.hidden_size, spec.num_layers, spec.embedding, spec.attention, spec.mlp, spec.moe,
            spec.norm, spec.traits, spec.tied_embeddings, spec.parallel_block, spec.head_bias)


def test_every_gguf_architecture_is_round_tripped() -> None:
    from vramwise.spec.gguf_arch import ARCHITECTURES

    assert {ARCH[_CONFIGS[f]["model_type"]] for f in _CASES} == set(ARCHITECTURES) - {"qwen2vl"}  # test below


def test_qwen2vl_reads_as_its_language_model(tmp_path: Path) -> None:
    cfg = dict(FAMILIES["qwen2"])
    expected = spec_from_config(cfg, name="qwen2", source="config")
    meta = {k.replace("qwen2.", "qwen2vl."): v for k, v in _metadata(expected, cfg, "qwen2").items()}
    meta["qwen2vl.rope.dimension_sections"] = [16, 24, 24, 0]
    write(tmp_path / "vl.gguf", "qwen2vl", meta, _tensors(expected))
    assert _comparable(gguf_model(tmp_path / "vl.gguf")[0]) == _comparable(expected)


@pytest.mark.parametrize("family", _CASES)
def test_round_trip(family: str, tmp_path: Path) -> None:
    cfg = dict(_CONFIGS[family])
    expected = spec_from_config(cfg, name=family, source="config")
    arch = ARCH[cfg["model_type"]]
    tensors = _tensors(expected)
    path = tmp_path / f"{family}.gguf"
    write(path, arch, _metadata(expected, cfg, arch), tensors)
    spec, _ = gguf_model(path)
    assert _comparable(spec) == _comparable(expected)
    elements = sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors if not t.name.startswith(
        tuple(f"blk.{i}.{b}" for i in range(spec.num_layers) for b in BUFFERS)))
    assert total_params(spec) == elements == hf_param_count(cfg)

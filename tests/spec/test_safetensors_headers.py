"""The safetensors header reader: categories by tensor name, bytes by dtype x shape, malformed headers refused.

Oracles: the module names in transformers' modeling files (and the categories spec/params.py gives the same
parameters), the safetensors format (8-byte little-endian length, JSON header, data offsets), and the dtype widths
of safetensors/src/tensor.rs written out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramwise.errors import ConfigError
from vramwise.spec.safetensors_headers import category_of, parse_header, read_header


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("model.embed_tokens.weight", "embeddings"),  # llama
        ("model.layers.0.self_attn.q_proj.qweight", "attention"),  # GPTQ packing under the linear's name
        ("model.layers.0.self_attn.q_norm.weight", "attention"),  # qwen3: params.py counts qk norms in attention
        ("model.layers.0.post_attention_layernorm.weight", "norms"),  # named after attention, but a layer norm
        ("model.layers.0.mlp.gate_proj.weight", "mlp"),
        ("model.layers.3.mlp.gate.weight", "experts"),  # deepseek/qwen-moe router
        ("model.layers.3.mlp.shared_experts.up_proj.weight", "experts"),
        ("model.layers.0.block_sparse_moe.experts.0.w1.weight", "experts"),  # mixtral
        ("model.layers.0.mlp.experts.gate_up_proj_blocks", "experts"),  # gpt-oss MXFP4
        ("lm_head.weight", "head"),
        ("model.norm.weight", "norms"),
        ("model.layers.61.eh_proj.weight", "other"),  # DeepSeek-V3's MTP layer: past num_hidden_layers (61)
        ("h.0.attn.c_attn.weight", "attention"),  # gpt2
        ("h.0.mlp.c_fc.weight", "mlp"),
        ("ln_f.bias", "norms"),
        ("gpt_neox.embed_in.weight", "embeddings"),
        ("embed_out.weight", "head"),
        ("encoder.layer.0.attention.output.dense.weight", "attention"),  # bert
        ("encoder.layer.0.output.dense.weight", "mlp"),
        ("embeddings.LayerNorm.weight", "embeddings"),
        ("shared.weight", "embeddings"),  # t5
        ("decoder.block.0.layer.1.EncDecAttention.k.weight", "attention"),
        ("encoder.block.0.layer.1.DenseReluDense.wi_0.weight", "mlp"),
        ("model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight", "vision"),  # llava, gemma3
        ("model.multi_modal_projector.linear_1.weight", "projector"),
        ("visual.blocks.0.attn.qkv.weight", "vision"),  # qwen2-vl
        ("visual.merger.mlp.0.weight", "projector"),
        ("model.connector.modality_projection.proj.weight", "projector"),  # idefics3
        # families merged with issue 12, as their published checkpoints name them (test_header_categories.py checks
        # transformers' own names against the config arithmetic, family by family)
        ("model.layers.0.mamba.in_proj.weight", "ssm"),  # jamba
        ("model.layers.0.mamba.dt_layernorm.weight", "ssm"),  # the mixer's own norms count with it (spec/ssm.py)
        ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "attention"),  # t5
        ("encoder.block.5.layer.0.layer_norm.weight", "norms"),  # the encoder's depth is its own
        ("decoder.final_layer_norm.weight", "norms"),
        ("transformer.h.0.attn.c_attn.weight", "attention"),  # gpt_bigcode
        ("transformer.h.0.self_attention.query_key_value.weight", "attention"),  # bloom, falcon
        ("transformer.word_embeddings_layernorm.weight", "embeddings"),  # bloom: params.py counts it there
        ("transformer.h.0.ln_attn.weight", "norms"),  # falcon's new decoder: a norm, not attention
        ("encoder.layer.0.attention.output.LayerNorm.weight", "norms"),  # bert
        ("cls.predictions.transform.dense.weight", "head"),  # bert's masked-LM head
        ("language_model.model.layers.0.self_attn.q_proj.weight", "attention"),  # llava-hf's published names
        ("language_model.lm_head.weight", "head"),
        ("model.language_model.layers.3.cross_attn_attn_gate", "attention"),  # mllama's scalar gates
    ],
)
def test_category_of(name: str, category: str) -> None:
    assert category_of(name, num_layers=61) == category


def _header(entries: dict) -> bytes:
    return json.dumps(entries).encode()


def test_bytes_are_elements_times_the_dtype_width() -> None:
    raw = _header(
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "BF16", "shape": [3, 5], "data_offsets": [0, 30]},  # 15 x 2 B
            "b": {"dtype": "F4", "shape": [3, 5], "data_offsets": [30, 38]},  # 15 x 4 bit = 7.5 -> 8 B
            "c": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [38, 42]},
            "d": {"dtype": "NEW_TYPE", "shape": [7], "data_offsets": [42, 49]},  # unknown: its offsets' span
        }
    )
    tensors = {t.name: t.bytes for t in parse_header("x", raw, data_bytes=49)}
    assert tensors == {"a": 30, "b": 8, "c": 4, "d": 7}


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"dtype": "F16", "shape": [4], "data_offsets": [0, 6]}, "4 F16 elements are 8 bytes, its data_offsets span 6"),
        ({"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]}, "has shape"),
        ({"dtype": "F16", "shape": [4], "data_offsets": [8, 0]}, "data_offsets"),
        ({"dtype": "F16", "shape": [4]}, "lacks dtype, shape or data_offsets"),
        ({"dtype": "F16", "shape": [400], "data_offsets": [0, 800]}, "past the file's data"),
        ([1, 2], "is not an object"),
    ],
)
def test_malformed_entries_are_refused(entry: object, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_header("x.safetensors", _header({"t": entry}), data_bytes=100)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\x01\x02", "a safetensors file starts with an 8-byte length"),
        ((200_000_000).to_bytes(8, "little") + b"{}", "above safetensors' limit"),
        ((50).to_bytes(8, "little") + b"{}", "runs past the end of the 10-B file"),
        ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
        ((2).to_bytes(8, "little") + b"\xff\xfe", "not UTF-8 JSON"),
    ],
)
def test_malformed_files_are_refused_in_one_line(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=says) as err:
        read_header(path)
    assert "\n" not in str(err.value) and err.value.field == "model"

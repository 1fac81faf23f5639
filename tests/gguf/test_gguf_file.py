"""GGUF files as MODEL: the spec from the metadata, exact bytes from the tensor infos.

Oracles: the files are written here with the gguf package's GGUFWriter; bytes are hand arithmetic from ggml's
block layouts (ggml-common.h: block_q4_K = 2 fp16 + 12 scale bytes + 128 quant bytes = 144 B per 256 weights;
block_q6_K = 128 ql + 64 qh + 16 scales + 2 d = 210 B per 256; block_q8_0 = 2 d + 32 qs = 34 B per 32;
block_iq4_xs = 2 d + 2 scales_h + 4 scales_l + 128 qs = 136 B per 256; block_mxfp4 = 1 e + 16 qs = 17 B per 32);
parameter counts are the elements of the tensors written (shapes chosen here), and the header reader is compared
with gguf-py's own GGUFReader.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from gguf_build import Q, write

from vramwise.spec.gguf_file import gguf_model
from vramwise.spec.load import resolve_model_with_config
from vramwise.spec.params import total_params

H, HEADS, KV, D, FF, V, L = 256, 4, 2, 64, 512, 96, 2  # K-quants need rows of 256: hidden and FFN are multiples


def _llama_tensors(embd=Q.Q4_K, v_type=Q.Q6_K, down=Q.Q6_K) -> list:
    t = [("token_embd.weight", (V, H), embd), ("output_norm.weight", (H,), Q.F32), ("output.weight", (V, H), Q.Q6_K)]
    for i in range(L):
        t += [
            (f"blk.{i}.attn_norm.weight", (H,), Q.F32),
            (f"blk.{i}.ffn_norm.weight", (H,), Q.F32),
            (f"blk.{i}.attn_q.weight", (HEADS * D, H), Q.Q4_K),
            (f"blk.{i}.attn_k.weight", (KV * D, H), Q.Q4_K),
            (f"blk.{i}.attn_v.weight", (KV * D, H), v_type),
            (f"blk.{i}.attn_output.weight", (H, HEADS * D), Q.Q4_K),
            (f"blk.{i}.ffn_gate.weight", (FF, H), Q.Q4_K),
            (f"blk.{i}.ffn_up.weight", (FF, H), Q.Q4_K),
            (f"blk.{i}.ffn_down.weight", (H, FF), down),
        ]
    return t


def _llama_meta(file_type: int = gguf.LlamaFileType.MOSTLY_Q4_K_M) -> dict:
    return {
        "llama.block_count": L,
        "llama.context_length": 4096,
        "llama.embedding_length": H,
        "llama.feed_forward_length": FF,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": KV,
        "llama.rope.freq_base": 500000.0,
        "general.file_type": int(file_type),
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(V)],
    }


@pytest.fixture
def tiny_llama(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-llama-Q4_K_M.gguf"
    write(path, "llama", _llama_meta(), _llama_tensors())
    return path


def test_llama_spec_from_metadata(tiny_llama: Path) -> None:
    spec, config = gguf_model(tiny_llama)
    assert (spec.model_type, spec.name) == ("llama", "tiny-llama-Q4_K_M")
    assert (spec.num_layers, spec.hidden_size, spec.mlp.intermediate_size) == (L, H, FF)
    assert (spec.attention.num_heads, spec.attention.num_kv_heads, spec.attention.head_dim) == (HEADS, KV, D)
    assert (spec.max_position_embeddings, spec.vocab_size, spec.tied_embeddings) == (4096, V, False)
    assert spec.stored_format == "q4_k_m" and spec.unread_quantization is None
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == KV


def test_llama_bytes_per_category_by_hand(tiny_llama: Path) -> None:
    ckpt = gguf_model(tiny_llama)[0].checkpoint
    assert ckpt is not None and "GGUF tensor infos" in ckpt.source
    q4k, q6k = 144, 210  # bytes per 256-weight block
    per_layer_attention = (256 * 256 // 256 * q4k) + (128 * 256 // 256 * q4k) + (128 * 256 // 256 * q6k) + (
        256 * 256 // 256 * q4k
    )
    per_layer_mlp = 2 * (512 * 256 // 256 * q4k) + (256 * 512 // 256 * q6k)
    expected = {
        "embeddings": 96 * 256 // 256 * q4k,  # 13,824
        "attention": 2 * per_layer_attention,  # 2 x 119,040
        "mlp": 2 * per_layer_mlp,  # 2 x 254,976
        "norms": 5 * 256 * 4,  # 2 per layer + output_norm, F32
        "head": 96 * 256 // 256 * q6k,  # 20,160
    }
    assert {c.category: c.bytes for c in ckpt.categories} == expected
    assert expected["attention"] == 238_080 and expected["mlp"] == 509_952
    attention = next(c for c in ckpt.categories if c.category == "attention")
    # q, k and output in Q4_K, v in Q6_K (the _M mixes' bump), largest first
    assert attention.dtypes == (("Q4_K", 2 * (36_864 + 18_432 + 36_864)), ("Q6_K", 2 * 26_880))
    assert attention.tensors == 8 and attention.elements == 2 * (65_536 + 2 * 32_768 + 65_536)


def test_parameters_equal_the_file_elements(tiny_llama: Path) -> None:
    """The adapter's parameter count against an oracle outside it: the elements of the tensors in the file."""
    spec = gguf_model(tiny_llama)[0]
    by_hand = 96 * 256 + L * (256 * 256 + 2 * 128 * 256 + 256 * 256) + L * 3 * 512 * 256 + 5 * 256 + 96 * 256
    assert by_hand == 1_230_080
    reader = gguf.GGUFReader(tiny_llama)
    assert sum(int(t.n_elements) for t in reader.tensors) == by_hand
    assert total_params(spec) == by_hand


def test_header_reader_agrees_with_gguf_reader(tiny_llama: Path) -> None:
    from vramwise.spec.gguf_file import read_local

    header = read_local(tiny_llama)
    reader = gguf.GGUFReader(tiny_llama)
    assert header.data_start == reader.data_offset
    assert [(t.name, list(t.shape), t.ggml_type) for t in header.tensors] == [
        (t.name, t.shape.tolist(), int(t.tensor_type)) for t in reader.tensors
    ]
    ckpt = gguf_model(tiny_llama)[0].checkpoint
    assert ckpt is not None and ckpt.total_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert header.metadata["llama.block_count"] == L
    assert header.metadata["tokenizer.ggml.tokens"].length == V  # type: ignore[union-attr]


def test_model_argument_resolves_a_gguf(tiny_llama: Path) -> None:
    resolved = resolve_model_with_config(str(tiny_llama))
    assert resolved.spec.checkpoint is not None and resolved.raw_config is not None
    assert resolved.raw_config["hidden_size"] == H


def test_tied_head_and_f16_file(tmp_path: Path) -> None:
    tensors = [t for t in _llama_tensors(Q.F16, Q.F16, Q.F16) if t[0] != "output.weight"]
    tensors = [(n, s, Q.F16 if q != Q.F32 else q) for n, s, q in tensors]
    path = tmp_path / "tied-f16.gguf"
    write(path, "llama", _llama_meta(gguf.LlamaFileType.MOSTLY_F16), tensors)
    spec = gguf_model(path)[0]
    assert spec.tied_embeddings and spec.stored_dtype == "fp16" and spec.stored_format is None
    assert spec.checkpoint is not None
    assert spec.checkpoint.bytes_of("head") == 0 and spec.checkpoint.bytes_of("embeddings") == 96 * 256 * 2
    assert total_params(spec) == sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


# --- mixture of experts -------------------------------------------------------------------------------------------

E, TOP_K, EFF, SFF = 4, 2, 256, 512


def _qwen2moe(tmp_path: Path) -> Path:
    """Layer 0 dense (mlp_only_layers), layer 1 MoE with a shared expert; q/k/v biases as Qwen2 has."""
    t = [("token_embd.weight", (V, H), Q.Q8_0), ("output_norm.weight", (H,), Q.F32), ("output.weight", (V, H), Q.Q8_0)]
    for i in range(L):
        t += [
            (f"blk.{i}.attn_norm.weight", (H,), Q.F32),
            (f"blk.{i}.ffn_norm.weight", (H,), Q.F32),
            (f"blk.{i}.attn_q.weight", (HEADS * D, H), Q.Q8_0),
            (f"blk.{i}.attn_q.bias", (HEADS * D,), Q.F32),
            (f"blk.{i}.attn_k.weight", (KV * D, H), Q.Q8_0),
            (f"blk.{i}.attn_k.bias", (KV * D,), Q.F32),
            (f"blk.{i}.attn_v.weight", (KV * D, H), Q.Q8_0),
            (f"blk.{i}.attn_v.bias", (KV * D,), Q.F32),
            (f"blk.{i}.attn_output.weight", (H, HEADS * D), Q.Q8_0),
        ]
    t += [(f"blk.0.ffn_{n}.weight", (H, FF) if n == "down" else (FF, H), Q.Q8_0) for n in ("gate", "up", "down")]
    t += [
        ("blk.1.ffn_gate_inp.weight", (E, H), Q.F32),
        ("blk.1.ffn_gate_exps.weight", (E, EFF, H), Q.IQ4_XS),
        ("blk.1.ffn_up_exps.weight", (E, EFF, H), Q.IQ4_XS),
        ("blk.1.ffn_down_exps.weight", (E, H, EFF), Q.Q8_0),
        ("blk.1.ffn_gate_inp_shexp.weight", (H,), Q.F32),
        ("blk.1.ffn_gate_shexp.weight", (SFF, H), Q.Q8_0),
        ("blk.1.ffn_up_shexp.weight", (SFF, H), Q.Q8_0),
        ("blk.1.ffn_down_shexp.weight", (H, SFF), Q.Q8_0),
    ]
    meta = {
        "qwen2moe.block_count": L,
        "qwen2moe.context_length": 32768,
        "qwen2moe.embedding_length": H,
        "qwen2moe.feed_forward_length": FF,
        "qwen2moe.attention.head_count": HEADS,
        "qwen2moe.attention.head_count_kv": KV,
        "qwen2moe.expert_count": E,
        "qwen2moe.expert_used_count": TOP_K,
        "qwen2moe.expert_feed_forward_length": EFF,
        "qwen2moe.expert_shared_feed_forward_length": SFF,
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_IQ4_XS),
    }
    path = tmp_path / "tiny-qwen2moe-IQ4_XS.gguf"
    write(path, "qwen2moe", meta, t)
    return path


def test_moe_spec_and_bytes(tmp_path: Path) -> None:
    path = _qwen2moe(tmp_path)
    spec = gguf_model(path)[0]
    assert spec.model_type == "qwen2_moe" and spec.moe is not None
    assert (spec.moe.num_experts, spec.moe.top_k, spec.moe.expert_intermediate_size) == (E, TOP_K, EFF)
    assert (spec.moe.moe_layers, spec.moe.shared_intermediate_size, spec.moe.shared_expert_gate) == ((1,), SFF, True)
    assert spec.attention.qkv_bias and spec.mlp.intermediate_size == FF
    # IQ4_XS has no format of its own in formats.py: the file type is recorded, the exact bytes are the checkpoint's
    assert spec.stored_format is None and spec.unread_quantization == ("general.file_type", "IQ4_XS")
    iq4xs, q8 = 136, 34
    ckpt = spec.checkpoint
    assert ckpt is not None
    experts = 2 * (4 * 256 * 256 // 256 * iq4xs) + (4 * 256 * 256 // 32 * q8) + 4 * 256 * 4
    shared = 3 * (512 * 256 // 32 * q8) + 256 * 4
    dense = 3 * (512 * 256 // 32 * q8)
    assert (ckpt.bytes_of("experts"), ckpt.bytes_of("experts_shared"), ckpt.bytes_of("mlp")) == (
        experts,
        shared,
        dense,
    )
    assert (experts, shared, dense) == (561_152, 418_816, 417_792)
    assert total_params(spec) == sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


def test_exotic_types_exact(tmp_path: Path) -> None:
    """MXFP4 experts (gpt-oss files) and TQ2_0 ternary blocks: elements / block * type_size, from gguf's table."""
    tensors = _llama_tensors()
    tensors[tensors.index(("blk.0.ffn_gate.weight", (FF, H), Q.Q4_K))] = ("blk.0.ffn_gate.weight", (FF, H), Q.MXFP4)
    tensors[tensors.index(("blk.1.ffn_gate.weight", (FF, H), Q.Q4_K))] = ("blk.1.ffn_gate.weight", (FF, H), Q.TQ2_0)
    path = tmp_path / "mixed.gguf"
    write(path, "llama", _llama_meta(), tensors)
    mlp = next(c for c in gguf_model(path)[0].checkpoint.categories if c.category == "mlp")  # type: ignore[union-attr]
    mxfp4, tq2_0 = 512 * 256 // 32 * 17, 512 * 256 // 256 * 66  # block_mxfp4 17 B / 32; block_tq2_0 64 + 2 B / 256
    assert dict(mlp.dtypes)["MXFP4"] == mxfp4 and dict(mlp.dtypes)["TQ2_0"] == tq2_0


# --- split sets -----------------------------------------------------------------------------------------------------


def test_split_set_sums_every_part(tmp_path: Path) -> None:
    single = tmp_path / "one" / "m.gguf"
    single.parent.mkdir()
    write(single, "llama", _llama_meta(), _llama_tensors())
    paths = write(tmp_path / "m.gguf", "llama", _llama_meta(), _llama_tensors(), split_max_tensors=8)
    assert len(paths) == 3 and paths[0].name == "m-00001-of-00003.gguf"
    whole = gguf_model(single)[0]
    for part in paths:  # any part names the set
        split = gguf_model(part)[0]
        assert split.checkpoint is not None and whole.checkpoint is not None
        assert split.checkpoint.categories == whole.checkpoint.categories
        assert split.name == "m" and "(3 files)" in split.checkpoint.source
        assert total_params(split) == total_params(whole)


def test_split_set_missing_part(tmp_path: Path) -> None:
    from vramwise.errors import ConfigError

    paths = write(tmp_path / "m.gguf", "llama", _llama_meta(), _llama_tensors(), split_max_tensors=8)
    paths[1].unlink()
    with pytest.raises(ConfigError, match=r"m-00002-of-00003.gguf: split GGUF part 2 of 3 is missing"):
        gguf_model(paths[0])


# --- the weights term -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_type", ["Q4_K_M", "IQ4_XS"])
def test_weights_are_the_files_bytes(tmp_path: Path, file_type: str) -> None:
    from vramwise.estimate.inference import estimate_inference
    from vramwise.workload.infer import InferSetup

    path = tmp_path / f"m-{file_type}.gguf"
    write(path, "llama", _llama_meta(gguf.LlamaFileType[f"MOSTLY_{file_type}"]), _llama_tensors())
    spec = gguf_model(path)[0]
    assert spec.checkpoint is not None
    estimate = estimate_inference(spec, InferSetup(batch=1, context=512))
    weights = sum(t.bytes for t in estimate.terms if t.name.startswith("weights/"))
    assert weights == spec.checkpoint.total_bytes == 13_824 + 238_080 + 509_952 + 5_120 + 20_160

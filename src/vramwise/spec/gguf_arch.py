"""GGUF metadata back to the transformers config keys llama.cpp's ``convert_hf_to_gguf.py`` wrote it from.

One function per GGUF architecture (``general.architecture``; names from gguf-py ``MODEL_ARCH_NAMES``). Each
returns the config.json keys of the transformers family whose adapter (``spec/adapters``) then builds the spec,
so every size goes through the same bounds (``RawConfig``). Citations: ``convert_hf_to_gguf.py`` in
ggml-org/llama.cpp at commit 0024aa74 (``TextModel.set_gguf_parameters`` for the shared keys, the family's
``*Model.set_gguf_parameters`` for the rest). Where the metadata omits a size, the tensor shapes give it exactly
(ggml order: ``shape[0]`` is the input dimension, ``shape[1]`` the output rows, ``shape[2]`` the experts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vramwise.errors import ConfigError, UnsupportedArchitectureError, shown
from vramwise.spec.gguf_header import ArrayValue

Shapes = Mapping[str, tuple[int, ...]]
_MISSING = object()

# llama_ftype (llama.h; gguf-py LlamaFileType): file types formats.py also names, so the estimate can price the
# checkpoint with its own rule too; other quantized types are priced from spec.checkpoint (the exact bytes).
_KNOWN_FORMATS = {2: "q4_0", 7: "q8_0", 15: "q4_k_m", 17: "q5_k_m", 18: "q6_k"}
# The unquantized file types: ALL_F32 0, MOSTLY_F16 1, MOSTLY_BF16 32.
_DTYPES = {0: "fp32", 1: "fp16", 32: "bf16"}
_DTYPE_OF_TYPE = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}


# DeepSeek-V2-Lite has no q LoRA: its config says "q_lora_rank": null (an absent key means the default 1536).
_NULL_MEANS_NONE = ("q_lora_rank",)


class _Meta:
    """Typed reads of ``<arch>.<key>`` metadata, each refusal naming the GGUF key."""

    def __init__(self, metadata: Mapping[str, object], arch: str, shapes: Shapes, where: str) -> None:
        self.md, self.arch, self.shapes, self.where = metadata, arch, shapes, where

    def error(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.where}: GGUF key '{key}' {what}", field="model", allowed="a GGUF from llama.cpp")

    def size(self, key: str, default: Any = _MISSING) -> Any:
        full = f"{self.arch}.{key}"
        value = self.md.get(full)
        if value is None:
            if default is _MISSING:
                raise self.error(full, f"is missing (needed for architecture '{self.arch}')")
            return default
        if isinstance(value, ArrayValue):  # per-layer values: one size for every layer is read as that size
            values = set(value.values or ())
            if len(values) != 1:
                raise self.error(full, "differs between layers; per-layer sizes are not modelled")
            value = values.pop()
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.error(full, f"must be a non-negative integer, got {shown(value)}")
        return value

    def number(self, key: str) -> float | None:
        value = self.md.get(f"{self.arch}.{key}")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def has(self, tensor: str) -> bool:
        return tensor in self.shapes

    def dim(self, tensor: str, axis: int) -> int | None:
        shape = self.shapes.get(tensor)
        return shape[axis] if shape is not None and len(shape) > axis else None

    def layers_with(self, suffix: str, n_layers: int) -> list[int]:
        return [i for i in range(n_layers) if f"blk.{i}.{suffix}" in self.shapes]


def _vocab(m: _Meta) -> int:
    # The embedding's rows are the vocabulary the weights hold; convert_hf_to_gguf pads the token list to
    # vocab_size (get_vocab_base: range(vocab_size)), so both agree when the tokens are there.
    rows = m.dim("token_embd.weight", 1)
    if rows:
        return rows
    tokens = m.md.get("tokenizer.ggml.tokens")
    if isinstance(tokens, ArrayValue) and tokens.length:
        return tokens.length
    return m.size("vocab_size")


def _common(m: _Meta) -> dict[str, Any]:
    """TextModel.set_gguf_parameters' keys, inverted; head_count_kv absent means one KV head per head (as
    llama-model.cpp's load_hparams defaults n_head_kv to n_head)."""
    heads = m.size("attention.head_count")
    cfg: dict[str, Any] = {
        "hidden_size": m.size("embedding_length"),
        "num_hidden_layers": m.size("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": m.size("attention.head_count_kv", heads),
        "max_position_embeddings": m.size("context_length", None),
        "vocab_size": _vocab(m),
        # llama.cpp uses token_embd as the output when output.weight is absent (llama-model.cpp, "if output is
        # missing, use token_embd"): that is a tied head.
        "tie_word_embeddings": not m.has("output.weight"),
    }
    ffn = m.size("feed_forward_length", None) or m.dim("blk.0.ffn_up.weight", 1)
    if ffn:
        cfg["intermediate_size"] = ffn
    key, value = m.size("attention.key_length", None), m.size("attention.value_length", None)
    if key is not None and value is not None and key != value:
        raise m.error(f"{m.arch}.attention.key_length", f"({key}) differs from value_length ({value}); not modelled")
    if key:
        cfg["head_dim"] = key
    return cfg


def _experts(m: _Meta, experts_key: str) -> dict[str, Any]:
    n = m.size("expert_count", 0)
    if not n:
        return {}
    return {experts_key: n, "num_experts_per_tok": m.size("expert_used_count")}


def _llama(m: _Meta) -> dict[str, Any]:
    # LlamaModel (and MistralModel, MixtralModel: both write arch "llama"); biases are read from the tensors.
    cfg = _common(m)
    experts = _experts(m, "num_local_experts")
    cfg["model_type"] = "mixtral" if experts else "llama"
    if not experts:
        cfg["attention_bias"] = m.has("blk.0.attn_q.bias")
        cfg["mlp_bias"] = m.has("blk.0.ffn_up.bias")
    return {**cfg, **experts}


def _moe_sizes(m: _Meta, cfg: dict[str, Any], shared: bool) -> dict[str, Any]:
    """Qwen2MoeModel.set_gguf_parameters: expert_feed_forward_length <- moe_intermediate_size,
    expert_shared_feed_forward_length <- shared_expert_intermediate_size. Layers without a router
    (ffn_gate_inp) are dense: transformers' mlp_only_layers."""
    L = cfg["num_hidden_layers"]
    routed = m.layers_with("ffn_gate_inp.weight", L)
    first = routed[0] if routed else 0
    out = {
        **_experts(m, "num_experts"),
        "moe_intermediate_size": (
            m.size("expert_feed_forward_length", None) or m.dim(f"blk.{first}.ffn_up_exps.weight", 1)
        ),
        "mlp_only_layers": [i for i in range(L) if i not in set(routed)],
    }
    if shared:
        out["shared_expert_intermediate_size"] = m.size("expert_shared_feed_forward_length", None) or (
            m.dim(f"blk.{first}.ffn_up_shexp.weight", 1) or 0
        )
    cfg.setdefault("intermediate_size", out["moe_intermediate_size"])  # only dense layers read it
    return out


def _qwen2(m: _Meta) -> dict[str, Any]:
    return {**_common(m), "model_type": "qwen2"}


def _qwen2moe(m: _Meta) -> dict[str, Any]:
    cfg = _common(m)
    return {**cfg, **_moe_sizes(m, cfg, shared=True), "model_type": "qwen2_moe"}


def _qwen3(m: _Meta) -> dict[str, Any]:
    return {**_common(m), "model_type": "qwen3", "attention_bias": m.has("blk.0.attn_q.bias")}


def _qwen3moe(m: _Meta) -> dict[str, Any]:
    cfg = _common(m)
    return {**cfg, **_moe_sizes(m, cfg, shared=False), "model_type": "qwen3_moe"}


def _gemma(m: _Meta) -> dict[str, Any]:
    return {**_common(m), "model_type": "gemma"}


def _softcaps(m: _Meta) -> dict[str, Any]:
    # Gemma2Model writes both soft-caps; absent, llama.cpp's defaults (llama-hparams.h: 50 and 30) are the
    # Gemma2Config defaults the adapter applies, so absent keys stay absent.
    caps = {k: m.number(k) for k in ("attn_logit_softcapping", "final_logit_softcapping")}
    return {k: v for k, v in caps.items() if v is not None}


def _gemma2(m: _Meta) -> dict[str, Any]:
    return {**_common(m), **_softcaps(m), "model_type": "gemma2", "sliding_window": m.size("attention.sliding_window")}


def _gemma3(m: _Meta) -> dict[str, Any]:
    # Gemma3Model: sliding_window; the local:global pattern is 6 (llama-model.cpp LLM_ARCH_GEMMA3:
    # hparams.set_swa_pattern(6)), the Gemma3TextConfig default the adapter applies. A per-layer pattern
    # (attention.sliding_window_pattern as booleans, true = sliding) gives layer_types.
    cfg = {**_common(m), **_softcaps(m), "model_type": "gemma3_text"}
    cfg["sliding_window"] = m.size("attention.sliding_window")
    pattern = m.md.get(f"{m.arch}.attention.sliding_window_pattern")
    if isinstance(pattern, ArrayValue) and pattern.values is not None:
        cfg["layer_types"] = ["sliding_attention" if v else "full_attention" for v in pattern.values]
    elif isinstance(pattern, int) and not isinstance(pattern, bool):
        cfg["sliding_window_pattern"] = pattern
    return cfg


def _phi3(m: _Meta) -> dict[str, Any]:
    # Phi3MiniModel writes attention.sliding_window from the config's sliding_window.
    cfg = {**_common(m), "model_type": "phi3"}
    window = m.size("attention.sliding_window", None)
    if window:
        cfg["sliding_window"] = window
    return cfg


def _phi2(m: _Meta) -> dict[str, Any]:
    return {**_common(m), "model_type": "phi"}


def _gpt2(m: _Meta) -> dict[str, Any]:
    # GPT2Model: n_positions -> context_length, n_embd -> embedding_length, n_inner -> feed_forward_length
    # (4 n_embd when null), n_head -> head_count. GPT-2's GGUF stores output.weight as a copy of token_embd:
    # llama.cpp loads both, so the head counts as untied, like the file's bytes.
    c = _common(m)
    return {
        "model_type": "gpt2",
        "n_embd": c["hidden_size"],
        "n_layer": c["num_hidden_layers"],
        "n_head": c["num_attention_heads"],
        "n_positions": m.size("context_length"),
        "n_inner": c.get("intermediate_size"),
        "vocab_size": c["vocab_size"],
        "tie_word_embeddings": c["tie_word_embeddings"],
    }


def _gptneox(m: _Meta) -> dict[str, Any]:
    parallel = m.md.get(f"{m.arch}.use_parallel_residual", True)  # GPTNeoXModel writes use_parallel_residual
    return {
        **_common(m),
        "model_type": "gpt_neox",
        "use_parallel_residual": bool(parallel),
        "attention_bias": m.has("blk.0.attn_qkv.bias"),
    }


def _falcon(m: _Meta) -> dict[str, Any]:
    # FalconModel writes head_count_kv (n_head_kv / num_kv_heads, 1 for multi-query) and no feed_forward_length
    # (the MLP is 4h; the tensor gives it). The new decoder architecture (40B, 180B) has grouped KV heads and
    # norms attn_norm and attn_norm_2 before attention and MLP (num_ln_in_parallel_attn 2).
    cfg = {**_common(m), "model_type": "falcon", "parallel_attn": True, "bias": m.has("blk.0.attn_qkv.bias")}
    heads, kv = cfg["num_attention_heads"], cfg.pop("num_key_value_heads")
    two_norms = m.has("blk.0.attn_norm_2.weight")
    new_arch = two_norms or kv not in (1, heads)
    cfg["new_decoder_architecture"] = new_arch
    if new_arch:
        cfg["num_kv_heads"] = kv
        cfg["num_ln_in_parallel_attn"] = 2 if two_norms else 1
    else:
        cfg["multi_query"] = kv == 1
    cfg["ffn_hidden_size"] = cfg.pop("intermediate_size", None) or 4 * cfg["hidden_size"]
    cfg.pop("head_dim", None)
    return cfg


def _deepseek2(m: _Meta) -> dict[str, Any]:
    # DeepseekV2Model.set_gguf_parameters: MLA as MQA with larger heads: key_length = kv_lora_rank + qk_rope,
    # value_length = kv_lora_rank, key_length_mla = qk_nope + qk_rope, value_length_mla = v_head_dim,
    # rope.dimension_count = qk_rope; files before the *_mla keys wrote key_length = qk_nope + qk_rope and
    # value_length = v_head_dim. leading_dense_block_count <- first_k_dense_replace, expert_shared_count <-
    # n_shared_experts, expert_gating_func sigmoid (2) for DeepSeek-V3's router, softmax for V2.
    heads = m.size("attention.head_count")
    rope = m.size("rope.dimension_count")
    key = m.size("attention.key_length_mla", None) or m.size("attention.key_length")
    value = m.size("attention.value_length_mla", None) or m.size("attention.value_length")
    if key <= rope:
        raise m.error(f"{m.arch}.attention.key_length_mla", f"({key}) must exceed rope.dimension_count ({rope})")
    cfg: dict[str, Any] = {
        "model_type": "deepseek_v3" if m.size("expert_gating_func", 1) == 2 else "deepseek_v2",
        "hidden_size": m.size("embedding_length"),
        "num_hidden_layers": m.size("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": m.size("context_length", None),
        "vocab_size": _vocab(m),
        "tie_word_embeddings": not m.has("output.weight"),
        "intermediate_size": m.size("feed_forward_length", None) or m.dim("blk.0.ffn_up.weight", 1),
        "q_lora_rank": m.size("attention.q_lora_rank", None) or None,
        "kv_lora_rank": m.size("attention.kv_lora_rank"),
        "qk_rope_head_dim": rope,
        "qk_nope_head_dim": key - rope,
        "v_head_dim": value,
    }
    experts = m.size("expert_count", 0)
    if experts:
        cfg.update(
            n_routed_experts=experts,
            num_experts_per_tok=m.size("expert_used_count"),
            moe_intermediate_size=m.size("expert_feed_forward_length"),
            n_shared_experts=m.size("expert_shared_count", 0),
            first_k_dense_replace=m.size("leading_dense_block_count", 0),
        )
    return cfg


def _gpt_oss(m: _Meta) -> dict[str, Any]:
    # GptOssModel: expert_feed_forward_length <- intermediate_size (every layer is MoE), sliding_window.
    cfg = {**_common(m), **_experts(m, "num_local_experts"), "model_type": "gpt_oss"}
    cfg["intermediate_size"] = m.size("expert_feed_forward_length")
    cfg["sliding_window"] = m.size("attention.sliding_window")
    return cfg


ARCHITECTURES: dict[str, Callable[[_Meta], dict[str, Any]]] = {
    "llama": _llama,
    "qwen2": _qwen2,
    # Qwen2-VL's language model is Qwen2's (Qwen2VLModel writes the same keys plus rope.dimension_sections for
    # M-RoPE, which has no parameters); the vision tower is a separate mmproj GGUF, not read here.
    "qwen2vl": _qwen2,
    "qwen2moe": _qwen2moe,
    "qwen3": _qwen3,
    "qwen3moe": _qwen3moe,
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "phi2": _phi2,
    "phi3": _phi3,
    "gpt2": _gpt2,
    "gptneox": _gptneox,
    "falcon": _falcon,
    "deepseek2": _deepseek2,
    "gpt-oss": _gpt_oss,
}


def config_from_metadata(metadata: Mapping[str, object], shapes: Shapes, where: str) -> dict[str, Any]:
    """The transformers config.json keys a GGUF's metadata was converted from (None values left out)."""
    arch = metadata.get("general.architecture")
    supported = ", ".join(sorted(ARCHITECTURES))
    if not isinstance(arch, str):
        raise ConfigError(
            f"{where}: GGUF key 'general.architecture' is missing or not a string; supported: {supported}",
            field="model",
            allowed=supported,
        )
    build = ARCHITECTURES.get(arch)
    if build is None:
        raise UnsupportedArchitectureError(
            f"{where}: GGUF architecture {shown(arch)} is not supported; supported: {supported}",
            field="model",
            allowed=supported,
        )
    cfg = build(_Meta(metadata, arch, shapes, where))
    # None means "absent" (the adapter's default applies), except where the config says null on purpose.
    return {k: v for k, v in cfg.items() if v is not None or k in _NULL_MEANS_NONE}


def file_type_name(metadata: Mapping[str, object]) -> str | None:
    """``general.file_type`` as llama.cpp names it (Q4_K_M, IQ4_XS, F16...), None when absent or unknown."""
    import gguf  # lazy, like every GGUF read

    value = metadata.get("general.file_type")
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def storage_from_file_type(metadata: Mapping[str, object], matrix_types: list[str], where: str) -> dict[str, Any]:
    """ModelSpec's storage fields from ``general.file_type`` (llama_ftype): a dtype for F32/F16/BF16 files; a
    formats.py name where one exists (q4_k_m...); otherwise ``unread_quantization``, so that an estimate which
    cannot read spec.checkpoint refuses rather than prices a 4-bit file at 16 bits."""
    value = metadata.get("general.file_type")
    if isinstance(value, int) and value in _DTYPES:
        return {"stored_dtype": _DTYPES[value], "stored_format": None, "unread_quantization": None}
    if isinstance(value, int) and value in _KNOWN_FORMATS:
        return {"stored_dtype": "fp16", "stored_format": _KNOWN_FORMATS[value], "unread_quantization": None}
    name = file_type_name(metadata)
    if name is None:
        # No (known) file type: the matrices' own types say whether the file is quantized.
        kinds = sorted(set(matrix_types))
        if kinds and all(k in _DTYPE_OF_TYPE for k in kinds) and len(kinds) == 1:
            return {"stored_dtype": _DTYPE_OF_TYPE[kinds[0]], "stored_format": None, "unread_quantization": None}
        name = f"absent or unknown ({shown(value)}); matrix types {', '.join(kinds) or 'none'}"
    return {"stored_dtype": "fp16", "stored_format": None, "unread_quantization": ("general.file_type", name)}

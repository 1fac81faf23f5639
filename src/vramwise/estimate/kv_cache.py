"""KV cache: what each layer stores per token, bounded by sliding windows, rounded to paged blocks."""

from __future__ import annotations

import functools

from vramwise.errors import InvalidWorkloadError, shown
from vramwise.estimate.plan import BATCH, Rule
from vramwise.estimate.sharding import kv_heads_per_gpu
from vramwise.spec.model import ModelSpec
from vramwise.spec.ssm import attention_layer_count, is_ssm_layer

ENCODER_NOTE = "keeps no KV cache: an encoder's attention is bidirectional and runs once (BertModel: use_cache False)"


def check_generates(spec: ModelSpec, new_tokens: int) -> None:
    """Refuse new tokens for an encoder (``ImplTraits.causal_kv_cache`` False): it has no cache to decode with."""
    if new_tokens and not spec.traits.causal_kv_cache:
        raise InvalidWorkloadError(
            f"-n {new_tokens}: {shown(spec.name)} is an encoder (bidirectional attention, no KV cache) and runs one "
            "forward; generating new tokens needs a decoder",
            field="new_tokens",
            allowed="0",
        )


def kv_elements_per_token(spec: ModelSpec, tp: int = 1) -> int:
    """Cached elements per token per layer on one GPU.

    MHA/GQA/MQA: K and V, ``2 · n_kv · d`` (split over tp). MLA: one shared latent plus the decoupled
    rope key, ``kv_lora_rank + qk_rope_head_dim``, replicated on every tp rank (vLLM's MLA cache).
    An encoder (``ImplTraits.causal_kv_cache`` False) caches nothing: 0.
    """
    if not spec.traits.causal_kv_cache:
        return 0
    att = spec.attention
    if att.kind == "mla" and att.mla:
        return att.mla.kv_lora_rank + att.mla.qk_rope_head_dim
    return 2 * kv_heads_per_gpu(spec, tp) * att.head_dim


def cached_tokens(spec: ModelSpec, layer: int, tokens: int, block: int) -> int:
    """Tokens layer ``layer`` keeps for one sequence of ``tokens``: sliding layers keep the window only."""
    if spec.vision and layer in spec.vision.cross_layers:
        return 0  # mllama: a cross-attention layer caches the image's K/V (estimate/vision.py), not the text's
    kept = tokens
    if spec.layer_attention(layer) == "sliding" and spec.attention.sliding_window:
        kept = min(tokens, spec.attention.sliding_window)
    return -(-kept // block) * block


@functools.lru_cache(maxsize=4096)
def _kept(spec: ModelSpec, tokens: int, block: int) -> int:
    # a hybrid's Mamba layers keep a fixed state instead (estimate/ssm_state.py)
    return sum(cached_tokens(spec, i, tokens, block) for i in range(spec.num_layers) if not is_ssm_layer(spec, i))


def kv_cache(spec: ModelSpec, *, tokens: int, dtype: str, dtype_bytes: int, tp: int, block: int) -> Rule:
    """K and V of ``tokens`` per sequence in every layer (``coef``: one sequence's bytes)."""
    att, L = spec.attention, attention_layer_count(spec)
    if att.kind == "mla" and att.mla:
        per = f"(kv_lora_rank {att.mla.kv_lora_rank} + rope {att.mla.qk_rope_head_dim})"
    else:
        per = f"2 x n_kv {kv_heads_per_gpu(spec, tp)} x d {att.head_dim}"
    sliding = sliding_layers(spec) if att.sliding_window else 0
    window = f"; {sliding} of {L} layers keep min(tokens, window {att.sliding_window})" if sliding else ""
    blocks = f", tokens rounded up to blocks of {block}" if block > 1 else ""
    layers = f"attention layers {L} of {spec.num_layers}" if spec.ssm else f"L {L}"
    if spec.vision and spec.vision.cross_layers:  # mllama: those layers cache the image instead (kv_cache/cross)
        layers = f"self-attention layers {L - len(spec.vision.cross_layers)} of {L}"
    return Rule(
        name="kv_cache",
        coef=kv_elements_per_token(spec, tp) * _kept(spec, tokens, block) * dtype_bytes,
        var=BATCH,
        formula=lambda v: f"b {v.b} x {per} x {dtype} {dtype_bytes:g} B x tokens {tokens} x {layers}{window}{blocks}",
        source="K and V per layer per token (vLLM paged KV; MLA latent cache per DeepSeek-V2 paper §2.1)",
    )


@functools.lru_cache(maxsize=256)
def sliding_layers(spec: ModelSpec) -> int:
    """How many layers attend through a sliding window."""
    return sum(spec.layer_attention(i) == "sliding" for i in range(spec.num_layers) if not is_ssm_layer(spec, i))


def sliding_prefill_views(spec: ModelSpec, *, context: int, dtype_bytes: int, tp: int) -> Rule | None:
    """transformers' sliding-window cache keeps the window as a view of the whole prefill's K/V, so each sliding
    layer holds ``context`` tokens until its first decode step replaces them (traced: verify). A paged engine
    copies the window out instead; this term applies to the contiguous (kv_block 1) cache only."""
    window = spec.attention.sliding_window
    if not window or context <= window:
        return None
    sliding = sliding_layers(spec)
    per_seq = kv_elements_per_token(spec, tp) * sliding * (context - window) * dtype_bytes
    if not per_seq:
        return None
    return Rule(
        name="kv_cache/prefill_views",
        coef=per_seq,
        var=BATCH,
        formula=lambda v: f"b {v.b} x {sliding} sliding layers x (context {context} - window {window}) x K/V per token",
        source="transformers DynamicSlidingWindowLayer slices the prefill's keys and values (a view, not a copy)",
    )

"""Inference of an encoder-decoder (T5, mT5) as transformers' ``generate()`` runs it.

The encoder reads the ``context`` tokens once; the decoder then starts from its decoder_start_token and
generates ``new_tokens`` one at a time (GenerationMixin._prepare_encoder_decoder_kwargs_for_generation, then
the decoding loop), so b sequences hold (modeling_t5.py, cache_utils.EncoderDecoderCache):
  kv_cache/self   decoder self-attention K and V: L_dec x 2 x a x d_kv per decoder token. The decoder reads
                  its start token and every new token but the last, n in all (one with n = 0: the first
                  step still runs);
  kv_cache/cross  decoder cross-attention K and V of the encoder's output: L_dec x 2 x a x d_kv x s, computed
                  at the first decoder step and reused (T5Attention.forward: cache.is_updated[layer_idx]);
  activations/encoder_output  the encoder's last hidden state, b x s x h, which generate() keeps in its
                  model_kwargs for every step.
Transients (T = b x s encoder tokens; c compute bytes; a heads, d_kv head width, i = d_ff):
  prefill (inside a layer): one encoder block, no cache yet. Attention: the stack's input embeddings, the
      block's input and its norm output (3h), q, k, v (3·a·d_kv), the kernel's output and its transposed copy
      (2·a·d_kv) per token; eager attention holds two b·a·s² score tensors while it builds them (matmul, then
      + position_bias, then softmax: each step keeps the previous one until it returns; softmax in the compute
      dtype) beside q, k, v only, then the probabilities beside the output and its copy. The MLP: 3h
      and its intermediates (relu: wi and its activation, 2i; gated: act(wi_0), wi_1 and their product, 3i;
      gelu_new's composite formula holds four i-wide tensors at once).
  activations/position_bias: T5 adds a (1, a, s, s) relative position bias to every layer's scores; block 0
      computes it (T5Attention.compute_bias) and the stack passes it to every block, batch 1. Under sdpa it
      becomes the kernel's float mask, copied contiguous in each layer (sdpa_attention_forward ->
      create_position_bias_mask(...).contiguous()): two; CUDA's memory-efficient kernel pads a mask whose rows
      are not 8-element aligned (s % 8 != 0) to a third, (1, a, s, s rounded up to 8). It is why T5 cannot use
      flash attention in transformers (T5PreTrainedModel._supports_flash_attn = False: "Using position bias
      API for attention").
      When the MLP's live set is the larger, the copy is already freed: the term then counts one bias more
      than that moment holds (an upper bound by a·s²·c).
  prefill (position bias): block 0 buckets the relative position of every (query, key) pair after its q, k
      and v exist (T = b·s tokens: 3h + 3·a·d_kv each). _relative_position_bucket (bidirectional) at its
      torch.min holds the caller's relative_position, relative_buckets, abs(relative_position),
      relative_position_if_large, full_like and min's result (int64, 8 B each) and is_small (bool, 1 B):
      49 B per pair; after it, relative_position and the buckets (16 B) beside the looked-up bias (a·c).
  prefill (logits) / decode step: the caches above, the decoder block's live set for one token (with eager,
      the scores against max(s, n) keys) and the logits of the decoder's last position (every decoder
      position with all_logits), T5 v1.0's d_model^-0.5 rescaled hidden state included.
"""

from __future__ import annotations

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.estimate.cuda_context import context_term
from vramwise.estimate.plan import BATCH, ONE, Plan, Rule, Transients, Vars, constant
from vramwise.estimate.precision import compute_bytes, kv_dtype
from vramwise.estimate.term import PhaseKind, Term
from vramwise.estimate.weights import weight_terms
from vramwise.formats import default_format, get_format
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import InferSetup

_CACHE_SOURCE = "transformers EncoderDecoderCache (cache_utils.py): self-attention DynamicCache + cross-attention cache"


def refuse(spec: ModelSpec, what: str) -> None:
    """One line for a question the encoder-decoder estimate does not model (training, serving, textbook...)."""
    if spec.encoder_decoder is not None:
        raise InvalidWorkloadError(
            f"{spec.name} is an encoder-decoder model (T5-style): {what} is not modelled for "
            "encoder-decoder models yet; `vramwise infer` (accurate mode) estimates its generation",
            field="model",
            allowed="a decoder-only model, or `vramwise infer` for an encoder-decoder model",
        )


def _check(setup: InferSetup) -> None:
    if setup.tp > 1:
        raise InvalidLayoutError(
            f"tp ({setup.tp}): encoder-decoder models are estimated on one GPU (transformers' T5 has no "
            "tensor-parallel plan and vLLM does not serve T5); use tp 1",
            field="tp",
            allowed="1",
        )
    if setup.attention == "flash":
        raise InvalidWorkloadError(
            "attention flash: transformers' T5 cannot use flash attention (it adds a position bias to the scores; "
            "T5PreTrainedModel._supports_flash_attn = False); use sdpa or eager",
            field="attention",
            allowed="sdpa, eager",
        )
    if setup.prefill_chunk is not None:
        raise InvalidWorkloadError(
            "prefill_chunk: the encoder reads the whole input in one forward (no chunked prefill for T5); drop it",
            field="prefill_chunk",
            allowed="none (the whole input)",
        )


def _kv(spec: ModelSpec, name: str, tokens: int, what: str, dtype: str, kv_b: int) -> Rule:
    att, L = spec.attention, spec.num_layers
    per = 2 * att.num_heads * att.head_dim * L * kv_b
    return Rule(
        name=name,
        coef=per * tokens,
        var=BATCH,
        formula=lambda v: (
            f"b {v.b} x L_dec {L} x 2 x a {att.num_heads} x d_kv {att.head_dim} x {what} {tokens} x {dtype} {kv_b} B"
        ),
        source=_CACHE_SOURCE,
    )


def _mlp_width(spec: ModelSpec) -> int:
    """i-wide tensors live at once in the MLP (module docstring)."""
    if spec.mlp.activation == "gelu_new":
        return 4  # 0.5·x, x³, ... (NewGELUActivation) beside wi's (or wi_0's) output
    return 3 if spec.mlp.gated else 2


def _layer(spec: ModelSpec, *, tokens: int, keys: int, c: int, eager: bool, name: str) -> Rule:
    """One block's largest live set for ``tokens`` queries per sequence against ``keys`` keys."""
    att, h, i = spec.attention, spec.hidden_size, spec.mlp.intermediate_size
    inner = att.num_heads * att.head_dim
    # eager: while the scores are built, q, k, v and two score tensors; after, the probabilities (returned as
    # attn_weights, alive to the block's end) beside the output and its transposed copy
    scores = att.num_heads * tokens * keys * c if eager else 0
    attention = max(tokens * c * (3 * h + 3 * inner) + 2 * scores, tokens * c * (3 * h + 5 * inner) + scores)
    building = eager and tokens * c * 2 * inner < scores  # the first of the two moments is the larger
    mlp = tokens * c * (3 * h + _mlp_width(spec) * i)
    in_attention = attention >= mlp

    def formula(v: Vars) -> str:
        if in_attention and building:
            f = f"attention: T {v.b * tokens} x c {c} x (3·h {3 * h} + 3·a·d_kv {3 * inner})"
            return f + f" + eager scores 2 x b·a·s_q·s_k·c = {2 * v.b * scores:,}"
        if in_attention:
            f = f"attention: T {v.b * tokens} x c {c} x (3·h {3 * h} + 5·a·d_kv {5 * inner})"
            return f + (f" + eager probabilities b·a·s_q·s_k·c = {v.b * scores:,}" if eager else "")
        return f"MLP: T {v.b * tokens} x c {c} x (3·h {3 * h} + {_mlp_width(spec)}·d_ff {_mlp_width(spec) * i})"

    return Rule(
        name=name,
        coef=max(attention, mlp),
        var=BATCH,
        formula=formula,
        source="one T5Block's live tensors in transformers (estimate/encoder_decoder.py docstring)",
    )


# CUDA's memory-efficient kernel wants the mask's rows 8-element aligned; a (1, a, s, s) mask with s % 8 != 0 is
# padded to a copy first (aten/src/ATen/native/transformers/attention.cpp: preprocess_mask, mem_eff_alignment = 8)
_MASK_ALIGNMENT = 8


def _position_bias(spec: ModelSpec, s: int, c: int, sdpa: bool) -> Rule:
    a = spec.attention.num_heads
    copies = 2 if sdpa else 1
    why = " x 2 (sdpa's contiguous mask copy)" if sdpa else ""
    padded = 0
    if sdpa and s % _MASK_ALIGNMENT:
        width = s + _MASK_ALIGNMENT - s % _MASK_ALIGNMENT
        padded = a * s * width * c
        why += f" + the kernel's aligned copy a·s·{width}·c {padded:,}"
    return Rule(
        name="activations/position_bias",
        coef=copies * a * s * s * c + padded,
        var=ONE,
        formula=lambda _: f"1 x a {a} x s {s} x s {s} x c {c}{why}",
        source="modeling_t5.T5Attention.compute_bias (1, heads, s, s), shared by every block of the stack; "
        "integrations/sdpa_attention.create_position_bias_mask; ATen preprocess_mask (CUDA memory-efficient)",
    )


# _relative_position_bucket(bidirectional=True) at torch.min: six int64 (s, s) tensors and one bool (docstring)
_BUCKET_BYTES = 6 * 8 + 1
_LOOKUP_BYTES = 2 * 8  # relative_position and the buckets, beside the embedding lookup's (s, s, a) output


def _bucketing(spec: ModelSpec, s: int, c: int) -> tuple[Rule, Rule]:
    """Encoder block 0 while compute_bias runs: q, k, v and the layer's inputs, and the (s, s) temporaries."""
    att, h = spec.attention, spec.hidden_size
    inner = att.num_heads * att.head_dim
    per_pair = max(_BUCKET_BYTES, _LOOKUP_BYTES + att.num_heads * c)
    live = Rule(
        name="activations/prefill_workspace",
        coef=s * c * (3 * h + 3 * inner),
        var=BATCH,
        formula=lambda v: f"block 0 before attention: T {v.b * s} x c {c} x (3·h {3 * h} + 3·a·d_kv {3 * inner})",
        source="modeling_t5.T5Attention.forward: q, k, v exist when compute_bias runs",
    )
    buckets = Rule(
        name="activations/position_buckets",
        coef=per_pair * s * s,
        var=ONE,
        formula=lambda _: f"s {s} x s {s} x max(49 B at torch.min, 16 B + a·c {att.num_heads * c} B at the lookup)",
        source="modeling_t5.T5Attention._relative_position_bucket and compute_bias: int64 (s, s) temporaries",
    )
    return live, buckets


def _logits(spec: ModelSpec, positions: int, c: int, last_only: bool) -> Rule:
    V, h = spec.vocab_size, spec.hidden_size
    scaled = spec.encoder_decoder is not None and spec.encoder_decoder.scale_decoder_outputs
    hidden = positions * h * c * (2 if scaled else 1)
    per = V * (c + 4) if last_only else positions * V * c
    rescale = " x 2 (T5 v1.0's d_model^-0.5 rescaled copy)" if scaled else ""

    def formula(v: Vars) -> str:
        f = f"b {v.b} x V {V} x (c {c} + fp32 4)" if last_only else f"b {v.b} x n {positions} x V {V} x c {c}"
        return f"{f} + decoder hidden b·n·h·c{rescale} = {v.b * hidden:,}"

    return Rule(
        name="activations/logits",
        coef=per + hidden,
        var=BATCH,
        formula=formula,
        source="decoder positions only: T5ForConditionalGeneration.forward lm_head(decoder output); generate() "
        "keeps the last position's logits and upcasts them to fp32",
    )


def _first_logits(spec: ModelSpec, setup: InferSetup, decoded: int, c: int) -> Rule:
    if setup.all_logits:
        return _logits(spec, decoded, c, last_only=False)
    return _logits(spec, 1, c, last_only=True)


def _fp16_wo(spec: ModelSpec, fmt_name: str) -> list[Rule]:
    """fp16 loads keep every wo in fp32 (T5PreTrainedModel._keep_in_fp32_modules = ["wo"]; transformers applies
    it to fp16 only: modeling_utils, "_keep_in_fp32_modules will upcast to fp32 only if the requested dtype is
    fp16"): 2 more bytes per wo weight."""
    if fmt_name != "fp16":
        return []
    wo = sum(g.count for g in parameter_groups(spec) if g.name in ("mlp.down", "mlp.encoder.down"))
    term = Term(
        name="weights/mlp_fp32_upcast",
        bytes=2 * wo,
        formula=f"wo weights {wo:,} x (fp32 4 B - fp16 2 B)",
        source='modeling_t5.T5PreTrainedModel._keep_in_fp32_modules = ["wo"] (fp16 loads only)',
    )
    return [constant(term)]


def encoder_decoder_plan(spec: ModelSpec, setup: InferSetup) -> Plan:
    """The inference plan of an encoder-decoder (module docstring); it never reads ``setup.batch``."""
    _check(setup)
    fmt = get_format(setup.weight_format or default_format(spec))
    c = compute_bytes(fmt.name)
    kv_name, kv_b = kv_dtype(setup, fmt.name)
    computed = "fp32" if c == 4 else "fp16" if fmt.name == "fp16" else "bf16"
    if kv_name != computed:
        # T5Attention.forward stores its k and v projections' outputs as they are (cache.update)
        raise InvalidWorkloadError(
            f"kv_dtype {kv_name}: transformers' EncoderDecoderCache keeps keys and values in the compute dtype "
            f"({computed} with {fmt.name} weights); use auto",
            field="kv_dtype",
            allowed=f"auto or {computed}",
        )
    s, decoded = setup.context, max(setup.new_tokens, 1)
    eager = setup.attention == "eager"
    weights = tuple(constant(t) for t in weight_terms(spec, fmt, hp_bytes=c, tp=1))
    persistent = (*weights, *_fp16_wo(spec, fmt.name), constant(context_term(setup.overheads)))

    h = spec.hidden_size
    encoder_output = Rule(
        name="activations/encoder_output",
        coef=s * h * c,
        var=BATCH,
        formula=lambda v: f"b {v.b} x s {s} x h {h} x c {c}",
        source="GenerationMixin._prepare_encoder_decoder_kwargs_for_generation keeps encoder_outputs for every step",
    )
    caches = (
        _kv(spec, "kv_cache/self", decoded, "decoder tokens max(n, 1)", kv_name, kv_b),
        _kv(spec, "kv_cache/cross", s, "encoder tokens s", kv_name, kv_b),
        encoder_output,
    )
    out = Transients()
    encoder = _layer(spec, tokens=s, keys=s, c=c, eager=eager, name="activations/prefill_workspace")
    held = out.add(*caches)
    phases = [
        (PhaseKind.PREFILL_POSITION_BIAS, out.add(*_bucketing(spec, s, c))),
        (PhaseKind.PREFILL_LAYER, out.add(encoder, _position_bias(spec, s, c, sdpa=not eager))),
        # generate()'s first decoder step reads one token (its start token); a plain forward, every decoder position
        (PhaseKind.PREFILL_LOGITS, held + out.add(_first_logits(spec, setup, decoded, c))),
    ]
    if setup.new_tokens > 1:
        step = _layer(spec, tokens=1, keys=max(s, decoded), c=c, eager=eager, name="activations/prefill_workspace")
        phases.append((PhaseKind.DECODE, held + out.add(step, _logits(spec, 1, c, last_only=True))))
    notes = [
        f"weights stored as {fmt.name}: {fmt.summary}",
        f"encoder-decoder: the encoder reads the context ({s} tokens) once; the decoder generates new_tokens "
        f"({setup.new_tokens}) from its start token, keeping self-attention K/V for {decoded} decoder token(s) and "
        f"cross-attention K/V for the {s} encoder tokens (transformers generate())",
        "kv_block not applied: transformers' EncoderDecoderCache grows token by token (no paged engine serves T5)",
    ]
    if not eager:
        # masking_utils.create_bidirectional_mask returns None for an all-ones mask under sdpa; with padding,
        # create_position_bias_mask writes torch.where(mask, position_bias, min) at (b, heads, s, s) per layer
        notes.append(
            "prompts without padding: with padded encoder inputs, sdpa merges the padding mask into the position "
            "bias, one (b, heads, s, s) tensor per layer more"
        )
    if fmt.name == "fp16":
        notes.append(
            "fp16: transformers keeps wo in fp32, so each MLP's output and the residual stream after it are fp32; "
            "the workspace counts 16-bit activations (an underestimate in fp16)"
        )
    fraction = setup.overheads.allocator_fraction
    return out.plan(persistent=persistent, phases=phases, allocator_fraction=fraction, notes=notes)

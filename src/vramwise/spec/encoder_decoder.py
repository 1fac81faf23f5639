"""Encoder-decoder models (T5, mT5): the encoder stack and what the decoder adds beside a decoder-only model.

A ``ModelSpec`` with ``encoder_decoder`` set describes the decoder stack in its own fields (``num_layers`` are
the decoder's blocks, ``attention`` their self-attention, ``mlp`` and ``norm`` theirs); this part names what
the decoder-only description lacks. Every stack of T5 shares d_model, heads, d_kv and d_ff
(models/t5/modeling_t5.py: one ``T5Config`` builds both ``T5Stack``s), so the encoder repeats the decoder's
widths with its own layer count, and each decoder block adds a cross-attention (``T5LayerCrossAttention``:
q, k, v, o and one more norm) over the encoder's output.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class EncoderDecoderSpec:
    """The encoder stack and the decoder's cross-attention (T5ForConditionalGeneration, MT5ForConditionalGeneration)."""

    encoder_layers: int  # T5Config.num_layers; the decoder's count is ModelSpec.num_layers (num_decoder_layers)
    # Rows of the relative position bias: nn.Embedding(relative_attention_num_buckets, num_heads), in the
    # self-attention of block 0 of each stack only (T5Stack: has_relative_attention_bias=bool(i == 0)).
    relative_buckets: int
    # T5 v1.0 multiplies the decoder output by d_model^-0.5 before its head (T5Config.scale_decoder_outputs,
    # read from tie_word_embeddings); it changes no parameter or tensor size, and is kept as a label only.
    scale_decoder_outputs: bool = False

"""Parameter groups an encoder-decoder adds to its decoder's (spec/params.py counts the decoder stack).

T5ForConditionalGeneration (models/t5/modeling_t5.py), beside the shared embedding, the decoder blocks, the
decoder's final norm and the head that ``parameter_groups`` already counts from the ``ModelSpec`` fields:
  the encoder's blocks:  T5LayerSelfAttention (q, k, v: d_model -> heads x d_kv; o back; one norm) and
                         T5LayerFF (wi -> d_ff -> wo, or gated wi_0, wi_1, wo; one norm), no biases;
  the encoder's final_layer_norm;
  each decoder block's T5LayerCrossAttention: q, k, v, o of the same widths and one more norm (counted in
                         the decoder's ``norm.per_layer`` = 3);
  relative_attention_bias: nn.Embedding(relative_attention_num_buckets, num_heads) in block 0 of each stack.
Group names keep the estimators' categories (``attention``, ``mlp``, ``norms``) so the weights term files them
as it files a decoder's, and name the stack so that LoRA (spec/adapters/t5.py peft_modules) finds each linear.
"""

from __future__ import annotations

from vramwise.spec.model import ModelSpec
from vramwise.spec.params import ParamGroup, _linear, _mlp_groups, _vec


def encoder_decoder_groups(spec: ModelSpec) -> list[ParamGroup]:
    """The encoder stack, the decoder's cross-attention and the relative position biases; [] for other models."""
    ed = spec.encoder_decoder
    if ed is None:
        return []
    att, h, mlp = spec.attention, spec.hidden_size, spec.mlp
    inner = att.num_heads * att.head_dim  # T5Attention.inner_dim = n_heads x d_kv, which may differ from d_model
    groups: list[ParamGroup] = []
    for stack, layers in (("encoder", ed.encoder_layers), ("cross", spec.num_layers)):
        groups += [
            _linear(f"attention.{stack}.q", h, inner, layers),
            _linear(f"attention.{stack}.k", h, inner, layers),
            _linear(f"attention.{stack}.v", h, inner, layers),
            _linear(f"attention.{stack}.o", inner, h, layers),
        ]
    # one table per stack (the decoder's cross-attention has none: has_relative_attention_bias=False)
    groups.append(_vec("attention.relative_bias", ed.relative_buckets * att.num_heads, 2, "other"))
    groups += _mlp_groups("mlp.encoder", h, mlp.intermediate_size, ed.encoder_layers, gated=mlp.gated, bias=False)
    # two norms per encoder block (before attention, before the MLP) and the encoder's final_layer_norm
    groups.append(_vec("norms.encoder", h, 2 * ed.encoder_layers + 1, "norm"))
    return groups

"""Selective state-space (Mamba) mixers of a hybrid model: the layers that keep a fixed state, not a KV cache.

Jamba (transformers ``models/jamba``) interleaves attention layers with Mamba layers: ``JambaModel.__init__``
builds ``JambaMambaDecoderLayer`` wherever ``JambaConfig.layers_block_type`` says "mamba" (every layer whose
index is not ``attn_layer_offset`` modulo ``attn_layer_period``). A Mamba layer has no attention, so no keys or
values: per sequence it keeps a convolution window and a recurrent state whose size does not grow with the
context (``JambaMambaMixer``, modeling_jamba.py lines 454-504).

Symbols: D = d_inner (mamba_expand x h), N = d_state, K = d_conv, R = dt_rank.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramwise.spec.model import ModelSpec


@dataclass(frozen=True, kw_only=True)
class SsmSpec:
    """The Mamba mixer of every layer in ``layers`` (which then has no attention)."""

    layers: tuple[int, ...]  # indices of the Mamba layers; every other layer is an attention layer
    d_inner: int  # D: mamba_expand x hidden_size (JambaMambaMixer.intermediate_size)
    d_state: int  # N: mamba_d_state (the recurrent state per channel)
    d_conv: int  # K: mamba_d_conv (the depthwise causal convolution's width)
    dt_rank: int  # R: mamba_dt_rank ("auto": ceil(h / 16), JambaConfig.__post_init__)
    conv_bias: bool  # mamba_conv_bias: Conv1d(D, D, K, groups=D, bias=...)
    proj_bias: bool  # mamba_proj_bias: in_proj and out_proj biases
    bc_dt_norms: bool = True  # Jamba's dt_layernorm (R), b_layernorm and c_layernorm (N each): RMSNorm weights


def ssm_layer_count(spec: ModelSpec) -> int:
    """How many layers are Mamba layers (0 for a transformer)."""
    return len(spec.ssm.layers) if spec.ssm else 0


def attention_layer_count(spec: ModelSpec) -> int:
    """How many layers have attention, hence a KV cache: all of them but the Mamba layers."""
    return spec.num_layers - ssm_layer_count(spec)


def is_ssm_layer(spec: ModelSpec, index: int) -> bool:
    return spec.ssm is not None and index in _layer_set(spec.ssm)


@functools.lru_cache(maxsize=256)
def _layer_set(ssm: SsmSpec) -> frozenset[int]:
    return frozenset(ssm.layers)


def ssm_groups(spec: ModelSpec) -> list:
    """The Mamba mixers' parameters, summed over the Mamba layers (category ``ssm``).

    Shapes from ``JambaMambaMixer.__init__`` (modeling_jamba.py lines 471-501): in_proj Linear(h, 2D),
    conv1d Conv1d(D, D, K, groups=D) whose weight is (D, 1, K), x_proj Linear(D, R + 2N, bias=False),
    dt_proj Linear(R, D, bias=True), A_log (D, N), D (D,), out_proj Linear(D, h), and Jamba's RMSNorms on
    dt (R), B and C (N each). The conv weight and A_log/D are no nn.Linear, so quantizers leave them alone
    (kind ``other``).
    """
    from vramwise.spec.params import ParamGroup  # params imports this module: resolve the cycle at call time

    ssm = spec.ssm
    if ssm is None or not ssm.layers:
        return []
    n, h = len(ssm.layers), spec.hidden_size
    D, N, K, R = ssm.d_inner, ssm.d_state, ssm.d_conv, ssm.dt_rank

    def linear(name: str, n_in: int, n_out: int) -> ParamGroup:
        return ParamGroup(name=name, count=n_in * n_out * n, kind="linear", tensors=n, in_features=n_in)

    def vec(name: str, size: int, kind: str, per_layer: int = 1) -> ParamGroup:
        return ParamGroup(name=name, count=size * n, kind=kind, tensors=per_layer * n)  # type: ignore[arg-type]

    groups = [
        linear("ssm.in_proj", h, 2 * D),
        vec("ssm.conv1d", D * K, "other"),
        linear("ssm.x_proj", D, R + 2 * N),
        linear("ssm.dt_proj", R, D),
        vec("ssm.dt_proj_bias", D, "bias"),
        vec("ssm.A_log", D * N, "other"),
        vec("ssm.D", D, "other"),
        linear("ssm.out_proj", D, h),
    ]
    if ssm.conv_bias:
        groups.append(vec("ssm.conv1d_bias", D, "bias"))
    if ssm.proj_bias:
        groups.append(vec("ssm.proj_bias", 2 * D + h, "bias", per_layer=2))  # in_proj's 2D and out_proj's h
    if ssm.bc_dt_norms:
        groups.append(vec("ssm.norms", R + 2 * N, "norm", per_layer=3))
    return groups

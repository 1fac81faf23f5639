"""State-space (Mamba) layers of a hybrid model at inference: their fixed per-sequence state and their
one-layer workspace. Attention layers keep their KV cache (estimate/kv_cache.py counts only those).

Symbols (spec/ssm.py): n Mamba layers, D = d_inner, N = d_state, K = d_conv, T tokens per sequence in the
forward, c compute bytes.

State (transformers 5.24): ``JambaModel.forward`` makes ``DynamicCache(config=...)`` (modeling_jamba.py line
878), whose "linear_attention" layers are ``LinearAttentionLayer`` (cache_utils.py line 1478). It allocates
lazily from the tensors the mixer hands it (``lazy_initialization``, cache_utils.py lines 1211-1242):
  - conv state: ``zeros((b, D), K)`` in the dtype of ``hidden_states_B_C``, in_proj's output, i.e. the
    compute dtype (modeling_jamba.py lines 526, 544-549; cache_utils.py lines 1226-1230);
  - recurrent (SSM) state: ``zeros_like(final_state)``, (b, D, N) in fp32: mamba-ssm's kernel returns
    ``x[:, :, -1, 1::2]`` of its fp32 chunk states (selective_scan_interface.py SelectiveScanFn.forward;
    csrc/selective_scan/selective_scan.cpp ``x = empty({b, D, n_chunks, 2N}, weight_type)``, A being fp32:
    modeling_jamba.py line 530 ``A = -torch.exp(self.A_log.float())``), and the PyTorch scan's state is
    ``discrete_A * ssm_state + deltaB_u``, fp32 too (lines 375-377, 424).
Neither grows with the context: this is what replaces the KV cache on a Mamba layer.

Workspace: transformers 5.24 swaps ``mamba_selective_scan`` for mamba-ssm's ``selective_scan_fn`` and
``causal_conv1d_fn`` for causal-conv1d's whenever those packages import (``use_kernel_func_from_hub_with_fallback``,
integrations/hub_kernels.py lines 990-1053; modeling_jamba.py lines 242, 335); ``use_mamba_kernels`` no longer
has any effect (configuration_jamba.py line 36). A GPU deployment of Jamba installs them (without them the
PyTorch path is a per-token Python loop), so the estimate models the kernel path and names the other in a
note: the PyTorch scan materialises ``discrete_A``, ``discrete_B`` and ``deltaB_u``, each (b, D, T, N) in fp32
(modeling_jamba.py lines 375-377), which the kernel keeps in on-chip memory.
Live inside a Mamba layer while the kernel scans (per token, elements of c bytes unless said):
  3·h   the model's embeddings, the layer input (residual) and input_layernorm's output (as for attention,
        estimate/workspace.py);
  2·D   in_proj's output ``projected_states`` (line 526); its two halves are views;
  D     the causal convolution's output (lines 551-557); causal-conv1d allocates it with ``torch::empty_like`` of
        its channel-last input (the first half of in_proj's transposed output), so it is channel-last too;
  D     dt_proj's output ``time_step`` (line 580), contiguous (b, D, T);
  2·D   contiguous copies of u (the channel-last convolution output) and of the gate z (a strided view of
        in_proj's output): SelectiveScanFn.forward, ``if u.stride(-1) != 1: u = u.contiguous()``, same for z;
  2·D   the kernel's ``out`` and ``out_z`` (selective_scan.cpp: ``empty_like(delta)``, ``empty_like(z)``);
  4·N   B and C after their RMSNorms (lines 572-573) and their contiguous (b, N, T) copies in the kernel;
  and per sequence the kernel's chunk states, D·ceil(T / 2048)·2N fp32 (selective_scan.cpp n_chunks).
x_proj's output is freed once dt, B and C are rebound to their norms (lines 564-573). No kernel-path trace exists
(mamba-ssm needs CUDA); a traced CPU prefill of the PyTorch path peaks within 3% of this estimate plus the note's
three fp32 tensors (tests/estimate/test_ssm_state.py). A decode step runs
``causal_conv1d_update`` and ``selective_state_update`` instead (lines 535-542, 584-596): in_proj (2·D), the
convolution's output (D), dt (D), the update's output (D) and B, C (2·N), no copies and no chunk states.
"""

from __future__ import annotations

import functools

from vramwise.errors import UnsupportedArchitectureError
from vramwise.estimate.plan import BATCH, Rule
from vramwise.spec.model import ModelSpec
from vramwise.spec.ssm import SsmSpec, ssm_layer_count

_CACHE = "transformers 5.24 LinearAttentionLayer.lazy_initialization (cache_utils.py lines 1211-1242)"
SCAN_CHUNK = 2048  # mamba-ssm csrc/selective_scan/selective_scan.cpp: n_chunks = (seqlen + 2048 - 1) / 2048


def _ssm(spec: ModelSpec) -> SsmSpec:
    assert spec.ssm is not None  # callers test spec.ssm first
    return spec.ssm


def state_rules(spec: ModelSpec, *, c: int) -> tuple[Rule, ...]:
    """Each Mamba layer's conv and recurrent state, per sequence (``coef``: one sequence's bytes)."""
    if not ssm_layer_count(spec):
        return ()
    ssm, n = _ssm(spec), ssm_layer_count(spec)
    D, N, K = ssm.d_inner, ssm.d_state, ssm.d_conv
    return (
        Rule(
            name="ssm_state/conv",
            coef=n * D * K * c,
            var=BATCH,
            formula=lambda v: f"b {v.b} x Mamba layers {n} x D {D} x K {K} x c {c} B",
            source=f"conv_states (b, D, d_conv) in the compute dtype: {_CACHE}",
        ),
        Rule(
            name="ssm_state/ssm",
            coef=n * D * N * 4,
            var=BATCH,
            formula=lambda v: f"b {v.b} x Mamba layers {n} x D {D} x N {N} x fp32 4 B",
            source=f"recurrent_states (b, D, d_state) in fp32: {_CACHE}; mamba-ssm selective_scan_fn last_state",
        ),
    )


# vLLM (v1) keeps a hybrid's Mamba state in the KV pool, one page per Mamba layer per sequence, and makes the
# attention page at least as large (vllm/model_executor/models/config.py HybridAttentionMambaModelConfig.
# verify_and_update_config, mamba_cache_mode "none", i.e. without prefix caching): the attention block becomes
# the smallest multiple of 16 tokens (kernel_block_alignment_size) whose page holds a Mamba state, unless the
# user's block is larger, and the Mamba page is padded to the attention page.
VLLM_BLOCK_ALIGNMENT = 16


def vllm_state_page(spec: ModelSpec, *, c: int) -> int:
    """One Mamba layer's state for one sequence as vLLM stores it: conv (d_conv - 1, D) and temporal (D, N), both
    in the model dtype when mamba_cache_dtype and mamba_ssm_cache_dtype are "auto" (vllm/model_executor/layers/
    mamba/mamba_utils.py MambaStateShapeCalculator.mamba1_state_shape, MambaStateDtypeCalculator._mamba_state_dtype)."""
    ssm = _ssm(spec)
    return ((ssm.d_conv - 1) * ssm.d_inner + ssm.d_inner * ssm.d_state) * c


def vllm_block(spec: ModelSpec, *, attention_page_per_token: int, c: int, block: int) -> tuple[int, int]:
    """(the attention block in tokens, the padded Mamba page in bytes) under vLLM's hybrid page rule."""
    mamba_page = vllm_state_page(spec, c=c)
    if not attention_page_per_token:  # no attention layer: nothing to align with
        return block, mamba_page
    align = VLLM_BLOCK_ALIGNMENT
    needed = align * -(-mamba_page // (align * attention_page_per_token))
    block = max(block, needed)
    return block, block * attention_page_per_token


@functools.lru_cache(maxsize=1024)
def mamba_live(spec: ModelSpec, *, chunk: int, decode: bool, c: int) -> tuple[int, str]:
    """Bytes live inside one Mamba layer for one sequence of ``chunk`` tokens (kernel path), and the breakdown."""
    if not ssm_layer_count(spec):
        return 0, ""
    ssm, h = _ssm(spec), spec.hidden_size
    D, N = ssm.d_inner, ssm.d_state
    if decode:
        width = 3 * h + 5 * D + 2 * N
        return chunk * c * width, f"T {chunk} x c {c} x (3·h {3 * h} + 5·D {5 * D} + 2·N {2 * N}) (state update)"
    width = 3 * h + 8 * D + 4 * N
    states = D * -(-chunk // SCAN_CHUNK) * 2 * N * 4
    return (
        chunk * c * width + states,
        f"T {chunk} x c {c} x (3·h {3 * h} + 8·D {8 * D} + 4·N {4 * N}) + chunk states "
        f"D·ceil(T/{SCAN_CHUNK})·2N x fp32 4 B {states:,}",
    )


def with_mamba(rule: Rule, spec: ModelSpec, *, chunk: int, kv_len: int, c: int) -> Rule:
    """The one-layer workspace ``rule`` (attention or MLP, per sequence) against a Mamba layer's: the larger.

    A forward of one token against a longer cache is a decode step (``decode``); any other is a prefill."""
    live, breakdown = mamba_live(spec, chunk=chunk, decode=chunk == 1 and kv_len > 1, c=c)
    if live <= rule.coef:
        return Rule(
            name=rule.name,
            coef=rule.coef,
            var=rule.var,
            formula=lambda v: f"{rule.formula(v)}; a Mamba layer's {v.b * live:,} is smaller",
            source=rule.source,
        )
    return Rule(
        name=rule.name,
        coef=live,
        var=BATCH,
        formula=lambda v: f"max(attention, MLP, Mamba) = Mamba: b {v.b} x [{breakdown}]",
        source="one Mamba layer's live tensors with mamba-ssm's kernels (estimate/ssm_state.py docstring)",
    )


def pytorch_scan_note(spec: ModelSpec, *, chunk: int) -> str | None:
    """The assumption that the CUDA kernels run, with what the PyTorch fallback would add."""
    if not ssm_layer_count(spec):
        return None
    ssm = _ssm(spec)
    extra = 3 * ssm.d_inner * chunk * ssm.d_state * 4
    return (
        f"Mamba layers ({ssm_layer_count(spec)} of {spec.num_layers}) estimated with the mamba-ssm and "
        "causal-conv1d CUDA kernels, which transformers uses whenever they are installed; without them its "
        "PyTorch scan (modeling_jamba.py mamba_selective_scan) holds discrete A, discrete B and deltaB_u in "
        f"fp32: 3 x D {ssm.d_inner} x s {chunk} x N {ssm.d_state} x 4 B = {extra:,} B more per sequence"
    )


def check_inference(spec: ModelSpec, tp: int) -> None:
    """Refuse what the state-space estimate does not model: tensor parallelism of the Mamba mixers."""
    if ssm_layer_count(spec) and tp > 1:
        raise UnsupportedArchitectureError(
            f"tp ({tp}): {spec.name} has Mamba layers, whose split over tensor-parallel ranks is not modelled; "
            "use tp 1",
            field="tp",
            allowed="1 for state-space hybrids",
        )


def refuse_textbook(spec: ModelSpec) -> None:
    """The seeds' formulas put attention (K and V, 12h² per layer) on every layer: wrong for a hybrid."""
    if ssm_layer_count(spec):
        raise UnsupportedArchitectureError(
            f"--mode textbook: the seeds' formulas give every layer attention, but {spec.name} has "
            f"{ssm_layer_count(spec)} Mamba layers of {spec.num_layers}; use --mode accurate",
            field="mode",
            allowed="accurate for state-space hybrids",
        )


def refuse_training(spec: ModelSpec) -> None:
    """Training a hybrid is not modelled: the saved tensors of its Mamba layers' backward are not traced."""
    if ssm_layer_count(spec):
        raise UnsupportedArchitectureError(
            f"{spec.name}: training estimates do not cover state-space (Mamba) layers yet; inference does "
            "(vramwise infer)",
            field="model",
            allowed="inference for state-space hybrids",
        )

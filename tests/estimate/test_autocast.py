"""CUDA autocast's fp32 ops in the training estimate (estimate/train/autocast.py) and the twin's CUDA rule.

Oracles: arithmetic from autocast's op lists written out here (pytorch aten/src/ATen/autocast_mode.cpp, commit
008ec6b1840c: softmax and log_softmax are ``fp32_set_opt_dtype`` on CUDA, layer_norm and pow ``fp32``; none of
them is on the AutocastCPU list), and the traced step with the twin's CUDA rule (verify/cuda_autocast.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from tiny_configs import FAMILIES, HEADS

from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.autocast import cuda_only_fp32, gelu_new_amp
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.adapters import spec_from_config
from vramwise.workload import TrainSetup

# BERT-style eager attention: softmax(scores) in the scores' dtype, dropout on the probabilities
BERT = HEADS["bert-seq-cls"]
GPT2 = FAMILIES["gpt2"]  # gelu_new; dropout off
L, A, B, S = 3, 8, 2, 256  # layers, heads, batch, sequence


def _estimate(config: dict[str, Any], precision: str, attention: str = "eager", seq: int = S) -> Estimate:
    spec = spec_from_config(config, name="tiny", source="test")
    setup = TrainSetup.from_flat(
        batch=B, seq=seq, precision=precision, attention=attention, cuda_context_mib=0, allocator_fraction=0.0
    )
    return estimate_training(spec, setup)


def test_the_op_lists_differ_where_the_rule_applies() -> None:
    # CUDA: softmax/log_softmax fp32_set_opt_dtype, layer_norm/pow fp32; AutocastCPU lists none of them
    for op in ("softmax", "log_softmax", "layer_norm", "pow"):
        assert cuda_only_fp32(op)
    # both devices run the losses in fp32 (CPU: KERNEL_CPU(nll_loss, fp32))
    assert not cuda_only_fp32("nll_loss")
    assert not cuda_only_fp32("linear")  # a lower-precision op, on neither fp32 list


def test_eager_softmax_is_fp32_under_cuda_autocast() -> None:
    # per layer, per (query, key, head): the fp32 softmax output (4), the dropout's 1-byte mask, the 16-bit cast
    # autocast makes for the probabilities' matmul with v (2) = 7 B; without autocast (bf16) the softmax stays
    # in the scores' dtype: 2 + 1 + 2 = 5 B
    elements = L * B * A * S * S
    amp = _estimate({**BERT, "attention_probs_dropout_prob": 0.1}, "amp")
    assert amp.term("activations/attention/scores").bytes == elements * (4 + 1 + 2)
    bf16 = _estimate({**BERT, "attention_probs_dropout_prob": 0.1}, "bf16")
    assert bf16.term("activations/attention/scores").bytes == elements * (2 + 1 + 2)
    # without attention dropout: fp32 softmax (4) and the matmul's 16-bit cast (2)
    no_drop = _estimate({**BERT, "attention_probs_dropout_prob": 0.0}, "amp")
    assert no_drop.term("activations/attention/scores").bytes == elements * (4 + 2)


def test_eager_backward_workspace_follows_the_fp32_softmax() -> None:
    # backward_workspace.attention_workspace: an fp32 softmax's probability and score gradients, 8 - c B per
    # element for one layer, as for families that upcast themselves (c = 2: 6 B)
    est = _estimate({**BERT, "attention_probs_dropout_prob": 0.0}, "amp")
    assert est.term("backward/attention_scores").bytes == B * A * S * S * (8 - 2)


def test_gelu_new_keeps_fp32_tensors_under_cuda_autocast() -> None:
    # NewGELUActivation under CUDA autocast: pow's fp32 copy of x (4), tanh's fp32 output (4), 0.5x (2), fp32
    # 1 + tanh (4); down's (c_proj's) 16-bit input (2) as without autocast. bf16: x, tanh, 0.5x, 1 + tanh + input
    i, tokens = 4 * 256, B * S
    assert gelu_new_amp(2) == 14
    amp = _estimate(GPT2, "amp", attention="sdpa")
    assert amp.term("activations/mlp/intermediate").bytes == L * tokens * i * (4 + 4 + 2 + 4 + 2)
    bf16 = _estimate(GPT2, "bf16", attention="sdpa")
    assert bf16.term("activations/mlp/intermediate").bytes == L * tokens * i * (4 * 2 + 2)


def test_sdpa_has_no_scores_to_upcast() -> None:
    # the rule is the eager softmax's: sdpa keeps no probabilities, so amp and bf16 agree on attention
    amp, bf16 = _estimate(BERT, "amp", attention="sdpa"), _estimate(BERT, "bf16", attention="sdpa")
    assert "activations/attention/scores" not in {t.name for p in amp.phases for t in p.transient}
    assert amp.term("activations/attention/output").bytes == bf16.term("activations/attention/output").bytes


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_the_twin_rule_runs_cuda_policy_and_is_removed_after() -> None:
    from vramwise.verify.cuda_autocast import cuda_autocast_rules

    x = torch.randn(2, 4, 8)
    w = torch.randn(8, 8)

    def dtypes() -> tuple[Any, ...]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.nn.functional.linear(x, w)
            return (
                y.dtype,
                torch.softmax(y, -1).dtype,
                y.softmax(-1, dtype=torch.bfloat16).dtype,  # an explicit dtype is left alone
                torch.log_softmax(y, -1).dtype,
                torch.nn.functional.layer_norm(y, (8,)).dtype,
                torch.pow(y, 3.0).dtype,
            )

    bf16, fp32 = torch.bfloat16, torch.float32
    assert dtypes() == (bf16,) * 6
    with cuda_autocast_rules():
        assert dtypes() == (bf16, fp32, bf16, fp32, fp32, fp32)
    assert dtypes() == (bf16,) * 6


@pytest.mark.parametrize(
    ("config", "attention"),
    [(BERT | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}, "eager"), (GPT2, "eager")],
    ids=["bert-eager", "gpt2-eager"],
)
def test_amp_step_matches_the_trace_with_cudas_rule(config: dict[str, Any], attention: str) -> None:
    # the traced amp step (CPU autocast plus CUDA's fp32 softmax, log_softmax, layer_norm and pow) against the
    # estimate: the forward end within 2% and the peak within 5% (tests/estimate/test_train_vs_trace.py's bounds)
    from vramwise.verify.trace import TraceRecipe, trace_training

    recipe = TraceRecipe(batch=B, seq=S, precision="amp", attention=attention)
    traced = trace_training(config, recipe)
    est = _estimate(config, "amp", attention=attention)
    forward_end = est.phase_total(next(p for p in est.phases if p.kind is PhaseKind.FORWARD_END))
    assert forward_end == pytest.approx(traced.marks["forward_end"], rel=0.02)
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.05)


def test_checkpointed_layers_leave_their_copies_in_the_cache_until_the_forward_exits() -> None:
    # BERT tiny: per layer the weights of q, k, v, o (256 x 256 each), up (256 x 1024), down (1024 x 256):
    # 4 x 65,536 + 2 x 262,144 = 786,432; outside the layers the pooler's (65,536) and the classifier's (256 x 4
    # and its 4 biases, the head's group). Without recompute all of them are saved for backward; with every layer
    # checkpointed the head's and one recomputed layer's stay, the other two layers' only until autocast's region
    # exits. (The layers' biases are cached too but saved by no matmul: not counted.)
    layer, head = 4 * 65_536 + 2 * 262_144, 65_536 + 1_024 + 4
    plain = _estimate(BERT, "amp", attention="sdpa")
    assert plain.term("autocast/weight_copies").bytes == 2 * (3 * layer + head)
    spec = spec_from_config(BERT, name="tiny", source="test")
    full = estimate_training(
        spec,
        TrainSetup.from_flat(
            batch=B, seq=S, precision="amp", recompute="full", cuda_context_mib=0, allocator_fraction=0.0
        ),
    )
    assert full.term("autocast/weight_copies").bytes == 2 * (layer + head)
    assert full.term("autocast/cached_copies").bytes == 2 * 2 * layer
    backward = next(p for p in full.phases if p.kind is PhaseKind.BACKWARD_RECOMPUTE)
    assert "autocast/cached_copies" not in {t.name for t in backward.transient}


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_trace_frees_the_cached_copies_when_the_forward_region_exits(family: str) -> None:
    # the twin marks forward_end after its `with autocast:` block: with every layer checkpointed the cached
    # copies are gone by then, so that moment is the estimate's forward end without them (within 2%)
    from tiny_configs import FAMILIES

    from vramwise.verify.trace import TraceRecipe, trace_training

    config = BERT | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0} if family == "bert" else (
        FAMILIES["llama"]
    )
    traced = trace_training(config, TraceRecipe(batch=B, seq=S, precision="amp", recompute="full"))
    spec = spec_from_config(config, name="tiny", source="test")
    est = estimate_training(
        spec,
        TrainSetup.from_flat(
            batch=B, seq=S, precision="amp", recompute="full", cuda_context_mib=0, allocator_fraction=0.0
        ),
    )
    forward_end = est.phase_total(next(p for p in est.phases if p.kind is PhaseKind.FORWARD_END))
    after_exit = forward_end - est.term("autocast/cached_copies").bytes
    assert after_exit == pytest.approx(traced.marks["forward_end"], rel=0.02)


def test_frozen_bottom_layers_keep_no_copies() -> None:
    # tiny Llama, the first 2 of 3 layers frozen: their weights need no gradient, so autocast neither caches their
    # casts (cached_cast: requires_grad) nor does a matmul save them. Per layer q 256 x 256, k and v 256 x 64,
    # o 256 x 256, gate, up, down 256 x 688: 692,224 weights; the untied head 8000 x 256
    from tiny_configs import FAMILIES

    spec = spec_from_config(FAMILIES["llama"], name="tiny", source="test")
    setup = TrainSetup.from_flat(batch=1, seq=64, precision="amp", freeze_layers=2, cuda_context_mib=0)
    est = estimate_training(spec, setup)
    assert est.term("autocast/weight_copies").bytes == 2 * (692_224 + 8000 * 256)


def test_frozen_bottom_layers_match_the_trace() -> None:
    # the traced forward end (the copies of the frozen layers freed as soon as they ran) within 2%
    from tiny_configs import FAMILIES

    from vramwise.verify.trace import TraceRecipe, trace_training

    traced = trace_training(FAMILIES["llama"], TraceRecipe(batch=1, seq=64, precision="amp", freeze_layers=2))
    spec = spec_from_config(FAMILIES["llama"], name="tiny", source="test")
    setup = TrainSetup.from_flat(
        batch=1, seq=64, precision="amp", freeze_layers=2, cuda_context_mib=0, allocator_fraction=0.0
    )
    est = estimate_training(spec, setup)
    forward_end = est.phase_total(next(p for p in est.phases if p.kind is PhaseKind.FORWARD_END))
    assert forward_end == pytest.approx(traced.marks["forward_end"], rel=0.02)
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.05)

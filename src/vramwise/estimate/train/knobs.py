"""Issue 14's implementation knobs: the combinations each framework's code does not support, refused in one line.

Each rule names the code that makes it one: the estimate models a knob only where that code runs.
"""

from __future__ import annotations

from vramwise.errors import InvalidWorkloadError
from vramwise.spec.model import ModelSpec
from vramwise.workload import LossImpl, Optimizer, Precision, Recompute, TrainSetup
from vramwise.workload.options import KernelImpl


def _refuse(field: str, why: str, allowed: str) -> None:
    raise InvalidWorkloadError(f"{field}: {why}", field=field, allowed=allowed)


def check_knobs(spec: ModelSpec, setup: TrainSetup) -> None:
    """Refuse, in one line, a knob combined with what its implementation cannot run or we cannot model."""
    _check_loss(setup)
    _check_recompute(spec, setup)
    _check_optimizer_in_backward(setup)
    _check_impl(spec, setup)


def _check_loss(setup: TrainSetup) -> None:
    loss, p = setup.loss, setup.parallel
    if loss in (LossImpl.LIGER, LossImpl.CCE, LossImpl.TORCHTUNE_CHUNKED) and p.tp > 1:
        _refuse("loss", f"{loss} has no vocabulary-parallel path here: with tp > 1 use full or compute-dtype", "tp 1")
    if loss == LossImpl.CCE and setup.precision.recipe in (Precision.FP32, Precision.AMP, Precision.AMP_FP16):
        _refuse(
            "loss",
            "cce's backward requires bf16/fp16 embeddings and classifier (cut_cross_entropy cce_backward_kernel)",
            "precision bf16, bf16-mixed or fp16-mixed",
        )


def _check_recompute(spec: ModelSpec, setup: TrainSetup) -> None:
    if setup.recompute != Recompute.OP_SAC:
        return
    if spec.moe or spec.attention.kind == "mla":
        _refuse(
            "recompute",
            "op-sac counts torchtitan's dense layers' matmuls (every other mm saved); MoE and MLA layers are not "
            "modelled",
            "none, full, layer-sac",
        )
    if setup.peft.adapters:
        _refuse("recompute", "op-sac is torchtitan's policy, which trains no adapters", "none, full, layer-sac")
    if setup.attention.value == "eager":
        _refuse("recompute", "op-sac saves the sdpa/flash kernels' outputs; eager attention is not modelled", "sdpa")


def _check_optimizer_in_backward(setup: TrainSetup) -> None:
    if not setup.optimizer.in_backward:
        return
    p = setup.parallel
    # torchtune recipes (full_finetune_single_device.py _setup_optimizer): "Gradient accumulation is not supported
    # with optimizer in bwd"; the step runs per parameter in its post-accumulate-grad hook
    if setup.grad_accum > 1:
        _refuse("optimizer_in_backward", "gradient accumulation is not supported with it (torchtune)", "grad_accum 1")
    if setup.optimizer.name == Optimizer.LOMO:
        _refuse("optimizer_in_backward", "lomo already fuses its update into backward", "another optimizer")
    if p.gpus > 1 or p.zero or p.offload.value != "none":
        _refuse("optimizer_in_backward", "modelled on one GPU (torchtune's single-device recipes)", "dp 1, no ZeRO")
    if setup.precision.recipe not in (Precision.BF16, Precision.FP32):
        _refuse(
            "optimizer_in_backward",
            "torchtune's recipes train pure bf16 or fp32 (no master copy to step)",
            "precision bf16 or fp32",
        )


def _check_impl(spec: ModelSpec, setup: TrainSetup) -> None:
    impl = setup.impl
    if impl.compile:
        _refuse(
            "compile",
            "what inductor saves for backward is not measured yet, so torch.compile is not modelled",
            "no --compile",
        )
    if impl.norm_impl == KernelImpl.FUSED and spec.norm.kind != "rms":
        _refuse("norm_impl", "fused is Liger's RMSNorm; this model uses LayerNorm", "composite")
    if impl.mlp_impl == KernelImpl.FUSED and not spec.mlp.gated:
        _refuse("mlp_impl", "fused is Liger's SwiGLU/GeGLU kernel (gated MLPs); this MLP is not gated", "composite")

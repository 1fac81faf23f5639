"""Issue 14's implementation knobs: the combinations each framework's code does not support, refused in one line.

Each rule names the code that makes it one: the estimate models a knob only where that code runs.
"""

from __future__ import annotations

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.plan import ONE, TOKENS, Rule
from vramwise.estimate.train.layout import in_layer
from vramwise.estimate.train.litgpt_code import check_litgpt
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import LossImpl, Optimizer, Precision, Recompute, TrainSetup
from vramwise.workload.options import Framework, KernelImpl


def _refuse(field: str, why: str, allowed: str) -> None:
    raise InvalidWorkloadError(f"{field}: {why}", field=field, allowed=allowed)


def check_knobs(spec: ModelSpec, setup: TrainSetup) -> None:
    """Refuse, in one line, a knob combined with what its implementation cannot run or we cannot model."""
    _check_loss(setup)
    _check_recompute(spec, setup)
    _check_optimizer_in_backward(setup)
    _check_ao_under_zero(setup)
    _check_impl(spec, setup)
    check_litgpt(spec, setup)
    _check_packed(setup)


def _check_packed(setup: TrainSetup) -> None:
    """--packed models torchtune's code (its rotary embedding's input_pos gather, activations.py
    TORCHTUNE_ROPE_GATHER); transformers' packed batches (position_ids, a varlen or 4D mask) are not modelled."""
    if setup.impl.packed and setup.framework != Framework.TORCHTUNE:
        _refuse("packed", "modelled for torchtune's packed dataset only (its input_pos)", "--framework torchtune")


def _check_loss(setup: TrainSetup) -> None:
    loss, p = setup.loss, setup.parallel
    unsplit = (LossImpl.LIGER, LossImpl.CCE, LossImpl.TORCHTUNE_CHUNKED, LossImpl.TORCHTUNE_LINEAR, LossImpl.COMPILED)
    if loss in unsplit and p.tp > 1:
        _refuse("loss", f"{loss} has no vocabulary-parallel path here: with tp > 1 use full or compute-dtype", "tp 1")
    if loss == LossImpl.LOSS_PARALLEL and p.tp == 1:
        _refuse("loss", "loss-parallel shards the logits over the tensor-parallel group", "tp >= 2")
    if loss == LossImpl.CCE and setup.precision.recipe in (Precision.FP32, Precision.AMP, Precision.AMP_FP16):
        _refuse(
            "loss",
            "cce's backward requires bf16/fp16 embeddings and classifier (cut_cross_entropy cce_backward_kernel)",
            "precision bf16, bf16-mixed or fp16-mixed",
        )


def check_recompute(spec: ModelSpec, setup: TrainSetup) -> None:
    """The recompute policy's own refusals (app/setups.py names a framework preset that set it)."""
    _check_recompute(spec, setup)


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
        # torchtitan has adapters (components/lora.py LoRAConverter), but the policy's saved set is counted for its
        # full training's layers only
        _refuse("recompute", "op-sac is modelled for full training; with adapters it is not", "none, full, layer-sac")
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


def _check_ao_under_zero(setup: TrainSetup) -> None:
    """torchao's AdamW8bit is modelled per parameter (optimizers.py: states by each tensor's size, the compiled step
    of the largest). DeepSpeed ZeRO gives a client optimizer one flat fp32 partition per parameter group instead
    (deepspeedai/DeepSpeed 7dee2e06 deepspeed/runtime/zero/stage_1_and_2.py DeepSpeedZeroOptimizer.__init__:
    ``param_group['params'] = [self.single_partition_of_fp32_groups[i]]``; stage3.py its fp32 sub-group
    partitions): torchao would quantize that one tensor (or not: numel % 256) and its compiled step would hold two
    fp32 copies of the whole partition. FSDP keeps the parameters (DTensor shards), which the rules follow."""
    if setup.optimizer.name == Optimizer.AO_ADAMW_8BIT and setup.parallel.zero:
        _refuse(
            "optimizer",
            "ao-adamw-8bit under DeepSpeed ZeRO steps one flat fp32 partition per parameter group, not each "
            "parameter: not modelled; shard with --fsdp full",
            "ao-adamw-8bit with --fsdp or without ZeRO, or adamw-8bit (bitsandbytes, in place) with --zero",
        )


# torch.compile, each decoder layer compiled as torchtitan compiles its blocks (apply_compile): inductor's
# partitioner recomputes the pointwise chains instead of saving them. Measured on CPU (bench/compile_saved.py,
# bench/data/compile/saved-cpu.json: Llama, Qwen3, Gemma, Phi-3 tiny configs, bf16 and fp32): a compiled layer saves
# what Liger's fused kernels save (RMSNorm: its input and the fp32 rstd; the gated MLP: gate, up and their product,
# the activation recomputed) and no layout copy of the attention output. What was not measured is refused, except
# adapters: a LoRA run's layers are counted as eager (an over-count, said in a note: COMPILE_ADAPTERS_NOTE), so that
# the compiled loss (loss.py _torchtune_compiled) still applies to torchtune's LoRA recipes.
_COMPILE_ALLOWED = "a dense decoder with RMSNorm and a gated MLP, sdpa/flash attention, no autocast"
COMPILE_ADAPTERS_NOTE = (
    "compile with adapters: the layers' saved tensors are counted as eager (what inductor saves around LoRA "
    "adapters is not measured: an over-count); the compiled loss is counted as compiled"
)


def _check_compile(spec: ModelSpec, setup: TrainSetup) -> None:
    unmeasured = [
        (bool(spec.moe), "mixture-of-experts layers"),
        (spec.attention.kind == "mla", "multi-head latent attention"),
        (spec.norm.kind != "rms", "LayerNorm"),
        (not spec.mlp.gated, "a plain (ungated) MLP"),
        (spec.parallel_block, "a parallel attention/MLP block"),
        (setup.attention.value == "eager", "eager attention"),
        (setup.precision.recipe in (Precision.AMP, Precision.AMP_FP16), "autocast"),
    ]
    for bad, what in unmeasured:
        if bad:
            why = f"what inductor saves is measured for {_COMPILE_ALLOWED}; not for {what}"
            _refuse("compile", why, "no --compile")


def _check_impl(spec: ModelSpec, setup: TrainSetup) -> None:
    impl = setup.impl
    if impl.compile:
        _check_compile(spec, setup)
    if impl.norm_impl == KernelImpl.FUSED and spec.norm.kind != "rms":
        _refuse("norm_impl", "fused is Liger's RMSNorm; this model uses LayerNorm", "composite")
    if impl.float8 and setup.peft.adapters:
        _refuse("float8", "torchao's Float8Linear swaps trainable nn.Linear layers; adapters are not", "peft none")
    if impl.float8 and setup.precision.recipe in (Precision.FP32, Precision.AMP, Precision.AMP_FP16):
        _refuse("float8", "float8 training runs 16-bit models (torchtitan: bf16 compute)", "precision bf16*")
    if impl.mlp_impl == KernelImpl.FUSED and not spec.mlp.gated:
        _refuse("mlp_impl", "fused is Liger's SwiGLU/GeGLU kernel (gated MLPs); this MLP is not gated", "composite")


# torchtitan commit cfb93265, torchtitan/distributed/activation_checkpoint.py _apply_op_sac: inside each checkpointed
# block, an op's output is saved when it is in the model's op_sac_save_list (llama3/infra/parallelize.py
# _op_sac_save_list: aten.mm, the sdpa flash / efficient kernels, reduce_scatter, and abs/max for float8), except
# every second mm (the mm count restarts per block and forward); everything else is recomputed in backward.
SRC_OP_SAC = (
    "torchtitan op-level SAC (commit cfb93265, distributed/activation_checkpoint.py _apply_op_sac): the block input, "
    "every odd-numbered mm's output and the sdpa outputs are saved"
)


def op_sac_saved(spec: ModelSpec, c: int, tp: int, rep: int) -> tuple[float, str]:
    """Bytes per token one op-SAC block keeps, and what: its input, the outputs of the 1st, 3rd, 5th, ... mm in
    forward order (q, k, v or fused qkv; o; gate, up or fused gate_up; down), the attention output and its
    fp32 log-sum-exp."""
    att, mlp, h = spec.attention, spec.mlp, spec.hidden_size
    q, kv = att.num_heads * att.head_dim / tp, max(1, att.num_kv_heads // tp) * att.head_dim
    i = mlp.intermediate_size / tp
    # a linear with a bias runs aten.addmm, which the policy neither counts nor saves (torchtitan's have none)
    qkv = [] if att.qkv_bias else [q + 2 * kv] if spec.traits.fused_qkv else [q, kv, kv]
    widths = qkv + ([] if att.out_bias else [h / rep])  # o_proj's output (replicated, or split by sp)
    if not mlp.bias:
        widths += ([2 * i] if spec.traits.fused_gate_up else [i, i]) if mlp.gated else [i]
        widths.append(h / rep)  # down_proj
    kept = widths[0::2]
    heads = att.num_heads / tp
    per = c * (h / rep + sum(kept) + q) + 4 * heads
    return per, f"input + mm outputs {' + '.join(f'{w:g}' for w in kept)} + attention output, x {c} B; fp32 lse"


# torchao float8 (torchao/float8/float8_linear.py matmul_with_hp_or_float8_args): forward saves input_hp and
# weight_hp_t, the 16-bit tensors a plain linear saves, and casts both to float8 (1 B) for the matmul; backward
# casts grad_output (e5m2) and recasts the input and the weight. Saved activations do not change; the casts of one
# matmul are alive at a time. torchtitan converts every nn.Linear but the output head (filter_fqns ["output"]);
# FSDP's float8 all-gather (enable_fsdp_float8_all_gather, off by default) is not modelled.
SRC_FLOAT8 = "torchao Float8Linear (float8/float8_linear.py matmul_with_hp_or_float8_args): saves the 16-bit input"


def float8_casts(spec: ModelSpec, tp: int) -> list[Rule]:
    """One layer matmul's float8 casts: its widest input or output per token (input and grad_output), and the
    largest weight."""
    linears = [g for g in parameter_groups(spec) if in_layer(g) and g.kind == "linear" and g.in_features]
    weight = max(g.count // g.tensors for g in linears) // tp
    widest = max(max(g.in_features, g.count // g.tensors // g.in_features) for g in linears) // tp
    return [
        Rule(
            name="float8/casts",
            coef=2 * widest,
            var=TOKENS,
            formula=lambda v: f"one matmul's float8 input and grad_output: 2 x T {v.T} x {widest:,} x 1 B",
            source=SRC_FLOAT8,
        ),
        Rule(
            name="float8/weight_cast",
            coef=weight,
            var=ONE,
            formula=lambda _: f"the largest weight in float8: {weight:,} x 1 B",
            source=SRC_FLOAT8,
        ),
    ]


_KNOB_NAMES = (
    "adapter_dtype", "double_quant", "mlp_impl", "norm_impl", "activation_offload", "compile", "optimizer_in_backward",
    "float8",
)  # fmt: skip


def refuse_textbook_knobs(setup: TrainSetup) -> None:
    """The seeds' closed formulas know none of issue 14's implementation knobs: refuse rather than ignore them."""
    flat, defaults = setup.to_flat(), TrainSetup().to_flat()
    given = [name for name in _KNOB_NAMES if flat[name] != defaults[name]]
    given += ["recompute"] if setup.recompute in (Recompute.OP_SAC, Recompute.LAYER_SAC) else []
    given += ["loss"] if setup.loss not in (LossImpl.FULL, LossImpl.CHUNKED) else []
    given += ["peft"] if setup.peft.method.value == "lora-8bit" else []
    if given:
        _refuse(
            given[0],
            f"the textbook seeds' formulas have no implementation knobs (got {flat[given[0]]}); use --mode accurate",
            "--mode accurate",
        )

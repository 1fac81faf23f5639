"""Model states of one GPU: weights, LoRA adapters, master copy, optimizer states and gradients.

They depend on the model, the precision recipe, the optimizer, peft and the parallel layout, never on the
batch or the sequence: ``model_states`` caches them so that the fit solvers' sweeps compute them once.
Sharding follows DeepSpeed's ZeRO stages and FSDP (``ParallelConfig.sharding``); routed experts shard over
their own dp / ep replicas. The cache keys on ``StatesSetup``, the four groups of the setup the states read:
the functions here see only those, so a field they start to read is in the key by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from vramwise.estimate.term import Term
from vramwise.estimate.train.layout import Stage, in_layer, stage_share
from vramwise.estimate.train.lightning_fsdp import flat_gradients
from vramwise.estimate.train.lora import PEFT_ADAPTER_BYTES, SRC_ADAPTER_DTYPE, LoraModule, adapter_bytes, kbit_prepared
from vramwise.estimate.train.optimizers import (
    SRC_AO,
    Tensor,
    fp32_note,
    paged_state_bytes,
    state_bytes,
    step_source,
    step_transient,
    tensor_bytes,
)
from vramwise.estimate.train.peft_methods import SOURCES, TERM_NAMES, adapter_formula, adapter_tensors
from vramwise.estimate.train.quantized import training_base
from vramwise.estimate.train.recipe import Recipe
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import CATEGORIES, ParamGroup, parameter_groups
from vramwise.workload import (
    FsdpMode,
    Offload,
    Optimizer,
    OptimizerConfig,
    ParallelConfig,
    PeftConfig,
    PrecisionConfig,
    TrainSetup,
)
from vramwise.workload.train import step_impl

LORA_BYTES = PEFT_ADAPTER_BYTES  # peft's fp32 adapters; adapter_bytes(peft) reads --adapter-dtype
SRC_STATES = "ZeRO paper §3 (Rajbhandari et al. 2020); torch.optim; measured in notes §2"
# DeepSpeed 0.16 (commit 38327e07, Feb 2025), deepspeed/runtime/zero/stage_1_and_2.py, for ZeRO-1 and -2:
# backward() allocates ipg_buffer (reduce_bucket_size elements) when contiguous_gradients (the default);
# copy_grads_in_partition allocates grads_in_partition (this rank's partition) lazily, at the first bucket
# reduced in backward; independent_gradient_partition_epilogue keeps only averaged_gradients (views of that
# partition) and zero_grad(set_to_none) frees every full .grad; step() frees averaged_gradients. ZeRO-1
# (no hooks; overlap_comm defaults off below stage 3) reduces at the accumulation boundary, in
# reduce_gradients, so its full .grad live until the epilogue. stage3.py preallocates instead:
# _setup_for_real_optimizer allocates grad_partitions_flat_buffer once, kept across steps.
SRC_PAGED = (
    "bitsandbytes 0.44.0 optim/optimizer.py Optimizer8bit.get_state_buffer -> functional.py get_paged "
    "(cudaMallocManaged, outside PyTorch's allocator)"
)
SRC_DEEPSPEED_GRADS = "DeepSpeed stage_1_and_2.py: reduce_gradients, copy_grads_in_partition, step"


@dataclass(frozen=True, kw_only=True)
class StatesSetup:
    """The part of a ``TrainSetup`` the model states depend on, and the key of their cache.

    Not the batch, the sequence, recompute, attention, the loss, the overheads or textbook mode: sweeps over
    those (the fit solvers) reuse one computation.
    """

    precision: PrecisionConfig
    optimizer: OptimizerConfig
    peft: PeftConfig
    parallel: ParallelConfig
    head_quantized: bool = False  # LitGPT under Lightning's bitsandbytes precision quantizes lm_head too
    litgpt: bool = False  # LitGPT's adapters (litgpt_code.litgpt_lora_modules) differ from peft's: part of the key
    # LitGPT under Lightning's FSDP accumulating micro-batches under no_sync: whole flat gradients (lightning_fsdp.py)
    fsdp_no_sync: bool = False

    @classmethod
    def of(cls, setup: TrainSetup) -> StatesSetup:
        from vramwise.estimate.train.litgpt_code import quantizes_head, runs_litgpt_code

        return cls(
            precision=setup.precision,
            optimizer=setup.optimizer,
            peft=setup.peft,
            parallel=setup.parallel,
            head_quantized=quantizes_head(setup),
            litgpt=runs_litgpt_code(setup),
            fsdp_no_sync=runs_litgpt_code(setup) and setup.parallel.fsdp != FsdpMode.NONE and setup.grad_accum > 1,
        )


@dataclass(frozen=True, kw_only=True)
class ModelStates:
    """The model states of one pipeline stage, by when they are live."""

    persistent: tuple[Term, ...]  # weights, adapters, master copy, optimizer states, DDP buckets
    host: tuple[Term, ...]  # offloaded to host RAM
    gradients: Term | None  # full size (None under LOMO); whether they persist depends on the schedule
    # What of ``gradients`` the optimizer step still holds when they do not persist; None: all of them.
    # DeepSpeed ZeRO-1 reduces the full gradients at backward end and keeps only its partition for the step.
    step_gradients: Term | None = None
    backward_extra: tuple[Term, ...]  # live at backward end only (reduce bucket, LOMO's one gradient)
    step_extra: tuple[Term, ...]  # live during the optimizer step only
    backward_held: tuple[Term, ...] = ()  # live from the start of backward to its end (DeepSpeed's ipg bucket)


@dataclass(frozen=True, kw_only=True)
class _Trainable:
    """Elements that train on this GPU (before ZeRO) and their tensor shapes, for states and transients."""

    count: float
    tensors: list[Tensor]


def _shape(group: ParamGroup, spec: ModelSpec) -> tuple[int, int]:
    per_tensor = group.count // max(1, group.tensors)
    if group.kind in ("linear", "router", "head") and group.in_features:
        return per_tensor // group.in_features, group.in_features
    if group.kind == "embedding":
        width = spec.embedding.proj_dim or spec.hidden_size
        return per_tensor // width, width
    return per_tensor, 1


def _trainable_stage(stage: Stage, freeze_layers: int) -> Stage:
    return Stage(index=stage.index, count=stage.count, layers=tuple(i for i in stage.layers if i >= freeze_layers))


# A vision-language model fine-tuned on text (training takes no images): the tower and projector are not in the
# forward, so they get no gradient and no optimizer state; their weights are still held (weights/vision, ...).
FROZEN_CATEGORIES = ("vision", "projector")


def _trainable(spec: ModelSpec, stage: Stage, s: StatesSetup, recipe: Recipe, lora: list[LoraModule]) -> _Trainable:
    if s.peft.adapters:
        tensors = adapter_tensors(spec, stage, s.peft, lora)
        return _Trainable(count=sum(t.numel * t.copies for t in tensors), tensors=tensors)
    live = _trainable_stage(stage, s.peft.freeze_layers)
    tensors = []
    for g in parameter_groups(spec):
        if not in_layer(g) and s.peft.freeze_layers and g.category == "embeddings":
            continue  # freezing the bottom layers freezes the embeddings below them
        if g.category in FROZEN_CATEGORIES:
            continue  # text-only fine-tuning of a vision-language model: the vision tower never sees a gradient
        share = stage_share(g, spec, live if in_layer(g) else stage, s.parallel)
        if share:
            rows, cols = _shape(g, spec)
            fp32 = g.fp32 and recipe.keeps_fp32_modules
            tensors.append(Tensor(rows=rows, cols=cols, copies=g.tensors * share, expert=g.per_expert, fp32=fp32))
    count = sum(t.numel * t.copies for t in tensors)
    return _Trainable(count=count, tensors=tensors)


# torch 2.13 distributed/fsdp/_fully_shard/_fsdp_param.py: FSDP2 keeps each parameter only as its sharded
# ``_sharded_param_data`` in the parameter's own dtype; MixedPrecisionPolicy(param_dtype) casts that shard per
# all-gather (``all_gather_inputs``: ``_to_dtype_if_needed(sharded_param_data, self.param_dtype)``), a transient of
# the gathered unit. Under a mixed recipe the trained parameters are fp32 (torchtitan builds its model in fp32;
# accelerate's fsdp2_prepare_model upcasts the trainable ones: "Upcast to fp32 master weights"), so their fp32
# shard is both the parameter and the optimizer's master copy: no 16-bit shard exists beside it.
SRC_FSDP2_PARAMS = (
    "torch 2.13 distributed/fsdp/_fully_shard/_fsdp_param.py FSDPParam: _sharded_param_data in the parameter's "
    "dtype, cast to param_dtype per all-gather (all_gather_inputs)"
)


def fsdp2_fp32_params(s: StatesSetup, recipe: Recipe) -> bool:
    """FSDP2 full or hybrid sharding of a full fine-tuning under a mixed recipe: the fp32 shard is the parameter
    (no 16-bit shard, no separate master copy). Not for adapters or frozen layers (their frozen weights keep their
    dtype), offloaded parameters (on the host) or Lightning's FSDP1 (LitGPT: bf16-true, no master)."""
    p = s.parallel
    return (
        p.fsdp in (FsdpMode.FULL, FsdpMode.HYBRID)
        and p.sharding.stage == 3
        and recipe.master == 4
        and recipe.weight < 4
        and not s.peft.adapters
        and not s.peft.freeze_layers
        and p.offload == Offload.NONE
        and not s.litgpt
    )


def _weights(spec: ModelSpec, stage: Stage, s: StatesSetup, recipe: Recipe) -> list[Term]:
    divisor = s.parallel.sharding.weights
    fp32_params = fsdp2_fp32_params(s, recipe)
    base_name = training_base(spec, s.peft).fmt
    base = get_format(base_name) if base_name else None
    # QLoRA and 8-bit LoRA run peft's prepare_model_for_kbit_training, which casts every 16-bit parameter to fp32,
    # except on a GPTQ, AQLM, EETQ, HQQ or torchao model (peft utils/other.py, the is_*_quantized checks)
    qlora = kbit_prepared(spec, s.peft)
    hp = 4 if qlora else recipe.weight  # what a stored layout keeps, or scales, in the model dtype
    by_cat: dict[str, list[tuple[float, str]]] = {}
    for g in parameter_groups(spec):
        share = stage_share(g, spec, stage, s.parallel)
        if not share:
            continue
        if base and ((in_layer(g) and g.kind == "linear") or (s.head_quantized and g.category == "head")):
            # the head as one more quantized nn.Linear (the formats keep a "head" group in 16 bits)
            tb = base.tensor_bytes(replace(g, name=f"quantized_{g.name}") if g.category == "head" else g, spec, hp)
            n, f = tb.bytes * share, f"{g.name}: {tb.formula}"
        elif qlora:
            # prepare_model_for_kbit_training casts every non-quantized parameter to fp32
            n, f = g.count * share * 4, f"{g.name}: {g.count * share:,.0f} x 4 B (fp32 after k-bit preparation)"
        elif fp32_params and g.category not in FROZEN_CATEGORIES:
            n, f = g.count * share * 4, f"{g.name}: {g.count * share:,.0f} x 4 B (FSDP2: the fp32 shard is the param)"
        else:
            width = g.width(recipe.weight) if recipe.keeps_fp32_modules else recipe.weight
            kept = " (kept in fp32)" if width != recipe.weight else ""
            n, f = g.count * share * width, f"{g.name}: {g.count * share:,.0f} x {width} B{kept}"
        cat = "experts" if g.category == "experts_shared" else g.category
        by_cat.setdefault(cat, []).append(
            (n / divisor, f + (f" / {divisor} (ZeRO-3/FSDP shard)" if divisor > 1 else ""))
        )
    return [
        Term(
            name=f"weights/{cat}",
            bytes=round(sum(n for n, _ in by_cat[cat])),
            formula="; ".join(f for _, f in by_cat[cat]),
            source=f"precision recipe {recipe.name}"
            + (f"; frozen base {base.name}" if base else "")
            + (f"; {SRC_FSDP2_PARAMS}" if fp32_params else ""),
        )
        for cat in CATEGORIES
        if cat in by_cat
    ]


def _numel(tensors: list[Tensor]) -> int:
    return round(sum(t.numel * t.copies for t in tensors))


def _per_gpu(tensors: list[Tensor], divisor: int, ep: int, bytes_of: Callable[[list[Tensor]], int]) -> int:
    """Bytes on one GPU when ZeRO/FSDP partitions over ``divisor`` GPUs: routed experts have only dp / ep
    data-parallel replicas to partition over."""
    dense = [t for t in tensors if not t.expert]
    experts = [t for t in tensors if t.expert]
    return round(bytes_of(dense) / divisor + (bytes_of(experts) / max(1, divisor // ep) if experts else 0))


def _shard_note(divisor: int, ep: int, what: str) -> str:
    if divisor == 1:
        return ""
    experts = f"; experts / {max(1, divisor // ep)}" if ep > 1 else ""
    return f" / {divisor} ({what}{experts})"


@dataclass
class _Built:
    """Terms of ``_model_states`` as they are collected."""

    persistent: list[Term]
    host: list[Term]
    backward_extra: list[Term]
    step_extra: list[Term]
    backward_held: list[Term] = field(default_factory=list)


def _master_and_states(s: StatesSetup, recipe: Recipe, tr: _Trainable, out: _Built) -> None:
    """The fp32 master copy and the optimizer states: on the GPU, or on the host when offloaded."""
    lora, n_opt, ep, opt = s.peft.adapters, s.parallel.sharding.optimizer, s.parallel.ep, s.optimizer.name
    state_el = adapter_bytes(s.peft) if lora else recipe.state
    opt_note = _shard_note(n_opt, ep, "ZeRO/FSDP shard")
    where = out.host if s.parallel.offload != Offload.NONE else out.persistent
    if recipe.master and not lora and not fsdp2_fp32_params(s, recipe):  # FSDP2: the fp32 shard is the parameter
        where.append(
            Term(
                name="optimizer/master_weights",
                bytes=_per_gpu(tr.tensors, n_opt, ep, lambda ts: _numel(ts) * recipe.master),
                formula=f"{_numel(tr.tensors):,} trainable x {recipe.master} B fp32{opt_note}",
                source=SRC_STATES,
            )
        )
    n, f = state_bytes(opt, tr.tensors, state_el)
    paged, pf = paged_state_bytes(opt, tr.tensors) if where is out.persistent else (0, "")
    if n > paged:
        where.append(
            Term(
                name="optimizer/states",
                bytes=_per_gpu(tr.tensors, n_opt, ep, lambda ts: state_bytes(opt, ts, state_el)[0])
                - _per_gpu(tr.tensors, n_opt, ep, lambda ts: paged_state_bytes(opt, ts)[0]),
                formula=f + (f", less the paged {pf}" if paged else "") + opt_note,
                source=SRC_STATES + ("; " + SRC_AO if opt == "ao-adamw-8bit" else "; bitsandbytes blockwise 8-bit"
                                     if "8bit" in opt else ""),
            )
        )
    if paged:
        # outside PyTorch's caching allocator and evictable to host RAM: listed beside the host terms, never in
        # the GPU peak (optimizers.py BNB_PAGED_MIN)
        out.host.append(
            Term(
                name="optimizer/paged_states",
                bytes=_per_gpu(tr.tensors, n_opt, ep, lambda ts: paged_state_bytes(opt, ts)[0]),
                formula=f"unified memory (cudaMallocManaged), migrated to the GPU while it has room: {pf}{opt_note}",
                source=SRC_PAGED,
            )
        )


def _gradients(s: StatesSetup, recipe: Recipe, tr: _Trainable, out: _Built) -> tuple[Term | None, Term | None]:
    """The gradients (full size, None under LOMO) and what of them the step holds (None: all of them), and
    what backward adds: LOMO's one gradient, the ZeRO reduce bucket or DDP's allreduce buckets."""
    lora, sharding, ep = s.peft.adapters, s.parallel.sharding, s.parallel.ep
    n_grad = sharding.gradients
    grad_b = adapter_bytes(s.peft) if lora else recipe.grad
    count = _numel(tr.tensors)
    if s.optimizer.in_backward:
        _in_backward(s, recipe, tr, out, grad_b)
        return None, None
    if s.optimizer.name == Optimizer.LOMO:
        largest = max((t.numel for t in tr.tensors), default=0)
        out.backward_extra.append(
            Term(
                name="optimizer/lomo_gradient",
                bytes=largest * recipe.grad,
                formula=f"one gradient at a time: largest tensor {largest:,} x {recipe.grad} B",
                source="LOMO (Lv et al. 2023): the update is fused into backward",
            )
        )
        return None, None
    grads = Term(
        name="gradients",
        bytes=_per_gpu(tr.tensors, n_grad, ep, lambda ts: tensor_bytes(ts, grad_b)),
        formula=f"{count:,} trainable x {grad_b} B{fp32_note(tr.tensors, grad_b)}"
        f"{_shard_note(n_grad, ep, 'ZeRO-2/3 shard')}",
        source=SRC_STATES,
    )
    zero1 = sharding.stage == 1 and s.parallel.fsdp == FsdpMode.NONE
    # FSDP reduce-scatters one unit at a time (fsdp/reduce_scatter_input, sharded.py), not in DeepSpeed's bucket
    if sharding.stage and s.parallel.fsdp == FsdpMode.NONE:
        _deepspeed_buffers(s, tr, grad_b, out)
        if s.parallel.offload != Offload.NONE and sharding.stage >= 2:
            # no gradient partition stays on the GPU: stage 3 keeps its 16-bit partition on the host, stage 2
            # copies each reduced gradient into the host's fp32 partition (optimizer/fp32_gradients)
            if sharding.stage == 3:
                out.host.append(replace(grads, name="offload/gradients", source=SRC_DEEPSPEED_OFFLOAD))
            return None, None
    elif s.parallel.fsdp != FsdpMode.NONE and s.parallel.offload != Offload.NONE:
        # FSDP2's CPUOffloadPolicy copies each reduce-scattered gradient shard to the host (foreach_reduce:
        # offload_to_cpu), where the optimizer steps: no sharded gradient stays on the GPU
        out.host.append(replace(grads, name="offload/gradients", source=SRC_FSDP_OFFLOAD))
        return None, None
    elif s.parallel.dp > 1 and sharding.stage == 0:
        out.persistent.append(
            Term(
                name="ddp/buckets",
                bytes=tensor_bytes(tr.tensors, grad_b),
                formula=f"{count:,} x {grad_b} B{fp32_note(tr.tensors, grad_b)} (gradient_as_bucket_view=False, "
                "DDP's default)",
                # the buckets (bucket_cap_mb 25 MiB, the first one _DEFAULT_FIRST_BUCKET_BYTES 1 MiB) partition the
                # gradients: their sizes split the copy, its total stays every gradient once
                source="torch 2.13 torch/nn/parallel/distributed.py DistributedDataParallel docstring: "
                "gradient_as_bucket_view=True saves 'the total gradients size' (the buckets' copy of every gradient)",
            )
        )
    if not zero1:
        return grads, None
    # ZeRO-1: the full gradients live until the epilogue's reduction; the step holds this rank's partition
    n_opt = sharding.optimizer
    kept = _per_gpu(tr.tensors, n_opt, ep, lambda ts: tensor_bytes(ts, grad_b))
    partition = Term(
        name="gradients",
        bytes=kept,
        formula=f"{count:,} trainable x {grad_b} B{fp32_note(tr.tensors, grad_b)}"
        f"{_shard_note(n_opt, ep, 'ZeRO-1: the reduced partition, averaged_gradients')}",
        source=SRC_DEEPSPEED_GRADS,
    )
    return grads, partition


# torch 2.13 distributed/fsdp/_fully_shard/_fsdp_api.py CPUOffloadPolicy ("offloads parameters, gradients, and
# optimizer states to CPU ... the optimizer step runs on CPU") and _fsdp_collectives.py foreach_reduce (with
# offload_to_cpu each new sharded gradient is copied .to("cpu") and the GPU copy dropped): under FSDP, --offload
# params leaves the GPU no sharded parameters, gradients or optimizer states; it holds only the units being
# gathered (sharded.py), the activations and the loss (the gradients: _gradients, offload/gradients).


def _fsdp_offload(s: StatesSetup) -> bool:
    return s.parallel.fsdp != FsdpMode.NONE and s.parallel.offload != Offload.NONE


# torchtune training/memory.py (create_optim_in_bwd_wrapper, register_optim_in_bwd_hooks): one optimizer per
# parameter, stepped and zeroed in the parameter's post-accumulate-grad hook, so a gradient lives only until its
# own step; the largest tensor's gradient and its step's temporaries bound what backward adds.
SRC_IN_BACKWARD = "torchtune optimizer_in_bwd (training/memory.py register_optim_in_bwd_hooks)"


def _in_backward(s: StatesSetup, recipe: Recipe, tr: _Trainable, out: _Built, grad_b: int) -> None:
    largest = max(tr.tensors, key=lambda t: t.numel * t.width(grad_b), default=None)
    if largest is None:
        return
    one = Tensor(rows=largest.rows, cols=largest.cols, copies=1, fp32=largest.fp32)
    width = one.width(grad_b)
    out.backward_extra.append(
        Term(
            name="optimizer/in_backward_gradient",
            bytes=one.numel * width,
            formula=f"the largest tensor's gradient, stepped in its hook: {one.numel:,} x {width} B (counted beside "
            "the activations: a tied embedding's is stepped last, once they are freed, so this bounds it)",
            source=SRC_IN_BACKWARD,
        )
    )
    state_el = adapter_bytes(s.peft) if s.peft.adapters else recipe.state
    impl = step_impl(s.precision, s.optimizer)
    t, tf = step_transient(s.optimizer.name, impl, [one], state_el)
    if t:
        out.backward_extra.append(
            Term(
                name="optimizer/step_transient",
                bytes=t,
                formula=f"one parameter's step: {tf}",
                source=f"{SRC_IN_BACKWARD}; {step_source(s.optimizer.name)}",
            )
        )


# DeepSpeed v0.16.4 deepspeed/runtime/zero/: stage_1_and_2.py backward allocates ipg_buffer, reduce_bucket_size
# elements of the 16-bit dtype (torch.empty(int(self.reduce_bucket_size)), contiguous_gradients defaults on; a second
# one with overlap_comm, which defaults off below stage 3), released in the backward's epilogue
# (_release_ipg_buffers); stage3.py _setup_for_real_optimizer allocates __ipg_bucket_flat_buffer of the same size once
# and keeps it. With offload_optimizer, stage_1_and_2.py __init__ keeps temp_grad_buffer_for_gpu_offload
# (largest_param_numel, 16-bit) on the GPU to stage each gradient's copy to the host, and stage3.py puts its
# gradient partition (grad_partitions_flat_buffer) on self.device, the CPU under offload (pinned with pin_memory).
SRC_FSDP_OFFLOAD = "torch 2.13 torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_reduce (offload_to_cpu)"
SRC_DEEPSPEED_BUCKET = "DeepSpeed v0.16.4 stage_1_and_2.py backward (ipg_buffer), stage3.py _setup_for_real_optimizer"
SRC_DEEPSPEED_OFFLOAD = (
    "DeepSpeed v0.16.4 stage3.py _setup_for_real_optimizer (grad_partitions_flat_buffer on self.device: the CPU "
    "under offload_optimizer), stage_1_and_2.py async_inplace_copy_grad_to_fp32_buffer_from_gpu"
)


def _deepspeed_buffers(s: StatesSetup, tr: _Trainable, grad_b: int, out: _Built) -> None:
    """DeepSpeed's reduce bucket (held through backward at stages 1-2, kept at stage 3) and ZeRO-Offload's GPU
    staging buffer."""
    stage, bucket = s.parallel.sharding.stage, s.parallel.reduce_bucket
    # stage 3 keeps one flat buffer whatever overlap_comm says; stages 1-2 allocate a second one with it
    n = 2 if stage < 3 and s.parallel.overlap_comm else 1
    term = Term(
        name="zero/reduce_bucket",
        bytes=n * bucket * grad_b,
        formula=(f"{n} x " if n > 1 else "") + f"reduce_bucket_size {bucket:,} x {grad_b} B (contiguous_gradients; "
        + ("kept from setup)" if stage == 3 else "allocated at each backward" + ("; overlap_comm)" if n > 1 else ")")),
        source=SRC_DEEPSPEED_BUCKET,
    )
    (out.persistent if stage == 3 else out.backward_held).append(term)
    if s.parallel.offload != Offload.NONE and stage < 3:
        largest = max((t.numel for t in tr.tensors), default=0)
        out.persistent.append(
            Term(
                name="zero/offload_grad_buffer",
                bytes=largest * grad_b,
                formula=f"largest parameter {largest:,} x {grad_b} B (temp_grad_buffer_for_gpu_offload)",
                source="DeepSpeed v0.16.4 stage_1_and_2.py DeepSpeedZeroOptimizer.__init__ (cpu_offload)",
            )
        )


def _step(s: StatesSetup, recipe: Recipe, tr: _Trainable, out: _Built) -> None:
    """The optimizer step's transients, or (offloaded) the fp32 gradient partition on the host."""
    lora, n_opt, ep, opt = s.peft.adapters, s.parallel.sharding.optimizer, s.parallel.ep, s.optimizer.name
    if s.optimizer.in_backward:
        return  # every step ran in backward (_in_backward)
    state_el = adapter_bytes(s.peft) if lora else recipe.state
    count = _numel(tr.tensors)
    opt_note = _shard_note(n_opt, ep, "ZeRO/FSDP shard")
    fp32_grads = _per_gpu(tr.tensors, n_opt, ep, lambda ts: _numel(ts) * 4)
    if _fsdp_offload(s):
        return  # FSDP2 CPUOffloadPolicy: the step runs on the CPU, on the host's sharded gradients (_gradients)
    if s.parallel.offload != Offload.NONE:
        out.host.append(
            Term(
                name="optimizer/fp32_gradients",
                bytes=fp32_grads,
                formula=f"{count:,} x 4 B{opt_note}",
                source="ZeRO-Offload: fp32 gradient partition on the host for the CPU optimizer",
            )
        )
        return
    impl = step_impl(s.precision, s.optimizer)
    t, tf = step_transient(opt, impl, tr.tensors, state_el)
    if t:
        out.step_extra.append(
            Term(
                name="optimizer/step_transient",
                bytes=_per_gpu(tr.tensors, n_opt, ep, lambda ts: step_transient(opt, impl, ts, state_el)[0]),
                formula=tf + opt_note,
                source=step_source(opt),
            )
        )
    if recipe.master and not lora and recipe.grad == 2:
        out.step_extra.append(
            Term(
                name="optimizer/fp32_gradients",
                bytes=fp32_grads,
                formula=f"half gradients copied to fp32 for the master update: {count:,} x 4 B{opt_note}",
                source="DeepSpeed/Megatron mixed-precision optimizer",
            )
        )


_STATES_CACHE: dict[tuple[ModelSpec, Stage, StatesSetup], ModelStates] = {}


def model_states(
    spec: ModelSpec, stage: Stage, setup: TrainSetup, recipe: Recipe, lora: list[LoraModule]
) -> ModelStates:
    """The model states of ``stage``, cached on ``StatesSetup`` (``recipe`` and ``lora`` derive from it)."""
    s = StatesSetup.of(setup)
    key = (spec, stage, s)
    hit = _STATES_CACHE.get(key)
    if hit is None:
        if len(_STATES_CACHE) > 4096:
            _STATES_CACHE.clear()
        hit = _STATES_CACHE[key] = _model_states(spec, stage, s, recipe, lora)
    return hit


def _model_states(spec: ModelSpec, stage: Stage, s: StatesSetup, recipe: Recipe, lora: list[LoraModule]) -> ModelStates:
    """Weights, adapters, master copy, optimizer states and gradients of one stage; independent of the batch
    and the sequence."""
    tr = _trainable(spec, stage, s, recipe, lora)
    out = _Built(persistent=[], host=[], backward_extra=[], step_extra=[])
    weights = _weights(spec, stage, s, recipe)
    (out.host if s.parallel.offload == Offload.PARAMS else out.persistent).extend(weights)
    if s.peft.adapters:
        width, shards = adapter_bytes(s.peft), s.parallel.sharding.weights
        lora_like = s.peft.method not in SOURCES  # LoRA, QLoRA, 8-bit LoRA: main's wording
        sharded = f" / {shards} (ZeRO-3/FSDP shard)" if shards > 1 else ""
        out.persistent.append(
            Term(
                name=TERM_NAMES.get(s.peft.method, "weights/lora"),
                bytes=round(tr.count * width / shards),  # ZeRO-3/FSDP shard the adapters with their layer
                formula=(
                    f"r {s.peft.lora_r} x (in + out) per module: {tr.count:,.0f} x {width} B "
                    f"{'fp32' if width == 4 else 'bf16'}"
                    if lora_like
                    else adapter_formula(s.peft, tr.count, width)
                )
                + sharded,
                source=f"LoRA (Hu et al. 2021); {SRC_ADAPTER_DTYPE}" if lora_like else SOURCES[s.peft.method],
            )
        )
    _master_and_states(s, recipe, tr, out)
    grads, step_grads = _gradients(s, recipe, tr, out)
    if grads is not None and s.litgpt and s.parallel.fsdp != FsdpMode.NONE:
        # Lightning's FSDP1 units: a Block's gradient is its whole flat parameter, frozen weights included
        grads = flat_gradients(spec, stage, s.parallel, s.peft, lora, recipe.weight, no_sync=s.fsdp_no_sync)
    _step(s, recipe, tr, out)
    return ModelStates(
        persistent=tuple(out.persistent),
        host=tuple(out.host),
        gradients=grads,
        step_gradients=step_grads,
        backward_extra=tuple(out.backward_extra),
        step_extra=tuple(out.step_extra),
        backward_held=tuple(out.backward_held),
    )

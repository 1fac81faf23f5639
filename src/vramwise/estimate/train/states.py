"""Model states of one GPU: weights, LoRA adapters, master copy, optimizer states and gradients.

They depend on the model, the precision recipe, the optimizer, peft and the parallel layout, never on the
batch or the sequence: ``model_states`` caches them so that the fit solvers' sweeps compute them once.
Sharding follows DeepSpeed's ZeRO stages and FSDP (see ``layout.partitioned``); routed experts shard over
their own dp / ep replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vramwise.estimate.term import Term
from vramwise.estimate.train.layout import Stage, in_layer, partitioned, stage_share
from vramwise.estimate.train.lora import LoraModule, lora_targets
from vramwise.estimate.train.optimizers import Tensor, fp32_note, state_bytes, step_transient, tensor_bytes
from vramwise.estimate.train.recipe import Recipe, recipe_for
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import CATEGORIES, ParamGroup, parameter_groups
from vramwise.workload import TrainSetup

LORA_BYTES = 4  # peft keeps adapters in fp32 (autocast_adapter_dtype=True), whatever the base dtype
QLORA_FORMAT = "nf4-dq"  # bitsandbytes 4-bit with double quantization, the QLoRA paper's recipe
SRC_STATES = "ZeRO paper §3 (Rajbhandari et al. 2020); torch.optim; measured in notes §2"


@dataclass(frozen=True, kw_only=True)
class _Trainable:
    """Elements that train on this GPU (before ZeRO) and their tensor shapes, for states and transients."""

    count: float
    tensors: list[Tensor]
    bytes_per_param: int  # of the trainable weights themselves (fp32 adapters, or the recipe's weight)


def _shape(group: ParamGroup, spec: ModelSpec) -> tuple[int, int]:
    per_tensor = group.count // max(1, group.tensors)
    if group.kind in ("linear", "router", "head") and group.in_features:
        return per_tensor // group.in_features, group.in_features
    if group.kind == "embedding":
        width = spec.embedding.proj_dim or spec.hidden_size
        return per_tensor // width, width
    return per_tensor, 1


def _trainable_stage(stage: Stage, setup: TrainSetup) -> Stage:
    return Stage(
        index=stage.index, count=stage.count, layers=tuple(i for i in stage.layers if i >= setup.freeze_layers)
    )


def _trainable(spec: ModelSpec, stage: Stage, setup: TrainSetup, recipe: Recipe, lora: list[LoraModule]) -> _Trainable:
    if setup.peft != "none":
        share = len(stage.layers) / spec.num_layers
        tensors = []
        for m in lora:
            copies = m.layers * share
            rank = setup.lora_r * m.rank_mult
            tensors += [Tensor(rows=rank, cols=m.in_features, copies=copies)]
            tensors += [Tensor(rows=m.out_features, cols=rank, copies=copies)]
        return _Trainable(count=sum(t.numel * t.copies for t in tensors), tensors=tensors, bytes_per_param=LORA_BYTES)
    live = _trainable_stage(stage, setup)
    tensors = []
    for g in parameter_groups(spec):
        if not in_layer(g) and setup.freeze_layers and g.category == "embeddings":
            continue  # freezing the bottom layers freezes the embeddings below them
        share = stage_share(g, spec, live if in_layer(g) else stage, setup)
        if share:
            rows, cols = _shape(g, spec)
            fp32 = g.fp32 and recipe.keeps_fp32_modules
            tensors.append(Tensor(rows=rows, cols=cols, copies=g.tensors * share, expert=g.per_expert, fp32=fp32))
    count = sum(t.numel * t.copies for t in tensors)
    return _Trainable(count=count, tensors=tensors, bytes_per_param=recipe.weight)


def _weights(spec: ModelSpec, stage: Stage, setup: TrainSetup, recipe: Recipe, divisor: int) -> list[Term]:
    qlora = get_format(QLORA_FORMAT) if setup.peft == "qlora" else None
    by_cat: dict[str, list[tuple[float, str]]] = {}
    for g in parameter_groups(spec):
        share = stage_share(g, spec, stage, setup)
        if not share:
            continue
        if qlora and in_layer(g) and g.kind == "linear":
            tb = qlora.tensor_bytes(g, spec, 4)
            n, f = tb.bytes * share, f"{g.name}: {tb.formula}"
        elif qlora:
            # prepare_model_for_kbit_training casts every non-quantized parameter to fp32
            n, f = g.count * share * 4, f"{g.name}: {g.count * share:,.0f} x 4 B (fp32 after k-bit preparation)"
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
            source=f"precision recipe {recipe.name}" + (f"; QLoRA base {QLORA_FORMAT}" if qlora else ""),
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


def _states(
    setup: TrainSetup, recipe: Recipe, tr: _Trainable
) -> tuple[list[Term], list[Term], Term | None, list[Term], list[Term]]:
    """(persistent, host, gradients (full size), backward-end extras, step extras)."""
    part = partitioned(setup)
    lora = setup.peft != "none"
    n_opt, n_grad, ep = part["optimizer"], part["gradients"], setup.ep
    state_el = LORA_BYTES if lora else recipe.state
    grad_b = LORA_BYTES if lora else recipe.grad
    count = _numel(tr.tensors)
    opt_note = _shard_note(n_opt, ep, "ZeRO/FSDP shard")
    persistent: list[Term] = []
    host: list[Term] = []
    offload = setup.offload != "none"
    if recipe.master and not lora:
        master = Term(
            name="optimizer/master_weights",
            bytes=_per_gpu(tr.tensors, n_opt, ep, lambda ts: _numel(ts) * recipe.master),
            formula=f"{count:,} trainable x {recipe.master} B fp32{opt_note}",
            source=SRC_STATES,
        )
        (host if offload else persistent).append(master)
    n, f = state_bytes(setup.optimizer, tr.tensors, state_el)
    if n:
        states = Term(
            name="optimizer/states",
            bytes=_per_gpu(tr.tensors, n_opt, ep, lambda ts: state_bytes(setup.optimizer, ts, state_el)[0]),
            formula=f + opt_note,
            source=SRC_STATES + ("; bitsandbytes blockwise 8-bit" if "8bit" in setup.optimizer else ""),
        )
        (host if offload else persistent).append(states)
    grads = None
    if setup.optimizer != "lomo":
        grads = Term(
            name="gradients",
            bytes=_per_gpu(tr.tensors, n_grad, ep, lambda ts: tensor_bytes(ts, grad_b)),
            formula=f"{count:,} trainable x {grad_b} B{fp32_note(tr.tensors, grad_b)}"
            f"{_shard_note(n_grad, ep, 'ZeRO-2/3 shard')}",
            source=SRC_STATES,
        )
    backward_extra: list[Term] = []
    step_extra: list[Term] = []
    if setup.optimizer == "lomo":
        largest = max((t.numel for t in tr.tensors), default=0)
        backward_extra.append(
            Term(
                name="optimizer/lomo_gradient",
                bytes=largest * recipe.grad,
                formula=f"one gradient at a time: largest tensor {largest:,} x {recipe.grad} B",
                source="LOMO (Lv et al. 2023): the update is fused into backward",
            )
        )
    if n_grad > 1 and grads is not None:
        bucket = min(setup.reduce_bucket, count)
        backward_extra.append(
            Term(
                name="zero/reduce_bucket",
                bytes=bucket * grad_b,
                formula=f"min(reduce_bucket {setup.reduce_bucket:,}, trainable) x {grad_b} B",
                source="DeepSpeed reduce_bucket_size / FSDP reduce-scatter of one unit",
            )
        )
    elif setup.dp > 1 and part["stage"] == 0 and grads is not None:
        persistent.append(
            Term(
                name="ddp/buckets",
                bytes=tensor_bytes(tr.tensors, grad_b),
                formula=f"{count:,} x {grad_b} B{fp32_note(tr.tensors, grad_b)} (gradient_as_bucket_view=False, "
                "DDP's default)",
                source="torch DistributedDataParallel allreduce buckets hold a second copy of the gradients",
            )
        )
    fp32_grads = _per_gpu(tr.tensors, n_opt, ep, lambda ts: _numel(ts) * 4)
    if offload:
        host.append(
            Term(
                name="optimizer/fp32_gradients",
                bytes=fp32_grads,
                formula=f"{count:,} x 4 B{opt_note}",
                source="ZeRO-Offload: fp32 gradient partition on the host for the CPU optimizer",
            )
        )
        return persistent, host, grads, backward_extra, step_extra
    impl = setup.step_impl
    t, tf = step_transient(setup.optimizer, impl, tr.tensors, state_el)
    if t:
        step_extra.append(
            Term(
                name="optimizer/step_transient",
                bytes=_per_gpu(
                    tr.tensors, n_opt, ep, lambda ts: step_transient(setup.optimizer, impl, ts, state_el)[0]
                ),
                formula=tf + opt_note,
                source="torch.optim implementations, measured in notes §6",
            )
        )
    if recipe.master and not lora and recipe.grad == 2:
        step_extra.append(
            Term(
                name="optimizer/fp32_gradients",
                bytes=fp32_grads,
                formula=f"half gradients copied to fp32 for the master update: {count:,} x 4 B{opt_note}",
                source="DeepSpeed/Megatron mixed-precision optimizer",
            )
        )
    return persistent, host, grads, backward_extra, step_extra


# Model states do not depend on the batch, the sequence, recompute, attention or the loss: sweeps over those
# (the fit solvers) reuse one computation. The key lists every field the states do depend on.
_STATE_FIELDS = (
    "precision", "grad_dtype", "optimizer", "optimizer_impl", "peft", "lora_r", "lora_targets", "freeze_layers",
    "dp", "zero", "fsdp", "fsdp_shard", "offload", "tp", "sp", "pp", "interleave", "cp", "ep", "reduce_bucket",
)  # fmt: skip
_STATES_CACHE: dict[tuple, tuple] = {}


def model_states(spec: ModelSpec, stage: Stage, setup: TrainSetup) -> tuple:
    key = (spec, stage, *(getattr(setup, f) for f in _STATE_FIELDS))
    hit = _STATES_CACHE.get(key)
    if hit is None:
        if len(_STATES_CACHE) > 4096:
            _STATES_CACHE.clear()
        hit = _STATES_CACHE[key] = _model_states(spec, stage, setup)
    return hit


def _model_states(
    spec: ModelSpec, stage: Stage, setup: TrainSetup
) -> tuple[tuple[Term, ...], tuple[Term, ...], Term | None, tuple[Term, ...], tuple[Term, ...]]:
    """(persistent, host, gradients, backward-end extras, step extras) of one stage: weights, adapters, master
    copy, optimizer states; independent of the batch and the sequence (see ``_STATE_FIELDS``)."""
    recipe = recipe_for(setup)
    lora = lora_targets(spec, setup.lora_targets) if setup.peft != "none" else []
    part = partitioned(setup)
    tr = _trainable(spec, stage, setup, recipe, lora)
    persistent: list[Term] = []
    host: list[Term] = []
    weights = _weights(spec, stage, setup, recipe, part["weights"])
    (host if setup.offload == "params" else persistent).extend(weights)
    if lora:
        persistent.append(
            Term(
                name="weights/lora",
                bytes=round(tr.count * LORA_BYTES),
                formula=f"r {setup.lora_r} x (in + out) per module: {tr.count:,.0f} x {LORA_BYTES} B fp32",
                source="peft LoRA (Hu et al. 2021), adapters upcast to fp32",
            )
        )
    st_persistent, st_host, grads, backward_extra, step_extra = _states(setup, recipe, tr)
    persistent += st_persistent
    host += st_host
    return tuple(persistent), tuple(host), grads, tuple(backward_extra), tuple(step_extra)

"""Training memory per GPU in accurate mode: every term of one pipeline stage, by phase.

Persistent: weights (by category, in the recipe's storage; QLoRA's base in NF4), LoRA adapters, the fp32
master copy, optimizer states, gradients when they outlive a backward (accumulation, ZeRO-2/3 partitions,
DDP buckets), the CUDA context. Phases, each with what is live only then:
  forward end       activations of every in-flight micro-batch, the saved loss, autocast's weight copies,
                    ZeRO-3/FSDP gathered parameters;
  backward (loss)   the same plus the loss backward's fp32 gradients (last stage);
  backward (layer)  with full recompute: the checkpoints plus one layer rebuilt;
  backward end      all gradients (unless persistent) plus reduce buckets;
  optimizer step    gradients plus the step's transients (foreach copies, fp32 gradient copies).
The peak is the largest phase; ``estimate_stages`` returns every stage, ``estimate_training`` the worst.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError, NeedsArchitectureError
from vramwise.estimate.overheads import cuda_context_term, tensor_bytes, with_allocator
from vramwise.estimate.term import Estimate, Term
from vramwise.estimate.train.activations import Grads, layer_saved
from vramwise.estimate.train.layout import (
    Stage,
    check_layout,
    in_layer,
    partitioned,
    shard_group,
    stage_share,
    stages,
)
from vramwise.estimate.train.lora import LoraModule, lora_targets
from vramwise.estimate.train.loss import loss_terms
from vramwise.estimate.train.optimizers import Tensor, state_bytes, step_transient
from vramwise.estimate.train.recipe import Recipe, recipe_for
from vramwise.formats import get_format
from vramwise.spec.load import BareModel, Model
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
            tensors.append(Tensor(rows=rows, cols=cols, copies=g.tensors * share, expert=g.per_expert))
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
            n, f = g.count * share * recipe.weight, f"{g.name}: {g.count * share:,.0f} x {recipe.weight} B"
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


def _in_flight(stage: Stage, setup: TrainSetup) -> float:
    """Micro-batches whose activations a stage holds at once under 1F1B (interleaved: in stage-layer units)."""
    p, v, m, k = setup.pp, setup.interleave, setup.grad_accum, stage.index
    if p == 1:
        return 1.0
    if v == 1:
        return float(min(p - k, m))
    # Megatron's interleaved schedule: (p - k - 1)·2 + (v - 1)·p warm-up chunks, plus one, of L/(p·v) layers
    return min(((p - k - 1) * 2 + (v - 1) * p + 1) / v, float(m))


def _layer_grads(setup: TrainSetup, lora: list[LoraModule]) -> Grads:
    return Grads(
        base=setup.peft == "none",
        lora=tuple(lora),
        lora_r=setup.lora_r,
        lora_dropout=setup.lora_dropout > 0,
    )


@functools.lru_cache(maxsize=4096)
def _saved_per_token(
    spec: ModelSpec,
    stage: Stage,
    c: int,
    grads: Grads,
    attention: str,
    recompute: str,
    seq: int,  # only eager attention's s² depends on it; 0 otherwise, so sweeps over seq hit the cache
    tp: int,
    sp: bool,
    amp: bool,
    peft: bool,
    freeze_layers: int,
) -> tuple[int, tuple[tuple[str, float], ...], float]:
    """(layers that record, per-token bytes by name summed over them, the largest single layer's per-token bytes).

    Layers differ only in whether their MLP is a mixture of experts: each kind is computed once.
    """
    recording = [i for i in stage.layers if peft or i >= freeze_layers]
    moe_layers = set(spec.moe.moe_layers) if spec.moe else set()
    counts: dict[bool, int] = {}
    first: dict[bool, int] = {}
    for i in recording:
        kind = i in moe_layers
        counts[kind] = counts.get(kind, 0) + 1
        first.setdefault(kind, i)
    kw = {"c": c, "grads": grads, "attention": attention, "recompute": recompute, "seq": seq, "tp": tp, "sp": sp}
    kinds = {kind: layer_saved(spec, layer=first[kind], amp=amp, **kw) for kind in counts}
    names: dict[str, float] = {}
    for kind, saved in kinds.items():
        for k, v in saved.items.items():
            names[k] = names.get(k, 0) + v * counts[kind]
    largest = max((saved.total for saved in kinds.values()), default=0)
    return len(recording), tuple(names.items()), largest


def _activations(
    spec: ModelSpec, stage: Stage, setup: TrainSetup, recipe: Recipe, lora: list[LoraModule]
) -> tuple[list[Term], int]:
    """Terms saved until backward on this stage, and the largest single layer's full saved set (bytes)."""
    c, tokens = recipe.compute, setup.batch * setup.seq // setup.cp
    grads = _layer_grads(setup, lora)
    flight = _in_flight(stage, setup)
    recording, per_token, per_layer_max = _saved_per_token(
        spec,
        stage,
        c,
        grads,
        setup.attention,
        setup.recompute,
        setup.seq if setup.attention == "eager" else 0,
        setup.tp,
        setup.sp,
        recipe.autocast_cache,
        setup.peft != "none",
        setup.freeze_layers,
    )
    largest = round(per_layer_max * tokens)
    terms: list[Term] = []
    flight_f = f" x {flight:g} micro-batches in flight" if flight != 1 else ""
    if setup.recompute == "full":
        rep = setup.tp if setup.sp else 1
        n = recording * c * spec.hidden_size * tokens / rep * flight
        terms.append(
            Term(
                name="activations/checkpoints",
                bytes=round(n),
                formula=f"{recording} layers x layer input T {tokens} x h {spec.hidden_size} x {c} B{flight_f}",
                source="full recompute: each layer keeps only its input (torch.utils.checkpoint)",
            )
        )
    elif recording:
        for k, v in per_token:
            terms.append(
                Term(
                    name=f"activations/{k}",
                    bytes=round(v * tokens * flight),
                    formula=f"{v / recording:,.1f} B/token/layer x {recording} layers x T {tokens}{flight_f}",
                    source="saved tensors of the transformers layer (estimate/train/activations.py)",
                )
            )
    terms += _outside_layers(spec, stage, setup, recipe, tokens, flight)
    return terms, largest


@functools.lru_cache(maxsize=1024)
def _any_sliding(spec: ModelSpec, layers: tuple[int, ...]) -> bool:
    return any(spec.layer_attention(i) == "sliding" for i in layers)


def _outside_layers(
    spec: ModelSpec, stage: Stage, setup: TrainSetup, recipe: Recipe, tokens: int, flight: float
) -> list[Term]:
    c, h, out = recipe.compute, spec.hidden_size, []
    if spec.attention.kind == "mla" or spec.model_type not in ("gpt2", "opt"):
        d = spec.attention.head_dim
        out.append(
            Term(
                name="activations/rotary",
                bytes=round(2 * tokens * d * c * flight),
                formula=f"cos and sin: 2 x T {tokens} x head_dim {d} x {c} B",
                source="transformers rotary embedding, shared by every layer",
            )
        )
    sliding = _any_sliding(spec, stage.layers)
    if sliding and setup.attention == "sdpa":
        # A sliding window rules out is_causal: transformers builds a (b, 1, s, s) mask that sdpa keeps
        n = setup.batch * setup.seq * setup.seq * c
        out.append(
            Term(
                name="activations/attention_mask",
                bytes=round(n * flight),
                formula=f"sliding-window mask b {setup.batch} x s {setup.seq} x s {setup.seq} x {c} B",
                source="transformers masking_utils for sdpa; flash-attention takes the window as an argument",
            )
        )
    if stage.first:
        n = 16 * setup.batch * setup.seq + (tokens * h if spec.dropout else 0)
        out.append(
            Term(
                name="activations/inputs",
                bytes=round(n * flight),
                formula="input ids and labels: 2 x b x s x 8 B"
                + (" + embedding dropout mask T x h" if spec.dropout else ""),
                source="int64 token ids",
            )
        )
    if stage.last and spec.norm.final:
        full = setup.peft == "none"
        head_trains = full and not (spec.tied_embeddings and setup.freeze_layers)  # a tied head freezes too
        fp32 = spec.model_type.startswith("gemma") or spec.model_type == "gpt_oss"  # fp32 weight multiply
        per = c * h + 2 * c if spec.norm.kind == "layer" else 4 * h + 4 + ((4 if fp32 else c) * h if full else 0)
        per += c * h if head_trains else 0  # lm_head's input, for the head's gradient
        out.append(
            Term(
                name="activations/final_norm",
                bytes=round(per * tokens * flight),
                formula=f"{per:,} B/token x T {tokens}",
                source="final norm and lm_head input (estimate/train/activations.py rules)",
            )
        )
    return out


def _loss(spec: ModelSpec, setup: TrainSetup, recipe: Recipe, tokens: int, flight: float) -> tuple[Term, Term]:
    vocab = spec.vocab_size if setup.tp == 1 else -(-spec.vocab_size // setup.tp)
    saved, temp = loss_terms(
        tokens=tokens,
        vocab=vocab,
        h=spec.hidden_size,
        c=recipe.compute,
        loss=setup.loss,
        chunk=setup.loss_chunk,
        softcap=spec.final_logit_softcap,
    )
    if flight != 1:
        saved = Term(
            name=saved.name,
            bytes=round(saved.bytes * flight),
            formula=saved.formula + f" x {flight:g} micro-batches",
            source=saved.source,
        )
    return saved, temp


@functools.lru_cache(maxsize=256)
def _layer_params(spec: ModelSpec) -> int:
    return sum(g.count for g in parameter_groups(spec) if in_layer(g)) // spec.num_layers


@functools.lru_cache(maxsize=256)
def _outer_params(spec: ModelSpec) -> int:
    return sum(g.count for g in parameter_groups(spec) if not in_layer(g))


def _gathered(spec: ModelSpec, setup: TrainSetup, recipe: Recipe) -> tuple[list[Term], list[Term]]:
    """Parameters (and gradients) unsharded on the fly under ZeRO-3 / FSDP full shard: (forward end, backward).

    FSDP2 keeps the root unit (embeddings, final norm, head) unsharded from forward to backward and reshards
    each layer after its forward; in backward the current layer and the prefetched next one are gathered,
    and one layer's unsharded gradients wait for their reduce-scatter (traced: notes §2c, verify).
    DeepSpeed ZeRO-3 gathers the module running now plus the prefetch bucket, in forward and backward alike.
    """
    if partitioned(setup)["stage"] < 3:
        return [], []
    layer = _layer_params(spec) // setup.tp
    outer = _outer_params(spec)
    w = recipe.weight
    if setup.fsdp != "none":
        src = "FSDP2: root unit kept, layers resharded after forward, current + prefetched layer in backward"
        root = Term(name="fsdp/root_unit", bytes=outer * w, formula=f"{outer:,} x {w} B", source=src)
        layers = Term(name="fsdp/layer_units", bytes=2 * layer * w, formula=f"2 x {layer:,} x {w} B", source=src)
        g = LORA_BYTES if setup.peft != "none" else recipe.grad
        grads = Term(
            name="fsdp/unsharded_grads",
            bytes=layer * g if setup.peft == "none" else 0,
            formula=f"one layer's gradients before reduce-scatter: {layer:,} x {g} B",
            source=src,
        )
        return [root], [root, layers, grads]
    prefetch = min(setup.prefetch_bucket, layer)
    n = (max(layer, outer) + prefetch) * w
    term = Term(
        name="zero/gathered_params",
        bytes=n,
        formula=f"(largest module max(layer {layer:,}, embeddings+head) + prefetch {prefetch:,}) x {w} B",
        source="DeepSpeed ZeRO-3: gathered module + stage3_prefetch_bucket_size",
    )
    return [term], [term]


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
            bytes=_per_gpu(tr.tensors, n_grad, ep, lambda ts: _numel(ts) * grad_b),
            formula=f"{count:,} trainable x {grad_b} B{_shard_note(n_grad, ep, 'ZeRO-2/3 shard')}",
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
                bytes=count * grad_b,
                formula=f"{count:,} x {grad_b} B (gradient_as_bucket_view=False, DDP's default)",
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


def _autocast_cache(spec: ModelSpec, stage: Stage, setup: TrainSetup) -> Term:
    n = sum(
        g.count * stage_share(g, spec, stage, setup)
        for g in parameter_groups(spec)
        if g.kind == "linear" or g.category == "head" or (spec.tied_embeddings and g.name == "embeddings.tokens")
    )
    return Term(
        name="autocast/weight_copies",
        bytes=round(2 * n),
        formula=f"16-bit copy of {n:,.0f} matmul weights x 2 B, kept for their backward",
        source="torch.autocast casts fp32 weights per op and caches the casts for the forward",
    )


# Model states do not depend on the batch, the sequence, recompute, attention or the loss: sweeps over those
# (the fit solvers) reuse one computation. The key lists every field the states do depend on.
_STATE_FIELDS = (
    "precision", "grad_dtype", "optimizer", "optimizer_impl", "peft", "lora_r", "lora_targets", "freeze_layers",
    "dp", "zero", "fsdp", "fsdp_shard", "offload", "tp", "sp", "pp", "interleave", "cp", "ep", "reduce_bucket",
)  # fmt: skip
_STATES_CACHE: dict[tuple, tuple] = {}


def _cached_states(spec: ModelSpec, stage: Stage, setup: TrainSetup) -> tuple:
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


def _stage_estimate(spec: ModelSpec, setup: TrainSetup, stage: Stage) -> Estimate:
    recipe = recipe_for(setup)
    lora = lora_targets(spec, setup.lora_targets) if setup.peft != "none" else []
    part = partitioned(setup)
    states = _cached_states(spec, stage, setup)
    persistent, host = list(states[0]), list(states[1])
    grads, backward_extra, step_extra = states[2], states[3], states[4]
    # Gradients outlive a backward when they accumulate, or in DeepSpeed's preallocated ZeRO-2/3 partition;
    # FSDP allocates each sharded gradient at its reduce-scatter, so the loss backward sees none.
    zero_buffer = part["gradients"] > 1 and setup.fsdp == "none"
    grads_persist = grads is not None and (setup.grad_accum > 1 or zero_buffer)
    if grads_persist and grads is not None:
        persistent.append(grads)
    persistent.append(cuda_context_term(setup.cuda_context_mib))
    pers = tuple(persistent)
    base = tensor_bytes(pers)

    tokens = setup.batch * setup.seq // setup.cp
    flight = _in_flight(stage, setup)
    acts, largest_layer = _activations(spec, stage, setup, recipe, lora)
    forward = list(acts)
    loss_temp = None
    if stage.last:
        saved, loss_temp = _loss(spec, setup, recipe, tokens, flight)
        forward.append(saved)
    if recipe.autocast_cache:
        forward.append(_autocast_cache(spec, stage, setup))
    gathered_fwd, gathered_bwd = _gathered(spec, setup, recipe)
    forward += gathered_fwd
    if setup.peft == "qlora":
        forward.append(_dequantized(spec))
    fa = setup.allocator_fraction
    phases = [with_allocator(base, "forward end", forward, fa)]
    if loss_temp is not None:
        phases.append(with_allocator(base, "backward (loss)", [*forward, loss_temp], fa))
    if setup.recompute == "full" and largest_layer:
        rebuilt = Term(
            name="activations/recomputed_layer",
            bytes=largest_layer,
            formula=f"one layer's saved tensors, rebuilt for its backward: T {tokens}",
            source="full recompute re-runs one layer's forward during backward",
        )
        phases.append(with_allocator(base, "backward (recompute)", [*forward, rebuilt], fa))
    if setup.fsdp != "none" and gathered_bwd:
        # the last layer's backward: activations still held, the loss's tensors gone, units gathered
        in_layers = [t for t in forward if t not in gathered_fwd and t.name != "activations/loss"]
        phases.append(with_allocator(base, "backward (layer)", [*in_layers, *gathered_bwd], fa))
        if stage.last and setup.peft == "none":
            # the head's backward: the last two layer units are already being gathered (prefetch)
            units = [t for t in gathered_bwd if t.name != "fsdp/unsharded_grads"]
            head = [*in_layers, *units, *_head_grads(spec, setup, recipe, tokens)]
            phases.append(with_allocator(base, "backward (head)", head, fa))
    end = [*backward_extra, *gathered_bwd]
    if grads is not None and not grads_persist:
        end.insert(0, grads)
    phases.append(with_allocator(base, "backward end", end, fa))
    step = [*([grads] if grads is not None and not grads_persist else []), *step_extra]
    phases.append(with_allocator(base, "optimizer step", step, fa))

    notes = [
        f"precision {recipe.name}: weights {recipe.weight} B, gradients {recipe.grad} B, compute {recipe.compute} B"
    ]
    if setup.pp > 1:
        notes.append(f"pipeline stage {stage.index} of {setup.pp}: layers {stage.layers[0]}-{stage.layers[-1]}")
    if setup.optimizer.startswith("paged-"):
        notes.append("paged optimizer: states live in unified memory and may be evicted to host RAM under pressure")
    if part["stage"]:
        notes.append(f"model states partitioned over {shard_group(setup)} data-parallel GPUs (stage {part['stage']})")
    if setup.recompute == "selective" and setup.attention != "eager":
        notes.append("selective recompute drops the attention scores, which sdpa/flash never keep: no change here")
    if spec.attention.kind == "mla" or spec.moe:
        notes.append("MLA and MoE activations follow the Mixtral/Llama rules and are less tightly traced")
    return Estimate(persistent=pers, phases=tuple(phases), notes=tuple(notes), host=tuple(host))


def _head_grads(spec: ModelSpec, setup: TrainSetup, recipe: Recipe, tokens: int) -> list[Term]:
    """FSDP's root unit during the head's backward: the logits' gradient and the head's unsharded gradient,
    which waits for the root's reduce-scatter (traced: 2.1 GB for Llama-3-8B in fp32)."""
    vocab, h = spec.vocab_size, spec.hidden_size
    head = vocab * (spec.embedding.proj_dim or h)
    src = "FSDP2 root unit: gradients are reduce-scattered after the whole unit's backward"
    return [
        Term(
            name="loss/logits_grad",
            bytes=tokens * vocab * recipe.compute,
            formula=f"T {tokens} x V {vocab} x {recipe.compute} B",
            source=src,
        ),
        Term(
            name="fsdp/head_grad",
            bytes=head * recipe.grad,
            formula=f"V {vocab} x h {h} x {recipe.grad} B",
            source=src,
        ),
    ]


def _dequantized(spec: ModelSpec) -> Term:
    largest = max(g.count // g.tensors for g in parameter_groups(spec) if in_layer(g) and g.kind == "linear")
    return Term(
        name="qlora/dequantized_weight",
        bytes=largest * 2,
        formula=f"largest layer weight {largest:,} x 2 B, dequantized for its matmul",
        source="bitsandbytes 4-bit matmul dequantizes one weight at a time",
    )


def estimate_stages(model: Model, setup: TrainSetup) -> list[Estimate]:
    """One estimate per pipeline stage (a single one without pipelining)."""
    if isinstance(model, BareModel):
        raise NeedsArchitectureError(
            "training estimates need the architecture (layers, heads, hidden size, vocabulary): "
            "name a catalog model or a config.json, or use --mode textbook with a bare size"
        )
    if not model.lm_head:
        raise InvalidWorkloadError(f"{model.name} has no language-model head: training covers causal LMs")
    check_layout(model, setup)
    return [_stage_estimate(model, setup, s) for s in stages(model, setup.pp)]


def estimate_training(model: Model, setup: TrainSetup) -> Estimate:
    """The worst GPU: the pipeline stage with the highest peak.

    Only the first and the last stage can be the worst: a middle stage holds no more layers than the first
    (earlier stages take the remainder), no more micro-batches in flight, and neither embeddings nor the loss.
    """
    if isinstance(model, BareModel) or setup.pp <= 2:
        return max(estimate_stages(model, setup), key=lambda e: e.peak_bytes)
    if not model.lm_head:
        raise InvalidWorkloadError(f"{model.name} has no language-model head: training covers causal LMs")
    check_layout(model, setup)
    split = stages(model, setup.pp)
    return max((_stage_estimate(model, setup, s) for s in (split[0], split[-1])), key=lambda e: e.peak_bytes)


def phase_totals(model: ModelSpec, setup: TrainSetup) -> list[int]:
    """Per-GPU bytes of every phase of the stages that can be the worst (the first and the last).

    The fit solvers use these at two micro-batch sizes: each phase grows linearly with the micro-batch, so
    the peak at any micro-batch is the largest of these lines there.
    """
    check_layout(model, setup)
    split = stages(model, setup.pp)
    out = []
    for stage in split[:1] + split[1:][-1:]:
        est = _stage_estimate(model, setup, stage)
        persistent = sum(t.bytes for t in est.persistent)
        out += [persistent + p.bytes for p in est.phases]
    return out

"""Training memory per GPU in accurate mode: every term of one pipeline stage, by phase.

Persistent: weights (by category, in the recipe's storage; QLoRA's base in NF4), LoRA adapters, the fp32
master copy, optimizer states, gradients when they outlive a backward (accumulation, ZeRO-2/3 partitions,
DDP buckets), the CUDA context. Phases, each with what is live only then:
  forward end       activations of every in-flight micro-batch, the saved loss, autocast's weight copies,
                    ZeRO-3/FSDP gathered parameters;
  backward (loss)   the same plus the loss backward's fp32 gradients (last stage);
  backward (recompute)  with full recompute: the checkpoints plus one layer rebuilt;
  backward (layer), backward (head)  FSDP: units gathered in backward, the root unit's head gradient;
  backward end      all gradients (unless persistent) plus reduce buckets;
  optimizer step    gradients plus the step's transients (foreach copies, fp32 gradient copies).
The peak is the largest phase; ``estimate_stages`` returns every stage, ``estimate_training`` the worst.
Model states come from ``states.py``, ZeRO-3/FSDP's gathered parameters from ``sharded.py``, the saved
tensors per layer from ``activations.py``, the loss region from ``loss.py``.
"""

from __future__ import annotations

import functools

from vramwise.errors import InvalidWorkloadError, NeedsArchitectureError
from vramwise.estimate.overheads import cuda_context_term, tensor_bytes, with_allocator
from vramwise.estimate.term import Estimate, Term
from vramwise.estimate.train.activations import Grads, layer_saved
from vramwise.estimate.train.layout import (
    Stage,
    check_layout,
    in_layer,
    padded_vocab,
    partitioned,
    shard_group,
    stage_share,
    stages,
)
from vramwise.estimate.train.lora import LoraModule, lora_targets
from vramwise.estimate.train.loss import loss_terms
from vramwise.estimate.train.recipe import Recipe, recipe_for
from vramwise.estimate.train.sharded import gathered, head_grads
from vramwise.estimate.train.states import model_states
from vramwise.spec.load import BareModel, Model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import TrainSetup


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
    # vocab-parallel cross entropy: each rank holds its share of the padded vocabulary, as the head does
    vocab = spec.vocab_size if setup.tp == 1 else padded_vocab(spec.vocab_size, setup.tp) // setup.tp
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


def _stage_estimate(spec: ModelSpec, setup: TrainSetup, stage: Stage) -> Estimate:
    recipe = recipe_for(setup)
    lora = lora_targets(spec, setup.lora_targets) if setup.peft != "none" else []
    part = partitioned(setup)
    states = model_states(spec, stage, setup)
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
    gathered_fwd, gathered_bwd = gathered(spec, setup, recipe)
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
            head = [*in_layers, *units, *head_grads(spec, setup, recipe, tokens)]
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

"""Parameters and gradients unsharded on the fly under ZeRO-3 and FSDP full sharding."""

from __future__ import annotations

import functools

from vramwise.estimate.plan import LOSS_CHUNK, ONE, TOKENS, Rule
from vramwise.estimate.term import Term
from vramwise.estimate.train.layout import in_layer, padded_vocab
from vramwise.estimate.train.lightning_fsdp import whole_unit_gradient
from vramwise.estimate.train.lora import adapter_bytes, kbit_prepared
from vramwise.estimate.train.loss import CHUNKED, TORCHTUNE_CHUNKS
from vramwise.estimate.train.quantized import training_base
from vramwise.estimate.train.recipe import Recipe
from vramwise.estimate.train.zero3 import zero3_gathered
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import FsdpMode, LossImpl, TrainSetup


@functools.lru_cache(maxsize=256)
def _layer_params(spec: ModelSpec) -> int:
    return sum(g.count for g in parameter_groups(spec) if in_layer(g)) // spec.num_layers


@functools.lru_cache(maxsize=256)
def _fp32_kept_per_layer(spec: ModelSpec) -> int:
    return sum(g.count for g in parameter_groups(spec) if in_layer(g) and g.fp32) // spec.num_layers


@functools.lru_cache(maxsize=256)
def _outer_params(spec: ModelSpec, tp: int = 1) -> int:
    """The root unit's parameters on one GPU: under tensor parallelism the embeddings and head are split over the
    vocabulary as the model states are (layout.py stage_share; torchtitan's TP plan shards tok_embeddings
    rowwise and output colwise before fully_shard), the norms stay whole."""
    if tp == 1:
        return sum(g.count for g in parameter_groups(spec) if not in_layer(g))
    total = 0.0
    for g in parameter_groups(spec):
        if in_layer(g):
            continue
        if g.kind in ("norm", "router") or g.name == "embeddings.positions":
            total += g.count
        elif g.name in ("embeddings.tokens", "head.lm_head", "head.bias"):
            total += g.count * padded_vocab(spec.vocab_size, tp) / tp / spec.vocab_size
        else:
            total += g.count / tp
    return round(total)


# FSDP all-gathers a quantized base as stored: torchao dtypes/nf4tensor.py NF4Tensor.fsdp_pre_all_gather returns
# (quantized_scalers, quantization_factor, quantized_data) and fsdp_post_all_gather rebuilds the NF4Tensor from the
# gathered bytes (pytorch/ao 0598012; torchtune's QLoRA recipes shard NF4 linears with FSDP2); FSDP with
# bitsandbytes' Params4bit gathers the packed bnb_4bit_quant_storage (transformers' QLoRA + FSDP recipe). A layer
# unit is its stored bytes, not its 16-bit size; each linear is dequantized one at a time for its matmul
# (qlora/dequantized_weight).
SRC_QUANTIZED_GATHER = "FSDP gathers a quantized base as stored (torchao NF4Tensor.fsdp_pre_all_gather)"


@functools.lru_cache(maxsize=256)
def _stored_layer_bytes(spec: ModelSpec, fmt: str, hp: int) -> int:
    """One layer's bytes with its linears in the quantized base format ``fmt`` and the rest at ``hp`` bytes."""
    base = get_format(fmt)
    total = sum(
        base.tensor_bytes(g, spec, hp).bytes if g.kind == "linear" else g.count * hp
        for g in parameter_groups(spec)
        if in_layer(g)
    )
    return round(total) // spec.num_layers


def _stored_unit(spec: ModelSpec, setup: TrainSetup, w: int) -> int:
    """One layer's unit as FSDP gathers it when the base is quantized (its stored bytes), else 0."""
    fmt = training_base(spec, setup.peft).fmt
    if not fmt:
        return 0
    hp = 4 if kbit_prepared(spec, setup.peft) else w
    return _stored_layer_bytes(spec, fmt, hp) // setup.parallel.tp


def _layer_units(spec: ModelSpec, setup: TrainSetup, layer: int, w: int, extra: tuple[int, str], src: str) -> Term:
    """The current and the prefetched layer, gathered: at their stored size for a quantized base."""
    stored = _stored_unit(spec, setup, w)
    if stored:
        fmt = training_base(spec, setup.peft).fmt
        return Term(
            name="fsdp/layer_units",
            bytes=2 * stored,
            formula=f"2 x one layer as stored: {layer:,} parameters, linears in {fmt} = {stored:,} B",
            source=f"{src}; {SRC_QUANTIZED_GATHER}",
        )
    return Term(
        name="fsdp/layer_units",
        bytes=2 * (layer * w + extra[0]),
        formula=f"2 x ({layer:,} x {w} B{extra[1]})",
        source=src,
    )


def gathered(spec: ModelSpec, setup: TrainSetup, recipe: Recipe) -> tuple[list[Term], list[Term], list[Term]]:
    """Parameters (and gradients) unsharded on the fly under ZeRO-3 / FSDP: (forward end, a layer's backward, the
    end of backward).

    FSDP2 keeps the root unit (embeddings, final norm, head) unsharded from forward to backward and reshards
    each layer after its forward; in backward the current layer and the prefetched next one are gathered,
    and one layer's unsharded gradients wait for their reduce-scatter (traced: notes §2c, verify).
    DeepSpeed ZeRO-3: ``zero3.py``.
    """
    p = setup.parallel
    if p.fsdp != FsdpMode.NONE and p.sharding.stage == 2:  # grad-op: parameters stay whole, gradients reduce
        rs = _reduce_scatter_input(spec, setup, recipe)
        return [], rs, rs
    if p.sharding.stage < 3:
        return [], [], []
    if p.fsdp == FsdpMode.NONE:
        fwd, bwd = zero3_gathered(spec, setup, recipe)
        return fwd, bwd, bwd
    layer = _layer_params(spec) // p.tp
    outer = _outer_params(spec, p.tp)
    w = recipe.weight
    # fp32-kept parameters (DeepSeek's routers under a bf16 load) and their gradients take 4 B, not w
    kept = _fp32_kept_per_layer(spec) // p.tp if recipe.keeps_fp32_modules and w < 4 else 0
    extra, extra_f = kept * (4 - w), f" + {kept:,} kept in fp32 x {4 - w} B" if kept else ""
    src = "FSDP2: root unit kept, layers resharded after forward, current + prefetched layer in backward"
    emb = _embedding_params(spec) if outer_units(spec, setup) else 0
    if emb:  # torchtune custom_sharded_layers: the root keeps only the final norm; the embeddings come back last
        outer -= emb + _head_params(spec)
        root = Term(name="fsdp/root_unit", bytes=outer * w, formula=f"{outer:,} x {w} B (the final norm)", source=src)
    else:
        root = Term(name="fsdp/root_unit", bytes=outer * w, formula=f"{outer:,} x {w} B", source=src)
    layers = _layer_units(spec, setup, layer, w, (extra, extra_f), src)
    g = adapter_bytes(setup.peft) if setup.peft.adapters else recipe.grad
    whole = whole_unit_gradient(setup)  # Lightning's FSDP1: a Block's flat gradient, frozen weights included
    g = recipe.weight if whole else g
    grads = Term(
        name="fsdp/unsharded_grads",
        bytes=layer * g + (kept * (4 - g) if g < 4 else 0) if not setup.peft.adapters or whole else 0,
        formula=f"one layer's gradients before reduce-scatter: {layer:,} x {g} B"
        + (f" + {kept:,} kept in fp32 x {4 - g} B" if kept and g < 4 else ""),
        source=src,
    )
    layer_moment = [layers, grads, *_reduce_scatter_input(spec, setup, recipe)]
    if emb:
        # the embeddings' unit, gathered for the last backward (prefetched while layer 0's runs) and reduce-scattered
        # in its own post_backward: its gradients and their reduce-scatter input, as the root's otherwise
        unit = Term(name="fsdp/embedding_unit", bytes=emb * w, formula=f"{emb:,} x {w} B", source=SRC_OUTER_UNITS)
        end = _end_of_backward(spec, setup, recipe, layer_moment, outer=emb, what="the embeddings' unit")
        return [root], [root, *layer_moment], [root, unit, *end]
    return [root], [root, *layer_moment], [root, *_end_of_backward(spec, setup, recipe, layer_moment)]


# torchtune full_finetune_distributed.py / lora_finetune_distributed.py shard_model with custom_sharded_layers
# ['tok_embeddings', 'output'] (recipes/configs/llama3_1/70B_full.yaml, 8B_full.yaml): fully_shard on those two
# modules before the root, so each is a unit of its own, resharded after its forward (reshard_after_forward) and
# reduce-scattered in its own post_backward (torch 2.13 _fsdp_param_group.py FSDPParamGroup.post_backward).
SRC_OUTER_UNITS = "torchtune shard_model custom_sharded_layers: embeddings and output as FSDP2 units of their own"


@functools.lru_cache(maxsize=256)
def _embedding_params(spec: ModelSpec) -> int:
    return sum(g.count for g in parameter_groups(spec) if not in_layer(g) and g.category == "embeddings")


@functools.lru_cache(maxsize=256)
def _head_params(spec: ModelSpec) -> int:
    return sum(g.count for g in parameter_groups(spec) if not in_layer(g) and g.category == "head")


def outer_units(spec: ModelSpec, setup: TrainSetup) -> bool:
    """Whether the embeddings and the head are FSDP units of their own: asked for, and not one tied parameter
    (a note says so, training.py)."""
    return setup.parallel.fsdp_outer_units and setup.parallel.fsdp == FsdpMode.FULL and not spec.tied_embeddings


def head_unit(spec: ModelSpec, setup: TrainSetup, recipe: Recipe) -> list[Term]:
    """With the head a unit of its own: the head gathered again for its backward (after its forward's reshard)."""
    if not outer_units(spec, setup):
        return []
    head = _head_params(spec)
    w = recipe.weight
    return [Term(name="fsdp/head_unit", bytes=head * w, formula=f"{head:,} x {w} B", source=SRC_OUTER_UNITS)]


def _end_of_backward(
    spec: ModelSpec,
    setup: TrainSetup,
    recipe: Recipe,
    layer_moment: list[Term],
    outer: int = 0,
    what: str = "the root unit's",
) -> list[Term]:
    """The root unit's gradients at the end of backward, and the larger of the last layer's moment and the
    root's reduce-scatter. FSDP2 reduce-scatters a unit in its post_backward, which for the root fires after the
    embeddings' backward: the head's and the embeddings' unsharded gradients wait until then; post_backward
    reshards the root's parameters, then foreach_reduce copies its gradients into the reduce-scatter input
    (torch 2.13 _fsdp_param_group.py FSDPParamGroup.post_backward, _fsdp_collectives.py foreach_reduce)."""
    if setup.peft.adapters:
        return layer_moment
    outer, g = outer or _outer_params(spec, setup.parallel.tp), recipe.grad
    src = "torch 2.13 _fsdp_param_group.py FSDPParamGroup.post_backward, _fsdp_collectives.py foreach_reduce"
    parts = "(embeddings, head, final norm)" if what == "the root unit's" else "(the embeddings)"
    root_grads = Term(
        name="fsdp/root_grads",
        bytes=outer * g,
        formula=f"{what} unsharded gradients {parts}: {outer:,} x {g} B",
        source=src,
    )
    root_rs = Term(
        name="fsdp/root_reduce_scatter_input",
        bytes=outer * g,
        formula=f"{what} gradients flattened for reduce-scatter: {outer:,} x {g} B",
        source=src,
    )
    layers = sum(t.bytes for t in layer_moment)
    return [root_grads, *(layer_moment if layers >= root_rs.bytes else [root_rs])]


def forward_units(spec: ModelSpec, setup: TrainSetup, recipe: Recipe) -> list[Term]:
    """FSDP2 full sharding in forward, at a layer's all-gather copy-out: its all-gather output and its unsharded
    parameters, and the previous layer's all-gather output, whose free wait_for_unshard defers to the next
    copy-out (implicit forward prefetch; torch 2.13 torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py).
    The previous layer's unsharded parameters are already resharded (post_forward). Traced on a fake world: three
    layer units in forward."""
    p = setup.parallel
    if p.fsdp == FsdpMode.NONE or p.sharding.stage < 3:
        return []
    layer, w = _layer_params(spec) // p.tp, recipe.weight
    kept = _fp32_kept_per_layer(spec) // p.tp if recipe.keeps_fp32_modules and w < 4 else 0
    unit = _stored_unit(spec, setup, w) or layer * w + kept * (4 - w)
    return [
        Term(
            name="fsdp/forward_units",
            bytes=3 * unit,
            formula=f"3 x one layer's unit {unit:,} B: the previous layer's all-gather output, this layer's "
            "all-gather output and its unsharded parameters",
            source="torch 2.13 torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py wait_for_unshard "
            "(all_gather_state: free after the next copy-out), _fsdp_collectives.py foreach_all_gather_copy_out",
        )
    ]


def _reduce_scatter_input(spec: ModelSpec, setup: TrainSetup, recipe: Recipe) -> list[Term]:
    """FSDP2's reduce-scatter input: one unit's gradients copied into a flat buffer of world x the padded shard
    (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_reduce: torch.empty, then chunk_cat of the
    unsharded gradients, which are still referenced), live beside the unit's unsharded gradients. Traced on a
    fake world (verify): the backward's peak holds four layer units, the current and the prefetched layer's
    parameters, the current layer's gradients and this buffer."""
    if setup.peft.adapters:  # only the adapters' gradients are reduced: negligible
        return []
    layer = _layer_params(spec) // setup.parallel.tp
    g = recipe.grad
    kept = _fp32_kept_per_layer(spec) // setup.parallel.tp if recipe.keeps_fp32_modules and g < 4 else 0
    return [
        Term(
            name="fsdp/reduce_scatter_input",
            bytes=layer * g + kept * (4 - g),
            formula=f"one layer's gradients, flattened for reduce-scatter: {layer:,} x {g} B"
            + (f" + {kept:,} kept in fp32 x {4 - g} B" if kept else ""),
            source="torch 2.13 torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_reduce "
            "(reduce_scatter_input)",
        )
    ]


def head_grads(spec: ModelSpec, recipe: Recipe, loss: str, tp: int = 1) -> list[Rule]:
    """FSDP's root unit during the head's backward: the logits' gradient and the head's unsharded gradient,
    which waits for the root's reduce-scatter (traced: 2.1 GB for Llama-3-8B in fp32).

    A chunked loss never builds the whole logits: the head's backward holds one chunk's logits gradient,
    ``min(chunk, T)`` tokens (the chunk ``loss.py`` sizes its loss backward by, ``LOSS_CHUNK``)."""
    vocab, h = spec.vocab_size, spec.hidden_size
    if not spec.lm_head:  # a decoder classifier: its score over num_labels at every position
        vocab = spec.num_labels
    elif tp > 1:  # vocabulary-parallel head and loss: this rank's share of the padded vocabulary (training.py _loss)
        vocab = padded_vocab(spec.vocab_size, tp) // tp
    head = vocab * (spec.embedding.proj_dim or h)
    src = "FSDP2 root unit: gradients are reduce-scattered after the whole unit's backward"
    c = recipe.compute
    if loss == LossImpl.CCE:  # Cut Cross Entropy never builds the logits, nor their gradient
        return [_head_grad(head, recipe, vocab, h, src)]
    if loss in (LossImpl.TORCHTUNE_CHUNKED, LossImpl.TORCHTUNE_LINEAR):  # the head per chunk of T/8 tokens
        logits = Rule(
            name="loss/logits_grad",
            coef=vocab * c / TORCHTUNE_CHUNKS,
            var=TOKENS,
            formula=lambda v: f"one of {TORCHTUNE_CHUNKS} chunks: T {v.T}/{TORCHTUNE_CHUNKS} x V {vocab} x {c} B",
            source=f"{src}; torchtune chunked_output",
        )
        return [logits, _head_grad(head, recipe, vocab, h, src)]
    if loss in (LossImpl.CHUNKED, LossImpl.LIGER):
        logits = Rule(
            name="loss/logits_grad",
            coef=vocab * c,
            var=LOSS_CHUNK,
            formula=lambda v: f"one chunk: {v.chunk} tokens x V {vocab} x {c} B",
            source=f"{src}; {CHUNKED}: the logits exist one chunk at a time",
        )
    else:
        logits = Rule(
            name="loss/logits_grad",
            coef=vocab * c,
            var=TOKENS,
            formula=lambda v: f"T {v.T} x V {vocab} x {c} B",
            source=src,
        )
    return [logits, _head_grad(head, recipe, vocab, h, src)]


def _head_grad(head: int, recipe: Recipe, vocab: int, h: int, src: str) -> Rule:
    return Rule(
        name="fsdp/head_grad",
        coef=head * recipe.grad,
        var=ONE,
        formula=lambda _: f"V {vocab} x h {h} x {recipe.grad} B",
        source=src,
    )


def layer_and_outer_params(spec: ModelSpec, tp: int) -> tuple[int, int]:
    """Parameters of one layer's FSDP unit (split by tp) and of the root unit (embeddings, final norm, head), as
    ``gathered`` counts them."""
    return _layer_params(spec) // tp, _outer_params(spec, tp)

"""Parameters and gradients unsharded on the fly under ZeRO-3 and FSDP full sharding."""

from __future__ import annotations

import functools

from vramwise.estimate.plan import LOSS_CHUNK, ONE, TOKENS, Rule
from vramwise.estimate.term import Term
from vramwise.estimate.train.layout import in_layer
from vramwise.estimate.train.lora import adapter_bytes, kbit_prepared
from vramwise.estimate.train.loss import CHUNKED, TORCHTUNE_CHUNKS
from vramwise.estimate.train.quantized import training_base
from vramwise.estimate.train.recipe import Recipe
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
def _outer_params(spec: ModelSpec) -> int:
    return sum(g.count for g in parameter_groups(spec) if not in_layer(g))


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


def gathered(spec: ModelSpec, setup: TrainSetup, recipe: Recipe) -> tuple[list[Term], list[Term]]:
    """Parameters (and gradients) unsharded on the fly under ZeRO-3 / FSDP full shard: (forward end, backward).

    FSDP2 keeps the root unit (embeddings, final norm, head) unsharded from forward to backward and reshards
    each layer after its forward; in backward the current layer and the prefetched next one are gathered,
    and one layer's unsharded gradients wait for their reduce-scatter (traced: notes §2c, verify).
    DeepSpeed ZeRO-3 gathers the module running now plus the prefetch bucket, in forward and backward alike.
    """
    p = setup.parallel
    if p.sharding.stage < 3:
        return [], []
    layer = _layer_params(spec) // p.tp
    outer = _outer_params(spec)
    w = recipe.weight
    # fp32-kept parameters (DeepSeek's routers under a bf16 load) and their gradients take 4 B, not w
    kept = _fp32_kept_per_layer(spec) // p.tp if recipe.keeps_fp32_modules and w < 4 else 0
    extra, extra_f = kept * (4 - w), f" + {kept:,} kept in fp32 x {4 - w} B" if kept else ""
    if p.fsdp != FsdpMode.NONE:
        src = "FSDP2: root unit kept, layers resharded after forward, current + prefetched layer in backward"
        root = Term(name="fsdp/root_unit", bytes=outer * w, formula=f"{outer:,} x {w} B", source=src)
        fmt = training_base(spec, setup.peft).fmt
        if fmt:
            hp = 4 if kbit_prepared(spec, setup.peft) else w
            stored = _stored_layer_bytes(spec, fmt, hp) // p.tp
            layers = Term(
                name="fsdp/layer_units",
                bytes=2 * stored,
                formula=f"2 x one layer as stored: {layer:,} parameters, linears in {fmt} = {stored:,} B",
                source=f"{src}; {SRC_QUANTIZED_GATHER}",
            )
        else:
            layers = Term(
                name="fsdp/layer_units",
                bytes=2 * (layer * w + extra),
                formula=f"2 x ({layer:,} x {w} B{extra_f})",
                source=src,
            )
        g = adapter_bytes(setup.peft) if setup.peft.adapters else recipe.grad
        grads = Term(
            name="fsdp/unsharded_grads",
            bytes=layer * g + (kept * (4 - g) if g < 4 else 0) if not setup.peft.adapters else 0,
            formula=f"one layer's gradients before reduce-scatter: {layer:,} x {g} B"
            + (f" + {kept:,} kept in fp32 x {4 - g} B" if kept and g < 4 else ""),
            source=src,
        )
        return [root], [root, layers, grads]
    prefetch = min(p.prefetch_bucket, layer)
    n = (max(layer, outer) + prefetch) * w + (extra if layer >= outer else 0)
    term = Term(
        name="zero/gathered_params",
        bytes=n,
        formula=f"(largest module max(layer {layer:,}, embeddings+head) + prefetch {prefetch:,}) x {w} B"
        + (extra_f if layer >= outer else ""),
        source="DeepSpeed ZeRO-3: gathered module + stage3_prefetch_bucket_size",
    )
    return [term], [term]


def head_grads(spec: ModelSpec, recipe: Recipe, loss: str) -> list[Rule]:
    """FSDP's root unit during the head's backward: the logits' gradient and the head's unsharded gradient,
    which waits for the root's reduce-scatter (traced: 2.1 GB for Llama-3-8B in fp32).

    A chunked loss never builds the whole logits: the head's backward holds one chunk's logits gradient,
    ``min(chunk, T)`` tokens (the chunk ``loss.py`` sizes its loss backward by, ``LOSS_CHUNK``)."""
    vocab, h = spec.vocab_size, spec.hidden_size
    if not spec.lm_head:  # a decoder classifier: its score over num_labels at every position
        vocab = spec.num_labels
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

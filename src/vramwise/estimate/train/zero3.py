"""DeepSpeed ZeRO-3's unsharded parameters: what its coordinator holds gathered, and what it never partitions.

Read in DeepSpeed v0.16.4 (deepspeed/runtime/zero/):

- partitioned_param_coordinator.py ``fetch_sub_module``: each leaf module's own parameters are gathered when it
  runs (``iter_params(submodule, recurse=z3_leaf_module(...))``: a module's direct parameters, so one Linear, or one
  fused experts module of transformers 5, e.g. ``MixtralExperts``), and queued parameters are prefetched while
  ``numel_prefetching < min(__max_n_available_params - __n_available_params, __prefetch_bucket_sz)``
  (stage3_max_live_parameters 1e9, stage3_prefetch_bucket_size 5e7, config.py).
- ``release_sub_module`` / ``__params_to_release``: a module's parameters are not released when they reoccur in the
  modules that follow within ``stage3_max_reuse_distance`` (1e9) elements. A layer's parameters are used again in
  its backward, so at the turn from forward to backward the last layers stay gathered: a parameter is kept when
  the elements traversed before its backward use, 2 x (the rest of its layer + the layers after it) + 2 x the
  head side (final norm and head, once in forward and once in backward), stay below the distance. Summed over the
  layers, about (distance - 2 x head side) / 2 elements of the last layers (at module granularity), no more than
  all of them.
- parameter_offload.py ``mark_persistent_parameters``: parameters of at most stage3_param_persistence_threshold
  (1e5) elements are ``ds_persist``: never partitioned, whole on every rank.
"""

from __future__ import annotations

import functools

from vramwise.estimate.term import Term
from vramwise.estimate.train.layout import in_layer
from vramwise.estimate.train.recipe import Recipe
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import ParamGroup, parameter_groups
from vramwise.workload import FsdpMode, TrainSetup

COORDINATOR = "DeepSpeed v0.16.4 deepspeed/runtime/zero/partitioned_param_coordinator.py"


def _unsplit(group: ParamGroup, tp: int) -> bool:
    """Whether tensor parallelism leaves the group whole on each rank (as ``layout.stage_share`` splits)."""
    return tp == 1 or group.kind in ("norm", "router") or group.name == "embeddings.positions"


@functools.lru_cache(maxsize=256)
def _sizes(spec: ModelSpec, tp: int, ep: int) -> tuple[int, int, int]:
    """(largest leaf module, the layers' parameters, the head side) in elements on one tp rank."""
    largest, experts = 0, 0
    layers = head = 0
    moe_layers = max(1, len(spec.moe.moe_layers)) if spec.moe else 1
    for g in parameter_groups(spec):
        split = 1 if _unsplit(g, tp) else tp
        if g.category == "experts" and g.per_expert:
            experts += g.count // moe_layers // split // ep  # one layer's fused experts module (all its experts)
        else:
            largest = max(largest, g.count // max(1, g.tensors) // split)
        if in_layer(g):
            layers += g.count // split // (ep if g.per_expert else 1)
        elif g.category == "head" or g.name == "norms.final":
            head += g.count // split
    if not any(g.category == "head" for g in parameter_groups(spec)):  # a tied head is the embedding's weight
        head += sum(g.count // (1 if _unsplit(g, tp) else tp) for g in parameter_groups(spec)
                    if g.name == "embeddings.tokens")
    return max(largest, experts), layers, head


def _prefetch(setup: TrainSetup, module: int, layers: int, head: int) -> int:
    """Elements prefetched beyond the module being fetched: the bucket, within max_live_parameters of what is
    available, and no more than the rest of the model."""
    p = setup.parallel
    return max(0, min(p.prefetch_bucket, setup.comms.max_live_params - module, layers + head - module))


def zero3_gathered(spec: ModelSpec, setup: TrainSetup, recipe: Recipe) -> tuple[list[Term], list[Term]]:
    """(at the turn from forward to backward, in backward): the module being fetched and the prefetch, and at the
    turn the last layers kept for their reuse."""
    p, w = setup.parallel, recipe.weight
    module, layers, head = _sizes(spec, p.tp, p.ep)
    prefetch = _prefetch(setup, module, layers, head)
    live = Term(
        name="zero/gathered_params",
        bytes=(module + prefetch) * w,
        formula=f"(largest leaf module {module:,} + prefetch {prefetch:,}) x {w} B",
        source=f"{COORDINATOR} fetch_sub_module: the module's own parameters + prefetch min(stage3_prefetch_bucket_"
        f"size {p.prefetch_bucket:,}, stage3_max_live_parameters {setup.comms.max_live_params:,} - available, "
        "the rest of the model)",
    )
    distance = setup.comms.max_reuse_distance
    kept = max(0, min((distance - 2 * head) // 2, layers))
    if not kept:
        return [live], [live]
    reused = Term(
        name="zero/reused_params",
        bytes=kept * w,
        formula=f"min((stage3_max_reuse_distance {distance:,} - 2 x head side {head:,}) / 2, layers {layers:,}) "
        f"= {kept:,} x {w} B (the last layers, kept for their backward)",
        source=f"{COORDINATOR} __params_to_release (max_reuse_dist_in_numel)",
    )
    return [live, reused], [live]


@functools.lru_cache(maxsize=256)
def _small_tensors(spec: ModelSpec, tp: int, threshold: int) -> tuple[int, int]:
    """(tensors, elements) of the parameters of at most ``threshold`` elements on one tp rank (whole model)."""
    count = elements = 0
    for g in parameter_groups(spec):
        per_tensor = g.count // max(1, g.tensors) // (1 if _unsplit(g, tp) else tp)
        if per_tensor <= threshold:
            count += g.tensors
            elements += per_tensor * g.tensors
    return count, elements


def persistent_params(spec: ModelSpec, setup: TrainSetup, recipe: Recipe, share: float) -> list[Term]:
    """Parameters of at most stage3_param_persistence_threshold elements, whole on every rank: the bytes beyond
    the shard ``weights/*`` counts. ``share``: the fraction of the model's layers this pipeline stage holds."""
    p = setup.parallel
    if p.sharding.stage < 3 or p.fsdp != FsdpMode.NONE or setup.peft.adapters:
        return []
    threshold = setup.comms.param_persistence_threshold
    tensors, elements = _small_tensors(spec, p.tp, threshold)
    n, w = p.sharding.weights, recipe.weight
    kept = round(elements * share * (1 - 1 / n))
    if not kept:
        return []
    return [
        Term(
            name="zero/persistent_params",
            bytes=kept * w,
            formula=f"{tensors:,} tensors of <= {threshold:,} elements ({elements:,} x stage share {share:g}) kept "
            f"whole: x (1 - 1/{n}) beyond the shard x {w} B",
            source="DeepSpeed v0.16.4 parameter_offload.py mark_persistent_parameters (param.ds_numel <= "
            "stage3_param_persistence_threshold: ds_persist, never partitioned)",
        )
    ]

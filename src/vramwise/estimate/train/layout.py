"""Which share of each parameter group one GPU holds: pipeline stage, tensor and expert shards.

ZeRO/FSDP's divisors are derived once per layout: ``setup.parallel.sharding`` (``workload/layout.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vramwise.errors import InvalidLayoutError
from vramwise.estimate.sharding import check_tp
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import ParamGroup
from vramwise.workload import ParallelConfig, TrainSetup

MEGATRON_VOCAB_PAD = 128  # Megatron pads the vocabulary to a multiple of 128 x tp (make-vocab-size-divisible-by)


@dataclass(frozen=True, kw_only=True)
class Stage:
    """Pipeline stage ``index`` of ``count``: its layer indices and what else it holds."""

    index: int
    count: int
    layers: tuple[int, ...]

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


def check_layout(spec: ModelSpec, setup: TrainSetup) -> None:
    """The layout rules that need the model (the others are checked when the setup is built)."""
    p = setup.parallel
    check_tp(spec, p.tp)
    if p.pp > spec.num_layers:
        raise InvalidLayoutError(f"pp ({p.pp}) cannot exceed the number of layers ({spec.num_layers})")
    if p.pp * p.interleave > spec.num_layers:
        raise InvalidLayoutError(
            f"pp x interleave ({p.pp * p.interleave}) cannot exceed the number of layers ({spec.num_layers})"
        )
    if p.ep > 1:
        if not spec.moe:
            raise InvalidLayoutError(f"ep ({p.ep}) needs a mixture-of-experts model; {spec.name} is dense")
        if spec.moe.num_experts % p.ep:
            raise InvalidLayoutError(f"ep ({p.ep}) must divide the number of experts ({spec.moe.num_experts})")
    if setup.peft.freeze_layers > spec.num_layers:
        raise InvalidLayoutError(
            f"freeze_layers ({setup.peft.freeze_layers}) cannot exceed the number of layers ({spec.num_layers})"
        )


def stages(spec: ModelSpec, pp: int) -> list[Stage]:
    """Layers split as evenly as possible; the earlier stages take the remainder."""
    base, extra = divmod(spec.num_layers, pp)
    out, start = [], 0
    for k in range(pp):
        n = base + (1 if k < extra else 0)
        out.append(Stage(index=k, count=pp, layers=tuple(range(start, start + n))))
        start += n
    return out


def in_layer(group: ParamGroup) -> bool:
    return group.category in ("attention", "mlp", "experts", "experts_shared") or group.name == "norms.layers"


def padded_vocab(vocab: int, tp: int) -> int:
    unit = MEGATRON_VOCAB_PAD * tp
    return -(-vocab // unit) * unit


def stage_share(group: ParamGroup, spec: ModelSpec, stage: Stage, parallel: ParallelConfig) -> float:
    """Fraction of ``group`` (summed over the whole model) that one GPU of ``stage`` holds, before ZeRO."""
    if in_layer(group):
        share = len(stage.layers) / spec.num_layers
        if spec.moe and group.category in ("mlp", "experts", "experts_shared"):
            # An MoE model's dense MLP lives only on its dense layers (DeepSeek's first_k_dense_replace), its
            # routed and shared experts only on the MoE layers: the stage holds its share of those layers
            moe = spec.moe
            on_moe = _moe_layers_in(stage.layers, moe.moe_layers)
            if group.category == "mlp":
                share = (len(stage.layers) - on_moe) / max(1, spec.num_layers - len(moe.moe_layers))
            else:
                share = on_moe / max(1, len(moe.moe_layers))
            if group.per_expert:
                share /= parallel.ep
    else:
        head = group.category == "head" or group.name == "norms.final"
        tied_head = spec.tied_embeddings and group.name == "embeddings.tokens" and stage.last
        share = 1.0 if (stage.last if head else stage.first) or tied_head else 0.0
    if parallel.tp == 1 or group.kind in ("norm", "router") or group.name in ("embeddings.positions",):
        return share
    if group.name in ("embeddings.tokens", "head.lm_head", "head.bias"):
        return share * padded_vocab(spec.vocab_size, parallel.tp) / parallel.tp / spec.vocab_size
    return share / parallel.tp


@functools.lru_cache(maxsize=4096)
def _moe_layers_in(layers: tuple[int, ...], moe_layers: tuple[int, ...]) -> int:
    """How many of a stage's layers are MoE layers: a set lookup, so the count stays linear in the layers (a
    scan of the tuple per layer made a 10,000-layer MoE config take seconds)."""
    return len(frozenset(moe_layers).intersection(layers))

"""Parallel layouts for a GPU count: every (tp, pp, dp, ZeRO stage, recompute) that fits, ranked.

Ranking: layouts that fit first, ordered by a throughput proxy (higher is better), then by headroom. The proxy
is deliberately simple and stated: each factor is the fraction of ideal throughput a layout keeps.
  recompute full      x 0.75   (one more forward per step: 4 passes' work instead of 3)
  tensor parallel     x 0.92^log2(t) inside a node (t <= 8), x 0.5^log2(t/8) beyond
  pipeline (1F1B)     x m / (m + p - 1)   (the bubble; m = micro-batches per step)
  ZeRO-3 / FSDP       x 0.9   (parameters all-gathered twice a step); ZeRO-1/2 x 0.98
Rejected families (a tp x pp pair with no fitting stage / recompute choice) are reported with the smallest
peak they reach, so the user sees why they fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from vramwise.errors import VramwiseError
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.model import ModelSpec
from vramwise.workload import TrainSetup

GPUS_PER_NODE = 8


@dataclass(frozen=True, kw_only=True)
class Layout:
    tp: int
    pp: int
    dp: int
    zero: int
    recompute: str
    peak: int
    fits: bool
    throughput: float

    @property
    def label(self) -> str:
        zero = f" zero={self.zero}" if self.zero else ""
        return f"tp={self.tp} pp={self.pp} dp={self.dp}{zero} recompute={self.recompute}"


@dataclass(frozen=True, kw_only=True)
class Rejected:
    tp: int
    pp: int
    smallest_peak: int
    reason: str


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def throughput_proxy(tp: int, pp: int, zero: int, recompute: str, micro_batches: int) -> float:
    score = 0.75 if recompute == "full" else 1.0
    inside, beyond = min(tp, GPUS_PER_NODE), max(1, tp // GPUS_PER_NODE)
    score *= 0.92 ** math.log2(inside) * 0.5 ** math.log2(beyond)
    score *= micro_batches / (micro_batches + pp - 1)
    score *= 0.9 if zero == 3 else 0.98 if zero else 1.0
    return score


def rank_layouts(
    spec: ModelSpec, setup: TrainSetup, gpus: int, budget: int, *, max_tp: int = 64, max_pp: int = 64
) -> tuple[list[Layout], list[Rejected]]:
    """Every layout of ``gpus`` GPUs (tp x pp x dp), ZeRO 0-3 and recompute none/full, for ``setup``'s
    micro-batch, sequence, precision and optimizer. Returns (layouts ranked, families rejected)."""
    heads, kv, layers = spec.attention.num_heads, spec.attention.num_kv_heads, spec.num_layers
    layouts: list[Layout] = []
    rejected: list[Rejected] = []
    m = max(setup.grad_accum, 1)
    for tp in _divisors(gpus):
        if tp > max_tp or heads % tp or (kv % tp and tp % kv):
            continue
        for pp in _divisors(gpus // tp):
            if pp > max_pp or pp > layers:
                continue
            dp = gpus // (tp * pp)
            family: list[Layout] = []
            for zero in (0, 1, 2, 3) if dp > 1 else (0,):
                for recompute in ("none", "full"):
                    trial = replace(
                        setup,
                        tp=tp,
                        pp=pp,
                        dp=dp,
                        zero=zero,
                        fsdp="none",
                        recompute=recompute,
                        sp=setup.sp and tp > 1,
                        grad_accum=max(m, pp) if pp > 1 else setup.grad_accum,
                    )
                    try:
                        peak = estimate_training(spec, trial).peak_bytes
                    except VramwiseError:
                        continue
                    proxy = throughput_proxy(tp, pp, zero, recompute, trial.grad_accum)
                    family.append(
                        Layout(
                            tp=tp,
                            pp=pp,
                            dp=dp,
                            zero=zero,
                            recompute=recompute,
                            peak=peak,
                            fits=peak <= budget,
                            throughput=proxy,
                        )
                    )
            layouts += family
            if family and not any(f.fits for f in family):
                best = min(family, key=lambda f: f.peak)
                rejected.append(
                    Rejected(
                        tp=tp,
                        pp=pp,
                        smallest_peak=best.peak,
                        reason=f"even {best.label} needs more than the budget per GPU",
                    )
                )
    fitting = sorted((x for x in layouts if x.fits), key=lambda x: (-x.throughput, x.peak))
    return fitting, rejected

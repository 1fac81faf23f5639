"""Parallel layouts for a GPU count: every (tp, pp, dp, ZeRO stage, recompute, offload, micro-batch) that fits,
ranked.

Ranking: layouts that fit, ordered by a throughput proxy (higher is better), then by headroom. The proxy is
deliberately simple and stated: each factor is the fraction of ideal throughput a layout keeps.
  recompute full      x 0.75   (one more forward per step: 4 passes' work instead of 3)
  tensor parallel     x 0.92^log2(t) inside a node (t <= 8), x 0.5^log2(t/8) beyond
  pipeline (1F1B)     x m / (m + p - 1)   (the bubble; m = micro-batches per step)
  ZeRO-3              x 0.9   (parameters all-gathered twice a step); ZeRO-1/2 x 0.98
  offload             x 0.7 (optimizer on the CPU), x 0.5 (parameters too)
  micro-batch b       x b / (b + 1)   (small matmuls use the GPU poorly)
Rejected families (a tp x pp pair where nothing fits) are reported with the smallest peak they reach.

Speed: every phase of a training estimate grows linearly with the micro-batch, so two estimates per layout
(micro-batch 1 and 2) give its peak at every micro-batch; answers within 4 KiB of the budget are confirmed
with an exact peak, since the estimate rounds each term to whole bytes. A chunked loss is the exception (its
chunk stops growing once the micro-batch holds a chunk's tokens): there every micro-batch is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from vramwise.errors import VramwiseError
from vramwise.estimate.sharding import divisors as _divisors
from vramwise.estimate.train.training import phase_totals, training_peak
from vramwise.spec.model import ModelSpec
from vramwise.workload import LossImpl, TrainSetup

GPUS_PER_NODE = 8
BOUNDARY = 4096  # bytes: closer than this to the budget, a full estimate decides


@dataclass(frozen=True, kw_only=True)
class Layout:
    tp: int
    pp: int
    dp: int
    zero: int
    recompute: str
    offload: str
    batch: int
    grad_accum: int
    peak: int
    fits: bool
    throughput: float

    @property
    def label(self) -> str:
        zero = f" zero={self.zero}" if self.zero else ""
        offload = f" offload={self.offload}" if self.offload != "none" else ""
        return f"tp={self.tp} pp={self.pp} dp={self.dp}{zero} recompute={self.recompute} b={self.batch}{offload}"


@dataclass(frozen=True, kw_only=True)
class Rejected:
    tp: int
    pp: int
    smallest_peak: int
    smallest_label: str  # the layout of this family that reached smallest_peak

    @property
    def reason(self) -> str:
        return f"even {self.smallest_label} needs more than the budget per GPU"


@dataclass(frozen=True, kw_only=True)
class Search:
    fitting: list[Layout]
    rejected: list[Rejected]
    candidates: int  # layouts considered (every micro-batch counts)
    estimates: int  # full estimates computed


def throughput_proxy(
    tp: int, pp: int, zero: int, recompute: str, micro_batches: int, offload: str, batch: int
) -> float:
    score = 0.75 if recompute == "full" else 1.0
    inside, beyond = min(tp, GPUS_PER_NODE), max(1, tp // GPUS_PER_NODE)
    score *= 0.92 ** math.log2(inside) * 0.5 ** math.log2(beyond)
    score *= micro_batches / (micro_batches + pp - 1)
    score *= 0.9 if zero == 3 else 0.98 if zero else 1.0
    score *= {"none": 1.0, "optimizer": 0.7, "params": 0.5}[offload]
    return score * batch / (batch + 1)


def search_layouts(
    spec: ModelSpec,
    setup: TrainSetup,
    gpus: int,
    budget: int,
    *,
    batches: tuple[int, ...] | None = None,
    max_tp: int = 64,
    max_pp: int = 64,
) -> Search:
    """Every layout of ``gpus`` GPUs for ``setup``'s sequence, precision and optimizer, at each micro-batch in
    ``batches`` (default: ``setup.batch`` only)."""
    heads, kv, layers = spec.attention.num_heads, spec.attention.num_kv_heads, spec.num_layers
    batches = tuple(sorted(batches or (setup.batch,)))
    fitting: list[Layout] = []
    rejected: list[Rejected] = []
    candidates = estimates = 0
    for tp in _divisors(gpus):
        if tp > max_tp or heads % tp or (kv % tp and tp % kv):
            continue
        for pp in _divisors(gpus // tp):
            if pp > max_pp or pp > layers:
                continue
            dp = gpus // (tp * pp)
            accum = max(setup.grad_accum, pp) if pp > 1 else setup.grad_accum
            smallest: tuple[int, str] | None = None
            family_fits = False
            for zero in (0, 1, 2, 3) if dp > 1 else (0,):
                for offload in ("none", "optimizer", "params") if zero else ("none",):
                    if offload == "params" and zero != 3:
                        continue
                    for recompute in ("none", "full"):
                        base = setup.with_flat(
                            tp=tp, pp=pp, dp=dp, zero=zero, fsdp="none", recompute=recompute,
                            offload=offload, sp=setup.parallel.sp and tp > 1, grad_accum=accum,
                        )  # fmt: skip
                        try:
                            one, two = (
                                phase_totals(spec, replace(base, batch=1)),
                                phase_totals(spec, replace(base, batch=2)),
                            )
                        except VramwiseError:
                            continue
                        estimates += 2
                        lines = [(a, b - a) for a, b in zip(one, two, strict=True)]
                        for b in batches:
                            # a chunked loss's chunk stops growing with the batch: no line, every batch exact
                            if setup.loss == LossImpl.CHUNKED:
                                peak = training_peak(spec, replace(base, batch=b))
                                estimates += 1
                            else:
                                peak = max(a + d * (b - 1) for a, d in lines)
                                if abs(peak - budget) <= BOUNDARY:
                                    peak = training_peak(spec, replace(base, batch=b))
                                    estimates += 1
                            layout = Layout(
                                tp=tp, pp=pp, dp=dp, zero=zero, recompute=recompute, offload=offload, batch=b,
                                grad_accum=accum, peak=peak, fits=peak <= budget,
                                throughput=throughput_proxy(tp, pp, zero, recompute, accum, offload, b),
                            )  # fmt: skip
                            if layout.fits:
                                fitting.append(layout)
                                family_fits = True
                                continue
                            if smallest is None or peak < smallest[0]:
                                smallest = (peak, layout.label)
                            break  # peaks grow with the micro-batch: the larger ones miss too
                        candidates += len(batches)  # each one decided, directly or by that bound
            if not family_fits and smallest is not None:
                rejected.append(
                    Rejected(
                        tp=tp,
                        pp=pp,
                        smallest_peak=smallest[0],
                        smallest_label=smallest[1],
                    )
                )
    fitting.sort(key=lambda x: (-x.throughput, x.peak))
    return Search(fitting=fitting, rejected=rejected, candidates=candidates, estimates=estimates)


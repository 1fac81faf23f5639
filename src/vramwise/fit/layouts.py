"""Parallel layouts for a GPU count: every (tp, pp, dp, ZeRO stage or FSDP mode, recompute, offload, micro-batch)
that fits, ranked. The sharding axis is DeepSpeed's ZeRO stages 0-3, or, for a framework that shards with FSDP
instead (torchtune, torchtitan, LitGPT), the FSDP modes it runs (``fsdp``: full shard, shard-grad-op, and no
sharding only where the framework replicates without sharding).

Ranking: layouts that fit, ordered by a throughput proxy (higher is better), then by headroom. The proxy is
deliberately simple and stated: each factor is the fraction of ideal throughput a layout keeps.
  recompute full      x 0.75   (one more forward per step: 4 passes' work instead of 3)
  tensor parallel     x 0.92^log2(t) inside a node (t <= 8), x 0.5^log2(t/8) beyond
  pipeline (1F1B)     x m / (m + p - 1)   (the bubble; m = micro-batches per step)
  ZeRO-3              x 0.9   (parameters all-gathered twice a step); ZeRO-1/2 x 0.98
  FSDP full shard     x 0.9   (as ZeRO-3: all-gathered in forward and again in backward); shard-grad-op x 0.98
                              (as ZeRO-2: gathered once, kept through backward)
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
from collections.abc import Iterator
from dataclasses import dataclass, replace

from vramwise.errors import VramwiseError
from vramwise.estimate.sharding import check_tp
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
    fsdp: str = "none"  # the FSDP mode (a framework that shards with FSDP); "none" with the ZeRO stages

    @property
    def label(self) -> str:
        zero = f" zero={self.zero}" if self.zero else f" fsdp={self.fsdp}" if self.fsdp != "none" else ""
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
    tp: int, pp: int, zero: int, recompute: str, micro_batches: int, offload: str, batch: int, fsdp: str = "none"
) -> float:
    score = 0.75 if recompute == "full" else 1.0
    inside, beyond = min(tp, GPUS_PER_NODE), max(1, tp // GPUS_PER_NODE)
    score *= 0.92 ** math.log2(inside) * 0.5 ** math.log2(beyond)
    score *= micro_batches / (micro_batches + pp - 1)
    score *= 0.9 if zero == 3 or fsdp == "full" else 0.98 if zero or fsdp == "grad-op" else 1.0
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
    fsdp: tuple[str, ...] = (),
) -> Search:
    """Every layout of ``gpus`` GPUs for ``setup``'s sequence, precision and optimizer, at each micro-batch in
    ``batches`` (default: ``setup.batch`` only); ``fsdp``: shard with these FSDP modes instead of ZeRO's stages."""
    batches = tuple(sorted(batches or (setup.batch,)))
    count = _Count()
    fitting: list[Layout] = []
    rejected: list[Rejected] = []
    for tp, pp in _splits(spec, gpus, max_tp, max_pp):
        bases = _bases(setup, gpus, tp, pp, fsdp)
        family = [_family_layouts(spec, setup, base, budget, batches, count) for base in bases]
        found = [layout for layouts in family for layout in layouts]
        fitting += [x for x in found if x.fits]
        misses = [x for x in found if not x.fits]
        if misses and len(misses) == len(found):  # nothing of this tp x pp family fits: say how close it came
            smallest = min(misses, key=lambda x: x.peak)  # the first of equal peaks, as the search met them
            rejected.append(Rejected(tp=tp, pp=pp, smallest_peak=smallest.peak, smallest_label=smallest.label))
    fitting.sort(key=lambda x: (-x.throughput, x.peak))
    return Search(fitting=fitting, rejected=rejected, candidates=count.candidates, estimates=count.estimates)


@dataclass
class _Count:
    candidates: int = 0  # layouts decided (every micro-batch counts, including those a miss rules out)
    estimates: int = 0  # phase totals and exact peaks computed


def _splits(spec: ModelSpec, gpus: int, max_tp: int, max_pp: int) -> Iterator[tuple[int, int]]:
    """(tp, pp) pairs of ``gpus``: tp splits the heads as inference and training require, pp fits the layers."""
    for tp in _divisors(gpus):
        if tp > max_tp:
            continue
        try:
            check_tp(spec, tp)
        except VramwiseError:
            continue
        for pp in _divisors(gpus // tp):
            if pp <= max_pp and pp <= spec.num_layers:
                yield tp, pp


def _bases(
    setup: TrainSetup, gpus: int, tp: int, pp: int, fsdp: tuple[str, ...] = ()
) -> Iterator[TrainSetup]:
    """The setups of one tp x pp family: each ZeRO stage (or FSDP mode), offload and recompute choice (micro-batch
    still open)."""
    dp = gpus // (tp * pp)
    accum = max(setup.grad_accum, pp) if pp > 1 else setup.grad_accum  # 1F1B needs at least pp micro-batches
    shardings = tuple((0, m) for m in fsdp) if fsdp else tuple((z, "none") for z in (0, 1, 2, 3))
    for zero, mode in shardings if dp > 1 else ((0, "none"),):
        # FSDP offloads the parameters with their gradients and optimizer step (CPUOffload), full shard only
        offloads = ("none", "params") if mode == "full" else ("none",) if mode != "none" else (
            ("none", "optimizer", "params") if zero else ("none",))
        for offload in offloads:
            if offload == "params" and zero != 3 and mode != "full":
                continue
            for recompute in ("none", "full"):
                try:
                    yield setup.with_flat(
                        tp=tp, pp=pp, dp=dp, zero=zero, fsdp=mode, recompute=recompute,
                        offload=offload, sp=setup.parallel.sp and tp > 1, grad_accum=accum,
                    )  # fmt: skip
                except VramwiseError:  # a combination --framework does not run (DeepSpeed: ZeRO-2/3 with pp > 1)
                    continue


def _family_layouts(
    spec: ModelSpec, setup: TrainSetup, base: TrainSetup, budget: int, batches: tuple[int, ...], count: _Count
) -> list[Layout]:
    """``base`` at each micro-batch, up to and including the first that misses (peaks grow with the batch, so
    the larger ones miss too); none when the estimator refuses the layout."""
    try:
        one, two = phase_totals(spec, replace(base, batch=1)), phase_totals(spec, replace(base, batch=2))
    except VramwiseError:
        return []
    count.estimates += 2
    count.candidates += len(batches)  # each one decided, directly or by the bound
    lines = [(a, b - a) for a, b in zip(one, two, strict=True)]
    par = base.parallel
    # a chunked loss's chunk stops growing with the batch (Liger's grows slower than it): no line
    exact = setup.loss in (LossImpl.CHUNKED, LossImpl.LIGER)
    out = []
    for b in batches:
        peak = 0 if exact else max(a + d * (b - 1) for a, d in lines)
        if exact or abs(peak - budget) <= BOUNDARY:
            peak = training_peak(spec, replace(base, batch=b))
            count.estimates += 1
        layout = Layout(
            tp=par.tp, pp=par.pp, dp=par.dp, zero=par.zero, recompute=base.recompute, offload=par.offload, batch=b,
            grad_accum=base.grad_accum, peak=peak, fits=peak <= budget, fsdp=str(par.fsdp),
            throughput=throughput_proxy(par.tp, par.pp, par.zero, base.recompute, base.grad_accum, par.offload, b,
                                        str(par.fsdp)),
        )  # fmt: skip
        out.append(layout)
        if not layout.fits:
            break
    return out

"""The parallel layout a user asks for, and the shards it implies (derived once, read everywhere).

``ParallelConfig`` holds the user's numbers and checks the rules that need no model; ``Sharding`` is what
ZeRO/FSDP make of them: the stage and the divisor of each model state. The model-dependent checks and the
pipeline's stage split live in ``estimate/train/layout.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.workload.checks import boolean, coerce, positive, show
from vramwise.workload.options import FsdpMode, Offload

# The ZeRO stage each FSDP mode matches: what it partitions (1 optimizer states, 2 + gradients, 3 + weights).
_FSDP_STAGE = {FsdpMode.NONE: 0, FsdpMode.GRAD_OP: 2, FsdpMode.FULL: 3, FsdpMode.HYBRID: 3}


@dataclass(frozen=True, kw_only=True)
class Sharding:
    """Divisor of each model state under ZeRO (DeepSpeed stages) or FSDP (full = 3, grad-op = 2, hybrid = 3)."""

    stage: int  # 0: replicated (DDP); 1-3 as ZeRO's stages
    group: int  # GPUs the states are partitioned over
    optimizer: int
    gradients: int
    weights: int


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """Data, ZeRO/FSDP, tensor, sequence, pipeline, context and expert parallelism of one training job."""

    dp: int = 1
    zero: int = 0
    fsdp: FsdpMode = FsdpMode.NONE
    fsdp_shard: int | None = None  # hybrid shard: GPUs in a shard group (default: dp)
    offload: Offload = Offload.NONE
    tp: int = 1
    sp: bool = False
    pp: int = 1
    interleave: int = 1  # virtual pipeline stages per rank
    cp: int = 1
    ep: int = 1
    reduce_bucket: int = 500_000_000  # DeepSpeed reduce_bucket_size (elements)
    prefetch_bucket: int = 50_000_000  # DeepSpeed stage3_prefetch_bucket_size (elements)
    # DeepSpeed overlap_comm; None: its default, on at stage 3 only (deepspeed/runtime/zero/config.py
    # overlap_comm_valid). At stages 1-2 it adds a second reduce bucket (stage_1_and_2.py backward: buf_1).
    overlap_comm: bool | None = None
    # FSDP: the embeddings and the head are FSDP units of their own, not the root's (torchtune's
    # custom_sharded_layers ['tok_embeddings', 'output']): resharded after forward, reduce-scattered on their own
    fsdp_outer_units: bool = False
    # torchtitan: FSDP shards over the dp_shard x cp mesh (distributed/parallel_dims.py ParallelDims builds the
    # "dp_shard_cp" mesh; parallelize_llama.py applies fully_shard on it): context-parallel ranks hold shards too,
    # so FSDP runs even at dp 1 when cp > 1
    fsdp_over_cp: bool = False

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp", "interleave", "cp", "ep", "reduce_bucket", "prefetch_bucket"):
            positive(name, getattr(self, name))
        coerce(self, "fsdp", FsdpMode)
        coerce(self, "offload", Offload)
        if isinstance(self.zero, bool) or not isinstance(self.zero, int) or self.zero not in (0, 1, 2, 3):
            raise InvalidWorkloadError(
                f"zero must be 0, 1, 2 or 3, got {show(self.zero)}", field="zero", allowed="0, 1, 2 or 3"
            )
        boolean("sp", self.sp)
        if self.overlap_comm is not None:
            boolean("overlap_comm", self.overlap_comm)
        # without FSDP full it changes nothing, said in a note (training.py): a preset sets it, and fit's searches
        # then vary the layout
        boolean("fsdp_outer_units", self.fsdp_outer_units)
        boolean("fsdp_over_cp", self.fsdp_over_cp)
        self._check()

    def _check(self) -> None:
        if self.zero and self.fsdp != FsdpMode.NONE:
            raise InvalidLayoutError("zero and fsdp both shard the model states; choose one (zero=0 or fsdp=none)")
        if (self.zero or self.fsdp != FsdpMode.NONE) and self.dp == 1 and self.fsdp_cp == 1:
            what = f"zero={self.zero}" if self.zero else f"fsdp={self.fsdp}"
            over_cp = " (or cp >= 2 with fsdp_over_cp, torchtitan's mesh)" if self.fsdp != FsdpMode.NONE else ""
            raise InvalidLayoutError(f"{what} shards over data-parallel GPUs: dp must be >= 2, got dp=1{over_cp}")
        if self.fsdp_shard is not None:
            positive("fsdp_shard", self.fsdp_shard)
            if self.fsdp != FsdpMode.HYBRID or self.dp % self.fsdp_shard:
                raise InvalidLayoutError(
                    f"fsdp_shard ({self.fsdp_shard}) applies to fsdp=hybrid and must divide dp ({self.dp})"
                )
        if self.offload != Offload.NONE and not (self.zero or self.fsdp in (FsdpMode.FULL, FsdpMode.HYBRID)):
            raise InvalidLayoutError("offload needs zero (1-3) or fsdp=full/hybrid to manage the offloaded states")
        if self.offload == Offload.PARAMS and self.zero not in (0, 3):
            raise InvalidLayoutError("offload=params needs zero=3 (only stage 3 partitions the parameters)")
        if self.sp and self.tp == 1:
            raise InvalidLayoutError("sp (sequence parallel) splits the tensor-parallel group: it needs tp >= 2")
        if self.interleave > 1 and self.pp == 1:
            raise InvalidLayoutError("interleave (virtual pipeline stages) needs pp >= 2")
        if self.dp % self.ep:
            raise InvalidLayoutError(f"ep ({self.ep}) must divide dp ({self.dp}): experts are spread over DP ranks")

    @property
    def fsdp_cp(self) -> int:
        """The context-parallel factor of FSDP's shard group: cp under fsdp_over_cp (torchtitan), else 1."""
        return self.cp if self.fsdp_over_cp and self.fsdp != FsdpMode.NONE else 1

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @functools.cached_property
    def sharding(self) -> Sharding:
        """The shards ZeRO/FSDP make of this layout, derived once per layout."""
        n = (self.fsdp_shard or self.dp if self.fsdp == FsdpMode.HYBRID else self.dp) * self.fsdp_cp
        stage = self.zero or _FSDP_STAGE[self.fsdp]
        return Sharding(
            stage=stage,
            group=n,
            optimizer=n if stage >= 1 else 1,
            gradients=n if stage >= 2 else 1,
            weights=n if stage >= 3 else 1,
        )

"""How a training job's GPUs communicate: what sizes NCCL's buffers and DeepSpeed ZeRO-3's gathered parameters.

Defaults are the frameworks' own: NCCL's environment defaults (estimate/nccl.py), DeepSpeed's
``stage3_max_live_parameters`` 1e9, ``stage3_param_persistence_threshold`` 1e5 and ``stage3_max_reuse_distance``
1e9 (deepspeed/runtime/zero/config.py
``DeepSpeedZeroConfig``: ``max_live_parameters`` and ``param_persistence_threshold``, DeepSpeed v0.16.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.workload.checks import boolean, coerce, non_negative, positive
from vramwise.workload.options import Interconnect


@dataclass(frozen=True, kw_only=True)
class CommsConfig:
    """The interconnect, whether NCCL's device buffers are counted, and DeepSpeed ZeRO-3's live-parameter knobs."""

    interconnect: Interconnect = Interconnect.AUTO
    nccl_buffers: bool = True  # False: leave NCCL's device buffers out (what a traced step on a CPU sees)
    max_live_params: int = 1_000_000_000  # DeepSpeed stage3_max_live_parameters (elements)
    param_persistence_threshold: int = 100_000  # DeepSpeed stage3_param_persistence_threshold (elements)
    max_reuse_distance: int = 1_000_000_000  # DeepSpeed stage3_max_reuse_distance (elements)

    def __post_init__(self) -> None:
        coerce(self, "interconnect", Interconnect)
        boolean("nccl_buffers", self.nccl_buffers)
        positive("max_live_params", self.max_live_params)
        non_negative("param_persistence_threshold", self.param_persistence_threshold)
        non_negative("max_reuse_distance", self.max_reuse_distance)

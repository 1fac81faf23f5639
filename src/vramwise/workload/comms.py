"""How a training job's GPUs communicate: what sizes NCCL's buffers and DeepSpeed ZeRO-3's gathered parameters.

Defaults are the frameworks' own: NCCL's environment defaults (estimate/nccl.py), DeepSpeed's
``stage3_max_live_parameters`` 1e9, ``stage3_param_persistence_threshold`` 1e5 and ``stage3_max_reuse_distance``
1e9 (deepspeed/runtime/zero/config.py
``DeepSpeedZeroConfig``: ``max_live_parameters`` and ``param_persistence_threshold``, DeepSpeed v0.16.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError
from vramwise.workload.checks import boolean, coerce, non_negative, positive, show
from vramwise.workload.options import Interconnect

# The NCCL environment variables that size its device buffers (estimate/nccl.py NcclEnv reads them)
NCCL_VARIABLES = (
    "NCCL_BUFFSIZE",
    "NCCL_LL_BUFFSIZE",
    "NCCL_LL128_BUFFSIZE",
    "NCCL_MIN_NCHANNELS",
    "NCCL_MAX_NCHANNELS",
    "NCCL_NVLS_ENABLE",
)
_NCCL_ALLOWED = "comma-separated VAR=N with VAR one of " + ", ".join(NCCL_VARIABLES) + " and N a non-negative integer"


def nccl_environment(text: str) -> dict[str, str]:
    """``NCCL_BUFFSIZE=1048576,NCCL_NVLS_ENABLE=0`` as a mapping; one clear error for anything else."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        var, sep, value = item.partition("=")
        var, value = var.strip(), value.strip()
        if not sep or var not in NCCL_VARIABLES or not value.isdigit():
            message = f"nccl_env: {show(item)} is not VAR=N; allowed: {_NCCL_ALLOWED}"
            raise InvalidWorkloadError(message, field="nccl_env", allowed=_NCCL_ALLOWED)
        out[var] = value
    return out


@dataclass(frozen=True, kw_only=True)
class CommsConfig:
    """The interconnect, whether NCCL's device buffers are counted, and DeepSpeed ZeRO-3's live-parameter knobs."""

    interconnect: Interconnect = Interconnect.AUTO
    nccl_buffers: bool = True  # False: leave NCCL's device buffers out (what a traced step on a CPU sees)
    max_live_params: int = 1_000_000_000  # DeepSpeed stage3_max_live_parameters (elements)
    param_persistence_threshold: int = 100_000  # DeepSpeed stage3_param_persistence_threshold (elements)
    max_reuse_distance: int = 1_000_000_000  # DeepSpeed stage3_max_reuse_distance (elements)
    nccl_env: str = ""  # NCCL's environment as the job sets it, e.g. "NCCL_BUFFSIZE=1048576,NCCL_NVLS_ENABLE=0"

    def __post_init__(self) -> None:
        coerce(self, "interconnect", Interconnect)
        boolean("nccl_buffers", self.nccl_buffers)
        positive("max_live_params", self.max_live_params)
        non_negative("param_persistence_threshold", self.param_persistence_threshold)
        non_negative("max_reuse_distance", self.max_reuse_distance)
        if not isinstance(self.nccl_env, str):
            raise InvalidWorkloadError(
                f"nccl_env must be text, got {show(self.nccl_env)}", field="nccl_env", allowed=_NCCL_ALLOWED
            )
        nccl_environment(self.nccl_env)

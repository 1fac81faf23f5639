"""``--engine``: which engine's memory plan answers ``vramwise infer``, and what it needs from the request.

``engine_plan`` dispatches on ``setup.engine`` through ``PLANS`` (engine -> "module:function", imported only
when that engine is asked for, so a plain ``vramwise infer`` loads none of them). An engine whose module has not
landed yet is refused in one line. Each engine module appends one line to ``PLANS``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vramwise.errors import InapplicableOptionError, InvalidWorkloadError
from vramwise.report.verdict import Verdict
from vramwise.workload.engines import Engine

if TYPE_CHECKING:
    from vramwise.catalog import Gpu
    from vramwise.engines.result import EngineEstimate
    from vramwise.spec.model import ModelSpec
    from vramwise.workload import InferSetup

# engine -> "module:function" of its plan: f(spec, setup, gpu) -> EngineEstimate. One line per engine.
PLANS: dict[Engine, str] = {
    Engine.VLLM: "vramwise.engines.vllm:vllm_plan",
    Engine.LLAMA_CPP: "vramwise.engines.llamacpp:llamacpp_plan",
}
# Engines that place the model over the counted GPUs themselves (llama.cpp's layer split, not tensor parallelism):
# their plan also takes the --gpu count, f(spec, setup, gpu, count).
OVER_GPUS: frozenset[Engine] = frozenset({Engine.LLAMA_CPP})


def engine_plan(spec: ModelSpec, setup: InferSetup, gpu: Gpu, count: int = 1) -> EngineEstimate:
    """The memory plan of ``setup.engine`` for this model on one GPU of this kind (one tp/pp rank); an engine in
    ``OVER_GPUS`` plans all ``count`` GPUs and shows the fullest."""
    target = PLANS.get(setup.engine)
    if target is None:
        built = ", ".join(["hf", *PLANS])
        raise InvalidWorkloadError(
            f"engine {setup.engine}'s memory plan is not built yet; built: {built}", field="engine", allowed=built
        )
    module, function = target.split(":")
    plan = getattr(importlib.import_module(module), function)
    result: EngineEstimate = plan(spec, setup, gpu, count) if setup.engine in OVER_GPUS else plan(spec, setup, gpu)
    return result


def engine_verdict(plan: EngineEstimate, gpu: Gpu, count: int = 1) -> Verdict:
    """The verdict of an engine's plan: its peak on the GPU, and the engine's own refusal to start."""
    return Verdict(gpu=gpu, peak_bytes=plan.estimate.peak_bytes, count=count, refusal=plan.refusal)


def hf_only(setup: InferSetup, command: str) -> None:
    """fit, plot and verify model transformers (hf): a serving engine's plan is `vramwise infer --engine`'s."""
    if setup.engine != Engine.HF:
        raise InapplicableOptionError(
            f"--engine {setup.engine} applies to `vramwise infer`; {command} models transformers (--engine hf)",
            field="engine",
        )

"""``--engine``: which engine's memory plan answers ``vramwise infer``, and what it needs from the request.

``engine_plan`` dispatches on ``setup.engine`` through ``PLANS`` (engine -> "module:function", imported only
when that engine is asked for, so a plain ``vramwise infer`` loads none of them). An engine whose module has not
landed yet is refused in one line. Each engine module appends one line to ``PLANS``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vramwise.errors import InapplicableOptionError, InvalidWorkloadError, shown
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
    Engine.SGLANG: "vramwise.engines.sglang:sglang_plan",
    Engine.HF: "vramwise.engines.hf:hf_plan",  # with --device-map; plain hf is the inference estimate
    Engine.LLAMA_CPP: "vramwise.engines.llamacpp:llamacpp_plan",
}
# Plans that need how many GPUs there are (accelerate spreads layers over them; SGLang checks tp against them;
# llama.cpp splits its layers over them, -sm layer).
_COUNTED = (Engine.SGLANG, Engine.HF, Engine.LLAMA_CPP)


def engine_plan(spec: ModelSpec, setup: InferSetup, gpu: Gpu, count: int = 1) -> EngineEstimate:
    """The memory plan of ``setup.engine`` for this model on one GPU of this kind (one tp/pp rank)."""
    target = PLANS.get(setup.engine)
    if target is None:
        built = ", ".join(["hf", *PLANS])
        raise InvalidWorkloadError(
            f"engine {setup.engine}'s memory plan is not built yet; built: {built}", field="engine", allowed=built
        )
    _refuse_encoder(spec, setup)
    module, function = target.split(":")
    plan = getattr(importlib.import_module(module), function)
    result: EngineEstimate = plan(spec, setup, gpu, count) if setup.engine in _COUNTED else plan(spec, setup, gpu)
    return result


def _refuse_encoder(spec: ModelSpec, setup: InferSetup) -> None:
    """A serving engine's plan is a KV pool for generation; an encoder (BERT) keeps none, so it is refused in one
    line. vLLM does run BERT, as a pooling model with no KV cache (vllm/model_executor/models/bert.py at 002b4cf:
    BertModel.is_pooling_model, BertSelfAttention's Attention(attn_type=AttentionType.ENCODER_ONLY)), but that
    runner's memory is not modelled here; transformers' own forward (--engine hf, --device-map) is."""
    if setup.engine != Engine.HF and not spec.traits.causal_kv_cache:
        raise InvalidWorkloadError(
            f"--engine {setup.engine}: {shown(spec.name)} is an encoder (no KV cache, no generation); serving it "
            "(vLLM's pooling runner) is not modelled: use --engine hf",
            field="engine",
            allowed="hf",
        )


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
    if setup.hf.device_map is not None:
        raise InapplicableOptionError(
            f"--device-map applies to `vramwise infer`; {command} models the whole model on each GPU",
            field="device_map",
        )

"""The JSON contract (schema ``vramwise/estimate``, version 1; see docs/json-schema.md). Bytes are ints."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from vramwise.estimate.serving import Capacity
from vramwise.estimate.term import Estimate
from vramwise.report.verdict import Verdict
from vramwise.spec.load import Model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import active_params, total_params
from vramwise.workload import setup_to_flat

if TYPE_CHECKING:  # a type here only: the hf path never builds an engine plan
    from vramwise.engines.result import EngineEstimate

if TYPE_CHECKING:
    from vramwise.workload import InferSetup, TrainSetup

SCHEMA = "vramwise/estimate"
VERSION = 1


def _model(model: Model) -> dict[str, Any]:
    if isinstance(model, ModelSpec):
        out: dict[str, Any] = {
            "name": model.name,
            "source": model.source,
            "model_type": model.model_type,
            "params": total_params(model),
            "active_params": active_params(model),
        }
        if model.checkpoint is not None:  # only when headers were read, so schema v1's documents stay as they were
            ckpt = model.checkpoint
            out["checkpoint"] = {
                "source": ckpt.source,
                "files": ckpt.files,
                "bytes": ckpt.total_bytes,
                "categories": {c.category: c.bytes for c in ckpt.categories},
            }
        return out
    return {
        "name": model.name,
        "source": "bare size",
        "model_type": None,
        "params": model.params,
        "active_params": None,
    }


def to_dict(
    estimate: Estimate,
    *,
    kind: str,
    model: Model,
    setup: InferSetup | TrainSetup,
    verdict: Verdict | None = None,
    capacity: Capacity | None = None,
    engine: EngineEstimate | None = None,
) -> dict[str, Any]:
    peak = estimate.peak_phase
    terms = [{**asdict(t), "phase": "persistent"} for t in estimate.persistent]
    if peak:
        terms += [{**asdict(t), "phase": peak.name} for t in peak.transient]
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "version": VERSION,
        "kind": kind,
        "mode": str(setup.mode),
        "model": _model(model),
        "setup": setup_to_flat(setup),
        "terms": terms,
        "peak": {"bytes": estimate.peak_bytes, "phase": peak.name if peak else None},
        "phases": [{"name": p.name, "bytes": estimate.phase_total(p)} for p in estimate.phases],
        "host": [asdict(t) for t in estimate.host],
        "missing": list(estimate.missing),
        "notes": list(estimate.notes),
        "gpu": None
        if verdict is None
        else {
            "name": verdict.gpu.name,
            "label": verdict.gpu.label,
            "memory_bytes": verdict.gpu.memory_bytes,
            "smi_bytes": verdict.gpu.smi_bytes,
            "count": verdict.count,
            "bf16": verdict.gpu.bf16,
            "confirmed": verdict.gpu.confirmed,
            "source": verdict.gpu.source,
            "fits": verdict.fits,
            "headroom_bytes": verdict.headroom_bytes,
        },
        "capacity": _capacity(capacity, engine),
    }
    if verdict is not None and verdict.margin:  # --margin: only then, so that documents without one stay as they were
        doc["gpu"] |= {"margin": verdict.margin, "budget_bytes": verdict.budget_bytes}
    if engine is not None:  # only then, so that transformers' (hf) documents stay as they were
        doc["engine"] = _engine(engine)
        if doc["gpu"] is not None:
            doc["gpu"]["reason"] = verdict.reason if verdict and not verdict.fits else None
    return doc


def _capacity(capacity: Capacity | None, engine: EngineEstimate | None) -> dict[str, Any] | None:
    """The serving capacity: a serving engine's plan's pool (the same numbers its table line shows)."""
    if engine is not None and engine.per_gpu and engine.kv_pool is None:
        return None  # hf device_map: no pool, no capacity (engine.per_gpu_peak_bytes says what each GPU holds)
    if engine is not None:
        pool = engine.kv_pool
        return {
            "kv_budget_bytes": pool.bytes if pool else 0,
            "kv_budget_formula": pool.formula if pool else engine.refusal_message,
            "kv_bytes_per_token": engine.kv_bytes_per_token,
            "kv_tokens": engine.kv_tokens or 0,
            "sequence_tokens": engine.sequence_tokens,
            "max_sequences": engine.max_sequences or 0,
        }
    if capacity is None:
        return None
    return {
        "kv_budget_bytes": capacity.budget.bytes,
        "kv_budget_formula": capacity.budget.formula,
        "kv_bytes_per_token": capacity.kv_bytes_per_token,
        "kv_tokens": capacity.kv_tokens,
        "sequence_tokens": capacity.sequence_tokens,
        "max_sequences": capacity.max_sequences,
    }


def _engine(engine: EngineEstimate) -> dict[str, Any]:
    per_gpu = {"per_gpu_peak_bytes": [e.peak_bytes for e in engine.per_gpu]} if engine.per_gpu else {}
    return per_gpu | {
        "name": engine.engine,
        "version": engine.version,
        "budget": engine.budget,
        "kv_pool_bytes": engine.kv_pool.bytes if engine.kv_pool else None,
        "kv_tokens": engine.kv_tokens,
        "max_sequences": engine.max_sequences,
        "sequence_tokens": engine.sequence_tokens,
        "context_len": engine.context_len,
        "concurrency": engine.concurrency,
        "max_model_len_fit": engine.max_context,
        "refusal": engine.refusal,
        "refusal_message": engine.refusal_message,
    }


def render_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False)

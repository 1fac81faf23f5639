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
) -> dict[str, Any]:
    peak = estimate.peak_phase
    terms = [{**asdict(t), "phase": "persistent"} for t in estimate.persistent]
    if peak:
        terms += [{**asdict(t), "phase": peak.name} for t in peak.transient]
    return {
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
        "capacity": None
        if capacity is None
        else {
            "kv_budget_bytes": capacity.budget.bytes,
            "kv_budget_formula": capacity.budget.formula,
            "kv_bytes_per_token": capacity.kv_bytes_per_token,
            "kv_tokens": capacity.kv_tokens,
            "sequence_tokens": capacity.sequence_tokens,
            "max_sequences": capacity.max_sequences,
        },
    }


def render_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False)

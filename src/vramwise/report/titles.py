"""Titles: the model label and the first line of every table, built from the model and the setup."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramwise.spec.load import BareModel, Model
from vramwise.spec.params import total_params
from vramwise.workload import InferSetup

if TYPE_CHECKING:
    from vramwise.engines.result import EngineEstimate
    from vramwise.workload import TrainSetup


def _file_source(model: Model) -> str:
    """The config file the spec was read from (``x/config.json``); "" for a catalog model or a bare size.

    MODEL may name a local file or a catalog model (spec.load's rule), so the title says which one was read; the
    catalog's titles stay as they were (the README and the goldens show them)."""
    source = getattr(model, "source", "")
    if not source or source.startswith("catalog:"):
        return ""
    return source if source.isprintable() else ascii(source)[1:-1]


def model_label(model: Model) -> str:
    """``llama-2-7b [llama, 6,738,415,616 parameters]``, a file's ``x [llama, ..., from x/config.json]``, or a bare
    size's count."""
    if isinstance(model, BareModel):
        return f"{model.name} ({model.params:,} parameters, bare size)"
    source = _file_source(model)
    origin = f", from {source}" if source else ""
    ckpt = model.checkpoint
    if ckpt is not None:  # the checkpoint's own bytes were read: say from how many files, and their size
        files = f"{ckpt.files} file" + ("" if ckpt.files == 1 else "s")
        origin += f"; {ckpt.kind}: {files}, {ckpt.total_bytes / 2**30:.2f} GiB"
    return f"{model.name} [{model.model_type}, {total_params(model):,} parameters{origin}]"


def infer_title(model: Model, setup: InferSetup, engine: EngineEstimate | None = None) -> str:
    """The infer title; a serving engine's plan names the engine and the release its source was read at."""
    if engine is not None:
        layout = [f"{k}={v}" for k, v in (("tp", setup.tp), ("pp", setup.vllm.pipeline_parallel_size)) if v > 1]
        per = f", per GPU of {' '.join(layout)}" if layout else ""
        return (
            f"vramwise infer {model_label(model)}: engine {engine.engine} {engine.version} (its memory plan), "
            f"{_served(engine)}sequences of {setup.tokens} tokens{per}"
        )
    tp = f", per GPU of tp={setup.tp}" if setup.tp > 1 else ""
    return (
        f"vramwise infer {model_label(model)}: batch {setup.batch}, context {setup.context}, "
        f"new tokens {setup.new_tokens}{tp}, {setup.mode} mode"
    )


# the length each engine is started with, as the engine names it (the plan's context_len)
_SERVED = {"vllm": "max_model_len", "sglang": "context_len", "llama.cpp": "n_ctx per sequence (-c / -np)"}


def _served(engine: EngineEstimate) -> str:
    """The served length the plan used (vLLM refuses when it exceeds the KV pool), before the request's length."""
    name = _SERVED.get(engine.engine)
    return f"{name} {engine.context_len:,}, " if name and engine.context_len else ""


def _train_what(model: Model, setup: TrainSetup) -> str:
    par, peft = setup.parallel, setup.peft
    layout = [f"{k}={v}" for k, v in (("dp", par.dp), ("tp", par.tp), ("pp", par.pp), ("cp", par.cp)) if v > 1]
    if par.zero:
        layout.append(f"zero={par.zero}")
    if par.fsdp != "none":
        layout.append(f"fsdp={par.fsdp}")
    adapters = f", {peft.method} r={peft.lora_r}" if peft.adapters else ""
    mode = f"textbook mode (seed {setup.textbook.seed})" if setup.mode == "textbook" else "accurate mode"
    return (
        f"{model_label(model)}: micro-batch {setup.batch} x {setup.seq} tokens, {setup.precision.recipe}, "
        f"{setup.optimizer.name}{adapters}, recompute {setup.recompute}"
        + (f", per GPU of {' '.join(layout)}" if layout else "")
        + f", {mode}"
    )


def train_title(model: Model, setup: TrainSetup, stage: int | None = None) -> str:
    """The training title; ``stage`` names the pipeline stage shown (only when there is a pipeline)."""
    title = f"vramwise train {_train_what(model, setup)}"
    return title + (f", stage {stage} of {setup.parallel.pp}" if stage is not None and setup.parallel.pp > 1 else "")


def verify_title(model: Model, setup: InferSetup | TrainSetup) -> str:
    if isinstance(setup, InferSetup):
        source = _file_source(model)
        origin = f" (from {source})" if source else ""
        return (
            f"vramwise verify {model.name}{origin}: inference, batch {setup.batch}, context {setup.context}, "
            f"new {setup.new_tokens}"
        )
    return f"vramwise verify {_train_what(model, setup)}"


def plot_labels(model_name: str, infer: bool, vs: str) -> tuple[str, str]:
    """(x-axis label, chart title) of a sweep."""
    xlabel = "sequence length (tokens)" if vs == "seq" else "batch (sequences)"
    kind = "inference" if infer else "training"
    return xlabel, f"{model_name}: {kind} memory per GPU vs {vs}"

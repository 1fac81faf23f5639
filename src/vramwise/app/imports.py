"""``--from FILE``: a framework's config read into the options (``configs/``), under the command line's own.

The command line wins over the file, key by key; the notes say what the file set, what it left out and what the
command line overrode. A model id the file names that is a catalog entry's ``hf_id`` is that catalog model (no
hub request for a model vramwise carries).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vramwise.errors import InapplicableOptionError, InvalidWorkloadError, UnknownModelError


@dataclass(frozen=True, kw_only=True)
class Sourced:
    model: str  # MODEL as the command line gave it, else as the file names it
    options: dict[str, Any]  # the file's options under the command line's
    infer: bool  # the file describes inference (a serving command line, a Modelfile)
    notes: tuple[str, ...] = ()  # what was read, ignored and overridden


def with_source(
    command: str, source: str | None, model: str | None, options: Mapping[str, Any], infer: bool = False
) -> Sourced:
    """The model and options of a command: the command line's, over what ``source`` (a file or a pasted command
    line) sets. Without ``source``, MODEL is required."""
    if source is None:
        if model is None:
            raise UnknownModelError(
                "MODEL is needed: a catalog name, a config.json, a size, or --from FILE that names one", field="model"
            )
        return Sourced(model=model, options=dict(options), infer=infer)
    from vramwise.configs import load

    imported = load(source)
    label = source if len(source) <= 48 else source[:47] + "…"  # a pasted command line, cut for the notes
    wants_infer = command == "infer" or infer
    if command == "train" or (command in ("fit", "verify") and not infer and imported.command == "train"):
        wants_infer = False
    if imported.command == "train" and wants_infer:
        raise InapplicableOptionError(
            f"--from {source} is a training config ({imported.kind}); use train, or fit and verify without --infer",
            field="from",
        )
    if imported.command == "infer" and command == "train":
        raise InapplicableOptionError(
            f"--from {source} is a serving config ({imported.kind}); use infer or fit --infer", field="from"
        )
    named = _catalog_name(imported.model)
    chosen = model or named
    if chosen is None:
        why = next((n for n in imported.notes if n.startswith("FROM ")), "give MODEL")  # an Ollama name not mapped
        raise UnknownModelError(f"--from {source} names no model ({imported.kind}): {why}", field="model")
    overridden = [k for k in options if k in imported.options and options[k] != imported.options[k]]
    notes = list(imported.summary(label))
    if overridden:
        notes.append(f"--from {label}: the command line overrides {', '.join(overridden)}")
    if model and named and model != named:
        notes.append(f"--from {label}: MODEL {model} given; the file names {imported.model}")
    elif named and named != imported.model:
        notes.append(f"--from {label}: {imported.model} is the catalog's {named}")
    _check_names(imported.options, label)
    merged = {**imported.options, **options}
    notes += _hidden_auto(imported.hidden_auto, chosen, merged, label)
    return Sourced(model=chosen, options=merged, infer=imported.command == "infer", notes=tuple(notes))


def _hidden_auto(names: tuple[str, ...], model: str, merged: dict[str, Any], label: str) -> list[str]:
    """DeepSpeed "auto" bucket sizes as the HF Trainer fills them from the model's hidden size (transformers 5.24.0
    integrations/deepspeed.py HfTrainerDeepSpeedConfig.trainer_config_finalize): reduce_bucket_size hidden²,
    stage3_prefetch_bucket_size int(0.9 hidden²), stage3_param_persistence_threshold 10 hidden."""
    todo = [n for n in names if merged.get(n) is None]
    if not todo:
        return []
    from vramwise.configs.deepspeed import HIDDEN_AUTO
    from vramwise.spec.load import resolve_model
    from vramwise.spec.model import ModelSpec

    spec = resolve_model(model)
    if not isinstance(spec, ModelSpec):
        return [f"--from {label}: \"auto\" {', '.join(todo)} needs the model's hidden size; DeepSpeed's defaults used"]
    h = spec.hidden_size
    for name in todo:
        coef, power = HIDDEN_AUTO[name]
        merged[name] = int(coef * h**power)
    filled = ", ".join(f"{n}={merged[n]:,}" for n in todo)
    return [f"--from {label}: \"auto\" from hidden size {h:,} (the HF Trainer's rule): {filled}"]


def _check_names(options: Mapping[str, Any], label: str) -> None:
    """Every option an importer sets is one the setups take: a name they do not would be dropped in silence."""
    from vramwise.app.setups import INFER_FIELDS, TRAIN_FIELDS

    unknown = sorted(set(options) - set(TRAIN_FIELDS) - set(INFER_FIELDS))
    if unknown:
        raise InvalidWorkloadError(f"--from {label}: sets {', '.join(unknown)}, which vramwise cannot apply",
                                   field="from")


def _catalog_name(model: str | None) -> str | None:
    """A hub id that a catalog entry carries, as that entry's name; anything else as given."""
    if model is None:
        return None
    from vramwise.catalog import models

    for entry in models().values():
        if entry.hf_id.lower() == model.lower():
            return entry.name
    return model

"""The catalogs as rows: models with their parameter counts, GPUs with their memory, weight formats."""

from __future__ import annotations

from vramwise.catalog import Gpu, gpus, models
from vramwise.report.listings import FormatRow, ModelRow


def list_models() -> tuple[ModelRow, ...]:
    from vramwise.spec.load import catalog_spec
    from vramwise.spec.params import active_params, total_params

    rows = []
    for name, entry in models().items():
        spec = catalog_spec(name)
        rows.append(
            ModelRow(
                name=name,
                model_type=spec.model_type,
                params=total_params(spec),
                active_params=active_params(spec),
                hf_id=entry.hf_id,
            )
        )
    return tuple(rows)


def list_gpus() -> tuple[Gpu, ...]:
    return tuple(gpus().values())


def list_formats() -> tuple[FormatRow, ...]:
    """Every named format; GPTQ/AWQ take any bit width and group size (the renderer says how to spell them)."""
    from vramwise.formats import FORMATS

    return tuple(FormatRow(name=f.name, summary=f.summary) for f in FORMATS.values())

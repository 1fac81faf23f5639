"""``vramwise models``, ``gpus`` and ``formats``: the built-in catalogs."""

from __future__ import annotations

from typing import Any

from vramwise.app.listings import list_formats, list_gpus, list_models
from vramwise.report.listings import (
    formats_json,
    gpus_json,
    models_json,
    render_formats,
    render_gpus,
    render_models,
)


def run(command: str, values: dict[str, Any]) -> int:
    if command == "models":
        rows = list_models()
        print(models_json(rows) if values["json"] else render_models(rows))
    elif command == "gpus":
        print(gpus_json(list_gpus()) if values["json"] else render_gpus(list_gpus(), values["units"]))
    else:
        print(formats_json(list_formats()) if values["json"] else render_formats(list_formats()))
    return 0

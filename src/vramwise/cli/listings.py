"""``vramwise models``, ``gpus`` and ``formats``: the built-in catalogs."""

from __future__ import annotations

from typing import Any

from vramwise.app.listings import list_formats, list_gpus, list_models
from vramwise.report.listings import models_json, render_formats, render_gpus, render_models


def run(command: str, values: dict[str, Any]) -> int:
    if command == "models":
        rows = list_models()
        print(models_json(rows) if values["json"] else render_models(rows))
    elif command == "gpus":
        print(render_gpus(list_gpus(), values["units"]))
    else:
        print(render_formats(list_formats()))
    return 0

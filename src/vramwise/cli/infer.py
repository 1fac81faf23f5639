"""``vramwise infer``: the memory of one inference setup, its verdict on a GPU, its serving capacity."""

from __future__ import annotations

from typing import Any

from vramwise.app.run import InferRequest, infer
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emitted
from vramwise.report.json_out import render_json, to_dict
from vramwise.report.table import render_table
from vramwise.report.titles import infer_title


def run(command: str, values: dict[str, Any]) -> int:
    req = InferRequest(
        model=values["model"],
        options=setup_values(values),
        gpu=values["gpu"],
        serve=bool(values["serve"]),
    )
    r = infer(req)
    if emitted(values, r.setup):
        return 0
    if values["json"]:
        doc = to_dict(
            r.estimate,
            kind="inference",
            model=r.model,
            setup=r.setup,
            verdict=r.verdict,
            capacity=r.capacity,
            engine=r.engine,
        )
        print(render_json(doc))
        return 0
    title = infer_title(r.model, r.setup, r.engine)
    print(
        render_table(
            r.estimate,
            title=title,
            unit=values["units"],
            explain=bool(values["explain"]),
            verdict=r.verdict,
            capacity=r.capacity,
            engine=r.engine,
        )
    )
    return 0

"""``vramwise train``: the memory of one training step per GPU, the worst pipeline stage or every stage."""

from __future__ import annotations

from typing import Any

from vramwise.app.run import TrainRequest, train
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emitted
from vramwise.report.json_out import render_json, to_dict
from vramwise.report.table import render_table
from vramwise.report.titles import train_title


def run(command: str, values: dict[str, Any]) -> int:
    req = TrainRequest(
        model=values["model"], options=setup_values(values), gpu=values["gpu"], per_stage=bool(values["per_stage"])
    )
    r = train(req)
    if emitted(values, r.setup):
        return 0
    if values["json"]:
        docs = [to_dict(s.estimate, kind="training", model=r.model, setup=r.setup, verdict=s.verdict) for s in r.stages]
        print(render_json({"stages": docs} if r.per_stage else docs[0]))
        return 0
    blocks = [
        render_table(
            s.estimate,
            title=train_title(r.model, r.setup, s.index),
            unit=values["units"],
            explain=bool(values["explain"]),
            verdict=s.verdict,
        )
        for s in r.stages
    ]
    print("\n\n".join(blocks))
    return 0

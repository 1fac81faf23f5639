"""``vramwise infer``: the memory of one inference setup, its verdict on a GPU, its serving capacity."""

from __future__ import annotations

from typing import Any

from vramwise.app.advice import advise_infer
from vramwise.app.documents import document_for, infer_request
from vramwise.app.ranges import check_range, infer_range
from vramwise.app.run import infer
from vramwise.cli import status
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emitted, source_json
from vramwise.report.advice_out import render_advice
from vramwise.report.json_out import render_json
from vramwise.report.range_out import high_fits, range_lines
from vramwise.report.table import render_table
from vramwise.report.titles import infer_title


def run(command: str, values: dict[str, Any]) -> int:
    req = infer_request(values, setup_values(values))
    asked = check_range(bool(values.get("range")), values.get("max_seq"), values.get("emit"))
    if values["json"] and not values.get("emit"):
        answered = document_for(command, values, setup_values(values), source_json(values))
        print(render_json(answered.doc))
        return status(answered.fits)
    r = infer(req)
    fits = r.verdict is None or r.verdict.fits
    rng = infer_range(req, r, values.get("max_seq")) if asked else None
    if emitted(values, r.setup):
        return status(fits)  # the config as asked; the exit status still says whether it fits --gpu
    advice = () if fits else advise_infer(req)
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
            after_verdict=range_lines(rng, r.verdict, values["units"], bool(values["explain"])) if rng else None,
        )
    )
    if not fits:
        print(render_advice(advice, values["units"]))
    return status(fits and (rng is None or high_fits(rng, r.verdict) is not False))

"""``vramwise infer``: the memory of one inference setup, its verdict on a GPU, its serving capacity."""

from __future__ import annotations

from typing import Any

from vramwise.app.advice import advise_infer
from vramwise.app.ranges import check_range, infer_range
from vramwise.app.run import InferRequest, infer
from vramwise.cli import status
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emitted, source_json
from vramwise.report.advice_out import advice_dict, render_advice
from vramwise.report.json_out import render_json, to_dict
from vramwise.report.range_out import high_fits, range_dict, range_lines
from vramwise.report.table import render_table
from vramwise.report.titles import infer_title


def run(command: str, values: dict[str, Any]) -> int:
    req = InferRequest(
        model=values["model"],
        options=setup_values(values),
        gpu=values["gpu"],
        serve=bool(values["serve"]),
        margin=values.get("margin") or 0.0,
    )
    asked = check_range(bool(values.get("range")), values.get("max_seq"), values.get("emit"))
    r = infer(req)
    fits = r.verdict is None or r.verdict.fits
    rng = infer_range(req, r, values.get("max_seq")) if asked else None
    if emitted(values, r.setup):
        return status(fits)  # the config as asked; the exit status still says whether it fits --gpu
    advice = () if fits else advise_infer(req)
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
        if not fits:
            doc["advice"] = advice_dict(advice)
        if (sourced := source_json(values)) is not None:
            doc["from"] = sourced
        if rng is not None:
            doc["range"] = range_dict(rng, r.verdict)
        print(render_json(doc))
        return status(fits and high_fits(rng, r.verdict) is not False if rng else fits)
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
    return status(fits and high_fits(rng, r.verdict) is not False if rng else fits)

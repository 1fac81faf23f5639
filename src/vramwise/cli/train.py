"""``vramwise train``: the memory of one training step per GPU, the worst pipeline stage or every stage."""

from __future__ import annotations

from typing import Any

from vramwise.app.advice import advise_train
from vramwise.app.ranges import check_range, train_range
from vramwise.app.run import TrainRequest, train
from vramwise.cli import status
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emitted, source_json
from vramwise.report.advice_out import advice_dict, render_advice
from vramwise.report.json_out import render_json, to_dict
from vramwise.report.range_out import high_fits, range_dict, range_lines
from vramwise.report.table import render_table
from vramwise.report.titles import train_title


def run(command: str, values: dict[str, Any]) -> int:
    req = TrainRequest(
        model=values["model"],
        options=setup_values(values),
        gpu=values["gpu"],
        per_stage=bool(values["per_stage"]),
        margin=values.get("margin") or 0.0,
    )
    asked = check_range(bool(values.get("range")), values.get("max_seq"), values.get("emit"))
    r = train(req)
    fits = all(s.verdict is None or s.verdict.fits for s in r.stages)
    rng = train_range(req, r, values.get("max_seq")) if asked else None
    worst = max(r.stages, key=lambda s: s.estimate.peak_bytes).verdict
    fits_high = fits and (rng is None or high_fits(rng, worst) is not False)
    if emitted(values, r.setup):
        return status(fits)  # the config as asked; the exit status still says whether it fits --gpu
    advice = () if fits else advise_train(req)
    if values["json"]:
        docs = [to_dict(s.estimate, kind="training", model=r.model, setup=r.setup, verdict=s.verdict) for s in r.stages]
        doc: dict[str, Any] = {"stages": docs} if r.per_stage else docs[0]
        if not fits:
            doc["advice"] = advice_dict(advice)
        if (sourced := source_json(values)) is not None:
            doc["from"] = sourced
        if rng is not None:
            doc["range"] = range_dict(rng, worst)
        print(render_json(doc))
        return status(fits_high)
    blocks = [
        render_table(
            s.estimate,
            title=train_title(r.model, r.setup, s.index),
            unit=values["units"],
            explain=bool(values["explain"]),
            verdict=s.verdict,
            after_verdict=range_lines(rng, worst, values["units"], bool(values["explain"]))
            if rng and s.verdict is worst
            else None,
        )
        for s in r.stages
    ]
    print("\n\n".join(blocks))
    if not fits:
        print(render_advice(advice, values["units"]))
    return status(fits_high)

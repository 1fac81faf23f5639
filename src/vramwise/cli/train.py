"""``vramwise train``: the memory of one training step per GPU, the worst pipeline stage or every stage."""

from __future__ import annotations

from typing import Any

from vramwise.app.advice import advise_train
from vramwise.app.documents import document_for, train_request
from vramwise.app.ranges import check_range, train_range
from vramwise.app.run import train
from vramwise.cli import status
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emitted, source_json
from vramwise.report.advice_out import render_advice
from vramwise.report.json_out import render_json
from vramwise.report.range_out import high_fits, range_lines
from vramwise.report.table import render_table
from vramwise.report.titles import train_title


def run(command: str, values: dict[str, Any]) -> int:
    req = train_request(values, setup_values(values))
    asked = check_range(bool(values.get("range")), values.get("max_seq"), values.get("emit"))
    if values["json"] and not values.get("emit"):
        answered = document_for(command, values, setup_values(values), source_json(values))
        print(render_json(answered.doc))
        return status(answered.fits)
    r = train(req)
    fits = all(s.verdict is None or s.verdict.fits for s in r.stages)
    rng = train_range(req, r, values.get("max_seq")) if asked else None
    worst = max(r.stages, key=lambda s: s.estimate.peak_bytes).verdict
    fits_high = fits and (rng is None or high_fits(rng, worst) is not False)
    if emitted(values, r.setup):
        return status(fits)  # the config as asked; the exit status still says whether it fits --gpu
    advice = () if fits else advise_train(req)
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

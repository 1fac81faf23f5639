"""``vramwise fit``: the largest batch or context, the fewest GPUs, the best format, or the ranked layouts."""

from __future__ import annotations

from typing import Any

from vramwise.app.fitting import FitRequest, Question, fit
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emit_answer
from vramwise.report.fit_out import render_answer, render_formats, render_layouts


def _question(values: dict[str, Any]) -> Question:
    if values["min_gpus"]:
        return Question.MIN_GPUS
    if values["best_format"]:
        return Question.BEST_FORMAT
    if values["layouts"] is not None:
        return Question.LAYOUTS
    return Question.MAX


def run(command: str, values: dict[str, Any]) -> int:
    unit = values["units"]
    req = FitRequest(
        model=values["model"],
        gpu=values["gpu"],
        question=_question(values),
        target=values["max"],
        gpus=values["layouts"],
        infer=bool(values["infer"]),
        options=setup_values(values),
        top=values["top"],
        max_batch=values["max_batch"],
        unit=unit,
        serve=bool(values.get("serve")),
    )
    r = fit(req)
    if values.get("emit"):
        return emit_answer(values, req, r)
    if r.layouts is not None:
        print(
            render_layouts(
                r.layouts.fitting, r.layouts.rejected, r.gpu, int(r.gpus or 0), r.top, unit, notes=r.notes
            )
        )
        print(f"({r.layouts.candidates:,} layouts considered from {r.layouts.estimates:,} estimates)")
        return 0
    assert r.answer is not None  # every other question has an answer
    print(render_answer(r.answer, r.gpu, unit, count=r.count, notes=r.notes))
    if r.question is Question.BEST_FORMAT:
        print(render_formats(list(r.formats), unit))
    return 0

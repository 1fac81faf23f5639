"""``vramwise fit``: the largest batch or context, the fewest GPUs, the best format, or the ranked layouts.

Exit status 0 with an answer; 3 when nothing fits, with the single changes that would (app/advice.py).
"""

from __future__ import annotations

import sys
from typing import Any

from vramwise.app.documents import NO_RANGE, document_for, fewer_gpus, fit_request
from vramwise.app.fitting import FitRequest, Question, fit
from vramwise.app.ranges import check_range, fit_range
from vramwise.cli import DOES_NOT_FIT, FITS
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emit_answer, source_json
from vramwise.errors import DoesNotFitError
from vramwise.report.advice_out import FEWER, Suggestion, render_advice
from vramwise.report.fit_out import render_answer, render_formats, render_layouts
from vramwise.report.json_out import render_json
from vramwise.report.range_out import range_lines


def run(command: str, values: dict[str, Any]) -> int:
    unit = values["units"]
    req = fit_request(values, setup_values(values))
    asked = check_range(bool(values.get("range")), values.get("max_seq"), values.get("emit"))
    if values.get("json") and not values.get("emit"):
        answered = document_for(command, values, setup_values(values), source_json(values))
        print(render_json(answered.doc))
        return FITS if answered.fits else DOES_NOT_FIT
    try:
        r = fit(req)
    except DoesNotFitError as err:
        if asked:
            print(f"note: {NO_RANGE}", file=sys.stderr)
        return _miss(req, str(err))
    if values.get("emit"):
        return emit_answer(values, req, r)
    ranged = fit_range(req, r, values.get("max_seq")) if asked else None
    fewer = fewer_gpus(req, r)
    if r.layouts is not None:
        print(
            render_layouts(
                r.layouts.fitting, r.layouts.rejected, r.gpu, int(r.gpus or 0), r.top, unit, notes=r.notes,
                assumptions=r.assumptions, margin=r.margin,
            )
        )
        print(f"({r.layouts.candidates:,} layouts considered from {r.layouts.estimates:,} estimates)")
        return FITS
    assert r.answer is not None  # every other question has an answer
    print(render_answer(r.answer, r.gpu, unit, count=r.count, notes=r.notes, assumptions=r.assumptions,
                        margin=r.margin))
    if ranged is not None:
        rng, verdict, at = ranged
        print("\n".join([f"at the answer ({at}):", *range_lines(rng, verdict, unit)]))
    if r.question is Question.BEST_FORMAT:
        print(render_formats(list(r.formats), unit))
    if fewer:
        print(render_advice(fewer, unit, FEWER))
    return FITS


def _miss(req: FitRequest, reason: str) -> int:
    """Nothing fits: the reason, and the single changes that make the smallest setup fit (exit status 3)."""
    from vramwise.app.advice import advise_fit

    advice: tuple[Suggestion, ...] = advise_fit(req)
    print(f"DOES NOT FIT: {reason}")
    print(render_advice(advice, req.unit))
    return DOES_NOT_FIT

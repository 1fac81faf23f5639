"""``vramwise fit``: the largest batch or context, the fewest GPUs, the best format, or the ranked layouts.

Exit status 0 with an answer; 3 when nothing fits, with the single changes that would (app/advice.py).
"""

from __future__ import annotations

from typing import Any

from vramwise.app.fitting import FitRequest, FitResult, Question, fit
from vramwise.app.ranges import check_range, fit_range
from vramwise.cli import DOES_NOT_FIT, FITS
from vramwise.cli.options import setup_values
from vramwise.cli.sources import emit_answer, source_json
from vramwise.errors import DoesNotFitError
from vramwise.report.advice_out import FEWER, Suggestion, advice_dict, render_advice
from vramwise.report.fit_out import fit_dict, render_answer, render_formats, render_layouts
from vramwise.report.json_out import render_json
from vramwise.report.range_out import range_dict, range_lines


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
        margin=values.get("margin") or 0.0,
    )
    asked = check_range(bool(values.get("range")), values.get("max_seq"), values.get("emit"))
    try:
        r = fit(req)
    except DoesNotFitError as err:
        return _miss(req, str(err), bool(values.get("json")), source_json(values))
    if values.get("emit"):
        return emit_answer(values, req, r)
    ranged = fit_range(req, r, values.get("max_seq")) if asked else None
    fewer: tuple[Suggestion, ...] = ()
    if r.question is Question.MIN_GPUS and r.answer is not None and int(r.answer.value) > 1:
        from vramwise.app.advice import advise_min_gpus

        fewer = advise_min_gpus(req, int(r.answer.value))
    if values.get("json"):
        doc = _doc(req, r)
        if (sourced := source_json(values)) is not None:
            doc["from"] = sourced
        if r.question is Question.MIN_GPUS:
            doc["advice"] = advice_dict(fewer)
        if ranged is not None:
            rng, verdict, at = ranged
            doc["range"] = {**range_dict(rng, verdict), "at": at}
        print(render_json(doc))
        return FITS
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


def _name(req: FitRequest) -> str:
    """The question as JSON names it: "max batch", "max seq", "max context", "min_gpus", "best_format", "layouts"."""
    return f"max {req.target}" if req.question is Question.MAX else str(req.question)


def _doc(req: FitRequest, r: FitResult) -> dict[str, Any]:
    layouts = None
    if r.layouts is not None:
        shown = r.layouts.fitting[: r.top]
        layouts = (shown, r.layouts.rejected, r.layouts.candidates, r.layouts.estimates)
    return fit_dict(
        question=_name(req), model=req.model, gpu=r.gpu, count=r.count, margin=r.margin, answer=r.answer,
        formats=r.formats, layouts=layouts, assumptions=r.assumptions, notes=r.notes,
    )


def _miss(req: FitRequest, reason: str, as_json: bool, sourced: dict[str, Any] | None = None) -> int:
    """Nothing fits: the reason, and the single changes that make the smallest setup fit (exit status 3)."""
    from vramwise.app.advice import advise_fit
    from vramwise.catalog import parse_gpu

    advice: tuple[Suggestion, ...] = advise_fit(req)
    if as_json:
        choice = parse_gpu(req.gpu)
        doc = fit_dict(question=_name(req), model=req.model, gpu=choice.gpu, count=choice.count,
                       margin=req.margin, reason=reason)
        doc["advice"] = advice_dict(advice)
        if sourced is not None:
            doc["from"] = sourced
        print(render_json(doc))
        return DOES_NOT_FIT
    print(f"DOES NOT FIT: {reason}")
    print(render_advice(advice, req.unit))
    return DOES_NOT_FIT

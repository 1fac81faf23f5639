"""The ``--json`` documents of infer, train and fit, built once for every front end.

The CLI prints them, the web API returns them and the MCP server hands them to a tool caller: one function per
question takes the option values by name (what ``vramwise.cli.options`` parses: each option's ``dest``) and
returns the document with whether the setup fits, so that the three front ends cannot drift apart
(docs/json-schema.md is the contract).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vramwise.app.fitting import FitRequest, FitResult
    from vramwise.app.run import InferRequest, TrainRequest


@dataclass(frozen=True)
class Document:
    doc: dict[str, Any]  # the --json document (docs/json-schema.md)
    fits: bool  # infer/train: the peak fits --gpu (or no --gpu); fit: an answer exists (exit status 0, else 3)


def infer_request(values: Mapping[str, Any], options: Mapping[str, Any]) -> InferRequest:
    from vramwise.app.run import InferRequest

    return InferRequest(
        model=values["model"],
        options=options,
        gpu=values.get("gpu"),
        serve=bool(values.get("serve")),
        margin=values.get("margin") or 0.0,
    )


def train_request(values: Mapping[str, Any], options: Mapping[str, Any]) -> TrainRequest:
    from vramwise.app.run import TrainRequest

    return TrainRequest(
        model=values["model"],
        options=options,
        gpu=values.get("gpu"),
        per_stage=bool(values.get("per_stage")),
        margin=values.get("margin") or 0.0,
    )


def fit_request(values: Mapping[str, Any], options: Mapping[str, Any]) -> FitRequest:
    from vramwise.app.fitting import FitRequest, Question

    if values.get("min_gpus"):
        question = Question.MIN_GPUS
    elif values.get("best_format"):
        question = Question.BEST_FORMAT
    elif values.get("layouts") is not None:
        question = Question.LAYOUTS
    else:
        question = Question.MAX
    return FitRequest(
        model=values["model"],
        gpu=values["gpu"],
        question=question,
        target=values.get("max"),
        gpus=values.get("layouts"),
        infer=bool(values.get("infer")),
        options=options,
        top=values.get("top"),
        max_batch=values.get("max_batch"),
        unit=values.get("units") or "gib",
        serve=bool(values.get("serve")),
        margin=values.get("margin") or 0.0,
    )


def infer_document(req: InferRequest) -> Document:
    from vramwise.app.advice import advise_infer
    from vramwise.app.run import infer
    from vramwise.report.advice_out import advice_dict
    from vramwise.report.json_out import to_dict

    r = infer(req)
    fits = r.verdict is None or r.verdict.fits
    doc = to_dict(
        r.estimate, kind="inference", model=r.model, setup=r.setup, verdict=r.verdict, capacity=r.capacity,
        engine=r.engine,
    )
    if not fits:
        doc["advice"] = advice_dict(advise_infer(req))
    return Document(doc, fits)


def train_document(req: TrainRequest) -> Document:
    from vramwise.app.advice import advise_train
    from vramwise.app.run import train
    from vramwise.report.advice_out import advice_dict
    from vramwise.report.json_out import to_dict

    r = train(req)
    fits = all(s.verdict is None or s.verdict.fits for s in r.stages)
    docs = [to_dict(s.estimate, kind="training", model=r.model, setup=r.setup, verdict=s.verdict) for s in r.stages]
    doc = {"stages": docs} if r.per_stage else docs[0]
    if not fits:
        doc["advice"] = advice_dict(advise_train(req))
    return Document(doc, fits)


def fit_question_name(req: FitRequest) -> str:
    """The question as JSON names it: "max batch", "max seq", "max context", "min_gpus", "best_format", "layouts"."""
    from vramwise.app.fitting import Question

    return f"max {req.target}" if req.question is Question.MAX else str(req.question)


def fit_answer_document(req: FitRequest, r: FitResult) -> dict[str, Any]:
    """The document of a question answered (with ``fit --min-gpus``, the changes that need fewer GPUs)."""
    from vramwise.app.fitting import Question
    from vramwise.report.advice_out import advice_dict
    from vramwise.report.fit_out import fit_dict

    layouts = None
    if r.layouts is not None:
        shown = r.layouts.fitting[: r.top]
        layouts = (shown, r.layouts.rejected, r.layouts.candidates, r.layouts.estimates)
    doc = fit_dict(
        question=fit_question_name(req), model=req.model, gpu=r.gpu, count=r.count, margin=r.margin,
        answer=r.answer, formats=r.formats, layouts=layouts, assumptions=r.assumptions, notes=r.notes,
    )
    if r.question is Question.MIN_GPUS:
        doc["advice"] = advice_dict(fewer_gpus(req, r))
    return doc


def fewer_gpus(req: FitRequest, r: FitResult) -> tuple[Any, ...]:
    """``fit --min-gpus``: the single changes that need fewer GPUs than the answer (none when it is one)."""
    from vramwise.app.fitting import Question

    if r.question is not Question.MIN_GPUS or r.answer is None or int(r.answer.value) <= 1:
        return ()
    from vramwise.app.advice import advise_min_gpus

    return advise_min_gpus(req, int(r.answer.value))


def fit_miss_document(req: FitRequest, reason: str) -> dict[str, Any]:
    """Nothing fits: the reason, and the single changes that make the smallest setup fit."""
    from vramwise.app.advice import advise_fit
    from vramwise.catalog import parse_gpu
    from vramwise.report.advice_out import advice_dict
    from vramwise.report.fit_out import fit_dict

    choice = parse_gpu(req.gpu)
    doc = fit_dict(question=fit_question_name(req), model=req.model, gpu=choice.gpu, count=choice.count,
                   margin=req.margin, reason=reason)
    doc["advice"] = advice_dict(advise_fit(req))
    return doc


def fit_document(req: FitRequest) -> Document:
    from vramwise.app.fitting import fit
    from vramwise.errors import DoesNotFitError

    try:
        r = fit(req)
    except DoesNotFitError as err:
        return Document(fit_miss_document(req, str(err)), False)
    return Document(fit_answer_document(req, r), True)

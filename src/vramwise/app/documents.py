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


@dataclass(frozen=True, kw_only=True)
class Extras:
    """What a document adds beside the estimate (issue 15): ``--range`` (with ``--max-seq``) and ``--from``'s notes."""

    range: bool = False  # --range: the document's "range"; infer/train: ``fits`` is then the high's
    longest: int | None = None  # --max-seq
    source: dict[str, Any] | None = None  # --from: {"source", "notes"} (cli/sources.py source_json)


_NONE = Extras()
NO_RANGE = "--range: nothing fits, so there is no answer to range"  # fit with nothing fitting: table and JSON


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


def infer_document(req: InferRequest, extras: Extras = _NONE) -> Document:
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
    if extras.range:
        from vramwise.app.ranges import infer_range

        fits = _with_range(doc, infer_range(req, r, extras.longest), r.verdict) and fits
    return Document(_sourced(doc, extras), fits)


def train_document(req: TrainRequest, extras: Extras = _NONE) -> Document:
    from vramwise.app.advice import advise_train
    from vramwise.app.run import train
    from vramwise.report.advice_out import advice_dict
    from vramwise.report.json_out import to_dict

    r = train(req)
    fits = all(s.verdict is None or s.verdict.fits for s in r.stages)
    docs = [to_dict(s.estimate, kind="training", model=r.model, setup=r.setup, verdict=s.verdict) for s in r.stages]
    doc: dict[str, Any] = {"stages": docs} if r.per_stage else docs[0]
    if not fits:
        doc["advice"] = advice_dict(advise_train(req))
    if extras.range:
        from vramwise.app.ranges import train_range

        worst = max(r.stages, key=lambda s: s.estimate.peak_bytes).verdict
        fits = _with_range(doc, train_range(req, r, extras.longest), worst) and fits
    return Document(_sourced(doc, extras), fits)


def _with_range(doc: dict[str, Any], rng: Any, verdict: Any) -> bool:
    """``doc["range"]``, and whether the high fits (True without a GPU)."""
    from vramwise.report.range_out import high_fits, range_dict

    doc["range"] = range_dict(rng, verdict)
    return high_fits(rng, verdict) is not False


def _sourced(doc: dict[str, Any], extras: Extras) -> dict[str, Any]:
    if extras.source is not None:
        doc["from"] = extras.source
    return doc


def fit_question_name(req: FitRequest) -> str:
    """The question as JSON names it: "max batch", "max seq", "max context", "min_gpus", "best_format", "layouts"."""
    from vramwise.app.fitting import Question

    return f"max {req.target}" if req.question is Question.MAX else str(req.question)


def fit_answer_document(req: FitRequest, r: FitResult, extras: Extras = _NONE) -> dict[str, Any]:
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
    if extras.range:
        from vramwise.app.ranges import fit_range
        from vramwise.report.range_out import range_dict

        rng, verdict, at = fit_range(req, r, extras.longest)
        doc["range"] = {**range_dict(rng, verdict), "at": at}
    return _sourced(doc, extras)


def fewer_gpus(req: FitRequest, r: FitResult) -> tuple[Any, ...]:
    """``fit --min-gpus``: the single changes that need fewer GPUs than the answer (none when it is one)."""
    from vramwise.app.fitting import Question

    if r.question is not Question.MIN_GPUS or r.answer is None or int(r.answer.value) <= 1:
        return ()
    from vramwise.app.advice import advise_min_gpus

    return advise_min_gpus(req, int(r.answer.value))


def fit_miss_document(req: FitRequest, reason: str, extras: Extras = _NONE) -> dict[str, Any]:
    """Nothing fits: the reason, and the single changes that make the smallest setup fit."""
    from vramwise.app.advice import advise_fit
    from vramwise.catalog import parse_gpu
    from vramwise.report.advice_out import advice_dict
    from vramwise.report.fit_out import fit_dict

    choice = parse_gpu(req.gpu)
    doc = fit_dict(question=fit_question_name(req), model=req.model, gpu=choice.gpu, count=choice.count,
                   margin=req.margin, reason=reason)
    doc["advice"] = advice_dict(advise_fit(req))
    if extras.range:  # as the table's stderr says it (cli/fit.py): --range was asked and has nothing to range
        doc["notes"] = [*doc.get("notes", []), NO_RANGE]
    return _sourced(doc, extras)


def fit_document(req: FitRequest, extras: Extras = _NONE) -> Document:
    from vramwise.app.fitting import fit
    from vramwise.errors import DoesNotFitError

    try:
        r = fit(req)
    except DoesNotFitError as err:
        return Document(fit_miss_document(req, str(err), extras), False)
    return Document(fit_answer_document(req, r, extras), True)


def document_for(
    command: str, values: Mapping[str, Any], options: Mapping[str, Any], source: dict[str, Any] | None = None
) -> Document:
    """``vramwise COMMAND ... --json``'s document for option values by name, with what the command line adds beside
    the estimate (``--range``, ``--max-seq``, and ``source``: ``--from``'s notes, which only the command line has):
    the one call of the CLI's ``--json`` and of the servers (the web API, MCP), so that an option passed through
    ``Extras`` cannot be dropped by one of them."""
    from vramwise.app.ranges import check_range

    asked = check_range(bool(values.get("range")), values.get("max_seq"), values.get("emit"))
    extras = Extras(range=asked, longest=values.get("max_seq"), source=source)
    if command == "infer":
        return infer_document(infer_request(values, options), extras)
    if command == "train":
        return train_document(train_request(values, options), extras)
    return fit_document(fit_request(values, options), extras)

"""``--from FILE``: the file's options under the command line's (app/imports.py), its notes on stderr; ``--emit``:
the runnable config of the setup, printed instead of the table (configs/emit.py)."""

from __future__ import annotations

import sys
from typing import Any

from vramwise.cli.options import setup_values


def prepare(command: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the file's options filled in where the command line gave none."""
    if command not in ("infer", "train", "fit", "verify"):
        return values
    source = values.get("source")
    if command == "verify" and source is None:
        return values  # verify's own MODEL and --log rules apply
    from vramwise.app.imports import with_source

    sourced = with_source(command, source, values.get("model"), setup_values(values), bool(values.get("infer")))
    out = {**values, **sourced.options, "model": sourced.model, "source_notes": sourced.notes}
    if command in ("fit", "verify") and sourced.infer:
        out["infer"] = True
    for note in sourced.notes:
        print(f"note: {note}", file=sys.stderr)
    return out


def source_json(values: dict[str, Any]) -> dict[str, Any] | None:
    """``--from``'s notes for ``--json`` (docs/json-schema.md, "from"): the file or command line and what was read
    from it, ignored and overridden, the lines the table's run prints on stderr; None without ``--from``."""
    if values.get("source") is None:
        return None
    return {"source": values["source"], "notes": list(values.get("source_notes") or ())}


def emitted(values: dict[str, Any], setup: Any, gpus: int = 1) -> bool:
    """With ``--emit FORMAT``: print the setup's config in that format and say so (True), else False."""
    fmt = values.get("emit")
    if not fmt:
        return False
    if values.get("json"):
        from vramwise.errors import InapplicableOptionError

        raise InapplicableOptionError("--emit prints the framework's config instead of the report: drop --json",
                                      field="emit")
    from vramwise.configs.emit import emit

    text, notes = emit(fmt, values["model"], setup, gpus=gpus)
    for note in notes:
        print(f"note: --emit {fmt}: {note}", file=sys.stderr)
    print(text, end="" if text.endswith("\n") else "\n")
    return True


def emit_answer(values: dict[str, Any], req: Any, result: Any) -> int:
    """``fit --max ... --emit FORMAT``: the config of the setup at the answer (the largest batch, seq or context)."""
    from vramwise.app.fitting import Question
    from vramwise.errors import InapplicableOptionError

    if result.question is not Question.MAX or result.answer is None:
        raise InapplicableOptionError(
            "fit --emit writes the setup of fit --max's answer; for the other questions, "
            "run train or infer with the answer's options and --emit",
            field="emit",
        )
    target = "context" if req.infer and req.target == "seq" else req.target
    options = {**req.options, target: int(result.answer.value)}
    if req.infer:
        from vramwise.app.run import InferRequest, infer

        setup: Any = infer(InferRequest(model=req.model, options=options, gpu=req.gpu, serve=req.serve)).setup
    else:
        from vramwise.app.run import TrainRequest, train

        setup = train(TrainRequest(model=req.model, options=options, gpu=req.gpu)).setup
    print(f"note: --emit {values['emit']}: the setup at fit's answer, {target} {result.answer.value}", file=sys.stderr)
    emitted(values, setup)
    return 0

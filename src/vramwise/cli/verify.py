"""``vramwise verify``: the estimate beside a traced run of the real model (needs the verify extra)."""

from __future__ import annotations

from typing import Any

from vramwise.cli.options import setup_values
from vramwise.errors import InapplicableOptionError, UnknownModelError
from vramwise.report.json_out import render_json


def run(command: str, values: dict[str, Any]) -> int:
    if values.get("log") is not None:
        return _log(values)
    for name, flag in (("log_model", "--model"), ("gpu", "--gpu")):
        if values.get(name) is not None:
            raise InapplicableOptionError(f"{flag} applies to verify --log (the twin runs on this machine)", field=name)
    if values.get("model") is None:
        raise UnknownModelError("verify needs MODEL (a catalog name or a config.json), or --log FILE", field="model")
    # the twin's modules are imported only here: `verify --log` must not load torch (tests/app/test_verify_log.py)
    from vramwise.app.sweep import VerifyRequest, verify
    from vramwise.report.titles import verify_title
    from vramwise.report.verify_out import comparison_dict, render_comparison

    req = VerifyRequest(
        model=values["model"], options=setup_values(values), infer=bool(values["infer"]), layers=values["layers"]
    )
    r = verify(req)
    if values["json"]:
        print(render_json(comparison_dict(r.comparison, model=r.model.name, setup=r.setup)))
    else:
        print(render_comparison(r.comparison, title=verify_title(r.model, r.setup), unit=values["units"]))
    return 0


def _log(values: dict[str, Any]) -> int:
    """``verify --log FILE``: the log's figures beside the engine plan of its setup (app/verify_log.py)."""
    from vramwise.app.verify_log import LogRequest, verify_log
    from vramwise.report.log_out import log_comparison_dict, render_log_comparison

    for name in ("infer", "layers"):
        if values.get(name):
            raise InapplicableOptionError(f"--{name} applies to verify MODEL, not --log", field=name)
    model = values.get("log_model") or values.get("model")
    if values.get("log_model") and values.get("model") and values["log_model"] != values["model"]:
        raise InapplicableOptionError("give the model once: MODEL or --model, not both", field="model")
    options = {k: v for k, v in setup_values(values).items()}
    c = verify_log(LogRequest(path=values["log"], model=model, gpu=values.get("gpu"), options=options))
    print(render_json(log_comparison_dict(c)) if values["json"] else render_log_comparison(c))
    return 0

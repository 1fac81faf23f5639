"""``vramwise verify``: the estimate beside a traced run of the real model (needs the verify extra)."""

from __future__ import annotations

from typing import Any

from vramwise.app.sweep import VerifyRequest, verify
from vramwise.cli.options import setup_values
from vramwise.report.json_out import render_json
from vramwise.report.titles import verify_title


def run(command: str, values: dict[str, Any]) -> int:
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

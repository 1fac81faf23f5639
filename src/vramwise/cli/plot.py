"""``vramwise plot``: a chart of memory against sequence length or batch (needs the plot extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vramwise.app.sweep import PlotRequest, plot_data
from vramwise.cli.options import setup_values
from vramwise.report.titles import plot_labels


def run(command: str, values: dict[str, Any]) -> int:
    from vramwise.report.plot import check_output, plot_sweep

    check_output(Path(values["output"]))
    given = {k: values[k] for k in ("vs", "points", "gpu") if values[k] is not None}
    data = plot_data(
        PlotRequest(model=values["model"], options=setup_values(values), infer=bool(values["infer"]), **given)
    )
    xlabel, title = plot_labels(data.model.name, data.infer, data.vs)
    at = dict(zip(data.xs, data.estimates, strict=True))
    out = plot_sweep(
        data.xs,
        at.__getitem__,
        xlabel=xlabel,
        title=title,
        capacity=data.gpu.memory_bytes if data.gpu else None,
        capacity_label=data.gpu.label if data.gpu else "",
        out=Path(values["output"]),
    )
    print(f"wrote {out}")
    return 0

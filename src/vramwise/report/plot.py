"""Charts: memory against sequence length or batch, stacked by term, with the GPU's capacity as a line.

Needs the ``plot`` extra (matplotlib); the core never imports it. Each bar is the estimate at that x: its
terms at the peak phase, grouped by their first name component (weights, activations, optimizer, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from vramwise.errors import VramwiseError
from vramwise.estimate.term import Estimate
from vramwise.units import GIB


def _groups(est: Estimate) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in est.terms:
        key = t.name.split("/", 1)[0]
        out[key] = out.get(key, 0) + t.bytes
    return out


def check_output(out: Path) -> None:
    """The output is a .png or .svg file in a folder that exists; no folder is created (K4). Checked before any
    estimate, so a bad path costs nothing."""
    if out.suffix.lower() not in (".png", ".svg"):
        raise VramwiseError(f"plot output must end in .png or .svg, got {out.name!r}", field="output")
    try:
        is_dir, parent_ok = out.is_dir(), out.parent.is_dir()
    except OSError as err:  # a name too long, a loop of links
        raise VramwiseError(f"plot output {str(out)!r}: {err.strerror or err}", field="output") from None
    if is_dir:
        raise VramwiseError(f"plot output {str(out)!r} is a folder; name a .png or .svg file", field="output")
    if not parent_ok:
        raise VramwiseError(
            f"plot output folder {str(out.parent)!r} does not exist or is not a folder (plot creates no folders)",
            field="output",
        )


def plot_sweep(
    xs: Sequence[int],
    estimate_at: Callable[[int], Estimate],
    *,
    xlabel: str,
    title: str,
    capacity: int | None,
    capacity_label: str,
    out: Path,
) -> Path:
    """Stacked bars of the estimate at each x, saved to ``out`` (the suffix picks PNG or SVG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise VramwiseError("plot needs matplotlib: pip install 'vramwise[plot]'") from None
    check_output(out)
    stacks = [_groups(estimate_at(x)) for x in xs]
    names = sorted({k for s in stacks for k in s}, key=lambda k: -max(s.get(k, 0) for s in stacks))
    fig, ax = plt.subplots(figsize=(9, 5))
    labels = [str(x) for x in xs]
    bottom = [0.0] * len(xs)
    for name in names:
        heights = [s.get(name, 0) / GIB for s in stacks]
        ax.bar(labels, heights, bottom=bottom, label=name)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if capacity:
        ax.axhline(capacity / GIB, color="black", linestyle="--", linewidth=1.2, label=capacity_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("GiB per GPU (2^30 bytes)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as err:  # a read-only folder, a full disk, /proc: one line, not a traceback (C11)
        raise VramwiseError(f"cannot write plot output {str(out)!r}: {err.strerror or err}", field="output") from None
    finally:
        plt.close(fig)
    return out

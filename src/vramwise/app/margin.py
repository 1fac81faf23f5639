"""``--margin F``: a safety fraction of each GPU kept free; the peak must fit the rest (``Verdict.budget_bytes``).

One check for every question that takes it (infer, train, fit), so each refuses the same values in the same line.
"""

from __future__ import annotations

import math

from vramwise.errors import InapplicableOptionError, InvalidWorkloadError, shown

ALLOWED = "a fraction 0 <= F < 1 (0.1 keeps 10% of each GPU free)"


def check_margin(margin: object, gpu: str | None = "") -> float:
    """The margin as a float, or one line naming ``margin`` and what is allowed; ``gpu`` None: no GPU was given,
    so a margin has nothing to keep free and is refused rather than ignored."""
    if margin is None:
        return 0.0
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin) or not (
        0.0 <= margin < 1.0
    ):
        raise InvalidWorkloadError(f"--margin {shown(margin)} is not allowed; allowed: {ALLOWED}", field="margin",
                                   allowed=ALLOWED)
    if margin and gpu is None:
        raise InapplicableOptionError("--margin keeps part of a GPU free: add --gpu", field="margin")
    return float(margin)

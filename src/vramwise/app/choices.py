"""The choices and defaults of the questions themselves (the setups' own are in ``workload/options.py``).

Kept apart from ``fitting`` and ``sweep`` so that the option table can show them in ``--help`` without a fresh
``vramwise infer`` importing the fit and plot questions.
"""

from __future__ import annotations

MAX_TARGETS = ("batch", "seq", "context")  # fit --max: context is inference only; seq with --infer means the context
DEFAULT_TOP = 10  # fit --layouts: how many layouts to show
SWEEP_AXES = ("seq", "batch")  # plot --vs: seq is the context with --infer
DEFAULT_AXIS = "seq"

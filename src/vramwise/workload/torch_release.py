"""The PyTorch release a training step runs (``--torch-version``), as the estimate reads it.

Only what autograd keeps depends on it so far (estimate/train/activations.py): the release is a workload fact like
the CUDA runtime (workload/overheads.py ``cuda_release``), validated here in one line.
"""

from __future__ import annotations

import re

from vramwise.errors import InvalidWorkloadError
from vramwise.errors import shown as show

# The torch the README pins (torch==2.13.0 from PyPI), which the CPU twin traces
DEFAULT_TORCH_VERSION = "2.13"
TORCH_VERSIONS = "MAJOR.MINOR from 1.0 to 3.99, such as 1.10 or 2.13"


def torch_release(text: object) -> tuple[int, int]:
    """(major, minor) of a PyTorch release as ``--torch-version`` spells it; refused in one line otherwise."""
    m = re.fullmatch(r"(\d)\.(\d{1,2})", text) if isinstance(text, str) else None
    if m is None or not (1, 0) <= (int(m.group(1)), int(m.group(2))) <= (3, 99):
        raise InvalidWorkloadError(
            f"torch_version {show(text)} is not a PyTorch release; allowed: {TORCH_VERSIONS}",
            field="torch_version",
            allowed=TORCH_VERSIONS,
        )
    return int(m.group(1)), int(m.group(2))

"""The CLI run in-process, as the tests that read its exit status and output need it."""

from __future__ import annotations

import pytest

from vramwise.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``vramwise ARGV``; argparse's usage errors exit through SystemExit."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err

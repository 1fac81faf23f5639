"""Command line: parses arguments, asks the application layer (``vramwise.app``), renders. No rules here.

The options are one table (``options.py``); each command is a module with ``run(values) -> int``, imported
only when that command runs, so that a fresh ``vramwise infer`` loads no training, fit or verify code.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from vramwise.errors import VramwiseError

_MODULES = {
    "infer": "infer",
    "train": "train",
    "verify": "verify",
    "fit": "fit",
    "plot": "plot",
    "models": "listings",
    "gpus": "listings",
    "formats": "listings",
}


def _fail(message: str) -> int:
    print(f"vramwise: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    from vramwise.cli.options import build_parser

    args = sys.argv[1:] if argv is None else list(argv)
    # build only the command being run; anything else (no command, --help, a typo) gets the whole parser
    first = args[0] if args else None
    values = vars(build_parser(first if first in _MODULES else None).parse_args(args))
    command = values.pop("command")
    module = importlib.import_module(f"vramwise.cli.{_MODULES[command]}")
    try:
        from vramwise.cli.sources import prepare  # --from FILE, and MODEL where --from may name it

        return int(module.run(command, prepare(command, values)))
    except VramwiseError as err:
        return _fail(str(err))
    except BrokenPipeError:
        # the reader went away (`vramwise models | head -1`): end quietly, and keep the interpreter's final
        # flush of stdout from raising again
        with contextlib.suppress(OSError, ValueError):  # not a file (a test's capture): nothing to flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


__all__ = ["main"]

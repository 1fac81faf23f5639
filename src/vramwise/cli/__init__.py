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

from vramwise.errors import DoesNotFitError, VramwiseError

# The exit status, so that a training repo can gate a launch on it (README "Exit status"; `--help`'s epilog):
FITS = 0  # infer/train: the peak fits --gpu (or no --gpu to check); fit: an answer exists
CLOSED = 1  # the reader of stdout went away (`| head`)
BAD_INPUT = 2  # one line on stderr: an option, a file, a model or a GPU the tool cannot take
DOES_NOT_FIT = 3  # infer/train: the peak exceeds --gpu (less --margin); fit: nothing fits

_MODULES = {
    "infer": "infer",
    "train": "train",
    "verify": "verify",
    "fit": "fit",
    "plot": "plot",
    "models": "listings",
    "gpus": "listings",
    "formats": "listings",
    "web": "web",
    "mcp": "mcp",
}


def _fail(message: str, status: int = BAD_INPUT) -> int:
    print(f"vramwise: error: {message}", file=sys.stderr)
    return status


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
    except DoesNotFitError as err:  # a question with no answer (fit): not bad input, the gate's "does not fit"
        return _fail(str(err), DOES_NOT_FIT)
    except VramwiseError as err:
        return _fail(str(err))
    except BrokenPipeError:
        # the reader went away (`vramwise models | head -1`): end quietly, and keep the interpreter's final
        # flush of stdout from raising again
        with contextlib.suppress(OSError, ValueError):  # not a file (a test's capture): nothing to flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED


def status(fits: bool) -> int:
    """The exit status of a question answered: 0 when it fits, 3 when it does not."""
    return FITS if fits else DOES_NOT_FIT


__all__ = ["BAD_INPUT", "CLOSED", "DOES_NOT_FIT", "FITS", "main", "status"]

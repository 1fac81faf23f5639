"""One error hierarchy. The CLI turns any of these into a single line on stderr and exit status 2.

Anything else that escapes is a bug and keeps its traceback.

    VramwiseError                      anything the user can cause with their input
    ├── ConfigError                    a config.json or catalog entry is missing, malformed or invalid
    ├── UnknownModelError              not a catalog name, a path or a bare size
    ├── UnsupportedArchitectureError   a model_type with no adapter
    ├── InvalidWorkloadError           a setting out of range
    │   └── InapplicableOptionError    an option given that cannot apply to the question asked
    ├── InvalidLayoutError             a parallel layout that cannot be built
    ├── UnknownGpuError                a GPU not in the catalog
    ├── NeedsArchitectureError         a term needs the architecture, only a parameter count was given
    ├── DoesNotFitError                fit: even the smallest setting exceeds the budget
    ├── VerifyUnsupportedError         verify: the twin cannot reproduce this setup here
    └── UsageError                     options sent as data (the web API, MCP) that the command line's parser
                                       refuses, or that a server does not take (a file path, --from)

Every error may name the input ``field`` it is about and what is ``allowed`` there (a form can then mark the
field); the message alone stays the one line the CLI prints.
"""

from __future__ import annotations

import math
import reprlib

SHOWN_CHARS = 80  # a user's value echoed in an error is cut to about this many characters (U8)


def shown(value: object, limit: int = SHOWN_CHARS, *, quote: bool = True) -> str:
    """A user's value as a one-line error may quote it: control characters and terminal escapes escaped (U7),
    cut to ``limit`` characters (a 10 MB string stays one short line, U8), and an integer too long to print
    (Python refuses past 4,300 digits) described by its size. ``quote=False`` leaves printable text (a path)
    without quotes."""
    if isinstance(value, str):
        text = value if not quote and value.isprintable() else repr(value)[0 if quote else 1 : None if quote else -1]
    else:
        text = _SHOWN.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _huge(x: int) -> str:
    digits = int(x.bit_length() * math.log10(2)) + 1
    return f"{'a negative' if x < 0 else 'an'} integer of {digits:,} digits (about 10^{digits - 1})"


class _Shown(reprlib.Repr):
    """reprlib for containers, but an integer past 64 bits is described by its digits, not printed."""

    def repr_int(self, x: int, level: int) -> str:
        return _huge(x) if x.bit_length() > 64 else super().repr_int(x, level)


_SHOWN = _Shown()
_SHOWN.maxstring = _SHOWN.maxother = SHOWN_CHARS


class VramwiseError(Exception):
    """Base of every error the user can cause with their input."""

    def __init__(self, message: str = "", *, field: str | None = None, allowed: str | None = None) -> None:
        super().__init__(message)
        self.field = field  # the input the error is about (an option name such as "kv_dtype"), when known
        self.allowed = allowed  # what that input may be, in words, when known


class ConfigError(VramwiseError):
    """A config.json (or catalog entry) is missing, malformed, or has an invalid field."""


class UnknownModelError(VramwiseError):
    """A model name is neither in the catalog, nor a path, nor a bare size."""


class UnsupportedArchitectureError(VramwiseError):
    """The config's model_type has no adapter."""


class InvalidWorkloadError(VramwiseError):
    """A batch, context, dtype, format or other setting is out of range."""


class InapplicableOptionError(InvalidWorkloadError):
    """An option was given that cannot apply to the question asked (refused rather than silently ignored)."""


class InvalidLayoutError(VramwiseError):
    """A parallel layout that cannot be built (tp not dividing heads, ...)."""


class UnknownGpuError(VramwiseError):
    """A GPU name that is not in the catalog."""


class NeedsArchitectureError(VramwiseError):
    """A term needs the architecture but only a bare parameter count was given."""


class DoesNotFitError(VramwiseError):
    """Even the smallest setting exceeds the budget."""


class VerifyUnsupportedError(VramwiseError):
    """The twin cannot reproduce this setup on this machine."""


class UsageError(VramwiseError):
    """Options sent as data (``cli.options.parse_options``: the web API, the MCP server) that the command line's
    parser refuses (an unknown name, a type, a choice: argparse's own words), or that a server does not take from a
    request (a file path as MODEL, ``--from``, ``--emit``). The CLI itself never raises it: argparse exits there."""

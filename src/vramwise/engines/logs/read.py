"""A startup log file read safely: a regular text file of bounded size, never blocking, never a traceback."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from vramwise.engines.logs.lines import MAX_LOG_CHARS
from vramwise.errors import ConfigError, shown
from vramwise.files import Bounded, read_regular, stat_or_refuse

MAX_LOG_BYTES = MAX_LOG_CHARS  # UTF-8 never has fewer bytes than characters, so the text limit holds too
_FIELD = "log"
_ALLOWED = "a text file holding a vLLM, SGLang or llama.cpp startup log"
_KIND = Bounded(
    limit=MAX_LOG_BYTES,
    limit_text=f"{MAX_LOG_BYTES:,}",
    over_text=f"{MAX_LOG_BYTES:,} bytes",
    typical="a startup log is at most a few MB",
    cannot="cannot read it",
    not_regular="not a regular file (a folder, FIFO, device or socket); give the log file",
)


def _error(path: Path, what: str) -> ConfigError:
    return ConfigError(f"log '{shown(str(path), 200, quote=False)}': {what}", field=_FIELD, allowed=_ALLOWED)


def read_log(path: str | os.PathLike[str]) -> str:
    """The text of a log file: a regular file of at most MAX_LOG_BYTES, UTF-8 with any stray byte replaced (a log
    may carry one from a progress bar or a non-UTF-8 locale; every figure parsed is ASCII). A folder, FIFO or
    device, a missing or unreadable file, a file too large and a binary file (a NUL byte: a GGUF or safetensors
    given by mistake) raise one ConfigError (field "log")."""
    where = Path(path)
    refuse = partial(_error, where)
    data = read_regular(where, stat_or_refuse(where, _KIND, refuse), _KIND, refuse)
    if (nul := data.find(b"\x00")) >= 0:
        raise _error(where, f"a binary file (a NUL byte at offset {nul:,}), not a text log")
    return data.decode("utf-8", errors="replace")

"""A startup log file read safely: a regular text file of bounded size, never blocking, never a traceback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vramwise.engines.logs.lines import MAX_LOG_CHARS
from vramwise.errors import ConfigError, shown

MAX_LOG_BYTES = MAX_LOG_CHARS  # UTF-8 never has fewer bytes than characters, so the text limit holds too
_FIELD = "log"
_ALLOWED = "a text file holding a vLLM, SGLang or llama.cpp startup log"


def _error(path: Path, what: str) -> ConfigError:
    return ConfigError(f"log '{shown(str(path), 200, quote=False)}': {what}", field=_FIELD, allowed=_ALLOWED)


def read_log(path: str | os.PathLike[str]) -> str:
    """The text of a log file: a regular file of at most MAX_LOG_BYTES, UTF-8 with any stray byte replaced (a log
    may carry one from a progress bar or a non-UTF-8 locale; every figure parsed is ASCII). A folder, FIFO or
    device, a missing or unreadable file, a file too large and a binary file (a NUL byte: a GGUF or safetensors
    given by mistake) raise one ConfigError (field "log")."""
    where = Path(path)
    try:
        st = os.stat(where)
    except (OSError, ValueError) as err:  # ValueError: a NUL in the name
        raise _error(where, f"cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _error(where, "not a regular file (a folder, FIFO, device or socket); give the log file")
    if st.st_size > MAX_LOG_BYTES:
        raise _error(where, f"{st.st_size:,} bytes; a startup log is at most a few MB (at most {MAX_LOG_BYTES:,} read)")
    try:
        # O_NONBLOCK: a path swapped for a FIFO since the stat still does not wait for a writer.
        fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise _error(where, f"cannot read it ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _error(where, "not a regular file (a folder, FIFO, device or socket); give the log file")
        data = f.read(MAX_LOG_BYTES + 1)
    if len(data) > MAX_LOG_BYTES:  # it grew since the stat
        raise _error(where, f"more than {MAX_LOG_BYTES:,} bytes; a startup log is at most a few MB")
    if (nul := data.find(b"\x00")) >= 0:
        raise _error(where, f"a binary file (a NUL byte at offset {nul:,}), not a text log")
    return data.decode("utf-8", errors="replace")

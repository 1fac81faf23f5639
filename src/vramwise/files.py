"""A user's local file read safely: a regular file of bounded size, opened without ever blocking, every failure one
ConfigError. The readers of config.json (spec/load.py), startup logs (engines/logs/read.py) and GGUF and
safetensors headers (spec/gguf_file.py, spec/safetensors_headers.py) share it, each with its own wording."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vramwise.errors import ConfigError

Refuse = Callable[[str], ConfigError]  # the reader's one-line error, naming its file and field


def open_nonblocking(path: Path) -> BinaryIO:
    """``path`` opened for reading; O_NONBLOCK, so that a path swapped for a FIFO since the caller's stat does not
    wait for a writer. Raises OSError as ``open`` does."""
    return os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")


@dataclass(frozen=True)
class Bounded:
    """How one reader words its refusals of a file it reads whole, and how much it reads at most."""

    limit: int  # bytes
    limit_text: str  # the limit as the size refusal says it: "(at most 16 MiB read)"
    over_text: str  # the limit as the refusal of a file that grew says it: "more than 16 MiB"
    typical: str  # how large such a file is ("a config.json is a few KB")
    cannot: str  # the lead of an OS error ("cannot read config")
    not_regular: str  # the refusal of a folder, FIFO, device or socket


def stat_or_refuse(path: Path, kind: Bounded, refuse: Refuse) -> os.stat_result:
    try:
        return os.stat(path)
    except (OSError, ValueError) as err:  # ValueError: a NUL in the name (only the API can pass one)
        raise refuse(f"{kind.cannot} ({getattr(err, 'strerror', None) or err})") from None


def read_regular(path: Path, st: os.stat_result, kind: Bounded, refuse: Refuse) -> bytes:
    """The bytes of ``path`` (``st`` its stat): a regular file of at most ``kind.limit`` bytes, checked before it is
    opened and again on the open file; a file that grew past the limit since the stat is refused too."""
    if not stat.S_ISREG(st.st_mode):
        raise refuse(kind.not_regular)
    if st.st_size > kind.limit:
        raise refuse(f"{st.st_size:,} bytes; {kind.typical} (at most {kind.limit_text} read)")
    try:
        f = open_nonblocking(path)
    except OSError as err:
        raise refuse(f"{kind.cannot} ({err.strerror or err})") from None
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise refuse(kind.not_regular)
        data = f.read(kind.limit + 1)
    if len(data) > kind.limit:  # it grew since the stat
        raise refuse(f"more than {kind.over_text}; {kind.typical}")
    return data

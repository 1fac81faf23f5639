"""A config.json sent as text (the tool argument ``config``): the one way a caller describes a model of its own.

The server never reads a path a caller names (``cli.options.parse_options`` refuses one as MODEL); a caller that
holds a config.json sends its text instead, as the web API's ``config``. The text is written to a directory of
this call only (mode 0700, removed after), read as MODEL by the command line's own reader, and that private path
is replaced in the answer and in any error by what the caller sent, so the server's disk is never shown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from vramwise.errors import UsageError, VramwiseError

# A config.json's text: the largest published configs (a VLM's with its processor keys inlined) are tens of KiB; the
# same cap as the web API's (web/limits.py MAX_CONFIG_BYTES), far below the file reader's own 16 MiB bound for local
# files a user chose (spec/load.py MAX_CONFIG_BYTES).
MAX_CONFIG_BYTES = 200 * 2**10
FOLDER = "uploaded"  # <private dir>/uploaded/config.json: the model's name, as the web API names a dropped file
SOURCE = "config.json (sent as config)"  # what the answer says instead of the private path

T = TypeVar("T")


def checked(text: object) -> str:
    """The ``config`` argument as text within the cap, or one line naming it."""
    if not isinstance(text, str):
        raise UsageError("config is a config.json's text (a string)", field="config", allowed="a string")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise UsageError(f"config is over {MAX_CONFIG_BYTES:,} bytes", field="config",
                         allowed=f"at most {MAX_CONFIG_BYTES:,} bytes")
    return text


@contextmanager
def written(text: str) -> Iterator[str]:
    """The path of ``text`` written as a config.json in a private directory, removed on exit."""
    folder = tempfile.mkdtemp(prefix="vramwise-mcp-")  # mode 0700: this process's user only
    try:
        path = os.path.join(folder, FOLDER, "config.json")
        os.mkdir(os.path.dirname(path), 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as out:
            out.write(text)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def hidden(value: Any, path: str) -> Any:
    """``value`` (a document, a message) with the private path replaced by what the caller sent."""
    if isinstance(value, str):
        return value.replace(path, SOURCE).replace(os.path.dirname(path), FOLDER)
    if isinstance(value, list):
        return [hidden(v, path) for v in value]
    if isinstance(value, dict):
        return {k: hidden(v, path) for k, v in value.items()}
    return value


def with_config(text: object, answer: Callable[[str], T]) -> T:
    """``answer(path)`` for the config text written privately; its result and errors without the path."""
    with written(checked(text)) as path:
        try:
            result = answer(path)
        except VramwiseError as err:
            raise type(err)(hidden(str(err), path), field=err.field, allowed=err.allowed) from None
        out: T = hidden(result, path)
        return out

"""Serving engines' startup logs, parsed into the figures they print: ``parse_log(text) -> ParsedLog``.

The engine is recognised from lines only it prints (vLLM, SGLang, llama.cpp); every memory figure comes back in
bytes with the precision it was printed at, per rank or device, beside the version, model and flags as logged.
Text that is none of these, or an engine's log without a single figure, raises one ConfigError (field "log")
naming the lines each engine's log should contain. Nothing here estimates: ``vramwise verify --log`` compares.
"""

from __future__ import annotations

import os

from vramwise.engines.logs import llamacpp, sglang, vllm
from vramwise.engines.logs.lines import MAX_LOG_CHARS, split_lines
from vramwise.engines.logs.parsed import FIGURE_NAMES, Figure, ParsedLog
from vramwise.engines.logs.read import MAX_LOG_BYTES, read_log
from vramwise.errors import ConfigError, shown

__all__ = ["FIGURE_NAMES", "MAX_LOG_BYTES", "MAX_LOG_CHARS", "Figure", "ParsedLog", "load_log", "parse_log", "read_log"]

_FIELD = "log"
_ENGINES = (vllm, sglang, llamacpp)  # ties go to the first: its markers are the most specific
_EXPECTED = "; ".join(e.EXPECTED for e in _ENGINES)
_ALLOWED = f"a vLLM, SGLang or llama.cpp startup log with a line such as {_EXPECTED}"


def parse_log(text: str) -> ParsedLog:
    """The engine, version, model, flags and memory figures of one startup log.

    Raises ConfigError (field "log") when the text is too large to be a startup log, when no engine's lines are in
    it, or when the engine's log holds none of its memory figures (the server did not get that far)."""
    if len(text) > MAX_LOG_CHARS:
        raise ConfigError(
            f"log: {len(text):,} characters; a startup log is at most a few MB (at most {MAX_LOG_CHARS:,} read): "
            "give the lines from the server's start to its first request",
            field=_FIELD,
            allowed=_ALLOWED,
        )
    lines = split_lines(text)
    hits = [sum(1 for line in lines if engine.MARKERS.search(line.text)) for engine in _ENGINES]
    best = max(range(len(_ENGINES)), key=lambda i: (hits[i], -i))
    if hits[best] == 0:
        first = next((line.text.strip() for line in lines if line.text.strip()), "")
        found = f"first line {shown(first, 60)}" if first else "it is empty"
        raise ConfigError(
            f"log: not a startup log of vLLM, SGLang or llama.cpp ({found}); expected a line such as {_EXPECTED}",
            field=_FIELD,
            allowed=_ALLOWED,
        )
    engine = _ENGINES[best]
    parsed = engine.parse(lines)
    if not parsed.figures:
        raise ConfigError(
            f"log: a {engine.ENGINE} log without any memory figure or KV capacity (did the server start?); "
            f"expected a line such as {engine.EXPECTED}",
            field=_FIELD,
            allowed=_ALLOWED,
        )
    return parsed


def load_log(path: str | os.PathLike[str]) -> ParsedLog:
    """``parse_log`` of a log file, read with ``read_log`` (bounded, text only, never blocking)."""
    return parse_log(read_log(path))

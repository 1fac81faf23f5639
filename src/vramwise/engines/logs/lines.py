"""A log as lines the parsers can match: colours and logging prefixes removed, each line tagged with its rank."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A startup log is kilobytes to a few megabytes (vLLM's longest startup line, the engine config, is a few KB); a
# file past this is not a startup log, and refusing it keeps a wrong --log from reading gigabytes into memory.
MAX_LOG_CHARS = 32 * 2**20
# Matching stays linear and fast: no line is matched past this many characters (the config line fits easily).
MAX_LINE_CHARS = 64 * 2**10

# Terminal colours, raw (ESC [ ... m) or as Docker/SageMaker escape them in text ("#033[1;36m").
_ANSI = re.compile(r"(?:\x1b|#033)\[[0-9;?]*[A-Za-z]")
# vLLM's worker tag: "(VllmWorker rank=1 pid=5)", "(VllmWorkerProcess pid=240)", "(RayWorkerWrapper pid=9, ip=..)",
# "(Worker_TP1 pid=7)", "(Worker_PP1_TP0 pid=7)", "(EngineCore_DP0 pid=3)", "(APIServer pid=1)".
_PROCESS = re.compile(r"\((?P<who>[A-Za-z][\w]*)(?P<rest>(?: [\w.]+=[^\s,)]+,?)*)\)")
_RANK_IN_TAG = re.compile(r"rank=(\d+)")
_DP_IN_NAME = re.compile(r"_DP(\d+)$")
_TP_IN_NAME = re.compile(r"_((?:DP\d+_)?(?:PP\d+_)?TP\d+)$")
# Processes that are not a GPU worker: their lines describe the engine, not one rank.
_NOT_WORKER = ("EngineCore", "APIServer", "LLMEngine", "AsyncLLM", "MainProcess")
# SGLang's prefix: "[2025-01-10 12:00:00 TP0] ", "[2025-01-10 12:00:00 DP0 TP1] ", "[... PP0 TP3 EP3] ".
_SGLANG = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)?(?P<ranks>(?: [A-Z]{2,4}\d+)*)\]")
# A line carrying a logging prefix of its own (level + time, a bracketed time, a worker tag); one without (the
# second line of vLLM's multi-line memory report, when the formatter did not repeat the prefix) keeps the rank of
# the line before it.
_PREFIXED = re.compile(
    r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s+\d\d-\d\d\s+\d\d:\d\d:\d\d|^\s*\[\d{4}-\d\d-\d\d|\(\w+ pid=\d+"
)


@dataclass(frozen=True)
class Line:
    """One log line: its 1-based number, its text without colours, and the rank it came from ("" if none)."""

    number: int
    text: str
    rank: str


def _rank(text: str) -> str | None:
    """The rank a line's prefix names, "" for a non-worker process, or None when it names none."""
    if (m := _SGLANG.search(text)) and m.group("ranks").strip():
        return m.group("ranks").strip()
    for m in _PROCESS.finditer(text[:200]):
        who, rest = m.group("who"), m.group("rest")
        if "pid=" not in rest and "rank=" not in rest:
            continue  # "(v0.9.1)" or "(NVIDIA H100)" is not a process tag
        if who.startswith(_NOT_WORKER):
            # a data-parallel engine past the first ("EngineCore_DP1") holds its own workers: keep them apart
            dp = _DP_IN_NAME.search(who)
            return f"DP{dp.group(1)}" if dp and dp.group(1) != "0" else ""
        if r := _RANK_IN_TAG.search(rest):
            return f"rank={r.group(1)}"
        if t := _TP_IN_NAME.search(who):
            return t.group(1)
        return f"{who}{rest.split(',')[0]}"  # "VllmWorkerProcess pid=240": no rank logged, the pid tells them apart
    return None


def split_lines(text: str) -> list[Line]:
    """The log's lines, colours removed, each with its rank (carried onto unprefixed continuation lines)."""
    out: list[Line] = []
    previous = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        clean = _ANSI.sub("", raw[:MAX_LINE_CHARS])
        rank = _rank(clean)
        if rank is None:
            rank = "" if _PREFIXED.search(clean) else previous
        previous = rank
        out.append(Line(number, clean, rank))
    return out

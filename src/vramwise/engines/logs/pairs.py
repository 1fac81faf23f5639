"""``key=value, key=value`` as engines print their configs, split only at the top level (values hold dicts, lists)."""

from __future__ import annotations

import ast
import re
import shlex

_KEY = re.compile(r"\s*([A-Za-z_][\w.]*)=")
_OPEN, _CLOSE = "([{", ")]}"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # "-1" after -ngl is a value, not a flag


def split_pairs(text: str) -> dict[str, str]:
    """``model='x', max_seq_len=4096, compilation_config={"a": [1, 2]}`` -> {"model": "x", "max_seq_len": "4096",
    "compilation_config": '{"a": [1, 2]}'}: commas inside brackets or quotes do not split; quotes around a whole
    value are dropped. Text that is not ``key=value`` is skipped. Linear in the text."""
    pieces: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0 and _KEY.match(text, i + 1):
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    out: dict[str, str] = {}
    for piece in pieces:
        if m := _KEY.match(piece):
            value = piece[m.end() :].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out.setdefault(m.group(1), value)
    return out


def literal_dict(text: str) -> dict[str, str]:
    """A Python dict repr as vLLM logs its non-default args (``{'model': 'x', 'max_model_len': 4096}``), values as
    text; {} when it is not a plain literal (an enum or object repr inside). ``ast.literal_eval`` evaluates
    literals only, never code."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def command_flags(command: str) -> tuple[list[str], dict[str, str]]:
    """The positional words and the ``--flag value`` / ``--flag=value`` / ``-f value`` options of a command line as
    a log quotes it (``vllm serve Qwen/Qwen3-8B --tensor-parallel-size 2 --enforce-eager``), flags spelled with
    their dashes as typed, a bare flag as "true". Split like a shell would (``shlex``), never run."""
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote: plain whitespace is the best reading left
        words = command.split()
    # "python3 -m vllm.entrypoints.openai.api_server ...": the interpreter and its module are the command's name
    i = 3 if len(words) >= 3 and words[0].startswith("python") and words[1] == "-m" else 0
    positional: list[str] = words[:i]
    flags: dict[str, str] = {}
    while i < len(words):
        word = words[i]
        if word.startswith("-") and not _NUMBER.fullmatch(word):
            key, eq, val = word.partition("=")
            if not eq and i + 1 < len(words) and not (words[i + 1].startswith("-") and not _NUMBER.fullmatch(
                    words[i + 1])):
                val, i = words[i + 1], i + 1
            flags.setdefault(key, val if (eq or val) else "true")
        else:
            positional.append(word)
        i += 1
    return positional, flags

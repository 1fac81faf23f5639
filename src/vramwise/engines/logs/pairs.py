"""``key=value, key=value`` as engines print their configs, split only at the top level (values hold dicts, lists)."""

from __future__ import annotations

import ast
import re

_KEY = re.compile(r"\s*([A-Za-z_][\w.]*)=")
_OPEN, _CLOSE = "([{", ")]}"


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

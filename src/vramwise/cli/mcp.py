"""``vramwise mcp``: serve infer, train, fit and the catalogs as tools of an MCP server over stdio.

The server (``vramwise.mcpserver``) and the MCP SDK are imported only here, when the command runs; without the
extra, one line says how to install it.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from vramwise.errors import VramwiseError

INSTALL = "vramwise mcp needs the mcp extra: pip install 'vramwise[mcp]'"


def run(command: str, values: dict[str, Any]) -> int:
    try:
        import mcp  # noqa: F401  (the SDK: present or not, before anything else starts)
    except ImportError:
        raise VramwiseError(INSTALL) from None
    from vramwise.mcpserver.server import serve

    if sys.stdin.isatty():  # a person at a terminal: say what this is (a client reads stdout only)
        print("vramwise mcp: an MCP server on stdin/stdout; register it with a client (README, MCP server)",
              file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C at a terminal: the server's normal end, no traceback
        serve()
    return 0

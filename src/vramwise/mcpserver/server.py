"""``vramwise mcp``: the tools of ``tools.py`` served over stdio with the Model Context Protocol SDK (the mcp extra).

Each answer is a tool result whose structured content is exactly the ``--json`` document (its text content the
same JSON, for clients that read text only), checked by the client against the tool's output schema. Bad input is
an error result (``isError``) whose text is the command line's one line naming the field; anything else that
escapes is a bug: it is logged with its traceback on stderr (the client's log) and the caller gets one line,
never the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from vramwise.errors import VramwiseError
from vramwise.mcpserver.tools import BY_NAME, TOOLS
from vramwise.report.json_out import render_json

if TYPE_CHECKING:
    import mcp_types
    from mcp.server import Server

_log = logging.getLogger("vramwise.mcp")
INSTRUCTIONS = (
    "vramwise estimates GPU memory for transformers, per GPU, per term, with the formula and source of every "
    "number. Tools infer, train and fit take the command line's options by flag name (list_options lists them); "
    "answers are the CLI's --json documents: bytes are integers, peak.bytes the per-GPU peak, gpu.fits the verdict."
)


def answer(name: str, arguments: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str, bool]:
    """(structured content, text, is_error) of one tool call, without the SDK: the server's whole logic."""
    tool = BY_NAME.get(name)
    if tool is None:
        return None, f"unknown tool {name!r}: {', '.join(BY_NAME)}", True
    try:
        doc = tool.run(arguments or {})
    except VramwiseError as err:
        return None, str(err), True
    except Exception:  # a bug: the traceback goes to the log (stderr), the caller gets one line
        _log.exception("vramwise mcp: %s failed", name)
        return None, f"internal error in {name} (the server's log has the details)", True
    text = render_json(doc)  # the command line's own printing: the text content is what `--json` prints
    return json.loads(text), text, False  # and the structured content that JSON read back (tuples are lists)


def build() -> Server[Any]:
    """The MCP server: its tools listed with both schemas, and every call answered in a worker thread (an
    estimate is CPU work; the event loop keeps reading)."""
    import anyio
    import mcp_types as types
    from mcp.server import Server

    from vramwise import __version__

    listed = [
        types.Tool(
            name=t.name,
            title=t.title,
            description=t.description,
            input_schema=t.input_schema,
            output_schema=t.output_schema,
            annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True),
        )
        for t in TOOLS
    ]

    async def list_tools(ctx: Any, params: Any) -> mcp_types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: Any, params: mcp_types.CallToolRequestParams) -> mcp_types.CallToolResult:
        doc, text, error = await anyio.to_thread.run_sync(answer, params.name, params.arguments)
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=doc, is_error=error)

    return Server("vramwise", version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool)


def serve() -> None:
    """Serve over stdin and stdout until the client closes them."""
    import anyio
    from mcp.server.stdio import stdio_server

    server = build()

    async def run() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    anyio.run(run)

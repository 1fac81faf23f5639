"""``vramwise mcp``: the estimates as tools of a Model Context Protocol server over stdio (the mcp extra).

``tools.py`` holds the tools as plain functions (the command line's options in, its ``--json`` documents out),
``schemas.py`` their input and output JSON Schemas, ``server.py`` the MCP SDK around them (imported only when the
server starts). Floor 11, beside ``cli``: it imports ``app``, ``report``, ``errors`` and, of ``cli``, only
``vramwise.cli.options`` (the one option table and its parser).
"""

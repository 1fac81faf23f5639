"""``vramwise web``: a local page and a JSON API over the same application layer as the command line.

Floor 11, beside ``cli/``: it imports ``app``, ``report``, ``errors`` and, of the command line, only
``cli/options.py`` (the one option table and ``parse_options``), so that every answer is the CLI's ``--json``
document for the same options. ``server.py`` builds the ASGI application (Starlette, the ``web`` extra),
``api.py`` answers the API, ``describe.py`` lists the options and writes the OpenAPI description from the table,
``limits.py`` bounds what a request may cost, and ``static/`` holds the page's assets.
"""

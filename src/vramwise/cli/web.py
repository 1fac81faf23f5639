"""``vramwise web``: serve the page and the JSON API on this machine (the ``web`` extra: Starlette, uvicorn)."""

from __future__ import annotations

import sys
from typing import Any

from vramwise.errors import InvalidWorkloadError, VramwiseError

DEFAULT_HOST = "127.0.0.1"  # this machine only: a wider address is the user's choice (--host 0.0.0.0)
DEFAULT_PORT = 8000


def run(command: str, values: dict[str, Any]) -> int:
    try:
        from vramwise.web.limits import DEFAULT_BURST, DEFAULT_RATE, Limits
        from vramwise.web.server import LOOPBACK_HOSTS, bind, serve
    except ImportError as err:
        raise VramwiseError(f"vramwise web needs the web extra ({err.name} is missing): pip install 'vramwise[web]'",
                            field="web") from None
    host = values.get("host") or DEFAULT_HOST
    port = DEFAULT_PORT if values.get("port") is None else values["port"]
    if not 0 <= port <= 65535:
        raise InvalidWorkloadError(f"--port {port} is not a TCP port (0-65535; 0: any free one)", field="port",
                                   allowed="0-65535")
    rate = DEFAULT_RATE if values.get("rate_limit") is None else values["rate_limit"]
    if not rate >= 0:  # NaN too
        raise InvalidWorkloadError(f"--rate-limit {rate} is not a rate (requests a second, >= 0; 0: no cap)",
                                   field="rate_limit", allowed=">= 0")
    try:
        sock = bind(host, port)
    except OSError as err:  # the port is taken, the address is not this machine's
        raise VramwiseError(f"cannot serve on {host}:{port}: {err.strerror or err}", field="port") from None
    bound = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
    print(f"vramwise web: serving {url} (API: {url}api/v1/openapi.json; Ctrl-C stops it)", flush=True)
    if values.get("open"):
        import webbrowser

        webbrowser.open(url)
    try:
        # bound to loopback: only this machine's own names in the Host header (a rebinding page's are refused)
        hosts = LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else None
        serve(sock, Limits(rate=rate, burst=max(DEFAULT_BURST, int(rate * 3))), hosts)
    except KeyboardInterrupt:
        print("vramwise web: stopped", file=sys.stderr)
    return 0

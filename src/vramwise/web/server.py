"""The ASGI application of ``vramwise web``: the page, its assets, the JSON API, and the guards around them.

Starlette (the ``web`` extra) is imported here and only here, by ``vramwise web`` (cli/web.py) and the tests: the
estimate path and every other command load none of it. The guards sit outside every route: the rate cap per
client address (429), and a last handler that turns any exception into a generic 500 body, logged with its
traceback on the server's side and never sent (a traceback names the server's files).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import socket
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vramwise.web import api
from vramwise.web.limits import Limits, RateCap

log = logging.getLogger("vramwise.web")

API = "/api/v1"
# Shown at / when the package carries no page (an install without web/static/): the API still answers.
_NO_PAGE = (
    "<!doctype html><meta charset=utf-8><title>vramwise</title><p>vramwise's API is at <a href=/api/v1/openapi.json>"
    "/api/v1/openapi.json</a>; this install has no page (src/vramwise/web/static/index.html).</p>"
)
_INTERNAL = json.dumps({"error": "internal error", "field": None, "allowed": None}).encode()


def static_dir() -> Path:
    """The page's assets, shipped in the package (no CDN: the page works offline)."""
    return Path(str(resources.files("vramwise.web").joinpath("static")))


class Guard:
    """Outermost: the rate cap on the API, then a catch-all. A response already started when an exception comes
    cannot be replaced: the connection is then closed by the server, still without a traceback."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.cap = RateCap(limits.rate, limits.burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(API + "/"):
            client = scope.get("client")
            wait = self.cap.wait(client[0] if client else "unknown")
            if wait > 0:
                response = api.error_response(
                    429, f"too many requests: at most {self.cap.rate:g} a second from one address "
                         f"(bursts of {self.cap.burst}); retry in {wait:.1f} s",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))})
                await response(scope, receive, send)
                return
        sent = {"started": False, "done": False}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                sent["done"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if sent["done"]:
                return  # Starlette already answered with _internal's body: logged, not raised again
            if sent["started"]:
                raise
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(_INTERNAL)).encode())]})
            await send({"type": "http.response.body", "body": _INTERNAL})


async def _index(request: Request) -> Response:
    page = static_dir() / "index.html"
    if page.is_file():
        return FileResponse(page, media_type="text/html")
    return HTMLResponse(_NO_PAGE)


async def _internal(request: Request, exc: Exception) -> Response:
    """Starlette's last handler (ServerErrorMiddleware): the generic body; the traceback goes to the log only."""
    return Response(_INTERNAL, status_code=500, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """404, 405 and the like: the API's error body under /api/, plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(API + "/") or request.url.path == API:
        return api.error_response(exc.status_code, str(exc.detail).lower(), None, None, exc.headers)
    return Response(str(exc.detail), status_code=exc.status_code, headers=exc.headers)


# The names of this machine a browser may use for a server bound to 127.0.0.1. Any other Host header is refused
# (400): a page elsewhere that rebinds its own domain name to 127.0.0.1 then cannot reach the API as same-origin.
# (Starlette's TrustedHostMiddleware cuts the port at the first ":", so an IPv6 literal cannot be listed: a server
# bound to ::1 is left unchecked.)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def create_app(limits: Limits | None = None, hosts: Sequence[str] | None = None) -> ASGIApp:
    """The whole application, wrapped in its guards; ``hosts``: the Host names accepted (None: any)."""
    limits = limits or Limits()
    workers = api.Workers(limits.workers, limits.timeout)
    routes: list[Any] = [
        Route("/", _index, methods=["GET"]),
        Route(f"{API}/infer", api.estimate_endpoint("infer", limits, workers), methods=["POST"]),
        Route(f"{API}/train", api.estimate_endpoint("train", limits, workers), methods=["POST"]),
        Route(f"{API}/fit", api.estimate_endpoint("fit", limits, workers), methods=["POST"]),
        Route(f"{API}/options", api.options_endpoint, methods=["GET"]),
        Route(f"{API}/models", api.models_endpoint, methods=["GET"]),
        Route(f"{API}/gpus", api.gpus_endpoint, methods=["GET"]),
        Route(f"{API}/formats", api.formats_endpoint, methods=["GET"]),
        Route(f"{API}/openapi.json", api.openapi_endpoint, methods=["GET"]),
    ]
    if static_dir().is_dir():  # an install without the page still answers /static/... with 404, not a 500
        routes.append(Mount("/static", StaticFiles(directory=static_dir()), name="static"))
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))] if hosts is not None else []
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: _http_error, Exception: _internal})
    return Guard(app, limits)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), bound before the server starts so that a port in use
    is one error line and the URL printed names the port really bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # the response's head and body are two writes: without TCP_NODELAY (inherited by every accepted connection)
        # Nagle's algorithm holds the body until the client's delayed ACK, 40 ms later, on every keep-alive request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(sock: socket.socket, limits: Limits | None = None, hosts: Sequence[str] | None = None) -> None:
    """Serve on ``sock`` until interrupted (uvicorn, one process: an estimate is milliseconds of CPU)."""
    import uvicorn

    # proxy_headers off: the rate cap's client is the socket's peer, never an X-Forwarded-For a client wrote itself
    config = uvicorn.Config(create_app(limits, hosts), log_level="warning", access_log=False, proxy_headers=False)
    api.warm()
    # what is loaded now (the catalog, the option table, the estimate path, Starlette) lives as long as the server:
    # out of the collector's way, so that a full collection under load scans only the requests' own objects
    # (bench/web_load.py on the busy 2-core machine: p99 35-110 ms without, 15-35 ms in most rounds with it)
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["API", "LOOPBACK_HOSTS", "Guard", "bind", "create_app", "serve", "static_dir"]

"""The JSON API: ``POST /api/v1/{infer,train,fit}`` answer with exactly the command line's ``--json`` document.

A request is ``{"args": {<long flag>: value, ...}, "config": "<a config.json's text>"}``; the options go through
``parse_options`` (the command line's own parser) and the documents through ``app.documents`` (what
``vramwise ... --json`` prints), so that the page, the API and the CLI cannot disagree. An estimate is pure CPU
work of a few milliseconds (a fit search, a hub lookup: longer): it runs in a bounded pool of threads
(``Workers``), so the event loop keeps answering while one runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from vramwise.cli.options import command_line, parse_options, setup_values
from vramwise.errors import VramwiseError, shown
from vramwise.web.describe import openapi, options_listing
from vramwise.web.limits import Limits

UPLOADED = "uploaded"  # a dropped config.json is read from <private dir>/uploaded/config.json: MODEL's name
UPLOADED_SOURCE = "config.json (uploaded)"  # what the document says instead of the private path
MAX_QUERY = 200  # characters of ?q= kept
MAX_COMMAND_HEADER = 4096  # a longer command line is left out of the headers (servers cap a header near 8 KiB)
T = TypeVar("T")


class Workers:
    """The threads estimates run in: the event loop stays free for other requests, at most ``limit`` estimates run
    at once (the GIL makes more threads no faster; the others wait their turn), and an estimate past ``timeout``
    seconds is answered 503 and left to finish in its thread (Python cannot stop it), still counted: when every
    thread holds such an estimate, requests are answered 503 at once instead of piling up. Shared by the three
    estimate routes of one application."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit, self.timeout = limit, timeout
        self._running = 0  # threads running an estimate, those answered 503 included (changed under _lock)
        self._lock = threading.Lock()
        self._slots: anyio.CapacityLimiter | None = None

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        if self._slots is None:  # made inside the event loop that uses it
            self._slots = anyio.CapacityLimiter(self.limit)

        def job() -> T:
            try:
                return func(*args)
            finally:
                with self._lock:
                    self._running -= 1

        try:
            with anyio.fail_after(self.timeout):
                async with self._slots:
                    with self._lock:
                        if self._running >= self.limit:  # every thread still holds an estimate past its time
                            raise BadRequest(503, f"the server is busy with {self._running} long estimates; retry "
                                                  "later, or run this one with the command line")
                        self._running += 1
                    return await anyio.to_thread.run_sync(job, abandon_on_cancel=True)
        except TimeoutError:
            raise BadRequest(503, f"the estimate took more than {self.timeout:g} s (it finishes in the background); "
                                  "the command line runs it without a time limit") from None


class BadRequest(Exception):
    """A request the API refuses before any estimate: its status and the one-line body."""

    def __init__(self, status: int, message: str, field: str | None = None, allowed: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.allowed = status, field, allowed


def error_response(status: int, message: str, field: str | None = None, allowed: str | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The API's one error body: ``{"error", "field", "allowed"}``."""
    return JSONResponse({"error": message, "field": field, "allowed": allowed}, status_code=status, headers=headers)


def document_response(doc: dict[str, Any], fits: bool, command: str = "") -> Response:
    from vramwise.report.json_out import render_json  # the CLI's own rendering, byte for byte

    headers = {"X-Vramwise-Fits": "true" if fits else "false"}
    if command.isascii() and command.isprintable() and len(command) <= MAX_COMMAND_HEADER:
        headers["X-Vramwise-Command"] = command  # the same request as a command line
    return Response(render_json(doc) + "\n", media_type="application/json", headers=headers)


async def read_body(request: Request, limits: Limits) -> dict[str, Any]:
    """The request's JSON object, read up to the cap (413 past it, before the rest is read). The content type must
    say JSON: a browser sends a cross-site form or text/plain POST without asking, but asks (a CORS preflight, which
    this server never grants) before a JSON one, so no other site's page can make a visitor's browser run
    estimates or hub lookups here."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body:
        raise BadRequest(413, f"the request body is {int(declared):,} bytes; at most {limits.max_body:,}")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest(415, f"the body must be JSON sent as application/json, not {shown(kind or 'no type')}",
                         "content-type", "application/json")
    raw = await _bounded(request, limits.max_body)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, an integer Python refuses, too deep
        raise BadRequest(400, f"the body is not JSON: {shown(str(err))}", "body",
                         'a JSON object {"args": {...}, "config": ...}') from None
    if not isinstance(body, dict):
        raise BadRequest(400, f"the body is a JSON {type(body).__name__}, not an object", "body",
                         'a JSON object {"args": {...}, "config": ...}')
    extra = sorted(set(body) - {"args", "config"})
    if extra:
        raise BadRequest(400, f"unknown key {shown(extra[0])} in the body: args and config only", extra[0],
                         "args, config")
    args = body.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadRequest(400, "args must be an object of options by their long flag (gpu-util, peft, batch)",
                         "args", "an object")
    config = body.get("config")
    if config is not None and not isinstance(config, str):
        raise BadRequest(400, "config must be a config.json's text", "config", "a string")
    if config is not None and len(config.encode("utf-8", "surrogatepass")) > limits.max_config:
        raise BadRequest(413, f"the config is over {limits.max_config:,} bytes", "config",
                         f"at most {limits.max_config:,} bytes")
    return {"args": args, "config": config}


async def _bounded(request: Request, cap: int) -> bytes:
    """The body, read until it passes ``cap`` bytes (413; a chunked body declares no length)."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise BadRequest(413, f"the request body is over {cap:,} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away mid-body: nobody to answer, nothing to log as an error
        raise BadRequest(400, "the client closed the connection before the body ended", "body") from None
    return b"".join(chunks)


def answer(command: str, args: Mapping[str, Any], config: str | None) -> tuple[dict[str, Any], bool]:
    """The document and whether it fits (run in a worker thread). A dropped config is written to a private
    directory of this request only, read as MODEL, and removed."""
    if config is None:
        return _document(command, parse_options(command, args))
    folder = tempfile.mkdtemp(prefix="vramwise-web-")  # mode 0700: this process's user only
    try:
        path = os.path.join(folder, UPLOADED, "config.json")
        os.mkdir(os.path.dirname(path), 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as out:
            out.write(config)
        doc, fits = _document(command, parse_options(command, args, model_path=path))
        return _hide(doc, path), fits
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def warm() -> None:
    """Load what every request needs (the estimate path, the parsers, the listings) before the first one comes."""
    for command, args in (("infer", {"model": "llama-2-7b"}), ("train", {"model": "llama-2-7b"})):
        answer(command, args, None)
    options_listing()
    openapi()


def _document(command: str, values: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    from vramwise.app.documents import document_for

    done = document_for(command, values, setup_values(values))
    return done.doc, done.fits


def _hide(value: Any, path: str) -> Any:
    """The document with the private path replaced by what the user sent (the server's disk is not shown)."""
    if isinstance(value, str):
        return value.replace(path, UPLOADED_SOURCE).replace(os.path.dirname(path), UPLOADED)
    if isinstance(value, list):
        return [_hide(v, path) for v in value]
    if isinstance(value, dict):
        return {k: _hide(v, path) for k, v in value.items()}
    return value


def estimate_endpoint(command: str, limits: Limits, workers: Workers) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            body = await read_body(request, limits)
            doc, fits = await workers.run(answer, command, body["args"], body["config"])
        except BadRequest as err:
            return error_response(err.status, str(err), err.field, err.allowed)
        except VramwiseError as err:
            return error_response(400, _one_line(str(err)), err.field, err.allowed)
        shown_as = command_line(command, body["args"], model="config.json" if body["config"] is not None else None)
        return document_response(doc, fits, shown_as)

    return endpoint


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "bad input"


async def options_endpoint(request: Request) -> Response:
    return JSONResponse(options_listing())


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(openapi())


@cache
def _models() -> tuple[dict[str, Any], ...]:
    from dataclasses import asdict

    from vramwise.app.listings import list_models

    return tuple(asdict(r) for r in list_models())


async def models_endpoint(request: Request) -> Response:
    """``vramwise models --json``, filtered by ``?q=`` (in the name or the hub id, case-insensitive)."""
    query = request.query_params.get("q", "")[:MAX_QUERY].strip().lower()
    rows = await run_in_threadpool(_models)
    kept = [r for r in rows if not query or query in r["name"].lower() or query in (r.get("hf_id") or "").lower()]
    return JSONResponse({"models": kept})


async def gpus_endpoint(request: Request) -> Response:
    from vramwise.app.listings import list_gpus
    from vramwise.report.listings import gpus_json

    return Response(gpus_json(list_gpus()) + "\n", media_type="application/json")


async def formats_endpoint(request: Request) -> Response:
    """``vramwise formats --json``: the weight formats a ``format`` option names (a form's choice list)."""
    from vramwise.app.listings import list_formats
    from vramwise.report.listings import formats_json

    return Response(formats_json(list_formats()) + "\n", media_type="application/json")

"""A stand-in for the Hugging Face hub on 127.0.0.1, for tests that must never touch the internet.

Point ``HF_ENDPOINT`` at ``HubServer.url`` and huggingface_hub talks to this server instead of huggingface.co.
It serves whatever files a test gives it, per repo (config.json, safetensors, GGUF files, anything), with the
responses huggingface_hub 2.4 reads (``huggingface_hub/file_download.py: get_hf_file_metadata``,
``hf_api.py: parse_safetensors_file_metadata``, ``utils/_http.py: hf_raise_for_status``):

- ``HEAD|GET /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag``, ``Content-Length``; ``Range:
  bytes=a-b`` answered 206 with ``Content-Range`` (416 past the end);
- ``GET /api/models/{repo}[/revision/{revision}]``: ``{"id", "sha", "siblings": [{"rfilename"}], "gated"}``;
- ``GET /api/models/{repo}/tree/{revision}``: every file as ``{"type", "oid", "size", "path"}`` (snapshot_download);
- errors as the hub sends them: a repo that does not exist or is private without its token: 401 with
  ``X-Error-Code: RepoNotFound``; a gated repo without the token: 401 with ``X-Error-Code: GatedRepo``; an
  unknown revision: 404 ``RevisionNotFound``; a missing file: 404 ``EntryNotFound`` (with ``X-Repo-Commit``).

Every request is logged (``Served``: method, path, Range header, body bytes sent), so a test can assert that
reading a checkpoint fetched its headers and not its weights.

Use the ``hub_server`` fixture (re-exported by ``tests/conftest.py``): a server on a random port, in a thread,
stopped after the test; ``HF_ENDPOINT`` is set for the test, and ``HF_HUB_CACHE`` points into ``tmp_path``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest


@dataclass(frozen=True)
class SparseFile:
    """A large file served without holding it: ``prefix`` (a safetensors header, say), then zeros to ``size``.

    Lets a test or benchmark serve a checkpoint the size of a real one (16 GB) from a few KB of memory."""

    prefix: bytes
    size: int

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, part: slice) -> bytes:
        start, stop, _ = part.indices(self.size)
        head = self.prefix[start:stop]
        return head + bytes(max(0, stop - max(start, len(self.prefix))))


# bytes per element of the dtypes sparse_safetensors writes (safetensors/src/tensor.rs, Dtype::bitsize / 8)
_WIDTH = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I8": 1, "U8": 1, "F8_E4M3": 1}


def sparse_safetensors(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> SparseFile:
    """A safetensors file of the given (dtype, shape) per tensor, its data all zeros and never held: the header
    as the format writes it (8-byte little-endian length, JSON with data_offsets in order), then ``size``."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = _WIDTH[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header with spaces to 8-byte alignment
    prefix = len(raw).to_bytes(8, "little") + raw
    return SparseFile(prefix=prefix, size=len(prefix) + offset)


def _digest(data: bytes | SparseFile) -> bytes:
    if isinstance(data, SparseFile):
        return hashlib.sha256(data.prefix + data.size.to_bytes(8, "little")).digest()
    return hashlib.sha256(data).digest()


@dataclass
class Repo:
    """One model repo: its files (path -> bytes) at one commit, and who may read it."""

    files: dict[str, bytes | SparseFile]
    gated: bool = False  # 401 GatedRepo unless the request carries ``token``
    private: bool = False  # 401 RepoNotFound unless the request carries ``token`` (the hub hides private repos)
    token: str = "hf_test_token"
    branches: tuple[str, ...] = ("main",)  # revisions that name the commit, besides the commit hash itself
    delay_s: float = 0.0  # wait this long before answering (a stalled connection, for timeout tests)
    ranges: bool = True  # False: answer every Range request with the whole file (200), as some mirrors do

    @functools.cached_property
    def commit(self) -> str:
        """A 40-hex commit id from the files (computed once: give a Repo its files before serving it)."""
        h = hashlib.sha1()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + _digest(self.files[name]))
        return h.hexdigest()


@dataclass(frozen=True)
class Served:
    """One request as the server answered it."""

    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass
class HubServer:
    """The loopback hub: add repos to ``repos`` (repo id -> Repo) at any time; read ``log`` afterwards."""

    repos: dict[str, Repo] = field(default_factory=dict)
    log: list[Served] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        # a short poll: shutdown() waits up to one interval, and every test stops its server
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bytes_served(self, suffix: str = "") -> int:
        """Body bytes sent for files whose path ends with ``suffix`` (every request when empty)."""
        return sum(s.body_bytes for s in self.log if s.path.endswith(suffix))

    def requests_for(self, suffix: str) -> list[Served]:
        return [s for s in self.log if s.path.endswith(suffix)]

    def files_served(self) -> dict[str, int]:
        """Body bytes sent per file (its path in the repo), for the files whose content was sent at all."""
        out: dict[str, int] = {}
        for s in self.log:
            m = _RESOLVE.match(unquote(s.path))
            if m is not None and s.body_bytes:
                out[m.group("path")] = out.get(m.group("path"), 0) + s.body_bytes
        return out


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that stops reading once it has the bytes it wants (a ranged read of a server ignoring Range,
        a test stopping the server) is how the readers work, not a server error: no traceback for it."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/.*)?$")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
# huggingface_hub fetches this once a day to name the agent in its user agent; an empty one turns detection off.
_EMPTY_REGISTRY = {"standardEnvVars": [], "harnesses": {}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer carries Content-Length
    # headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm holds the body until the
    # client's delayed ACK (~40 ms a request on Linux loopback), which a real hub's server does not add
    disable_nagle_algorithm = True
    server_hub: HubServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the test reads HubServer.log

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    # --- routing --------------------------------------------------------------------------------------------

    def _answer(self, *, head: bool) -> None:
        path = unquote(self.path.split("?", 1)[0])
        if m := _RESOLVE.match(path):
            self._resolve(m.group("repo"), m.group("rev"), m.group("path"), head=head)
        elif m := _TREE.match(path):
            self._tree(m.group("repo"), m.group("rev"), head=head)
        elif m := _API.match(path):
            self._api(m.group("repo"), m.group("rev"), head=head)
        elif path == "/api/agent-harnesses":  # huggingface_hub's user-agent registry (utils/_detect_agent.py)
            self._send(200, json.dumps(_EMPTY_REGISTRY).encode(), head=head, content_type="application/json")
        else:
            self._send(404, b"not a hub route", head=head)

    def _repo(self, repo_id: str, rev: str | None, *, head: bool) -> Repo | None:
        """The repo if this request may read it at ``rev``; otherwise the hub's error is sent and None returned."""
        repo = self.server_hub.repos.get(repo_id)
        if repo is not None and repo.delay_s:
            time.sleep(repo.delay_s)
        auth = self.headers.get("authorization", "")
        allowed = repo is not None and (not (repo.gated or repo.private) or auth == f"Bearer {repo.token}")
        if repo is None or (repo.private and not allowed):
            self._send(401, b"Repository not found", head=head, error="RepoNotFound")
            return None
        if not allowed:
            self._send(401, b"Access to this model is restricted", head=head, error="GatedRepo")
            return None
        if rev is not None and rev not in (*repo.branches, repo.commit):
            self._send(404, b"Revision not found", head=head, error="RevisionNotFound")
            return None
        return repo

    def _api(self, repo_id: str, rev: str | None, *, head: bool) -> None:
        repo = self._repo(repo_id, rev, head=head)
        if repo is None:
            return
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.commit,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        }
        self._send(200, json.dumps(info).encode(), head=head, content_type="application/json")

    def _tree(self, repo_id: str, rev: str, *, head: bool) -> None:
        """The file listing snapshot_download reads (hf_api.py: list_repo_tree), in one page."""
        repo = self._repo(repo_id, rev, head=head)
        if repo is None:
            return
        entries = [
            {"type": "file", "oid": _digest(data).hex()[:40], "size": len(data), "path": name}
            for name, data in sorted(repo.files.items())
        ]
        self._send(200, json.dumps(entries).encode(), head=head, content_type="application/json")

    def _resolve(self, repo_id: str, rev: str, name: str, *, head: bool) -> None:
        repo = self._repo(repo_id, rev, head=head)
        if repo is None:
            return
        extra = {"X-Repo-Commit": repo.commit}
        data = repo.files.get(name)
        if data is None:
            self._send(404, b"Entry not found", head=head, error="EntryNotFound", headers=extra)
            return
        extra["ETag"] = '"' + _digest(data).hex() + '"'
        extra["Accept-Ranges"] = "bytes"
        spec = self.headers.get("range")
        m = _RANGE.match(spec.strip()) if spec else None
        if m is None or (not m.group(1) and not m.group(2)) or not repo.ranges:
            body = b"" if head else data[0 : len(data)]  # a HEAD never builds a sparse file's body
            self._send(200, body, head=head, headers=extra, range_=spec, length=len(data))
            return
        size = len(data)
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # "bytes=-n": the last n bytes
            start, end = max(size - int(m.group(2)), 0), size - 1
        if start >= size or end < start:
            extra["Content-Range"] = f"bytes */{size}"
            self._send(416, b"", head=head, headers=extra, range_=spec)
            return
        extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(206, data[start : end + 1], head=head, headers=extra, range_=spec)

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        head: bool,
        error: str | None = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
        range_: str | None = None,
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if error is not None:
            self.send_header("X-Error-Code", error)
            self.send_header("X-Error-Message", body.decode())
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        # logged before the body goes out: once the client has the answer, the test can read the log
        path = self.path.split("?", 1)[0]
        self.server_hub.log.append(Served(self.command, path, range_, status, 0 if head else len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A loopback hub for one test: ``HF_ENDPOINT`` points at it, ``HF_HUB_CACHE`` at an empty folder in
    ``tmp_path``, and no token or offline flag leaks in from the environment."""
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login from the machine running tests
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, when first imported (constants.py), and blocks
    # every request when it was offline then (utils/_http.py: hf_request_event_hook): tests/conftest.py makes
    # every test offline, so its constants are set here to what this test's environment says.
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.url)
    # hf_hub_url swaps huggingface.co for its endpoint argument in this template, built from HF_ENDPOINT at import
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    try:
        yield server
    finally:
        server.stop()

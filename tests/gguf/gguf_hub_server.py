"""A minimal loopback hub for the GGUF tests (the ``gguf_hub`` fixture of conftest.py): the three routes
huggingface_hub 2.4 uses to list a repo and read a file's header with ranged requests, nothing more
(tests/hub_server.py, when on main, is the full stand-in).

- ``GET /api/models/{repo}/tree/{rev}``: every file as ``{"type": "file", "path", "size", "oid"}``
  (``HfApi.list_repo_tree``);
- ``GET /{repo}/resolve/{rev}/{path}`` with ``Range: bytes=a-b``: 206 and ``Content-Range``;
- errors as the hub sends them (``utils/_http.py: hf_raise_for_status`` reads ``X-Error-Code``): an unknown repo
  401 ``RepoNotFound``, a gated repo without its token 401 ``GatedRepo``.

Every body sent is logged per path, so a test can assert that only the header was fetched.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

TOKEN = "hf_gguf_test_token"


@dataclass
class GgufHub:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo -> path -> bytes
    gated: set[str] = field(default_factory=set)
    served: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # path -> body bytes sent
    url: str = ""


_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/[^/]+(?:/.*)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$")
_RANGE = re.compile(r"bytes=(\d+)-(\d+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: GgufHub

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = unquote(self.path.split("?", 1)[0])
        if path == "/api/agent-harnesses":  # huggingface_hub's user-agent registry (utils/_detect_agent.py)
            return self.send(200, b'{"standardEnvVars": [], "harnesses": {}}')
        m = _TREE.match(path) or _RESOLVE.match(path)
        repo = self.hub.repos.get(m.group(1)) if m else None
        if m is None or repo is None:
            return self.send(401, b"Repository not found", {"X-Error-Code": "RepoNotFound"})
        if m.group(1) in self.hub.gated and self.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.send(401, b"Access to this model is restricted", {"X-Error-Code": "GatedRepo"})
        if m.re is _TREE:
            files = [{"type": "file", "path": p, "size": len(d), "oid": "0" * 40} for p, d in repo.items()]
            return self.send(200, json.dumps(files).encode(), {"Content-Type": "application/json"})
        return self.file(repo, m.group(2))

    def file(self, repo: dict[str, bytes], name: str) -> None:
        if name not in repo:
            return self.send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
        data, r = repo[name], _RANGE.match(self.headers.get("range", ""))
        if r is None:
            self.hub.served[name] += len(data)
            return self.send(200, data)
        start, end = int(r.group(1)), min(int(r.group(2)), len(data) - 1)
        self.hub.served[name] += end + 1 - start
        self.send(206, data[start : end + 1], {"Content-Range": f"bytes {start}-{end}/{len(data)}"})

"""A GGUF in a Hugging Face hub repo, read through ranged requests: the header only, never the weights.

MODEL names it as llama.cpp's ``-hf`` option does, ``org/name[@revision]:TAG`` (the file whose name holds the
quantization tag, e.g. ``:Q4_K_M``; a split set brings every part), or by its path,
``org/name[@revision]/path/file.gguf``. The repo's file listing (``HfApi.list_repo_tree``, with sizes) picks the
files; each header is then read with HTTP ``Range`` requests that start at 1 MiB and double until the tensor
infos are in (``spec/gguf_header.py``), so what is fetched stays within twice the header.

The local cache comes first (``HF_HUB_CACHE``, or ``~/.cache/huggingface/hub``): a file downloaded there is read
from disk. ``HF_HUB_OFFLINE=1`` reads the cache only; ``HF_ENDPOINT`` points at another hub; gated and private
repos use ``HF_TOKEN`` or the stored login. ``huggingface_hub`` is imported here only, for such a MODEL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vramwise.errors import ConfigError, shown
from vramwise.spec.gguf_file import SPLIT_NAME, model_from_headers, read_local
from vramwise.spec.gguf_header import GgufHeader, read_header
from vramwise.spec.model import ModelSpec

_FIELD = "model"
_ALLOWED = "org/name:TAG (e.g. :Q4_K_M) or org/name/path/file.gguf for a GGUF in a hub repo"
# huggingface_hub's repo-id rule (letters, digits, "-", "_", "."), an optional @revision, then :TAG or /path.gguf
_TAGGED = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+?))?:(?P<tag>[\w.-]+)", re.ASCII)
_PATHED = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w.-]+))?/(?P<path>.+\.gguf)", re.ASCII | re.I)
# llama.cpp's -hf picks Q4_K_M when no tag is given (common/arg.cpp, "default to Q4_K_M").
DEFAULT_TAG = "Q4_K_M"
_TIMEOUT_S = 10.0  # huggingface_hub's own default for metadata requests (constants.HF_HUB_ETAG_TIMEOUT)
# The tree API pages its listing; 100 pages bound the loop (a repo of GGUF files lists tens of files).
_MAX_PAGES = 100


@dataclass(frozen=True)
class HubRef:
    repo: str
    revision: str | None
    tag: str | None  # org/name:TAG
    path: str | None  # org/name/path/file.gguf

    @property
    def label(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.repo}{rev}:{self.tag}" if self.tag else f"{self.repo}{rev}/{self.path}"


def parse_ref(text: str) -> HubRef | None:
    """``org/name[@rev]:TAG`` or ``org/name[@rev]/path.gguf`` as a HubRef; None for anything else."""
    if m := _TAGGED.fullmatch(text):
        return HubRef(m.group("repo"), m.group("rev"), m.group("tag"), None)
    if m := _PATHED.fullmatch(text):
        return HubRef(m.group("repo"), m.group("rev"), None, m.group("path"))
    return None


def _truthy(name: str) -> bool:  # huggingface_hub constants._is_true, read when asked (tests set it per test)
    return os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")


def _error(ref: HubRef, what: str, allowed: str = _ALLOWED) -> ConfigError:
    return ConfigError(f"hf:{shown(ref.label, 200, quote=False)}: {what}", field=_FIELD, allowed=allowed)


# --- choosing the files ----------------------------------------------------------------------------------------------


def _models(files: list[str]) -> dict[str, list[str]]:
    """GGUF models in a listing: first file -> every part (split sets grouped); vision projectors left out."""
    out: dict[str, list[str]] = {}
    for f in sorted(files):
        base = f.rsplit("/", 1)[-1]
        if not base.lower().endswith(".gguf") or "mmproj" in base.lower():
            continue
        m = SPLIT_NAME.match(base)
        if m and int(m.group("no")) != 1:
            continue
        if m:
            count = int(m.group("count"))
            stem = f[: len(f) - len(base)] + m.group("stem")
            out[f] = [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
        else:
            out[f] = [f]
    return out


def choose(ref: HubRef, files: list[str]) -> list[str]:
    """The files (every part of a split set) that ``ref`` names among a repo's ``files``."""
    models = _models(files)
    if ref.path is not None:
        first = next((k for k, parts in models.items() if ref.path in parts), None)
        if first is None:
            raise _error(ref, f"no file '{shown(ref.path, 120, quote=False)}' in the repo; its GGUF files: "
                         f"{_listing(models)}")
        return models[first]
    tag = (ref.tag or DEFAULT_TAG).lower()
    # The tag as a whole part of the name (between "-", ".", "/" or the ends), else anywhere in it.
    whole = re.compile(rf"(^|[-./]){re.escape(tag)}([-./]|$)")
    found = [k for k in models if whole.search(k.lower())] or [k for k in models if tag in k.lower()]
    if len(found) == 1:
        return models[found[0]]
    if not found and ref.tag is None and len(models) == 1:
        return next(iter(models.values()))
    what = "matches several GGUF files" if found else "matches no GGUF file"
    return _refuse_choice(ref, what, found or list(models))


def _refuse_choice(ref: HubRef, what: str, names: list[str]) -> list[str]:
    tag = ref.tag or DEFAULT_TAG
    raise _error(ref, f"tag '{shown(tag, 40, quote=False)}' {what}: {_listing(dict.fromkeys(names))}; give a tag "
                 "that names one, or the file's path (org/name/path/file.gguf)")


def _listing(models: Mapping[str, object]) -> str:
    names = list(models)
    shown_names = ", ".join(shown(n, 80, quote=False) for n in names[:12])
    return (shown_names + (f" and {len(names) - 12} more" if len(names) > 12 else "")) or "none"


# --- reading ---------------------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    cache = os.environ.get("HF_HUB_CACHE")
    if cache:
        return Path(cache).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _snapshot(ref: HubRef) -> Path | None:
    """The cached snapshot of the repo at the revision (huggingface_hub's cache layout), if any."""
    repo_dir = _cache_dir() / ("models--" + ref.repo.replace("/", "--"))
    rev = ref.revision or "main"
    ref_file = repo_dir / "refs" / rev
    commit = ref_file.read_text().strip() if ref_file.is_file() else rev
    snap = repo_dir / "snapshots" / commit
    return snap if snap.is_dir() else None


def _cached_files(snap: Path) -> list[str]:
    return sorted(str(p.relative_to(snap)) for p in snap.rglob("*.gguf"))


class _Hub:
    """The requests to one hub (``HF_ENDPOINT``), with the token huggingface_hub would send."""

    def __init__(self) -> None:
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers

        self.endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        self.session, self.headers = get_session(), build_hf_headers()
        self.fetched = 0  # bytes of file content received, for the tests' "header only" check

    def files(self, ref: HubRef) -> dict[str, int]:
        """Every file of the repo with its size: the hub's tree API (what HfApi.list_repo_tree reads), asked once
        per page. HfApi retries a refused connection five times with backoff (23 s here, offline); one try and
        one line are better for a user without network."""
        from urllib.parse import quote

        from huggingface_hub.utils import hf_raise_for_status

        url: str | None = f"{self.endpoint}/api/models/{ref.repo}/tree/{quote(ref.revision or 'main', safe='')}"
        params: dict[str, str] | None = {"recursive": "true"}
        out: dict[str, int] = {}
        for _ in range(_MAX_PAGES):
            if url is None:
                return out
            r = self.session.get(url, params=params, headers=self.headers, timeout=_TIMEOUT_S, follow_redirects=True)
            hf_raise_for_status(r)
            entries = r.json()
            if not isinstance(entries, list):
                raise _error(ref, "the hub's file listing is not a list; is HF_ENDPOINT a Hugging Face hub?")
            for e in entries:
                if isinstance(e, dict) and e.get("type") == "file" and isinstance(e.get("size"), int):
                    out[str(e.get("path"))] = e["size"]
            url, params = r.links.get("next", {}).get("url"), None
        raise _error(ref, f"the repo lists more than {_MAX_PAGES} pages of files; give the file's path")

    def header(self, ref: HubRef, path: str, size: int) -> GgufHeader:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import hf_raise_for_status

        url = hf_hub_url(ref.repo, path, revision=ref.revision, endpoint=self.endpoint)
        headers, session = self.headers, self.session

        def fetch(offset: int, length: int) -> bytes:
            # Streamed and cut at ``length``: a server that ignores Range (200, the whole file) costs no more.
            wanted = {**headers, "Range": f"bytes={offset}-{offset + length - 1}"}
            with session.stream("GET", url, headers=wanted, follow_redirects=True, timeout=_TIMEOUT_S) as r:
                if r.status_code >= 400:
                    r.read()  # the error body (small) names the hub's reason
                    hf_raise_for_status(r)
                if r.status_code != 206 and offset:  # the whole file from byte 0: not the bytes asked for
                    raise _error(ref, f"the hub answered {r.status_code} to a ranged read of {path}, not 206")
                data = bytearray()
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) >= length:
                        break
            self.fetched += min(len(data), length)
            return bytes(data[:length])

        return read_header(fetch, size, f"hf:{ref.repo}/{path}")


def _fail(ref: HubRef, err: Exception) -> ConfigError:
    """One line with the fix for each way the hub refuses (huggingface_hub.errors)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return _error(ref, "the repo is gated: accept its terms on the hub page, then set HF_TOKEN (or `hf auth "
                      "login`) with a token that may read it")
    if isinstance(err, RepositoryNotFoundError):
        return _error(ref, "no such repo on the hub (or it is private: set HF_TOKEN, or `hf auth login`)")
    if isinstance(err, RevisionNotFoundError):
        return _error(ref, f"no revision '{shown(ref.revision, 60, quote=False)}' in the repo")
    if isinstance(err, EntryNotFoundError):
        return _error(ref, "the file is not in the repo")
    if isinstance(err, OfflineModeIsEnabled):
        return _error(ref, "not in the local cache, and HF_HUB_OFFLINE is set: unset it to read the hub")
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "no answer"
        return _error(ref, f"the hub answered {status}; try again, or download the file and pass its path")
    return _error(ref, f"cannot reach the hub ({type(err).__name__}); check the network or HF_ENDPOINT, or set "
                  "HF_HUB_OFFLINE=1 to read the local cache")


def hub_gguf_model(ref: HubRef) -> tuple[ModelSpec, Mapping[str, Any]]:
    """The spec of a GGUF in a hub repo (cache first), from the header(s) only."""
    snap = _snapshot(ref)
    offline = _truthy("HF_HUB_OFFLINE")
    if snap is not None:
        cached = _cached_files(snap)
        try:
            parts = choose(ref, cached)
        except ConfigError:
            if offline:
                raise
        else:
            if all((snap / p).is_file() for p in parts):
                return _model(ref, [(f"{ref.repo}/{p}", read_local(snap / p)) for p in parts], parts)
    if offline:
        raise _error(ref, "not in the local cache, and HF_HUB_OFFLINE is set: unset it to read the hub, or "
                     f"download the file (hf download {ref.repo} <file>.gguf)")
    import httpx2

    try:
        hub = _Hub()
        sizes = hub.files(ref)
        parts = choose(ref, list(sizes))
        missing = [p for p in parts if p not in sizes]
        if missing:
            raise _error(ref, f"split GGUF part '{shown(missing[0], 120, quote=False)}' is missing from the repo")
        headers = [(f"hf:{ref.repo}/{p}", hub.header(ref, p, sizes[p])) for p in parts]
    except (httpx2.HTTPError, OSError) as err:  # HfHubHTTPError is an OSError
        raise _fail(ref, err) from None
    return _model(ref, headers, parts)


def _model(ref: HubRef, headers: list[tuple[str, GgufHeader]], parts: list[str]) -> tuple[ModelSpec, Mapping]:
    base = parts[0].rsplit("/", 1)[-1]
    m = SPLIT_NAME.match(base)
    name = m.group("stem") if m else base.removesuffix(".gguf").removesuffix(".GGUF")
    return model_from_headers(headers, name=shown(name, 200, quote=False), source=f"hf:{ref.label}")


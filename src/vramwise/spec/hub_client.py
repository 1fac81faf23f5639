"""The one client vramwise uses to talk to a Hugging Face hub: the environment, the cache, ranged reads, the file
listing and the one-line errors. ``spec/hub.py`` (config.json and safetensors headers) and ``spec/gguf_hub.py``
(GGUF headers) both read the hub through here.

huggingface_hub is imported only inside these functions, so that a catalog estimate never loads it
(``tests/test_architecture.py``). The environment is read at each call, with huggingface_hub's names and rules
(``huggingface_hub/constants.py``): ``HF_ENDPOINT`` (the hub's address), ``HF_HUB_CACHE`` (the cache folder;
otherwise ``$HF_HOME/hub``, ``HF_HOME`` defaulting to ``$XDG_CACHE_HOME/huggingface`` or ``~/.cache/huggingface``),
``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` (cache only); the token is ``HF_TOKEN`` or the stored login, which
huggingface_hub finds itself (``build_hf_headers``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vramwise.errors import shown

LOGIN = "accept the licence on the model page and set HF_TOKEN or run `hf auth login`"
# huggingface_hub's truthy values for HF_HUB_OFFLINE (constants.py: _is_true).
_TRUE = {"1", "ON", "YES", "TRUE"}
# The tree API pages its listing; 100 pages bound the loop (a repo lists tens of files, a few hundred shards).
_MAX_PAGES = 100


# --- the environment -----------------------------------------------------------------------------------------------


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def cache_dir() -> str:
    """huggingface_hub's cache folder (constants.py: HF_HUB_CACHE), from today's environment."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if cache:
        return str(Path(cache).expanduser())
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return str(Path(home).expanduser() / "hub")


def endpoint() -> str | None:
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def timeout(name: str) -> float:
    """huggingface_hub's timeouts, read at each call: HF_HUB_ETAG_TIMEOUT for a file's metadata (HEAD) or a
    listing, HF_HUB_DOWNLOAD_TIMEOUT for a download or a ranged read; both 10 s by default (constants.py)."""
    try:
        value = float(os.environ.get(name) or 10)
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


# --- the cache -----------------------------------------------------------------------------------------------------


NOT_A_REF = ("is not a branch, tag or commit name (git check-ref-format: no '..', no part starting with '.' or "
             "ending with '.lock', no empty part)")


def is_ref_name(revision: str) -> bool:
    """git's rule for a ref name (https://git-scm.com/docs/git-check-ref-format, rules 1, 3 and 6), which every
    branch, tag and refs/pr/N on the hub obeys, and a commit hash too. A revision names folders of the cache
    (refs/<revision>, snapshots/<revision>): one that breaks the rule ("../../x") would name a folder outside it."""
    parts = revision.split("/")
    return ".." not in revision and all(p and not p.startswith(".") and not p.endswith(".lock") for p in parts)


def cached_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The cached copy of one file at ``revision`` (a branch, tag or commit), or None; no network call."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir(), revision=revision)
    return Path(hit) if isinstance(hit, str) else None


def cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of the repo at the revision (huggingface_hub's cache layout:
    ``models--org--name/refs/<branch>`` holds the commit, ``snapshots/<commit>/`` the files), if any."""
    repo_dir = Path(cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    rev = revision or "main"
    ref_file = repo_dir / "refs" / rev
    try:
        commit = ref_file.read_text().strip() if ref_file.is_file() else rev
    except OSError:
        return None
    snap = repo_dir / "snapshots" / commit
    return snap if snap.is_dir() else None


# --- requests ------------------------------------------------------------------------------------------------------


def file_url(repo_id: str, filename: str, revision: str | None) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint())


def download(repo_id: str, filename: str, revision: str | None) -> Path:
    """A small file (config.json, an index) downloaded into the cache, or found there; its path."""
    from huggingface_hub import hf_hub_download

    got = hf_hub_download(
        repo_id,
        filename,
        revision=revision,
        cache_dir=cache_dir(),
        endpoint=endpoint(),
        etag_timeout=timeout("HF_HUB_ETAG_TIMEOUT"),
    )
    return Path(got)


def auth_headers() -> dict[str, str]:
    """The headers huggingface_hub would send: the token (HF_TOKEN or the stored login) and its user agent."""
    from huggingface_hub.utils import build_hf_headers

    return dict(build_hf_headers())


def ranged(url: str, headers: dict[str, str], start: int, end: int) -> tuple[bytes, int]:
    """Bytes ``start..end`` (inclusive) of a hub file and the file's size (-1 when the server does not say),
    streamed so that a server ignoring Range cannot send the weights: only the bytes asked for are read."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    want = end - start + 1
    asked = {**headers, "Range": f"bytes={start}-{end}"}
    limit = timeout("HF_HUB_DOWNLOAD_TIMEOUT")
    with get_session().stream("GET", url, headers=asked, timeout=limit, follow_redirects=True) as response:
        if response.status_code == 416:  # the range starts past the end of the file
            return b"", int(response.headers.get("Content-Range", "*/0").rsplit("/", 1)[-1] or 0)
        if response.status_code >= 400:
            response.read()  # the error body (small) names the hub's reason
            hf_raise_for_status(response)
        total = response.headers.get("Content-Range", "").rsplit("/", 1)[-1]
        size = int(total) if response.status_code == 206 and total.isdigit() else -1
        skip = start if response.status_code == 200 else 0  # a server ignoring Range sends from byte 0
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= skip + want:
                break
    return bytes(data[skip : skip + want]), size


class ListingError(ValueError):
    """The hub's listing is not what a Hugging Face hub sends (HF_ENDPOINT points at something else)."""


def list_files(repo_id: str, revision: str | None) -> dict[str, int]:
    """Every file of the repo (nested paths included) with its size: the hub's tree API (what
    ``HfApi.list_repo_tree`` reads), one request per page. HfApi retries a refused connection five times with
    backoff (23 s offline); one try and one line are better for a user without network."""
    from urllib.parse import quote

    from huggingface_hub.utils import get_session, hf_raise_for_status

    where = endpoint() or "https://huggingface.co"
    url: str | None = f"{where}/api/models/{repo_id}/tree/{quote(revision or 'main', safe='')}"
    params: dict[str, str] | None = {"recursive": "true"}
    headers, session, limit = auth_headers(), get_session(), timeout("HF_HUB_ETAG_TIMEOUT")
    out: dict[str, int] = {}
    for _ in range(_MAX_PAGES):
        if url is None:
            return out
        r = session.get(url, params=params, headers=headers, timeout=limit, follow_redirects=True)
        hf_raise_for_status(r)
        entries: Any = r.json()
        if not isinstance(entries, list):
            raise ListingError("the hub's file listing is not a list; is HF_ENDPOINT a Hugging Face hub?")
        for e in entries:
            if isinstance(e, dict) and e.get("type") == "file" and isinstance(e.get("size"), int):
                out[str(e.get("path"))] = e["size"]
        url, params = r.links.get("next", {}).get("url"), None
    raise ListingError(f"the repo lists more than {_MAX_PAGES} pages of files; give the file's path")


# --- errors --------------------------------------------------------------------------------------------------------


def hub_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises for a reason the user can act on (anything else is a bug and keeps its
    traceback). httpx2 is huggingface_hub's HTTP client (its connection and timeout errors)."""
    import httpx2
    from huggingface_hub import errors as e

    return (
        e.HfHubHTTPError,
        e.HFValidationError,
        e.LocalEntryNotFoundError,
        e.OfflineModeIsEnabled,
        e.SafetensorsParsingError,
        e.FileMetadataError,
        ListingError,
        httpx2.HTTPError,
        OSError,
    )


def offline_miss(what: str, fix: str) -> str:
    return (
        f"HF_HUB_OFFLINE is set and the Hugging Face cache holds no {what} for it; unset HF_HUB_OFFLINE to "
        f"download it, or {fix}"
    )


def describe(err: BaseException, *, revision: str | None, filename: str, local: str) -> str:
    """huggingface_hub's exception as the middle of one line naming the fix (the caller names the repo).
    ``local`` is what the user could pass instead (``a local config.json``, ``the .gguf file's path``)."""
    from huggingface_hub import errors as e

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, ListingError):
        return str(err)
    if isinstance(err, e.GatedRepoError):
        return f"gated repo, no access with this token; {LOGIN}"
    if isinstance(err, e.RepositoryNotFoundError):
        return (
            "no such repo on the hub, and no local file or folder of that name (a private or gated repo looks "
            f"the same without a token: {LOGIN})"
        )
    if isinstance(err, e.RevisionNotFoundError):
        return f"no revision {shown(revision or 'main')}; give a branch, tag or commit that exists"
    if isinstance(err, e.RemoteEntryNotFoundError):
        return f"the repo has no {filename}"
    if isinstance(err, e.HfHubHTTPError) and status in (401, 403):
        return f"the hub refused access ({status}); {LOGIN}"
    if isinstance(err, e.HFValidationError):
        return f"not a valid hub id ({shown(str(err).splitlines()[0], 100, quote=False)})"
    if isinstance(err, e.SafetensorsParsingError):
        return (
            f"a safetensors header is not readable ({shown(str(err), 160, quote=False)}); the checkpoint is "
            "corrupt: pass its config.json alone to estimate from the config"
        )
    if isinstance(err, e.OfflineModeIsEnabled):
        return offline_miss(filename, f"pass {local}")
    if isinstance(err, e.HfHubHTTPError):
        return f"the hub answered {status or 'an error'} for {filename}; try again later, or pass {local}"
    if isinstance(err, OSError) and not isinstance(err, (e.LocalEntryNotFoundError, ConnectionError)):
        cache = shown(cache_dir(), 120, quote=False)
        why = shown(err.strerror or str(err), 80, quote=False)
        return f"cannot use the Hugging Face cache at {cache} ({why}); set HF_HUB_CACHE to a writable folder"
    return _unreachable(err, local)


def _unreachable(err: BaseException, local: str) -> str:
    import httpx2

    where = shown(endpoint() or "https://huggingface.co", 80, quote=False)
    fix = f"; connect, or download it where you can (`hf download` it) and set HF_HUB_OFFLINE=1, or pass {local}"
    cause = err.__cause__ if isinstance(err.__cause__, httpx2.HTTPError) else err
    if isinstance(cause, httpx2.TimeoutException):
        return (
            f"the hub at {where} did not answer in time (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT: "
            f"{timeout('HF_HUB_ETAG_TIMEOUT'):g} s, {timeout('HF_HUB_DOWNLOAD_TIMEOUT'):g} s){fix}"
        )
    why = shown(type(cause).__name__, 40, quote=False)
    return f"cannot reach the hub at {where} ({why}) and it is not in the Hugging Face cache{fix}"

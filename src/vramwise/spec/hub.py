"""Hugging Face hub ids (``org/name[@revision]``): a repo's config.json and safetensors headers, never its weights.

huggingface_hub is imported here only, inside the functions, so that a catalog estimate never loads it
(``tests/test_architecture.py``). The environment is read at each call, with huggingface_hub's names and rules
(``huggingface_hub/constants.py``): ``HF_ENDPOINT`` (the hub's address), ``HF_HUB_CACHE`` (the cache folder;
otherwise ``~/.cache/huggingface/hub``), ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` (cache only); the token is
``HF_TOKEN`` or the stored login, which huggingface_hub finds itself.

The cache comes first: a config.json (and safetensors files) the cache holds for the revision is read with no
network call at all, so a model the user has downloaded works offline and starts fast. Otherwise config.json is
downloaded into the cache (a few KB) and the safetensors headers are read with ranged requests
(``HfApi.get_safetensors_metadata``: ``model.safetensors``, or every shard named by
``model.safetensors.index.json``), pinned to the commit the config came from.

Every failure is one ``ConfigError`` line with the fix (``field="model"``); a hub id the catalog also knows names
the catalog entry instead of falling back to it silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vramwise.catalog import models
from vramwise.errors import ConfigError, shown
from vramwise.spec.checkpoint import CheckpointBytes
from vramwise.spec.safetensors_headers import (
    INDEX,
    MAX_HEADER_BYTES,
    SINGLE,
    TensorHeader,
    checkpoint_files,
    checkpoint_from_tensors,
    header_error,
    index_shards,
    parse_header,
    read_header,
)

# huggingface_hub's repo-id rule (utils/_validators.py: REPO_ID_REGEX): letters, digits, "-", "_", "."; one "/".
# A revision is a branch, tag or commit (refs/pr/1 included).
HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[\w./-]+))?", re.ASCII)

_FIELD = "model"
_ALLOWED = "a hub id org/name[@revision] whose repo holds a config.json, a local path, or a catalog name"
_LOGIN = "accept the licence on the model page and set HF_TOKEN or run `hf auth login`"
# huggingface_hub's truthy values for HF_HUB_OFFLINE (constants.py: _is_true).
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True, kw_only=True)
class HubRef:
    """A hub id as the user typed it: ``repo_id`` and an optional ``revision`` (branch, tag or commit)."""

    repo_id: str
    revision: str | None = None

    @property
    def shown(self) -> str:
        return f"{self.repo_id}@{self.revision or 'main'}"


@dataclass(frozen=True, kw_only=True)
class HubConfig:
    """A repo's config.json on disk (in the hub cache) and the commit it belongs to."""

    ref: HubRef
    path: Path
    commit: str
    from_cache: bool  # read from the cache without any network call

    @property
    def source(self) -> str:
        how = ", from the cache" if self.from_cache else ""
        return f"hub {self.ref.shown} (commit {self.commit[:12]}{how})"


# The model page's address, as a user copies it from the browser: https://huggingface.co/org/name[/tree/revision]
_PAGE = re.compile(r"https?://(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<id>[^/@?#]+/[^/@?#]+)(?:/tree/(?P<rev>[^?#]+?))?/?")


def parse_hub_id(text: str) -> HubRef | None:
    """``org/name`` or ``org/name@revision`` as a HubRef (or the model page's address,
    ``https://huggingface.co/org/name[/tree/revision]``); None for text of another shape (``./x``, ``a/b/c``,
    ``x.json``)."""
    page = _PAGE.fullmatch(text.strip())
    if page is not None:
        text = page.group("id") + (f"@{page.group('rev')}" if page.group("rev") else "")
    m = HUB_ID.fullmatch(text.strip())
    if m is None or m.group("repo").endswith(".json"):
        return None
    return HubRef(repo_id=m.group("repo"), revision=m.group("rev"))


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def _cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or None


def _endpoint() -> str | None:
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _timeout(name: str) -> float:
    """huggingface_hub's timeouts, read at each call: HF_HUB_ETAG_TIMEOUT for a file's metadata (HEAD),
    HF_HUB_DOWNLOAD_TIMEOUT for a download or a ranged read; both 10 s by default (constants.py)."""
    try:
        value = float(os.environ.get(name) or 10)
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


def _catalog_hint(ref: HubRef) -> str:
    known = {m.hf_id.lower(): m.name for m in models().values()}.get(ref.repo_id.lower())
    return f"; the catalog has this model: `vramwise infer {known}` uses its stored config" if known else ""


def _error(ref: HubRef, what: str) -> ConfigError:
    return ConfigError(
        f"{shown(ref.shown, 200, quote=False)}: {what}{_catalog_hint(ref)}", field=_FIELD, allowed=_ALLOWED
    )


def _unreachable(ref: HubRef, err: BaseException) -> ConfigError:
    import httpx2

    where = shown(_endpoint() or "https://huggingface.co", 80, quote=False)
    fix = (
        "; connect, or download it where you can (`hf download` it) and set HF_HUB_OFFLINE=1, "
        "or pass a local config.json"
    )
    cause = err.__cause__ if isinstance(err.__cause__, httpx2.HTTPError) else err
    if isinstance(cause, httpx2.TimeoutException):
        return _error(
            ref,
            f"the hub at {where} did not answer in time (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT: "
            f"{_timeout('HF_HUB_ETAG_TIMEOUT'):g} s, {_timeout('HF_HUB_DOWNLOAD_TIMEOUT'):g} s){fix}",
        )
    why = shown(type(cause).__name__, 40, quote=False)
    return _error(ref, f"cannot reach the hub at {where} ({why}) and it is not in the Hugging Face cache{fix}")


def _hub_error(ref: HubRef, err: Exception, filename: str) -> ConfigError:
    """huggingface_hub's exception as one line naming the fix."""
    from huggingface_hub import errors as e

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, e.GatedRepoError):
        return _error(ref, f"gated repo, no access with this token; {_LOGIN}")
    if isinstance(err, e.RepositoryNotFoundError):
        return _error(
            ref,
            "no such repo on the hub, and no local file or folder of that name (a private or gated repo looks "
            f"the same without a token: {_LOGIN})",
        )
    if isinstance(err, e.RevisionNotFoundError):
        return _error(ref, f"no revision {shown(ref.revision or 'main')}; give a branch, tag or commit that exists")
    if isinstance(err, e.RemoteEntryNotFoundError):
        return _error(
            ref,
            f"the repo has no {filename}; vramwise reads transformers checkpoints (config.json), or a GGUF named "
            f"by its tag ({shown(ref.repo_id, 100, quote=False)}:Q4_K_M) or path (org/name/file.gguf)",
        )
    if isinstance(err, e.HfHubHTTPError) and status in (401, 403):
        return _error(ref, f"the hub refused access ({status}); {_LOGIN}")
    if isinstance(err, e.HFValidationError):
        return _error(ref, f"not a valid hub id ({shown(str(err).splitlines()[0], 100, quote=False)})")
    if isinstance(err, e.SafetensorsParsingError):
        return _error(
            ref,
            f"a safetensors header is not readable ({shown(str(err), 160, quote=False)}); the checkpoint is "
            "corrupt: pass its config.json alone to estimate from the config",
        )
    if isinstance(err, e.HfHubHTTPError):
        answer = status or "an error"
        return _error(ref, f"the hub answered {answer} for {filename}; try again later, or pass a local config.json")
    if isinstance(err, OSError) and not isinstance(err, (e.LocalEntryNotFoundError, ConnectionError)):
        cache = shown(_cache_dir() or "~/.cache/huggingface/hub", 120, quote=False)
        why = shown(err.strerror or str(err), 80, quote=False)
        fix = "set HF_HUB_CACHE to a writable folder"
        return _error(ref, f"cannot use the Hugging Face cache at {cache} ({why}); {fix}")
    return _unreachable(ref, err)


def _hub_errors() -> tuple[type[Exception], ...]:
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
        httpx2.HTTPError,
        OSError,
    )


def _cached(ref: HubRef, filename: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(ref.repo_id, filename, cache_dir=_cache_dir(), revision=revision)
    return Path(hit) if isinstance(hit, str) else None


def hub_config(ref: HubRef) -> HubConfig:
    """config.json of ``ref``: from the cache if it holds one for the revision, else downloaded (unless offline)."""
    try:
        path = _cached(ref, "config.json", ref.revision)
    except _hub_errors() as err:  # a malformed id is refused here, before any request
        raise _hub_error(ref, err, "config.json") from None
    if path is not None:
        return HubConfig(ref=ref, path=path, commit=path.parent.name, from_cache=True)
    if _offline():
        raise _error(
            ref,
            "HF_HUB_OFFLINE is set and the Hugging Face cache holds no config.json for it; unset HF_HUB_OFFLINE to "
            "download it, or pass a local config.json",
        )
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    try:
        # One HEAD without retries first: hf_hub_download retries a refused connection five times (23 s of
        # backoff, file_download.py: _ETAG_RETRY_TIMEOUT) before it gives up, printing a warning each time.
        url = hf_hub_url(ref.repo_id, "config.json", revision=ref.revision, endpoint=_endpoint())
        meta = get_hf_file_metadata(url, timeout=_timeout("HF_HUB_ETAG_TIMEOUT"), retry_on_errors=False)
        got = hf_hub_download(
            ref.repo_id,
            "config.json",
            revision=meta.commit_hash or ref.revision,
            cache_dir=_cache_dir(),
            endpoint=_endpoint(),
            etag_timeout=_timeout("HF_HUB_ETAG_TIMEOUT"),
        )
    except _hub_errors() as err:
        raise _hub_error(ref, err, "config.json") from None
    path = Path(got)
    return HubConfig(ref=ref, path=path, commit=path.parent.name, from_cache=False)


_Tensors = tuple[list[TensorHeader], int, str]  # the tensors, how many files, where they were read


def _cached_tensors(ref: HubRef, commit: str) -> _Tensors | None:
    """The tensors of the safetensors files the cache holds for ``commit``; None unless it holds all of them."""
    single = _cached(ref, SINGLE, commit)
    if single is not None:
        return list(read_header(single)), 1, "the cache"
    index = _cached(ref, INDEX, commit)
    if index is None:
        return None
    shards = _shards(ref, index)
    paths = [_cached(ref, s, commit) for s in shards]
    if any(p is None for p in paths):
        return None
    return [t for p in paths if p is not None for t in read_header(p)], len(paths), "the cache"


# Shards read at once: a 163-shard checkpoint (DeepSeek-V3) takes 2 x 163 small requests.
_THREADS = 8


def _ranged(url: str, headers: dict[str, str], start: int, end: int) -> tuple[bytes, int]:
    """Bytes ``start..end`` (inclusive) of a hub file and the file's size, streamed so that a server ignoring
    Range cannot send the weights: only the bytes asked for are read."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    want = end - start + 1
    ranged = {**headers, "Range": f"bytes={start}-{end}"}
    timeout = _timeout("HF_HUB_DOWNLOAD_TIMEOUT")
    with get_session().stream("GET", url, headers=ranged, timeout=timeout) as response:
        if response.status_code == 416:  # the range starts past the end of the file
            return b"", int(response.headers.get("Content-Range", "*/0").rsplit("/", 1)[-1] or 0)
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


def _remote_file(ref: HubRef, commit: str, filename: str) -> list[TensorHeader]:
    """One safetensors file's tensors from two ranged reads: the 8-byte length, then the header itself."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(ref.repo_id, filename, revision=commit, endpoint=_endpoint())
    headers = build_hf_headers()  # the token: HF_TOKEN or the stored login
    where = f"{ref.repo_id}/{filename}"
    head, size = _ranged(url, headers, 0, 7)
    if len(head) < 8:
        raise header_error(where, f"{len(head)} bytes; a safetensors file starts with an 8-byte length")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES:
        raise header_error(where, f"header length {n:,} bytes, above safetensors' limit of 100,000,000")
    if size >= 0 and 8 + n > size:
        raise header_error(where, f"header length {n:,} bytes runs past the end of the {size:,}-B file")
    raw, _ = _ranged(url, headers, 8, 7 + n)
    if len(raw) < n:
        raise header_error(where, f"header length {n:,} bytes, but the file ends after {8 + len(raw):,}")
    return list(parse_header(where, raw, data_bytes=size - 8 - n if size >= 0 else None))


def _remote_tensors(ref: HubRef, commit: str) -> _Tensors | None:
    """The tensors of the repo's safetensors headers, read with ranged requests; None when it has none:
    ``model.safetensors``, else the shards of ``model.safetensors.index.json``, else the repo's other top-level
    ``.safetensors`` files (``checkpoint_files``: older GPTQ names)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        return _remote_file(ref, commit, SINGLE), 1, "ranged reads"
    except RemoteEntryNotFoundError:
        pass
    try:
        index = hf_hub_download(
            ref.repo_id,
            INDEX,
            revision=commit,
            cache_dir=_cache_dir(),
            endpoint=_endpoint(),
            etag_timeout=_timeout("HF_HUB_ETAG_TIMEOUT"),
        )
        shards = _shards(ref, Path(index))
    except RemoteEntryNotFoundError:
        from huggingface_hub import HfApi  # only here: hf_api imports most of huggingface_hub (~0.1 s)

        info = HfApi(endpoint=_endpoint()).model_info(
            ref.repo_id, revision=commit, timeout=_timeout("HF_HUB_ETAG_TIMEOUT")
        )
        shards = checkpoint_files([s.rfilename for s in info.siblings or []]) or []
    if not shards:
        return None
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(_THREADS, len(shards))) as pool:
        parts = list(pool.map(lambda shard: _remote_file(ref, commit, shard), shards))
    return [t for part in parts for t in part], len(shards), "ranged reads"


def _shards(ref: HubRef, index: Path) -> list[str]:
    """The shard files a cached or downloaded ``model.safetensors.index.json`` names."""
    where = f"{ref.repo_id}/{INDEX}"
    try:
        text = index.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise header_error(where, f"cannot read the index ({getattr(err, 'strerror', None) or err})") from None
    return index_shards(where, text)


def hub_checkpoint(config: HubConfig, num_layers: int | None = None) -> tuple[CheckpointBytes | None, str]:
    """The checkpoint's bytes from its safetensors headers (cache first, then ranged reads), pinned to the
    config's commit, or None and why not (the title says it): the repo has no safetensors files, or it is offline
    and the cache does not hold them. The weights then come from the config arithmetic, as for a config.json."""
    ref = config.ref
    try:
        got = _cached_tensors(ref, config.commit)
        if got is None and _offline():
            return None, "no safetensors headers in the cache (HF_HUB_OFFLINE): weights from the config"
        if got is None:
            got = _remote_tensors(ref, config.commit)
    except _hub_errors() as err:
        raise _hub_error(ref, err, "safetensors headers") from None
    if got is None:
        return None, "no safetensors files in the repo: weights from the config"
    tensors, files, where = got
    source = f"safetensors headers of {ref.shown} ({files} file{'' if files == 1 else 's'}, {where})"
    return checkpoint_from_tensors(tensors, source=source, files=files, num_layers=num_layers), ""

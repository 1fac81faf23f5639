"""Hugging Face hub ids (``org/name[@revision]``): a repo's config.json and safetensors headers, never its weights.

The environment, the cache lookup, ranged reads, the file listing and the error lines are the one hub client's
(``spec/hub_client.py``); huggingface_hub is imported only inside functions, so that a catalog estimate never
loads it (``tests/test_architecture.py``).

The cache comes first: a config.json (and safetensors files) the cache holds for the revision is read with no
network call at all, so a model the user has downloaded works offline and starts fast. Otherwise config.json is
downloaded into the cache (a few KB) and the safetensors headers are read with ranged requests
(two bounded reads a file, ``hub_client.ranged``: ``model.safetensors``, or every shard named by
``model.safetensors.index.json``), pinned to the commit the config came from.

Every failure is one ``ConfigError`` line with the fix (``field="model"``); a hub id the catalog also knows names
the catalog entry instead of falling back to it silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vramwise.catalog import models
from vramwise.errors import ConfigError, shown
from vramwise.spec import hub_client as client
from vramwise.spec.checkpoint import CheckpointBytes
from vramwise.spec.safetensors_headers import (
    INDEX,
    SINGLE,
    TensorHeader,
    checkpoint_files,
    checkpoint_from_tensors,
    header_error,
    index_shards,
    read_header,
    read_header_with,
)

# huggingface_hub's repo-id rule (utils/_validators.py: REPO_ID_REGEX): letters, digits, "-", "_", "."; one "/".
# A revision is a branch, tag or commit (refs/pr/1 included).
HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[\w./-]+))?", re.ASCII)

_FIELD = "model"
_ALLOWED = "a hub id org/name[@revision] whose repo holds a config.json, a local path, or a catalog name"


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
    revision = m.group("rev")
    if revision is not None and not client.is_ref_name(revision):
        # the revision names a folder of the cache (snapshots/<revision>, refs/<revision>): "x/y@../../.." would
        # read a folder of this machine, a server's included
        raise ConfigError(
            f"{shown(text.strip(), 200)}: revision {shown(revision, 100)} {client.NOT_A_REF}",
            field=_FIELD, allowed=_ALLOWED)
    return HubRef(repo_id=m.group("repo"), revision=revision)



def _catalog_hint(ref: HubRef) -> str:
    known = {m.hf_id.lower(): m.name for m in models().values()}.get(ref.repo_id.lower())
    return f"; the catalog has this model: `vramwise infer {known}` uses its stored config" if known else ""


def _error(ref: HubRef, what: str) -> ConfigError:
    return ConfigError(
        f"{shown(ref.shown, 200, quote=False)}: {what}{_catalog_hint(ref)}", field=_FIELD, allowed=_ALLOWED
    )


def _hub_error(ref: HubRef, err: Exception, filename: str) -> ConfigError:
    """huggingface_hub's exception as one line naming the fix (``spec/hub_client.py: describe``)."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    if isinstance(err, RemoteEntryNotFoundError):
        return _error(
            ref,
            f"the repo has no {filename}; vramwise reads transformers checkpoints (config.json), or a GGUF named "
            f"by its tag ({shown(ref.repo_id, 100, quote=False)}:Q4_K_M) or path (org/name/file.gguf)",
        )
    return _error(ref, client.describe(err, revision=ref.revision, filename=filename, local="a local config.json"))


class GgufOnlyRepo(ConfigError):
    """The repo holds no config.json but GGUF files (a typical ``-GGUF`` repo): ``spec/load.py`` reads one of them
    (``spec/gguf_hub.py``). A ConfigError, so that a caller that does not route it still prints one line."""

    def __init__(self, ref: HubRef, files: dict[str, int] | None) -> None:
        what = f"no config.json but GGUF files; name one by its tag ({shown(ref.repo_id, 100, quote=False)}:Q4_K_M)"
        super().__init__(f"{shown(ref.shown, 200, quote=False)}: {what}", field=_FIELD, allowed=_ALLOWED)
        self.ref = ref
        self.files = files  # path -> size from the hub's listing; None when found in the cache


def _is_gguf(name: str) -> bool:
    return name.lower().endswith(".gguf")


def hub_config(ref: HubRef) -> HubConfig:
    """config.json of ``ref``: from the cache if it holds one for the revision, else downloaded (unless offline).
    A repo without config.json whose files include GGUFs raises ``GgufOnlyRepo``."""
    try:
        path = _cached_file(ref, "config.json", ref.revision)
    except client.hub_errors() as err:  # a malformed id is refused here, before any request
        raise _hub_error(ref, err, "config.json") from None
    if path is not None:
        return HubConfig(ref=ref, path=path, commit=path.parent.name, from_cache=True)
    if client.offline():
        # offline, the cache decides what the repo is; online, the hub does (a repo holding config.json and a
        # downloaded GGUF reads its config.json)
        snapshot = client.cached_snapshot(ref.repo_id, ref.revision)
        if snapshot is not None and next(snapshot.rglob("*.[gG][gG][uU][fF]"), None) is not None:
            raise GgufOnlyRepo(ref, None)
        raise _error(ref, client.offline_miss("config.json", "pass a local config.json"))
    from huggingface_hub import get_hf_file_metadata

    try:
        # One HEAD without retries first: hf_hub_download retries a refused connection five times (23 s of
        # backoff, file_download.py: _ETAG_RETRY_TIMEOUT) before it gives up, printing a warning each time.
        url = client.file_url(ref.repo_id, "config.json", ref.revision)
        meta = get_hf_file_metadata(url, timeout=client.timeout("HF_HUB_ETAG_TIMEOUT"), retry_on_errors=False)
        path = client.download(ref.repo_id, "config.json", meta.commit_hash or ref.revision)
    except client.hub_errors() as err:
        _gguf_instead(ref, err)
        raise _hub_error(ref, err, "config.json") from None
    return HubConfig(ref=ref, path=path, commit=path.parent.name, from_cache=False)


def _gguf_instead(ref: HubRef, err: Exception) -> None:
    """Raise ``GgufOnlyRepo`` when config.json is missing from a repo that lists GGUF files."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    if not isinstance(err, RemoteEntryNotFoundError):
        return
    try:
        files = client.list_files(ref.repo_id, ref.revision)
    except client.hub_errors():
        return  # the listing fails too: the missing config.json is the error to show
    ggufs = {name: size for name, size in files.items() if _is_gguf(name)}
    if ggufs:
        raise GgufOnlyRepo(ref, ggufs) from None


_Tensors = tuple[list[TensorHeader], int, str]  # the tensors, how many files, where they were read


def _cached_file(ref: HubRef, filename: str, revision: str | None) -> Path | None:
    return client.cached_file(ref.repo_id, filename, revision)


def _cached_tensors(ref: HubRef, commit: str) -> _Tensors | None:
    """The tensors of the safetensors files the cache holds for ``commit``; None unless it holds all of them."""
    single = _cached_file(ref, SINGLE, commit)
    if single is not None:
        return list(read_header(single)), 1, "the cache"
    index = _cached_file(ref, INDEX, commit)
    if index is None:
        return None
    shards = _shards(ref, index)
    paths = [_cached_file(ref, s, commit) for s in shards]
    if any(p is None for p in paths):
        return None
    return [t for p in paths if p is not None for t in read_header(p)], len(paths), "the cache"


# Shards read at once: a 163-shard checkpoint (DeepSeek-V3) takes 2 x 163 small requests.
_THREADS = 8


def _remote_file(ref: HubRef, commit: str, filename: str) -> list[TensorHeader]:
    """One safetensors file's tensors from two ranged reads: the 8-byte length, then the header itself."""
    url = client.file_url(ref.repo_id, filename, commit)
    headers = client.auth_headers()  # the token: HF_TOKEN or the stored login
    where = f"{ref.repo_id}/{filename}"
    return list(read_header_with(where, lambda start, end: client.ranged(url, headers, start, end)))


def _remote_tensors(ref: HubRef, commit: str) -> _Tensors | None:
    """The tensors of the repo's safetensors headers, read with ranged requests; None when it has none:
    ``model.safetensors``, else the shards of ``model.safetensors.index.json``, else the repo's other top-level
    ``.safetensors`` files (``checkpoint_files``: older GPTQ names)."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        return _remote_file(ref, commit, SINGLE), 1, "ranged reads"
    except RemoteEntryNotFoundError:
        pass
    try:
        shards = _shards(ref, client.download(ref.repo_id, INDEX, commit))
    except RemoteEntryNotFoundError:
        shards = checkpoint_files(list(client.list_files(ref.repo_id, commit))) or []
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
        if got is None and client.offline():
            return None, "no safetensors headers in the cache (HF_HUB_OFFLINE): weights from the config"
        if got is None:
            got = _remote_tensors(ref, config.commit)
    except client.hub_errors() as err:
        raise _hub_error(ref, err, "safetensors headers") from None
    if got is None:
        return None, "no safetensors files in the repo: weights from the config"
    tensors, files, where = got
    source = f"safetensors headers of {ref.shown} ({files} file{'' if files == 1 else 's'}, {where})"
    return checkpoint_from_tensors(tensors, source=source, files=files, num_layers=num_layers), ""

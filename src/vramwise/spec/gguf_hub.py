"""A GGUF in a Hugging Face hub repo, read through ranged requests: the header only, never the weights.

MODEL names it as llama.cpp's ``-hf`` option does, ``org/name[@revision]:TAG`` (the file whose name holds the
quantization tag, e.g. ``:Q4_K_M``; a split set brings every part), or by its path,
``org/name[@revision]/path/file.gguf``. The repo's file listing (``HfApi.list_repo_tree``, with sizes) picks the
files; each header is then read with HTTP ``Range`` requests that start at 1 MiB and double until the tensor
infos are in (``spec/gguf_header.py``), so what is fetched stays within twice the header.

The local cache comes first (``HF_HUB_CACHE``, or ``~/.cache/huggingface/hub``): a file downloaded there is read
from disk. ``HF_HUB_OFFLINE=1`` reads the cache only; ``HF_ENDPOINT`` points at another hub; gated and private
repos use ``HF_TOKEN`` or the stored login. The requests, the cache lookup and the error lines are the one hub
client's (``spec/hub_client.py``, which imports huggingface_hub only when called). A plain ``org/name`` whose repo
has GGUF files and no config.json comes here from ``spec/load.py`` with no tag: ``DEFAULT_TAG``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vramwise.errors import ConfigError, shown
from vramwise.spec import hub_client as client
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


@dataclass(frozen=True)
class GgufRef:
    repo: str
    revision: str | None
    tag: str | None  # org/name:TAG
    path: str | None  # org/name/path/file.gguf (neither: a plain org/name, llama.cpp's default tag)

    @property
    def label(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        if self.tag or self.path is None:  # a plain org/name: a GGUF-only repo read with the default tag
            return f"{self.repo}{rev}" + (f":{self.tag}" if self.tag else "")
        return f"{self.repo}{rev}/{self.path}"


def parse_ref(text: str) -> GgufRef | None:
    """``org/name[@rev]:TAG`` or ``org/name[@rev]/path.gguf`` as a GgufRef; None for anything else."""
    ref = None
    if m := _TAGGED.fullmatch(text):
        ref = GgufRef(m.group("repo"), m.group("rev"), m.group("tag"), None)
    elif m := _PATHED.fullmatch(text):
        ref = GgufRef(m.group("repo"), m.group("rev"), None, m.group("path"))
    if ref is not None and ref.revision is not None and not client.is_ref_name(ref.revision):
        # the revision names a cache folder (snapshots/<rev>): "@../.." would list and read GGUFs outside it
        raise _error(ref, f"revision {shown(ref.revision, 100)} {client.NOT_A_REF}")
    return ref


def _error(ref: GgufRef, what: str, allowed: str = _ALLOWED) -> ConfigError:
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


def choose(ref: GgufRef, files: list[str]) -> list[str]:
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


# A quantization tag in a file name, as llama.cpp's quantize names them (tools/quantize/quantize.cpp, QUANT_OPTIONS):
# Q4_K_M, IQ2_XXS, TQ1_0, F16, BF16, F32, MXFP4_MOE; the last one in the name counts ("model-v2-Q4_K_M").
_TAG_IN_NAME = re.compile(r"(?:^|[-._])((?:I?Q|TQ)\d[A-Za-z0-9_]*|B?F16|F32|MXFP4(?:_MOE)?)(?=[-.]|$)", re.I)


def _tags(names: list[str]) -> str:
    """The tags the GGUF models in ``names`` can be named by, in order, each once."""
    tags: dict[str, None] = {}
    for n in names:
        found = _TAG_IN_NAME.findall(n.rsplit("/", 1)[-1])
        tags[found[-1].upper() if found else n] = None
    return _listing(tags)


def _refuse_choice(ref: GgufRef, what: str, names: list[str]) -> list[str]:
    tag = ref.tag or DEFAULT_TAG
    if ref.tag is None and what.endswith("no GGUF file"):  # a plain org/name: say which tags the repo offers
        repo = shown(ref.repo, 100, quote=False)
        raise _error(ref, f"no config.json, and no GGUF file with llama.cpp's default tag {DEFAULT_TAG}; its tags: "
                     f"{_tags(names)}; name one ({repo}:TAG)")
    raise _error(ref, f"tag '{shown(tag, 40, quote=False)}' {what}: {_listing(dict.fromkeys(names))}; give a tag "
                 "that names one, or the file's path (org/name/path/file.gguf)")


def _listing(models: Mapping[str, object]) -> str:
    names = list(models)
    shown_names = ", ".join(shown(n, 80, quote=False) for n in names[:12])
    return (shown_names + (f" and {len(names) - 12} more" if len(names) > 12 else "")) or "none"


# --- reading ---------------------------------------------------------------------------------------------------------


def _cached_files(snap: Path) -> list[str]:
    return sorted(str(p.relative_to(snap)) for p in snap.rglob("*.gguf"))


def _remote_header(ref: GgufRef, path: str, size: int) -> GgufHeader:
    """One file's header through ranged reads (``hub_client.ranged``: a server ignoring Range costs no more)."""
    url = client.file_url(ref.repo, path, ref.revision)
    headers = client.auth_headers()

    def fetch(offset: int, length: int) -> bytes:
        return client.ranged(url, headers, offset, offset + length - 1)[0]

    return read_header(fetch, size, f"hf:{ref.repo}/{path}")


def _fail(ref: GgufRef, err: Exception) -> ConfigError:
    """One line with the fix for each way the hub refuses (``hub_client.describe``)."""
    local = "the .gguf file's path once downloaded"
    return _error(ref, client.describe(err, revision=ref.revision, filename="GGUF file", local=local))


def hub_gguf_model(ref: GgufRef, sizes: Mapping[str, int] | None = None) -> tuple[ModelSpec, Mapping[str, Any]]:
    """The spec of a GGUF in a hub repo (cache first), from the header(s) only; ``sizes``: the repo's listing when
    the caller already has it."""
    snap = client.cached_snapshot(ref.repo, ref.revision)
    offline = client.offline()
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
        fix = f"download the file (hf download {ref.repo} <file>.gguf)"
        raise _error(ref, client.offline_miss("GGUF file", fix))
    if sizes is None:
        try:
            sizes = client.list_files(ref.repo, ref.revision)
        except client.hub_errors() as err:
            raise _fail(ref, err) from None
    return remote_gguf_model(ref, sizes)


def remote_gguf_model(ref: GgufRef, sizes: Mapping[str, int]) -> tuple[ModelSpec, Mapping[str, Any]]:
    """The GGUF ``ref`` names among a repo's files (``sizes``: path -> bytes, from the listing), its headers
    read with ranged requests."""
    parts = choose(ref, list(sizes))
    missing = [p for p in parts if p not in sizes]
    if missing:
        raise _error(ref, f"split GGUF part '{shown(missing[0], 120, quote=False)}' is missing from the repo")
    try:
        headers = [(f"hf:{ref.repo}/{p}", _remote_header(ref, p, sizes[p])) for p in parts]
    except client.hub_errors() as err:
        raise _fail(ref, err) from None
    return _model(ref, headers, parts)


def _model(ref: GgufRef, headers: list[tuple[str, GgufHeader]], parts: list[str]) -> tuple[ModelSpec, Mapping]:
    base = parts[0].rsplit("/", 1)[-1]
    m = SPLIT_NAME.match(base)
    name = m.group("stem") if m else base.removesuffix(".gguf").removesuffix(".GGUF")
    default = f" ({shown(parts[0], 120, quote=False)}: no config.json, llama.cpp's default tag {DEFAULT_TAG})"
    source = f"hf:{ref.label}" + ("" if ref.tag or ref.path else default)
    return model_from_headers(headers, name=shown(name, 200, quote=False), source=source)

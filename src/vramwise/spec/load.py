"""Resolve what the user typed as MODEL: a catalog name, a local path, a Hugging Face hub id, or a bare size.

The rule, in order (the README's "MODEL" paragraph says the same):

0. A GGUF first: text ending in ``.gguf``, or a GGUF in a hub repo named as llama.cpp's ``-hf`` does,
   ``org/name[@revision]:TAG`` (``spec/gguf_file.py``, ``spec/gguf_hub.py``: the header only).
1. An explicit path is a path: the text contains a path separator (``./x``, ``dir/config.json``, an absolute
   path), starts with ``~``, is ``.`` or ``..``, or ends in ``.json``. A file is read as a config.json; a folder
   must hold one. A path that exists always stays a path.
2. Text shaped like a Hugging Face hub id (``org/name`` or ``org/name@revision``, or the model page's address
   ``https://huggingface.co/org/name[/tree/revision]``) that is not an existing local path names a hub repo
   (``spec/hub.py``): its config.json from the Hugging Face cache when it is there, else
   from the hub (``HF_ENDPOINT``; never with ``HF_HUB_OFFLINE=1``), and its safetensors headers the same way. A
   repo with no config.json but GGUF files (a ``-GGUF`` repo) is read as ``org/name:Q4_K_M``, llama.cpp's
   default tag, and the title names the file read. Any other explicit path that does not exist is an error,
   never a fall-through to a name or a size.
3. Otherwise a catalog name (``vramwise models``), case-insensitive.
4. Otherwise a bare size: ASCII digits with an optional fraction and exponent, and an optional k/m/b/t suffix
   (``14b``, ``7.5e9``, ``350m``), naming a whole number of parameters from 1 to ``MAX_BARE_PARAMS``.
5. Otherwise an existing local file or folder of that name (``mymodel`` for ``./mymodel``).

So a folder ``./gpt2`` or ``./7b`` in the working directory never hides the catalog model or the size of the same
name; write ``./gpt2`` to read the folder; and a folder ``meta-llama/Meta-Llama-3-8B`` under the working directory
is read rather than the hub repo of that name. The table title shows where a config was read from when it is not
the catalog (``report.titles.model_label``).

Beside a config.json (a local folder, or a hub repo), the checkpoint's ``*.safetensors`` headers are read, never
their data (``spec/safetensors_headers.py``), and fill ``ModelSpec.checkpoint``: the weights term then reads the
checkpoint's own bytes.

A config file is read as data, never run: regular files only (checked with ``os.stat`` before opening, so a FIFO or
``/dev/stdin`` cannot block), at most ``MAX_CONFIG_BYTES``, UTF-8 (a byte-order mark is allowed), one JSON object
whose numbers are finite and whose integers Python can read. Every refusal is one line: a ``ConfigError`` for a
file or repo that cannot be used, an ``UnknownModelError`` for a MODEL that names nothing; both with
``field="model"``.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vramwise.catalog import close_matches, models
from vramwise.errors import ConfigError, UnknownModelError, shown
from vramwise.files import Bounded, read_regular, stat_or_refuse
from vramwise.spec.adapters import language_config, spec_from_config
from vramwise.spec.model import ModelSpec

if TYPE_CHECKING:
    from vramwise.spec.hub import HubRef

# The hub and header readers are imported where a path or a hub id needs them, not here: a catalog estimate (the
# fresh-process time of `vramwise infer llama-3-8b`, bench/speed.py) loads neither, nor their patterns.


@dataclass(frozen=True, kw_only=True)
class BareModel:
    """Only a parameter count (``14b``, ``7.5e9``): enough for the seeds' parameter-only formulas."""

    name: str
    params: int


Model = ModelSpec | BareModel


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    """What MODEL named, with the config keys its spec was parsed from, read once.

    The twin (verify) builds the real transformers model from ``raw_config``: the very keys the adapter read,
    with ``text_config`` unwrapped by the same rule (``language_config``), so the two cannot disagree. A
    vision-language model keeps its whole config (the twin refuses it: it traces text models)."""

    spec: Model
    raw_config: Mapping[str, Any] | None  # None for a bare size: there is no architecture behind it


_FIELD = "model"
_ALLOWED = (
    "a catalog name (`vramwise models`), a path to a config.json or its folder, a hub id org/name[@revision], "
    "or a size such as 14b or 7.5e9"
)

# --- bare sizes ---------------------------------------------------------------------------------------------------

# ASCII only ([0-9], not \d, which also matches other scripts' digits such as Arabic-Indic "١٤").
_SIZE = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:e\+?([0-9]+))?([kmbt]?)", re.IGNORECASE | re.ASCII)
_SCALE_EXP = {"": 0, "k": 3, "m": 6, "b": 9, "t": 12}
# Longer text is not read as a size at all (it goes on to the other rules): it bounds the work of reading one.
# "6.738415616b" is 12 characters; 40 leaves room for any size a person writes.
_MAX_SIZE_TEXT = 40
# The largest published models have about 1.6 trillion parameters (Switch-C, 1.571e12: Fedus et al. 2021, "Switch
# Transformers", table 9; Kimi K2 and DeepSeek-V3 are 1.04e12 and 6.71e11). 10^14 (100t) leaves 60x room and keeps
# every byte count exact in float arithmetic: at the ~20 bytes a parameter training stores, 2e15 < 2^53 (9.0e15).
MAX_BARE_PARAMS = 10**14


def _size_error(text: str, why: str) -> UnknownModelError:
    return UnknownModelError(
        f"bare size '{text}' {why}; a size is a whole number of parameters from 1 to 100t (10^14, about 60x the "
        "largest published model)",
        field=_FIELD,
        allowed="a whole number of parameters from 1 to 10^14, e.g. 14b, 7.5e9, 350m",
    )


def parse_size(text: str) -> int | None:
    """``14b`` -> 14e9, ``7.5e9`` -> 7.5e9, ``350m`` -> 3.5e8; None when ``text`` is not shaped like a size.

    Text shaped like a size that names no plausible parameter count (``1.4``: not a whole number; ``1e400``: above
    ``MAX_BARE_PARAMS``; ``0``) raises ``UnknownModelError``. The arithmetic is exact (no float, so no overflow and
    no rounding) and O(len(text)): an exponent too large to be plausible is refused before any power is computed."""
    text = text.strip()
    m = _SIZE.fullmatch(text) if len(text) <= _MAX_SIZE_TEXT else None
    if m is None:
        return None
    whole, frac, exp, suffix = m.group(1), m.group(2) or "", m.group(3) or "0", m.group(4).lower()
    digits = int(whole + frac)  # at most _MAX_SIZE_TEXT digits
    exponent = int(exp) + _SCALE_EXP[suffix] - len(frac)  # value = digits * 10**exponent
    if digits == 0:
        raise _size_error(text, "is zero")
    # digits >= 1, so the value is at least 10**exponent: past 10**14 it is too large, whatever the digits.
    if exponent > 14:
        raise _size_error(text, "is too large")
    value = Fraction(digits) * Fraction(10) ** exponent  # exponent >= -40: small powers only
    if value.denominator != 1:
        raise _size_error(text, "is not a whole number of parameters")
    if value > MAX_BARE_PARAMS:
        raise _size_error(text, "is too large")
    return int(value)


# --- config files -------------------------------------------------------------------------------------------------

# A language model's config.json is a few KB (llama-2-7b's is 0.6 KB). The largest configs carry a classifier's
# label maps: ImageNet-21k's 21,843 classes as id2label + label2id are 2.1 MB (measured on a JSON built that way,
# indent 2). 16 MiB leaves 8x room over that and bounds memory and parse time (9 MiB of JSON numbers parsed in
# 0.8 s here) so that /dev/zero-like inputs or a weights file passed by mistake are refused at once.
MAX_CONFIG_BYTES = 16 * 2**20
_CONFIG_FILE = Bounded(
    limit=MAX_CONFIG_BYTES,
    limit_text="16 MiB",
    over_text="16 MiB",
    typical="a config.json is a few KB",
    cannot="cannot read config",
    not_regular="not a regular file (a FIFO, device or socket); give a config.json file",  # a folder: its config.json
)
# CPython refuses to read integers longer than this from text (sys.int_info.default_max_str_digits, 4,300, "integer
# string conversion length limitation", Python 3.11); 0 there means unlimited, which we do not follow.
_MAX_INT_DIGITS = sys.get_int_max_str_digits() or sys.int_info.default_max_str_digits
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32 LE's BOM starts with UTF-16 LE's


def _config_error(path: Path | str, what: str) -> ConfigError:
    where = shown(str(path), 200, quote=False)
    return ConfigError(f"{where}: {what}", field=_FIELD, allowed="a UTF-8 JSON config.json file")


class _JsonRefused(ValueError):
    """A JSON number vramwise does not read (NaN, an infinity, an integer too long)."""


def _refuse_constant(name: str) -> Any:
    raise _JsonRefused(f"{name} is not a JSON number (RFC 8259 has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JsonRefused(f"the number {shown(text, 40, quote=False)} overflows a float")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _JsonRefused(
            f"an integer with {len(text.lstrip('-')):,} digits (at most {_MAX_INT_DIGITS:,}: Python's limit for "
            "reading integers from text)"
        )
    return int(text)


def _read_bytes(path: Path) -> tuple[Path, bytes]:
    """The file read (``path``, or ``path/config.json`` for a folder) and its bytes.

    A regular file of at most MAX_CONFIG_BYTES; never blocks (a FIFO is refused before it is opened)."""
    st = stat_or_refuse(path, _CONFIG_FILE, partial(_config_error, path))
    if stat.S_ISDIR(st.st_mode):
        folder, path = path, path / "config.json"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ConfigError(
                f"folder '{shown(str(folder), 200, quote=False)}' has no config.json; "
                "give a config.json or the folder holding one",
                field=_FIELD,
                allowed="a UTF-8 JSON config.json file",
            ) from None
        except OSError as err:
            raise _config_error(path, f"cannot read config ({err.strerror or err})") from None
    data = read_regular(path, st, _CONFIG_FILE, partial(_config_error, path))
    return path, data


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 (RFC 8259 8.1: JSON exchanged between systems is UTF-8), with or without a byte-order mark."""
    if data.startswith(_UTF16_BOMS):
        raise _config_error(path, "not a UTF-8 JSON config (it is UTF-16 or UTF-32; save it as UTF-8)")
    try:
        text = data.removeprefix(_UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as err:
        byte = data.removeprefix(_UTF8_BOM)[err.start]
        raise _config_error(
            path, f"not a UTF-8 JSON config (byte 0x{byte:02x} at offset {err.start:,} is not UTF-8)"
        ) from None
    if "\x00" in text:  # valid UTF-8, but never in JSON text: UTF-16 without a mark, or a binary file
        raise _config_error(path, "not a UTF-8 JSON config (it holds NUL bytes: UTF-16 without a BOM, or binary)")
    return text


def _load_json(path: Path) -> tuple[Path, dict[str, Any]]:
    """The file read (a folder's config.json) and its JSON object."""
    path, data = _read_bytes(path)
    text = _decode(path, data)
    try:
        obj = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as err:
        raise _config_error(path, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except _JsonRefused as err:
        raise _config_error(path, f"not a config vramwise reads: {err}") from None
    except RecursionError:
        raise _config_error(
            path, "not a config vramwise reads: JSON nested too deeply (a config nests a few levels)"
        ) from None
    if not isinstance(obj, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(obj), "a number")
        raise _config_error(path, f"the top level is {kind}; a config.json is a JSON object {{...}}")
    return path, obj


def _config_file(path: Path) -> tuple[ModelSpec, Mapping[str, Any]]:
    """A config.json (or a directory holding one), parsed as data: never runs code from the model repo."""
    path, data = _load_json(path)
    name = path.parent.name if path.name == "config.json" else path.stem
    name = shown(name or path.resolve().parent.name or str(path), 200, quote=False)
    spec, config = _parsed(data, name=name, source=shown(str(path), 200, quote=False))
    from vramwise.spec.safetensors_headers import local_checkpoint

    checkpoint = local_checkpoint(path.parent, spec.num_layers)
    return (replace(spec, checkpoint=checkpoint) if checkpoint else spec), config


def _from_hub(ref: HubRef) -> ResolvedModel:
    """A hub repo's config.json and safetensors headers (``spec/hub.py``: cache first, never the weights); a repo
    with GGUF files and no config.json, its GGUF with llama.cpp's default tag (``spec/gguf_hub.py``)."""
    from vramwise.spec.hub import GgufOnlyRepo, hub_checkpoint, hub_config

    try:
        found = hub_config(ref)
    except GgufOnlyRepo as only:
        from vramwise.spec.gguf_hub import GgufRef, hub_gguf_model  # lazy: gguf (and numpy) only for a GGUF

        gguf_spec, gguf_config = hub_gguf_model(GgufRef(ref.repo_id, ref.revision, None, None), only.files)
        return ResolvedModel(spec=gguf_spec, raw_config=gguf_config)
    _, data = _load_json(found.path)
    spec, config = _parsed(data, name=shown(ref.repo_id, 200, quote=False), source=found.source)
    checkpoint, missing = hub_checkpoint(found, spec.num_layers)
    if checkpoint is None:  # the title says why the weights come from the config arithmetic
        return ResolvedModel(spec=replace(spec, source=f"{found.source}; {missing}"), raw_config=config)
    return ResolvedModel(spec=replace(spec, checkpoint=checkpoint), raw_config=config)


def _parsed(data: Any, *, name: str, source: str) -> tuple[ModelSpec, Mapping[str, Any]]:
    """The spec, and the keys it was built from: the language model's, unwrapped by the adapters' one rule."""
    spec = spec_from_config(data, name=name, source=source)
    # a vision-language model keeps its whole config: the spec needs the vision keys too (the twin refuses it)
    return spec, MappingProxyType(data if spec.vision is not None else language_config(data))


def _catalog(name: str) -> tuple[ModelSpec, Mapping[str, Any]]:
    entry = models()[name]
    return _parsed(dict(entry.config), name=name, source=f"catalog:{name} ({entry.hf_id})")


def catalog_spec(name: str) -> ModelSpec:
    return _catalog(name)[0]


# --- resolving MODEL ----------------------------------------------------------------------------------------------

_SEPARATORS = tuple(s for s in (os.sep, os.altsep, "/") if s)
# A Hugging Face hub id: "org/name" (huggingface_hub's repo-id rule: letters, digits, "-", "_", ".").
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+", re.ASCII)
# A GGUF in a hub repo named as llama.cpp's -hf does: org/name[@revision]:TAG (spec/gguf_hub.py).
_GGUF_TAG = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(?:@[\w./-]+?)?:[\w.-]+", re.ASCII)


def _is_explicit_path(text: str) -> bool:
    return any(s in text for s in _SEPARATORS) or text.startswith("~") or text in (".", "..") or text.endswith(".json")


def _exists(path: Path) -> bool:
    """Whether anything is at ``path``; a name the OS cannot look up (too long, a NUL) is simply not there."""
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True


def _expanded(text: str) -> Path:
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~nosuchuser": Python cannot find that user's home
        user = text[1:].split("/", 1)[0]
        who = shown(user, 40, quote=False)
        raise _config_error(text, f"no user '{who}' to expand '~{who}' for") from None


def _from_path(text: str) -> ResolvedModel:
    path = _expanded(text)
    try:
        os.stat(path)
    except FileNotFoundError:
        from vramwise.spec.hub import parse_hub_id

        ref = parse_hub_id(text)
        if ref is not None:
            return _from_hub(ref)
        raise _config_error(text, "no such file or folder") from None
    except (OSError, ValueError):
        pass  # too long, a loop, no permission...: reading it below names the reason
    spec, config = _config_file(path)
    return ResolvedModel(spec=spec, raw_config=config)


def resolve_model_with_config(text: str) -> ResolvedModel:
    """What MODEL names, by the module's rule: an explicit path, else a catalog name, else a bare size, else an
    existing local file or folder; otherwise ``UnknownModelError``. See the module docstring for each step."""
    stripped = text.strip()
    if not stripped:
        raise UnknownModelError(f"MODEL is empty; give {_ALLOWED}", field=_FIELD, allowed=_ALLOWED)
    if stripped.lower().endswith(".gguf") or _GGUF_TAG.fullmatch(stripped):  # a GGUF: its header only is read
        from vramwise.spec.gguf_file import gguf_from_text  # lazy: gguf (and numpy) only for a GGUF

        spec, config = gguf_from_text(stripped)
        return ResolvedModel(spec=spec, raw_config=config)
    if _is_explicit_path(stripped):
        return _from_path(text)
    key = stripped.lower()
    if key in models():
        spec, config = _catalog(key)
        return ResolvedModel(spec=spec, raw_config=config)
    size = parse_size(stripped)
    if size is not None:
        return ResolvedModel(spec=BareModel(name=shown(stripped, quote=False), params=size), raw_config=None)
    if _exists(Path(text)):
        spec, config = _config_file(Path(text))
        return ResolvedModel(spec=spec, raw_config=config)
    hint = ""
    if any(ch.isdigit() and not ch.isascii() for ch in stripped):
        hint = "; a bare size is written in ASCII digits 0-9"
    raise UnknownModelError(
        f"unknown model '{shown(stripped, quote=False)}'{close_matches(key[:80], list(models()))}{hint}; "
        f"give {_ALLOWED}",
        field=_FIELD,
        allowed=_ALLOWED,
    )


def resolve_model(text: str) -> Model:
    """What MODEL names: a ModelSpec, or a BareModel for a size (see ``resolve_model_with_config`` and the rule in
    this module's docstring: an explicit path, else a catalog name, else a bare size, else a local file or folder)."""
    return resolve_model_with_config(text).spec

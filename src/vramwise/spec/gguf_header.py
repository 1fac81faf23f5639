"""The header of a GGUF file, read with bounds: metadata and tensor infos, never the tensor data.

GGUF (llama.cpp's ``docs/gguf.md``; ggml's ``src/gguf.cpp`` reads it) is: the magic ``GGUF``, a uint32 version,
uint64 tensor and key/value counts, the key/value pairs (a string key, a uint32 value type, the value), the
tensor infos (a string name, a uint32 dimension count, that many uint64 dimensions, a uint32 ggml type, a uint64
offset into the data section), padding to ``general.alignment``, then the data.

Why not ``gguf.GGUFReader``: it wraps every element of every array in a numpy view (0.83 s for a 60,000-token
vocabulary against 0.013 s here, on tests/gguf/test_gguf_hub.py's file, measured on the dev machine), loops on
counts read from the file without comparing them to the bytes there, and memory-maps the whole file (so a hub
file would first need a full-size stand-in). This reader walks the same layout with ``struct`` over a prefix that
grows on demand: every count is checked against the bytes left before any loop runs, arrays it does not need are
skipped (string arrays by their length prefixes), and it stops at the end of the tensor infos. The ``gguf``
package still gives the ggml type table (``GGML_QUANT_SIZES``) in ``spec/gguf_file.py``; tests/gguf compares
this reader with ``GGUFReader`` on the files they write.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from vramwise.errors import ConfigError, shown

MAGIC = b"GGUF"
# GGUF v1 had 32-bit counts and lengths; ggml's gguf.cpp refuses it ("GGUFv1 is no longer supported"), as
# gguf-py's GGUFReader does (READER_SUPPORTED_VERSIONS = [2, 3]). v2 and v3 share the layout read here (v3 only
# added big-endian files, told apart by the version's byte order).
VERSIONS = (2, 3)
# ggml.h GGML_MAX_DIMS: a tensor has at most 4 dimensions (gguf.cpp refuses more).
MAX_DIMS = 4
# gguf.cpp: GGUF_DEFAULT_ALIGNMENT 32 when general.alignment is absent.
DEFAULT_ALIGNMENT = 32
# The largest header in a published GGUF is a few tens of MB: the vocabulary (tokens, scores, types) and BPE
# merges, e.g. 262,144 tokens for Gemma 3 (about 7 MB with scores and types). 256 MiB is ~10x that; past it the
# file is refused rather than walked (a corrupt count could otherwise walk gigabytes of tensor data).
MAX_HEADER_BYTES = 256 * 2**20
_FIRST_READ = 1 * 2**20  # the first read: most headers fit; each later read doubles what is held
_KEEP_STRING = 4096  # longer strings (chat templates, licences) are skipped, not kept
_KEEP_ARRAY = 65_536  # numeric arrays up to this many elements are kept (per-layer sizes); longer ones skipped
_MAX_NESTING = 3  # arrays of arrays: the format allows them; no published file nests deeper than 2

# GGUFValueType (gguf-py constants.py / gguf.h enum gguf_type): fixed-size scalars by struct code.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MIN_KV_BYTES = 8 + 4 + 1  # an empty key, its type, a one-byte value
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8  # an empty name, no dimensions, a type, an offset


@dataclass(frozen=True)
class ArrayValue:
    """A metadata array: its element type, its length, and its values when small and numeric (else None)."""

    item_type: int
    length: int
    values: tuple | None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the contiguous (row) dimension
    ggml_type: int
    offset: int  # from the start of the data section

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: Mapping[str, object]  # scalars, short strings, ArrayValue
    tensors: tuple[TensorInfo, ...]
    data_start: int  # where the data section starts (after alignment padding)
    file_size: int
    header_bytes_read: int  # how much of the file was read to get here

    @property
    def alignment(self) -> int:
        value = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        return value if isinstance(value, int) else DEFAULT_ALIGNMENT


Fetch = Callable[[int, int], bytes]  # (offset, length) -> bytes (fewer only at the end of the file)


class _Cursor:
    def __init__(self, fetch: Fetch, size: int, where: str) -> None:
        self._fetch, self.size, self.where = fetch, size, where
        self.buf = bytearray()
        self.pos = 0
        self.order = "<"

    def error(self, what: str) -> ConfigError:
        return ConfigError(f"{self.where}: {what}", field="model", allowed="a GGUF file (llama.cpp's format)")

    def need(self, n: int, what: str) -> None:
        end = self.pos + n
        if end > self.size:
            raise self.error(
                f"truncated GGUF header: {what} needs bytes {self.pos:,} to {end:,} but the file has {self.size:,} "
                "(an incomplete download?)"
            )
        if end > MAX_HEADER_BYTES:
            raise self.error(f"GGUF header longer than {MAX_HEADER_BYTES // 2**20} MiB (a corrupt count in {what}?)")
        if end > len(self.buf):
            want = min(self.size, MAX_HEADER_BYTES, max(end, 2 * len(self.buf), _FIRST_READ))
            chunk = self._fetch(len(self.buf), want - len(self.buf))
            self.buf += chunk
            if len(self.buf) < end:
                raise self.error(f"truncated GGUF header: the file ended while reading {what}")

    def unpack(self, code: str, what: str) -> object:
        size = struct.calcsize(code)
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + code, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack("I", what))  # type: ignore[call-overload]

    def u64(self, what: str) -> int:
        return int(self.unpack("Q", what))  # type: ignore[call-overload]

    def count(self, what: str, min_bytes: int) -> int:
        """A uint64 count of items of at least ``min_bytes`` each, refused when the file cannot hold them."""
        n = self.u64(what)
        room = min(self.size, MAX_HEADER_BYTES) - self.pos
        if n * min_bytes > room:
            raise self.error(
                f"GGUF header claims {n:,} {what}, more than the {room:,} bytes left can hold (a truncated or "
                "corrupt file)"
            )
        return n

    def raw_string(self, what: str) -> bytes:
        n = self.count(f"bytes in {what}", 1)
        self.need(n, what)
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def string(self, what: str) -> str:
        return self.raw_string(what).decode("utf-8", errors="replace")

    def skip_strings(self, n: int, what: str) -> None:
        """Skip ``n`` strings (a vocabulary: 150k-260k, and as many merges), each a uint64 length and its bytes.
        The common case stays in this loop; ``need`` runs only to grow the prefix or to refuse."""
        unpack = struct.Struct(self.order + "Q").unpack_from
        for _ in range(n):
            if self.pos + 8 > len(self.buf):
                self.need(8, what)
            (length,) = unpack(self.buf, self.pos)
            self.pos += 8
            if self.pos + length > len(self.buf):
                if length > self.size:
                    self.pos -= 8
                    self.count(f"bytes in {what}", 1)  # refuses, naming the claimed length
                self.need(length, what)
            self.pos += length


def _value(cur: _Cursor, vtype: int, key: str, depth: int = 0) -> object:
    code = _SCALARS.get(vtype)
    if code is not None:
        return cur.unpack(code, f"the value of '{key}'")
    if vtype == _STRING:
        raw = cur.raw_string(f"the value of '{key}'")
        return raw.decode("utf-8", errors="replace") if len(raw) <= _KEEP_STRING else None
    if vtype == _ARRAY and depth < _MAX_NESTING:
        item = cur.u32(f"the array type of '{key}'")
        code = _SCALARS.get(item)
        if code is not None:
            size = struct.calcsize(code)
            n = cur.count(f"elements of '{key}'", size)
            cur.need(n * size, f"the array '{key}'")
            values = None
            if n <= _KEEP_ARRAY:
                values = struct.unpack_from(f"{cur.order}{n}{code}", cur.buf, cur.pos)
            cur.pos += n * size
            return ArrayValue(item, n, values)
        if item == _STRING:
            n = cur.count(f"strings in '{key}'", 8)
            cur.skip_strings(n, f"the array '{key}'")
            return ArrayValue(item, n, None)
        if item == _ARRAY:
            n = cur.count(f"arrays in '{key}'", 12)
            for _ in range(n):
                _value(cur, _ARRAY, key, depth + 1)
            return ArrayValue(item, n, None)
        raise cur.error(f"metadata '{shown(key, 60, quote=False)}' has an array of unknown GGUF value type {item}")
    if vtype == _ARRAY:
        raise cur.error(f"metadata '{shown(key, 60, quote=False)}' nests arrays more than {_MAX_NESTING} deep")
    raise cur.error(f"metadata '{shown(key, 60, quote=False)}' has unknown GGUF value type {vtype} (known: 0-12)")


def _version(cur: _Cursor) -> int:
    cur.need(min(cur.size, 4), "the magic")
    if bytes(cur.buf[:4]) != MAGIC:
        raise cur.error(f"not a GGUF file (it starts with {bytes(cur.buf[:4])!r}; a GGUF file starts with b'GGUF')")
    cur.pos = 4
    version = cur.u32("the version")
    if version and not version & 0xFFFF:  # gguf.cpp: a byte-swapped version means the other byte order
        cur.order = ">"
        cur.pos = 4
        version = cur.u32("the version")
    if version not in VERSIONS:
        raise cur.error(
            f"GGUF version {version} is not supported (supported: {', '.join(map(str, VERSIONS))}; v1 files "
            "predate August 2023 and llama.cpp no longer reads them)"
        )
    return version


def _tensor(cur: _Cursor, index: int) -> TensorInfo:
    name = cur.string(f"the name of tensor {index}")
    label = f"'{shown(name, 60, quote=False)}'"
    dims = cur.u32(f"the dimension count of {label}")
    if dims > MAX_DIMS:
        raise cur.error(f"tensor {label} has {dims} dimensions; ggml allows at most {MAX_DIMS}")
    shape = tuple(cur.u64(f"the shape of {label}") for _ in range(dims))
    ggml_type = cur.u32(f"the type of {label}")
    offset = cur.u64(f"the offset of {label}")
    return TensorInfo(name=name, shape=shape, ggml_type=ggml_type, offset=offset)


def read_header(fetch: Fetch, size: int, where: str) -> GgufHeader:
    """The metadata and tensor infos of a GGUF of ``size`` bytes read through ``fetch``; ``where`` names it in
    errors. Reads at most the header rounded up to a power of two (at least 1 MiB)."""
    cur = _Cursor(fetch, size, where)
    version = _version(cur)
    n_tensors = cur.count("tensors", _MIN_TENSOR_BYTES)
    n_kv = cur.count("metadata key/value pairs", _MIN_KV_BYTES)
    metadata: dict[str, object] = {}
    for _ in range(n_kv):
        key = cur.string("a metadata key")
        if key in metadata:
            raise cur.error(f"metadata key '{shown(key, 60, quote=False)}' appears twice")
        metadata[key] = _value(cur, cur.u32(f"the type of '{shown(key, 60, quote=False)}'"), key)
    tensors = tuple(_tensor(cur, i) for i in range(n_tensors))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise cur.error(f"general.alignment must be a power of two, got {shown(alignment)}")
    data_start = -(-cur.pos // alignment) * alignment
    return GgufHeader(
        version=version,
        metadata=MappingProxyType(metadata),
        tensors=tensors,
        data_start=data_start,
        file_size=size,
        header_bytes_read=len(cur.buf),
    )

"""Tiny GGUF files for the tests: written with the gguf package's own GGUFWriter, or byte by byte for the
malformed headers GGUFWriter refuses to write.

Tensor shapes here are numpy/torch order, (out_features, in_features), as GGUFWriter takes them; a quantized
tensor is handed over as its bytes, (rows, in_features / block * type_size) uint8, with raw_dtype naming the
ggml type (GGUFWriter.add_tensor_info turns the byte shape back into elements: quant_shape_from_byte_shape).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
TensorSpec = tuple[str, tuple[int, ...], Any]  # (name, numpy-order shape, ggml type)


def write(
    path: Path,
    arch: str,
    meta: dict[str, Any],
    tensors: Sequence[TensorSpec],
    *,
    split_max_tensors: int = 0,
) -> list[Path]:
    """Write a GGUF (or a split set) with GGUFWriter; return the paths written."""
    w = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    for key, value in meta.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    for name, shape, qtype in tensors:
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if qtype == Q.F32:
            w.add_tensor(name, np.zeros(shape, np.float32))
        elif qtype == Q.F16:
            w.add_tensor(name, np.zeros(shape, np.float16))
        else:
            byte_shape = (*shape[:-1], shape[-1] // block * type_size)
            w.add_tensor(name, np.zeros(byte_shape, np.uint8), raw_dtype=qtype)
    paths = w.format_shard_names(Path(path))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return paths


# --- raw headers, byte by byte (GGUF layout: llama.cpp docs/gguf.md) ---------------------------------------------


def gguf_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv_u32(key: str, value: int) -> bytes:
    return gguf_string(key) + struct.pack("<II", 4, value)


def kv_str(key: str, value: str) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)


def tensor_info(name: str, dims: Sequence[int], ggml_type: int, offset: int = 0) -> bytes:
    return (
        gguf_string(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def raw(
    kvs: Sequence[bytes],
    tensors: Sequence[bytes] = (),
    *,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    data: bytes = b"",
) -> bytes:
    """A GGUF's bytes: header with the given (or claimed) counts, padding to 32, then ``data``."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(tensors)
    head += b"\0" * (-len(head) % 32)
    return head + data

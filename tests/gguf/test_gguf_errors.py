"""Bad GGUF input: one line naming the file and what is wrong, exit status 2; never a traceback, a hang or a huge
allocation. Malformed headers are written byte by byte (gguf_build.raw), since GGUFWriter refuses to write them."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import gguf
import pytest
from gguf_build import gguf_string, kv_str, kv_u32, raw, tensor_info

from vramwise.cli import main
from vramwise.errors import ConfigError, UnsupportedArchitectureError
from vramwise.spec.gguf_file import gguf_model

_LLAMA_KVS = [
    kv_str("general.architecture", "llama"),
    kv_u32("llama.block_count", 1),
    kv_u32("llama.embedding_length", 32),
    kv_u32("llama.attention.head_count", 2),
]


def _file(tmp_path: Path, data: bytes, name: str = "bad.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(path: Path, pattern: str, error: type[Exception] = ConfigError) -> None:
    start = time.perf_counter()
    with pytest.raises(error, match=pattern) as info:
        gguf_model(path)
    assert time.perf_counter() - start < 2  # bounded: no walk over a claimed count
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", r"not a GGUF file \(it starts with b''"),
        (b"hello world, not a model", r"not a GGUF file \(it starts with b'hell'"),
        (b'{"model_type": "llama"}', r"not a GGUF file"),
        (b"GGUF", r"truncated GGUF header: the version needs bytes 4 to 8 but the file has 4"),
        (raw(_LLAMA_KVS, version=1), r"GGUF version 1 is not supported \(supported: 2, 3"),
        (raw(_LLAMA_KVS, version=4), r"GGUF version 4 is not supported"),
        (raw(_LLAMA_KVS, n_tensors=2**62), r"claims 4,611,686,018,427,387,904 tensors, more than the"),
        (raw(_LLAMA_KVS, n_kv=2**63), r"claims 9,223,372,036,854,775,808 metadata key/value pairs"),
        (raw(_LLAMA_KVS, n_kv=5), r"truncated GGUF header"),
        # a key whose length says 2^60 bytes
        (raw([struct.pack("<Q", 2**60) + b"x"]), r"claims 1,152,921,504,606,846,976 bytes in a metadata key"),
        # an array of 2^40 uint32 values
        (raw([b"\x03\0\0\0\0\0\0\0abc" + struct.pack("<IIQ", 9, 4, 2**40)]), r"claims 1,099,511,627,776 elements of"),
        (raw([b"\x03\0\0\0\0\0\0\0abc" + struct.pack("<I", 13)]), r"metadata 'abc' has unknown GGUF value type 13"),
        # a string array whose second string claims 2^60 bytes
        (
            raw([gguf_string("toks") + struct.pack("<IIQ", 9, 8, 2) + gguf_string("a") + struct.pack("<Q", 2**60)]),
            r"claims 1,152,921,504,606,846,976 bytes in the array 'toks'",
        ),
        (raw([*_LLAMA_KVS, _LLAMA_KVS[1]]), r"metadata key 'llama.block_count' appears twice"),
        (raw(_LLAMA_KVS, [tensor_info("t", [32] * 5, 0)]), r"tensor 't' has 5 dimensions; ggml allows at most 4"),
        (raw([*_LLAMA_KVS, kv_u32("general.alignment", 3)]), r"general.alignment must be a power of two"),
    ],
)
def test_malformed_headers(tmp_path: Path, data: bytes, pattern: str) -> None:
    _refused(_file(tmp_path, data), pattern)


def test_unknown_architecture_lists_the_supported(tmp_path: Path) -> None:
    data = raw([kv_str("general.architecture", "mamba")])
    _refused(_file(tmp_path, data), r"GGUF architecture 'mamba' is not supported; supported: .*llama.*qwen2moe", (
        UnsupportedArchitectureError
    ))
    _refused(_file(tmp_path, raw([kv_u32("llama.block_count", 1)]), "noarch.gguf"), r"'general.architecture' is miss")


def test_unknown_ggml_type(tmp_path: Path) -> None:
    data = raw(_LLAMA_KVS, [tensor_info("token_embd.weight", [32, 8], 99)], data=b"\0" * 1024)
    _refused(_file(tmp_path, data), r"tensor 'token_embd.weight'.*has ggml type 99, unknown .*known: F32, F16, Q4_0")


def test_a_row_that_is_not_whole_blocks(tmp_path: Path) -> None:
    data = raw(_LLAMA_KVS, [tensor_info("token_embd.weight", [100, 8], int(gguf.GGMLQuantizationType.Q4_K))])
    _refused(_file(tmp_path, data + b"\0" * 4096), r"row of 100 is not a multiple of Q4_K's block of 256")


def test_tensor_data_past_the_end_is_an_incomplete_download(tmp_path: Path) -> None:
    # 32 x 8 F32 = 1,024 bytes of data, of which only 100 are there
    data = raw(_LLAMA_KVS, [tensor_info("token_embd.weight", [32, 8], 0)], data=b"\0" * 100)
    _refused(_file(tmp_path, data), r"ends at byte [\d,]+ but the file has [\d,]+ \(an incomplete download")


def test_a_wrongly_typed_size(tmp_path: Path) -> None:
    kvs = [kv_str("llama.block_count", "two") if kv == _LLAMA_KVS[1] else kv for kv in _LLAMA_KVS]
    _refused(_file(tmp_path, raw(kvs)), r"GGUF key 'llama.block_count' must be a non-negative integer, got 'two'")


def test_a_missing_size(tmp_path: Path) -> None:
    kvs = [kv_str("general.architecture", "llama")]
    _refused(_file(tmp_path, raw(kvs)), r"GGUF key 'llama.attention.head_count' is missing \(needed for architectu")


def test_truncated_copy_of_a_real_file(tmp_path: Path) -> None:
    from gguf_build import Q, write

    path = tmp_path / "whole.gguf"
    write(path, "llama", {"llama.block_count": 1}, [("token_embd.weight", (8, 32), Q.F32)])
    data = path.read_bytes()
    _refused(_file(tmp_path, data[:60], "cut-header.gguf"), r"truncated")
    _refused(_file(tmp_path, data[:-8], "cut-data.gguf"), r"an incomplete download")


def test_cli_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (_file(tmp_path, b"nope"), tmp_path / "absent.gguf", tmp_path):
        target = str(path) if path.suffix else str(path / "dir.gguf")
        assert main(["infer", target]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("vramwise: error: ")

"""Shared by the reliability suite (issue 11): the bad config files and the in-process CLI runner."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

# A small, valid Llama config: the base every bad config below changes one thing of (the findings' `$L`).
LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 100,
}
MIXTRAL: dict[str, Any] = {
    "model_type": "mixtral",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 100,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
}


def _cfg(**changes: Any) -> bytes:
    cfg = {**LLAMA}
    for key, value in changes.items():
        if value is _DROP:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return json.dumps(cfg).encode()


def _raw(text: str) -> bytes:
    return text.encode()


_DROP = object()
_BODY = '"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, '
_BODY += '"intermediate_size": 128, "vocab_size": 100'

# name -> bytes of a bad config file (the findings' bad/ folder, rebuilt; §6 numbers in the comments)
BAD_FILES: dict[str, bytes] = {
    "malformed.json": b'{"model_type": "llama",}',  # 1
    "list.json": b"[1, 2]",  # 2
    "number.json": b"42",  # 3
    "string.json": b'"llama"',  # 4
    "null.json": b"null",  # 5
    "empty.json": b"",  # 6
    "blank.json": b"\n  ",  # 7
    "binary.json": bytes(range(200, 256)) * 4,  # 8 (C1)
    # 9 (C1): latin-1 bytes in an otherwise unsupported config, so it is refused however the text is decoded
    "latin1.json": '{"model_type": "llamé"}'.encode("latin-1"),
    # 10: a UTF-8 BOM before an unsupported model_type: refused whether or not the BOM is accepted
    "bom.json": b"\xef\xbb\xbf" + b'{"model_type": "gpt5"}',
    "utf16.json": '{"model_type": "gpt5"}'.encode("utf-16"),  # 11 (C1): BOM + UTF-16, unsupported either way
    "deep.json": b"[" * 100_000 + b"]" * 100_000,  # 13 (C3)
    "bigint.json": b'{"a": ' + b"9" * 5000 + b"}",  # 14 (C2)
    "no_model_type.json": json.dumps({k: v for k, v in LLAMA.items() if k != "model_type"}).encode(),  # 23
    "unknown_type.json": _cfg(model_type="gpt5"),  # 24
    "int_type.json": _cfg(model_type=7),  # 25 (U12)
    "empty_type.json": _cfg(model_type=""),  # 26
    "no_hidden.json": _cfg(hidden_size=_DROP),  # 27
    "hidden_str.json": _cfg(hidden_size="64"),  # 28
    "hidden_float.json": _cfg(hidden_size=64.0),  # 29
    "hidden_bool.json": _cfg(hidden_size=True),  # 30
    "hidden_null.json": _cfg(hidden_size=None),  # 31
    "hidden_neg.json": _cfg(hidden_size=-64),  # 32
    "hidden_zero.json": _cfg(hidden_size=0),  # 33
    "hidden_nan.json": _raw("{" + _BODY.replace('"hidden_size": 64', '"hidden_size": NaN') + "}"),  # 34
    "hidden_inf.json": _raw("{" + _BODY.replace('"hidden_size": 64', '"hidden_size": Infinity') + "}"),  # 35
    "hidden_1e308.json": _cfg(hidden_size=1e308),  # 36
    "hidden_1e30.json": _cfg(hidden_size=10**30),  # 37 (W9)
    "vocab_1e30.json": _cfg(vocab_size=10**30),  # 38 (W9)
    "vocab_1e400.json": _cfg(vocab_size=10**400),  # 39 (C7)
    "layers_1e400.json": _cfg(num_hidden_layers=10**400),  # 40, 41 (C7)
    "layers_1e30.json": _cfg(num_hidden_layers=10**30),  # C7 (the C ssize_t overflow)
    "layers_1e9.json": _cfg(num_hidden_layers=10**9),  # H2
    "heads_prime.json": _cfg(num_attention_heads=999_999_937, head_dim=16),  # H3
    "heads_nodiv.json": _cfg(num_attention_heads=3),  # 42
    "kv_nodiv.json": _cfg(num_key_value_heads=3),  # 43
    "kv_gt_heads.json": _cfg(num_key_value_heads=8),  # 44
    "tie_str.json": _cfg(tie_word_embeddings="yes"),  # 45
    "dtype_garbage.json": _cfg(torch_dtype="int3"),  # 46 (W8)
    "dtype_int.json": _cfg(torch_dtype=123),  # W8
    "maxpos_str.json": _cfg(max_position_embeddings="4096"),  # 47 (C8: never validated)
    "maxpos_list.json": _cfg(max_position_embeddings=[]),  # C8
    "maxpos_dict.json": _cfg(max_position_embeddings={}),  # C8
    "intermediate_zero.json": _cfg(intermediate_size=0),  # 53
    "layers_zero.json": _cfg(num_hidden_layers=0),  # 54
    "mixtral_topk.json": json.dumps({**MIXTRAL, "num_experts_per_tok": 100}).encode(),  # 55, 56 (W2)
    "remote_code.json": _cfg(model_type="evil_model", auto_map={"AutoConfig": "configuration_evil.EvilConfig"}),
    "text_config_weird.json": json.dumps({"model_type": "llava", "text_config": {**LLAMA, "model_type": 7}}).encode(),
    # U7: a model_type that would print extra lines, a fake traceback and terminal escapes if echoed raw
    "escape_type.json": _cfg(model_type="x\nTraceback (most recent call last):\n\x1b[31mred\x1b[0m"),
    "hidden_longstr.json": _cfg(hidden_size="9" * 1_000_000),  # U8 (1 MB here; 10 MB in the notes)
    # a BERT config without architectures: BertModel, no head to train (the catalog's BERTs name BertForMaskedLM)
    "bert_nohead.json": json.dumps({"model_type": "bert", "vocab_size": 100, "hidden_size": 64,
                                    "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                                    "max_position_embeddings": 64}).encode(),
}


@pytest.fixture(scope="session")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of bad config files (``BAD_FILES``), bad folders, a symlink loop and a pickle folder."""
    d = tmp_path_factory.mktemp("bad")
    for name, data in BAD_FILES.items():
        (d / name).write_bytes(data)
    (d / "emptydir").mkdir()  # 15
    (d / "gooddir").mkdir()
    (d / "gooddir" / "config.json").write_bytes(_cfg())
    (d / "pickledir").mkdir()  # 22 (C1): a pickle where config.json should be; never unpickled
    (d / "pickledir" / "config.json").write_bytes(pickle.dumps({"model_type": "llama"}))
    (d / "list.json.d").mkdir()
    os.symlink(d / "loop.json", d / "loop.json")  # 20: a link to itself
    (d / "adir.png").mkdir()  # C11: an existing folder named like a plot output
    return d


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``vramwise ARGV`` in-process: (exit status, stdout, stderr). argparse's refusals end in SystemExit."""
    from vramwise.cli import main

    try:
        rc = main(argv)
    except SystemExit as exit_:
        rc = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err

"""How MODEL is read: the one resolution rule, config files read as bounded UTF-8 JSON objects, exact bare sizes.

Every reproducer of issue 11's findings C1-C6, C10, H1, U4, U5, U9, K8 is here (the reliability report,
/work/shared/notes/reliability-findings.md). The oracle of a refusal is the rule it enforces: the error is a
``VramwiseError`` subclass, its message is one line and names the path or value; no traceback, no hang. The oracle of
a value is hand arithmetic in the test (sizes, the tiny config's parameter count) or the same config read another
way (with and without a byte-order mark).
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vramwise.catalog import models
from vramwise.cli import main
from vramwise.errors import ConfigError, UnknownModelError, VramwiseError
from vramwise.spec.load import MAX_BARE_PARAMS, MAX_CONFIG_BYTES, BareModel, parse_size, resolve_model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import total_params

TINY = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 100,
}
# By hand: embeddings and the untied head 2 x 100 x 64 = 12,800; a layer's attention 4 x 64 x 64 = 16,384, its
# gated MLP 3 x 64 x 128 = 24,576, its two RMSNorms 128: 41,088 a layer, 82,176 for two; the final norm 64.
TINY_PARAMS = 12_800 + 82_176 + 64


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (H1: reading a FIFO blocked forever)."""

    def _expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _refused(text: str, kind: type[VramwiseError], *needles: str, field: str | None = "model") -> VramwiseError:
    with _deadline(20), pytest.raises(kind) as info:
        resolve_model(text)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    if field is not None:  # the adapters' own errors (a config's fields) are theirs to label
        assert info.value.field == field
    return info.value


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with _deadline(60):
        code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write_tiny(path: Path, encoding: str = "utf-8", prefix: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(prefix + json.dumps(TINY).encode(encoding))
    return path


# --- C1: not UTF-8 -------------------------------------------------------------------------------------------------


def test_a_file_of_0xff_bytes_is_refused_as_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "c1.json"
    bad.write_bytes(b"\xff" * 64)
    _refused(str(bad), ConfigError, str(bad), "not a UTF-8 JSON config", "0xff")


def test_a_weights_file_by_name_is_refused_as_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # `vramwise infer pytorch_model.bin`: rule 4, an existing local file
    Path("pytorch_model.bin").write_bytes(b"PK\x03\x04\x80\x81" + bytes(range(256)))
    _refused("pytorch_model.bin", ConfigError, "pytorch_model.bin", "not a UTF-8 JSON config")


def test_a_latin1_config_is_refused_at_its_first_non_utf8_byte(tmp_path: Path) -> None:
    text = json.dumps({**TINY, "author": "José"}, ensure_ascii=False)
    bad = tmp_path / "latin1.json"
    bad.write_bytes(text.encode("latin-1"))
    _refused(str(bad), ConfigError, "not a UTF-8 JSON config", "0xe9", f"offset {text.index('é'):,}")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])  # both write a byte-order mark
def test_a_utf16_or_utf32_config_is_refused_by_its_byte_order_mark(tmp_path: Path, encoding: str) -> None:
    bad = _write_tiny(tmp_path / "wide.json", encoding)
    _refused(str(bad), ConfigError, "not a UTF-8 JSON config", "UTF-16 or UTF-32")


def test_a_utf16_config_without_a_mark_is_refused_by_its_nul_bytes(tmp_path: Path) -> None:
    bad = _write_tiny(tmp_path / "wide.json", "utf-16-le")  # ASCII as UTF-16: valid UTF-8 with NULs between
    _refused(str(bad), ConfigError, "not a UTF-8 JSON config", "NUL")


def test_a_utf8_config_with_a_byte_order_mark_reads_like_one_without(tmp_path: Path) -> None:
    plain = resolve_model(str(_write_tiny(tmp_path / "plain" / "x" / "config.json")))
    marked = resolve_model(str(_write_tiny(tmp_path / "marked" / "x" / "config.json", prefix=b"\xef\xbb\xbf")))
    assert isinstance(marked, ModelSpec) and marked == plain  # ModelSpec equality ignores the source
    assert total_params(marked) == TINY_PARAMS


# --- C2, C3 and JSON's number limits -------------------------------------------------------------------------------


def test_an_integer_past_pythons_digit_limit_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "c2.json"
    bad.write_text('{"a": ' + "9" * 4301 + "}")
    _refused(str(bad), ConfigError, str(bad), "4,301 digits", "4,300")


def test_an_unread_integer_at_the_digit_limit_is_still_json(tmp_path: Path) -> None:
    ok = tmp_path / "config.json"
    ok.write_text(json.dumps(TINY)[:-1] + ', "unused": ' + "9" * 4300 + "}")
    spec = resolve_model(str(ok))
    assert isinstance(spec, ModelSpec) and total_params(spec) == TINY_PARAMS


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    bad = tmp_path / "c3.json"
    bad.write_text("[" * 100_000 + "]" * 100_000)
    _refused(str(bad), ConfigError, str(bad), "nested too deeply")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_json_numbers_that_are_not_finite_are_refused(tmp_path: Path, number: str) -> None:
    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(TINY)[:-1] + f', "rope_theta": {number}}}')
    _refused(str(bad), ConfigError, str(bad), number.lstrip("-"))


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "an array"), ('"llama"', "a string"), ("7", "a number")])
def test_the_top_level_must_be_an_object(tmp_path: Path, text: str, kind: str) -> None:
    bad = tmp_path / "top.json"
    bad.write_text(text)
    _refused(str(bad), ConfigError, str(bad), kind, "JSON object")


# --- C10, H1: only regular files, of bounded size, read without blocking ------------------------------------------


def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "h1.json"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    _refused(str(fifo), ConfigError, str(fifo), "not a regular file")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/stdin", "/dev/null"])
def test_devices_and_stdin_are_refused(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    _refused(device, ConfigError, device, "not a regular file")


def test_a_file_past_the_size_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "config.json"
    with big.open("wb") as f:  # sparse: no disk used, and not read (the stat refuses it)
        f.truncate(MAX_CONFIG_BYTES + 1)
    _refused(str(big), ConfigError, str(big), f"{MAX_CONFIG_BYTES + 1:,} bytes", "16 MiB")


def test_a_symlink_loop_is_one_line(tmp_path: Path) -> None:
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    _refused(str(loop), ConfigError, str(loop), "cannot read config")


# --- C5, C6, U4: names the OS or Python cannot look up ------------------------------------------------------------


def test_a_300_character_name_is_an_unknown_model_quoted_short() -> None:
    err = _refused("a" * 300, UnknownModelError, "unknown model", "…")
    assert len(str(err)) < 400  # the name is cut to 80 characters in the message


def test_a_300_character_path_cannot_be_read(tmp_path: Path) -> None:
    _refused(str(tmp_path / ("a" * 300)), ConfigError, "cannot read config", "too long")


@pytest.mark.parametrize("text", ["~nosuchuser", "~nosuchuser/config.json"])
def test_a_home_of_no_user_is_refused(text: str) -> None:
    try:
        pwd.getpwnam("nosuchuser")
        pytest.skip("this machine has a user 'nosuchuser'")
    except KeyError:
        pass
    _refused(text, ConfigError, "no user 'nosuchuser'")


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_model_is_refused_not_read_as_the_current_folder(text: str) -> None:
    _refused(text, UnknownModelError, "MODEL is empty")


# --- C4, K8: bare sizes are ASCII, finite, whole and plausible -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("14b", 14 * 10**9),
        ("14B", 14 * 10**9),
        ("7.5e9", 7_500_000_000),
        ("7.5E+9", 7_500_000_000),
        ("350m", 350 * 10**6),
        ("1.3b", 1_300_000_000),
        ("6.738415616b", 6_738_415_616),
        ("125", 125),
        ("1", 1),
        ("100t", MAX_BARE_PARAMS),  # the bound itself: 100 x 10^12
    ],
)
def test_bare_sizes_by_hand(text: str, params: int) -> None:
    assert parse_size(text) == params
    assert resolve_model(text) == BareModel(name=text, params=params)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1e400", "too large"),
        ("1E400", "too large"),
        ("1e308t", "too large"),
        ("1e99999999999999999999999999", "too large"),  # refused before any power is computed
        ("100000000000001", "too large"),  # 10^14 + 1
        ("101t", "too large"),
        ("1.4", "not a whole number"),
        ("0.5", "not a whole number"),
        ("1.0000000001b", "not a whole number"),  # 1,000,000,000.1
        ("0", "zero"),
        ("0.0b", "zero"),
    ],
)
def test_implausible_bare_sizes_are_refused(text: str, why: str) -> None:
    _refused(text, UnknownModelError, f"bare size '{text}'", why)


@pytest.mark.parametrize("text", ["١٤b", "１４b", "۱۴b"])  # Arabic-Indic, full-width, Persian digits for 14
def test_non_ascii_digits_are_not_a_size(text: str) -> None:
    assert parse_size(text) is None
    _refused(text, UnknownModelError, "unknown model", "ASCII digits")


# --- U5: one rule for path, catalog name, size and local name ------------------------------------------------------


def test_a_folder_named_like_a_size_does_not_hide_the_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("7b").mkdir()
    Path("14b").write_text("{}")
    assert resolve_model("7b") == BareModel(name="7b", params=7 * 10**9)
    assert resolve_model("14b") == BareModel(name="14b", params=14 * 10**9)
    _refused("./7b", ConfigError, "folder '7b' has no config.json")  # explicit: the folder
    _refused("./14b", ConfigError, "14b", "field 'model_type' is missing", field=None)  # the file


def test_a_folder_without_config_json_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    _refused(str(folder), ConfigError, f"folder '{folder}' has no config.json")


def test_a_catalog_name_wins_over_a_local_folder_and_dot_slash_reads_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_tiny(Path("gpt2") / "config.json")
    catalog = resolve_model("gpt2")
    assert isinstance(catalog, ModelSpec) and catalog.source.startswith("catalog:gpt2")
    local = resolve_model("./gpt2")
    assert isinstance(local, ModelSpec) and local.source == os.path.join("gpt2", "config.json")
    assert total_params(local) == TINY_PARAMS


def test_an_existing_local_name_is_read_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write_tiny(Path("mymodel") / "config.json")
    spec = resolve_model("mymodel")
    assert isinstance(spec, ModelSpec) and spec.name == "mymodel" and total_params(spec) == TINY_PARAMS


@pytest.mark.parametrize("text", ["model.json", "sub/config.json", "./missing", "../missing"])
def test_an_explicit_path_that_does_not_exist_is_an_error_not_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _refused(text, ConfigError, text, "no such file or folder")


# --- U9: hub ids ---------------------------------------------------------------------------------------------------


def test_a_hub_id_not_on_the_hub_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_server: object) -> None:
    monkeypatch.chdir(tmp_path)  # the loopback hub (tests/hub_server.py) holds no repos
    _refused("some-org/some-model", ConfigError, "some-org/some-model", "no such repo", "HF_TOKEN")


def test_a_hub_id_the_catalog_holds_names_the_catalog_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # offline (tests/conftest.py) with an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    entry = next(m for m in models().values() if "/" in m.hf_id)
    _refused(entry.hf_id, ConfigError, "HF_HUB_OFFLINE", f"vramwise infer {entry.name}")


def test_a_downloaded_hub_folder_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write_tiny(Path("some-org") / "some-model" / "config.json")
    spec = resolve_model("some-org/some-model")
    assert isinstance(spec, ModelSpec) and spec.name == "some-model"


# --- the title names a config file, and only a config file ---------------------------------------------------------


def test_the_title_names_the_config_file_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_tiny(Path("x") / "config.json")
    code, out, _ = _cli(capsys, "infer", "./x")
    first = out.splitlines()[0]
    assert code == 0 and first.startswith(f"vramwise infer x [llama, {TINY_PARAMS:,} parameters, from x")
    assert os.path.join("x", "config.json") in first
    code, out, _ = _cli(capsys, "infer", "gpt2")
    assert code == 0 and "from" not in out.splitlines()[0]  # a catalog model's title is unchanged
    code, out, _ = _cli(capsys, "infer", "7b", "--mode", "textbook")
    assert code == 0 and "from" not in out.splitlines()[0]


def test_a_folder_name_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "a\nb"
    _write_tiny(folder / "config.json")
    spec = resolve_model(str(folder))
    assert isinstance(spec, ModelSpec) and "\n" not in spec.name and "\n" not in spec.source


# --- through the command line: exit 2 and one stderr line ----------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs are POSIX")
def test_cli_refusals_are_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c1.json").write_bytes(b"\xff")
    os.mkfifo("h1.json")
    Path("nocfg").mkdir()
    cases = {
        ("infer", "c1.json"): "c1.json",
        ("infer", "h1.json"): "h1.json",
        ("infer", ""): "MODEL is empty",
        ("infer", "1e400"): "1e400",
        ("train", "1E400", "--mode", "textbook"): "1E400",
        ("infer", "1.4"): "1.4",
        ("infer", "a" * 300): "unknown model",
        ("infer", "./nocfg"): "nocfg",
        ("infer", "meta-llama/Llama-3-8B"): "HF_HUB_OFFLINE is set",
        ("infer", "c1.json", "--json"): "c1.json",
    }
    for argv, needle in cases.items():
        code, out, err = _cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and out == "", (argv, code, out, err)
        assert len(lines) == 1 and lines[0].startswith("vramwise: error:") and needle in lines[0], (argv, err)

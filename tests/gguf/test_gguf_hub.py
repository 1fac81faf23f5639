"""A GGUF in a hub repo, read through ranged requests against a loopback hub (conftest.py): the spec equals the
same file read locally, and the bytes fetched stay at header size (the server counts what it sent)."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from gguf_build import Q, write
from hub_server import HubServer, Repo

from vramwise.cli import main
from vramwise.errors import ConfigError
from vramwise.spec.gguf_file import gguf_model, read_local
from vramwise.spec.load import Model, resolve_model
from vramwise.spec.model import ModelSpec

H, FF, L, V = 256, 1024, 2, 64
MiB = 2**20


def _file(tmp_path: Path, name: str, *, tokens: int = V, ffn_type=Q.Q4_K, split: int = 0) -> list[Path]:
    """A tiny llama whose tensor data (about 3 MiB in F16 for the MLP) dwarfs its header, unless ``tokens``
    makes the vocabulary big."""
    meta = {
        "llama.block_count": L,
        "llama.embedding_length": H,
        "llama.feed_forward_length": FF,
        "llama.attention.head_count": 4,
        "llama.context_length": 8192,
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
        "tokenizer.ggml.tokens": [f"token-{i:08d}" for i in range(tokens)],
    }
    t = [("token_embd.weight", (V, H), Q.F16), ("output_norm.weight", (H,), Q.F32)]
    for i in range(L):
        t += [(f"blk.{i}.attn_norm.weight", (H,), Q.F32), (f"blk.{i}.ffn_norm.weight", (H,), Q.F32)]
        t += [(f"blk.{i}.attn_{n}.weight", (H, H), Q.F16) for n in ("q", "k", "v", "output")]
        t += [(f"blk.{i}.ffn_{n}.weight", (FF, H), Q.F16) for n in ("gate", "up")]
        t.append((f"blk.{i}.ffn_down.weight", (H, FF), Q.F16))
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    return write(path, "llama", meta, t, split_max_tensors=split)


def _repo(hub: HubServer, tmp_path: Path, repo: str = "org/tiny-GGUF") -> dict[str, Path]:
    files = {
        "tiny-Q4_K_M.gguf": _file(tmp_path, "tiny-Q4_K_M.gguf")[0],
        "tiny-Q4_K_S.gguf": _file(tmp_path, "tiny-Q4_K_S.gguf")[0],
        "tiny-Q8_0.gguf": _file(tmp_path, "tiny-Q8_0.gguf")[0],
        "mmproj-tiny-f16.gguf": _file(tmp_path, "mmproj-tiny-f16.gguf")[0],
    }
    for part in _file(tmp_path, "tiny-Q6_K.gguf", split=10):
        files[f"Q6_K/{part.name}"] = part
    hub.repos[repo] = Repo(files={name: p.read_bytes() for name, p in files.items()} | {"README.md": b"# tiny\n"})
    return files


def _same_as_local(spec: Model, path: Path) -> None:
    """The hub read gives the same tensors as the same file read locally."""
    local = gguf_model(path)[0]
    assert isinstance(spec, ModelSpec) and spec.checkpoint is not None and local.checkpoint is not None
    assert spec.checkpoint.categories == local.checkpoint.categories and spec.name == local.name


def test_tag_picks_the_file_and_reads_only_its_header(hub_server: HubServer, tmp_path: Path) -> None:
    files = _repo(hub_server, tmp_path)
    spec = resolve_model("org/tiny-GGUF:q4_k_m")
    _same_as_local(spec, files["tiny-Q4_K_M.gguf"])
    assert spec.source == "hf:org/tiny-GGUF:q4_k_m"
    size = len(hub_server.repos["org/tiny-GGUF"].files["tiny-Q4_K_M.gguf"])
    assert size > 3 * MiB
    assert hub_server.files_served()["tiny-Q4_K_M.gguf"] == 1 * MiB  # one first read (1 MiB) holds this header
    assert set(hub_server.files_served()) == {"tiny-Q4_K_M.gguf"}  # the other files are never read


def test_a_header_longer_than_the_first_read(hub_server: HubServer, tmp_path: Path) -> None:
    """60,000 tokens of 14 characters: a 1.3 MB header, read in two reads of 1 MiB (the held prefix doubles)."""
    path = _file(tmp_path, "big-vocab-Q4_K_M.gguf", tokens=60_000)[0]
    hub_server.repos["org/big"] = Repo(files={path.name: path.read_bytes()})
    spec = resolve_model("org/big:Q4_K_M")
    header = read_local(path).data_start  # equal to GGUFReader's data_offset (test_gguf_file), 60x faster here
    assert 1 * MiB < header < 2 * MiB
    assert hub_server.files_served()[path.name] == 2 * MiB < 2 * header  # 1 + 1 MiB: within twice the header
    local = gguf_model(path)[0].checkpoint
    assert spec.checkpoint is not None and local is not None
    assert spec.checkpoint.categories == local.categories


def test_split_set_in_a_folder_by_tag_and_by_path(hub_server: HubServer, tmp_path: Path) -> None:
    files = _repo(hub_server, tmp_path)
    parts = sorted(k for k in files if k.startswith("Q6_K/"))
    assert len(parts) >= 2
    local = gguf_model(files[parts[0]])[0]
    for text in ("org/tiny-GGUF:Q6_K", f"org/tiny-GGUF/{parts[0]}"):
        spec = resolve_model(text)
        assert spec.checkpoint is not None and local.checkpoint is not None
        assert spec.checkpoint.categories == local.checkpoint.categories
        assert f"({len(parts)} files)" in spec.checkpoint.source


def test_path_in_repo(hub_server: HubServer, tmp_path: Path) -> None:
    _repo(hub_server, tmp_path)
    assert resolve_model("org/tiny-GGUF/tiny-Q8_0.gguf").name == "tiny-Q8_0"
    assert set(hub_server.files_served()) == {"tiny-Q8_0.gguf"}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("org/tiny-GGUF:Q4_K", r"tag 'Q4_K' matches several GGUF files: tiny-Q4_K_M.gguf, tiny-Q4_K_S.gguf; give"),
        ("org/tiny-GGUF:IQ2_XXS", r"tag 'IQ2_XXS' matches no GGUF file: Q6_K/tiny-Q6_K-00001-of-0000\d.gguf, tiny"),
        ("org/tiny-GGUF/nope.gguf", r"no such local file; as a hub file: .*no file 'nope.gguf' in the repo; its GGUF"),
        ("org/absent:Q4_K_M", r"^hf:org/absent:Q4_K_M: no such repo on the hub, .*a private or gated repo .*HF_TOKEN"),
    ],
)
def test_refusals_name_the_fix(hub_server: HubServer, tmp_path: Path, text: str, pattern: str) -> None:
    _repo(hub_server, tmp_path)
    with pytest.raises(ConfigError, match=pattern):
        resolve_model(text)


def test_gated_repo_needs_the_token(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _repo(hub_server, tmp_path, "org/gated")
    hub_server.repos["org/gated"].gated = True
    with pytest.raises(ConfigError, match=r"gated repo, no access with this token; accept the licence .*HF_TOKEN"):
        resolve_model("org/gated:Q8_0")
    monkeypatch.setenv("HF_TOKEN", hub_server.repos["org/gated"].token)
    assert resolve_model("org/gated:Q8_0").name == "tiny-Q8_0"


def test_offline_reads_the_cache_only(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _repo(hub_server, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"HF_HUB_OFFLINE is set and the Hugging Face cache holds no GGUF file"):
        resolve_model("org/tiny-GGUF:Q4_K_M")
    # huggingface_hub's cache layout: models--org--name/refs/main holds the commit, snapshots/<commit>/ the files
    repo_dir = tmp_path / "hf-cache" / "models--org--tiny-GGUF"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("c0ffee")
    (repo_dir / "snapshots" / "c0ffee").mkdir(parents=True)
    (repo_dir / "snapshots" / "c0ffee" / "tiny-Q4_K_M.gguf").write_bytes(files["tiny-Q4_K_M.gguf"].read_bytes())
    assert resolve_model("org/tiny-GGUF:Q4_K_M").name == "tiny-Q4_K_M"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_model("org/tiny-GGUF:Q4_K_M").name == "tiny-Q4_K_M"  # online, the cache still comes first
    assert not hub_server.files_served()


def test_cli_estimate_from_the_hub(hub_server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _repo(hub_server, tmp_path)
    assert main(["infer", "org/tiny-GGUF:Q4_K_M", "--context", "1024"]) == 0
    assert "tiny-Q4_K_M" in capsys.readouterr().out
    assert main(["infer", "org/tiny-GGUF:Q9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matches no GGUF file" in err


def test_an_unreachable_hub(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens on loopback
    with pytest.raises(ConfigError, match=r"cannot reach the hub at http://127.0.0.1:9 \(\w+\) .*HF_HUB_OFFLINE=1"):
        resolve_model("org/tiny-GGUF:Q4_K_M")


# --- a plain org/name whose repo holds GGUF files and no config.json -----------------------------------------------


def test_plain_id_of_a_gguf_repo_reads_the_default_tag(
    hub_server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """llama.cpp's -hf without a tag reads Q4_K_M; the source says which file was read."""
    files = _repo(hub_server, tmp_path)
    spec = resolve_model("org/tiny-GGUF")
    _same_as_local(spec, files["tiny-Q4_K_M.gguf"])
    assert spec.source == "hf:org/tiny-GGUF (tiny-Q4_K_M.gguf: no config.json, llama.cpp's default tag Q4_K_M)"
    assert set(hub_server.files_served()) == {"tiny-Q4_K_M.gguf"}  # the missing config.json sent no body
    assert main(["infer", "org/tiny-GGUF", "--context", "1024"]) == 0
    assert "tiny-Q4_K_M.gguf: no config.json, llama.cpp's default tag Q4_K_M" in capsys.readouterr().out


def test_plain_id_without_the_default_tag_lists_the_tags(
    hub_server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _repo(hub_server, tmp_path)
    del hub_server.repos["org/tiny-GGUF"].files["tiny-Q4_K_M.gguf"]
    assert main(["infer", "org/tiny-GGUF"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "no config.json, and no GGUF file with llama.cpp's default tag Q4_K_M; its tags: Q6_K, Q4_K_S, Q8_0" in err
    assert "(org/tiny-GGUF:TAG)" in err
    assert not hub_server.files_served()
    hub_server.repos["org/one"] = Repo(files={"tiny-Q8_0.gguf": files["tiny-Q8_0.gguf"].read_bytes()})
    assert resolve_model("org/one").name == "tiny-Q8_0"  # a single GGUF is the only one to read


def test_plain_id_of_a_cached_gguf_repo_offline(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _repo(hub_server, tmp_path)
    snap = tmp_path / "hf-cache" / "models--org--tiny-GGUF" / "snapshots" / "c0ffee"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("c0ffee")
    (snap / "tiny-Q4_K_M.gguf").write_bytes(files["tiny-Q4_K_M.gguf"].read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("org/tiny-GGUF").name == "tiny-Q4_K_M"
    assert not hub_server.log


def test_plain_id_of_a_repo_without_config_or_gguf(hub_server: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    hub_server.repos["org/readme"] = Repo(files={"README.md": b"weights elsewhere"})
    assert main(["infer", "org/readme"]) == 2
    assert "the repo has no config.json" in capsys.readouterr().err


def test_a_hub_that_ignores_range(hub_server: HubServer, tmp_path: Path) -> None:
    """A mirror answering every Range with the whole file (200): the one hub client reads only the bytes it asked
    for, from the stream's start, and the header is the same."""
    files = _repo(hub_server, tmp_path)
    hub_server.repos["org/tiny-GGUF"].ranges = False
    _same_as_local(resolve_model("org/tiny-GGUF:Q8_0"), files["tiny-Q8_0.gguf"])
    assert {s.status for s in hub_server.requests_for("tiny-Q8_0.gguf")} == {200}

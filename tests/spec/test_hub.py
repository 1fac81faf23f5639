"""Hub ids and safetensors headers, against the loopback hub (tests/hub_server.py): never the internet.

Oracle: the bytes of the tensors each test writes with the safetensors library, as hand arithmetic (elements x
dtype width). Every repo's tensors are over 100 KB so that a read of the weights would show in the bytes served.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hub_server import HubServer, Repo
from safetensors.numpy import save

from vramwise.cli import main
from vramwise.estimate.inference import estimate_inference
from vramwise.spec.load import resolve_model
from vramwise.spec.safetensors_headers import category_of
from vramwise.workload import InferSetup

H, L, HEADS, KV, FF, V = 256, 2, 8, 2, 512, 8000  # a tiny Llama; head_dim 32
D = H // HEADS
CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": H,
    "num_hidden_layers": L,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV,
    "intermediate_size": FF,
    "vocab_size": V,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}
LINEARS = {  # name -> (in, out)
    "self_attn.q_proj": (H, HEADS * D),
    "self_attn.k_proj": (H, KV * D),
    "self_attn.v_proj": (H, KV * D),
    "self_attn.o_proj": (HEADS * D, H),
    "mlp.gate_proj": (H, FF),
    "mlp.up_proj": (H, FF),
    "mlp.down_proj": (FF, H),
}


def _edge_tensors() -> dict[str, np.ndarray]:
    t = {"model.embed_tokens.weight": np.zeros((V, H), np.float16), "lm_head.weight": np.zeros((V, H), np.float16)}
    t["model.norm.weight"] = np.zeros(H, np.float16)
    for i in range(L):
        t[f"model.layers.{i}.input_layernorm.weight"] = np.zeros(H, np.float16)
        t[f"model.layers.{i}.post_attention_layernorm.weight"] = np.zeros(H, np.float16)
    return t


def fp16_tensors() -> dict[str, np.ndarray]:
    t = _edge_tensors()
    for i in range(L):
        for name, (n_in, n_out) in LINEARS.items():
            t[f"model.layers.{i}.{name}.weight"] = np.zeros((n_out, n_in), np.float16)
    return t


def gptq_tensors(g: int = 128) -> dict[str, np.ndarray]:
    """auto-gptq's packing (qlinear_cuda_old.py): qweight int32 [in/8, out], qzeros int32 [in/g, out/8], scales
    fp16 [in/g, out], g_idx int32 [in]."""
    t = _edge_tensors()
    for i in range(L):
        for name, (n_in, n_out) in LINEARS.items():
            p = f"model.layers.{i}.{name}"
            t[f"{p}.qweight"] = np.zeros((n_in // 8, n_out), np.int32)
            t[f"{p}.qzeros"] = np.zeros((n_in // g, n_out // 8), np.int32)
            t[f"{p}.scales"] = np.zeros((n_in // g, n_out), np.float16)
            t[f"{p}.g_idx"] = np.zeros(n_in, np.int32)
    return t


def awq_tensors(g: int = 128) -> dict[str, np.ndarray]:
    """AutoAWQ's GEMM packing (awq/modules/linear/gemm.py): qweight int32 [in, out/8], qzeros int32 [in/g, out/8],
    scales fp16 [in/g, out]."""
    t = _edge_tensors()
    for i in range(L):
        for name, (n_in, n_out) in LINEARS.items():
            p = f"model.layers.{i}.{name}"
            t[f"{p}.qweight"] = np.zeros((n_in, n_out // 8), np.int32)
            t[f"{p}.qzeros"] = np.zeros((n_in // g, n_out // 8), np.int32)
            t[f"{p}.scales"] = np.zeros((n_in // g, n_out), np.float16)
    return t


def by_category(tensors: dict[str, np.ndarray]) -> dict[str, int]:
    """Hand arithmetic: each tensor's elements x its dtype's bytes, summed per category."""
    out: dict[str, int] = {}
    for name, a in tensors.items():
        cat = category_of(name, L)
        out[cat] = out.get(cat, 0) + int(np.prod(a.shape)) * a.dtype.itemsize
    return out


def repo(tensors: dict[str, np.ndarray], config: dict[str, Any] | None = None, **kw: Any) -> Repo:
    files = {"config.json": json.dumps(config or CONFIG).encode(), "model.safetensors": save(tensors)}
    return Repo(files=files, **kw)


def sharded(tensors: dict[str, np.ndarray]) -> Repo:
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    files = {"config.json": json.dumps(CONFIG).encode()}
    weight_map = {}
    for shard, part in halves.items():
        files[shard] = save({n: tensors[n] for n in part})
        weight_map.update(dict.fromkeys(part, shard))
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return Repo(files=files)


def weights(model_id: str, **setup: Any) -> dict[str, int]:
    est = estimate_inference(resolve_model(model_id), InferSetup(**setup))
    return {t.name.removeprefix("weights/"): t.bytes for t in est.persistent if t.name.startswith("weights/")}


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line a refused MODEL prints, with exit status 2."""
    assert main(["infer", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


# --- the weights term from the headers --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [fp16_tensors, gptq_tensors, awq_tensors], ids=["fp16", "gptq", "awq"])
def test_weights_are_the_header_bytes(hub_server: HubServer, make: Any) -> None:
    tensors = make()
    config = dict(CONFIG)
    if make is gptq_tensors:
        config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}
    if make is awq_tensors:
        config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}
    hub_server.repos["org/tiny"] = repo(tensors, config)
    assert weights("org/tiny") == by_category(tensors)
    data = hub_server.repos["org/tiny"].files["model.safetensors"]
    # two ranged reads: the 8-byte length, then the header; not one byte of the weights
    assert hub_server.bytes_served(".safetensors") == 8 + int.from_bytes(data[:8], "little") < len(data) / 100


def test_hand_arithmetic_of_fp16(hub_server: HubServer) -> None:
    """The same numbers written out: embeddings V x h x 2 B; attention L x (2 h^2 + 2 h x n_kv d) x 2 B."""
    hub_server.repos["org/tiny"] = repo(fp16_tensors())
    got = weights("org/tiny")
    assert got["embeddings"] == V * H * 2 == got["head"]
    assert got["attention"] == L * (2 * H * H + 2 * H * KV * D) * 2
    assert got["mlp"] == L * 3 * H * FF * 2
    assert got["norms"] == (2 * L + 1) * H * 2


def test_sharded_index(hub_server: HubServer) -> None:
    tensors = fp16_tensors()
    hub_server.repos["org/sharded"] = sharded(tensors)
    assert weights("org/sharded") == by_category(tensors)
    model = resolve_model("org/sharded")
    assert model.checkpoint is not None and model.checkpoint.files == 2
    files = hub_server.repos["org/sharded"].files
    headers = sum(8 + int.from_bytes(d[:8], "little") for n, d in files.items() if n.endswith(".safetensors"))
    served = sum(s.body_bytes for s in hub_server.requests_for(".safetensors") if s.status == 206)
    assert served == 2 * headers  # resolved twice above, headers only (besides model.safetensors' 404s)


def test_tensor_parallel_share(hub_server: HubServer) -> None:
    """tp=2: linear layers halve, norms stay whole; the embeddings and head split the padded vocabulary."""
    hub_server.repos["org/tiny"] = repo(fp16_tensors())
    one, two = weights("org/tiny"), weights("org/tiny", tp=2)
    assert two["attention"] * 2 == one["attention"] and two["mlp"] * 2 == one["mlp"]
    assert two["norms"] == one["norms"]


def test_disagreement_note_names_both(hub_server: HubServer) -> None:
    """A tensor the config does not describe (a multi-token-prediction layer 2 of a 2-layer model) is counted
    from the headers, and a note gives both totals."""
    tensors = fp16_tensors()
    tensors["model.layers.2.eh_proj.weight"] = np.zeros((H, 2 * H), np.float16)
    hub_server.repos["org/mtp"] = repo(tensors)
    est = estimate_inference(resolve_model("org/mtp"), InferSetup())
    assert {t.name: t.bytes for t in est.persistent}["weights/other"] == H * 2 * H * 2
    assert any("checkpoint headers hold" in n and "other" in n for n in est.notes)


def test_format_option_keeps_the_config_arithmetic(hub_server: HubServer) -> None:
    hub_server.repos["org/tiny"] = repo(fp16_tensors())
    assert weights("org/tiny", weight_format="fp32")["mlp"] == L * 3 * H * FF * 4  # 4 B a weight, not the headers


def test_cli_title_and_json(hub_server: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    hub_server.repos["org/tiny"] = repo(fp16_tensors())
    assert main(["infer", "org/tiny"]) == 0
    out = capsys.readouterr().out
    assert "from hub org/tiny@main (commit" in out and "safetensors headers: 1 file" in out
    assert main(["infer", "org/tiny", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["checkpoint"]["bytes"] == sum(by_category(fp16_tensors()).values())
    assert doc["model"]["checkpoint"]["files"] == 1 and doc["model"]["source"].startswith("hub org/tiny@main")


# --- errors: one line, exit 2 ------------------------------------------------------------------------------------


def test_gated_repo_needs_a_token(
    hub_server: HubServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_server.repos["org/gated"] = repo(fp16_tensors(), gated=True)
    err = fails(capsys, "org/gated")
    assert "gated" in err and "HF_TOKEN" in err and "hf auth login" in err
    monkeypatch.setenv("HF_TOKEN", hub_server.repos["org/gated"].token)
    assert main(["infer", "org/gated"]) == 0


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("org/missing", "no such repo"),
        ("org/private", "private or gated repo looks the same without a token"),
        ("org/tiny@v9", "no revision 'v9'"),
        ("org/noconfig", "has no config.json"),
        ("org/badheader", "not UTF-8 JSON"),
        ("org/longheader", "runs past the end of the 10-B file"),
        ("org/empty", "list no tensors"),
        ("org/na--me", "not a valid hub id"),
    ],
)
def test_bad_repos(hub_server: HubServer, capsys: pytest.CaptureFixture[str], model: str, says: str) -> None:
    hub_server.repos["org/tiny"] = repo(fp16_tensors())
    hub_server.repos["org/noconfig"] = Repo(files={"README.md": b"weights elsewhere"})
    hub_server.repos["org/private"] = repo(fp16_tensors(), private=True)
    bad = bytearray(save(fp16_tensors()))
    bad[8:9] = b"!"  # the header's first byte: not JSON any more
    config = json.dumps(CONFIG).encode()
    hub_server.repos["org/badheader"] = Repo(files={"config.json": config, "model.safetensors": bytes(bad)})
    long = (10_000_000).to_bytes(8, "little") + b"{}"  # a header length far beyond the file
    hub_server.repos["org/longheader"] = Repo(files={"config.json": config, "model.safetensors": long})
    empty = (8).to_bytes(8, "little") + b"{}      "
    hub_server.repos["org/empty"] = Repo(files={"config.json": config, "model.safetensors": empty})
    assert says in fails(capsys, model)


def test_unreachable_names_the_catalog(hub_server: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    hub_server.stop()  # nothing listens on the port any more: connection refused
    err = fails(capsys, "meta-llama/Meta-Llama-3-8B")
    assert "cannot reach the hub" in err and "HF_HUB_OFFLINE" in err and "vramwise infer llama-3-8b" in err


def test_offline_uses_the_cache(
    hub_server: HubServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import snapshot_download

    tensors = fp16_tensors()
    hub_server.repos["org/tiny"] = repo(tensors)
    # what `hf download org/tiny` leaves in the cache
    snapshot_download("org/tiny", cache_dir=os.environ["HF_HUB_CACHE"], endpoint=hub_server.url)
    capsys.readouterr()  # its progress bars
    hub_server.stop()
    assert weights("org/tiny") == by_category(tensors)  # cache first: no request at all
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights("org/tiny") == by_category(tensors)
    assert "HF_HUB_OFFLINE is set" in fails(capsys, "org/other")


# --- local folders -----------------------------------------------------------------------------------------------


def test_local_folder_headers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tensors = gptq_tensors()
    config = dict(CONFIG, quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(save(tensors))
    assert weights(str(tmp_path)) == by_category(tensors)
    (tmp_path / "model.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    assert "header length" in fails(capsys, str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes((4).to_bytes(8, "little") + b"{no}")
    assert "not UTF-8 JSON" in fails(capsys, str(tmp_path))


def test_existing_local_path_wins_over_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_server: HubServer
) -> None:
    folder = tmp_path / "org" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    monkeypatch.chdir(tmp_path)
    assert resolve_model("org/tiny").source.endswith("config.json")
    assert hub_server.log == []


def test_fp32_checkpoint_is_counted_at_its_16_bit_load(hub_server: HubServer) -> None:
    """An fp32 checkpoint is served in bf16 (formats.default_format): each F32 element counts 2 bytes."""
    tensors = {k: v.astype(np.float32) for k, v in fp16_tensors().items()}
    hub_server.repos["org/fp32"] = repo(tensors, dict(CONFIG, torch_dtype="float32"))
    assert weights("org/fp32") == {k: v // 2 for k, v in by_category(tensors).items()}


def test_training_keeps_the_arithmetic_and_notes_the_headers(hub_server: HubServer) -> None:
    from vramwise.estimate.train.training import estimate_training
    from vramwise.workload import TrainSetup

    tensors = fp16_tensors()
    tensors["model.layers.2.eh_proj.weight"] = np.zeros((H, 2 * H), np.float16)  # not in the config
    hub_server.repos["org/mtp"] = repo(tensors)
    est = estimate_training(resolve_model("org/mtp"), TrainSetup())
    assert any("checkpoint headers hold" in n and "training states follow the config" in n for n in est.notes)


def llama3_8b_tensors() -> dict[str, tuple[str, tuple[int, ...]]]:
    """Meta-Llama-3-8B's tensors as its model.safetensors.index.json names them (bf16; h 4096, 32 layers, 8 KV
    heads of 128, intermediate 14336, vocabulary 128256, untied head)."""
    h, i, v, kv = 4096, 14336, 128256, 1024
    t = {"model.embed_tokens.weight": ("BF16", (v, h)), "lm_head.weight": ("BF16", (v, h))}
    t["model.norm.weight"] = ("BF16", (h,))
    for n in range(32):
        p = f"model.layers.{n}"
        t |= {f"{p}.self_attn.{x}_proj.weight": ("BF16", (h, h)) for x in "qo"}
        t |= {f"{p}.self_attn.{x}_proj.weight": ("BF16", (kv, h)) for x in "kv"}
        t |= {f"{p}.mlp.{x}_proj.weight": ("BF16", (i, h)) for x in ("gate", "up")}
        t[f"{p}.mlp.down_proj.weight"] = ("BF16", (h, i))
        t |= {f"{p}.{x}.weight": ("BF16", (h,)) for x in ("input_layernorm", "post_attention_layernorm")}
    return t


def llama3_8b_repo() -> Repo:
    """The real checkpoint's layout: four shards and an index, the data never held (SparseFile)."""
    from hub_server import sparse_safetensors

    from vramwise.catalog import models

    tensors = llama3_8b_tensors()
    names = list(tensors)
    files: dict[str, Any] = {"config.json": json.dumps(dict(models()["llama-3-8b"].config)).encode()}
    weight_map = {}
    for k in range(4):
        shard = f"model-0000{k + 1}-of-00004.safetensors"
        part = names[k::4]
        files[shard] = sparse_safetensors({n: tensors[n] for n in part})
        weight_map.update(dict.fromkeys(part, shard))
    files["model.safetensors.index.json"] = json.dumps({"weight_map": weight_map}).encode()
    return Repo(files=files)


def test_a_real_size_checkpoint_matches_the_config_arithmetic(hub_server: HubServer) -> None:
    """Meta-Llama-3-8B: 8,030,261,248 parameters (transformers on the meta device; the model card's 8.03B) x 2 B,
    read from 4 shard headers of 15 GiB of weights, fetching a few KB; the headers and the catalog config agree,
    so no disagreement note."""
    hub_server.repos["meta-llama/Meta-Llama-3-8B"] = llama3_8b_repo()
    est = estimate_inference(resolve_model("meta-llama/Meta-Llama-3-8B"), InferSetup())
    got = sum(t.bytes for t in est.persistent if t.name.startswith("weights/"))
    assert got == 8_030_261_248 * 2
    assert not any("checkpoint headers hold" in n for n in est.notes)
    assert hub_server.bytes_served(".safetensors") < 200_000


def test_a_stalled_hub_times_out_in_one_line(
    hub_server: HubServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_server.repos["org/slow"] = repo(fp16_tensors(), delay_s=1.0)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.2")
    err = fails(capsys, "org/slow")
    assert "did not answer in time" in err and "HF_HUB_OFFLINE=1" in err


def test_older_gptq_file_names_are_found(hub_server: HubServer) -> None:
    """No model.safetensors and no index: the repo's listing names gptq_model-4bit-128g.safetensors."""
    tensors = gptq_tensors()
    config = dict(CONFIG, quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128})
    files = {"config.json": json.dumps(config).encode(), "gptq_model-4bit-128g.safetensors": save(tensors)}
    hub_server.repos["org/old-gptq"] = Repo(files=files)
    assert weights("org/old-gptq") == by_category(tensors)


def test_a_local_folder_reads_the_shards_its_index_names(tmp_path: Path) -> None:
    """A Mistral download holds consolidated.safetensors (the same weights, Mistral's names) beside the sharded
    checkpoint: the index says which files are the model, so nothing is counted twice."""
    tensors = fp16_tensors()
    for name, data in sharded(tensors).files.items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else b"")
    (tmp_path / "consolidated.safetensors").write_bytes(save(tensors))
    assert weights(str(tmp_path)) == by_category(tensors)


def test_vision_tower_and_projector_are_named(hub_server: HubServer) -> None:
    """Tensors of a multimodal tower get their own terms, whole on every tensor-parallel rank, and a note (the
    config arithmetic here counts the language model only)."""
    tensors = fp16_tensors()
    tensors["model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"] = np.zeros((H, H), np.float16)
    tensors["model.multi_modal_projector.linear_1.weight"] = np.zeros((H, H), np.float16)
    hub_server.repos["org/vlm"] = repo(tensors)
    est = estimate_inference(resolve_model("org/vlm"), InferSetup(tp=2))
    terms = {t.name: t for t in est.persistent}
    assert terms["weights/vision"].bytes == terms["weights/projector"].bytes == H * H * 2
    assert "replicated" in terms["weights/vision"].formula
    assert any(f"vision {H * H * 2:,} B vs 0 B" in n for n in est.notes if "headers hold" in n)


def test_offline_with_the_config_alone_uses_the_config_arithmetic(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hf download org/tiny config.json` then offline: the spec is read, no headers, weights from the config."""
    from huggingface_hub import hf_hub_download

    hub_server.repos["org/tiny"] = repo(fp16_tensors())
    hf_hub_download("org/tiny", "config.json", cache_dir=os.environ["HF_HUB_CACHE"], endpoint=hub_server.url)
    hub_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = resolve_model("org/tiny")
    assert model.checkpoint is None and "from the cache" in model.source
    assert "no safetensors headers in the cache (HF_HUB_OFFLINE)" in model.source  # the title says so
    assert weights("org/tiny")["mlp"] == L * 3 * H * FF * 2  # fp16 (torch_dtype), from the config arithmetic


def test_the_model_page_address_names_the_repo(hub_server: HubServer) -> None:
    """What a user copies from the browser: https://huggingface.co/org/name[/tree/revision]."""
    tensors = fp16_tensors()
    hub_server.repos["org/tiny"] = repo(tensors)
    assert weights("https://huggingface.co/org/tiny") == by_category(tensors)
    commit = hub_server.repos["org/tiny"].commit
    assert resolve_model(f"https://huggingface.co/org/tiny/tree/{commit}").source.startswith(f"hub org/tiny@{commit}")


def test_a_server_ignoring_range_still_gives_the_header(hub_server: HubServer) -> None:
    """A mirror that answers Range with the whole file (200): the reader skips to the bytes it asked for."""
    tensors = fp16_tensors()
    hub_server.repos["org/tiny"] = repo(tensors, ranges=False)
    assert weights("org/tiny") == by_category(tensors)


def test_a_16_bit_format_over_a_16_bit_checkpoint_keeps_the_headers(hub_server: HubServer) -> None:
    """--format bf16 (or a T4's fp16 rule) over an fp16 checkpoint casts at the same width: the headers still
    give the bytes, the MTP layer the config does not describe included."""
    tensors = fp16_tensors()
    tensors["model.layers.2.eh_proj.weight"] = np.zeros((H, 2 * H), np.float16)
    hub_server.repos["org/mtp"] = repo(tensors)
    assert weights("org/mtp", weight_format="bf16") == by_category(tensors)


def test_a_repo_without_safetensors_says_so_in_the_title(hub_server: HubServer) -> None:
    hub_server.repos["org/bin"] = Repo(files={"config.json": json.dumps(CONFIG).encode(), "pytorch_model.bin": b"x"})
    model = resolve_model("org/bin")
    assert model.checkpoint is None
    assert model.source.endswith("no safetensors files in the repo: weights from the config")


def test_a_revision_that_climbs_out_of_the_cache_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Offline, the revision names snapshots/<revision> of the cache: "x/y@../../../outside" once read a GGUF of
    a folder outside it (a server's disk too, through the web API). git's ref-name rule refuses it."""
    from cli_run import run

    from vramwise.errors import ConfigError
    from vramwise.spec.hub import parse_hub_id

    cache = tmp_path / "cache"
    (cache / "models--x--y" / "snapshots").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "infer", "x/y@../../../outside")
    assert code == 2 and err.count("\n") == 1
    assert "is not a branch, tag or commit name" in err and "model.gguf" not in err
    # a GGUF named by tag listed the outside folder's GGUFs ("tag 'Q4_K_M' matches no GGUF file: model.gguf")
    code, _, err = run(capsys, "infer", "x/y@../../../outside:Q4_K_M")
    assert code == 2 and "is not a branch, tag or commit name" in err and "model.gguf" not in err
    for bad in ("x/y@..", "x/y@a/../b", "x/y@.hidden", "x/y@a//b", "x/y@a/", "x/y@main.lock"):
        with pytest.raises(ConfigError):
            parse_hub_id(bad)
    for good in ("x/y@refs/pr/1", "x/y@v1.0", "x/y@0123abcd", "x/y@release/2.1"):
        ref = parse_hub_id(good)
        assert ref is not None and ref.revision == good.split("@", 1)[1]

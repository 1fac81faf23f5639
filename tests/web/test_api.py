"""The JSON API (src/vramwise/web/): every answer is the command line's --json document for the same options.

Oracle: the CLI itself (tests/cli_run.py runs `vramwise ... --json` in-process): the API's body equals its stdout,
its 4xx body the words the CLI prints after "vramwise: error:". The limits are checked against their own bounds.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the web extra (starlette) is not installed: pip install 'vramwise[web]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the test extra)")

from cli_run import run
from hub_server import HubServer, Repo
from starlette.testclient import TestClient
from tiny_configs import FAMILIES

from vramwise.catalog import models
from vramwise.cli.options import options_of
from vramwise.web.limits import Limits
from vramwise.web.server import create_app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Limits(rate=0)))


def _argv(command: str, args: dict[str, Any]) -> list[str]:
    """The command line of the same request (what the page shows as the equivalent command)."""
    argv = [command]
    if "model" in args:
        argv.append(str(args["model"]))
    for key, value in args.items():
        if key == "model" or value is None or value is False:
            continue
        argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return [*argv, "--json"]


CASES = [
    ("infer", {"model": "llama-2-7b", "gpu": "a100-80gb", "batch": 4, "context": "4k"}),
    ("infer", {"model": "llama-3-8b", "gpu": "l4", "serve": True, "gpu-util": 0.85, "max-model-len": 8192}),
    ("infer", {"model": "mistral-7b", "gpu": "rtx-4090", "engine": "llama.cpp", "format": "q4_k_m"}),
    ("infer", {"model": "llama-2-70b", "gpu": "rtx-4090"}),  # does not fit: the advice is in the document
    ("train", {"model": "llama-3-8b", "gpu": "a100-80gb", "peft": "lora", "batch": 4, "seq": 2048}),
    ("train", {"model": "llama-2-7b", "gpu": "8xh100", "zero": 3, "dp": 8, "recompute": "full"}),
    ("train", {"model": "llama-2-7b", "pp": 2, "per-stage": True}),
    ("fit", {"model": "llama-2-7b", "gpu": "a100-80gb", "max": "batch", "peft": "qlora"}),
    ("fit", {"model": "llama-2-7b", "gpu": "rtx-4090", "best-format": True, "infer": True}),
    ("train", {"model": "llama-3-8b", "gpu": "rtx-4090", "peft": "qlora", "range": True}),  # issue 15's --range
]


@pytest.mark.parametrize(("command", "args"), CASES)
def test_every_answer_is_the_cli_json_document(client: TestClient, capsys: pytest.CaptureFixture[str],
                                                command: str, args: dict[str, Any]) -> None:
    if args["model"] not in models():
        pytest.skip(f"{args['model']} is not in the catalog")
    response = client.post(f"/api/v1/{command}", json={"args": args})
    assert response.status_code == 200, response.text
    # the command line the server says is the same request (what the page shows) is the oracle run
    shown = shlex.split(response.headers["x-vramwise-command"])
    assert shown[:2] == ["vramwise", command] and shown[-1] == "--json"
    assert sorted(shown[1:]) == sorted(_argv(command, args))
    code, out, err = run(capsys, *shown[1:])
    assert code in (0, 3), err
    assert response.json() == json.loads(out)
    assert response.text == out  # byte for byte: the CLI's own rendering
    assert response.headers["x-vramwise-fits"] == ("true" if code == 0 else "false")


BAD = [
    ("infer", {"model": "llama-2-7b", "batch": "x"}, "batch"),
    ("infer", {"model": "llama-2-7b", "gpu-util": "lots"}, "gpu_util"),
    ("infer", {"model": "llama-2-7b", "context": "12q"}, "context"),
    ("fit", {"model": "llama-2-7b", "gpu": "h100"}, "question"),
    ("fit", {"model": "llama-2-7b", "gpu": "h100", "max": "everything"}, "max"),
    ("fit", {"model": "llama-2-7b", "gpu": "h100", "max": "batch", "min-gpus": True}, "min_gpus"),
    ("fit", {"model": "llama-2-7b", "max": "batch"}, "gpu"),
    ("train", {"model": "llama-2-7b", "peft": "lorax"}, "peft"),
    ("infer", {"model": "llama-2-7b", "gpu": "h1000"}, "gpu"),
    ("infer", {"model": "llama-2-7bb"}, "model"),
    ("infer", {"gpu": "h100"}, "model"),
    ("train", {"model": "llama-2-7b", "tp": 3}, None),
]


@pytest.mark.parametrize(("command", "args", "field"), BAD)
def test_bad_input_is_a_400_in_the_cli_words(client: TestClient, capsys: pytest.CaptureFixture[str], command: str,
                                             args: dict[str, Any], field: str | None) -> None:
    response = client.post(f"/api/v1/{command}", json={"args": args})
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "field", "allowed"}
    if field is not None:
        assert body["field"] == field
    code, _, err = run(capsys, *_argv(command, args))
    assert code == 2
    # the CLI's line, less argparse's "(see 'vramwise infer --help')" hint that a form has no use for
    assert err.startswith(f"vramwise: error: {body['error']}"), (err, body)
    assert "\n" not in body["error"] and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"args": {"model": "llama-2-7b", "from": "ds.json"}}, "source"),
        ({"args": {"model": "llama-2-7b", "emit": "vllm"}}, "emit"),
        ({"args": {"model": "llama-2-7b", "json": True}}, "json"),
        ({"args": {"model": "/etc/passwd"}}, "model"),
        ({"args": {"model": "./config.json"}}, "model"),
        ({"args": {"model": "~/models/x"}}, "model"),
        ({"args": {"model": "x.gguf"}}, "model"),
        ({"args": {"model": "a--b/c"}}, "model"),  # huggingface_hub's validate_repo_id: no "--"
        ({"args": {"model": "llama-2-7b", "sp": 1}}, "sp"),
        ({"args": {"model": "llama-2-7b", "batch": True}}, "batch"),
        ({"args": {"model": "llama-2-7b", "batch": [1, 2]}}, "batch"),
        ({"args": {"model": "llama-2-7b", "bogus": 1}}, None),
        ({"args": [1]}, "args"),
        ({"args": {}, "other": 1}, "other"),
        ({"args": {"model": "llama-2-7b"}, "config": "{}"}, "model"),  # the model twice
        ({"args": {}, "config": 5}, "config"),
    ],
)
def test_what_a_server_does_not_take_is_refused_naming_the_field(client: TestClient, body: Any,
                                                                 field: str | None) -> None:
    response = client.post("/api/v1/train", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    for raw in (b"{", b"\xff\xfe", b"[]", b"1" * 5000, b'{"args": {"batch": 1' + b"0" * 5000 + b"}}"):
        response = client.post("/api/v1/infer", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400, (raw[:20], response.text)
        assert response.json()["field"] in ("body", None) or response.json()["field"] == "batch"


def test_a_dropped_config_is_read_from_a_private_file_and_its_path_not_shown(client: TestClient,
                                                                             capsys: pytest.CaptureFixture[str],
                                                                             tmp_path: Path) -> None:
    config = json.dumps(FAMILIES["llama"])
    response = client.post("/api/v1/infer", json={"args": {"gpu": "l4", "batch": 2}, "config": config})
    assert response.status_code == 200, response.text
    folder = tmp_path / "uploaded"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    _code, out, _ = run(capsys, "infer", str(folder / "config.json"), "--gpu", "l4", "--batch", "2", "--json")
    cli = json.loads(out)
    doc = response.json()
    assert doc["model"]["source"] == "config.json (uploaded)" and doc["model"]["name"] == "uploaded"
    assert "vramwise-web-" not in response.text  # the private folder is not shown
    for key in ("terms", "peak", "phases", "setup", "gpu"):
        assert doc[key] == cli[key]
    bad = client.post("/api/v1/infer", json={"args": {}, "config": "{not json"})
    assert bad.status_code == 400 and bad.json()["field"] == "model"


def test_a_hub_id_is_read_through_the_hub(client: TestClient, hub_server: HubServer,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    hub_server.repos["org/tiny-llama"] = Repo(files={"config.json": json.dumps(FAMILIES["llama"]).encode()})
    response = client.post("/api/v1/infer", json={"args": {"model": "org/tiny-llama", "gpu": "l4"}})
    assert response.status_code == 200, response.text
    _code, out, _ = run(capsys, "infer", "org/tiny-llama", "--gpu", "l4", "--json")
    assert response.json() == json.loads(out)
    missing = client.post("/api/v1/infer", json={"args": {"model": "org/nothing-here"}})
    assert missing.status_code == 400 and missing.json()["field"] == "model"


def test_the_limits(tmp_path: Path) -> None:
    small = TestClient(create_app(Limits(max_body=1024, max_config=512, rate=1, burst=2)))
    assert small.post("/api/v1/infer", content=b"x" * 2048).status_code == 413
    big_config = {"args": {}, "config": " " * 600}
    assert small.post("/api/v1/infer", json=big_config).status_code == 413
    statuses = [small.post("/api/v1/infer", json={"args": {"model": "llama-2-7b"}}).status_code for _ in range(4)]
    assert statuses[-1] == 429  # two of burst, and not a whole token refilled since
    limited = small.post("/api/v1/infer", json={"args": {"model": "llama-2-7b"}})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert set(limited.json()) == {"error", "field", "allowed"}


def test_listings(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "gpus", "--json")
    assert client.get("/api/v1/gpus").json() == json.loads(out)
    _, out, _ = run(capsys, "formats", "--json")
    assert client.get("/api/v1/formats").json() == json.loads(out)
    _, out, _ = run(capsys, "models", "--json")
    every = json.loads(out)["models"]
    assert client.get("/api/v1/models").json()["models"] == every
    llamas = client.get("/api/v1/models", params={"q": "LLAMA"}).json()["models"]
    assert llamas == [m for m in every if "llama" in m["name"] or "llama" in (m["hf_id"] or "").lower()]


def test_the_options_listing_is_the_option_table(client: TestClient) -> None:
    listing = client.get("/api/v1/options").json()
    assert set(listing) == {"infer", "train", "fit"}
    for command, rows in listing.items():
        dests = {r["dest"] for r in rows}
        expected = {o.name for o in options_of(command)} - {"source", "emit", "json"}
        assert dests == expected, (command, dests ^ expected)
        for row in rows:
            assert set(row) >= {"flag", "dest", "group", "type", "choices", "default", "help", "required",
                                "exclusive"}
            assert "{" not in row["help"]  # the defaults are filled in
    infer = {r["dest"]: r for r in listing["infer"]}
    assert infer["gpu_util"]["flag"] == "gpu-util" and infer["gpu_util"]["default"] == 0.9
    assert infer["model"]["required"] and infer["batch"]["default"] == 1 and infer["all_logits"]["type"] == "bool"
    # MODEL is a name, not a flag, in every command (the listing once said "bool", the positional's missing type)
    assert {next(r["type"] for r in rows if r["dest"] == "model") for rows in listing.values()} == {"str"}
    train = {r["dest"]: r for r in listing["train"]}
    assert "lora" in train["peft"]["choices"] and train["peft"]["default"] == "none"
    fit = {r["dest"]: r for r in listing["fit"]}
    assert fit["max"]["exclusive"] == "question" and fit["gpu"]["required"]


def test_unknown_paths_and_methods_answer_in_the_error_body(client: TestClient) -> None:
    assert client.get("/api/v1/nothing").status_code == 404
    assert client.get("/api/v1/infer").status_code == 405
    assert set(client.get("/api/v1/infer").json()) == {"error", "field", "allowed"}
    assert client.get("/").status_code == 200
    for path in ("/static/no-such-file.js", "/static/../api.py", "/static/%2e%2e/api.py", "/static/"):
        assert client.get(path).status_code == 404, path  # the package's assets only, never a traversal
    openapi = client.get("/api/v1/openapi.json").json()
    assert openapi["openapi"].startswith("3.1") and "/api/v1/train" in openapi["paths"]


def test_an_unexpected_error_is_a_generic_500_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from vramwise.web import api

    def broken(*args: Any) -> Any:
        raise RuntimeError("/secret/path/in/a/traceback")

    monkeypatch.setattr(api, "answer", broken)
    client = TestClient(create_app(Limits(rate=0)), raise_server_exceptions=False)
    response = client.post("/api/v1/infer", json={"args": {"model": "llama-2-7b"}})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error", "field": None, "allowed": None}
    assert "secret" not in response.text


def test_a_body_not_sent_as_json_is_refused_before_any_work(client: TestClient) -> None:
    # a cross-site form or text/plain POST needs no CORS preflight: refusing it keeps other sites' pages out
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": kind} if kind else {}
        response = client.post("/api/v1/infer", content=b'{"args": {"model": "llama-2-7b"}}', headers=headers)
        assert response.status_code == 415 and response.json()["field"] == "content-type"
    ok = client.post("/api/v1/infer", content=b'{"args": {"model": "llama-2-7b"}}',
                     headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_a_loopback_server_refuses_other_host_names() -> None:
    from vramwise.web.server import LOOPBACK_HOSTS

    local = TestClient(create_app(Limits(rate=0), LOOPBACK_HOSTS), base_url="http://127.0.0.1:8000")
    assert local.get("/api/v1/gpus").status_code == 200
    assert local.get("/api/v1/gpus", headers={"host": "localhost:8000"}).status_code == 200
    assert local.get("/api/v1/gpus", headers={"host": "attacker.example:8000"}).status_code == 400


def test_estimates_run_at_once_in_threads_equal_those_run_one_by_one() -> None:
    # the server runs estimates in threads (api.Workers): the caches under the application layer must not mix
    # answers up; the oracle is the same requests answered one at a time
    from concurrent.futures import ThreadPoolExecutor

    from vramwise.web import api

    requests = [(c, {**a, "batch": b}) for c, a in CASES[:5] if "batch" in a for b in (1, 2, 3)]
    requests += [(c, a) for c, a in CASES]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda r: api.answer(r[0], r[1], None), requests * 2))
    alone = [api.answer(c, a, None) for c, a in requests * 2]
    assert together == alone


def test_an_estimate_past_its_time_is_a_503_and_its_thread_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from vramwise.web import api

    release = threading.Event()

    def slow(command: str, args: Any, config: Any) -> tuple[dict[str, Any], bool]:
        release.wait(30)
        return {"schema": "vramwise/estimate"}, True

    monkeypatch.setattr(api, "answer", slow)
    client = TestClient(create_app(Limits(rate=0, workers=1, timeout=0.3)))
    body = {"args": {"model": "llama-2-7b"}}
    late = client.post("/api/v1/infer", json=body)
    assert late.status_code == 503 and "more than 0.3 s" in late.json()["error"]
    busy = client.post("/api/v1/infer", json=body)  # the one thread still holds the first estimate
    assert busy.status_code == 503 and "busy" in busy.json()["error"]
    release.set()
    deadline = time.monotonic() + 10
    while (ok := client.post("/api/v1/infer", json=body)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ok.status_code == 200


def test_the_page_and_its_assets_come_from_the_package_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vramwise.web import server

    (tmp_path / "index.html").write_text("<!doctype html><title>page</title>")
    (tmp_path / "app.js").write_text("console.log(1)")
    (tmp_path.parent / "secret.txt").write_text("not served")
    monkeypatch.setattr(server, "static_dir", lambda: tmp_path)
    client = TestClient(create_app(Limits(rate=0)))
    page = client.get("/")
    assert page.status_code == 200 and "<title>page</title>" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").text == "console.log(1)"
    for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/", "/static/nothing.css"):
        assert client.get(path).status_code == 404, path


def test_the_page_knows_the_name_a_dropped_config_has_in_messages() -> None:
    # app.js puts a refusal of a dropped config's own key beside the drop zone by this prefix
    from vramwise.web.api import UPLOADED_SOURCE
    from vramwise.web.server import static_dir

    assert f'const UPLOADED_SOURCE = "{UPLOADED_SOURCE}";' in (static_dir() / "app.js").read_text()


def test_a_hub_revision_that_climbs_out_of_the_cache_is_a_400(client: TestClient) -> None:
    response = client.post("/api/v1/infer", json={"args": {"model": "x/y@../../../etc"}})
    assert response.status_code == 400
    assert response.json()["field"] == "model" and "is not a branch, tag or commit name" in response.json()["error"]

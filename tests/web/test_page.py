"""The page in a real browser: Debian's chromium driven by Playwright for Python, against the real server.

The oracle is the command line: every number the page shows must be the CLI's ``--json`` document for the same
setup (the page formats the API's bytes as GiB = 2^30 with two decimals, as units.fmt does), the command line
the page prints must reproduce that document, and the page's address must reproduce the page.

Never ``playwright install``: the browser is /usr/bin/chromium (apt), which CI installs.
"""

from __future__ import annotations

import json
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

import pytest
from cli_run import run
from tiny_configs import FAMILIES

from vramwise.units import fmt

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn (the web extra) is not installed")
pytest.importorskip("starlette", reason="starlette (the web extra) is not installed")

BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
SETTLE_MS = 60_000  # the longest wait for an answer: generous, the machine's two cores are shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """The real server (the app `vramwise web` runs) on a free loopback port, in a thread of this process."""
    from vramwise.web.server import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, origin: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.requested = []  # every URL the page asked for, to check that none left the host
    pg.posted = []  # the estimates asked for (POST), in order
    pg.on("request", lambda request: pg.requested.append(request.url))
    pg.on("request", lambda request: request.method == "POST" and pg.posted.append(request.url))
    yield pg
    context.close()


def settle(page: Any) -> None:
    """Wait until the answer for the form as it is now is shown (the page sets data-state idle then)."""
    page.wait_for_function("() => document.querySelector('#result').dataset.state === 'idle'", timeout=SETTLE_MS)


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What ``vramwise ARGV --json`` prints (exit status 0: fits, 3: does not)."""
    code, out, err = run(capsys, *argv, "--json")
    assert code in (0, 3), err
    return out


def cli_doc(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cli_json(capsys, *argv))
    return doc


def shown(page: Any) -> dict[str, Any]:
    """The numbers on the page: verdict, peak, headroom, and each term row's GiB text and bytes."""
    terms = {}
    for cell in page.get_by_test_id("term-bytes").all():
        terms[cell.get_attribute("data-term")] = (cell.inner_text().strip(), int(cell.get_attribute("data-bytes")))
    peak = page.get_by_test_id("peak")
    headroom = page.get_by_test_id("headroom")
    return {
        "verdict": page.get_by_test_id("verdict").inner_text().strip(),
        "peak": (peak.inner_text().strip(), int(peak.get_attribute("data-bytes"))),
        "headroom": (headroom.inner_text().strip(), int(headroom.get_attribute("data-bytes"))),
        "terms": terms,
    }


def expected(doc: dict[str, Any]) -> dict[str, Any]:
    """What the page must show for a CLI document: its bytes as the CLI's own units.fmt writes them."""
    gpu = doc["gpu"]
    return {
        "verdict": "FITS" if gpu["fits"] else "DOES NOT FIT",
        "peak": (fmt(doc["peak"]["bytes"]), doc["peak"]["bytes"]),
        "headroom": (fmt(gpu["headroom_bytes"]), gpu["headroom_bytes"]),
        "terms": {t["name"]: (fmt(t["bytes"]), t["bytes"]) for t in doc["terms"]},
    }


def shown_command(page: Any) -> list[str]:
    """The command line the page prints, as argv after ``vramwise``."""
    words = shlex.split(page.get_by_test_id("cli").inner_text())
    assert words[0] == "vramwise"
    return words[1:]


def test_lora_fine_tuning_matches_the_cli(page: Any, origin: str, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    page.goto(origin + "/")
    settle(page)
    page.check('input[name="cmd"][value="train"]')
    page.fill("#model", "llama-3.2-1b")
    page.select_option("#gpu-name", "rtx-4090")
    page.select_option('[data-dest="peft"]', "lora")
    page.click('details[data-group="Fine-tuning (PEFT)"] > summary')  # a group closed by default
    page.fill('[data-dest="lora_r"]', "32")
    settle(page)

    printed = cli_json(capsys, "train", "llama-3.2-1b", "--gpu", "rtx-4090", "--peft", "lora", "--lora-r", "32")
    doc = json.loads(printed)
    want = expected(doc)
    got = shown(page)
    assert got == want
    assert {"weights/lora", "activations/lora", "optimizer/states"} <= got["terms"].keys()
    # the fit answers beside it are fit's own for the same setup
    answers = {row.get_attribute("data-question"): row.get_by_test_id("fit-answer").get_attribute("data-value")
               for row in page.locator("#fit tr[data-question]").all() if row.get_by_test_id("fit-answer").count()}
    setup = ("llama-3.2-1b", "--gpu", "rtx-4090", "--peft", "lora", "--lora-r", "32")
    assert answers["largest micro-batch"] == str(cli_doc(capsys, "fit", *setup, "--max", "batch")["answer"]["value"])
    assert answers["fewest GPUs"] == str(cli_doc(capsys, "fit", *setup, "--min-gpus")["answer"]["value"])
    # the command line the page prints is this setup, and gives this document
    argv = shown_command(page)
    assert argv[:2] == ["train", "llama-3.2-1b"] and argv[-1] == "--json"
    assert cli_doc(capsys, *argv[:-1]) == doc
    # the JSON link holds the exact document the page drew, byte for byte what the CLI prints
    with page.expect_download() as download:
        page.get_by_test_id("json-link").click()
    assert Path(download.value.path()).read_text() == printed
    page.screenshot(path=str(tmp_path / "train-lora.png"), full_page=True)

    # the address is the whole state: opening it again draws the same numbers
    query = parse_qs(urlsplit(page.url).query)
    assert query["cmd"] == ["train"] and query["peft"] == ["lora"] and query["lora-r"] == ["32"]
    fresh = page.context.new_page()
    fresh.goto(page.url)
    settle(fresh)
    assert shown(fresh) == want
    assert fresh.input_value('[data-dest="peft"]') == "lora"


def test_vllm_serving_matches_the_cli(page: Any, origin: str, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    page.goto(origin + "/?cmd=infer&model=llama-3-8b&gpu=a100-80gb&engine=vllm")
    settle(page)
    doc = cli_doc(capsys, "infer", "llama-3-8b", "--gpu", "a100-80gb", "--engine", "vllm")
    want = expected(doc)
    assert shown(page) == want
    assert want["terms"]["kv_cache/pool"][1] == doc["engine"]["kv_pool_bytes"]
    assert page.locator("#engine").inner_text().count(f"{doc['engine']['kv_tokens']:,}") == 1

    # a change in the form is estimated again: two GPUs at tensor parallel 2
    page.fill("#gpu-count", "2")
    settle(page)
    doc2 = cli_doc(capsys, "infer", "llama-3-8b", "--gpu", "2xa100-80gb", "--engine", "vllm")
    assert shown(page) == expected(doc2) != want
    assert shown_command(page) == ["infer", "llama-3-8b", "--gpu", "2xa100-80gb", "--engine", "vllm", "--json"]
    page.screenshot(path=str(tmp_path / "infer-vllm.png"), full_page=True)
    page.reload()
    settle(page)
    assert shown(page) == expected(doc2)


def test_bad_input_is_shown_beside_its_field(page: Any, origin: str, capsys: pytest.CaptureFixture[str]) -> None:
    page.goto(origin + "/?cmd=train&model=llama-3.2-1b&gpu=rtx-4090")
    settle(page)
    page.fill('[data-dest="batch"]', "many")
    settle(page)
    message = page.locator('.error[data-error-for="batch"]').get_attribute("data-message")
    code, _, err = run(capsys, "train", "llama-3.2-1b", "--gpu", "rtx-4090", "--batch", "many")
    assert code == 2 and message and message in err
    # no document: no JSON link that does nothing (it stayed, without an address)
    assert page.get_by_test_id("json-link").is_hidden()
    page.fill('[data-dest="batch"]', "2")
    settle(page)
    assert page.get_by_test_id("json-link").is_visible()


def test_the_page_asks_nothing_off_host(page: Any, origin: str) -> None:
    page.goto(origin + "/?cmd=train&model=llama-3.2-1b&gpu=rtx-4090&peft=qlora")
    settle(page)
    page.check('input[name="cmd"][value="fit"]')
    settle(page)
    asked = [u for u in page.requested if not u.startswith("data:")]
    assert asked and all(u.startswith(origin + "/") for u in asked), asked
    assert any(u.startswith(origin + "/static/") for u in asked)


def test_typing_asks_once_and_shows_the_last_value(page: Any, origin: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    page.goto(origin + "/?cmd=train&model=llama-3.2-1b&gpu=rtx-4090&peft=lora")
    settle(page)
    before = len(page.posted)
    page.locator('[data-dest="seq"]').press_sequentially("4096", delay=40)  # inside the page's 250 ms debounce
    settle(page)
    # one request for the four keys (a loaded machine may let one more through), and the last value shown
    assert 1 <= page.posted[before:].count(origin + "/api/v1/train") <= 2
    doc = cli_doc(capsys, "train", "llama-3.2-1b", "--gpu", "rtx-4090", "--peft", "lora", "--seq", "4096")
    assert shown(page) == expected(doc)


def test_a_dropped_config_is_estimated_and_kept_in_the_address(page: Any, origin: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**FAMILIES["qwen2"], "architectures": ["Qwen2ForCausalLM"]}))
    page.goto(origin + "/?cmd=train&gpu=24GiB&peft=lora")
    settle(page)
    page.set_input_files("#config-file", str(config))
    settle(page)
    want = expected(cli_doc(capsys, "train", str(config), "--gpu", "24GiB", "--peft", "lora"))
    assert shown(page) == want
    assert shown_command(page) == ["train", "config.json", "--gpu", "24GiB", "--peft", "lora", "--json"]
    fresh = page.context.new_page()
    fresh.goto(page.url)  # the config's text rides in the address
    settle(fresh)
    assert shown(fresh) == want


# the options with a widget of their own (model, GPU, fit's question) or that only change the text output
OWN_WIDGET = {"model", "gpu", "max", "min_gpus", "best_format", "layouts"}
TEXT_ONLY = {"explain", "units"}


@pytest.mark.parametrize("query", ["cmd=infer", "cmd=train", "cmd=fit&gpu=4090", "cmd=fit&gpu=4090&infer=true"])
def test_every_option_has_a_field(page: Any, origin: str, query: str) -> None:
    """A row added to the CLI's option table is a field of the form, with the CLI's flag name."""
    page.goto(f"{origin}/?{query}&model=llama-3.2-1b")
    settle(page)
    listing = json.loads(urlopen(origin + "/api/v1/options").read())  # the loopback server
    cmd = query.split("&")[0].removeprefix("cmd=")
    rows = listing[cmd]
    if cmd == "fit":  # fit shows the setup asked about: --infer's or training's, and its own options
        setup = {r["dest"] for r in listing["infer" if "infer=true" in query else "train"]}
        both = {r["dest"] for r in listing["infer"] + listing["train"]}
        rows = [r for r in rows if r["dest"] in setup or r["dest"] not in both]
    want = {r["flag"] for r in rows if r["dest"] not in OWN_WIDGET | TEXT_ONLY}
    got = set(page.eval_on_selector_all("#groups [data-flag]", "inputs => inputs.map(i => i.dataset.flag)"))
    assert got == want
    # the common group is open, the others closed
    opened = page.eval_on_selector_all("#groups details", "ds => ds.filter(d => d.open).map(d => d.dataset.group)")
    assert opened[0] in ("Common", "Question") and "Other options" not in opened


def test_every_gpu_choice_shows_its_capacity_whatever_its_name(page: Any, origin: str) -> None:
    """The closed select cuts its text at the form's width: the CUDA-visible GiB comes first, so a long name (the
    MI250X's, a laptop GPU's) cannot hide it. Oracle: the GPU listing's bytes written by units.fmt."""
    page.goto(origin + "/?cmd=infer&model=llama-3.2-1b&gpu=mi250x")
    settle(page)
    listing = json.loads(urlopen(origin + "/api/v1/gpus").read())  # the loopback server
    capacity = {g["name"]: g["memory_bytes"] for g in listing["gpus"]}
    shown_options = page.eval_on_selector_all("#gpu-name option", "os => os.map(o => [o.value, o.textContent])")
    listed = {value: text for value, text in shown_options if value in capacity}
    assert listed.keys() == capacity.keys()
    for name, text in listed.items():
        assert text.startswith(f"{fmt(capacity[name])} · "), text


def test_a_narrow_screen_keeps_the_formulas_readable(browser: Any, origin: str) -> None:
    """Under 900 px the form goes below the results; the term table's name and source columns must not crush the
    formula to a word a line (the card scrolls sideways instead)."""
    context = browser.new_context(viewport={"width": 800, "height": 1000})
    try:
        narrow = context.new_page()
        narrow.goto(origin + "/?cmd=infer&model=llama-3.2-1b&gpu=rtx-4090")
        settle(narrow)
        widths = narrow.eval_on_selector_all("#terms td.formula", "cells => cells.map(c => c.clientWidth)")
        assert widths and min(widths) >= 200, widths
    finally:
        context.close()


def test_a_range_is_shown_and_the_fit_answers_beside_it_are_not_refused(page: Any, origin: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--range's low, high and bound are the CLI's (the page once drew nothing of them), and the fit questions
    that refuse --range (all but --max) are asked without it (the page once showed fit's refusal in their row)."""
    setup = ("llama-3.2-1b", "--gpu", "rtx-4090", "--engine", "vllm")
    page.goto(origin + "/?cmd=infer&model=llama-3.2-1b&gpu=rtx-4090&engine=vllm&range=true")
    settle(page)
    want = cli_doc(capsys, "infer", *setup, "--range")["range"]
    line = page.get_by_test_id("range")
    assert [int(line.get_attribute(f"data-{k}")) for k in ("low", "high", "bound")] == [
        want["low"], want["high"], want["bound"]]
    assert f"high {fmt(want['high'])}" in line.inner_text()
    answers = {row.get_attribute("data-question"): row for row in page.locator("#fit tr[data-question]").all()}
    best = answers["best weight format"].get_by_test_id("fit-answer").get_attribute("data-value")
    assert best == str(cli_doc(capsys, "fit", *setup, "--infer", "--best-format")["answer"]["value"])


def test_fit_max_with_a_range_shows_the_range_at_the_answer(page: Any, origin: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    page.goto(origin + "/?cmd=fit&model=llama-3.2-1b&gpu=rtx-4090&max=batch&peft=lora&range=true")
    settle(page)
    doc = cli_doc(capsys, "fit", "llama-3.2-1b", "--gpu", "rtx-4090", "--max", "batch", "--peft", "lora", "--range")
    want = doc["range"]
    line = page.get_by_test_id("range")
    assert int(line.get_attribute("data-high")) == want["high"]
    # the CLI's "the high on GPU: ..., headroom X": the budget less the high
    assert line.inner_text().endswith(f"headroom {fmt(doc['gpu']['budget_bytes'] - want['high'])}")
    assert line.inner_text().startswith(f"at {want['at']}: low {fmt(want['low'])}")


def test_the_peak_label_is_drawn_over_the_capacity_line(page: Any, origin: str) -> None:
    """A peak just past the capacity (Mixtral on one H100 under vLLM: 89 GiB against 79) put the capacity's dashed
    line through the peak's digits: the label is now drawn after every line, with a halo."""
    page.goto(origin + "/?cmd=infer&model=llama-2-70b&gpu=rtx-4090")
    settle(page)
    order = page.eval_on_selector_all("#chart svg > *", "ns => ns.map(n => n.getAttribute('class') || n.tagName)")
    assert "capacity" in order and order.index("peak-label") > order.index("capacity")
    halo = page.eval_on_selector("#chart .peak-label", "n => getComputedStyle(n).paintOrder")
    assert halo.startswith("stroke")


def test_a_dropped_config_missing_a_key_is_refused_beside_the_drop_zone(page: Any, origin: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal names the config's key (hidden_size), which has no field of its own: the words go beside the
    drop zone (they once went to the general box, and the status said "see --hidden_size on the left")."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({k: v for k, v in FAMILIES["qwen2"].items() if k != "hidden_size"}))
    page.goto(origin + "/?cmd=infer&gpu=24GiB")
    settle(page)
    page.set_input_files("#config-file", str(config))
    settle(page)
    message = page.locator('.error[data-error-for="config"]').get_attribute("data-message")
    code, _, err = run(capsys, "infer", str(config), "--gpu", "24GiB")
    assert code == 2 and message
    # the CLI names the file by its path, the server by "config.json (uploaded)": the rest is the same words
    assert message.removeprefix("config.json (uploaded)") in err
    assert "--hidden_size" not in page.locator("#status").inner_text()


def test_a_preset_shows_the_values_it_put_in_effect(page: Any, origin: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A --framework preset sets options the user did not give: their empty fields say the value the estimate ran
    with (the CLI document's setup), not the CLI default, and nothing the user did not give joins the command line."""
    page.goto(origin + "/")
    settle(page)
    page.check('input[name="cmd"][value="train"]')
    page.fill("#model", "llama-3.2-1b")
    page.select_option('[data-dest="framework"]', "torchtune")
    settle(page)
    setup = cli_doc(capsys, "train", "llama-3.2-1b", "--framework", "torchtune")["setup"]
    plain = cli_doc(capsys, "train", "llama-3.2-1b")["setup"]
    changed = [d for d in ("optimizer", "loss", "recompute") if setup[d] != plain[d]]
    assert changed, "torchtune's preset sets none of these: pick options it does set"
    for dest in changed:
        field = page.locator(f'select[data-dest="{dest}"]')
        assert field.input_value() == ""  # still not given
        assert field.locator("option").first.text_content() == f"{setup[dest]} (in effect)"
    unchanged = [d for d in ("attention", "batch") if setup[d] == plain[d]]
    for dest in unchanged:
        field = page.locator(f'[data-dest="{dest}"]')
        select = dest == "attention"
        text = field.locator("option").first.text_content() if select else field.get_attribute("placeholder")
        assert "(in effect)" not in text
    argv = shown_command(page)
    assert argv[argv.index("--framework") + 1] == "torchtune"
    assert not {f"--{d}" for d in changed} & set(argv)  # shown, not given
    # back to no preset: the fields say the CLI defaults again
    page.select_option('[data-dest="framework"]', "")
    settle(page)
    for dest in changed:
        assert "(in effect)" not in page.locator(f'select[data-dest="{dest}"] option').first.text_content()


def test_a_preset_still_shows_its_values_with_per_stage(page: Any, origin: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--per-stage answers {"stages": [...]}, one document per stage with the same setup: the fields a preset set
    still say the value in effect (they fell back to the CLI defaults: the page read a top-level setup only)."""
    page.goto(origin + "/?cmd=train&model=llama-3.2-1b&framework=torchtune&per-stage=1")
    settle(page)
    assert page.locator('input[data-dest="per_stage"]').is_checked()
    setup = cli_doc(capsys, "train", "llama-3.2-1b", "--framework", "torchtune")["setup"]
    plain = cli_doc(capsys, "train", "llama-3.2-1b")["setup"]
    changed = [d for d in ("optimizer", "loss", "recompute") if setup[d] != plain[d]]
    assert changed
    for dest in changed:
        assert page.locator(f'select[data-dest="{dest}"] option').first.text_content() == f"{setup[dest]} (in effect)"

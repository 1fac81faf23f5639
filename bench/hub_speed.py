"""Hub-id speed: `vramwise infer org/name` end to end against the loopback hub, beside the catalog path.

    python bench/hub_speed.py

A fresh CLI process each run (what a user waits for), median of 7. The repo is Meta-Llama-3-8B's real layout:
its config.json, an index and four safetensors shards whose headers name all 291 tensors (15 GiB of bf16),
served by tests/hub_server.py on 127.0.0.1 with the data never held (``SparseFile``). Three cases:

- hub, cold: an empty Hugging Face cache: config.json downloaded (HEAD + GET), the index downloaded, then two
  ranged reads per shard (the 8-byte length, the header);
- hub, cached config: the second run, config.json and the index from the cache, the headers read again (the cache
  holds no shard: the weights were never downloaded);
- catalog: `vramwise infer llama-3-8b`, which imports no huggingface_hub.

Loopback has no network latency: a real hub adds its round trips (14 requests cold: a HEAD of config.json, then
huggingface_hub's own HEAD and GET into the cache, model.safetensors' 404, the index's HEAD and GET, two ranged
reads per shard, the shards four at a time; 9 with config and index cached). A breakdown (importing
huggingface_hub, resolving the model) is timed in a fresh process too. The target is 0.5 s end to end (issue 12).
Writes bench/results/hub-speed.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "spec"))

from hub_server import HubServer  # noqa: E402
from test_hub import llama3_8b_repo  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET_S = 0.5
RUNS = 7


def _run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vramwise", *argv], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


_BREAKDOWN = """
import time; t0 = time.perf_counter()
import httpx2, huggingface_hub.errors, huggingface_hub.file_download, huggingface_hub.utils
t1 = time.perf_counter()
from vramwise.spec.load import resolve_model
t2 = time.perf_counter()
resolve_model("meta-llama/Meta-Llama-3-8B")
print(t1 - t0, time.perf_counter() - t2)
"""


def _breakdown(env: dict[str, str], home: str) -> tuple[float, float]:
    """Median seconds of importing huggingface_hub, and of resolving the hub id once imported (empty cache)."""
    runs = []
    for k in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-c", _BREAKDOWN],
            check=True,
            capture_output=True,
            text=True,
            env={**env, "HF_HUB_CACHE": os.path.join(home, f"breakdown-{k}")},
        ).stdout.split()
        runs.append((float(out[0]), float(out[1])))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    server = HubServer().start()
    server.repos["meta-llama/Meta-Llama-3-8B"] = llama3_8b_repo()
    home = tempfile.mkdtemp(prefix="vramwise-hub-speed-")
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": home, "PYTHONPATH": str(ROOT / "src")}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    hub = ["infer", "meta-llama/Meta-Llama-3-8B"]
    _run(hub, {**env, "HF_HUB_CACHE": os.path.join(home, "warmup")})  # agent registry cached in HF_HOME once
    cold = []
    for k in range(RUNS):
        before = len(server.log)
        cold.append(_run(hub, {**env, "HF_HUB_CACHE": os.path.join(home, f"cold-{k}")}))
        requests, served = server.log[before:], sum(s.body_bytes for s in server.log[before:])
    warm_env = {**env, "HF_HUB_CACHE": os.path.join(home, "cold-0")}
    warm = [_run(hub, warm_env) for _ in range(RUNS)]
    catalog = [_run(["infer", "llama-3-8b"], env) for _ in range(RUNS)]
    imports, resolve = _breakdown(env, home)
    server.stop()
    rows = [
        ("hub id, empty cache", statistics.median(cold)),
        ("hub id, config cached", statistics.median(warm)),
        ("catalog name", statistics.median(catalog)),
    ]
    lines = [
        "# Hub-id speed (bench/hub_speed.py)",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}; median of {RUNS} fresh processes "
        f"of `vramwise infer`, against the loopback hub (tests/hub_server.py). Target: {TARGET_S} s end to end.",
        "",
        "| case | seconds | target met |",
        "|---|---|---|",
        *(f"| {name} | {s:.3f} | {'yes' if s <= TARGET_S else 'no'} |" for name, s in rows),
        "",
        f"One cold hub run: {len(requests)} requests, {served:,} bytes served (the 4 shard headers and the",
        "config and index), of a 15 GiB checkpoint.",
        "",
        f"Of a cold hub run: importing huggingface_hub and httpx2 {imports:.3f} s, resolving the model once they",
        f"are imported (config, index and 4 headers over loopback, the spec built) {resolve:.3f} s; the rest is",
        "Python's start, vramwise's imports and the estimate, as for the catalog name.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hub-speed.md").write_text(text)


if __name__ == "__main__":
    main()

"""Speed benchmark: one estimate in-process, a fresh CLI process, and a layout search; llm-analysis beside it.

    python bench/speed.py
    python bench/speed.py --replay     # only the caching-allocator replay commands: speed-replay-<machine>.md/json

Prints the figures and writes bench/results/speed-<machine>.md and .json, with the fit issue's targets beside
each figure and whether it is met. "One estimate" is timed two ways: its peak per GPU (``training_peak``,
``inference_peak``: what the solvers evaluate, the target's figure) and the same estimate with every term and
formula rendered (``estimate_training``, ``estimate_inference``: what a report prints). Both are timed with
the layout's plan warm, as in a sweep; the first estimate of a new layout is timed separately.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import peers

from vramwise.catalog import get_gpu
from vramwise.estimate.inference import estimate_inference, inference_peak
from vramwise.estimate.train import states, training
from vramwise.estimate.train.training import estimate_training, training_peak
from vramwise.fit.layouts import search_layouts
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup, TrainSetup

RESULTS = Path(__file__).resolve().parent / "results"


def _per_call(fn: Any, n: int) -> float:
    """Median over 5 rounds of the mean seconds per call."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        rounds.append((time.perf_counter() - start) / n)
    return statistics.median(rounds)


def _cold(spec: Any, setup: TrainSetup) -> int:
    """A peak with the layout's plan and model states built from scratch (the per-spec parameter inventory,
    the saved-tensor rules per layer and the format tables stay cached: they depend on the model only)."""
    training._PLANS.clear()
    states._STATES_CACHE.clear()
    return training_peak(spec, setup)


def _median_seconds(cmd: list[str]) -> float:
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _fresh_process() -> float:
    return _median_seconds([sys.executable, "-m", "vramwise", "infer", "llama-2-7b"])


# The same operations through llm-analysis, on the same cases. It returns a full summary dict per call, so its
# calls compare with the rendered estimates (every term and formula), not with the bytes-only peaks.
LLM_ANALYSIS_LLAMA2 = "NousResearch_Llama-2-7b-hf"  # its own bundled config: no network


def _llm_analysis_training(spec: Any) -> float | None:
    llm = peers.llm_analysis(spec, 2048)
    if llm is None:
        return None
    return _per_call(
        lambda i: llm.training(batch_size_per_gpu=1 + i % 4, seq_len=2048, mlp_gated_linear_units=True), 20
    )


def _llm_analysis_inference(spec: Any) -> float | None:
    llm = peers.llm_analysis(spec, 4096)
    if llm is None:
        return None
    return _per_call(lambda i: llm.inference(batch_size_per_gpu=1 + i % 8, seq_len=4096, num_tokens_to_generate=1), 20)


def _llm_analysis_process() -> float | None:
    if peers.llm_analysis(catalog_spec("llama-2-7b"), 4096) is None:
        return None
    return _median_seconds(
        [sys.executable, "-m", "llm_analysis.analysis", "infer", "--model_name", LLM_ANALYSIS_LLAMA2,
         "--gpu_name", peers.LLM_ANALYSIS_GPU, "--seq_len", "4096", "--num_tokens_to_generate", "1",
         "--log_level", "ERROR"]
    )  # fmt: skip


# Commands under the caching-allocator replay (--allocator-replay, or implied by --expandable-segments and
# --max-split-size-mb; --range replays its training high and bound), each answered in a fresh process: a large MoE
# model replays hundreds of expert tensors per layer, and the advice re-estimates once per candidate change.
# Target: an answer in seconds (no hang).
REPLAY_COMMANDS = (
    "fit deepseek-v3 --gpu rtx-5090 --max batch --expandable-segments",
    "train gpt-oss-120b --gpu rtx-5070-ti --expandable-segments",
    "train deepseek-v3 --gpu h100 --range",
    "train mixtral-8x7b --gpu 4090 --range",
    "train llama-3-70b --gpu 4090 --range",
    "fit llama-3-70b --gpu h100 --layouts 64 --allocator-replay",
    "fit mixtral-8x7b --gpu h100 --layouts 8 --allocator-replay",
)
REPLAY_TARGET = 10.0  # seconds: "a command answers in seconds"


def _once_seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=False, capture_output=True)  # exit 3 (does not fit) is an answer too
    return time.perf_counter() - start


def replay_main() -> int:
    """The replay commands only, each once (they take seconds, not microseconds): speed-replay-<machine>."""
    figures = {f"`vramwise {c}` (s)": _once_seconds([sys.executable, "-m", "vramwise", *c.split()])
               for c in REPLAY_COMMANDS}
    lines = [
        "# Speed under the caching-allocator replay (generated by `python bench/speed.py --replay`)",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}; "
        "one fresh process each, wall seconds.",
        "",
        "| command | seconds | target | met |",
        "|---|---:|---:|:---:|",
    ]
    lines += [f"| {name} | {value:.3g} | {REPLAY_TARGET:g} | {'yes' if value <= REPLAY_TARGET else 'no'} |"
              for name, value in figures.items()]
    return _write(f"speed-replay-{platform.machine()}", lines, {"figures": figures, "target": REPLAY_TARGET})


def main() -> int:
    spec = catalog_spec("llama-2-7b")
    infer = InferSetup(context=4096)
    train = TrainSetup.from_flat(seq=2048, dp=8, zero=3)
    figures: dict[str, Any] = {}
    # setups are built beforehand: the figure is the estimate, not the dataclass construction
    infers = [replace(infer, batch=b) for b in range(1, 9)]
    trains = [replace(train, batch=b) for b in range(1, 9)]
    figures["inference estimate: peak per GPU (s)"] = _per_call(lambda i: inference_peak(spec, infers[i % 8]), 2000)
    figures["inference estimate: every term and formula rendered (s)"] = _per_call(
        lambda i: estimate_inference(spec, infers[i % 8]), 1000
    )
    figures["training estimate: peak per GPU (s)"] = _per_call(lambda i: training_peak(spec, trains[i % 8]), 2000)
    figures["training estimate: every term and formula rendered (s)"] = _per_call(
        lambda i: estimate_training(spec, trains[i % 8]), 400
    )
    cold = "training estimate: first of a new layout, no cache (s)"
    figures[cold] = _per_call(lambda i: _cold(spec, trains[i % 8]), 50)
    figures["fresh `vramwise infer llama-2-7b` (s)"] = _fresh_process()
    budget = get_gpu("h100-80gb").memory_bytes
    start = time.perf_counter()
    llama70 = catalog_spec("llama-2-70b")
    found = search_layouts(llama70, TrainSetup.from_flat(grad_accum=64), 1024, budget, batches=tuple(range(1, 161)))
    search = time.perf_counter() - start
    figures["Llama-2-70B layout search on 1024 GPUs, micro-batch 1-160 (s)"] = search
    figures["layout candidates considered"] = found.candidates
    figures["estimates computed (two per layout family, plus boundary checks)"] = found.estimates
    figures["layouts that fit"] = len(found.fitting)
    figures["seconds per layout candidate"] = search / max(1, found.candidates)
    small = catalog_spec("llama-3.2-1b")  # llm-analysis refuses setups that do not fit its GPU
    small_setups = [TrainSetup.from_flat(seq=2048, batch=b) for b in range(1, 5)]
    figures["training estimate, Llama-3.2-1B on 1 GPU (s)"] = _per_call(
        lambda i: estimate_training(small, small_setups[i % 4]), 200
    )
    peers_row = {
        "training estimate, Llama-3.2-1B on 1 GPU, seq 2048": (
            figures["training estimate, Llama-3.2-1B on 1 GPU (s)"],
            _llm_analysis_training(small),
        ),
        "inference estimate, Llama-2-7B, context 4096": (
            figures["inference estimate: every term and formula rendered (s)"],
            _llm_analysis_inference(spec),
        ),
        "fresh process: inference estimate of Llama-2-7B": (
            figures["fresh `vramwise infer llama-2-7b` (s)"],
            _llm_analysis_process(),
        ),
    }
    targets = {
        "inference estimate: peak per GPU (s)": 20e-6,
        "training estimate: peak per GPU (s)": 20e-6,
        "fresh `vramwise infer llama-2-7b` (s)": 0.3,
        "seconds per layout candidate": 1.0 / 100_000,
        "Llama-2-70B layout search on 1024 GPUs, micro-batch 1-160 (s)": 1.0,
    }
    lines = [
        "# Speed (generated by `python bench/speed.py`)",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}.",
        "",
        "| figure | value | target | met |",
        "|---|---:|---:|:---:|",
    ]
    for name, value in figures.items():
        target = targets.get(name)
        shown = "n/a" if value is None else f"{value:.6g}"
        met = "" if target is None or value is None else ("yes" if value <= target else "no")
        lines.append(f"| {name} | {shown} | {'' if target is None else f'{target:g}'} | {met} |")
    lines += [
        "",
        "The same operations through llm-analysis (0.2.2, offline) in this run; it evaluates one given layout and",
        "has no layout search. Its calls return a full summary, so they compare with the rendered estimates.",
        "",
        "| operation | vramwise (s) | llm-analysis (s) | llm-analysis / vramwise |",
        "|---|---:|---:|---:|",
    ]
    for name, (ours, theirs) in peers_row.items():
        ratio = f"{theirs / ours:.1f}x" if theirs else "n/a"
        lines.append(f"| {name} | {ours:.6g} | {'n/a' if theirs is None else f'{theirs:.6g}'} | {ratio} |")
    return _write(f"speed-{platform.machine()}", lines, {"figures": figures, "targets": targets})


def _write(name: str, lines: list[str], payload: dict[str, object]) -> int:
    """Print the table and write it to bench/results/NAME.md, with its figures as NAME.json."""
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(replay_main() if sys.argv[1:] == ["--replay"] else main())

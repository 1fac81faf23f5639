"""Same numbers before and after a refactor: thousands of random setups through the CLI, compared byte for byte.

    python bench/equivalence.py record OUT.jsonl            # run every case with the vramwise on sys.path
    python bench/equivalence.py compare OLD.jsonl NEW.jsonl # every case must print the same bytes

To compare against an older commit, record it from a worktree of that commit:

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old/src python bench/equivalence.py record /tmp/old.jsonl
    PYTHONPATH=src python bench/equivalence.py record /tmp/new.jsonl
    python bench/equivalence.py compare /tmp/old.jsonl /tmp/new.jsonl --summary bench/results/equivalence.md

Cases are drawn from a seeded generator over the command-line options (the one interface that a refactor of
the package's insides keeps), so both runs see the same cases. Each case records the exit status and, for an
estimate, every byte the JSON document holds: persistent and peak terms, every phase's total, host terms and
the serving capacity. ``fit`` answers are recorded as their text. A case the CLI refuses is recorded with its
exit status only (the wording of a refusal may improve; the decision to refuse may not change).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODELS = [
    "llama-2-7b", "llama-3-8b", "llama-3.1-70b", "mistral-7b", "mixtral-8x7b", "qwen2-7b", "qwen3-8b",
    "qwen3-30b-a3b", "gemma-2b", "gemma-2-9b", "gemma-3-1b", "phi-2", "gpt2", "gpt2-xl", "falcon-7b",
    "deepseek-v2-lite", "deepseek-v3", "gpt-oss-20b", "opt-1.3b", "phi-3-mini", "qwen1.5-moe-a2.7b",
    "bert-base-cased", "pythia-160m", "gpt-neox-20b", "14b", "7b",
]  # fmt: skip
FORMATS = ["bf16", "fp16", "fp32", "fp8-e4m3", "int8", "int4", "nf4", "gptq-4bit-g128", "awq-4bit-g128", "q4_k_m"]
GPUS = ["rtx-4090", "a100-80gb", "h100-80gb", "a100-40gb", "l4"]


OLD_LABEL, NEW_LABEL = "the old checkout", "the new checkout"


def _pick(rng: random.Random, *options: Any) -> Any:
    return rng.choice(options)


Draw = Callable[[random.Random], list[str]]


def _maybe(p: float, make: Draw) -> Draw:
    """Options drawn with probability ``p`` (one ``random()`` call, then ``make``'s own)."""
    return lambda rng: make(rng) if rng.random() < p else []


def _drawn(rng: random.Random, draws: tuple[Draw, ...]) -> list[str]:
    return [arg for draw in draws for arg in draw(rng)]


_INFER_DRAWS: tuple[Draw, ...] = (
    _maybe(0.5, lambda r: ["-n", str(_pick(r, 1, 64, 1024))]),
    _maybe(0.4, lambda r: ["-f", r.choice(FORMATS)]),
    _maybe(0.3, lambda r: ["--kv-dtype", _pick(r, "fp8", "fp16", "bf16", "fp32")]),
    _maybe(0.3, lambda r: ["--attention", _pick(r, "eager", "flash", "sdpa")]),
    _maybe(0.3, lambda r: ["--tp", str(_pick(r, 2, 4, 8))]),
    _maybe(0.2, lambda r: ["--kv-block", "1"]),
    _maybe(0.2, lambda r: ["--prefill-chunk", str(_pick(r, 256, 2048))]),
    _maybe(0.15, lambda r: ["--all-logits"]),
    _maybe(0.15, lambda r: ["--cuda-context", str(_pick(r, 0, 300, 1024))]),
    _maybe(0.15, lambda r: ["--allocator-fraction", str(_pick(r, 0.0, 0.05, 0.1))]),
    _maybe(0.4, lambda r: ["--gpu", r.choice(GPUS), *_maybe(0.5, _serve)(r)]),
    _maybe(0.1, lambda r: ["--mode", "textbook"]),
)


def _serve(rng: random.Random) -> list[str]:
    return ["--serve", "--gpu-util", str(_pick(rng, 0.9, 0.8))]


def _infer_case(rng: random.Random) -> list[str]:
    args = ["infer", rng.choice(MODELS), "-b", str(_pick(rng, 1, 2, 4, 8, 32))]
    args += ["-s", str(_pick(rng, 128, 2048, 8192, 32768))]
    return args + _drawn(rng, _INFER_DRAWS)


def _peft(rng: random.Random) -> list[str]:
    u = rng.random()
    if u < 0.3:
        lora = ["--peft", "lora", "--lora-r", str(_pick(rng, 8, 16, 64))]
        return lora + _maybe(0.4, lambda r: ["--lora-targets", "all-linear"])(rng)
    return ["--peft", "qlora"] if u < 0.4 else []


def _data_parallel(rng: random.Random) -> list[str]:
    u = rng.random()
    if u < 0.25:
        zero = ["--dp", str(_pick(rng, 2, 8)), "--zero", str(_pick(rng, 1, 2, 3))]
        return zero + _maybe(0.3, lambda r: ["--offload", _pick(r, "optimizer", "params")])(rng)
    if u < 0.4:
        return ["--dp", str(_pick(rng, 2, 8)), "--fsdp", _pick(rng, "full", "grad-op", "hybrid")]
    return ["--dp", str(_pick(rng, 2, 4))] if u < 0.5 else []


_OPTIMIZERS = ("adam", "sgd", "sgd-momentum", "lion", "adafactor", "adamw-8bit", "paged-adamw", "lomo")
_TRAIN_DRAWS: tuple[Draw, ...] = (
    _maybe(0.4, lambda r: ["--precision", _pick(r, "fp32", "amp", "amp-fp16", "bf16-mixed", "fp16-mixed", "bf16")]),
    _maybe(0.2, lambda r: ["--grad-dtype", _pick(r, "fp32", "half")]),
    _maybe(0.4, lambda r: ["--optimizer", _pick(r, *_OPTIMIZERS)]),
    _maybe(0.15, lambda r: ["--optimizer-impl", _pick(r, "foreach", "fused", "for-loop")]),
    _peft,
    _maybe(0.4, lambda r: ["--recompute", _pick(r, "selective", "full")]),
    _maybe(0.2, lambda r: ["--attention", _pick(r, "eager", "flash")]),
    _maybe(0.2, lambda r: ["--loss", "chunked"]),
    _data_parallel,
    _maybe(0.25, lambda r: ["--tp", str(_pick(r, 2, 4)), *_maybe(0.5, lambda q: ["--sp"])(r)]),
    _maybe(0.2, lambda r: [
        "--pp", str(_pick(r, 2, 4)), "--grad-accum", str(_pick(r, 4, 8)),
        *_maybe(0.3, lambda q: ["--interleave", "2"])(r),
    ]),
    _maybe(0.1, lambda r: ["--cp", "2"]),
    _maybe(0.1, lambda r: ["--ep", "2"]),
    _maybe(0.1, lambda r: ["--freeze-layers", "4"]),
)  # fmt: skip


def _train_options(rng: random.Random) -> list[str]:
    args = ["-b", str(_pick(rng, 1, 2, 4, 8)), "-s", str(_pick(rng, 512, 2048, 4096))]
    return args + _drawn(rng, _TRAIN_DRAWS)


def _train_case(rng: random.Random) -> list[str]:
    args = ["train", rng.choice(MODELS), *_train_options(rng)]
    if rng.random() < 0.15:
        args += ["--mode", "textbook", "--seed", _pick(rng, "000", "002")]
    if rng.random() < 0.3:
        args += ["--gpu", rng.choice(GPUS)]
    return args


def _fit_case(rng: random.Random) -> list[str]:
    model = rng.choice(MODELS[:-2])
    gpu = rng.choice(GPUS)
    kind = rng.random()
    if kind < 0.3:
        return ["fit", model, "--gpu", gpu, "--max", _pick(rng, "batch", "seq"), *_train_options(rng)]
    if kind < 0.5:
        return ["fit", model, "--gpu", gpu, "--infer", "--max", _pick(rng, "batch", "seq")]
    if kind < 0.7:
        return ["fit", model, "--gpu", gpu, "--min-gpus", "--recompute", "full"]
    if kind < 0.85:
        return ["fit", model, "--gpu", gpu, "--infer", "--best-format"]
    return ["fit", model, "--gpu", gpu, "--layouts", str(_pick(rng, 8, 16)), "--top", "3"]


def cases(n_infer: int, n_train: int, n_fit: int, seed: int = 20261201) -> list[list[str]]:
    rng = random.Random(seed)
    out = [_infer_case(rng) for _ in range(n_infer)]
    out += [_train_case(rng) for _ in range(n_train)]
    out += [_fit_case(rng) for _ in range(n_fit)]
    return out


def _numbers(doc: dict[str, Any]) -> dict[str, Any]:
    """Every byte of an estimate document, keyed by name (formulas and notes are wording, not numbers)."""
    return {
        "terms": [[t["phase"], t["name"], t["bytes"]] for t in doc["terms"]],
        "peak": doc["peak"],
        "phases": [[p["name"], p["bytes"]] for p in doc["phases"]],
        "host": [[t["name"], t["bytes"]] for t in doc["host"]],
        "missing": len(doc["missing"]),
        "gpu": doc["gpu"] and [doc["gpu"]["fits"], doc["gpu"]["headroom_bytes"]],
        "capacity": doc["capacity"] and [doc["capacity"][k] for k in ("kv_budget_bytes", "kv_tokens", "max_sequences")],
    }


def run(args: list[str]) -> dict[str, Any]:
    from vramwise.cli import main

    json_out = args[0] != "fit"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*args, "--json"] if json_out else args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
    record: dict[str, Any] = {"args": args, "exit": code}
    if code in (0, 3):  # 3: does not fit (cli/__init__.py), an answer with its numbers all the same
        record["result"] = _numbers(json.loads(out.getvalue())) if json_out else out.getvalue()
    return record


def record(path: Path, n_infer: int, n_train: int, n_fit: int) -> None:
    with path.open("w") as f:
        for args in cases(n_infer, n_train, n_fit):
            f.write(json.dumps(run(args)) + "\n")


def compare(old: Path, new: Path, summary: Path | None, labels: tuple[str, str]) -> int:
    a = [json.loads(line) for line in old.read_text().splitlines()]
    b = [json.loads(line) for line in new.read_text().splitlines()]
    assert [r["args"] for r in a] == [r["args"] for r in b], "the two runs hold different cases"
    counts: dict[str, dict[str, int]] = {}
    diffs = []
    for ra, rb in zip(a, b, strict=True):
        c = counts.setdefault(ra["args"][0], {"cases": 0, "estimated": 0, "refused": 0, "differ": 0})
        c["cases"] += 1
        c["estimated" if ra["exit"] == 0 else "refused"] += 1
        if ra["exit"] != rb["exit"] or ra.get("result") != rb.get("result"):
            c["differ"] += 1
            diffs.append((ra, rb))
    lines = ["| command | cases | estimated | refused (same exit status) | differ |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['cases']} | {v['estimated']} | {v['refused']} | {v['differ']} |" for k, v in counts.items()]
    text = "\n".join(lines)
    print(text)
    for ra, rb in diffs[:20]:
        print("DIFFERS:", " ".join(ra["args"]), "\n  old:", ra, "\n  new:", rb)
    if summary:
        summary.write_text(
            "# Equivalence: the same bytes before and after a refactor\n\n"
            f"Old: {labels[0]}. New: {labels[1]}.\n\n"
            f"`python bench/equivalence.py compare {old.name} {new.name}` over the seeded cases of "
            "`bench/equivalence.py` (every byte of each estimate's JSON document: persistent and peak terms, "
            "every phase's total, host terms, the verdict's headroom, the serving capacity; `fit` answers as "
            "their printed text).\n\n" + text + "\n"
        )
    return 1 if diffs else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--infer", type=int, default=2000)
    r.add_argument("--train", type=int, default=2000)
    r.add_argument("--fit", type=int, default=150)
    c = sub.add_parser("compare")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    c.add_argument("--summary", type=Path)
    c.add_argument("--labels", nargs=2, default=(OLD_LABEL, NEW_LABEL), help="what the two runs were (for --summary)")
    ns = p.parse_args()
    if ns.cmd == "record":
        record(ns.out, ns.infer, ns.train, ns.fit)
        return 0
    return compare(ns.old, ns.new, ns.summary, tuple(ns.labels))


if __name__ == "__main__":
    sys.exit(main())

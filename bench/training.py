"""Training benchmark: published GPU measurements of training runs beside vramwise's estimate and the peers'.

For each ``[[case]]`` of bench/data/training/manifest.toml (each with its source link), the case's settings are
passed to ``vramwise.app.train`` by their flat option names. A name the code does not know yet (an option that
issue 14's other parts add: ``framework``, ``compile``, ``float8``, ...), or a value it refuses (``recompute =
"op-sac"``), is left out and listed per case as "not applied", so the bench runs on any commit and re-runs
meaningfully once those options land. No constant of vramwise is touched here.

The measured figure is compared with the estimate's figure of the same kind:
- ``max_memory_allocated`` / ``active_peak`` (and ``unstated``, as its case says): the tensor peak, the worst
  phase's terms without the ``overhead/`` ones (context, allocator reserve, and any other non-tensor term);
- ``max_memory_reserved``: tensors plus the allocator's reserve (``overhead/allocator``), without the CUDA context
  or NCCL's buffers, which PyTorch's allocator does not hold;
- ``nvidia-smi``: the whole per-GPU peak, context included.
A case may also publish its run's mean sequence (``seq_mean``: its --range then runs from it to ``seq``) and more
reserved figures (``reserved_99th``, ``reserved_avg``: listed beside the range, ``render_steps``).
Errors are estimate / measured - 1. A published out-of-memory (``outcome = "oom"``) is checked on the case's
GPU: predicted to fit or not. Peers (bench/data/training/PEERS.md) run offline as subprocesses: fitcheck-llm,
vramcalc and llm-analysis from /work/peers-venv; hf-vram-calc's package from the same venv, run by this venv's
Python (it imports torch and transformers to count parameters on the meta device; nothing is installed here).

    python bench/training.py            # writes bench/results/training.md and training.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vramwise.app import TrainRequest, train
from vramwise.app.ranges import train_range
from vramwise.app.setups import TRAIN_FIELDS
from vramwise.catalog import models, parse_gpu
from vramwise.errors import VramwiseError
from vramwise.estimate.overheads import is_tensor
from vramwise.estimate.term import Estimate

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "training"
RESULTS = HERE / "results"
PEERS_PY = Path("/work/peers-venv/bin/python")
PEERS_SITE = Path("/work/peers-venv/lib/python3.11/site-packages")
PEER_TIMEOUT = 180
PEER_NAMES = ("fitcheck-llm", "vramcalc", "llm-analysis", "hf-vram-calc")

UNITS = {"bytes": 1, "MiB": 2**20, "GiB": 2**30, "MB": 10**6, "GB": 10**9}
# measured figure -> the estimate's figure of the same kind
KINDS = {
    "max_memory_allocated": "allocated",
    "active_peak": "allocated",
    "unstated": "allocated",
    "max_memory_reserved": "reserved",
    "nvidia-smi": "device",
    "oom": "device",
}
FIGURES = tuple(KINDS)
OUTCOMES = ("measured", "oom")
# The targets (issue 14, "Targets"): whole-peak error within 5% median and 15% worst; no OOM fits.
TARGET_MEDIAN = 0.05
TARGET_WORST = 0.15


def load_manifest() -> list[dict[str, Any]]:
    return list(tomllib.loads((DATA / "manifest.toml").read_text(encoding="utf-8"))["case"])


def measured_bytes(case: dict[str, Any]) -> int | None:
    """The published figure in bytes (``read_as`` when the printed unit is not the one the code divided by)."""
    if case["outcome"] == "oom":
        return None
    return round(float(case["value"]) * UNITS[case.get("read_as") or case["unit"]])


@dataclass
class Result:
    case: dict[str, Any]
    applied: dict[str, Any] = field(default_factory=dict)
    not_applied: list[str] = field(default_factory=list)
    error: str = ""
    figures: dict[str, int] = field(default_factory=dict)  # allocated / reserved / device, bytes
    fits: bool | None = None  # OOM cases: the estimate's verdict on the case's GPU
    notes: tuple[str, ...] = ()
    peers: dict[str, float | None] = field(default_factory=dict)  # peer -> its figure in bytes
    peer_skips: dict[str, str] = field(default_factory=dict)
    # --range on the figure of the measured kind (seq pinned at the case's): (low, high, bound), or why not
    range: tuple[int, int, int] | None = None
    range_error: str = ""

    @property
    def id(self) -> str:
        return str(self.case["id"])

    @property
    def kind(self) -> str:
        return KINDS[self.case["figure"]]

    @property
    def estimate(self) -> int | None:
        return self.figures.get(self.kind)

    @property
    def relative(self) -> float | None:
        measured = measured_bytes(self.case)
        if measured is None or self.estimate is None:
            return None
        return self.estimate / measured - 1


# --- our estimate ------------------------------------------------------------------------------------------------


def options_of(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings this commit has options for, and a line per setting it has no option for."""
    known = set(TRAIN_FIELDS)
    options: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in settings.items():
        if name not in known:
            skipped.append(f"{name}={_show(value)} (no such option on this commit)")
            continue
        options[name] = ",".join(value) if isinstance(value, list) else value
    return options, skipped


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(value) if isinstance(value, list) else str(value)


def case_gpu(case: dict[str, Any]) -> str | None:
    """The case's GPU as the catalog names it (``gpu_catalog`` when the source's name is not one), or None (only
    OOM verdicts need it)."""
    if case.get("gpu_catalog"):
        return str(case["gpu_catalog"])
    name = str(case["gpu"]).removeprefix("NVIDIA ").strip()
    for candidate in (name, name.lower(), name.split()[0], " ".join(name.split()[:2])):
        try:
            return parse_gpu(candidate).gpu.name
        except VramwiseError:
            continue
    return None


def _allocator(name: str) -> bool:
    """The caching allocator's reserve: inside max_memory_reserved, unlike the context and NCCL's own buffers
    (cudaMalloc outside PyTorch's allocator), which only the device total sees."""
    return name == "overhead/allocator" or name.startswith("overhead/allocator/")


def figures_of(est: Estimate) -> dict[str, int]:
    """The three figures a run can publish, each the maximum over the estimate's phases (see the module
    docstring): tensors; tensors and the allocator's reserve; everything."""
    def peak(keep: Callable[[str], bool]) -> int:
        base = sum(t.bytes for t in est.persistent if keep(t.name))
        return max((base + sum(t.bytes for t in p.transient if keep(t.name)) for p in est.phases), default=base)

    return {"allocated": peak(is_tensor), "reserved": peak(lambda n: is_tensor(n) or _allocator(n)),
            "device": est.peak_bytes}


def model_text(case: dict[str, Any], work: Path) -> str:
    """What the bench estimates: the catalog name, or a config.json written from the catalog's keys and the case's
    ``config_overrides`` (a head or a dropout the abbreviated catalog entry does not carry), as a user would."""
    catalog = str(case["catalog"])
    overrides = dict(case.get("config_overrides") or {})
    if not overrides:
        return catalog
    folder = work / "configs" / str(case["id"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**models()[catalog].config, **overrides}))
    return str(folder / "config.json")


def run_case(case: dict[str, Any], work: Path) -> Result:
    result = Result(case=case)
    catalog = case.get("catalog") or ""
    if catalog not in models():
        result.error = f"model {case['model']} is not in the catalog (the hub is not reached offline)"
        return result
    options, result.not_applied = options_of(dict(case["settings"]))
    gpu = case_gpu(case) if case["outcome"] == "oom" else None
    model = model_text(case, work)
    for _ in range(len(options) + 1):
        try:
            out = train(TrainRequest(model=model, options=options, gpu=gpu))
        except VramwiseError as err:
            name = getattr(err, "field", None)
            if name in options:  # a value this commit refuses: left out, with the refusal
                result.not_applied.append(f"{name}={_show(options.pop(name))} (refused: {err})")
                continue
            result.error = f"refused: {err}"
            return result
        except Exception as err:  # a bug on one case is reported with that case; the bench goes on
            result.error = f"estimate raised {type(err).__name__}: {str(err)[:160]} (a bug: report it)"
            return result
        worst = out.stages[0]
        _with_range(result, TrainRequest(model=model, options=options, gpu=gpu), out)
        result.applied = dict(options)
        result.figures = figures_of(worst.estimate)
        result.notes = worst.estimate.notes
        result.fits = None if worst.verdict is None else worst.verdict.fits
        return result
    result.error = "every setting refused"
    return result


def _with_range(result: Result, req: TrainRequest, out: Any) -> None:
    """``--range`` of the case (app/ranges.py) on the estimate's figure of the measured kind (the whole peak for an
    OOM). The sequence length is pinned at the case's own (the published run states it), so the allocator's and
    the CUDA context's uncertainties are left, unless the case publishes ``seq_mean`` (a run whose batches vary in
    length): then ``train --seq <seq_mean> --max-seq <seq> --range``, as a user who knows the mean and the longest
    would run it. Nothing is tuned: the same runs ``train --range`` makes."""
    kind = "device" if result.case["outcome"] == "oom" else result.kind
    try:
        longest = out.setup.seq
        if result.case.get("seq_mean"):
            req = TrainRequest(model=req.model, options={**req.options, "seq": result.case["seq_mean"]}, gpu=req.gpu)
            out = train(req)
        rng = train_range(req, out, longest=longest, figure=lambda est: figures_of(est)[kind])
    except VramwiseError as err:
        result.range_error = f"refused: {err}"
        return
    result.range = (rng.low, rng.high, rng.bound)


def range_stats(results: list[Result]) -> dict[str, Any]:
    """How many measured figures lie within [low, high], above the high, above the bound; by figure kind."""
    out: dict[str, Any] = {}
    for r in results:
        measured = measured_bytes(r.case)
        if r.range is None or measured is None or r.case["outcome"] == "oom":
            continue
        low, high, bound = r.range
        k = out.setdefault(r.kind, {"n": 0, "within": 0, "below_low": 0, "above_high": [], "above_bound": []})
        k["n"] += 1
        k["within"] += low <= measured <= high
        k["below_low"] += measured < low
        if measured > high:
            k["above_high"].append(r.id)
        if measured > bound:
            k["above_bound"].append(r.id)
    ooms = [r for r in results if r.case["outcome"] == "oom" and r.range is not None]
    gpus = {r.id: parse_gpu(str(case_gpu(r.case))).gpu.memory_bytes for r in ooms if case_gpu(r.case)}
    out["oom"] = {"n": len(ooms), "high_fits": [r.id for r in ooms if r.id in gpus and r.range[1] <= gpus[r.id]]}
    return out


def render_ranges(results: list[Result], rs: dict[str, Any]) -> list[str]:
    lines = [
        "", "## --range: is the measured figure within [low, high]? (issue 15)", "",
        "Each case's `train --range` (app/ranges.py) on the estimate's figure of the measured kind, the sequence "
        "length pinned at the case's own (the published run states it): the uncertainties left are the allocator "
        "(low: no reserve; high: the flat 3% or the caching-allocator replay, the larger; bound: also the replay "
        "with expandable segments) and the CUDA context (no GPU is given to a measured case, so its span is one "
        "row). The allocator and the context do not touch an allocated/active figure: its range is the estimate "
        "itself. Nothing was tuned for these counts.", "",
        "A case that publishes its run's mean sequence (`seq_mean`: peft's MetaMathQA, whose batches vary in length) "
        "is ranged from that mean (--seq) to its longest batch (--max-seq): the sequence's uncertainty joins, and the "
        "bound adds the replay of steps of both lengths in turn at the micro-batch itself "
        "(allocation.py StepTensors.varied_reserve).", "",
        "| kind | cases | within [low, high] | below low | above high | above bound |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind in ("allocated", "reserved", "device"):
        k = rs.get(kind)
        if not k:
            continue
        lines.append(f"| {kind} | {k['n']} | {k['within']} | {k['below_low']} | {len(k['above_high'])} "
                     f"({', '.join(k['above_high']) or '—'}) | {len(k['above_bound'])} |")
    o = rs["oom"]
    lines += ["", f"Published OOMs whose high still fits the GPU (the range would miss the OOM): {len(o['high_fits'])} "
              f"of {o['n']}{' (' + ', '.join(o['high_fits']) + ')' if o['high_fits'] else ''}.", "",
              "| case | figure | measured GiB | low | high | bound | within |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        measured = measured_bytes(r.case)
        if r.case["outcome"] == "oom" or measured is None:
            continue
        if r.range is None:
            why = r.range_error or r.error or "—"
            lines.append(f"| {r.id} | {r.case['figure']} | {_gib(measured)} | — | — | — | {why} |")
            continue
        low, high, bound = r.range
        where = "yes" if low <= measured <= high else ("below low" if measured < low else "ABOVE HIGH")
        lines.append(f"| {r.id} | {r.case['figure']} | {_gib(measured)} | {_gib(low)} | {_gib(high)} | "
                     f"{_gib(bound)} | {where} |")
    return lines + render_steps(results)


def render_steps(results: list[Result]) -> list[str]:
    """The cases that publish more reserved figures than the whole run's peak (``reserved_99th``): where the
    training steps' own largest reserve lies, beside the estimate and the range."""
    cases = [r for r in results if "reserved_99th" in r.case and r.range is not None and r.estimate is not None]
    if not cases:
        return []
    lines = [
        "", "### The training steps' own reserve (peft MetaMathQA)", "",
        "The results JSON logs memory_reserved() after every training step (before every 10th step's empty_cache, "
        "after every 250th's evaluation): its 99th percentile and mean are published beside the whole run's peak "
        "(`value`, evaluations included). The steps' own largest reserve lies between the 99th percentile and the "
        "run's peak (bench/data/training/manifest.toml, the section's comment).", "",
        "| case | steps' mean | steps' 99th pct | run's peak | estimate at the longest | high | bound | "
        "99th pct <= bound | peak <= bound |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in cases:
        assert r.range is not None and r.estimate is not None
        _, high, bound = r.range
        p99, peak = int(r.case["reserved_99th"]), measured_bytes(r.case) or 0
        lines.append(f"| {r.id} | {_gib(int(r.case.get('reserved_avg', 0)))} | {_gib(p99)} | {_gib(peak)} | "
                     f"{_gib(r.estimate)} | {_gib(high)} | {_gib(bound)} | {'yes' if p99 <= bound else 'NO'} | "
                     f"{'yes' if peak <= bound else 'NO'} |")
    return lines


# --- peers -------------------------------------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[str | None, str]:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=PEER_TIMEOUT,
                             env={**os.environ, "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", **(env or {})})
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"did not run: {type(err).__name__}"
    if out.returncode not in (0, 1):  # fitcheck and vramcalc exit 1 for "does not fit", with their figures
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"exit {out.returncode}: {last[:120]}"
    return out.stdout, ""


def _json_tail(text: str) -> Any:
    if "{" not in text:
        raise ValueError("no JSON in the output")
    return json.loads(text[text.index("{"):])


def _peer_limits(s: dict[str, Any], *, quant: bool = True, adam8: bool = True, recompute: bool = True) -> str:
    """The case's settings a peer has no flag for (empty: it can express the case). Every peer here is one GPU
    without sharding and knows LoRA at most; the keywords say which of QLoRA, 8-bit optimizers and activation
    recomputation it has flags for."""
    why = []
    if not quant and s.get("peft") == "qlora":
        why.append("QLoRA")
    if not adam8 and "8bit" in str(s.get("optimizer", "")):
        why.append("8-bit optimizers")
    if not recompute and s.get("recompute", "none") != "none":
        why.append("activation recomputation")
    # torchao's 8-bit AdamW holds the states of bitsandbytes': a peer's 8-bit Adam flag expresses both
    known = ("adamw", "adam", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "ao-adamw-8bit")
    if str(s.get("optimizer", "adamw")) not in known:
        why.append(f"optimizer {s['optimizer']}")
    if int(s.get("dp", 1)) > 1 or int(s.get("tp", 1)) > 1 or int(s.get("cp", 1)) > 1 or s.get("fsdp", "none") != "none":
        why.append("multi-GPU sharding (FSDP/TP/CP)")
    if s.get("peft", "none") not in ("none", "lora", "qlora"):
        why.append(f"peft {s['peft']}")
    return ", ".join(why)


def run_peers(r: Result, work: Path) -> None:
    s = dict(r.case["settings"])
    catalog = r.case.get("catalog") or ""
    if catalog not in models() or r.case["outcome"] == "oom":
        return
    if not PEERS_PY.exists():
        r.peer_skips["all"] = f"{PEERS_PY} absent"
        return
    config = {**models()[catalog].config, **dict(r.case.get("config_overrides") or {})}
    folder = work / "peers" / r.id  # the case's own config.json (its overrides included)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    _fitcheck(r, s, work, folder)
    _vramcalc(r, s, folder)
    _llm_analysis(r, s, work, catalog)
    _hf_vram_calc(r, s, folder, work)


def _compute_dtype(s: dict[str, Any]) -> str:
    """The dtype the peers' --precision/--dtype flags mean: the compute dtype of the case's recipe."""
    recipe = str(s.get("precision", "bf16-mixed"))
    return "fp32" if recipe == "fp32" else "fp16" if recipe in ("amp-fp16", "fp16-mixed") else "bf16"


def _targets(s: dict[str, Any]) -> str:
    return ",".join(s.get("lora_targets") or ["q_proj", "v_proj"])


def _fitcheck(r: Result, s: dict[str, Any], work: Path, folder: Path) -> None:
    limits = _peer_limits(s)
    if limits:
        r.peer_skips["fitcheck-llm"] = f"cannot express {limits}"
        return
    hub_id = models()[r.case["catalog"]].hf_id
    home = work / "hf" / r.id  # one hub cache per case: the case's own config.json under the hub id
    snap = home / "hub" / f"models--{hub_id.replace('/', '--')}"
    (snap / "snapshots" / "local").mkdir(parents=True, exist_ok=True)
    (snap / "refs").mkdir(exist_ok=True)
    (snap / "refs" / "main").write_text("local")
    (snap / "snapshots" / "local" / "config.json").write_text((folder / "config.json").read_text())
    args = [str(PEERS_PY.parent / "fitcheck"), hub_id, "--batch-size", str(s.get("batch", 1)), "--seq-len",
            str(s.get("seq", 2048)), "--vram-mib", "81920", "--json", "--no-color"]
    args += ["--precision", _compute_dtype(s)]
    if s.get("peft", "none") == "none":
        args.append("--no-lora")
    else:
        args += ["--lora-r", str(s.get("lora_r", 16)), "--lora-targets", _targets(s)]
    if s.get("peft") == "qlora":
        args += ["--quant", "nf4"] + (["--double-quant"] if s.get("double_quant") else [])
    if "8bit" in str(s.get("optimizer", "")):
        args += ["--optimizer", "adam8bit"]
    elif s.get("precision") == "bf16" and s.get("peft", "none") == "none":
        args += ["--optimizer-dtype", "bf16"]  # pure bf16: AdamW states in bf16
    if s.get("recompute", "none") != "none":
        args.append("--grad-checkpoint")
    if s.get("attention", "sdpa") in ("sdpa", "flash"):
        args.append("--flash-attn")
    out, why = _run(args, env={"HF_HOME": str(home)})
    if out is None:
        r.peer_skips["fitcheck-llm"] = why
        return
    r.peers["fitcheck-llm"] = _json_tail(out)["memory_mib"]["total"] * 2**20


def _vramcalc(r: Result, s: dict[str, Any], folder: Path) -> None:
    limits = _peer_limits(s, quant=False, adam8=False)
    if limits:
        r.peer_skips["vramcalc"] = f"cannot express {limits}"
        return
    args = [str(PEERS_PY.parent / "vramcalc"), "estimate", str(folder), "--train", "--batch", str(s.get("batch", 1)),
            "--seq", str(s.get("seq", 2048)), "--dtype", _compute_dtype(s),
            "--precision", "pure" if s.get("precision") in ("bf16", "fp32") else "amp",
            "--attn", {"flash": "flash", "eager": "eager"}.get(s.get("attention", "sdpa"), "sdpa"), "--json"]
    if s.get("peft", "none") == "lora":
        args += ["--lora", str(s.get("lora_r", 16))]
    if s.get("recompute", "none") != "none":
        args.append("--grad-checkpoint")
    out, why = _run(args)
    if out is None:
        r.peer_skips["vramcalc"] = why
        return
    r.peers["vramcalc"] = float(_json_tail(out)["estimate"]["total"])


def _llm_analysis(r: Result, s: dict[str, Any], work: Path, catalog: str) -> None:
    limits = _peer_limits(s, adam8=False)
    if s.get("precision") == "fp32":  # its dtype configs are all 16-bit weights or narrower (dtype_configs/)
        limits = ", ".join(x for x in (limits, "fp32 training") if x)
    if s.get("peft", "none") != "none" or limits:
        r.peer_skips["llm-analysis"] = f"cannot express {limits or 'adapters'} (its train mode: full fine-tuning)"
        return
    cfg = dict(models()[catalog].config)
    conf = work / f"{catalog}-llm-analysis.json"
    conf.write_text(json.dumps({
        "name": catalog, "num_layers": cfg["num_hidden_layers"], "n_head": cfg["num_attention_heads"],
        "hidden_dim": cfg["hidden_size"], "vocab_size": cfg["vocab_size"], "max_seq_len": max(s.get("seq", 2048), 8192),
        "num_key_value_heads": cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        "ffn_embed_dim": cfg["intermediate_size"], "expansion_ratio": cfg["intermediate_size"] / cfg["hidden_size"],
    }))
    recompute = {"none": 0, "selective": 1, "full": 2}.get(s.get("recompute", "none"), 0)
    # pure bf16 keeps no fp32 master weights: llm-analysis's master_weights_dtype_bytes 2
    master = 2 if s.get("precision") == "bf16" else 4
    out, why = _run([str(PEERS_PY), "-m", "llm_analysis.analysis", "train", "--model_name", str(conf), "--gpu_name",
                     "a100-sxm-80gb", "--batch_size_per_gpu", str(s.get("batch", 1)), "--seq_len",
                     str(s.get("seq", 2048)), "--total_num_gpus", "1", "--activation_recomputation",
                     str(recompute), "--master_weights_dtype_bytes", str(master), "--mlp_gated_linear_units", "True",
                     "--log_level", "ERROR"])
    if out is None:
        r.peer_skips["llm-analysis"] = why
        return
    try:
        res = _json_tail(out)
    except ValueError:  # it asserts the batch fits its GPU config (a100-sxm-80gb) and stops without figures
        r.peer_skips["llm-analysis"] = "stopped without figures: its batch-fits-the-GPU assertion (a100-sxm-80gb)"
        return
    # its own total per GPU, as it prints it (PEERS.md: the embedding's weights are not in it)
    r.peers["llm-analysis"] = float(res["(weight+op_state+grad+act)_memory_per_gpu"])


def _hf_vram_calc(r: Result, s: dict[str, Any], folder: Path, work: Path) -> None:
    limits = _peer_limits(s, quant=False, adam8=False, recompute=False)
    if limits:
        r.peer_skips["hf-vram-calc"] = f"cannot express {limits}"
        return
    pkg = PEERS_SITE / "hf_vram_calc"
    if not pkg.exists():
        r.peer_skips["hf-vram-calc"] = "not installed in the peers venv"
        return
    path = work / "hfvc"
    if not path.exists():
        path.mkdir()
        (path / "hf_vram_calc").symlink_to(pkg)  # only this package: its torch/transformers are this venv's
    out_json = work / f"hfvc-{r.id}.json"
    argv = ["hf-vram-calc", "--model", models()[r.case["catalog"]].hf_id, "--model_path", str(folder), "--dtype",
            _compute_dtype(s), "--max_batch_size", str(s.get("batch", 1)),
            "--max_seq_len", str(s.get("seq", 2048)), "--lora_rank", str(s.get("lora_r", 16)), "--output_json",
            str(out_json)]
    code = f"import sys; sys.argv={argv!r}; from hf_vram_calc.cli import main; main()"
    out, why = _run([sys.executable, "-c", code], env={"PYTHONPATH": str(path)})
    if out is None or not out_json.exists():
        r.peer_skips["hf-vram-calc"] = why or "no JSON written"
        return
    row = json.loads(out_json.read_text())["memory_requirements"][0]
    gib = row["lora_size_gib"] if s.get("peft") == "lora" else row["training_gib"]
    r.peers["hf-vram-calc"] = gib * 2**30


def peer_versions() -> dict[str, str]:
    out, _ = _run([str(PEERS_PY), "-m", "pip", "list", "--format", "json"])
    names = {"fitcheck-llm", "vramcalc", "llm-analysis", "hf-vram-calc"}
    if out is None:
        return {}
    return {p["name"]: p["version"] for p in json.loads(out) if p["name"] in names}


# --- aggregation and output ---------------------------------------------------------------------------------------


def _rel(est: float | None, case: dict[str, Any]) -> float | None:
    measured = measured_bytes(case)
    return None if est is None or measured is None else est / measured - 1


def stats(results: list[Result]) -> dict[str, Any]:
    rows = [(r.relative, r.id) for r in results if r.relative is not None]
    out: dict[str, Any] = {"n": len(rows), "median": None, "worst": None, "worst_case": None}
    if rows:
        worst = max(rows, key=lambda v: abs(v[0]))
        out.update(median=statistics.median(abs(v) for v, _ in rows), worst=worst[0], worst_case=worst[1])
    ooms = [r for r in results if r.case["outcome"] == "oom"]
    out["oom_cases"] = len(ooms)
    out["oom_predicted_to_fit"] = [r.id for r in ooms if r.fits]
    out["oom_unjudged"] = [r.id for r in ooms if r.fits is None]
    clean = [(r.relative, r.id) for r in results if r.relative is not None and not r.not_applied]
    out["all_applied"] = {"n": len(clean),
                          "median": statistics.median(abs(v) for v, _ in clean) if clean else None}
    for peer in PEER_NAMES:
        pairs = [(_rel(r.peers.get(peer), r.case), r.relative) for r in results]
        got = [v for v, _ in pairs if v is not None]
        ours = [o for v, o in pairs if v is not None and o is not None]  # vramwise on the cases this peer answered
        out[peer] = {"n": len(got), "median": statistics.median(abs(v) for v in got) if got else None,
                     "worst": max(got, key=abs) if got else None,
                     "vramwise_same_cases": {"n": len(ours),
                                             "median": statistics.median(abs(o) for o in ours) if ours else None}}
    return out


def _by_source(results: list[Result]) -> list[str]:
    """One row per source family (the id's first word: peft, torchtune, torchtitan, litgpt)."""
    groups: dict[str, list[float]] = {}
    for r in results:
        if r.relative is not None:
            groups.setdefault(r.id.split("-")[0], []).append(r.relative)
    return [f"| {name} | {len(v)} | {statistics.median(abs(x) for x in v):.1%} | {_pct(max(v, key=abs))} |"
            for name, v in groups.items()]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def _gib(b: float | None) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f}"


def render(results: list[Result], s: dict[str, Any], commit: str, versions: dict[str, str]) -> str:
    median, worst = s["median"], s["worst"]
    lines = [
        "# Published GPU training measurements beside vramwise's estimate",
        "",
        f"Generated by `python bench/training.py` at commit {commit}. No constant was changed for these numbers. "
        "Cases: bench/data/training/manifest.toml "
        f"({len(results)} cases, each with its source link). Each case's settings go to `vramwise train` by their "
        "flat option names; a setting this commit has no option for, or refuses, is listed under the case as "
        "not applied, and the estimate runs without it. Measured allocated/active peaks are compared with the "
        "tensor peak (no context, no allocator reserve), reserved peaks with tensors plus the allocator's reserve "
        "(no context, no NCCL buffers), "
        "nvidia-smi figures with the whole peak. Error = estimate / measured - 1. Read the errors with the "
        "'not applied' column: a refused value (peft=dora, recompute=op-sac) leaves that setting at its default, "
        "so such a case's error measures the missing option, not the model of the rest.",
        "",
        "## Targets (issue 14)",
        "",
        "| target | value | met |",
        "| --- | --- | --- |",
        f"| whole-peak error within {TARGET_MEDIAN:.0%} median | {'n/a' if median is None else f'{median:.1%}'} "
        f"(n={s['n']}) | {'yes' if median is not None and median <= TARGET_MEDIAN else 'no'} |",
        f"| whole-peak error within {TARGET_WORST:.0%} worst | {_pct(worst)} ({s['worst_case']}) | "
        f"{'yes' if worst is not None and abs(worst) <= TARGET_WORST else 'no'} |",
        f"| no published OOM predicted to fit | {len(s['oom_predicted_to_fit'])} of {s['oom_cases']} predicted to "
        f"fit{' (' + ', '.join(s['oom_predicted_to_fit']) + ')' if s['oom_predicted_to_fit'] else ''} | "
        f"{'yes' if not s['oom_predicted_to_fit'] and not s['oom_unjudged'] else 'no'} |",
        "",
        f"Cases whose every setting was applied: {s['all_applied']['n']}, median |error| "
        f"{'n/a' if s['all_applied']['median'] is None else format(s['all_applied']['median'], '.1%')}.",
        "",
        "## By source",
        "",
        "| source | cases compared | median abs error | worst |",
        "| --- | --- | --- | --- |",
        *_by_source(results),
        "",
        "## Per case",
        "",
        "| case | figure | measured | vramwise GiB | error | not applied |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        c = r.case
        measured = "OOM" if c["outcome"] == "oom" else f"{c['value']} {c['unit']}"
        if r.error:
            est, err = "—", r.error
        elif c["outcome"] == "oom":
            est, err = _gib(r.figures.get("device")), "predicted " + ("to fit" if r.fits else "OOM")
        else:
            est, err = _gib(r.estimate), _pct(r.relative)
        missing = "; ".join(r.not_applied) or "—"
        lines.append(f"| [{r.id}]({c['source']}) | {c['figure']} | {measured} | {est} | {err} | {missing} |")
    lines += ["", "## Peers beside ours (same cases, each peer's total as it outputs it)", "",
              "Versions: " + (", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "not found") + ". "
              "Each peer gets the settings it has flags for (bench/data/training/PEERS.md); n/a: it cannot "
              "express the case (reason below the table).", "",
              "| case | measured GiB | vramwise | " + " | ".join(PEER_NAMES) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in PEER_NAMES) + " |"]
    for r in results:
        if r.case["outcome"] == "oom":
            continue
        cells = [_pct(_rel(r.peers.get(p), r.case)) for p in PEER_NAMES]
        lines.append(f"| {r.id} | {_gib(measured_bytes(r.case))} | {_pct(r.relative)} | " + " | ".join(cells) + " |")
    lines += ["", "| peer | cases expressed | median abs error | worst | vramwise on the same cases (n, median) |",
              "| --- | --- | --- | --- | --- |",
              f"| vramwise | {s['n']} | {'n/a' if median is None else f'{median:.1%}'} | {_pct(worst)} | — |"]
    for p in PEER_NAMES:
        v = s[p]
        med = "n/a" if v["median"] is None else f"{v['median']:.1%}"
        same = v["vramwise_same_cases"]
        ours = "n/a" if same["median"] is None else f"{same['n']}, {same['median']:.1%}"
        lines.append(f"| {p} | {v['n']} | {med} | {_pct(v['worst'])} | {ours} |")
    lines += ["", "Peers not run on a case:", ""]
    reasons: dict[str, set[str]] = {}
    for r in results:
        for p, why in r.peer_skips.items():
            reasons.setdefault(f"{p}: {why}", set()).add(r.id)
    lines += [f"- {why} ({len(ids)} cases)" for why, ids in sorted(reasons.items())]
    lines += ["", "## Settings not applied on this commit", "",
              "What each case needs that this commit does not have (issue 14's other parts add them):", ""]
    needs: dict[str, list[str]] = {}
    for r in results:
        for item in r.not_applied:
            needs.setdefault(item.split(" (")[0].split("=")[0], []).append(r.id)
    lines += [f"- `{name}`: {len(ids)} cases ({', '.join(ids)})" for name, ids in sorted(needs.items())]
    lines += render_ranges(results, s["range"])
    return "\n".join(lines) + "\n"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def _commit() -> str:
    """The commit the bench ran at, and the main it stands on (a branch whose src/ equals main's gives main's
    numbers)."""
    head = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    base = _git("merge-base", "HEAD", "main")[:12]
    same_src = base and not _git("diff", "--stat", base, "HEAD", "--", str(HERE.parent / "src"))
    return f"{head} (main {base}, src/ identical)" if same_src and base != head else head


def main() -> int:
    os.environ["HF_HUB_OFFLINE"] = "1"  # never the hub: a model outside the catalog is reported with the reason
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_case(case, Path(tmp)) for case in load_manifest()]
        for r in results:
            run_peers(r, Path(tmp))
    s = stats(results)
    s["range"] = range_stats(results)
    for r in results:
        print(f"{r.id:<44} {r.case['figure']:<20} {_pct(r.relative):>8}  {r.error or '; '.join(r.not_applied)}")
    print(f"median |err| {s['median']}, worst {s['worst']} ({s['worst_case']}); OOM predicted to fit: "
          f"{s['oom_predicted_to_fit']}")
    commit, versions = _commit(), peer_versions()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training.md").write_text(render(results, s, commit, versions), encoding="utf-8")
    data = {
        "commit": commit,
        "peer_versions": versions,
        "stats": s,
        "cases": [
            {"id": r.id, "source": r.case["source"], "figure": r.case["figure"], "kind": r.kind,
             "measured_bytes": measured_bytes(r.case), "outcome": r.case["outcome"], "estimate": r.figures,
             "relative_error": r.relative, "predicted_fits": r.fits, "applied": r.applied,
             "not_applied": r.not_applied, "error": r.error or None, "notes": list(r.notes),
             "peers": r.peers, "peer_relative_error": {p: _rel(v, r.case) for p, v in r.peers.items()},
             "peer_skips": r.peer_skips, "range": r.range, "range_error": r.range_error or None}
            for r in results
        ],
    }
    (RESULTS / "training.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / 'training.md'} and training.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

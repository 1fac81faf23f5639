"""Engine-log benchmark: every startup log of the corpus beside the engine plan of its own setup, and the peers.

For each ``[[log]]`` of bench/data/engine_logs/manifest.toml, the log is compared as ``vramwise verify --log`` does
(app/verify_log.py ``compare_parsed``): its model from the catalog (the entry whose hub id the log or the manifest
names; the hub is never called), its GPU from the CUDA total it prints (else the manifest's GPU, from the catalog),
its flags as logged. A log whose model, GPU or engine plan is not available offline is listed with the reason.

Per term (weights, activation peak, non-torch, CUDA graphs, KV memory, KV tokens or blocks, concurrency; llama.cpp's
model, KV and compute buffers) the median and worst relative error over the logs, and the issue's targets: KV
capacity within 3% median and 10% worst, profiled activation within 10% median, weights within 1% (every log).
Peers (bench/data/engine_logs/PEERS.md) run offline from /work/peers-venv as subprocesses, never in this venv:
ridgepoint (weights, vLLM KV pool: its registry ids and GPUs only), fitcheck-llm and vramcalc (weights, tp 1, from
a config.json written from the catalog), llm-analysis (weights; bench/peers.py in-process when importable, else
the peers venv). No constant of vramwise is touched here.

    python bench/engines.py            # writes bench/results/engines.md and engines.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vramwise.app.ranges import infer_range
from vramwise.app.run import InferRequest, infer
from vramwise.app.verify_log import compare_parsed
from vramwise.catalog import models, parse_gpu
from vramwise.engines.compare import LogComparison
from vramwise.engines.logs import load_log
from vramwise.errors import VramwiseError

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "engine_logs"
RESULTS = HERE / "results"
PEERS_PY = Path("/work/peers-venv/bin/python")
PEER_TIMEOUT = 120

# figure name -> the term it reports, in the order the results show them
TERMS = {
    "weights": "weights",
    "activation_peak": "activation peak",
    "non_torch": "non-torch",
    "cuda_graphs": "CUDA graphs",
    "kv_cache": "KV memory",
    "kv_tokens": "KV tokens",
    "kv_blocks": "KV blocks",
    "max_concurrency": "concurrency",
    "kv_cache_total": "llama.cpp KV (all devices)",
    "compute_buffer": "llama.cpp compute buffer",
    "budget": "budget",
}
FROM_LOGGED_POOL = "(of the logged KV memory; no GPU named)"
LLAMACPP_KV = "llama.cpp KV (per device)"
# The targets (issue 13, "Targets"): (term, statistic, bound)
TARGETS = (
    ("KV capacity", "median", 0.03),
    ("KV capacity", "worst", 0.10),
    ("activation peak", "median", 0.10),
    ("weights", "worst", 0.01),
)
# ridgepoint's built-in ids and GPUs (PEERS.md: the only ones it resolves offline)
RIDGEPOINT_MODELS = {"llama-3-8b", "llama-3-70b", "llama-2-7b", "mistral-7b", "mixtral-8x7b", "qwen2.5-7b",
                     "deepseek-v2-lite", "deepseek-r1"}
RIDGEPOINT_GPUS = {"H100 80GB": "h100-80gb", "A100 40GB": "a100-40gb", "A100 80GB": "a100-80gb"}
FITCHECK_GPUS = {"H100 80GB": "h100", "A100 40GB": "a100-40", "A100 80GB": "a100-80", "RTX 3090": "3090",
                 "L40S": "l40s", "L40 ": "l40"}
VRAMCALC_GPUS = {"H100 80GB": "H100 80GB", "A100 40GB": "A100 40GB", "RTX 3090": "RTX 3090"}


@dataclass
class Entry:
    file: str
    source: str
    engine: str
    model: str
    gpu: str
    tp: int
    version: str = ""
    comparison: LogComparison | None = None
    skipped: str = ""
    catalog: str = ""
    config: str = ""  # a committed config.json (configs/) the model is read from instead of the catalog
    # manifest ``architecture``: the catalog entry a fine-tune is read as when the log prints its architecture
    # (llama.cpp's llm_load_print_meta) and that is the entry's, field by field (the manifest note says which)
    architecture: str = ""
    nominal_gpu: str = ""  # the GPU assumed for a log that names none (llama.cpp buffer sizes do not depend on it)
    dropped: dict[str, str] = field(default_factory=dict)  # figure -> why it is not compared for this log
    # manifest kv_from_log: a vLLM log that names no GPU: its logged KV memory is given to the plan as
    # --kv-cache-memory-bytes, so only the tokens, blocks and concurrency that memory holds are checked (the KV bytes
    # per token and the block rounding), never the budget: kept out of "KV capacity"
    kv_from_log: bool = False
    bench_notes: list[str] = field(default_factory=list)  # how this benchmark set the log up (shown under it)
    peers: dict[str, dict[str, float]] = field(default_factory=dict)  # peer -> figure -> relative error
    peer_skips: dict[str, str] = field(default_factory=dict)
    # --range over vLLM's releases on the plan's KV memory: (low, high, bound, logged), or why not
    kv_range: tuple[int, int, int, int] | None = None
    kv_range_error: str = ""


def _catalog_name(hub_id: str) -> tuple[str | None, str]:
    """The catalog entry for a hub id: the same id, or the base model of an ``-Instruct`` id, or the ``-Instruct``
    sibling of a base id (the same config.json architecture; only the weights' values differ, which no memory
    figure reads)."""
    wanted = hub_id.split(" (")[0].strip().lower()
    for name, entry in models().items():
        if entry.hf_id.lower() == wanted:
            return name, ""
    for name, entry in models().items():
        if wanted.endswith("-instruct") and entry.hf_id.lower() == wanted.removesuffix("-instruct"):
            return name, f"{hub_id.split(' (')[0]} read as its base model {entry.hf_id} (same architecture)"
        if entry.hf_id.lower() == wanted + "-instruct":
            return name, f"{hub_id.split(' (')[0]} read as its instruction-tuned sibling {entry.hf_id} (same " \
                         "architecture)"
    return None, ""


def _gpu_text(entry: Entry) -> str | None:
    """The manifest's GPU as a catalog name: with a logged CUDA total, verify --log takes its kind (interconnect,
    compute capability) and keeps the log's total; without one, the catalog's."""
    name = entry.gpu.split(" (")[0]
    for candidate in (name, name.split()[0], " ".join(name.split()[:2])):
        try:
            parse_gpu(candidate)
        except VramwiseError:
            continue
        return candidate
    return None


def run_entry(raw: dict[str, Any]) -> Entry:
    entry = Entry(file=raw["file"], source=raw["source"], engine=raw["engine"], model=raw["model"], gpu=raw["gpu"],
                  tp=int(raw.get("tp", 1)), version=raw.get("version", ""), config=raw.get("config", ""),
                  nominal_gpu=raw.get("nominal_gpu", ""), dropped=dict(raw.get("not_compared", {})),
                  architecture=raw.get("architecture", ""),
                  kv_from_log=bool(raw.get("kv_from_log", False)))
    try:
        parsed = load_log(DATA / entry.file)
    except VramwiseError as err:
        entry.skipped = f"log not parsed: {err}"
        return entry
    name, stand_in = _model_for(entry)
    if name is None:
        entry.skipped = f"model {entry.model.split(' (')[0]} is not in the catalog (the hub is not reached offline)"
        return entry
    entry.catalog = name if not entry.config else ""
    gpu = _gpu_text(entry) or entry.nominal_gpu or None
    if gpu is None and parsed.best("gpu_total") is None:
        entry.skipped = f"no CUDA total in the log and GPU {entry.gpu!r} is not in the catalog"
        return entry
    # manifest `options`: flags the run used that the kept excerpt does not print (each says where it was read)
    options = {"tp": entry.tp, **raw.get("options", {})}
    kv = parsed.best("kv_cache")
    if entry.kv_from_log and kv is not None:
        options["kv_cache_memory"] = int(kv.value)
        entry.dropped["kv_cache"] = ("given to the plan as --kv-cache-memory-bytes (the log names no GPU): the tokens, "
                                     "blocks and concurrency that memory holds are checked, not the budget")
    try:
        entry.comparison = compare_parsed(parsed, model=name, gpu=gpu, options=options)
    except VramwiseError as err:
        entry.skipped = f"refused: {err}"
        return entry
    notes = [*([stand_in] if stand_in else []), *_nominal_note(entry, gpu, parsed.best("gpu_total") is not None)]
    notes += [f"{fig} not compared: {why}" for fig, why in entry.dropped.items()]
    notes += [f"manifest options: {raw['options']}"] if raw.get("options") else []
    entry.bench_notes = notes
    _with_range(entry, parsed, name, gpu)
    rows = tuple(r for r in entry.comparison.rows if r.name not in entry.dropped)
    entry.comparison = LogComparison(**{**entry.comparison.__dict__, "rows": rows,
                                        "notes": (*notes, *entry.comparison.notes)})
    return entry


def _with_range(entry: Entry, parsed: Any, name: str, gpu: str | None) -> None:
    """``infer --range`` (app/ranges.py) on the plan's KV memory, with the logged release unpinned: is the logged KV
    memory within [low, high] over vLLM's modelled releases (and the allocator and CUDA context)? vLLM logs only,
    with a logged KV memory the plan sizes from the GPU (not a kv_from_log entry). Nothing is tuned."""
    c = entry.comparison
    kv = next((r for r in c.rows if r.name == "kv_cache"), None) if c else None
    if c is None or entry.engine != "vllm" or kv is None or entry.kv_from_log or "kv_cache" in entry.dropped:
        return
    total = parsed.best("gpu_total")
    gpu_text = f"{int(total.value)}B" if total is not None else gpu
    options = {k: v for k, v in c.options.items() if k != "vllm_version"}

    def kv_bytes(r: Any) -> int:
        return r.engine.kv_pool.bytes if r.engine is not None and r.engine.kv_pool is not None else 0

    try:
        req = InferRequest(model=name if not entry.config else os.path.relpath(DATA / entry.config),
                           options=options, gpu=gpu_text)
        out = infer(req)
        rng = infer_range(req, out, longest=out.setup.context, figure=kv_bytes)
    except VramwiseError as err:
        entry.kv_range_error = f"refused: {err}"
        return
    entry.kv_range = (rng.low, rng.high, rng.bound, int(kv.logged))


def render_ranges(entries: list[Entry]) -> list[str]:
    ranged = [e for e in entries if e.kv_range is not None]
    within = [e for e in ranged if e.kv_range and e.kv_range[0] <= e.kv_range[3] <= e.kv_range[1]]
    above = [e.file for e in ranged if e.kv_range and e.kv_range[3] > e.kv_range[1]]
    below = [e.file for e in ranged if e.kv_range and e.kv_range[3] < e.kv_range[0]]
    lines = ["", "## --range over vLLM's releases: is the logged KV memory within [low, high]? (issue 15)", "",
             "Each vLLM log's setup as compared above, its release unpinned: `infer --range` (app/ranges.py) runs "
             "the plan of every modelled release (--vllm-version 0.11, 0.10, 0.9, 0.8, 0.6, 0.6.4), the allocator "
             "and the CUDA context at their low and high, and ranges the plan's KV memory. The KV pool is what is "
             "left of the budget, so a release that counts more outside it gives less KV: the range brackets the "
             "logged figure or not, it is not the peak's 'never under'. Nothing was tuned for these counts.", "",
             f"Logs ranged: {len(ranged)}; logged KV memory within [low, high]: {len(within)}; above high: "
             f"{len(above)}{' (' + ', '.join(above) + ')' if above else ''}; below low: {len(below)}"
             f"{' (' + ', '.join(below) + ')' if below else ''}.", "",
             "| log | logged GiB | low | high | within |", "| --- | --- | --- | --- | --- |"]
    for e in entries:
        if e.kv_range is None:
            if e.kv_range_error:
                lines.append(f"| {e.file} | — | — | — | {e.kv_range_error} |")
            continue
        low, high, _, logged = e.kv_range
        where = "yes" if low <= logged <= high else ("below low" if logged < low else "ABOVE HIGH")
        lines.append(f"| {e.file} | {logged / 2**30:.2f} | {low / 2**30:.2f} | {high / 2**30:.2f} | {where} |")
    return lines


def _model_for(entry: Entry) -> tuple[str | None, str]:
    """A committed config.json (manifest ``config``, bench/data/engine_logs/configs/, each with its source in
    configs/README.md) when the manifest names one, else the catalog entry of the logged hub id."""
    if entry.config:
        path = os.path.relpath(DATA / entry.config)  # relative: the results name the committed file, not this machine
        return path, f"model read from {entry.config} (the published config.json; source in configs/README.md)"
    if entry.architecture:
        return entry.architecture, (f"{entry.model.split(' (')[0]} read as catalog {entry.architecture}: the "
                                    "architecture the log prints (llm_load_print_meta) is that entry's")
    return _catalog_name(entry.model)


def _nominal_note(entry: Entry, gpu: str | None, logged_total: bool) -> list[str]:
    if logged_total or not entry.nominal_gpu or gpu != entry.nominal_gpu:
        return []
    return [f"the log names no GPU: estimated on a nominal {entry.nominal_gpu}, large enough for the model; "
            "llama.cpp's model, KV and compute buffer sizes do not depend on the GPU's total, so the compared "
            "figures are the same on any GPU that holds them"]


# --- peers -------------------------------------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[str | None, str]:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=PEER_TIMEOUT,
                             env={**os.environ, "NO_COLOR": "1", **(env or {})})
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"did not run: {type(err).__name__}"
    if out.returncode not in (0, 1):  # fitcheck exits 1 for "does not fit", with its figures
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"exit {out.returncode}: {last[:120]}"
    return out.stdout, ""


def _json_tail(text: str) -> Any:
    return json.loads(text[text.index("{"):])


def _logged(c: LogComparison, name: str) -> float | None:
    row = next((r for r in c.rows if r.name == name), None)
    return None if row is None or not row.logged else float(row.logged)


def _rel(est: float, logged: float | None) -> float | None:
    return None if logged is None else est / logged - 1


def _gpu_key(entry: Entry, table: dict[str, str]) -> str | None:
    return next((v for k, v in table.items() if entry.gpu.startswith(k)), None)


def peers(entry: Entry, work: Path) -> None:
    c = entry.comparison
    if c is None or c.engine != "vllm":
        return
    if not entry.catalog:
        entry.peer_skips["all"] = "model read from a committed config.json, not a catalog entry the peers were given"
        return
    if not PEERS_PY.exists():
        entry.peer_skips["all"] = f"{PEERS_PY} absent"
        return
    cfg = dict(models()[entry.catalog].config)
    folder = work / entry.catalog
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    ctx = int(c.options.get("max_model_len") or cfg.get("max_position_embeddings") or 4096)
    weights, kv = _logged(c, "weights"), _logged(c, "kv_cache")
    bindir = PEERS_PY.parent
    _ridgepoint(entry, bindir, ctx, weights, kv)
    _fitcheck(entry, bindir, work, cfg, ctx, weights)
    _vramcalc(entry, bindir, folder, ctx, weights)
    _llm_analysis(entry, work, cfg, ctx, weights)


def _ridgepoint(entry: Entry, bindir: Path, ctx: int, weights: float | None, kv: float | None) -> None:
    gpu = _gpu_key(entry, RIDGEPOINT_GPUS)
    if entry.catalog not in RIDGEPOINT_MODELS or gpu is None:
        entry.peer_skips["ridgepoint"] = "model or GPU not in its offline registry"
        return
    out, why = _run([str(bindir / "ridgepoint"), "fit", entry.catalog, "--gpu", f"{gpu}:{entry.tp}", "--engine",
                     "vllm", "--ctx", str(ctx), "--json"])
    if out is None:
        entry.peer_skips["ridgepoint"] = why
        return
    mem = _json_tail(out)["memory"]
    # ridgepoint sums over the GPUs at tp > 1 (PEERS.md e2): per GPU is / tp
    figures = {"weights": _rel(mem["weights_bytes"]["best"] / entry.tp, weights),
               "kv_cache": _rel(mem["kv_pool_bytes"]["best"] / entry.tp, kv)}
    entry.peers["ridgepoint"] = {k: v for k, v in figures.items() if v is not None}


def _fitcheck(entry: Entry, bindir: Path, work: Path, cfg: dict, ctx: int, weights: float | None) -> None:
    gpu = _gpu_key(entry, FITCHECK_GPUS)
    if entry.tp != 1 or gpu is None or weights is None:
        entry.peer_skips["fitcheck-llm"] = "tp > 1 (no tensor-parallel option), GPU not in its list, or no weights"
        return
    hub_id = models()[entry.catalog].hf_id
    snap = work / "hf" / "hub" / f"models--{hub_id.replace('/', '--')}"
    (snap / "snapshots" / "local").mkdir(parents=True, exist_ok=True)
    (snap / "refs").mkdir(exist_ok=True)
    (snap / "refs" / "main").write_text("local")
    (snap / "snapshots" / "local" / "config.json").write_text(json.dumps(cfg))
    out, why = _run([str(bindir / "fitcheck"), "infer", hub_id, "--gpu", gpu, "--precision", "bf16", "--seq-len",
                     str(ctx), "--json"], env={"HF_HOME": str(work / "hf")})
    if out is None:
        entry.peer_skips["fitcheck-llm"] = why
        return
    mib = _json_tail(out)["memory_mib"]["weights"] * 2**20
    entry.peers["fitcheck-llm"] = {"weights": mib / weights - 1}


def _vramcalc(entry: Entry, bindir: Path, folder: Path, ctx: int, weights: float | None) -> None:
    if entry.tp != 1 or weights is None:
        entry.peer_skips["vramcalc"] = "tp > 1 (no tensor-parallel option) or no weights"
        return
    out, why = _run([str(bindir / "vramcalc"), "estimate", str(folder), "--dtype", "bf16", "--seq", str(ctx),
                     "--json"])
    if out is None:
        entry.peer_skips["vramcalc"] = why
        return
    entry.peers["vramcalc"] = {"weights": _json_tail(out)["estimate"]["weights"] / weights - 1}


def _llm_analysis(entry: Entry, work: Path, cfg: dict, ctx: int, weights: float | None) -> None:
    if weights is None:
        return
    sys.path.insert(0, str(HERE))
    import peers as peer_mod  # bench/peers.py: llm-analysis in-process when this venv has it

    from vramwise.spec.load import resolve_model

    spec = resolve_model(entry.catalog)
    la = peer_mod.llm_analysis(spec, ctx) if hasattr(spec, "attention") else None
    if la is not None:
        total = la.get_weight_memory_per_layer() * spec.num_layers + la.get_memory_embedding()
        entry.peers["llm-analysis"] = {"weights": total / entry.tp / weights - 1}
        return
    conf = work / f"{entry.catalog}-llm-analysis.json"
    conf.write_text(json.dumps({
        "name": entry.catalog, "num_layers": cfg["num_hidden_layers"], "n_head": cfg["num_attention_heads"],
        "hidden_dim": cfg["hidden_size"], "vocab_size": cfg["vocab_size"], "max_seq_len": max(ctx, 8192),
        "num_key_value_heads": cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        "ffn_embed_dim": cfg["intermediate_size"], "expansion_ratio": cfg["intermediate_size"] / cfg["hidden_size"],
    }))
    out, why = _run([str(PEERS_PY), "-m", "llm_analysis.analysis", "infer", "--model_name", str(conf), "--gpu_name",
                     "h100-sxm-80gb", "--tp_size", str(entry.tp), "--batch_size_per_gpu", "1", "--seq_len",
                     str(ctx), "--num_tokens_to_generate", "1", "--log_level", "ERROR"])
    if out is None:
        entry.peer_skips["llm-analysis"] = why
        return
    r = _json_tail(out)
    # its weight_memory_per_gpu leaves the embedding out (PEERS.md): add it back for the same quantity
    entry.peers["llm-analysis"] = {
        "weights": (r["weight_memory_per_gpu"] + r["weight_memory_embedding_per_gpu"]) / weights - 1
    }


# --- aggregation and output ---------------------------------------------------------------------------------------


def _capacity(c: LogComparison) -> tuple[str, float] | None:
    """The log's KV capacity figure: tokens, else blocks, else the KV memory (the pool's size)."""
    for name in ("kv_tokens", "kv_blocks", "kv_cache"):
        row = next((r for r in c.rows if r.name == name and r.relative is not None), None)
        if row is not None and row.relative is not None:
            return name, row.relative
    return None


def stats(entries: list[Entry]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    series: dict[str, list[tuple[float, str]]] = {}
    for e in entries:
        if e.comparison is None:
            continue
        llamacpp = e.comparison.engine == "llama.cpp"
        for r in e.comparison.rows:
            if r.name in TERMS and r.relative is not None:
                term = f"{TERMS[r.name]} {FROM_LOGGED_POOL}" if e.kv_from_log else TERMS[r.name]
                term = LLAMACPP_KV if llamacpp and r.name == "kv_cache" else term
                series.setdefault(term, []).append((r.relative, e.file))
        # KV capacity is the pool an engine sizes from its budget (vLLM, SGLang); llama.cpp's KV buffers follow
        # -c alone, and a log given its own KV memory checks only the tokens it holds: both reported apart
        cap = _capacity(e.comparison)
        if cap is not None and not e.kv_from_log and not llamacpp:
            series.setdefault("KV capacity", []).append((cap[1], e.file))
    for term, values in series.items():
        worst = max(values, key=lambda v: abs(v[0]))
        out[term] = {"n": len(values), "median": statistics.median(abs(v) for v, _ in values),
                     "worst": worst[0], "worst_log": worst[1]}
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def render(entries: list[Entry], s: dict[str, dict[str, Any]]) -> str:
    lines = ["# Engine startup logs beside vramwise's engine plans", "",
             "Generated by `python bench/engines.py` from bench/data/engine_logs/manifest.toml (each log's source "
             "below). Each log is compared as `vramwise verify --log` does: catalog model, the log's CUDA total "
             "(else the manifest's GPU), its flags as logged. Errors are estimate / logged - 1; median of |error|, "
             "worst signed. No constant was changed for these numbers.", "",
             "Read with the versions in mind: as `verify --log` does, each vLLM log is compared with the plan of "
             "its release: a V0 log (0.6.x) with `--vllm-version 0.6.4` (its one-line 'Memory profiling results') "
             "or `0.6` (v0.6.5-v0.6.6, memory_profiling; the options below name it), a V1 log of 0.7-0.9.1 with `0.8`, "
             "of 0.9.2 with `0.9`, of 0.10.x with `0.10`, any other with vLLM 0.11.0 (V1); SGLang with 0.5, or 0.4 "
             "(0.4.9.post2) where the manifest names it. A log that "
             "prints no version is compared with 0.11.0 unless its manifest entry names the release of its date "
             "(`options`, said under the log). The model is the catalog entry of the logged hub id, or a committed "
             "config.json (bench/data/engine_logs/configs/, each with its source in configs/README.md). A llama.cpp "
             "log that names no GPU is estimated on a stated nominal GPU large enough for it (its model, KV and "
             "compute buffers do not depend on the GPU's total); a vLLM log that names no GPU gets its logged KV "
             "memory as --kv-cache-memory-bytes and checks only the tokens that memory holds, reported apart and "
             "kept out of 'KV capacity'. A log whose model is not available offline, "
             "or whose GPU is unknown, is listed with the reason and left out of the statistics. Peers: each "
             "figure as the peer outputs it (ridgepoint's totals divided by tp; llm-analysis's "
             "weight_memory_per_gpu + weight_memory_embedding_per_gpu).", "",
             "## Targets (issue 13)", "", "| target | value | met |", "| --- | --- | --- |"]
    for term, stat, bound in TARGETS:
        v = s.get(term, {})
        value = v.get(stat)
        met = "n/a (no log)" if value is None else ("yes" if abs(value) <= bound else "no")
        lines.append(f"| {term} within {bound:.0%} {stat} | {'n/a' if value is None else _pct(value)} "
                     f"(n={v.get('n', 0)}) | {met} |")
    lines += ["", "## Per term", "", "| term | logs | median abs error | worst | worst log |",
              "| --- | --- | --- | --- | --- |"]
    for term in [*TERMS.values(), "KV capacity", LLAMACPP_KV, *(f"{t} {FROM_LOGGED_POOL}" for t in TERMS.values())]:
        if term in s:
            v = s[term]
            lines.append(f"| {term} | {v['n']} | {v['median']:.1%} | {_pct(v['worst'])} | {v['worst_log']} |")
    lines += ["", "## Peers beside ours (same logs, the figures each peer outputs)", "",
              "| log | figure | vramwise | " + " | ".join(PEER_NAMES) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in PEER_NAMES) + " |"]
    for e in entries:
        if not e.peers or e.comparison is None:
            continue
        for fig in ("weights", "kv_cache"):
            ours = next((r.relative for r in e.comparison.rows if r.name == fig), None)
            cells = [_pct(e.peers.get(p, {}).get(fig)) for p in PEER_NAMES]
            if ours is not None and any(c != "n/a" for c in cells):
                lines.append(f"| {e.file} | {fig} | {_pct(ours)} | " + " | ".join(cells) + " |")
    lines += ["", "## Every log", ""]
    for e in entries:
        lines.append(f"### {e.file}")
        lines.append(f"source: {e.source} — {e.engine} {e.version}; model {e.model}, GPU {e.gpu}, tp {e.tp}")
        if e.comparison is None:
            lines += [f"skipped: {e.skipped}", ""]
            continue
        c = e.comparison
        lines.append(f"estimated as: {'catalog ' if e.catalog else ''}{c.model}, {c.gpu}, options {dict(c.options)}")
        lines += [f"- {n}" for n in e.bench_notes]
        lines += ["", "| figure | rank | logged | estimate | error |", "| --- | --- | --- | --- | --- |"]
        for r in c.rows:
            est = "not modelled" if r.estimate is None else f"{r.estimate:,}" if r.is_bytes else f"{r.estimate:,.6g}"
            logged = f"{r.printed} {r.unit}"
            lines.append(f"| {r.name} | {r.rank} | {logged} | {est} | {_pct(r.relative)} |")
        skips = "; ".join(f"{p}: {w}" for p, w in e.peer_skips.items())
        if skips:
            lines.append(f"\npeers not run here: {skips}")
        lines.append("")
    lines += render_ranges(entries)
    return "\n".join(lines) + "\n"


PEER_NAMES = ("ridgepoint", "fitcheck-llm", "vramcalc", "llm-analysis")


def main() -> int:
    # never the hub (huggingface_hub reads this when first imported, lazily, after here): a model outside the
    # catalog is skipped with its reason
    os.environ["HF_HUB_OFFLINE"] = "1"
    manifest = tomllib.loads((DATA / "manifest.toml").read_text(encoding="utf-8"))["log"]
    entries = [run_entry(raw) for raw in manifest]
    with tempfile.TemporaryDirectory() as tmp:
        for e in entries:
            peers(e, Path(tmp))
    s = stats(entries)
    for term, v in s.items():
        print(f"{term:<28} n={v['n']:<3} median |err| {v['median']:7.1%}  worst {_pct(v['worst']):>8}  "
              f"({v['worst_log']})")
    for e in entries:
        if e.comparison is None:
            print(f"skipped {e.file}: {e.skipped}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engines.md").write_text(render(entries, s), encoding="utf-8")
    data = {
        "stats": s,
        "targets": [{"term": t, "statistic": st, "bound": b, "value": s.get(t, {}).get(st)} for t, st, b in TARGETS],
        "logs": [
            {"file": e.file, "source": e.source, "model": e.model, "catalog": e.catalog, "gpu": e.gpu, "tp": e.tp,
             "skipped": e.skipped or None, "peers": e.peers, "peer_skips": e.peer_skips,
             "rows": [] if e.comparison is None else [
                 {"name": r.name, "rank": r.rank, "printed": r.printed, "unit": r.unit, "logged": r.logged,
                  "estimate": r.estimate, "relative_error": r.relative, "within_tolerance": r.within}
                 for r in e.comparison.rows],
             "notes": [] if e.comparison is None else list(e.comparison.notes),
             "kv_range": e.kv_range, "kv_range_error": e.kv_range_error or None}
            for e in entries
        ],
    }
    (RESULTS / "engines.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / 'engines.md'} and engines.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy benchmark: vramwise and peer estimators against the traced truth, over a matrix of real models.

Every case is a catalog model at full size, traced by ``vramwise.verify`` (FakeTensorMode: no weights, no
GPU) and estimated without the CUDA context and allocator reserve, which a CPU trace cannot see. Peers run
offline on the same configs: ``llm-analysis`` (PyPI, ``pip install --no-deps llm-analysis fire``: its pins
would downgrade transformers) and ``accelerate estimate-memory`` (its own functions on the same meta model).
Each peer answers only the cases it can express; the others are "n/a".

    python bench/accuracy.py                 # the whole matrix (about 10 minutes on 2 CPU cores)
    python bench/accuracy.py --only llama    # cases whose id contains "llama"
    python bench/accuracy.py --device cuda   # on a GPU machine: real runs, plus the allocator's figures

Writes bench/results/accuracy-<env>.md and .json (env: cpu-trace, or cuda when a GPU runs the cases for real).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import peers

from vramwise.catalog import models
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import catalog_spec, resolve_model_with_config
from vramwise.spec.model import ModelSpec
from vramwise.verify.trace import InferRecipe, trace_inference, trace_training
from vramwise.verify.twin import train_recipe
from vramwise.workload import InferSetup, TrainSetup

RESULTS = Path(__file__).resolve().parent / "results"
NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}


@dataclass(frozen=True)
class Case:
    id: str
    model: str
    train: TrainSetup | None = None
    infer: InferSetup | None = None
    note: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()  # config keys changed for both the estimate and the trace


# CPU kernels differ from CUDA's for dropout: SDPA with attention dropout leaves the flash kernel for the math
# path (s² probabilities), and dropout masks are kept in the input dtype instead of CUDA's 1-byte bool.
NO_DROPOUT_GPT2 = (("attn_pdrop", 0.0), ("resid_pdrop", 0.0), ("embd_pdrop", 0.0))
NO_DROPOUT_OPT = (("dropout", 0.0), ("attention_dropout", 0.0))
DROPOUT_NOTE = "dropout off: the CPU kernels keep what CUDA's do not"


def _t(model: str, tag: str, note: str = "", overrides: tuple[tuple[str, Any], ...] = (), **kw: Any) -> Case:
    train = TrainSetup.from_flat(**{**NO_OVERHEAD, "nccl_buffers": False, **kw})  # a CPU trace has no NCCL
    return Case(id=f"{model}/{tag}", model=model, train=train, note=note, overrides=overrides)


def _i(model: str, tag: str, **kw: Any) -> Case:
    return Case(id=f"{model}/{tag}", model=model, infer=InferSetup.from_flat(**{**NO_OVERHEAD, "kv_block": 1, **kw}))


def _spec_and_config(case: Case) -> tuple[ModelSpec, dict[str, Any]]:
    config = {**(resolve_model_with_config(case.model).raw_config or {}), **dict(case.overrides)}
    config.pop("quantization_config", None)  # the twin runs the architecture in the recipe's dtype
    return spec_from_config(config, name=case.model, source=f"catalog:{case.model}"), config


QV = ("q_proj", "v_proj")
ALL = ("all-linear",)
CASES: list[Case] = [
    # Llama-2-7B: every recipe and optimizer the trace can run
    _t("llama-2-7b", "bf16-mixed-adamw-s2048", seq=2048),
    _t("llama-2-7b", "bf16-adamw-foreach-s2048", precision="bf16", seq=2048),
    _t("llama-2-7b", "amp-adamw-s1024", precision="amp", seq=1024),
    _t("llama-2-7b", "fp32-sgd-s512", precision="fp32", optimizer="sgd", seq=512),
    _t("llama-2-7b", "fp16-mixed-momentum-s2048", precision="fp16-mixed", optimizer="sgd-momentum", seq=2048),
    _t("llama-2-7b", "bf16-recompute-b2-s4096", precision="bf16", recompute="full", batch=2, seq=4096),
    _t("llama-2-7b", "lora-qv-s2048", peft="lora", lora_targets=QV, seq=2048),
    _t("llama-2-7b", "lora-all-recompute-s4096", peft="lora", lora_targets=ALL, recompute="full", seq=4096),
    _t("llama-2-7b", "eager-s1024", precision="bf16", attention="eager", seq=1024),
    _t("llama-2-7b", "freeze16-s2048", precision="bf16", freeze_layers=16, seq=2048),
    _t("llama-2-7b", "adam-forloop-s2048", precision="bf16", optimizer="adam", optimizer_impl="for-loop", seq=2048),
    # Llama-3: 128k vocabulary, where the loss dominates
    _t("llama-3-8b", "bf16-mixed-s4096", seq=4096),
    _t("llama-3-8b", "lora-all-recompute-s8192", peft="lora", lora_targets=ALL, recompute="full", seq=8192),
    _t("llama-3-8b", "bf16-b2-s2048", precision="bf16", batch=2, seq=2048),
    _t("llama-3.2-1b", "bf16-mixed-b4-s2048", batch=4, seq=2048),
    # Mistral, Qwen, Gemma, Phi
    _t("mistral-7b", "bf16-mixed-s4096", seq=4096),
    _t("mistral-7b", "lora-qv-s2048", peft="lora", lora_targets=QV, seq=2048),
    _t("qwen2-7b", "bf16-mixed-s2048", seq=2048),
    _t("qwen2-7b", "lora-all-recompute-s4096", peft="lora", lora_targets=ALL, recompute="full", seq=4096),
    _t("qwen2.5-0.5b", "fp32-adamw-b8-s1024", precision="fp32", batch=8, seq=1024),
    _t("qwen3-8b", "bf16-mixed-s2048", seq=2048),
    _t("gemma-7b", "bf16-mixed-s2048", seq=2048),
    _t("gemma-7b", "lora-all-recompute-s4096", peft="lora", lora_targets=ALL, recompute="full", seq=4096),
    _t("gemma-2-2b", "bf16-eager-s2048", precision="bf16", attention="eager", seq=2048, note="gemma2: eager or flash"),
    _t("phi-3-mini", "bf16-s2048", precision="bf16", seq=2048),
    _t("phi-3-mini", "lora-qkv-s4096", peft="lora", lora_targets=("qkv_proj", "o_proj"), seq=4096),
    _t("phi-2", "bf16-mixed-s2048", seq=2048),
    # GPT-2 family and other classics (GPT-2's dropout 0.1: the CPU kernel keeps wider masks than CUDA's)
    _t("gpt2-xl", "fp32-adamw-b4-s1024", DROPOUT_NOTE, NO_DROPOUT_GPT2, precision="fp32", batch=4, seq=1024),
    _t("gpt2", "bf16-mixed-b8-s1024", DROPOUT_NOTE, NO_DROPOUT_GPT2, batch=8, seq=1024),
    _t("pythia-160m", "fp32-b8-s2048", precision="fp32", batch=8, seq=2048),
    _t("opt-1.3b", "bf16-mixed-b4-s2048", DROPOUT_NOTE, NO_DROPOUT_OPT, batch=4, seq=2048),
    _t("opt-1.3b", "bf16-mixed-dropout-b4-s2048", "dropout on (CPU masks are wider than CUDA's)", batch=4, seq=2048),
    _t("llama-2-7b", "bf16-fsdp8-s2048", precision="bf16", dp=8, fsdp="full", seq=2048),
    _t("llama-3-8b", "fp32-fsdp4-s1024", precision="fp32", dp=4, fsdp="full", seq=1024),
    # Mixture of experts (traced in bf16: transformers' grouped_mm path)
    _t("mixtral-8x7b", "bf16-lora-qv-s2048", precision="bf16", peft="lora", lora_targets=QV, seq=2048),
    _t("mixtral-8x7b", "bf16-adamw-s2048", precision="bf16", seq=2048),
    _t("qwen3-30b-a3b", "bf16-lora-qv-s2048", precision="bf16", peft="lora", lora_targets=QV, seq=2048),
    _t("qwen1.5-moe-a2.7b", "bf16-adamw-s2048", precision="bf16", seq=2048),
    _t("deepseek-v2-lite", "bf16-eager-s2048", precision="bf16", attention="eager", seq=2048, note="MLA: eager"),
    _t(
        "gpt-oss-20b",
        "bf16-lora-eager-s2048",
        precision="bf16",
        attention="eager",
        peft="lora",
        lora_targets=QV,
        seq=2048,
    ),
    # Inference: prefill + decode with the KV cache
    _i("llama-3-8b", "infer-b1-s8192-n16", batch=1, context=8192, new_tokens=16),
    _i("llama-2-7b", "infer-all-logits-s4096", batch=1, context=4096, all_logits=True),
    _i("mistral-7b", "infer-b4-s4096-n8", batch=4, context=4096, new_tokens=8),
    _i("qwen2-7b", "infer-b8-s2048-n8", batch=8, context=2048, new_tokens=8),
    _i("mixtral-8x7b", "infer-b2-s4096-n8", batch=2, context=4096, new_tokens=8),
    _i("gemma-7b", "infer-b1-s8192-n8", batch=1, context=8192, new_tokens=8),
    _i("gpt2", "infer-b8-s1008-n16", batch=8, context=1008, new_tokens=16),
    _i("phi-3-mini", "infer-b1-s4096-n32", batch=1, context=4096, new_tokens=32),
]


@dataclass
class Result:
    case: Case
    measured: int = 0
    estimate: int = 0
    exact: dict[str, tuple[int, int]] = field(default_factory=dict)  # states: (estimate, measured)
    peers: dict[str, int | None] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
    cuda: dict[str, int] = field(default_factory=dict)

    @property
    def peak_error(self) -> float | None:
        return self.estimate / self.measured - 1 if self.measured else None


DEVICE = "cpu"  # --device cuda runs every case for real on the GPU (random weights)


def _run_train(spec: ModelSpec, config: dict[str, Any], setup: TrainSetup, res: Result) -> None:
    recipe = train_recipe(setup)
    trace = trace_training(config, recipe, device=DEVICE if not recipe.fsdp else "cpu")
    res.cuda = trace.cuda
    est = estimate_training(spec, setup)
    res.measured, res.estimate = trace.peak, est.peak_bytes
    named = {t.name: t.bytes for t in est.persistent + tuple(t for p in est.phases for t in p.transient)}
    weights = sum(t.bytes for t in est.persistent if t.name.startswith("weights/"))
    res.exact = {
        "weights": (weights, trace.params),
        "gradients": (named.get("gradients", 0), trace.grads),
        "optimizer_states": (named.get("optimizer/states", 0), trace.optimizer_states),
        "master_weights": (named.get("optimizer/master_weights", 0), trace.master_weights),
    }


def _run_infer(spec: ModelSpec, config: dict[str, Any], setup: InferSetup, res: Result) -> None:
    recipe = InferRecipe(
        batch=setup.batch, context=setup.context, new_tokens=setup.new_tokens, all_logits=setup.all_logits
    )
    trace = trace_inference(config, recipe, device=DEVICE)
    res.cuda = trace.cuda
    est = estimate_inference(spec, replace(setup, weight_format="bf16"))
    res.measured, res.estimate = trace.peak, est.peak_bytes
    weights = sum(t.bytes for t in est.persistent if t.name.startswith("weights/"))
    res.exact = {"weights": (weights, trace.params)}


def _llm_analysis(spec: ModelSpec, case: Case) -> int | None:
    """llm-analysis (Li et al.) with its A100-80GB config; it models mixed precision with Adam only."""
    setup = case.train or case.infer
    assert setup is not None
    llm = peers.llm_analysis(spec, setup.seq if case.train else setup.context)  # type: ignore[union-attr]
    if llm is None:
        return None
    import llm_analysis.analysis as la

    try:
        if case.train:
            s = case.train
            if (
                s.peft.adapters
                or s.gpus > 1
                or s.precision.recipe not in ("bf16-mixed", "fp16-mixed")
                or s.optimizer.name not in ("adam", "adamw")
            ):
                return None  # llm-analysis has no LoRA, fp32, pure-bf16 or non-Adam recipes
            recompute = la.ActivationRecomputation.FULL if s.recompute == "full" else la.ActivationRecomputation.NONE
            out = llm.training(
                batch_size_per_gpu=s.batch,
                seq_len=s.seq,
                gradient_accumulation_steps=1,
                activation_recomputation=recompute,
                flash_attn=s.attention != "eager",
                mlp_gated_linear_units=spec.mlp.gated,
            )
            return int(out["(weight+op_state+grad+act)_memory_per_gpu"])
        s2 = case.infer
        assert s2 is not None
        out = llm.inference(
            batch_size_per_gpu=s2.batch, seq_len=s2.context, num_tokens_to_generate=max(1, s2.new_tokens)
        )
        keys = ("weight_memory_per_gpu", "kv_cache_memory_per_gpu", "prefill_activation_memory_per_gpu")
        return int(sum(out.get(k, 0) for k in keys))
    except (AssertionError, ValueError, KeyError, ZeroDivisionError):
        return None


def _accelerate(config: dict[str, Any], case: Case) -> int | None:
    """accelerate estimate-memory: its size of the empty model and its training rule (the max of its terms)."""
    try:
        import torch
        import transformers
        from accelerate.commands.estimate import estimate_training_usage
        from accelerate.utils import calculate_maximum_sizes
    except ImportError:
        return None
    data = {k: v for k, v in config.items() if k not in ("quantization_config", "auto_map")}
    hf = transformers.AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf)
    total, _ = calculate_maximum_sizes(model)  # fp32 bytes
    if case.infer:
        return total // 2  # bf16 weights: accelerate reports the model size only
    s = case.train
    assert s is not None
    if s.peft.adapters or s.gpus > 1:
        return None  # accelerate estimates full training on one GPU only
    dtype = "float32" if s.precision.recipe == "fp32" else "bfloat16"
    return max(estimate_training_usage(total, dtype).values())  # what `accelerate estimate-memory` prints


def run(cases: list[Case]) -> list[Result]:
    results = []
    for case in cases:
        res = Result(case=case)
        start = time.perf_counter()
        try:
            spec, config = _spec_and_config(case)
            if case.train:
                _run_train(spec, config, case.train, res)
            else:
                assert case.infer is not None
                _run_infer(spec, config, case.infer, res)
            res.peers = {"llm-analysis": _llm_analysis(spec, case), "accelerate": _accelerate(config, case)}
        except Exception as err:
            res.error = f"{type(err).__name__}: {str(err)[:160]}"
        res.seconds = time.perf_counter() - start
        err = "" if res.peak_error is None else f"{res.peak_error:+.2%}"
        gib = res.measured / 2**30
        print(f"{case.id:<48} measured {gib:8.2f} GiB  vramwise {err:>8}  {res.seconds:5.1f}s {res.error}")
        sys.stdout.flush()
        results.append(res)
    return results


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def _environment() -> dict[str, str]:
    import peft
    import torch
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "machine": platform.machine(),
        "semantics": "fake CPU tensors, 512-byte rounding, CPU SDPA (flash) kernels, CPU autocast",
    }
    try:
        from importlib.metadata import version

        import llm_analysis  # noqa: F401

        env["llm-analysis"] = version("llm-analysis")
    except ImportError:
        env["llm-analysis"] = "not installed"
    from importlib.metadata import version

    env["accelerate"] = version("accelerate")
    return env


def summarize(results: list[Result]) -> dict[str, Any]:
    ok = [r for r in results if r.peak_error is not None]
    errors = [abs(r.peak_error) for r in ok if r.peak_error is not None]
    exact = all(e == m for r in ok for name, (e, m) in r.exact.items())
    peers: dict[str, Any] = {}
    for peer in ("llm-analysis", "accelerate"):
        errs = [abs(r.peers[peer] / r.measured - 1) for r in ok if r.peers.get(peer)]
        peers[peer] = {
            "cases": len(errs),
            "median_abs_error": statistics.median(errs) if errs else None,
            "worst_abs_error": max(errs) if errs else None,
        }
    return {
        "cases": len(results),
        "traced": len(ok),
        "failed": [r.case.id for r in results if r.error],
        "architectures": len({catalog_spec(r.case.model).model_type for r in ok}),
        "median_abs_peak_error": statistics.median(errors) if errors else None,
        "worst_abs_peak_error": max(errors) if errors else None,
        "states_exact": exact,
        "peers": peers,
    }


def write(results: list[Result], env_name: str) -> tuple[Path, Path]:
    RESULTS.mkdir(exist_ok=True)
    env = _environment()
    summary = summarize(results)
    rows = []
    for r in results:
        rows.append(
            {
                "id": r.case.id,
                "model": r.case.model,
                "model_type": catalog_spec(r.case.model).model_type,
                "kind": "training" if r.case.train else "inference",
                "setup": {k: v for k, v in (r.case.train or r.case.infer).to_flat().items() if k not in NO_OVERHEAD},  # type: ignore[union-attr]
                "measured_peak": r.measured,
                "vramwise_peak": r.estimate,
                "vramwise_error": r.peak_error,
                "exact": {k: {"estimate": e, "measured": m} for k, (e, m) in r.exact.items()},
                "peers": {
                    k: {"peak": v, "error": (v / r.measured - 1) if v and r.measured else None}
                    for k, v in r.peers.items()
                },
                "seconds": round(r.seconds, 2),
                "error": r.error,
                "note": r.case.note,
                "overrides": dict(r.case.overrides),
                "cuda": r.cuda or None,
            }
        )
    js = RESULTS / f"accuracy-{env_name}.json"
    js.write_text(json.dumps({"environment": env, "summary": summary, "cases": rows}, indent=2))
    lines = [
        f"# Accuracy: vramwise and peers against the traced peak ({env_name})",
        "",
        "Generated by `python bench/accuracy.py`; do not edit by hand. Peaks in GiB (2^30 bytes), per GPU, without",
        "the CUDA context and allocator reserve (a CPU trace cannot see them). Error = estimate / measured - 1.",
        "Peers answer only what they can express (n/a otherwise): llm-analysis models mixed-precision Adam without",
        "LoRA; accelerate's estimate-memory reports the model size for inference and the largest of its training",
        "terms for full training.",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
        "",
        f"Summary: {summary['traced']} of {summary['cases']} cases traced over {summary['architectures']} "
        f"architectures; vramwise median |error| {_pct(summary['median_abs_peak_error'])}, worst "
        f"{_pct(summary['worst_abs_peak_error'])}; parameters, gradients, master weights and optimizer states "
        f"{'equal to the byte in every case' if summary['states_exact'] else 'NOT all exact'}.",
    ]
    for peer, s in summary["peers"].items():
        median, worst = _pct(s["median_abs_error"]), _pct(s["worst_abs_error"])
        lines.append(f"{peer}: {s['cases']} cases, median |error| {median}, worst {worst}.")
    lines += [
        "",
        "| case | measured GiB | vramwise | llm-analysis | accelerate | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peer = [
            _pct(r["peers"][p]["error"]) if r["peers"].get(p, {}).get("peak") else "n/a"
            for p in ("llm-analysis", "accelerate")
        ]
        meas = f"{r['measured_peak'] / 2**30:.2f}" if r["measured_peak"] else r["error"]
        lines.append(f"| {r['id']} | {meas} | {_pct(r['vramwise_error'])} | {peer[0]} | {peer[1]} | {r['seconds']} |")
    md = RESULTS / f"accuracy-{env_name}.md"
    md.write_text("\n".join(lines) + "\n")
    return md, js


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the cases whose id contains this text")
    parser.add_argument("--env", help="name of the results file (default cpu-trace, or cuda with --device cuda)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: run for real on the GPU")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    args.env = args.env or ("cuda" if args.device == "cuda" else "cpu-trace")
    cases = [c for c in CASES if not args.only or args.only in c.id]
    missing = [c.model for c in cases if c.model not in models()]
    if missing:
        print(f"unknown catalog models: {missing}", file=sys.stderr)
        return 2
    results = run(cases)
    md, js = write(results, args.env)
    s = summarize(results)
    print(f"median |error| {_pct(s['median_abs_peak_error'])}, worst {_pct(s['worst_abs_peak_error'])}: {md}, {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

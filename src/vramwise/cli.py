"""Command line: parses arguments, calls the estimators, renders. No arithmetic here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from vramwise.catalog import get_gpu, gpus, models
from vramwise.errors import InvalidWorkloadError, VramwiseError
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.serving import serving_capacity
from vramwise.estimate.term import Estimate
from vramwise.estimate.textbook import textbook_inference
from vramwise.formats import FORMATS
from vramwise.report.json_out import render_json, to_dict
from vramwise.report.table import render_table
from vramwise.report.verdict import verdict
from vramwise.spec.load import BareModel, catalog_spec, resolve_model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import active_params, total_params
from vramwise.units import fmt
from vramwise.workload import (
    ATTENTION_IMPLS,
    FSDP_MODES,
    KV_DTYPES,
    OFFLOAD,
    OPTIMIZER_IMPLS,
    OPTIMIZERS,
    PRECISIONS,
    RECOMPUTE,
    InferSetup,
    TrainSetup,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vramwise: error: {message} (see '{self.prog} --help')\n")


def _fail(message: str) -> int:
    print(f"vramwise: error: {message}", file=sys.stderr)
    return 2


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the estimate as JSON (schema vramwise/estimate v1)")
    p.add_argument("--explain", action="store_true", help="show each term's formula and source")
    p.add_argument("--units", choices=("gib", "gb"), default="gib", help="GiB = 2^30 bytes (default) or GB = 10^9")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vramwise", description="GPU memory for transformers, per GPU, per term, with formulas.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    infer = sub.add_parser("infer", help="memory to serve or generate with a model")
    infer.add_argument("model", help="catalog name (see `vramwise models`), path to a config.json, or a size like 14b")
    infer.add_argument("-b", "--batch", type=int, default=1, help="sequences in the batch (default 1)")
    infer.add_argument("-s", "--context", type=int, default=2048, help="prompt tokens per sequence (default 2048)")
    infer.add_argument("-n", "--new-tokens", type=int, default=0, help="generated tokens per sequence (default 0)")
    infer.add_argument("-f", "--format", dest="weight_format", help="weight format (see `vramwise formats`)")
    infer.add_argument("--kv-dtype", default="auto", help=f"KV cache dtype: {', '.join(KV_DTYPES)}")
    infer.add_argument("--attention", default="sdpa", help=f"attention implementation: {', '.join(ATTENTION_IMPLS)}")
    infer.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs (default 1)")
    infer.add_argument("--kv-block", type=int, default=16, help="paged KV block in tokens (default 16; 1 = contiguous)")
    infer.add_argument("--prefill-chunk", type=int, help="tokens per prefill forward (chunked prefill)")
    infer.add_argument("--all-logits", action="store_true", help="logits for every position (plain forward)")
    infer.add_argument("--gpu", help="GPU to check the fit against (see `vramwise gpus`)")
    infer.add_argument("--serve", action="store_true", help="serving capacity on --gpu (vLLM's budget rule)")
    infer.add_argument("--gpu-util", type=float, default=0.9, help="fraction of the GPU for --serve (default 0.9)")
    infer.add_argument("--max-batched-tokens", type=int, help="vLLM profiling tokens for --serve (default 8192)")
    infer.add_argument("--cuda-context", type=int, help="CUDA context and workspaces in MiB (default 512)")
    infer.add_argument("--allocator-fraction", type=float, help="allocator reserve as a fraction (default 0.03)")
    infer.add_argument("--mode", default="accurate", help="accurate (default) or textbook (the seeds' formulas)")
    _add_output(infer)

    _add_train(sub)
    _add_verify(sub)
    _add_fit(sub)
    _add_plot(sub)

    lst = sub.add_parser("models", help="list the built-in model catalog")
    lst.add_argument("--json", action="store_true")
    sub.add_parser("gpus", help="list the built-in GPU catalog")
    sub.add_parser("formats", help="list weight storage formats")
    return parser


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="memory to train or fine-tune a model, per GPU")
    t.add_argument("model", help="catalog name (see `vramwise models`), path to a config.json, or a size like 7b")
    _add_train_args(t)
    t.add_argument("--per-stage", action="store_true", help="show every pipeline stage, not only the worst")
    t.add_argument("--gpu", help="GPU to check the fit against (see `vramwise gpus`)")
    t.add_argument("--mode", default="accurate", help="accurate (default) or textbook (the seeds' formulas)")
    t.add_argument("--seed", default="002", help="textbook mode: seed 000 (one GPU, LoRA) or 002 (ZeRO, TP, PP)")
    t.add_argument("--lora-fraction", type=float, default=0.02, help="textbook seed 000: LoRA share of Φ")
    _add_output(t)


def _add_fit(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fit", help="what fits a GPU: largest batch or context, fewest GPUs, best format, layouts")
    f.add_argument("model", help="catalog name (see `vramwise models`) or path to a config.json")
    f.add_argument("--gpu", required=True, help="the GPU whose memory is the budget (see `vramwise gpus`)")
    _add_train_args(f)
    _add_infer_args(f)
    what = f.add_mutually_exclusive_group(required=True)
    what.add_argument("--max", choices=("batch", "seq"), help="the largest micro-batch or sequence/context that fits")
    what.add_argument("--min-gpus", action="store_true", help="training: fewest ZeRO-3 (or --fsdp) GPUs that fit")
    what.add_argument("--best-format", action="store_true", help="inference: the most faithful format that fits")
    what.add_argument("--layouts", type=int, metavar="GPUS", help="training: parallel layouts of GPUS GPUs, ranked")
    f.add_argument("--top", type=int, default=10, help="--layouts: how many to show (default 10)")
    f.add_argument("--max-batch", type=int, help="--layouts: try every micro-batch from 1 to this (default --batch)")
    f.add_argument("--units", choices=("gib", "gb"), default="gib", help="GiB = 2^30 bytes (default) or GB = 10^9")


def _fit(args: argparse.Namespace) -> int:
    from vramwise.fit.layouts import search_layouts
    from vramwise.fit.solve import DoesNotFitError, best_format, max_infer, max_train, min_gpus
    from vramwise.report.fit_out import render_answer, render_formats, render_layouts

    model = resolve_model(args.model)
    if not isinstance(model, ModelSpec):
        raise InvalidWorkloadError("fit needs the architecture: name a catalog model or a config.json")
    gpu = get_gpu(args.gpu)
    budget = gpu.memory_bytes
    infer = _infer_setup(args) if args.infer else None
    unit = args.units
    if args.best_format:
        if infer is None:
            raise InvalidWorkloadError("--best-format is an inference question: add --infer")
        answer, rows = best_format(model, infer, budget, gpu.memory_bytes)
        print(render_answer(answer, gpu, unit))
        print(render_formats(rows, unit))
        return 0
    if args.layouts is not None:
        if infer is not None:
            raise InvalidWorkloadError("--layouts ranks training layouts: drop --infer")
        if args.layouts < 1:
            raise InvalidWorkloadError(f"layouts must be a positive GPU count, got {args.layouts}")
        setup = _train_setup(args)
        top = args.max_batch or setup.batch
        if top < 1:
            raise InvalidWorkloadError(f"max_batch must be a positive integer, got {top}")
        batches = tuple(range(1, top + 1)) if args.max_batch else (setup.batch,)
        found = search_layouts(model, setup, args.layouts, budget, batches=batches)
        if not found.fitting:
            best = min(found.rejected, key=lambda r: r.smallest_peak, default=None)
            fewest = _smallest_that_fits(model, setup, budget)
            floor = f"the smallest peak is {fmt(best.smallest_peak, unit)} ({best.reason[5:]})" if best else ""
            raise DoesNotFitError(f"no layout of {args.layouts} x {gpu.name} fits: {floor}; {fewest}")
        print(render_layouts(found.fitting, found.rejected, gpu, args.layouts, args.top, unit))
        print(f"({found.candidates:,} layouts considered from {found.estimates:,} estimates)")
        return 0
    if args.min_gpus:
        if infer is not None:
            raise InvalidWorkloadError("--min-gpus is a training question: drop --infer")
        print(render_answer(min_gpus(model, _train_setup(args), budget), gpu, unit))
        return 0
    try:
        if infer is not None:
            field = "context" if args.max == "seq" else "batch"
            print(render_answer(max_infer(model, infer, budget, field), gpu, unit))
        else:
            print(render_answer(max_train(model, _train_setup(args), budget, args.max), gpu, unit))
    except DoesNotFitError as err:
        hint = (
            _smallest_format(model, infer, budget) if infer else _smallest_that_fits(model, _train_setup(args), budget)
        )
        raise DoesNotFitError(f"{err}; {hint}") from None
    return 0


def _smallest_that_fits(model: ModelSpec, setup: TrainSetup, budget: int) -> str:
    """The fewest ZeRO-3 GPUs with full recompute and micro-batch 1: a setup that fits, or why none does."""
    from vramwise.fit.solve import DoesNotFitError, min_gpus

    try:
        answer = min_gpus(model, setup.with_flat(batch=1, recompute="full"), budget)
    except DoesNotFitError:
        return "no data-parallel count fits either, even with full recompute and micro-batch 1"
    return f"smallest that fits: --batch 1 --recompute full --dp {answer.value} --zero 3"


def _smallest_format(model: ModelSpec, setup: InferSetup, budget: int) -> str:
    from dataclasses import replace

    from vramwise.fit.solve import DoesNotFitError, best_format

    try:
        answer, _ = best_format(model, replace(setup, batch=1), budget, budget)
    except DoesNotFitError as err:
        return str(err)
    return f"smallest that fits: batch 1 with --format {answer.value}"


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="chart memory against sequence length or batch (needs the plot extra)")
    p.add_argument("model", help="catalog name (see `vramwise models`) or path to a config.json")
    _add_train_args(p)
    _add_infer_args(p)
    p.add_argument("--vs", choices=("seq", "batch"), default="seq", help="the x axis (default seq)")
    p.add_argument("--points", default="", help="comma-separated x values (default: powers of two)")
    p.add_argument("--gpu", help="draw this GPU's capacity line")
    p.add_argument("-o", "--output", default="vramwise.png", help="output file, .png or .svg (default vramwise.png)")


def _plot(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from vramwise.report.plot import plot_sweep

    model = resolve_model(args.model)
    if not isinstance(model, ModelSpec):
        raise InvalidWorkloadError("plot needs the architecture: name a catalog model or a config.json")
    try:
        xs = [int(x) for x in args.points.split(",") if x.strip()]
    except ValueError:
        raise InvalidWorkloadError(f"points must be comma-separated integers, got '{args.points}'") from None
    if not xs:
        xs = [512 * 2**k for k in range(7)] if args.vs == "seq" else [2**k for k in range(7)]
    if any(x <= 0 for x in xs):
        raise InvalidWorkloadError(f"points must be positive, got {xs}")
    gpu = get_gpu(args.gpu) if args.gpu else None
    if args.infer:
        base = _infer_setup(args)
        field = "context" if args.vs == "seq" else "batch"
        estimate_inference(model, base)  # bad input fails here, in one line, before any drawing

        def at(x: int) -> Estimate:
            return estimate_inference(model, replace(base, **{field: x}))

    else:
        from vramwise.estimate.train.training import estimate_stages, estimate_training

        train = _train_setup(args)
        estimate_stages(model, train)

        def at(x: int) -> Estimate:
            return estimate_training(model, train.with_flat(**{args.vs: x}))

    kind = "inference" if args.infer else "training"
    out = plot_sweep(
        xs,
        at,
        xlabel="sequence length (tokens)" if args.vs == "seq" else "batch (sequences)",
        title=f"{model.name}: {kind} memory per GPU vs {args.vs}",
        capacity=gpu.memory_bytes if gpu else None,
        capacity_label=gpu.label if gpu else "",
        out=Path(args.output),
    )
    print(f"wrote {out}")
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("verify", help="trace the real transformers model and compare with the estimate")
    v.add_argument("model", help="catalog name (see `vramwise models`) or path to a config.json")
    _add_train_args(v)
    _add_infer_args(v, formats="fp32, fp16 or bf16 (default bf16)")
    v.add_argument("--layers", type=int, help="trace N and N+1 layers and extrapolate (fast for 70B)")
    v.add_argument("--json", action="store_true", help="print the comparison as JSON (schema vramwise/verify v1)")
    v.add_argument("--units", choices=("gib", "gb"), default="gib", help="GiB = 2^30 bytes (default) or GB = 10^9")


def _add_train_args(t: argparse.ArgumentParser) -> None:
    t.add_argument("-b", "--batch", type=int, default=1, help="micro-batch per data-parallel GPU (default 1)")
    t.add_argument("-s", "--seq", type=int, default=2048, help="tokens per sequence (default 2048)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (pipeline micro-batches)")
    t.add_argument("--precision", default="bf16-mixed", help=f"{', '.join(PRECISIONS)} (default bf16-mixed)")
    t.add_argument("--grad-dtype", default="auto", help="mixed recipes: auto/half (DeepSpeed) or fp32 (Megatron)")
    t.add_argument("--optimizer", default="adamw", help=f"{', '.join(OPTIMIZERS)} (default adamw)")
    t.add_argument("--optimizer-impl", default="auto", help=f"{', '.join(OPTIMIZER_IMPLS)} (auto: fused for *-mixed)")
    t.add_argument("--peft", default="none", help="none, lora or qlora (default none: full fine-tuning)")
    t.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    t.add_argument("--lora-targets", help="comma-separated peft module names or all-linear (default: peft's)")
    t.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout (default 0)")
    t.add_argument("--freeze-layers", type=int, default=0, help="freeze the embeddings and the first N layers")
    t.add_argument("--recompute", default="none", help=f"activation recompute: {', '.join(RECOMPUTE)}")
    t.add_argument("--attention", default="sdpa", help=f"attention implementation: {', '.join(ATTENTION_IMPLS)}")
    t.add_argument("--loss", default="full", help="full cross entropy, or chunked (fused linear cross entropy)")
    t.add_argument("--loss-chunk", type=int, default=1024, help="tokens per chunk for --loss chunked")
    t.add_argument("--dp", type=int, default=1, help="data-parallel GPUs (default 1)")
    t.add_argument("--zero", type=int, default=0, help="DeepSpeed ZeRO stage 0-3 (default 0)")
    t.add_argument("--fsdp", default="none", help=f"FSDP sharding: {', '.join(FSDP_MODES)}")
    t.add_argument("--fsdp-shard", type=int, help="GPUs per shard group for --fsdp hybrid (default dp)")
    t.add_argument("--offload", default="none", help=f"offload to host RAM: {', '.join(OFFLOAD)}")
    t.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs (default 1)")
    t.add_argument("--sp", action="store_true", help="sequence parallelism inside the tensor-parallel group")
    t.add_argument("--pp", type=int, default=1, help="pipeline stages (default 1)")
    t.add_argument("--interleave", type=int, default=1, help="virtual pipeline stages per GPU (default 1)")
    t.add_argument("--cp", type=int, default=1, help="context-parallel GPUs (default 1)")
    t.add_argument("--ep", type=int, default=1, help="expert-parallel GPUs (default 1)")
    t.add_argument("--cuda-context", type=int, help="CUDA context and workspaces in MiB (default 512)")
    t.add_argument("--allocator-fraction", type=float, help="allocator reserve as a fraction (default 0.03)")


def _add_infer_args(p: argparse.ArgumentParser, *, formats: str = "weight format") -> None:
    """The inference options of fit, plot and verify, which take --seq as the context."""
    p.add_argument("--infer", action="store_true", help="inference instead of training (--seq is the context)")
    p.add_argument("-n", "--new-tokens", type=int, default=0, help="--infer: generated tokens per sequence")
    p.add_argument("-f", "--format", dest="weight_format", help=f"--infer: {formats}")
    p.add_argument("--all-logits", action="store_true", help="--infer: logits for every position")


def _infer_setup(args: argparse.Namespace) -> InferSetup:
    return InferSetup(
        batch=args.batch,
        context=args.seq,
        new_tokens=args.new_tokens,
        weight_format=args.weight_format,
        attention=args.attention,
        tp=args.tp,
        all_logits=args.all_logits,
        cuda_context_mib=args.cuda_context,
        allocator_fraction=args.allocator_fraction,
    )


def _train_setup(args: argparse.Namespace) -> TrainSetup:
    targets = tuple(x.strip() for x in args.lora_targets.split(",") if x.strip()) if args.lora_targets else ()
    return TrainSetup.from_flat(
        batch=args.batch,
        seq=args.seq,
        grad_accum=args.grad_accum,
        precision=args.precision,
        grad_dtype=args.grad_dtype,
        optimizer=args.optimizer,
        optimizer_impl=args.optimizer_impl,
        peft=args.peft,
        lora_r=args.lora_r,
        lora_targets=targets,
        lora_dropout=args.lora_dropout,
        freeze_layers=args.freeze_layers,
        recompute=args.recompute,
        attention=args.attention,
        loss=args.loss,
        loss_chunk=args.loss_chunk,
        dp=args.dp,
        zero=args.zero,
        fsdp=args.fsdp,
        fsdp_shard=args.fsdp_shard,
        offload=args.offload,
        tp=args.tp,
        sp=args.sp,
        pp=args.pp,
        interleave=args.interleave,
        cp=args.cp,
        ep=args.ep,
        cuda_context_mib=args.cuda_context,
        allocator_fraction=args.allocator_fraction,
        mode=getattr(args, "mode", "accurate"),
        seed=getattr(args, "seed", "002"),
        lora_fraction=getattr(args, "lora_fraction", 0.02),
    )


def _train(args: argparse.Namespace) -> int:
    # imported here so that `vramwise infer` never loads the training estimator (a fresh process stays fast)
    from vramwise.estimate.train.textbook import textbook_training
    from vramwise.estimate.train.training import estimate_stages

    model = resolve_model(args.model)
    setup = _train_setup(args)
    gpu = get_gpu(args.gpu) if args.gpu else None
    if setup.mode == "textbook":
        if args.per_stage:
            raise InvalidWorkloadError("--per-stage is accurate mode only: seed 002 gives the first stage's formula")
        estimates = [textbook_training(model, setup)]
    else:
        estimates = estimate_stages(model, setup)
    worst = max(estimates, key=lambda e: e.peak_bytes)
    shown = estimates if args.per_stage else [worst]
    if args.json:
        docs = [
            to_dict(e, kind="training", model=model, setup=setup, verdict=verdict(e, gpu) if gpu else None)
            for e in shown
        ]
        print(render_json({"stages": docs} if args.per_stage else docs[0]))
        return 0
    blocks = []
    for e in shown:
        stage = f", stage {estimates.index(e)} of {setup.parallel.pp}" if setup.parallel.pp > 1 else ""
        title = _train_title(model, setup) + stage
        ver = verdict(e, gpu) if gpu else None
        blocks.append(render_table(e, title=title, unit=args.units, explain=args.explain, verdict=ver))
    print("\n\n".join(blocks))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from vramwise.report.verify_out import comparison_dict, render_comparison
    from vramwise.verify.twin import verify_inference, verify_training

    model = resolve_model(args.model)
    if args.layers is not None and args.layers < 1:
        raise InvalidWorkloadError(f"layers must be a positive integer, got {args.layers}")
    if args.infer:
        setup: InferSetup | TrainSetup = _infer_setup(args)
        comparison = verify_inference(args.model, model, setup)
        title = (
            f"vramwise verify {model.name}: inference, batch {args.batch}, context {args.seq}, new {args.new_tokens}"
        )
    else:
        setup = _train_setup(args)
        comparison = verify_training(args.model, model, setup, layers=args.layers)
        title = "vramwise verify " + _train_title(model, setup).removeprefix("vramwise train ")
    if args.json:
        print(render_json(comparison_dict(comparison, model=model.name, setup=setup)))
    else:
        print(render_comparison(comparison, title=title, unit=args.units))
    return 0


def _train_title(model: ModelSpec | BareModel, setup: TrainSetup) -> str:
    what = _model_label(model)
    par = setup.parallel
    layout = [f"{k}={v}" for k, v in (("dp", par.dp), ("tp", par.tp), ("pp", par.pp), ("cp", par.cp)) if v > 1]
    if par.zero:
        layout.append(f"zero={par.zero}")
    if par.fsdp != "none":
        layout.append(f"fsdp={par.fsdp}")
    peft = f", {setup.peft.method} r={setup.peft.lora_r}" if setup.peft.adapters else ""
    mode = f"textbook mode (seed {setup.textbook.seed})" if setup.mode == "textbook" else "accurate mode"
    return (
        f"vramwise train {what}: micro-batch {setup.batch} x {setup.seq} tokens, {setup.precision.recipe}, "
        f"{setup.optimizer.name}{peft}, recompute {setup.recompute}"
        + (f", per GPU of {' '.join(layout)}" if layout else "")
        + f", {mode}"
    )


def _infer(args: argparse.Namespace) -> int:
    model = resolve_model(args.model)
    setup = InferSetup(
        batch=args.batch,
        context=args.context,
        new_tokens=args.new_tokens,
        weight_format=args.weight_format,
        kv_dtype=args.kv_dtype,
        attention=args.attention,
        tp=args.tp,
        kv_block=args.kv_block,
        prefill_chunk=args.prefill_chunk,
        all_logits=args.all_logits,
        cuda_context_mib=args.cuda_context,
        allocator_fraction=args.allocator_fraction,
        gpu_utilization=args.gpu_util,
        mode=args.mode,
    )
    gpu = get_gpu(args.gpu) if args.gpu else None
    if args.serve and gpu is None:
        raise InvalidWorkloadError("--serve needs --gpu (the GPU whose memory the KV cache fills)")
    if args.serve and setup.mode == "textbook":
        raise InvalidWorkloadError("--serve uses vLLM's budget rule, which is accurate mode only; drop --mode textbook")
    if args.serve and not isinstance(model, ModelSpec):
        raise InvalidWorkloadError("--serve needs the architecture: name a catalog model or a config.json")
    est = textbook_inference(model, setup) if setup.mode == "textbook" else estimate_inference(model, setup)
    ver = verdict(est, gpu) if gpu else None
    cap = serving_capacity(model, setup, gpu.memory_bytes, args.max_batched_tokens) if args.serve and gpu else None
    if args.json:
        print(render_json(to_dict(est, kind="inference", model=model, setup=setup, verdict=ver, capacity=cap)))
        return 0
    print(
        render_table(est, title=_title(model, setup), unit=args.units, explain=args.explain, verdict=ver, capacity=cap)
    )
    return 0


def _model_label(model: ModelSpec | BareModel) -> str:
    if isinstance(model, BareModel):
        return f"{model.name} ({model.params:,} parameters, bare size)"
    return f"{model.name} [{model.model_type}, {total_params(model):,} parameters]"


def _title(model: ModelSpec | BareModel, setup: InferSetup) -> str:
    what = _model_label(model)
    tp = f", per GPU of tp={setup.tp}" if setup.tp > 1 else ""
    return (
        f"vramwise infer {what}: batch {setup.batch}, context {setup.context}, new tokens {setup.new_tokens}"
        f"{tp}, {setup.mode} mode"
    )


def _models(args: argparse.Namespace) -> int:
    rows = []
    for name, entry in models().items():
        spec = catalog_spec(name)
        rows.append((name, spec.model_type, total_params(spec), active_params(spec), entry.hf_id))
    if args.json:
        keys = ("name", "model_type", "params", "active_params", "hf_id")
        print(render_json({"models": [dict(zip(keys, r, strict=True)) for r in rows]}))
        return 0
    print(f"{'name':<20} {'model_type':<12} {'parameters':>17} {'active/token':>17}  hf_id")
    for name, mt, total, active, hf in rows:
        print(f"{name:<20} {mt:<12} {total:>17,} {active:>17,}  {hf}")
    return 0


def _gpus(args: argparse.Namespace) -> int:
    for g in gpus().values():
        note = "" if g.confirmed else "  (nominal, unconfirmed)"
        print(f"{g.name:<12} {g.memory_bytes / 2**30:>8.2f} GiB  {g.label}{note}")
    return 0


def _formats(args: argparse.Namespace) -> int:
    for f in FORMATS.values():
        print(f"{f.name:<10} {f.summary}")
    print("gptq-<b>bit-g<g>, awq-<b>bit-g<g>  GPTQ/AWQ with b bits and group size g (e.g. gptq-4bit-g128)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    handler = {
        "infer": _infer,
        "train": _train,
        "verify": _verify,
        "fit": _fit,
        "plot": _plot,
        "models": _models,
        "gpus": _gpus,
        "formats": _formats,
    }[args.command]
    try:
        return handler(args)
    except VramwiseError as err:
        return _fail(str(err))


if __name__ == "__main__":
    sys.exit(main())

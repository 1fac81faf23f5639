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
from vramwise.estimate.textbook import textbook_inference
from vramwise.formats import FORMATS
from vramwise.report.json_out import render_json, to_dict
from vramwise.report.table import render_table
from vramwise.report.verdict import verdict
from vramwise.spec.load import BareModel, catalog_spec, resolve_model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import active_params, total_params
from vramwise.workload import ATTENTION_IMPLS, KV_DTYPES, InferSetup


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

    lst = sub.add_parser("models", help="list the built-in model catalog")
    lst.add_argument("--json", action="store_true")
    sub.add_parser("gpus", help="list the built-in GPU catalog")
    sub.add_parser("formats", help="list weight storage formats")
    return parser


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


def _title(model: ModelSpec | BareModel, setup: InferSetup) -> str:
    if isinstance(model, BareModel):
        what = f"{model.name} ({model.params:,} parameters, bare size)"
    else:
        what = f"{model.name} [{model.model_type}, {total_params(model):,} parameters]"
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
    handler = {"infer": _infer, "models": _models, "gpus": _gpus, "formats": _formats}[args.command]
    try:
        return handler(args)
    except VramwiseError as err:
        return _fail(str(err))


if __name__ == "__main__":
    sys.exit(main())

"""The application layer called directly, and the option table the CLI is built from.

Oracles: the solvers and estimators called by hand with the same setup (the app must add nothing to their
numbers), the option table itself (every inference option must reach fit, plot and verify), and a pinned
flag list (a new option is added to this test on purpose).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from vramwise.app import (
    FitRequest,
    InferRequest,
    PlotRequest,
    Question,
    TrainRequest,
    VerifyRequest,
    fit,
    infer,
    infer_setup,
    plot_data,
    train,
    train_setup,
)
from vramwise.catalog import get_gpu
from vramwise.cli import main
from vramwise.cli.options import INFER, OPTIONS, TRAIN, WRAPPERS, Group, build_parser, options_of, tokens
from vramwise.errors import InapplicableOptionError, VramwiseError
from vramwise.estimate.inference import estimate_inference
from vramwise.fit.solve import best_format, max_infer, max_train
from vramwise.spec.load import catalog_spec
from vramwise.workload import InferSetup, TrainSetup

SRC = Path(__file__).resolve().parents[2] / "src"


def test_infer_result_carries_estimate_verdict_and_capacity() -> None:
    r = infer(InferRequest(model="qwen2-7b", options={"context": 8192}, gpu="a100-80gb"))
    spec, gpu = catalog_spec("qwen2-7b"), get_gpu("a100-80gb")
    setup = InferSetup.from_flat(context=8192, compute_capability="8.0")  # --gpu's architecture picks the context
    assert r.setup == setup and r.gpu == gpu
    assert r.estimate == estimate_inference(spec, setup)
    assert r.verdict is not None and r.verdict.headroom_bytes == gpu.memory_bytes - r.estimate.peak_bytes
    assert r.capacity is None and r.engine is None


def test_serve_is_the_vllm_plan_and_its_one_verdict() -> None:
    from vramwise.engines.vllm import vllm_plan

    r = infer(InferRequest(model="qwen2-7b", options={"context": 8192}, gpu="a100-80gb", serve=True))
    spec, gpu = catalog_spec("qwen2-7b"), get_gpu("a100-80gb")
    setup = InferSetup.from_flat(context=8192, engine="vllm", compute_capability="8.0")
    assert r.setup == setup and r.engine == vllm_plan(spec, setup, gpu)
    assert r.estimate == r.engine.estimate  # the table's terms are the plan's
    assert r.verdict is not None and r.verdict.fits and r.engine.max_sequences
    same = infer(InferRequest(model="qwen2-7b", options={"context": 8192, "engine": "vllm"}, gpu="a100-80gb"))
    assert same.engine == r.engine


def test_one_builder_per_setup_takes_every_option() -> None:
    values = {"batch": 2, "context": 512, "kv_dtype": "fp8", "kv_block": 1, "prefill_chunk": 256, "gpu_util": 0.8}
    assert infer_setup(values) == InferSetup(
        batch=2, context=512, kv_dtype="fp8", kv_block=1, prefill_chunk=256, gpu_utilization=0.8
    )
    assert infer_setup({"seq": 512}) == InferSetup(context=512)  # --seq: the context's other spelling
    assert infer_setup({"context": None}) == InferSetup()  # None: not given, the dataclass default
    assert train_setup({"lora_targets": "q_proj, v_proj", "peft": "lora", "cuda_context": 300}) == TrainSetup.from_flat(
        peft="lora", lora_targets=("q_proj", "v_proj"), cuda_context_mib=300
    )


def test_fit_answers_equal_the_solvers() -> None:
    spec, budget = catalog_spec("llama-3-8b"), get_gpu("rtx-4090").memory_bytes
    opts = {"peft": "lora", "recompute": "full"}
    r = fit(FitRequest(model="llama-3-8b", gpu="rtx-4090", question=Question.MAX, target="batch", options=opts))
    lora = TrainSetup.from_flat(peft="lora", recompute="full", compute_capability="8.9")  # the 4090's
    assert r.answer == max_train(spec, lora, budget, "batch")
    r = fit(
        FitRequest(
            model="llama-3-8b",
            gpu="rtx-4090",
            question=Question.MAX,
            target="context",
            infer=True,
            options={"kv_dtype": "fp8"},
        )
    )
    fp8 = InferSetup.from_flat(kv_dtype="fp8", compute_capability="8.9")
    exact = max_infer(spec, fp8, budget, "context")
    # fit rounds a context down to a multiple of 256 (app/fit_words.py): the estimate at it, and one step beyond
    assert r.answer is not None and r.answer.value == int(exact.value) // 256 * 256
    assert r.answer.at == estimate_inference(spec, replace(fp8, context=int(r.answer.value)))
    assert r.answer.beyond == estimate_inference(spec, replace(fp8, context=int(r.answer.value) + 256))
    assert r.answer.beyond.peak_bytes > budget >= r.answer.at.peak_bytes
    r = fit(FitRequest(model="llama-3-8b", gpu="rtx-4090", question=Question.BEST_FORMAT, infer=True))
    answer, rows = best_format(spec, InferSetup.from_flat(compute_capability="8.9"), budget)
    assert (r.answer, list(r.formats)) == (answer, rows)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: infer(InferRequest(model="llama-2-7b", options={"gpu_util": 0.5})), "gpu_util"),
        (lambda: infer(InferRequest(model="llama-2-7b", options={"max_num_seqs": 8})), "max_num_seqs"),
        (lambda: train(TrainRequest(model="llama-2-7b", options={"seed": "000"})), "seed"),
        (
            lambda: fit(
                FitRequest(
                    model="llama-2-7b", gpu="l4", question=Question.MAX, target="batch", options={"kv_dtype": "fp8"}
                )
            ),
            "kv_dtype",
        ),
        (
            lambda: fit(
                FitRequest(
                    model="llama-2-7b",
                    gpu="l4",
                    question=Question.MAX,
                    target="batch",
                    infer=True,
                    options={"peft": "lora"},
                )
            ),
            "peft",
        ),
        (lambda: fit(FitRequest(model="llama-2-7b", gpu="l4", question=Question.MAX, target="batch", top=3)), "top"),
        (lambda: fit(FitRequest(model="llama-2-7b", gpu="l4", question=Question.MAX, target="context")), "max"),
        (lambda: fit(FitRequest(model="llama-2-7b", gpu="l4", question=Question.BEST_FORMAT)), "best_format"),
        (lambda: fit(FitRequest(model="llama-2-7b", gpu="l4", question=Question.MIN_GPUS, infer=True)), "min_gpus"),
        (
            lambda: fit(
                FitRequest(
                    model="llama-2-7b", gpu="l4", question=Question.MAX, target="batch", options={"mode": "textbook"}
                )
            ),
            "mode",
        ),
        (lambda: plot_data(PlotRequest(model="llama-2-7b", options={"new_tokens": 4})), "new_tokens"),
        (lambda: verify(VerifyRequest(model="llama-2-7b", infer=True, layers=2)), "layers"),
        (lambda: infer_setup({"seq": 512, "context": 1024}), "seq"),
    ],
)
def test_an_option_that_cannot_apply_is_refused_in_one_line(call, field: str) -> None:
    with pytest.raises(InapplicableOptionError) as err:
        call()
    assert err.value.field == field and "\n" not in str(err.value)


def verify(req: VerifyRequest):  # the refusals come before the twin imports torch
    from vramwise.app import verify as app_verify

    return app_verify(req)


def _sample(option) -> list[str]:
    flag = option.flags_in(WRAPPERS[0])[-1]
    if option.type is None:
        return [flag]
    return [flag, "1" if option.type in (int, tokens) else "0.5" if option.type is float else "x"]


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("wrapped", [INFER, TRAIN])
def test_every_setup_option_of_a_wrapped_command_is_accepted(wrapper: str, wrapped: str) -> None:
    parser = build_parser()
    question = ["--gpu", "l4", "--max", "batch"] if wrapper == "fit" else []
    mode = ["--infer"] if wrapped == INFER else []
    for option in options_of(wrapped):
        if option.group is not Group.SETUP or wrapper not in option.commands:  # plot: no engine flags
            continue
        args = parser.parse_args([wrapper, "llama-2-7b", *question, *mode, *_sample(option)])
        assert getattr(args, option.name) is not None, (wrapper, option.name)


def test_fit_infer_takes_the_kv_options() -> None:
    code = main(
        ["fit", "llama-2-7b", "--gpu", "l4", "--infer", "--kv-dtype", "fp8", "--context", "4096", "--max", "batch"]
    )
    assert code == 0


# SGLang's server arguments and transformers' device_map (engines/sglang.py, engines/hf.py)
_ENGINE_FLAGS = (
    "--mem-fraction-static --chunked-prefill-size --cuda-graph-max-bs --max-running-requests --max-total-tokens "
    "--context-length --page-size --disable-cuda-graph --max-prefill-tokens --sglang-version --device-map "
    "--max-memory --mxfp4-backend --vllm-sampler"
)
# llama.cpp's own flags (--engine llama.cpp), as llama-server spells them
LLAMA_CPP = (
    " -c --ctx-size --batch-size -ub --ubatch-size -ngl --n-gpu-layers --gpu-layers -ctk --cache-type-k"
    " -ctv --cache-type-v -fa --flash-attn -np --parallel -ts --tensor-split -sm --split-mode --no-mmap"
    " -nkvo --no-kv-offload -kvu --kv-unified --swa-full --embeddings --ollama --vllm-version"
)
# issue 14's implementation knobs (training only)
_KNOBS = (
    " --adapter-dtype --double-quant --recompute-every --mlp-impl --norm-impl --activation-offload --compile"
    " --optimizer-in-backward --float8"
)
FROZEN = {
    "infer": "--all-logits --allocator-fraction --attention --batch --context --cuda-context --explain --format "
    "--gpu --gpu-util --image-size --images --json --kv-block --kv-dtype --max-batched-tokens --mode --new-tokens "
    "--prefill-chunk --serve --seq --tp --units -b -f -n -s model --gpu-memory-utilization --block-size --engine "
    "--max-model-len --max-num-seqs --max-num-batched-tokens --enforce-eager --kv-cache-memory-bytes "
    "--kv-cache-memory --pp --kv-cache-dtype --cuda-version --interconnect " + _ENGINE_FLAGS + LLAMA_CPP,
    "train": "--allocator-fraction --attention --batch --cp --cuda-context --dp --ep --explain --freeze-layers "
    "--fsdp --fsdp-shard --gpu --grad-accum --grad-dtype --interleave --json --lora-dropout --lora-fraction "
    "--lora-r --lora-targets --loss --loss-chunk --mode --offload --optimizer --optimizer-impl --peft --per-stage "
    "--pp --precision --recompute --seed --seq --sp --tp --units --zero -b -s model --cuda-version --loading"
    + _KNOBS
    + " --framework"
    + " --interconnect --max-live-params --param-persistence-threshold --max-reuse-distance --nccl-env --overlap-comm"
    + " --from --emit --reduce-bucket --prefetch-bucket"
    + " --expandable-segments --max-split-size-mb --allocator-replay"
    + " --fsdp-outer-units"
    + " --fsdp-over-cp"
    + " --zero-grad",
}
_SETUPS = (
    "--all-logits --allocator-fraction --attention --batch --context --cp --cuda-context --dp --ep --format "
    "--freeze-layers --fsdp --fsdp-shard --gpu-util --grad-accum --grad-dtype --image-size --images --infer "
    "--interleave --kv-block --kv-dtype --lora-dropout --lora-fraction --lora-r --lora-targets --loss "
    "--loss-chunk --mode --new-tokens --offload --optimizer --optimizer-impl --peft --pp --precision "
    "--prefill-chunk --recompute --seed --seq --sp --tp --zero -b -f -n -s model --gpu-memory-utilization "
    "--block-size --engine --max-model-len --max-num-seqs --max-num-batched-tokens --max-batched-tokens "
    "--enforce-eager --kv-cache-memory-bytes --kv-cache-memory --kv-cache-dtype --cuda-version --loading "
    + _ENGINE_FLAGS
    + LLAMA_CPP
    + _KNOBS
    + " --framework"
    + " --interconnect --max-live-params --param-persistence-threshold --max-reuse-distance --nccl-env --overlap-comm"
    + " --expandable-segments --max-split-size-mb --allocator-replay"
    + " --fsdp-outer-units"
    + " --fsdp-over-cp"
)
_SETUPS += " --num-virtual-tokens --decoder-seq"  # peft prompt and prefix tuning; T5's target length
FROZEN["train"] += " --num-virtual-tokens --decoder-seq"
_SETUPS += " --zero-grad"  # what zero_grad() leaves between steps (train's own list has it)
FROZEN["fit"] = _SETUPS + " --best-format --gpu --layouts --max --max-batch --min-gpus --top --units --serve"
FROZEN["infer"] += " --from --emit"  # issue 15: a framework's config in (configs/), a runnable one out
FROZEN["fit"] += " --from --emit --reduce-bucket --prefetch-bucket"
# issue 15: the safety fraction kept free (infer, train, fit) and fit's JSON
FROZEN["infer"] += " --margin"
FROZEN["train"] += " --margin"
FROZEN["fit"] += " --margin --json"
# issue 15: --range, low and high over the estimate's uncertainties, with the longest sequence
FROZEN["infer"] += " --range --max-seq"
FROZEN["train"] += " --range --max-seq"
FROZEN["fit"] += " --range --max-seq"
# issue 14: a plain loop's outputs (the logits) kept until the next forward
FROZEN["train"] += " --keep-logits"
FROZEN["fit"] += " --keep-logits"
_ENGINE_ONLY = (
    "--gpu-util --gpu-memory-utilization --engine --max-model-len --max-num-seqs --max-num-batched-tokens "
    "--max-batched-tokens --enforce-eager --kv-cache-memory-bytes --kv-cache-memory " + _ENGINE_FLAGS + LLAMA_CPP
)
FROZEN["plot"] = " ".join(sorted(set(_SETUPS.split()) - set(_ENGINE_ONLY.split()))) + " --gpu --output --points --vs -o"
FROZEN["plot"] += " --reduce-bucket --prefetch-bucket"
FROZEN["verify"] = _SETUPS + " --gpu --json --layers --log --model --units --from --reduce-bucket --prefetch-bucket"
FROZEN |= {"models": "--json", "gpus": "--json --units", "formats": "--json"}
FROZEN["web"] = "--host --port --open --rate-limit"  # issue 16: `vramwise web`
FROZEN["plot"] += " --keep-logits"  # issue 14: a plain loop's outputs kept until the next forward
FROZEN["verify"] += " --keep-logits"
FROZEN["train"] += " --torch-version"  # issue 14: autograd's saved tensors by PyTorch release
FROZEN["fit"] += " --torch-version"
FROZEN["plot"] += " --torch-version"
FROZEN["verify"] += " --torch-version"
FROZEN["train"] += " --packed"  # issue 14: torchtune's packed dataset (input_pos)
FROZEN["fit"] += " --packed"
FROZEN["plot"] += " --packed"
FROZEN["verify"] += " --packed"
FROZEN["mcp"] = ""  # issue 16: the MCP server over stdio takes no option


def test_cli_options_frozen() -> None:
    """The full flag set of every command; a new option must be added here on purpose."""
    for command, pinned in FROZEN.items():
        flags = {f for o in options_of(command) for f in o.flags_in(command)}
        assert flags == set(pinned.split()), (command, sorted(flags ^ set(pinned.split())))
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)  # one row per option


def test_setup_defaults_are_not_written_in_the_table() -> None:
    assert all(o.default is None for o in OPTIONS if o.group is not Group.OUTPUT)
    shown = {command: _help_text(command) for command in ("infer", "train", "fit")}
    assert f"(default {InferSetup().kv_block}; 1 = contiguous)" in " ".join(shown["infer"].split())
    assert f"(default {TrainSetup().loss_chunk})" in " ".join(shown["train"].split())
    assert not any("{infer." in text or "{train." in text for text in shown.values())  # every default filled


def _help_text(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser(command).parse_args([command, "--help"])
    return out.getvalue()


def test_a_closed_pipe_ends_quietly() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vramwise", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout and proc.stderr
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_app_errors_are_vramwise_errors() -> None:
    with pytest.raises(VramwiseError):
        infer(InferRequest(model="llama-2-7b", serve=True))

"""Solvers: each answer fits and the next step beyond it does not, checked by re-estimating both here."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vramwise.catalog import get_gpu
from vramwise.cli import main
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.train.training import estimate_stages, estimate_training
from vramwise.fit.layouts import search_layouts
from vramwise.fit.solve import FORMATS_BY_QUALITY, DoesNotFitError, best_format, max_infer, max_train, min_gpus
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import catalog_spec
from vramwise.spec.model import ModelSpec
from vramwise.workload import InferSetup, TrainSetup

GPT3 = {"model_type": "gpt2", "n_embd": 12288, "n_layer": 96, "n_head": 96, "vocab_size": 50257, "n_positions": 2048}


@pytest.mark.parametrize(
    ("model", "gpu", "setup", "field"),
    [
        ("llama-3-8b", "rtx-4090", TrainSetup.from_flat(peft="lora", recompute="full"), "batch"),
        ("llama-3-8b", "rtx-4090", TrainSetup.from_flat(peft="lora", recompute="full"), "seq"),
        ("qwen2-7b", "a100-80gb", TrainSetup.from_flat(precision="bf16", recompute="full", seq=4096), "batch"),
        ("mistral-7b", "h100-80gb", TrainSetup.from_flat(dp=8, zero=3, batch=2), "seq"),
        ("llama-2-70b", "h100-80gb", TrainSetup.from_flat(tp=8, pp=4, grad_accum=16, recompute="full"), "batch"),
    ],
)
def test_largest_training_setting_is_the_boundary(model: str, gpu: str, setup: TrainSetup, field: str) -> None:
    spec, budget = catalog_spec(model), get_gpu(gpu).memory_bytes
    answer = max_train(spec, setup, budget, field)
    n = int(answer.value)
    assert estimate_training(spec, setup.with_flat(**{field: n})).peak_bytes <= budget
    assert estimate_training(spec, setup.with_flat(**{field: n + 1})).peak_bytes > budget


@pytest.mark.parametrize(
    ("model", "gpu", "setup", "field"),
    [
        ("llama-3-8b", "a100-80gb", InferSetup(context=4096), "batch"),
        ("llama-3-8b", "rtx-4090", InferSetup(batch=1), "context"),
        ("mixtral-8x7b", "h100-80gb", InferSetup(tp=2, context=8192, weight_format="awq-4bit-g128"), "batch"),
    ],
)
def test_largest_inference_setting_is_the_boundary(model: str, gpu: str, setup: InferSetup, field: str) -> None:
    spec, budget = catalog_spec(model), get_gpu(gpu).memory_bytes
    n = int(max_infer(spec, setup, budget, field).value)
    assert estimate_inference(spec, replace(setup, **{field: n})).peak_bytes <= budget
    assert estimate_inference(spec, replace(setup, **{field: n + 1})).peak_bytes > budget


@pytest.mark.parametrize(("model", "gpu"), [("llama-2-70b", "h100-80gb"), ("llama-3-8b", "rtx-4090")])
def test_fewest_gpus_is_the_boundary(model: str, gpu: str) -> None:
    spec, budget = catalog_spec(model), get_gpu(gpu).memory_bytes
    setup = TrainSetup.from_flat(recompute="full")
    n = int(min_gpus(spec, setup, budget).value)
    assert n > 1
    assert estimate_training(spec, setup.with_flat(dp=n, zero=3)).peak_bytes <= budget
    fewer = setup.with_flat(dp=n - 1, zero=3) if n - 1 > 1 else setup
    assert estimate_training(spec, fewer).peak_bytes > budget


def test_best_format_is_the_first_that_fits_in_quality_order() -> None:
    spec, gpu = catalog_spec("llama-3-70b"), get_gpu("a100-80gb")
    setup = InferSetup(context=8192)
    answer, _rows = best_format(spec, setup, gpu.memory_bytes)
    chosen = FORMATS_BY_QUALITY.index(str(answer.value))
    assert chosen > 0  # 70B does not fit in bf16 on 80 GB
    for name in FORMATS_BY_QUALITY[: chosen + 1]:
        peak = estimate_inference(spec, replace(setup, weight_format=name)).peak_bytes
        assert (peak <= gpu.memory_bytes) == (name == answer.value)


@pytest.mark.parametrize(
    ("spec", "gpus", "gpu", "setup"),
    [
        (catalog_spec("llama-2-70b"), 64, "h100-80gb", TrainSetup.from_flat(seq=4096)),
        (
            spec_from_config(GPT3, name="gpt3-175b", source="test"),
            1024,
            "a100-80gb",
            TrainSetup.from_flat(grad_accum=64),
        ),
        (catalog_spec("llama-2-70b"), 8, "h100-80gb", TrainSetup.from_flat(seq=4096, batch=2)),
    ],
)
def test_layouts_returned_fit_and_rejected_families_do_not(
    spec: ModelSpec, gpus: int, gpu: str, setup: TrainSetup
) -> None:
    budget = get_gpu(gpu).memory_bytes
    found = search_layouts(spec, setup, gpus, budget)
    fitting, rejected = found.fitting, found.rejected
    assert fitting  # the loop over fitting layouts is not vacuous (rejected families may be none)
    for x in fitting:
        trial = setup.with_flat(
            tp=x.tp, pp=x.pp, dp=x.dp, zero=x.zero, recompute=x.recompute, offload=x.offload, batch=x.batch
        )
        trial = replace(trial, grad_accum=max(setup.grad_accum, x.pp) if x.pp > 1 else setup.grad_accum)
        assert estimate_training(spec, trial).peak_bytes <= budget
        assert x.tp * x.pp * x.dp == gpus
    for r in rejected:
        assert r.smallest_peak > budget and r.reason
    assert [x.throughput for x in fitting] == sorted((x.throughput for x in fitting), reverse=True)
    assert fitting or rejected


def _worst_stage(spec: ModelSpec, setup: TrainSetup) -> int:
    """The oracle for a pipeline: every stage's own estimate (what ``vramwise train`` renders), the worst of them."""
    return max(e.peak_bytes for e in estimate_stages(spec, setup))


@pytest.mark.parametrize(
    ("model", "gpu", "setup"),
    [
        # DeepSeek's dense first layers leave stage 0 fewer experts than stage 1, which is the worst GPU here
        ("deepseek-v2-lite", "a100-40gb", TrainSetup.from_flat(pp=8, grad_accum=16, dp=8, zero=1, seq=4096)),
        (
            "deepseek-v3",
            "h100-80gb",
            TrainSetup.from_flat(pp=16, tp=8, ep=8, dp=8, zero=1, grad_accum=32, recompute="full"),
        ),
        # frozen bottom layers: stage 2 trains all its layers, stages 0 and 1 freeze some
        (
            "mixtral-8x7b",
            "h100-80gb",
            TrainSetup.from_flat(pp=8, tp=2, grad_accum=16, freeze_layers=5, recompute="full"),
        ),
    ],
)
def test_largest_batch_of_a_pipeline_fits_every_stage(model: str, gpu: str, setup: TrainSetup) -> None:
    spec, budget = catalog_spec(model), get_gpu(gpu).memory_bytes
    n = int(max_train(spec, setup, budget, "batch").value)
    assert _worst_stage(spec, setup.with_flat(batch=n)) <= budget < _worst_stage(spec, setup.with_flat(batch=n + 1))


def test_first_reported_deepseek_pipeline_no_longer_fits() -> None:
    # the finding's reproducer: stage 1 of 8 needs more than an A100-40GB even at micro-batch 1
    spec, budget = catalog_spec("deepseek-v2-lite"), get_gpu("a100-40gb").memory_bytes
    setup = TrainSetup.from_flat(pp=8, grad_accum=16, recompute="full")
    assert _worst_stage(spec, setup) > budget
    with pytest.raises(DoesNotFitError):
        max_train(spec, setup, budget, "batch")


def test_layouts_of_a_deepseek_pipeline_fit_every_stage() -> None:
    spec, budget = catalog_spec("deepseek-v2-lite"), get_gpu("a100-40gb").memory_bytes
    setup = TrainSetup.from_flat(seq=4096, grad_accum=16)
    found = search_layouts(spec, setup, 16, budget)
    piped = [x for x in found.fitting if x.pp > 2]
    assert piped  # the check below is not vacuous
    for x in found.fitting:
        trial = setup.with_flat(
            tp=x.tp, pp=x.pp, dp=x.dp, zero=x.zero, recompute=x.recompute, offload=x.offload, batch=x.batch
        )
        assert _worst_stage(spec, replace(trial, grad_accum=max(16, x.pp))) <= budget


@pytest.mark.parametrize("infer", [True, False])
def test_largest_context_of_a_learned_position_table_stops_at_the_table(infer: bool) -> None:
    # W7: GPT-2 has 1,024 learned positions (n_positions); the memory alone would allow millions of tokens on
    # an H200. The solver answers within the table or refuses; it never answers beyond it.
    spec, budget = catalog_spec("gpt2"), get_gpu("h200").memory_bytes
    try:
        answer = (
            max_infer(spec, InferSetup(), budget, "context") if infer else max_train(spec, TrainSetup(), budget, "seq")
        )
    except InvalidWorkloadError as err:
        assert "1,024" in str(err)
    else:
        assert int(answer.value) <= 1024


def test_nothing_fits_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DoesNotFitError, match="nothing to grow"):
        max_train(catalog_spec("llama-2-70b"), TrainSetup.from_flat(), get_gpu("rtx-4090").memory_bytes, "batch")
    code = main(["fit", "llama-3.1-405b", "--gpu", "t4", "--infer", "--best-format"])
    out, err = capsys.readouterr()
    # exit 3, nothing fits (the CI gate, cli/__init__.py): the reason in one line, then the advice
    first = out.splitlines()[0]
    assert code == 3 and not err and first.startswith("DOES NOT FIT: ") and "smallest" in first


@pytest.mark.parametrize("loss", ["full", "chunked"])
def test_layout_search_over_micro_batches_matches_full_estimates(loss: str) -> None:
    # The search extrapolates each layout's phases from micro-batches 1 and 2 (a chunked loss: exact at every
    # micro-batch) and stops at a family's first miss; every verdict must agree with a full estimate, and the
    # micro-batch just beyond each family's largest fit must really miss.
    spec, budget = catalog_spec("llama-2-7b"), get_gpu("a100-40gb").memory_bytes
    setup = TrainSetup.from_flat(seq=2048, loss=loss, loss_chunk=4096)
    batches = (1, 3, 6, 11)
    found = search_layouts(spec, setup, 8, budget, batches=batches)
    assert found.candidates > len(found.fitting) > 0
    largest: dict[tuple, int] = {}
    for x in found.fitting:
        trial = setup.with_flat(tp=x.tp, pp=x.pp, dp=x.dp, zero=x.zero, recompute=x.recompute, offload=x.offload)
        trial = replace(trial, batch=x.batch, grad_accum=max(setup.grad_accum, x.pp) if x.pp > 1 else 1)
        assert abs(estimate_training(spec, trial).peak_bytes - x.peak) <= 64  # whole-byte rounding per term
        par = trial.parallel
        family = (par.tp, par.pp, par.dp, par.zero, trial.recompute, par.offload, trial.grad_accum)
        largest[family] = max(largest.get(family, 0), x.batch)
    beyond = 0
    for (tp, pp, dp, zero, recompute, offload, accum), b in largest.items():
        if b == batches[-1]:
            continue
        nxt = batches[batches.index(b) + 1]
        trial = TrainSetup.from_flat(
            seq=2048, loss=loss, loss_chunk=4096, tp=tp, pp=pp, dp=dp, zero=zero, recompute=recompute,
            offload=offload, grad_accum=accum, batch=nxt,
        )  # fmt: skip
        assert estimate_training(spec, trial).peak_bytes > budget
        beyond += 1
    assert beyond


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "llama-2-7b", "--gpu", "t4", "--max", "batch"],
        ["fit", "llama-3.1-405b", "--gpu", "t4", "--infer", "--max", "batch"],
        # not llama-2-70b on 8: ZeRO-3 with offload keeps no gradient partition on the GPU (DeepSpeed stage3.py
        # grad_partitions_flat_buffer on the CPU), so 70B fits a T4's memory with everything offloaded
        ["fit", "llama-3.1-405b", "--gpu", "t4", "--layouts", "2"],
    ],
)
def test_a_target_that_cannot_fit_names_the_smallest_setup(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert code == 3 and not err and first.startswith("DOES NOT FIT: ")
    assert ("smallest" in first or "on more GPUs" in first) and "Traceback" not in out


@pytest.mark.parametrize(
    ("flags", "flat"),
    [
        (["--fsdp", "full"], {"fsdp": "full", "zero": 0}),
        (["--zero", "3"], {"zero": 3}),
        (["--zero", "2", "--recompute", "full", "--optimizer", "adamw-8bit"], {"zero": 2}),
    ],
)
def test_min_gpus_takes_the_sharding_asked(
    flags: list[str], flat: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fit --min-gpus --fsdp full` (or --zero) used to stop at "dp must be >= 2, got dp=1" before searching; the
    answer is the boundary of the sharding asked, re-estimated here: n fits under it and n - 1 does not."""
    spec, budget = catalog_spec("llama-3-8b"), get_gpu("rtx-4090").memory_bytes
    assert main(["fit", "llama-3-8b", "--gpu", "rtx-4090", "--min-gpus", *flags]) == 0
    n = int(capsys.readouterr().out.splitlines()[0].rsplit(": ", 1)[1])
    rest = dict(zip(flags[::2], flags[1::2], strict=True))
    # --gpu rtx-4090 (a consumer card) sets interconnect pcie, which sizes NCCL's buffers (app/gpu_rules.py)
    flags_set = {k.lstrip("-"): v for k, v in rest.items() if k not in ("--fsdp", "--zero")}
    base = TrainSetup.from_flat(**flags_set, interconnect="pcie")
    assert n > 2
    assert estimate_training(spec, base.with_flat(dp=n, **flat)).peak_bytes <= budget
    assert estimate_training(spec, base.with_flat(dp=n - 1, **flat)).peak_bytes > budget


def test_min_gpus_under_zero_2_names_what_does_not_shrink(capsys: pytest.CaptureFixture[str]) -> None:
    """ZeRO-2 keeps the 16-bit weights whole on each GPU: Llama-3-70B's 141 GB never fit an 80 GB GPU, and the
    refusal names ZeRO-2 and the weights, not ZeRO-3 and the activations."""
    assert main(["fit", "llama-3-70b", "--gpu", "h100-80gb", "--min-gpus", "--zero", "2", "--recompute", "full"]) == 3
    first = capsys.readouterr().out.splitlines()[0]  # exit 3: the reason's one line, then the advice
    assert "ZeRO-2 GPUs" in first and "the weights and the activations" in first

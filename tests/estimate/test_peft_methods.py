"""peft's other methods: DoRA, IA3, prompt and prefix tuning, LoRA on the embedding and the head.

Two oracles: peft 0.21 itself on the meta device (get_peft_model on the transformers model of the same tiny
config; its trainable parameters are the adapter term's elements, 4 B each), and the traced step
(``vramwise.verify.trace``, each method wrapped as a user would with peft's defaults): weights, gradients and
optimizer states exactly, the peak within 5% as in tests/estimate/test_train_vs_trace.py.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import peft
import torch
import transformers
from tiny_configs import FAMILIES

from vramwise.catalog import models
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Estimate
from vramwise.estimate.train.peft_methods import TERM_NAMES, prefix_params
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import catalog_spec
from vramwise.verify.trace import TraceRecipe, peft_config, trace_training
from vramwise.workload import PeftMethod, TrainSetup

QV = ("q_proj", "v_proj")


def _meta_trainable(config: dict[str, Any], cfg: Any) -> int:
    data = {k: v for k, v in config.items() if k != "model_type"}
    hf = transformers.AutoConfig.for_model(config["model_type"], **data)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = peft.get_peft_model(model, cfg)
    return sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


def _setup(recipe: TraceRecipe) -> TrainSetup:
    method = recipe.peft or ("lora" if recipe.lora_r else "none")
    return TrainSetup.from_flat(
        batch=recipe.batch,
        seq=recipe.seq,
        precision=recipe.precision,
        attention=recipe.attention,
        recompute=recipe.recompute,
        peft=method,
        lora_r=recipe.lora_r or 16,
        lora_targets=recipe.lora_targets,
        num_virtual_tokens=recipe.num_virtual_tokens,
        cuda_context_mib=0,
        allocator_fraction=0.0,
    )


def _estimate(family: str, recipe: TraceRecipe) -> Estimate:
    spec = spec_from_config(FAMILIES[family], name=family, source="test")
    return estimate_training(spec, _setup(recipe))


PARAM_CASES = [
    ("llama", TraceRecipe(peft="dora", lora_r=8, lora_targets=QV)),
    ("llama", TraceRecipe(peft="dora", lora_r=4, lora_targets=("all-linear",))),
    ("qwen2", TraceRecipe(peft="dora", lora_r=8, lora_targets=("q_proj", "down_proj"))),
    ("llama", TraceRecipe(peft="ia3")),  # peft's mapping: k_proj, v_proj, down_proj (feedforward)
    ("qwen2", TraceRecipe(peft="ia3")),  # q_proj, v_proj, down_proj
    ("gemma", TraceRecipe(peft="ia3")),
    ("llama", TraceRecipe(peft="ia3", lora_targets=("q_proj", "o_proj", "down_proj", "up_proj"))),
    ("llama", TraceRecipe(peft="prompt-tuning", num_virtual_tokens=20)),
    ("gemma", TraceRecipe(peft="prompt-tuning", num_virtual_tokens=7)),
    ("llama", TraceRecipe(peft="prefix-tuning", num_virtual_tokens=20)),  # GQA: kv heads x head_dim
    ("gemma", TraceRecipe(peft="prefix-tuning", num_virtual_tokens=30)),  # MQA, head_dim 64
    ("llama", TraceRecipe(peft="lora", lora_r=8, lora_targets=("embed_tokens", "lm_head"))),
    ("qwen2", TraceRecipe(peft="lora", lora_r=8, lora_targets=("lm_head", "q_proj"))),  # a tied head
    ("llama", TraceRecipe(peft="dora", lora_r=8, lora_targets=("embed_tokens", "v_proj"))),
]


@pytest.mark.parametrize(
    ("family", "recipe"), PARAM_CASES, ids=[f"{f}-{r.peft}-{i}" for i, (f, r) in enumerate(PARAM_CASES)]
)
def test_trainable_parameters_equal_peft_on_meta(family: str, recipe: TraceRecipe) -> None:
    expected = _meta_trainable(FAMILIES[family], peft_config(recipe))
    est = _estimate(family, TraceRecipe(**{**recipe.__dict__, "batch": 1, "seq": 64}))
    method = PeftMethod(recipe.peft)
    assert est.term(TERM_NAMES[method]).bytes == 4 * expected  # fp32 adapters
    assert est.term("gradients").bytes == 4 * expected


def test_prefix_projection_count_equals_peft() -> None:
    # prefix_projection=True: embedding (n, token_dim) and a two-layer MLP (peft tuners/prefix_tuning/model.py)
    cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=12, prefix_projection=True)
    spec = spec_from_config(FAMILIES["llama"], name="llama", source="test")
    assert prefix_params(spec, 12, projection=True) == _meta_trainable(FAMILIES["llama"], cfg)


# Each method's traced step: bf16 (fp32 adapters on a 16-bit base) and fp32.
TRACE_CASES = [
    *[
        ("llama", TraceRecipe(batch=2, seq=256, precision=p, **kw))
        for p in ("bf16", "fp32")
        for kw in (
            {"peft": "dora", "lora_r": 8, "lora_targets": QV},
            {"peft": "ia3"},
            {"peft": "prompt-tuning", "num_virtual_tokens": 20},
            {"peft": "prefix-tuning", "num_virtual_tokens": 20},
            {"peft": "lora", "lora_r": 8, "lora_targets": ("embed_tokens", "lm_head")},
        )
    ],
    ("llama", TraceRecipe(batch=2, seq=256, peft="dora", lora_r=8, lora_targets=("all-linear",))),
    # DoRA on the head keeps vocabulary-wide logits twice and adds their gradients to the loss backward
    *[
        ("llama", TraceRecipe(batch=2, seq=256, peft="dora", lora_r=8, lora_targets=targets))
        for targets in (("q_proj", "lm_head"), ("lm_head",), ("embed_tokens",))
    ],
    # the head alone: nothing below it needs a gradient, so the layers keep nothing
    ("llama", TraceRecipe(batch=2, seq=256, peft="lora", lora_r=8, lora_targets=("lm_head",))),
    ("llama", TraceRecipe(batch=1, seq=512, peft="prefix-tuning", num_virtual_tokens=64)),
    ("qwen2", TraceRecipe(batch=2, seq=256, peft="ia3")),
    ("gemma", TraceRecipe(batch=2, seq=256, peft="prefix-tuning", num_virtual_tokens=16)),
]


@pytest.mark.parametrize(
    ("family", "recipe"), TRACE_CASES, ids=[f"{f}-{r.peft}-{i}" for i, (f, r) in enumerate(TRACE_CASES)]
)
def test_peft_method_matches_traced_step(family: str, recipe: TraceRecipe) -> None:
    traced = trace_training(FAMILIES[family], recipe)
    est = _estimate(family, recipe)
    assert sum(t.bytes for t in est.persistent if t.name.startswith("weights/")) == traced.params
    assert est.term("optimizer/states").bytes == traced.optimizer_states
    assert est.term("gradients").bytes == traced.grads
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.05)
    # what the forward keeps (the sharper check: the loss dominates these tiny models' peaks); the estimate counts
    # layer 0's input norm, which keeps nothing when no gradient flows below it (+0.5 MB here, as for LoRA)
    forward_end = est.phase_total(next(p for p in est.phases if p.kind.name == "FORWARD_END"))
    assert forward_end == pytest.approx(traced.marks["forward_end"], rel=0.05)


def test_dora_forward_rebuilds_the_largest_weight_in_fp32() -> None:
    # q_proj 256 -> 256 is the largest of q and v: eye(256) and four 256 x 256 fp32 tensors (peft dora.py)
    est = _estimate("llama", TraceRecipe(batch=1, seq=64, peft="dora", lora_r=8, lora_targets=QV))
    phase = next(p for p in est.phases if p.kind.name == "FORWARD_DORA")
    term = next(t for t in phase.transient if t.name == "dora/weight_norm")
    assert term.bytes == 4 * 256 * 256 + 4 * 4 * 256 * 256


def test_prompt_tuning_runs_the_longer_sequence() -> None:
    # prompt tuning at seq s with n virtual tokens keeps what the frozen model keeps at s + n (hand arithmetic:
    # the prompt prepends n embeddings, so every per-token term is over b·(s + n) tokens)
    spec = spec_from_config(FAMILIES["llama"], name="llama", source="test")
    prompt = estimate_training(spec, TrainSetup.from_flat(seq=200, peft="prompt-tuning", num_virtual_tokens=56))
    longer = estimate_training(spec, TrainSetup.from_flat(seq=256, peft="prompt-tuning", num_virtual_tokens=1))
    a = prompt.term("activations/loss").bytes
    assert a == 4 * 8000 * 256 == longer.term("activations/loss").bytes * 256 // 257


@pytest.mark.parametrize(
    ("family", "flat", "field"),
    [
        ("mixtral", {"peft": "dora", "lora_targets": ("all-linear",)}, "lora_targets"),  # ParamWrapper refuses DoRA
        ("gpt2", {"peft": "ia3"}, "peft"),
        ("llama", {"peft": "ia3", "lora_targets": ("nope",)}, "lora_targets"),
        ("deepseek_v3", {"peft": "prefix-tuning"}, "peft"),
        ("llama", {"peft": "prompt-tuning", "pp": 2, "grad_accum": 2}, "peft"),
        ("llama", {"peft": "prefix-tuning", "recompute": "full"}, "recompute"),  # peft refuses it
    ],
)
def test_refused_in_one_line(family: str, flat: dict[str, Any], field: str) -> None:
    spec = spec_from_config(FAMILIES[family], name=family, source="test")
    with pytest.raises(InvalidWorkloadError) as err:
        estimate_training(spec, TrainSetup.from_flat(seq=128, **flat))
    assert err.value.field == field and "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(models()))
def test_ia3_defaults_are_pefts_mapping(name: str) -> None:
    # where IA3 is modelled, its targets and feedforward modules are peft 0.21's mapping for the model type;
    # elsewhere it is refused in one line (ia3_modules), never guessed
    from peft.utils import constants

    spec = catalog_spec(name)
    if not spec.traits.ia3_feedforward:
        return
    targets = constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[spec.model_type]
    feedforward = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[spec.model_type]
    assert (spec.traits.ia3_targets, spec.traits.ia3_feedforward) == (tuple(targets), tuple(feedforward))


@pytest.mark.parametrize(
    "argv",
    [
        ("--peft", "dora", "--lora-r", "8", "--lora-targets", "q_proj,v_proj"),
        ("--peft", "ia3"),
        ("--peft", "prompt-tuning", "--num-virtual-tokens", "12"),
        ("--peft", "prefix-tuning", "--num-virtual-tokens", "12"),
        ("--peft", "lora", "--lora-targets", "embed_tokens,lm_head"),
    ],
)
def test_verify_wraps_each_method_as_the_estimate_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    # `vramwise verify` hands the method to the twin (verify/twin.py train_recipe): the same adapters on both sides
    from vramwise.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(FAMILIES["llama"]))
    assert main(["verify", str(path), "-b", "2", "-s", "128", "--json", *argv]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    for exact in ("weights", "gradients", "optimizer_states"):
        assert rows[exact]["estimate"] == rows[exact]["measured"], exact
    assert abs(rows["peak"]["error"]) < 0.05


# With full recompute the estimate is 4.4% under this trace (71,455,744 vs 74,776,576 B) since the loss's saved
# tensors are released before a layer is rebuilt (torchtune work, traced right for every other recompute case):
# about 3.3 MB of DoRA's weight-norm backward, which that release used to hide, is not modelled yet.
DORA_RECOMPUTE_GAP = pytest.mark.xfail(strict=True, reason="DoRA's weight-norm backward temporaries are not modelled")


@pytest.mark.parametrize("recompute", ["none", pytest.param("full", marks=DORA_RECOMPUTE_GAP)])
def test_dora_weight_rebuild_is_the_peak_when_it_dominates(recompute: str) -> None:
    # a wide MLP (i = 2048) and a small vocabulary: DoRA's fp32 rebuild of down_proj (eye(2048) and four
    # 2048 x 256 tensors) beats the loss. It runs in the forward, and again in the rebuilt layer with recompute.
    config = {**FAMILIES["llama"], "vocab_size": 1000, "intermediate_size": 2048}
    recipe = TraceRecipe(batch=2, seq=256, peft="dora", lora_r=8, lora_targets=("all-linear",), recompute=recompute)
    traced = trace_training(config, recipe)
    spec = spec_from_config(config, name="llama-wide", source="test")
    est = estimate_training(spec, _setup(recipe))
    assert est.term("gradients").bytes == traced.grads
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.03)
    kind = "FORWARD_DORA" if recompute == "none" else "BACKWARD_RECOMPUTE"
    assert est.peak_phase is not None and est.peak_phase.kind.name == kind


def test_textbook_seed_000_refuses_the_methods_it_has_no_formula_for() -> None:
    from vramwise.estimate.train.textbook_mode import textbook_training

    spec = spec_from_config(FAMILIES["llama"], name="llama", source="test")
    with pytest.raises(InvalidWorkloadError) as err:
        textbook_training(spec, TrainSetup.from_flat(seq=128, peft="ia3", mode="textbook", seed="000"))
    assert err.value.field == "peft" and "LoRA formula only" in str(err.value)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--peft", "ia3", "--lora-r", "8"), "--lora-r does not apply to --peft ia3"),
        (("--num-virtual-tokens", "8"), "--num-virtual-tokens applies to --peft prompt-tuning or prefix-tuning"),
        (("--peft", "prefix-tuning", "--lora-targets", "q_proj"), "--lora-targets does not apply"),
        (("--peft", "prompt-tuning", "--num-virtual-tokens", "0"), "num_virtual_tokens"),
    ],
)
def test_cli_refuses_options_a_method_cannot_take(capsys: pytest.CaptureFixture[str], argv: tuple, words: str) -> None:
    from vramwise.cli import main

    assert main(["train", "llama-3-8b", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_dora_with_dropout_keeps_fp32_weight_copies() -> None:
    # peft DoraLinearVariant.forward: with lora_dropout the base output is recomputed as F.linear(dropped fp32 x,
    # weight.to(fp32)), which keeps the fp32 weight for x's gradient (hand arithmetic: q 256x256 and v 256x64 in 3
    # layers, 4 B each), and that base output is fp32 (4 + 4 B per output feature and token); the CPU twin refuses
    # dropout (its kernel keeps a wider mask), so this is the code's arithmetic
    spec = spec_from_config(FAMILIES["llama"], name="llama", source="test")
    flat = {"batch": 1, "seq": 64, "peft": "dora", "lora_r": 8, "lora_targets": QV}
    plain = estimate_training(spec, TrainSetup.from_flat(**flat))
    dropped = estimate_training(spec, TrainSetup.from_flat(**flat, lora_dropout=0.1))
    assert dropped.term("activations/dora_weights").bytes == 4 * 3 * (256 * 256 + 256 * 64)
    assert dropped.term("activations/dora").bytes - plain.term("activations/dora").bytes == 64 * 3 * (4 - 2) * 320

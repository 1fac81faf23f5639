"""Properties every estimate must keep, on catalog models with settings drawn by hypothesis.

Oracles: the ordering each property states follows from what the frameworks allocate (more sequences, tokens or
adapter rank never free memory; ZeRO stage k+1 partitions a superset of stage k's states, DeepSpeed
``deepspeed/runtime/zero/stage_1_and_2.py`` and ``stage3.py``; sharding over more GPUs never grows a shard), and
the report's contract (``docs/json-schema.md``: the table and ``--json`` carry the same terms and total, the total
is the sum of the terms and the largest phase). Runs are derandomized, so CI sees the same examples every time.
"""

from __future__ import annotations

import json
import re
from functools import cache

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reliability.conftest import run_cli
from vramwise.errors import VramwiseError
from vramwise.estimate.inference import estimate_inference, inference_peak
from vramwise.estimate.train.training import estimate_stages, estimate_training, training_peak
from vramwise.spec.load import catalog_spec
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import total_params
from vramwise.workload import InferSetup, TrainSetup

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Decoder LMs of every family in the catalog, small and large (the big ones cost no more: the estimate is arithmetic)
INFER_MODELS = [
    "llama-2-7b", "llama-3-8b", "llama-3.2-1b", "mistral-7b", "mixtral-8x7b", "qwen2.5-0.5b", "qwen3-8b",
    "qwen3-30b-a3b", "gemma-2b", "gemma-2-2b", "gemma-3-1b", "phi-2", "phi-3-mini", "gpt2", "opt-125m",
    "pythia-160m", "falcon-7b", "deepseek-v2-lite", "gpt-oss-20b", "qwen1.5-moe-a2.7b",
]  # fmt: skip
# Training with LoRA needs peft's default targets for the family (gpt-oss has none): these have them.
TRAIN_MODELS = [m for m in INFER_MODELS if m != "gpt-oss-20b"]
BIG_MODELS = ["llama-2-7b", "llama-3-8b", "mistral-7b", "qwen3-8b", "mixtral-8x7b", "gemma-2-9b", "phi-3-mini"]


@cache
def spec(name: str) -> ModelSpec:
    return catalog_spec(name)


def max_tokens(name: str) -> int:
    """Tokens a sequence may hold: the model's position table (learned positions cannot go past it), at most 8k."""
    return min(spec(name).max_position_embeddings or 8192, 8192)


tokens = st.integers(min_value=1, max_value=8192)


def two(strategy: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[int, int]]:
    """Two draws, smaller first."""
    return st.tuples(strategy, strategy).map(sorted).map(tuple)  # type: ignore[arg-type]


def infer_peak(name: str, **flat: object) -> int:
    return inference_peak(spec(name), InferSetup.from_flat(**flat))


def train_peak(name: str, **flat: object) -> int:
    return training_peak(spec(name), TrainSetup.from_flat(**flat))


# --- inference: monotone in batch, context and new tokens ---------------------------------------------------


infer_knobs = st.fixed_dictionaries(
    {
        "weight_format": st.sampled_from([None, "fp16", "int8", "nf4", "gptq-4bit-g128"]),
        "kv_dtype": st.sampled_from(["auto", "fp8"]),
        "attention": st.sampled_from(["sdpa", "flash", "eager"]),
        "kv_block": st.sampled_from([1, 16]),
    }
)


@FAST
@given(st.sampled_from(INFER_MODELS), two(st.integers(1, 512)), tokens, infer_knobs)
def test_infer_peak_monotone_in_batch(name: str, batches: tuple[int, int], context: int, knobs: dict) -> None:
    context = min(context, max_tokens(name))
    small, large = (infer_peak(name, batch=b, context=context, **knobs) for b in batches)
    assert small <= large


@FAST
@given(st.sampled_from(INFER_MODELS), st.integers(1, 64), two(tokens), infer_knobs)
def test_infer_peak_monotone_in_context(name: str, batch: int, contexts: tuple[int, int], knobs: dict) -> None:
    short, long = (infer_peak(name, batch=batch, context=min(c, max_tokens(name)), **knobs) for c in contexts)
    assert short <= long


@FAST
@given(st.sampled_from(INFER_MODELS), st.integers(1, 64), tokens, two(st.integers(0, 4096)), infer_knobs)
def test_infer_peak_monotone_in_new_tokens(
    name: str, batch: int, context: int, news: tuple[int, int], knobs: dict
) -> None:
    context = min(context, max_tokens(name) // 2)
    news = (min(news[0], max_tokens(name) - context), min(news[1], max_tokens(name) - context))
    few, many = (infer_peak(name, batch=batch, context=context, new_tokens=n, **knobs) for n in news)
    assert few <= many


# --- training: monotone in micro-batch, sequence and LoRA rank ------------------------------------------------


train_knobs = st.fixed_dictionaries(
    {
        "precision": st.sampled_from(["bf16-mixed", "fp32", "amp", "bf16"]),
        "optimizer": st.sampled_from(["adamw", "sgd", "adafactor", "adamw-8bit"]),
        "recompute": st.sampled_from(["none", "selective", "full"]),
        "attention": st.sampled_from(["sdpa", "eager"]),
        "loss": st.sampled_from(["full", "chunked"]),
    }
)
seqs = st.sampled_from([64, 128, 256, 512, 1024, 2048, 4096])


@FAST
@given(st.sampled_from(TRAIN_MODELS), two(st.integers(1, 64)), seqs, train_knobs)
def test_train_peak_monotone_in_micro_batch(name: str, batches: tuple[int, int], seq: int, knobs: dict) -> None:
    seq = min(seq, max_tokens(name))
    small, large = (train_peak(name, batch=b, seq=seq, **knobs) for b in batches)
    assert small <= large


@FAST
@given(st.sampled_from(TRAIN_MODELS), st.integers(1, 16), two(seqs), train_knobs)
def test_train_peak_monotone_in_seq(name: str, batch: int, pair: tuple[int, int], knobs: dict) -> None:
    short, long = (train_peak(name, batch=batch, seq=min(s, max_tokens(name)), **knobs) for s in pair)
    assert short <= long


@FAST
@given(
    st.sampled_from(TRAIN_MODELS),
    two(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256])),
    st.sampled_from(["lora", "qlora"]),
    st.sampled_from(["none", "full"]),
)
def test_train_peak_monotone_in_lora_rank(name: str, ranks: tuple[int, int], peft: str, recompute: str) -> None:
    seq = min(1024, max_tokens(name))
    low, high = (
        train_peak(name, seq=seq, peft=peft, lora_r=r, lora_targets=("all-linear",), recompute=recompute)
        for r in ranks
    )
    assert low <= high


# --- sharding: the ZeRO stage order and more GPUs under full sharding ------------------------------------------


layout = st.fixed_dictionaries(
    {
        "dp": st.sampled_from([2, 4, 8, 16, 64]),
        "batch": st.integers(1, 8),
        "seq": st.sampled_from([512, 2048, 4096]),
        "optimizer": st.sampled_from(["adamw", "sgd-momentum", "adafactor"]),
        "precision": st.sampled_from(["bf16-mixed", "amp", "fp32"]),
        "recompute": st.sampled_from(["none", "full"]),
    }
)


@FAST
@given(st.sampled_from(BIG_MODELS), layout)
def test_zero_1_never_above_zero_0(name: str, flat: dict) -> None:
    """ZeRO-1 partitions the optimizer states and keeps everything else of stage 0 (DDP)."""
    assert train_peak(name, zero=1, **flat) <= train_peak(name, zero=0, **flat)


@settings(FAST, max_examples=40)
@given(st.sampled_from(BIG_MODELS), layout)
def test_zero_2_never_above_zero_1(name: str, flat: dict) -> None:
    """ZeRO-2 also partitions the gradients (DeepSpeed stage_1_and_2.py reduces each bucket into its partition)."""
    assert train_peak(name, zero=2, **flat) <= train_peak(name, zero=1, **flat)


@FAST
@given(st.sampled_from(BIG_MODELS), layout.filter(lambda flat: flat["dp"] >= 4))
def test_zero_3_never_above_zero_2(name: str, flat: dict) -> None:
    """ZeRO-3 also partitions the weights; on models of billions of parameters the weights it saves exceed the
    prefetch and gather buffers it adds. Not at dp=2: stage 3 preallocates its gradient partition for the whole
    step (stage3.py _setup_for_real_optimizer, grad_partitions_flat_buffer), while stage 2 allocates its own only
    in backward (stage_1_and_2.py copy_grads_in_partition); at dp=2 that partition equals the half of the weights
    stage 3 saves, so the gather buffers decide, and DeepSpeed guarantees no order there."""
    assert total_params(spec(name)) > 10**9
    assert train_peak(name, zero=3, **flat) <= train_peak(name, zero=2, **flat)


@FAST
@given(st.sampled_from(TRAIN_MODELS), two(st.sampled_from([2, 4, 8, 16, 32, 128])), st.sampled_from(["zero3", "fsdp"]),
       st.integers(1, 4), st.sampled_from(["none", "full"]))
def test_more_gpus_never_more_memory_when_fully_sharded(
    name: str, dps: tuple[int, int], how: str, batch: int, recompute: str
) -> None:
    shard = {"zero": 3} if how == "zero3" else {"fsdp": "full"}
    seq = min(2048, max_tokens(name))
    few, many = (train_peak(name, dp=d, batch=batch, seq=seq, recompute=recompute, **shard) for d in dps)
    assert many <= few


# --- consistency: terms, phases, fast path, stages ---------------------------------------------------------------


@FAST
@given(st.sampled_from(INFER_MODELS), st.integers(1, 32), tokens, st.integers(0, 512), infer_knobs)
def test_infer_fast_peak_equals_rendered_and_terms_add_up(
    name: str, batch: int, context: int, new: int, knobs: dict
) -> None:
    context = min(context, max_tokens(name) - new) if max_tokens(name) > new else 1
    setup = InferSetup.from_flat(batch=batch, context=context, new_tokens=new, **knobs)
    est = estimate_inference(spec(name), setup)
    assert inference_peak(spec(name), setup) == est.peak_bytes
    check_terms(est)


@FAST
@given(st.sampled_from(TRAIN_MODELS), st.integers(1, 8), seqs, train_knobs, st.sampled_from([1, 2, 4]))
def test_train_fast_peak_equals_rendered_and_terms_add_up(
    name: str, batch: int, seq: int, knobs: dict, pp: int
) -> None:
    seq = min(seq, max_tokens(name))
    assume(pp <= spec(name).num_layers)
    setup = TrainSetup.from_flat(batch=batch, seq=seq, pp=pp, grad_accum=pp, **knobs)
    est = estimate_training(spec(name), setup)
    assert training_peak(spec(name), setup) == est.peak_bytes
    check_terms(est)


def check_terms(est: object) -> None:
    """Every term a non-negative int; the peak is persistent + the largest phase's transients, and their sum."""
    terms = est.terms  # type: ignore[attr-defined]
    assert all(isinstance(t.bytes, int) and t.bytes >= 0 for t in terms)
    assert sum(t.bytes for t in terms) == est.peak_bytes  # type: ignore[attr-defined]
    if est.phases:  # type: ignore[attr-defined]
        assert max(est.phase_total(p) for p in est.phases) == est.peak_bytes  # type: ignore[attr-defined]


@settings(FAST, max_examples=30)
@given(
    st.sampled_from(["deepseek-v2-lite", "deepseek-v2", "llama-2-7b", "mixtral-8x7b", "qwen1.5-moe-a2.7b"]),
    st.sampled_from([2, 3, 4, 8]),
    st.integers(1, 4),
    st.sampled_from(["none", "full"]),
)
def test_no_pipeline_stage_above_the_reported_peak(name: str, pp: int, batch: int, recompute: str) -> None:
    setup = TrainSetup.from_flat(batch=batch, seq=2048, pp=pp, grad_accum=2 * pp, recompute=recompute)
    worst = max(e.peak_bytes for e in estimate_stages(spec(name), setup))
    assert worst == training_peak(spec(name), setup) == estimate_training(spec(name), setup).peak_bytes


# --- the CLI: --json carries what the table shows -------------------------------------------------------------

_ROW = re.compile(r"^(\S+)\s+([\d,]+)\s+[\d.]+\s+[\d.]+%$")
_TOTAL = re.compile(r"^total \(peak\)\s+([\d,]+)\s")


def table_rows(text: str) -> tuple[list[tuple[str, int]], int]:
    rows = [(m[1], int(m[2].replace(",", ""))) for line in text.splitlines() if (m := _ROW.match(line))]
    totals = [int(m[1].replace(",", "")) for line in text.splitlines() if (m := _TOTAL.match(line))]
    assert len(totals) == 1, text
    return rows, totals[0]


cli_case = st.one_of(
    st.tuples(
        st.just("infer"),
        st.sampled_from(INFER_MODELS),
        st.fixed_dictionaries({"-b": st.integers(1, 64), "-s": st.sampled_from([128, 1024]), "-n": st.integers(0, 256),
                               "--kv-dtype": st.sampled_from(["auto", "fp8"])}),
    ),
    st.tuples(
        st.just("train"),
        st.sampled_from(TRAIN_MODELS),
        st.fixed_dictionaries({"-b": st.integers(1, 8), "--seq": st.sampled_from([128, 1024]),
                               "--recompute": st.sampled_from(["none", "full"]),
                               "--peft": st.sampled_from(["none", "lora"]), "--lora-targets": st.just("all-linear")}),
    ),
)


@settings(FAST, max_examples=20, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cli_case)
def test_json_equals_the_table(capsys: pytest.CaptureFixture[str], case: tuple[str, str, dict]) -> None:
    """Each run reads its own output: ``run_cli`` drains capsys after every call, so examples cannot mix."""
    command, name, opts = case
    argv = [command, name, *(x for k, v in opts.items() for x in (k, str(v)))]
    rc, table, err = run_cli(argv, capsys)
    assert rc == 0, err
    rc, out, err = run_cli([*argv, "--json"], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    rows, total = table_rows(table)
    assert rows == [(t["name"], t["bytes"]) for t in doc["terms"]]
    assert total == doc["peak"]["bytes"] == sum(t["bytes"] for t in doc["terms"])
    assert max(p["bytes"] for p in doc["phases"]) == total


def test_zero_order_example_is_not_vacuous() -> None:
    """The ZeRO properties compare different numbers: stage 3 at dp=8 really is smaller than stage 0."""
    flat = {"dp": 8, "seq": 2048}
    assert train_peak("llama-2-7b", zero=3, **flat) < train_peak("llama-2-7b", zero=0, **flat)


def test_refusals_are_vramwise_errors() -> None:
    """The strategies stay within what the setups accept; a refusal would be a VramwiseError, not a crash."""
    with pytest.raises(VramwiseError):
        train_peak("gpt2", tp=5)

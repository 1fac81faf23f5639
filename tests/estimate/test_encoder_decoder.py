"""Encoder-decoder models (T5, mT5): parameters against transformers' from_pretrained, the caches by hand.

Oracles: a real save_pretrained / from_pretrained round trip of each tiny config (the loaded model's parameters,
their bytes in bf16 and fp16, and the head tied or not as a real checkpoint leaves it), peft's trainable
parameters for LoRA, and arithmetic written out below for the caches, the encoder's output and the position bias.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cli_run import run as _run
from tiny_configs import ENCODER_DECODER

from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.term import PhaseKind
from vramwise.estimate.train.lora import lora_targets
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import total_params
from vramwise.workload import NO_OVERHEADS, InferSetup

DOC = Path(__file__).resolve().parents[2] / "docs" / "json-schema.md"


def _spec(name: str) -> ModelSpec:
    return spec_from_config(ENCODER_DECODER[name], name=name, source="test")


def _config_dir(tmp_path: Path, name: str) -> str:
    (tmp_path / "config.json").write_text(json.dumps({**ENCODER_DECODER[name], "torch_dtype": "bfloat16"}))
    return str(tmp_path)


# --- parameters: the model from_pretrained loads ------------------------------------------------------------


def _loaded(name: str, tmp_path: Path, dtype: Any) -> Any:
    """The model from_pretrained builds from a checkpoint of ``name``: with its own lm_head.weight when the config
    says tie_word_embeddings false, as v1.1, flan-t5 and mT5 checkpoints are published."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()  # the "both are present ... will NOT tie them" warning
    data = dict(ENCODER_DECODER[name])
    config = transformers.AutoConfig.for_model(data.pop("model_type"), **data)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    if ENCODER_DECODER[name].get("tie_word_embeddings") is False:
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    folder = tmp_path / name
    model.save_pretrained(folder)
    return transformers.AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=dtype)


@pytest.mark.parametrize("name", sorted(ENCODER_DECODER))
def test_parameters_and_weight_bytes_match_from_pretrained(name: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    spec = _spec(name)
    for dtype, fmt in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        model = _loaded(name, tmp_path, dtype)
        params = list(model.parameters())
        assert total_params(spec) == sum(p.numel() for p in params)
        est = estimate_inference(spec, InferSetup(context=8, weight_format=fmt, overheads=NO_OVERHEADS))
        weights = sum(t.bytes for t in est.persistent if t.name.startswith("weights/"))
        # fp16 keeps every wo in fp32 (_keep_in_fp32_modules = ["wo"]): weights/mlp_fp32_upcast
        assert weights == sum(p.numel() * p.element_size() for p in params), fmt


def test_the_head_is_tied_or_not_as_the_checkpoint_says() -> None:
    h, V = 64, 1000
    v10, v11 = _spec("t5"), _spec("t5-v1.1")
    assert v10.tied_embeddings and not v11.tied_embeddings
    # t5-v1.1 tiny config by hand: shared V·h + lm_head V·h; encoder 3 blocks, decoder 2, a·d_kv = 4 x 24 = 96
    inner, i = 96, 96
    encoder = 3 * (4 * h * inner + 3 * h * i + 2 * h) + h
    decoder = 2 * (2 * 4 * h * inner + 3 * h * i + 3 * h) + h
    assert total_params(v11) == 2 * V * h + encoder + decoder + 2 * 16 * 4


@pytest.mark.parametrize(("targets", "name"), [((), "t5"), ((), "mt5"), (("all-linear",), "t5-v1.1")])
def test_lora_modules_match_peft(targets: tuple[str, ...], name: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    data = dict(ENCODER_DECODER[name])
    config = transformers.AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    r = 8
    # peft's default for t5 and mt5 is ["q", "v"] (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
    chosen = "all-linear" if "all-linear" in targets else list(targets) or None  # peft takes all-linear as a str
    lora = peft.LoraConfig(r=r, target_modules=chosen, task_type="SEQ_2_SEQ_LM")
    wrapped = peft.get_peft_model(model, lora)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert sum(m.params(r) for m in lora_targets(_spec(name), targets)) == trainable


# --- inference: the caches and transients by hand ------------------------------------------------------------


def _terms(spec: ModelSpec, **setup: Any) -> dict[str, int]:
    setup = {"weight_format": "bf16", **setup}
    est = estimate_inference(spec, InferSetup(overheads=NO_OVERHEADS, **setup))
    return {t.name: t.bytes for t in (*est.persistent, *(t for p in est.phases for t in p.transient))}


def test_self_and_cross_kv_by_hand() -> None:
    # t5 tiny: 3 decoder layers, 6 heads of d_kv 16 (6 x 16 = 96 != d_model 64), bf16 (2 B)
    terms = _terms(_spec("t5"), batch=4, context=100, new_tokens=30)
    assert terms["kv_cache/self"] == 4 * 3 * 2 * 6 * 16 * 30 * 2  # b x L_dec x K,V x a x d_kv x n x 2 B
    assert terms["kv_cache/cross"] == 4 * 3 * 2 * 6 * 16 * 100 * 2  # ... x encoder tokens s
    assert terms["activations/encoder_output"] == 4 * 100 * 64 * 2  # b x s x d_model x 2 B
    # sdpa: the bias, its contiguous copy, and (100 % 8 = 4) CUDA's 8-aligned copy of 104 columns
    assert terms["activations/position_bias"] == 2 * 6 * 100 * 100 * 2 + 6 * 100 * 104 * 2
    assert _terms(_spec("t5"), context=128)["activations/position_bias"] == 2 * 6 * 128 * 128 * 2
    # the first decoder step runs even with no new token: one self-attention slot
    assert _terms(_spec("t5"), batch=1, context=100)["kv_cache/self"] == 3 * 2 * 6 * 16 * 1 * 2
    # mt5 tiny: 2 decoder layers (num_decoder_layers absent: the encoder's 2), 4 heads x d_kv 8, in fp32 weights
    fp32 = _terms(_spec("mt5"), batch=2, context=50, new_tokens=10, weight_format="fp32")
    assert (fp32["kv_cache/self"], fp32["kv_cache/cross"]) == (2 * 2 * 2 * 4 * 8 * 10 * 4, 2 * 2 * 2 * 4 * 8 * 50 * 4)


def _phase(spec: ModelSpec, kind: PhaseKind, **setup: Any) -> dict[str, int]:
    est = estimate_inference(spec, InferSetup(weight_format="bf16", overheads=NO_OVERHEADS, **setup))
    return {t.name: t.bytes for t in next(p for p in est.phases if p.kind is kind).transient}


def test_eager_keeps_one_position_bias_and_two_score_tensors() -> None:
    layer = _phase(_spec("t5"), PhaseKind.PREFILL_LAYER, batch=2, context=256, attention="eager")
    assert layer["activations/position_bias"] == 6 * 256 * 256 * 2
    # encoder block while eager builds its scores: T x c x (3h + 3·a·d_kv) + 2 x b·a·s²·c (matmul, + bias, softmax)
    # is more than afterwards, T x c x (3h + 5·a·d_kv) + b·a·s²·c (probabilities, output, its copy)
    assert layer["activations/prefill_workspace"] == 2 * 256 * 2 * (3 * 64 + 3 * 96) + 2 * (2 * 6 * 256 * 256 * 2)


def test_block_0_buckets_relative_positions_by_hand() -> None:
    phase = _phase(_spec("t5"), PhaseKind.PREFILL_POSITION_BIAS, batch=3, context=300)
    # six int64 (s, s) tensors and a bool one at _relative_position_bucket's torch.min: 49 B a pair (a·c = 12 < 33)
    assert phase["activations/position_buckets"] == 49 * 300 * 300
    assert phase["activations/prefill_workspace"] == 3 * 300 * 2 * (3 * 64 + 3 * 96)  # q, k, v exist already
    # 40 heads x 2 B: the lookup's output beside relative_position and the buckets (16 B) is the larger
    wide = spec_from_config({**ENCODER_DECODER["t5"], "num_heads": 40}, name="wide", source="test")
    assert _phase(wide, PhaseKind.PREFILL_POSITION_BIAS, context=300)["activations/position_buckets"] == (
        (16 + 40 * 2) * 300 * 300
    )


def _prefill_logits(spec: ModelSpec, **setup: Any) -> int:
    est = estimate_inference(spec, InferSetup(weight_format="bf16", overheads=NO_OVERHEADS, **setup))
    phase = next(p for p in est.phases if p.kind is PhaseKind.PREFILL_LOGITS)
    return next(t.bytes for t in phase.transient if t.name == "activations/logits")


def test_logits_cover_decoder_positions_only() -> None:
    # t5-v1.1 tiny: V 1000, no rescaling (untied); generate(): the last position and its fp32 copy
    assert _prefill_logits(_spec("t5-v1.1"), batch=3, context=500, new_tokens=20) == 3 * 1000 * (2 + 4) + 3 * 64 * 2
    # mT5 never rescales, tied or not (modeling_mt5.py)
    mt5 = spec_from_config({**ENCODER_DECODER["mt5"], "tie_word_embeddings": True}, name="mt5", source="test")
    assert _prefill_logits(mt5, batch=3, context=500) == 3 * 1200 * (2 + 4) + 3 * 48 * 2
    # every decoder position (20), never the 500 encoder tokens; T5 v1.0 also keeps its d_model^-0.5 copy
    assert _prefill_logits(_spec("t5"), batch=3, context=500, new_tokens=20, all_logits=True) == (
        3 * 20 * 1000 * 2 + 2 * 3 * 20 * 64 * 2
    )


def test_every_term_name_is_documented() -> None:
    documented = set(re.findall(r"`([^`\n]+)`", DOC.read_text()))
    names: set[str] = set()
    for setup in ({"new_tokens": 8}, {"attention": "eager", "all_logits": True}, {"weight_format": "fp16"}):
        for name in ENCODER_DECODER:
            est = estimate_inference(_spec(name), InferSetup(context=64, **setup))
            names |= {t.name for t in (*est.persistent, *(t for p in est.phases for t in p.transient))}
    assert {"kv_cache/self", "kv_cache/cross", "weights/mlp_fp32_upcast", "activations/position_buckets"} <= names
    assert not names - documented, sorted(names - documented)


# --- the command line ---------------------------------------------------------------------------------------


def test_cli_table_and_json_with_the_cross_attention_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_dir(tmp_path, "t5")
    code, out, err = _run(capsys, "infer", path, "--context", "64", "--new-tokens", "256", "-b", "8")
    assert (code, err) == (0, "")
    assert "kv_cache/cross" in out and "total (peak)" in out
    code, out, _ = _run(capsys, "infer", path, "--context", "64", "--new-tokens", "256", "-b", "8", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["peak"]["phase"] == "decode step"
    terms = {t["name"]: t["bytes"] for t in doc["terms"]}
    assert terms["kv_cache/cross"] == 8 * 3 * 2 * 6 * 16 * 64 * 2
    assert terms["kv_cache/self"] == 8 * 3 * 2 * 6 * 16 * 256 * 2
    assert sum(terms.values()) == doc["peak"]["bytes"]


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (("train", "--peft", "dora"), "encoder-decoder training"),  # full fine-tuning and LoRA are modelled
        (("train", "--mode", "textbook"), "not modelled for encoder-decoder"),
        (("infer", "--mode", "textbook"), "not modelled for encoder-decoder"),
        (("infer", "--tp", "2"), "tp (2)"),
        (("infer", "--attention", "flash"), "_supports_flash_attn = False"),
        (("infer", "--prefill-chunk", "32"), "prefill_chunk"),
        (("infer", "--kv-dtype", "fp8"), "compute dtype"),
        (("infer", "--serve", "--gpu", "h100-80gb"), "--serve"),
    ],
)
def test_what_is_not_modelled_is_refused_in_one_line(
    argv: tuple[str, ...], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, argv[0], _config_dir(tmp_path, "t5-v1.1"), *argv[1:])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and field in err, err


@pytest.mark.parametrize("argv", [("--seq", "64"), ("--infer", "--all-logits")])
def test_verify_refuses_what_it_cannot_trace_in_one_line(
    argv: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    code, _, err = _run(capsys, "verify", _config_dir(tmp_path, "mt5"), *argv)
    assert code == 2 and err.count("\n") == 1 and "encoder-decoder" in err, err


def test_verify_traces_generation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    code, out, err = _run(capsys, "verify", _config_dir(tmp_path, "mt5"), "--infer", "--context", "64", "-n", "4")
    assert (code, err) == (0, "") and "kv_cache" in out and "decode_peak" in out


@pytest.mark.parametrize("architectures", [["T5EncoderModel"], ["T5ForSequenceClassification"], "T5Model", [3]])
def test_other_t5_classes_are_refused_in_one_line(
    architectures: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**ENCODER_DECODER["t5"], "architectures": architectures}))
    code, _, err = _run(capsys, "infer", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "architectures" in err, err
    ok = {**ENCODER_DECODER["mt5"], "architectures": ["MT5ForConditionalGeneration"]}
    (tmp_path / "config.json").write_text(json.dumps(ok))
    assert _run(capsys, "infer", str(tmp_path))[0] == 0


def test_bad_feed_forward_proj_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**ENCODER_DECODER["t5"], "feed_forward_proj": "gelu-gated"}))
    code, _, err = _run(capsys, "infer", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "feed_forward_proj" in err, err

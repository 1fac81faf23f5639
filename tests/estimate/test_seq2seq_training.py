"""Training an encoder-decoder (T5 v1.0, v1.1 / flan-t5, mT5) against the traced step.

Oracle: ``vramwise.verify.trace`` builds T5ForConditionalGeneration as from_pretrained leaves it and trains on
targets of ``decoder_seq`` tokens, under FakeTensorMode with eager attention (CPU sdpa takes its math path with
T5's trainable position bias, which CUDA's memory-efficient kernel does not: that rule is hand arithmetic here).
Weights, gradients and optimizer states exactly; the peak and the forward end within 2% (the traces agree to
0.4%). Dropout is off: the CPU dropout kernel keeps a wider mask than CUDA's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_configs import ENCODER_DECODER, FAMILIES

from vramwise.errors import VramwiseError
from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.params import parameter_groups
from vramwise.verify.trace import TraceRecipe, trace_training
from vramwise.workload import TrainSetup


def _config(name: str) -> dict[str, Any]:
    # real T5 checkpoints state both ids (T5's shift_right starts the decoder from decoder_start_token_id)
    return {**ENCODER_DECODER[name], "dropout_rate": 0.0, "decoder_start_token_id": 0, "pad_token_id": 0}


def _estimate(name: str, **flat: Any) -> Estimate:
    spec = spec_from_config(_config(name), name=name, source="test")
    return estimate_training(spec, TrainSetup.from_flat(cuda_context_mib=0, allocator_fraction=0.0, **flat))


CASES = [
    ("t5", TraceRecipe(batch=2, seq=256, decoder_seq=128, precision="bf16", attention="eager")),
    ("t5", TraceRecipe(batch=4, seq=128, decoder_seq=256, precision="fp32", attention="eager")),
    ("t5-v1.1", TraceRecipe(batch=2, seq=256, decoder_seq=64, precision="bf16", attention="eager")),
    ("t5-v1.1", TraceRecipe(batch=2, seq=128, decoder_seq=128, precision="fp32", attention="eager")),
    ("mt5", TraceRecipe(batch=2, seq=256, decoder_seq=128, precision="bf16-mixed", attention="eager")),
    # LoRA (peft's default for T5: q and v in every attention; all-linear; the MLP's wo and k)
    *[
        (name, TraceRecipe(batch=2, seq=256, decoder_seq=128, attention="eager", lora_r=8, lora_targets=targets))
        for name, targets in (("t5", ("q", "v")), ("t5-v1.1", ("all-linear",)), ("t5", ("wo", "k")))
    ],
    ("t5-v1.1", TraceRecipe(batch=2, seq=128, precision="fp32", attention="eager", lora_r=16, lora_targets=("q", "v"))),
]


@pytest.mark.parametrize(("name", "recipe"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_encoder_decoder_training_matches_the_traced_step(name: str, recipe: TraceRecipe) -> None:
    traced = trace_training(_config(name), recipe)
    est = _estimate(
        name,
        batch=recipe.batch,
        seq=recipe.seq,
        decoder_seq=recipe.decoder_seq or None,
        precision=recipe.precision,
        attention="eager",
        peft="lora" if recipe.lora_r else "none",
        lora_r=recipe.lora_r or 16,
        lora_targets=recipe.lora_targets,
    )
    assert sum(t.bytes for t in est.persistent if t.name.startswith("weights/")) == traced.params
    assert est.term("gradients").bytes == traced.grads
    assert est.term("optimizer/states").bytes == traced.optimizer_states
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.02)
    forward_end = est.phase_total(next(p for p in est.phases if p.kind is PhaseKind.FORWARD_END))
    assert forward_end == pytest.approx(traced.marks["forward_end"], rel=0.02)


def test_every_parameter_trains() -> None:
    spec = spec_from_config(_config("t5-v1.1"), name="t5", source="test")
    est = _estimate("t5-v1.1", seq=64, precision="fp32")
    assert est.term("gradients").bytes == 4 * sum(g.count for g in parameter_groups(spec))


def test_sdpa_keeps_the_kernel_output_and_the_bias_masks() -> None:
    # hand arithmetic for CUDA's memory-efficient kernel (t5: h 64, 6 heads x d_kv 16 = inner 96, 2 + 3 layers):
    # per attention call sdpa keeps the output (c·inner) and log-sum-exp (4·heads) where eager keeps the
    # probabilities (c·heads·keys); the bias masks are the encoder's (s_e²), one per decoder layer (s_d²) and the
    # cross-attention's zeros (s_d·s_e), x c x heads
    b, se, sd, c, heads, inner = 2, 256, 128, 2, 6, 96
    eager = _estimate("t5", batch=b, seq=se, decoder_seq=sd, precision="bf16", attention="eager")
    sdpa = _estimate("t5", batch=b, seq=se, decoder_seq=sd, precision="bf16", attention="sdpa")
    kernel = c * inner + 4 * heads  # what sdpa keeps per query instead of the probabilities
    encoder = 2 * se * (c * heads * se - kernel)  # 2 layers of self-attention over s_e keys
    decoder = 3 * sd * ((c * heads * sd - kernel) + (c * heads * se - kernel))  # self over s_d, cross over s_e
    assert eager.term("activations/encoder").bytes - sdpa.term("activations/encoder").bytes == b * encoder
    assert eager.term("activations/decoder").bytes - sdpa.term("activations/decoder").bytes == b * decoder
    assert sdpa.term("activations/position_bias_masks").bytes == c * heads * (se * se + 3 * sd * sd + sd * se)


@pytest.mark.parametrize(
    ("flat", "field"),
    [
        ({"peft": "dora"}, "peft"),
        ({"peft": "lora", "lora_dropout": 0.1}, "lora_dropout"),
        ({"recompute": "full"}, "recompute"),
        ({"tp": 2}, "tp"),
        ({"attention": "flash"}, "attention"),
        ({"precision": "fp16-mixed"}, "precision"),
    ],
)
def test_refused_in_one_line(flat: dict[str, Any], field: str) -> None:
    with pytest.raises(VramwiseError) as err:
        _estimate("t5", seq=64, **flat)
    assert err.value.field == field and "\n" not in str(err.value)


def test_decoder_seq_is_an_encoder_decoder_option() -> None:
    spec = spec_from_config(FAMILIES["llama"], name="llama", source="test")
    with pytest.raises(VramwiseError) as err:
        estimate_training(spec, TrainSetup.from_flat(seq=64, decoder_seq=32))
    assert err.value.field == "decoder_seq"


def test_verify_traces_t5_training_with_eager_attention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vramwise.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config("t5-v1.1")))
    argv = ["verify", str(path), "-b", "2", "-s", "128", "--decoder-seq", "64", "--json"]
    assert main([*argv, "--attention", "eager"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["gradients"]["estimate"] == rows["gradients"]["measured"]
    assert abs(rows["peak"]["error"]) < 0.02
    assert main(argv) == 2  # sdpa: the CPU's math path is not CUDA's kernel
    assert "--attention eager only" in capsys.readouterr().err

"""Training an encoder (BERT: masked LM, pooled sequence classifier, token classifier) against the traced step,
and the backward's own temporaries (the last MLP's, the final RMSNorm's, eager attention's) that decide the peak
when the loss is small.

Oracle: ``vramwise.verify.trace`` (the transformers model of the same config, one step after another under
FakeTensorMode). Weights, gradients and optimizer states exactly; the peak within 5% and the traced step's
forward end within 2% (tests/estimate/test_train_vs_trace.py's bound for the peak). The configs turn dropout off:
the CPU dropout kernel keeps a wider mask than CUDA's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_configs import HEADS

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Estimate, PhaseKind
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.adapters import spec_from_config
from vramwise.verify.trace import TraceRecipe, trace_training
from vramwise.workload import TrainSetup

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _config(name: str) -> dict[str, Any]:
    return {**HEADS[name], **(NO_DROPOUT if HEADS[name]["model_type"] in ("bert", "roberta") else {})}


def _estimate(name: str, recipe: TraceRecipe) -> Estimate:
    spec = spec_from_config(_config(name), name=name, source="test")
    setup = TrainSetup.from_flat(
        batch=recipe.batch,
        seq=recipe.seq,
        precision=recipe.precision,
        attention=recipe.attention,
        recompute=recipe.recompute,
        cuda_context_mib=0,
        allocator_fraction=0.0,
    )
    return estimate_training(spec, setup)


CASES = [
    *[
        (name, TraceRecipe(batch=2, seq=256, precision=p))
        for name in ("bert-mlm", "bert-seq-cls", "bert-token-cls")
        for p in ("bf16", "fp32")
    ],
    ("bert-mlm", TraceRecipe(batch=2, seq=256, precision="amp")),
    ("bert-mlm", TraceRecipe(batch=2, seq=256, recompute="full")),
    ("bert-token-cls", TraceRecipe(batch=2, seq=256, recompute="full")),
    ("bert-mlm", TraceRecipe(batch=1, seq=512, attention="eager")),
    # a small loss: the peak moves into the backward (the last MLP's, eager attention's, the final norm's)
    ("bert-seq-cls", TraceRecipe(batch=8, seq=512)),
    ("bert-token-cls", TraceRecipe(batch=8, seq=512, precision="fp32")),
    ("bert-seq-cls", TraceRecipe(batch=1, seq=512, attention="eager")),
    ("llama-seq-cls", TraceRecipe(batch=8, seq=512)),
    ("llama-token-cls", TraceRecipe(batch=8, seq=512, precision="fp32")),
    ("llama-seq-cls", TraceRecipe(batch=1, seq=512, attention="eager")),
    # RoBERTa: BERT's layers and heads, RobertaClassificationHead on the first token's view
    ("roberta-mlm", TraceRecipe(batch=2, seq=256)),
    ("roberta-seq-cls", TraceRecipe(batch=8, seq=512)),
    ("roberta-token-cls", TraceRecipe(batch=2, seq=256, precision="fp32")),
]


@pytest.mark.parametrize(("name", "recipe"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_encoder_and_classifier_training_match_the_traced_step(name: str, recipe: TraceRecipe) -> None:
    traced = trace_training(_config(name), recipe)
    est = _estimate(name, recipe)
    assert sum(t.bytes for t in est.persistent if t.name.startswith("weights/")) == traced.params
    assert est.term("optimizer/states").bytes == traced.optimizer_states
    assert est.term("gradients").bytes == traced.grads
    assert est.peak_bytes == pytest.approx(traced.peak, rel=0.05)
    if recipe.recompute == "none":
        forward_end = est.phase_total(next(p for p in est.phases if p.kind is PhaseKind.FORWARD_END))
        assert forward_end == pytest.approx(traced.marks["forward_end"], rel=0.02)


@pytest.mark.parametrize(
    ("name", "recipe", "kind"),
    [
        ("bert-seq-cls", TraceRecipe(batch=8, seq=512), PhaseKind.BACKWARD_LAYER),
        ("bert-seq-cls", TraceRecipe(batch=1, seq=512, attention="eager"), PhaseKind.BACKWARD_ATTENTION),
        ("llama-seq-cls", TraceRecipe(batch=8, seq=512), PhaseKind.BACKWARD_HEAD),
        ("bert-mlm", TraceRecipe(batch=8, seq=512), PhaseKind.BACKWARD_LOSS),
    ],
)
def test_the_peak_phase_is_the_traced_moment(name: str, recipe: TraceRecipe, kind: PhaseKind) -> None:
    # read off the traced step op by op: the down_proj backward (BERT), the attention's softmax backward (eager),
    # the final RMSNorm's fp32 backward (Llama), the vocabulary-wide loss backward (masked LM)
    est = _estimate(name, recipe)
    assert est.peak_phase is not None and est.peak_phase.kind is kind


def test_masked_lm_loss_covers_every_position_in_the_compute_dtype() -> None:
    # BertForMaskedLM: CrossEntropyLoss on the (b·s, V) logits as they are (bf16 here); -100 labels are ignored
    # by the loss, not by the head: log_softmax keeps b·s·V·2 B and its backward two more of those
    est = _estimate("bert-mlm", TraceRecipe(batch=4, seq=128, precision="bf16"))
    assert est.term("activations/loss").bytes == 4 * 128 * 8000 * 2
    assert est.term("loss/backward").bytes == 2 * 4 * 128 * 8000 * 2
    # the head: transform dense, GELU and decoder inputs (3 x 2 B x h) and its LayerNorm (input, mean, rstd)
    assert est.term("activations/mlm_head").bytes == 4 * 128 * (3 * 2 * 256 + 2 * (256 + 2))


def test_pooled_classifier_keeps_the_last_hidden_state() -> None:
    # BertPooler's dense reads hidden_states[:, 0], a view: the whole (b, s, h) output stays alive
    est = _estimate("bert-seq-cls", TraceRecipe(batch=4, seq=128, precision="bf16"))
    assert est.term("activations/pooler").bytes == 4 * 128 * 256 * 2


@pytest.mark.parametrize(
    ("name", "flat", "field"),
    [
        ("bert-bare", {}, "model"),
        ("bert-mlm", {"peft": "lora", "lora_targets": ("q_proj",)}, "peft"),
        ("bert-seq-cls", {"loss": "chunked"}, "loss"),
    ],
)
def test_refused_in_one_line(name: str, flat: dict[str, Any], field: str) -> None:
    spec = spec_from_config(_config(name), name=name, source="test")
    with pytest.raises(InvalidWorkloadError) as err:
        estimate_training(spec, TrainSetup.from_flat(seq=128, **flat))
    assert err.value.field == field and "\n" not in str(err.value)


def test_cli_trains_a_masked_lm_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vramwise.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(HEADS["bert-mlm"]))
    assert main(["train", str(path), "-b", "4", "-s", "128", "--json"]) == 0
    terms = {t["name"] for t in json.loads(capsys.readouterr().out)["terms"]}
    assert {"activations/mlm_head", "activations/embedding_norm", "loss/backward"} <= terms


def test_roberta_positions_start_after_the_padding_index() -> None:
    # RobertaEmbeddings: position ids are cumsum(non-pad) + padding_idx, so 514 rows hold 512 tokens
    from vramwise.errors import VramwiseError

    spec = spec_from_config(_config("roberta-mlm"), name="roberta", source="test")
    assert spec.embedding.learned_positions == 514 and spec.max_position_embeddings == 512
    estimate_training(spec, TrainSetup.from_flat(seq=512))
    with pytest.raises(VramwiseError, match="512"):
        estimate_training(spec, TrainSetup.from_flat(seq=513))


def test_verify_refuses_attention_dropout_under_sdpa(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # BertConfig's attention_probs_dropout_prob defaults to 0.1: CUDA's sdpa kernels drop inside the kernel, the
    # CPU takes sdpa's math path and keeps the scores, so the twin cannot stand for the GPU run
    from vramwise.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(HEADS["bert-mlm"]))
    assert main(["verify", str(path), "-b", "2", "-s", "128"]) == 2
    err = capsys.readouterr().err
    assert "attention dropout" in err and len(err.strip().splitlines()) == 1


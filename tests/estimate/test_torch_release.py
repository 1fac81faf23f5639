"""``--torch-version``: before torch 1.11 autograd's softmax node keeps its input beside its output.

Source: the torch 1.10.1 wheel's include/torch/csrc/autograd/generated/Functions.h (git 302ee7bf) declares
``SoftmaxBackward0`` with ``SavedVariable self_; SavedVariable result_;`` (derivatives.yaml's
``_softmax_backward_data(grad, result, dim, self)``); the 1.11.0 wheel's (git bc2c6eda) keeps ``self_scalar_type`` and
``result_`` only. Eager attention's softmax input is a (b, heads, s, s) tensor per layer.

Oracle: arithmetic written out here, the same estimate at torch 2.13 as the baseline.
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.adapters import spec_from_config
from vramwise.workload import TrainSetup

# google-bert/bert-large-uncased config.json, with the sequence classifier of model_memory_anatomy.md
BERT_LARGE = {
    "model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 30522,
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}  # fmt: skip


def _scores(flat: dict) -> int:
    """The eager scores term at its largest phase (activations are the phases' terms, not persistent ones)."""
    spec = spec_from_config(BERT_LARGE, name="bert-large", source="test")
    est = estimate_training(spec, TrainSetup.from_flat(**flat))
    return max(
        (t.bytes for p in est.phases for t in p.transient if t.name == "activations/attention/scores"), default=0
    )


BASE = {"batch": 4, "seq": 512, "attention": "eager", "allocator_fraction": 0.0, "cuda_context_mib": 0}


@pytest.mark.parametrize("precision", ["fp32", "amp-fp16"])
def test_torch_110_keeps_the_softmax_input_in_fp32(precision: str) -> None:
    # fp32: the scores are fp32. amp-fp16: BERT's fp16 scores plus the fp32 extended mask promote to fp32, and
    # autocast's fp32 policy for softmax would cast to fp32 anyway: 4 B per score either way.
    # 24 layers x b 4 x 16 heads x 512 x 512 x 4 B = 1,610,612,736 B (16 MiB per layer per sequence)
    old = _scores({**BASE, "precision": precision, "torch_version": "1.10"})
    new = _scores({**BASE, "precision": precision, "torch_version": "2.13"})
    assert old - new == 24 * 4 * 16 * 512 * 512 * 4 == 1_610_612_736


def test_from_111_and_without_eager_scores_nothing_changes() -> None:
    base = _scores({**BASE, "precision": "fp32"})
    assert _scores({**BASE, "precision": "fp32", "torch_version": "1.11"}) == base
    sdpa = {**BASE, "attention": "sdpa", "precision": "fp32"}
    assert _scores({**sdpa, "torch_version": "1.10"}) == _scores(sdpa) == 0


def test_pure_16_bit_keeps_the_input_in_the_compute_dtype() -> None:
    # BERT's eager softmax runs in the compute dtype (no dtype=float32): bf16's input is kept, 2 B per score
    old = _scores({**BASE, "precision": "bf16", "torch_version": "1.10"})
    assert old - _scores({**BASE, "precision": "bf16"}) == 24 * 4 * 16 * 512 * 512 * 2


def test_an_upcast_softmax_without_autocast_is_refused_in_one_line() -> None:
    from vramwise.spec.load import catalog_spec

    with pytest.raises(InvalidWorkloadError) as err:
        estimate_training(
            catalog_spec("llama-3.2-1b"),
            TrainSetup.from_flat(attention="eager", precision="bf16", torch_version="1.10"),
        )
    assert err.value.field == "torch_version" and "\n" not in str(err.value)


@pytest.mark.parametrize("bad", ["1.x", "0.4", "10.1", "1.10.1", "", 1.1])
def test_a_release_that_is_not_one_is_refused(bad: object) -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        TrainSetup.from_flat(torch_version=bad)
    assert err.value.field == "torch_version" and "\n" not in str(err.value)


def test_default_is_the_pinned_torch() -> None:
    assert TrainSetup().impl.torch_version == "2.13" and not TrainSetup().impl.softmax_keeps_input


@pytest.mark.parametrize("model", ["llama-3.2-1b", "t5-small"])
def test_a_head_over_the_vocabulary_is_refused_before_111(model: str) -> None:
    # LogSoftmaxBackward0 keeps ``self_`` in 1.10.1 too: over a vocabulary that is the whole fp32 logits
    from vramwise.spec.load import catalog_spec

    with pytest.raises(InvalidWorkloadError) as err:
        estimate_training(catalog_spec(model), TrainSetup.from_flat(torch_version="1.10"))
    assert err.value.field == "torch_version" and "\n" not in str(err.value)


def test_a_classifier_says_what_is_not_counted() -> None:
    spec = spec_from_config(BERT_LARGE, name="bert-large", source="test")
    est = estimate_training(spec, TrainSetup.from_flat(**BASE, precision="fp32", torch_version="1.10"))
    assert any("log_softmax input" in n for n in est.notes)
    assert not any("log_softmax input" in n for n in estimate_training(spec, TrainSetup.from_flat(**BASE)).notes)


def test_an_moe_router_is_refused_before_111() -> None:
    from vramwise.spec.load import catalog_spec

    with pytest.raises(InvalidWorkloadError) as err:
        estimate_training(catalog_spec("mixtral-8x7b"), TrainSetup.from_flat(torch_version="1.10"))
    assert err.value.field == "torch_version" and "MoE" in str(err.value)

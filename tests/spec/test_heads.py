"""The head architectures[0] names (spec/heads.py): what is read, refused, and what the logits term becomes.

Oracles: parameter counts are in test_params_vs_transformers.py (meta device) and the traced forwards in
tests/estimate/test_infer_vs_trace.py; here, the arithmetic of each head's logits written out by hand.
"""

from __future__ import annotations

import pytest
from tiny_configs import FAMILIES, HEADS

from vramwise.errors import ConfigError, InvalidWorkloadError, UnsupportedArchitectureError
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.logits import logits
from vramwise.estimate.plan import Vars
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.traits import HeadKind
from vramwise.workload import NO_OVERHEADS, InferSetup, TrainSetup


def _spec(config: dict, name: str = "m"):
    return spec_from_config(config, name=name, source="test")


def _bytes(config: dict, *, b: int, s: int, last_only: bool = True, c: int = 2) -> int:
    rule = logits(_spec(config), positions=s, c=c, last_only=last_only)
    assert rule is not None
    return rule.bytes(Vars.inference(b))


def test_absent_architectures_keep_each_family_default() -> None:
    assert _spec(FAMILIES["llama"]).head is HeadKind.CAUSAL_LM
    bert = {k: v for k, v in HEADS["bert-bare"].items() if k != "architectures"}
    assert _spec(bert).head is HeadKind.BARE and _spec(bert).pooler
    assert _spec({**FAMILIES["llama"], "architectures": []}).head is HeadKind.CAUSAL_LM
    # a wrapper (multimodal, encoder-decoder) leaves the head to the family's adapter
    wrapped = {**FAMILIES["llama"], "architectures": ["LlavaForConditionalGeneration"]}
    assert _spec(wrapped).head is HeadKind.CAUSAL_LM


def test_suffixes_name_the_heads() -> None:
    assert _spec(HEADS["gpt2-lm-head"]).head is HeadKind.CAUSAL_LM
    assert _spec(HEADS["llama-bare"]).head is HeadKind.BARE
    assert _spec(HEADS["bert-mlm"]).head is HeadKind.MASKED_LM and not _spec(HEADS["bert-mlm"]).pooler
    assert _spec(HEADS["bert-seq-cls"]).pooler and _spec(HEADS["bert-seq-cls"]).num_labels == 4
    # id2label's length, else num_labels, else PretrainedConfig's 2
    assert _spec(HEADS["llama-token-cls"]).num_labels == 5
    assert _spec(HEADS["gpt2-seq-cls"]).num_labels == 2


def test_unsupported_heads_are_refused_in_one_line() -> None:
    with pytest.raises(UnsupportedArchitectureError, match=r"ForQuestionAnswering.*heads: \*ForCausalLM"):
        _spec({**FAMILIES["llama"], "architectures": ["LlamaForQuestionAnswering"]})
    with pytest.raises(UnsupportedArchitectureError, match="LlamaForMaskedLM"):
        _spec({**FAMILIES["llama"], "architectures": ["LlamaForMaskedLM"]})
    with pytest.raises(ConfigError, match="'architectures' must be a list"):
        _spec({**FAMILIES["llama"], "architectures": "LlamaForCausalLM"})
    with pytest.raises(ConfigError, match="num_labels"):
        _spec({**HEADS["llama-token-cls"], "num_labels": 3})


def test_logits_follow_the_head() -> None:
    b, s, c, h, V = 2, 64, 2, 256, 8000
    hidden = b * s * h * c
    assert _bytes(FAMILIES["llama"], b=b, s=s) == b * V * (c + 4) + hidden  # last position, fp32 upcast
    # masked LM: every position's logits whatever last_only says, and the transform's output
    assert _bytes(HEADS["bert-mlm"], b=b, s=s) == b * s * (V + h) * c + hidden
    # decoder classifier: the score at every position, then the gathered last-token row
    assert _bytes(HEADS["llama-seq-cls"], b=b, s=s) == b * (s + 1) * 3 * c + hidden
    # BERT: the pooler's dense and tanh outputs of the first token, then the classifier's row
    assert _bytes(HEADS["bert-seq-cls"], b=b, s=s) == b * (2 * h + 4) * c + hidden
    assert _bytes(HEADS["llama-token-cls"], b=b, s=s) == b * s * 5 * c + hidden
    assert logits(_spec(HEADS["llama-bare"]), positions=s, c=c, last_only=True) is None


def test_a_bare_model_has_no_logits_phase() -> None:
    for new in (0, 4):
        setup = InferSetup(context=64, new_tokens=new, overheads=NO_OVERHEADS)
        est = estimate_inference(_spec(HEADS["llama-bare"]), setup)
        assert all(t.name != "activations/logits" for phase in est.phases for t in phase.transient)


@pytest.mark.parametrize(
    ("name", "flat", "words"),
    [
        ("llama-bare", {}, "has no head"),
        ("bert-bare", {}, "has no head"),  # BERT's heads train (tests/estimate/test_encoder_training.py)
        ("bert-mlm", {"peft": "lora", "lora_targets": ("q_proj",)}, "peft: "),
        ("llama-seq-cls", {"peft": "lora", "lora_targets": ("q_proj",)}, "peft: "),
        ("llama-token-cls", {"loss": "chunked"}, "loss: "),
        ("llama-seq-cls", {"tp": 2}, "tp: "),
    ],
)
def test_training_refuses_what_it_does_not_model_in_one_line(name: str, flat: dict, words: str) -> None:
    with pytest.raises(InvalidWorkloadError, match=words) as err:
        estimate_training(_spec(HEADS[name]), TrainSetup.from_flat(batch=1, seq=64, **flat))
    assert len(str(err.value).splitlines()) == 1


def test_a_decoder_classifier_trains_with_a_labels_wide_loss() -> None:
    # hand arithmetic: fp32 log-softmax over 3 labels, one row per sequence (sequence classification) or per
    # token (token classification, 5 labels), and its backward's two fp32 gradients
    b, s = 2, 64
    seq = estimate_training(_spec(HEADS["llama-seq-cls"]), TrainSetup.from_flat(batch=b, seq=s))
    assert seq.term("activations/loss").bytes == b * 3 * 4
    tok = estimate_training(_spec(HEADS["llama-token-cls"]), TrainSetup.from_flat(batch=b, seq=s))
    assert tok.term("activations/loss").bytes == b * s * 5 * 4
    # the small loss leaves the backward's own temporaries to decide its peak: they are phases (backward_workspace.py)
    assert {p.kind.value for p in tok.phases} >= {"backward (layer)", "backward (head)"}

"""The head on top of the layers, from ``architectures[0]``: one reader shared by every adapter.

A config.json names the class it was saved from (``"architectures": ["LlamaForSequenceClassification"]``);
transformers' Auto classes build that class's head, so the parameters, the logits and whether training applies
follow it. The family is the adapter's business; only the class name's suffix is read here:

  *ForCausalLM, *LMHeadModel  causal LM (GPT2LMHeadModel, GPTBigCodeForCausalLM, RWForCausalLM)
  *ForMaskedLM                masked LM (BertForMaskedLM)
  *ForSequenceClassification  Linear(h, num_labels) on the last non-pad token (decoders) or the pooled first (BERT)
  *ForTokenClassification     Linear(h, num_labels) with bias on every position
  *Model                      no head (BertModel keeps its pooler)

Absent (or an empty list): the family's default as its adapter built it (causal LM, BertModel for BERT).
``*ForConditionalGeneration`` is a multimodal or encoder-decoder wrapper whose adapter decides the head.
Anything else (``*ForQuestionAnswering``, ``GPT2DoubleHeadsModel``) is refused in one line.
"""

from __future__ import annotations

import dataclasses

from vramwise.errors import UnsupportedArchitectureError
from vramwise.spec.adapters.config import RawConfig, shown
from vramwise.spec.model import ModelSpec
from vramwise.spec.traits import HeadKind

# (suffix, head), longest first so that "ForCausalLM" is not read as "...Model"
_SUFFIXES = (
    ("ForSequenceClassification", HeadKind.SEQUENCE_CLASSIFICATION),
    ("ForTokenClassification", HeadKind.TOKEN_CLASSIFICATION),
    ("ForMaskedLM", HeadKind.MASKED_LM),
    ("ForCausalLM", HeadKind.CAUSAL_LM),
    ("LMHeadModel", HeadKind.CAUSAL_LM),
    ("Model", HeadKind.BARE),
)
_CLASS = {
    HeadKind.CAUSAL_LM: "*ForCausalLM",
    HeadKind.MASKED_LM: "*ForMaskedLM",
    HeadKind.SEQUENCE_CLASSIFICATION: "*ForSequenceClassification",
    HeadKind.TOKEN_CLASSIFICATION: "*ForTokenClassification",
    HeadKind.BARE: "*Model",
}
# PretrainedConfig.__init__ (configuration_utils.py): num_labels defaults to 2 when id2label is absent
DEFAULT_LABELS = 2


def _architecture(cfg: RawConfig) -> str | None:
    raw = cfg.data.get("architectures")
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list) or not isinstance(raw[0], str):
        raise cfg.error(
            "architectures",
            f"field 'architectures' must be a list of class names, got {shown(raw)}",
            "a list of transformers class names",
        )
    return raw[0]


def head_of(cfg: RawConfig, family: tuple[HeadKind, ...]) -> HeadKind | None:
    """The head ``architectures[0]`` names (None: absent or a wrapper, the adapter's default stands)."""
    name = _architecture(cfg)
    if name is None or name.endswith("ForConditionalGeneration"):
        return None
    head = next((kind for suffix, kind in _SUFFIXES if name.endswith(suffix)), None)
    if head is None or head not in family:
        supported = ", ".join(_CLASS[k] for k in family)
        raise UnsupportedArchitectureError(
            f"{cfg.source}: architectures[0] {shown(name)} is not supported for this family; supported heads: "
            f"{supported}",
            field="architectures",
            allowed=supported,
        )
    return head


def num_labels(cfg: RawConfig) -> int:
    """len(id2label), else num_labels, else 2, as PretrainedConfig resolves them; the two must agree."""
    labels = cfg.data.get("id2label")
    if labels is not None and not isinstance(labels, dict):
        raise cfg.error("id2label", f"field 'id2label' must be an object, got {shown(labels)}", "an object")
    counted = cfg.pos_int("num_labels", DEFAULT_LABELS if not labels else len(labels))
    if labels and counted != len(labels):
        raise cfg.error(
            "num_labels",
            f"'num_labels' ({counted}) must equal the length of 'id2label' ({len(labels)})",
            str(len(labels)),
        )
    return counted


def apply_head(spec: ModelSpec, cfg: RawConfig) -> ModelSpec:
    """``spec`` with the head ``architectures[0]`` names; unchanged when the config names none."""
    head = head_of(cfg, spec.traits.heads)
    if head is None or head is spec.traits.head:
        return spec
    changes: dict = {"traits": dataclasses.replace(spec.traits, head=head)}
    if spec.traits.pooled_classifier:
        # BertModel(config, add_pooling_layer=False) in BertForMaskedLM and BertForTokenClassification
        changes["pooler"] = head in (HeadKind.BARE, HeadKind.SEQUENCE_CLASSIFICATION)
    if head is HeadKind.MASKED_LM:
        changes["head_bias"] = True  # BertLMPredictionHead.bias, one per vocabulary entry
    if head in (HeadKind.SEQUENCE_CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION):
        changes["num_labels"] = num_labels(cfg)
    return dataclasses.replace(spec, **changes)

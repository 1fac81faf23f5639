"""Family traits (spec/traits.py): only the spec knows the family, and its traits match transformers' code.

Oracles: the transformers model of each tiny family config built on the meta device (its modules: fused
projections, position tables, rotary embeddings, linear names), a bf16 step of its RMSNorm (which tensors
autograd keeps), the source of its modeling file (softmax dtype, torch.cat in rotary, KV broadcast, router
cast) and peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny_configs import BLOOM, FAMILIES, GPT_BIGCODE, HEADS, MISTRAL_WINDOW

from vramwise.catalog import models
from vramwise.errors import InvalidWorkloadError, UnsupportedArchitectureError
from vramwise.estimate.train.lora import linear_modules, lora_targets
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.adapters.config import RawConfig
from vramwise.spec.adapters.decoders import decoder_spec
from vramwise.spec.load import catalog_spec
from vramwise.spec.model import AttentionSpec, EmbeddingSpec, MlpSpec, ModelSpec, NormSpec
from vramwise.spec.traits import HeadKind, ImplTraits, Positions

# the traced families plus those traced for inference only or not yet (gpt_bigcode, bloom)
TRAIT_FAMILIES = {**FAMILIES, "gpt_bigcode": GPT_BIGCODE, "bloom": BLOOM}

SRC = Path(__file__).resolve().parents[2] / "src" / "vramwise"

# Modules outside spec/ that may name the model_type, and why. A label is printed, never branched on.
ALLOWED = {
    "report/titles.py": "the model label in every title prints the model_type",
    "app/listings.py": "`vramwise models` lists each entry's model_type",
    "report/listings.py": "`vramwise models` prints the model_type column",
    "report/json_out.py": "the JSON document's model.model_type label",
    "mcpserver/schemas.py": "the list_models tool's output schema names the `vramwise models --json` rows' columns",
    "verify/trace.py": "builds the transformers model: AutoConfig.for_model(model_type)",
    "configs/axolotl.py": "Axolotl's own YAML key model_type (the transformers class), listed as a key it ignores",
}


def _reads_model_type(tree: ast.AST) -> list[int]:
    """Lines reading ``x.model_type`` or the key ``"model_type"`` (docstrings mentioning it do not count)."""
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Attribute) and node.attr == "model_type")
        or (isinstance(node, ast.Constant) and node.value == "model_type")
    )


def _allowed(rel: str) -> str | None:
    return next((key for key in ALLOWED if rel == key or rel.startswith(key + "/") or rel == key + ".py"), None)


def test_only_spec_reads_the_model_type() -> None:
    files = [p for p in SRC.rglob("*.py") if "spec" not in p.relative_to(SRC).parts[:1]]
    assert len(files) > 30  # the scan sees the package, not an empty directory
    hits: dict[str, list[int]] = {}
    for path in files:
        lines = _reads_model_type(ast.parse(path.read_text()))
        if lines:
            hits[path.relative_to(SRC).as_posix()] = lines
    leaks = {rel: lines for rel, lines in hits.items() if _allowed(rel) is None}
    assert not leaks, f"read spec.traits instead of the model_type (spec/traits.py): {leaks}"
    # Every allowance is still needed: its module exists and still names the model_type.
    for key in ALLOWED:
        assert any(_allowed(rel) == key for rel in hits), f"{key}: allowed but no longer reads model_type"


def test_the_scan_sees_both_forms() -> None:
    assert _reads_model_type(ast.parse('a = spec.model_type\nb = data["model_type"]\n"""model_type doc"""')) == [1, 2]


# --- traits against transformers ----------------------------------------------------------------------


def _spec(family: str) -> ModelSpec:
    return spec_from_config(TRAIT_FAMILIES[family], name=family, source="test")


@functools.cache
def _hf(family: str) -> Any:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    data = dict(TRAIT_FAMILIES[family])
    hf_config = transformers.AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config)


def _layer0(model: Any, index: int = 0) -> Any:
    torch = pytest.importorskip("torch")
    layers = model.config.num_hidden_layers
    return next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == layers)[index]


_ATTENTION = ("self_attn", "attn", "attention", "self_attention")


def _linears(layer: Any) -> dict[str, list[str]]:
    """Leaf linears of one decoder layer (nn.Linear, GPT-2's Conv1D) by qualified name, attention vs the rest."""
    torch = pytest.importorskip("torch")
    out: dict[str, list[str]] = {"attention": [], "mlp": []}
    for name, m in layer.named_modules():
        if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D":
            out["attention" if name.split(".")[0] in _ATTENTION else "mlp"].append(name)
    return out


def _modeling(family: str) -> Any:
    return sys.modules[type(_hf(family)).__module__]


DENSE = [f for f in TRAIT_FAMILIES if _spec(f).moe is None]


@pytest.mark.parametrize("family", list(TRAIT_FAMILIES))
def test_positions_match_the_model(family: str) -> None:
    torch = pytest.importorskip("torch")
    spec, model = _spec(family), _hf(family)
    rotary = any("Rotary" in type(m).__name__ for m in model.modules())
    assert spec.traits.rotary == rotary
    tables = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding) and m is not model.get_input_embeddings() and m.num_embeddings > 2
    ]
    if spec.traits.positions is Positions.LEARNED:
        # the table's rows (OPT's include its offset of 2) and the limit, both from the config
        assert [t.num_embeddings for t in tables] == [spec.embedding.learned_positions]
        limit = TRAIT_FAMILIES[family].get("n_positions", TRAIT_FAMILIES[family].get("max_position_embeddings"))
        assert spec.max_position_embeddings == (limit or model.config.max_position_embeddings)
    else:
        assert tables == [] and spec.embedding.learned_positions == 0


@pytest.mark.parametrize("family", DENSE)
def test_fused_projections_and_peft_names_match_the_model(family: str) -> None:
    spec = _spec(family)
    leaves = _linears(_layer0(_hf(family)))
    # q, k, v and o as four linears, or a fused qkv and o as two
    assert spec.traits.fused_qkv == (len(leaves["attention"]) == 2), leaves
    assert spec.traits.fused_gate_up == (spec.mlp.gated and len(leaves["mlp"]) == 2), leaves
    # peft matches module-name suffixes: the names vramwise offers are exactly the layer's linears
    names = {n.rsplit(".", 1)[-1] for group in leaves.values() for n in group}
    assert {m.name for m in linear_modules(spec)} == names


@pytest.mark.parametrize("family", ["phi3", "gpt2", "gpt_neox", "falcon"])
def test_fused_qkv_families(family: str) -> None:
    assert _spec(family).traits.fused_qkv


@pytest.mark.parametrize("family", [f for f in TRAIT_FAMILIES if _spec(f).norm.kind == "rms"])
def test_norm_weight_fp32_matches_what_autograd_keeps(family: str) -> None:
    """A bf16 step of the family's RMSNorm: Llama keeps a bf16 normalised tensor for the weight, Gemma fp32."""
    torch = pytest.importorskip("torch")
    h = TRAIT_FAMILIES[family]["hidden_size"]
    norm_class = next(type(m) for m in _layer0(_hf(family)).modules() if type(m).__name__.endswith("RMSNorm"))
    norm = norm_class(h).to(torch.bfloat16)
    x = torch.randn(4, h, dtype=torch.bfloat16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        norm(x)
    half_normalised = any(t.dtype == torch.bfloat16 and tuple(t.shape) == (4, h) for t in saved)
    assert _spec(family).traits.norm_weight_fp32 == (not half_normalised)


@pytest.mark.parametrize("family", list(TRAIT_FAMILIES))
def test_softmax_dtype_matches_the_eager_code(family: str) -> None:
    module = _modeling(family)
    attention = type(getattr(_layer0(_hf(family)), next(a for a in _ATTENTION if hasattr(_layer0(_hf(family)), a))))
    code = inspect.getsource(getattr(module, "eager_attention_forward", attention))
    fp32 = re.search(r"softmax\([^)]*dtype=torch\.float32", code) is not None
    assert _spec(family).traits.softmax_in_compute_dtype == (not fp32)


# MLA (DeepSeek) concatenates its nope and rope parts too; activations._mla_attention counts that copy itself.
ROTARY = [f for f in TRAIT_FAMILIES if _spec(f).traits.rotary and _spec(f).attention.mla is None]


@pytest.mark.parametrize("family", ROTARY)
def test_rotary_cat_copy_matches_the_rotary_code(family: str) -> None:
    """Rotated and passed-through parts of q joined by torch.cat (in apply_rotary_pos_emb or the attention)."""
    code = inspect.getsource(_modeling(family))
    cat = re.search(r"torch\.cat\(\s*[(\[]\s*\(?\s*q(uery)?_", code) is not None
    if family == "gpt_oss":
        # _apply_rotary_emb ends in torch.cat((first_, second_)), which leaves q contiguous as well; gpt-oss
        # runs eager (where o_proj's copy is counted anyway) or flash (untraced), so the trait stays False.
        assert not cat and not _spec(family).traits.rotary_cat_copy
        assert "torch.cat((first_, second_)" in code
        return
    assert _spec(family).traits.rotary_cat_copy == cat


@pytest.mark.parametrize("family", list(TRAIT_FAMILIES))
def test_kv_broadcast_matches_the_attention_code(family: str) -> None:
    code = inspect.getsource(_modeling(family))
    assert _spec(family).traits.kv_broadcast == ("torch.broadcast_to(key" in code)


@pytest.mark.parametrize("family", [f for f in TRAIT_FAMILIES if _spec(f).moe is not None])
def test_router_input_dtype_matches_the_router_code(family: str) -> None:
    moe = _spec(family).moe
    assert moe is not None
    mlp = _layer0(_hf(family), moe.moe_layers[0]).mlp
    router = getattr(mlp, "router", None) or mlp.gate
    code = inspect.getsource(type(router).forward)
    fp32 = re.search(r"hidden_states\.(type|to)\(torch\.float32\)", code) is not None
    assert _spec(family).traits.router_input_fp32 == fp32


# vramwise's LoRA defaults where they differ from peft 0.21's mapping (a behaviour change to decide on its own)
PEFT_DIVERGENCES = {
    "qwen2_moe": ("q_proj", "v_proj"),
    "qwen3_moe": ("q_proj", "v_proj"),
    "phi3": ("qkv_proj",),
    "gemma3_text": (),
}


@pytest.mark.parametrize("name", sorted(models()))
def test_peft_default_targets_match_peft(name: str) -> None:
    peft = pytest.importorskip("peft.utils.constants")
    spec = catalog_spec(name)
    if spec.traits.head is not HeadKind.CAUSAL_LM:
        # a bare model does not train, and an encoder's heads train without peft
        # (estimate/train/training.py _check_classifier): no LoRA defaults are ever asked for
        return
    expected = tuple(peft.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(spec.model_type) or ())
    assert spec.traits.peft_default_targets == PEFT_DIVERGENCES.get(spec.model_type, expected)


@pytest.mark.parametrize("name", sorted(models()))
def test_traits_agree_with_the_shapes(name: str) -> None:
    spec = catalog_spec(name)
    assert (spec.traits.positions is Positions.LEARNED) == (spec.embedding.learned_positions > 0)
    assert spec.lm_head == (spec.traits.head in (HeadKind.CAUSAL_LM, HeadKind.MASKED_LM))
    # the pooler exists in BertModel and under its sequence classifier only (spec/heads.py apply_head)
    pooled = spec.traits.pooled_classifier and spec.traits.head in (HeadKind.BARE, HeadKind.SEQUENCE_CLASSIFICATION)
    assert spec.pooler == pooled
    if not spec.traits.pooled_classifier:
        assert spec.traits.head is HeadKind.CAUSAL_LM


# --- a new family gets explicit, documented defaults ----------------------------------------------------


def test_default_traits_are_llamas_code_without_a_lora_default() -> None:
    """ImplTraits() is the documented baseline (spec/traits.py): Llama's code, and no LoRA targets."""
    assert ImplTraits() == ImplTraits(
        positions=Positions.ROTARY,
        head=HeadKind.CAUSAL_LM,
        fused_qkv=False,
        fused_gate_up=False,
        rotary_cat_copy=False,
        norm_weight_fp32=False,
        softmax_in_compute_dtype=False,
        kv_broadcast=False,
        expert_intermediates=3,
        router_input_fp32=False,
        peft_modules=None,
        peft_default_targets=(),
        heads=(HeadKind.CAUSAL_LM, HeadKind.SEQUENCE_CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION, HeadKind.BARE),
        pooled_classifier=False,
        eager_only=False,
        mlp_sees_attention_output=False,
    )
    assert _spec("llama").traits == dataclasses.replace(
        ImplTraits(),
        peft_default_targets=("q_proj", "v_proj"),
        ia3_targets=("k_proj", "v_proj", "down_proj"),  # peft's IA3 mapping for "llama"
        ia3_feedforward=("down_proj",),
    )


def test_a_spec_cannot_be_built_without_traits() -> None:
    with pytest.raises(TypeError, match="traits"):
        ModelSpec(  # type: ignore[call-arg]
            name="x",
            model_type="new",
            hidden_size=64,
            num_layers=2,
            embedding=EmbeddingSpec(vocab_size=100),
            attention=AttentionSpec(num_heads=4, num_kv_heads=4, head_dim=16),
            mlp=MlpSpec(gated=True, intermediate_size=128),
            norm=NormSpec(kind="rms"),
        )


def test_a_new_family_through_the_generic_decoder_is_not_silently_llama() -> None:
    cfg = RawConfig({**FAMILIES["llama"], "model_type": "newfamily"}, "test")
    attention = AttentionSpec(num_heads=8, num_kv_heads=2, head_dim=32)
    spec = decoder_spec(cfg, "new", attention=attention, traits=ImplTraits(), tied_default=False)
    assert spec.traits == ImplTraits()
    # peft knows no default for a family it does not list: the user must name the targets
    with pytest.raises(InvalidWorkloadError, match="peft has no default for new"):
        lora_targets(spec, ())
    assert [m.name for m in lora_targets(spec, ("q_proj",))] == ["q_proj"]
    # and a config of an unknown model_type is refused, never parsed as Llama
    with pytest.raises(UnsupportedArchitectureError, match="newfamily"):
        spec_from_config({**FAMILIES["llama"], "model_type": "newfamily"}, name="new", source="test")


# --- heads (spec/heads.py) against transformers' Auto mappings ------------------------------------------

_HEAD_MAPPINGS = {
    HeadKind.CAUSAL_LM: "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    HeadKind.MASKED_LM: "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    HeadKind.SEQUENCE_CLASSIFICATION: "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    HeadKind.TOKEN_CLASSIFICATION: "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    HeadKind.BARE: "MODEL_MAPPING_NAMES",
}
_ONE_PER_TYPE = {
    **{c["model_type"]: c for c in TRAIT_FAMILIES.values()},
    "mistral": MISTRAL_WINDOW,
    "bert": HEADS["bert-bare"],
}


@pytest.mark.parametrize("model_type", sorted(_ONE_PER_TYPE))
def test_each_family_offers_the_heads_transformers_builds(model_type: str) -> None:
    """A head is accepted exactly when transformers has its class (BertLMHeadModel, a causal BERT, is not
    modelled: its head is the masked LM's, and no published checkpoint names it)."""
    auto = pytest.importorskip("transformers.models.auto.modeling_auto")
    spec = spec_from_config(_ONE_PER_TYPE[model_type], name=model_type, source="test")
    offered = {kind for kind, mapping in _HEAD_MAPPINGS.items() if model_type in getattr(auto, mapping)}
    if model_type == "bert":
        offered.discard(HeadKind.CAUSAL_LM)
    assert set(spec.traits.heads) == offered


@pytest.mark.parametrize("name", sorted(HEADS))
def test_the_head_is_the_class_transformers_builds(name: str) -> None:
    """Its class name's suffix, as transformers' Auto mapping of the config's model_type names it."""
    auto = pytest.importorskip("transformers.models.auto.modeling_auto")
    config = HEADS[name]
    spec = spec_from_config(config, name=name, source="test")
    assert getattr(auto, _HEAD_MAPPINGS[spec.head])[config["model_type"]] == config["architectures"][0]

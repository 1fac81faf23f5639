"""What each peft method trains, tensor by tensor, as peft 0.21.2 builds it (all in fp32: peft creates its
adapters in fp32 and ``autocast_adapter_dtype`` keeps them there on a 16-bit base).

  LoRA / QLoRA   A (r, in) and B (out, r) per adapted module (``lora.py``); on ``embed_tokens``
                 lora_embedding_A (r, vocab) and lora_embedding_B (h, r) (tuners/lora/layer.py Embedding).
  DoRA           LoRA plus a magnitude vector of ``out`` per module (tuners/lora/dora.py DoraLinearLayer.
                 update_layer: ``self.weight = nn.Parameter(weight_norm)``, the norm of W + BA per output row).
  IA3            one vector per target: ``out`` for an output-scaled module, ``in`` for a feedforward module
                 (tuners/ia3/layer.py IA3Layer.update_layer: ia3_l of (out, 1) or (1, in)).
  prompt tuning  an embedding of n virtual tokens x token_dim (tuners/prompt_tuning/model.py PromptEmbedding;
                 token_dim is the config's hidden_size, utils/other.py _prepare_prompt_learning_config).
  prefix tuning  an embedding of n x (layers x 2 x token_dim), token_dim = kv heads x head_dim when the config
                 has num_key_value_heads (the same _prepare_prompt_learning_config, "For grouped-query
                 attention"); with prefix_projection, an embedding (n, token_dim) and the MLP token_dim ->
                 encoder_hidden_size (default token_dim) -> layers x 2 x token_dim, with biases
                 (tuners/prefix_tuning/model.py PrefixEncoder).
Checked against peft's own trainable parameters on the meta device (tests/estimate/test_peft_methods.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError, shown
from vramwise.estimate.train.layout import Stage
from vramwise.estimate.train.lora import LoraModule, linear_modules
from vramwise.estimate.train.optimizers import Tensor
from vramwise.spec.model import ModelSpec
from vramwise.spec.traits import HeadKind
from vramwise.workload import PeftConfig, PeftMethod, Recompute, TrainSetup
from vramwise.workload.options import AdapterDtype

ADAPTER_BYTES = 4  # peft's adapters are fp32 (autocast_adapter_dtype=True), whatever the base dtype

LORA_LIKE = (PeftMethod.LORA, PeftMethod.QLORA, PeftMethod.LORA_8BIT, PeftMethod.DORA)
PROMPT_LEARNING = (PeftMethod.PROMPT_TUNING, PeftMethod.PREFIX_TUNING)
# The persistent term that holds each method's trainable tensors.
TERM_NAMES = {
    PeftMethod.LORA: "weights/lora",
    PeftMethod.QLORA: "weights/lora",
    PeftMethod.LORA_8BIT: "weights/lora",
    PeftMethod.DORA: "weights/lora",
    PeftMethod.IA3: "weights/ia3",
    PeftMethod.PROMPT_TUNING: "weights/prompt",
    PeftMethod.PREFIX_TUNING: "weights/prefix",
}


@dataclass(frozen=True, kw_only=True)
class Ia3Module:
    """``layers`` copies of one IA3 vector of ``size`` on module ``name`` (``feedforward``: it scales the input)."""

    name: str
    groups: tuple[str, ...]
    size: int
    layers: int
    feedforward: bool


def ia3_modules(spec: ModelSpec, targets: tuple[str, ...]) -> list[Ia3Module]:
    """IA3's vectors: the targets named (peft's mapping for the family when none), feedforward by peft's mapping."""
    if not spec.traits.ia3_feedforward:
        raise InvalidWorkloadError(
            f"peft: ia3 on {spec.name} is not modelled: its feedforward modules come from peft's IA3 mapping "
            "(TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING), read here for the Llama-named families "
            "(Llama, Mistral, Qwen2/3, Gemma); allowed: lora, dora, prompt-tuning, prefix-tuning",
            field="peft",
            allowed="lora, dora, prompt-tuning, prefix-tuning",
        )
    targets = targets or spec.traits.ia3_targets
    modules = {m.name: m for m in linear_modules(spec) if m.rank_mult == 1}
    unknown = [t for t in targets if t not in modules]
    if unknown:
        raise InvalidWorkloadError(
            f"lora_targets: {shown(', '.join(unknown), quote=False)} not an IA3 target of {spec.name}; "
            f"allowed: {', '.join(sorted(modules))}",
            field="lora_targets",
        )
    out = []
    for name in targets:
        m = modules[name]
        ff = name in spec.traits.ia3_feedforward
        out.append(
            Ia3Module(
                name=name,
                groups=m.groups,
                size=m.in_features if ff else m.out_features,
                layers=m.layers,
                feedforward=ff,
            )
        )
    return out


def prefix_token_dim(spec: ModelSpec) -> int:
    """peft's prefix width per layer and key or value: the key/value heads' width (GQA) for the families whose
    config has num_key_value_heads, the hidden size otherwise (equal for multi-head attention)."""
    att = spec.attention
    return att.num_kv_heads * att.head_dim


def prefix_params(spec: ModelSpec, n: int, *, projection: bool = False) -> int:
    """Trainable elements of peft's PrefixEncoder for ``n`` virtual tokens (one transformer submodule)."""
    d, width = prefix_token_dim(spec), spec.num_layers * 2 * prefix_token_dim(spec)
    if not projection:
        return n * width
    hidden = d  # encoder_hidden_size defaults to token_dim
    return n * d + d * hidden + hidden + hidden * width + width


def check_method(spec: ModelSpec, peft: PeftConfig, lora: list[LoraModule]) -> None:
    """Refuse, in one line, the combinations peft itself rejects or the estimate does not model."""
    method = peft.method
    if method == PeftMethod.DORA and any(m.rank_mult > 1 for m in lora):
        raise InvalidWorkloadError(
            "peft: dora on routed experts: peft 0.21's ParamWrapper refuses use_dora=True; name dense targets",
            field="lora_targets",
        )
    if method in PROMPT_LEARNING and spec.head is not HeadKind.CAUSAL_LM:
        raise InvalidWorkloadError(
            f"peft: {method} is modelled for causal LMs (PeftModelForCausalLM); {spec.name} has another head",
            field="peft",
            allowed="lora, dora, ia3",
        )
    if method == PeftMethod.PREFIX_TUNING and (
        spec.attention.kind == "mla"
        or (spec.traits.peft_modules is not None and prefix_token_dim(spec) != spec.hidden_size)
    ):
        raise InvalidWorkloadError(
            f"peft: prefix-tuning sizes its prefix by the config's hidden size, which does not match {spec.name}'s "
            "keys and values",
            field="peft",
            allowed="lora, dora, ia3, prompt-tuning",
        )


def check_setup(setup: TrainSetup) -> None:
    """Refuse, in one line, the layouts the prompt-learning methods are not modelled with, and what peft refuses."""
    method = setup.peft.method
    if method not in LORA_LIKE[:3] and method != PeftMethod.NONE and setup.peft.adapter_dtype == AdapterDtype.BF16:
        # their saved tensors are read for peft's fp32 adapters (peft_extras.py); bf16 adapters are torchtune's LoRA
        raise InvalidWorkloadError(
            f"adapter_dtype: bf16 adapters are modelled for LoRA and QLoRA (torchtune's); {method} keeps peft's fp32",
            field="adapter_dtype",
            allowed="auto or fp32",
        )
    if method in PROMPT_LEARNING and (setup.parallel.pp > 1 or setup.parallel.cp > 1):
        raise InvalidWorkloadError(
            f"peft: {method} prepends virtual tokens on one GPU's whole model; pp and cp are not modelled with it",
            field="peft",
            allowed="pp 1 and cp 1 with prompt or prefix tuning",
        )
    if method == PeftMethod.PREFIX_TUNING and setup.recompute != Recompute.NONE:
        # peft 0.21 peft_model.py PeftModel._setup_prompt_encoder: "PREFIX_TUNING does not work with gradient
        # checkpointing" (its prefix is a Cache, which checkpointing cannot replay)
        raise InvalidWorkloadError(
            "recompute: peft's prefix tuning does not work with gradient checkpointing (peft_model.py "
            "_setup_prompt_encoder); allowed: none",
            field="recompute",
            allowed="none",
        )


def adapter_tensors(spec: ModelSpec, stage: Stage, peft: PeftConfig, lora: list[LoraModule]) -> list[Tensor]:
    """The trainable tensors of ``stage``: its layers' share of per-layer adapters, the embedding's and prompt's
    on the first stage, the head's on the last."""
    share = len(stage.layers) / spec.num_layers

    def copies(place: str, layers: int) -> float:
        if place == "embedding":
            return 1.0 if stage.first else 0.0
        if place == "head":
            return 1.0 if stage.last else 0.0
        return layers * share

    method, n = peft.method, peft.num_virtual_tokens
    if method == PeftMethod.IA3:
        return [Tensor(rows=m.size, cols=1, copies=m.layers * share) for m in ia3_modules(spec, peft.lora_targets)]
    if method == PeftMethod.PROMPT_TUNING:
        return [Tensor(rows=n, cols=spec.hidden_size, copies=copies("embedding", 1))]
    if method == PeftMethod.PREFIX_TUNING:
        # one embedding holds every layer's prefix: split by the stage's share of layers
        return [Tensor(rows=n, cols=2 * prefix_token_dim(spec), copies=spec.num_layers * share)]
    tensors = []
    for m in lora:
        c = copies(m.place, m.layers)
        rank = peft.lora_r * m.rank_mult
        tensors += [Tensor(rows=rank, cols=m.in_features, copies=c), Tensor(rows=m.out_features, cols=rank, copies=c)]
        if method == PeftMethod.DORA:
            tensors.append(Tensor(rows=m.out_features, cols=1, copies=c))
    return tensors


def adapter_formula(peft: PeftConfig, count: float, width: int = ADAPTER_BYTES) -> str:
    method, n, r = peft.method, peft.num_virtual_tokens, peft.lora_r
    what = {
        PeftMethod.DORA: f"r {r} x (in + out) + magnitude out per module",
        PeftMethod.IA3: "one vector per target (out, or in for feedforward modules)",
        PeftMethod.PROMPT_TUNING: f"{n} virtual tokens x h",
        PeftMethod.PREFIX_TUNING: f"{n} virtual tokens x layers x 2 x kv width",
    }.get(method, f"r {r} x (in + out) per module")
    return f"{what}: {count:,.0f} x {width} B {'fp32' if width == 4 else 'bf16'}"


SOURCES = {
    PeftMethod.DORA: "peft 0.21 DoRA (Liu et al. 2024): LoRA A, B and a magnitude vector, fp32",
    PeftMethod.IA3: "peft 0.21 IA3 (Liu et al. 2022): learned scaling vectors, fp32",
    PeftMethod.PROMPT_TUNING: "peft 0.21 PromptEmbedding (Lester et al. 2021), fp32",
    PeftMethod.PREFIX_TUNING: "peft 0.21 PrefixEncoder (Li & Liang 2021), fp32",
}

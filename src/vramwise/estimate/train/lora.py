"""LoRA target modules, named as peft names them, with their shapes.

peft matches ``target_modules`` against module-name suffixes, so ``gate_proj`` adapts a dense MLP and a
shared expert alike. ``all-linear`` never adapts the output head. Routed experts are 3-D parameters in
transformers 5; peft 0.21 still adapts them under ``all-linear`` (module ``experts``), with rank r x E for
the down projection and 2r x E for the fused gate_up projection, and adapts the router (module ``gate``):
checked against peft's trainable parameters on a Mixtral config.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError, shown
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.spec.traits import HeadKind
from vramwise.workload import PeftConfig, PeftMethod
from vramwise.workload.options import AdapterDtype

# peft keeps adapters in fp32 whatever the base dtype: get_peft_model(autocast_adapter_dtype=True), the default,
# upcasts bf16/fp16 adapter weights to fp32 (peft tuners_utils.BaseTuner._cast_adapter_dtype). torchtune builds
# LoRALinear's lora_a / lora_b as nn.Linear under training.set_default_dtype(self._dtype) (recipes/
# lora_finetune_single_device.py _setup_model; torchtune/modules/peft/lora.py LoRALinear.__init__): bf16.
PEFT_ADAPTER_BYTES = 4
SRC_ADAPTER_DTYPE = (
    "peft get_peft_model(autocast_adapter_dtype=True) upcasts adapters to fp32; torchtune LoRALinear "
    "(torchtune/modules/peft/lora.py) is built in the model dtype"
)
# peft utils/other.py prepare_model_for_kbit_training casts every non-quantized parameter to fp32; it is skipped
# for these quantizers (the is_*_quantized checks), and torchtune's QLoRA (NF4Tensor) has no such step.
_NO_KBIT_CAST = ("gptq", "aqlm", "eetq", "hqq", "torchao")


def adapter_bytes(peft: PeftConfig) -> int:
    """Bytes per adapter element (and its gradient and optimizer states): fp32 unless asked for bf16."""
    return 2 if peft.adapter_dtype == AdapterDtype.BF16 else PEFT_ADAPTER_BYTES


def kbit_prepared(spec: ModelSpec, peft: PeftConfig) -> bool:
    """Whether peft's prepare_model_for_kbit_training casts the non-quantized parameters (norms, embeddings,
    head) to fp32: QLoRA and 8-bit LoRA as peft and the HF Trainer/TRL run them. ``adapter_dtype bf16`` stands
    for torchtune's recipe, which keeps the whole model in bf16 (no k-bit preparation)."""
    kbit = peft.method in (PeftMethod.QLORA, PeftMethod.LORA_8BIT)
    return kbit and peft.adapter_dtype != AdapterDtype.BF16 and spec.quant_method not in _NO_KBIT_CAST

# transformers' Llama names, one module per parameter group: the names of every family whose
# spec.traits.peft_modules is None (the adapters state the others, fused or renamed).
_SEPARATE = {
    "attention.q": "q_proj",
    "attention.k": "k_proj",
    "attention.v": "v_proj",
    "attention.o": "o_proj",
    "attention.q_a": "q_a_proj",
    "attention.q_b": "q_b_proj",
    "attention.kv_a": "kv_a_proj_with_mqa",
    "attention.kv_b": "kv_b_proj",
    "mlp.gate": "gate_proj",
    "mlp.up": "up_proj",
    "mlp.down": "down_proj",
    "experts_shared.gate": "gate_proj",
    "experts_shared.up": "up_proj",
    "experts_shared.down": "down_proj",
}


@dataclass(frozen=True, kw_only=True)
class LoraModule:
    """``layers`` copies of one adapted linear: ``in_features`` -> ``out_features``, of the given groups."""

    name: str
    groups: tuple[str, ...]
    in_features: int
    out_features: int
    layers: int
    rank_mult: int = 1  # the adapter's rank is r x rank_mult (peft's 3-D expert wrappers)
    # where it sits: inside the decoder layers, on the input embedding (peft's lora.Embedding: lora_embedding_A
    # (r, vocab), lora_embedding_B (h, r)) or on the output head (a plain lora.Linear, h -> vocab)
    place: str = "layers"

    def params(self, r: int) -> int:
        return r * self.rank_mult * (self.in_features + self.out_features) * self.layers


def linear_modules(spec: ModelSpec) -> list[LoraModule]:
    """Every nn.Linear inside the decoder layers, as peft sees it."""
    shapes = {}
    for g in parameter_groups(spec):
        if g.kind == "linear" and not g.per_expert and g.category in ("attention", "mlp", "experts_shared"):
            shapes[g.name] = (g.in_features, g.count // g.tensors // g.in_features, g.tensors)
    named = spec.traits.peft_modules
    entries = named if named is not None else [(_SEPARATE[n], (n,)) for n in shapes if n in _SEPARATE]
    experts = _expert_modules(spec)
    out = []
    for name, groups in entries:
        present = [g for g in groups if g in shapes]
        if not present:
            continue
        n_in, _, layers = shapes[present[0]]
        out.append(
            LoraModule(
                name=name,
                groups=tuple(present),
                in_features=n_in,
                out_features=sum(shapes[g][1] for g in present),
                layers=layers,
            )
        )
    return out + experts


def _expert_modules(spec: ModelSpec) -> list[LoraModule]:
    moe = spec.moe
    if not moe or not moe.moe_layers:
        return []
    h, i, e, n = spec.hidden_size, moe.expert_intermediate_size, moe.num_experts, len(moe.moe_layers)
    gate_up = 2 if spec.mlp.gated else 1
    return [
        LoraModule(name="gate", groups=("experts.router",), in_features=h, out_features=e, layers=n),
        LoraModule(
            name="experts",
            groups=("experts.up",),
            in_features=h,
            out_features=gate_up * i,
            layers=n,
            rank_mult=gate_up * e,
        ),
        LoraModule(name="experts", groups=("experts.down",), in_features=i, out_features=h, layers=n, rank_mult=e),
    ]


def outer_modules(spec: ModelSpec) -> list[LoraModule]:
    """LoRA on the input embedding (``embed_tokens``) and the causal LM head (``lm_head``), for the families that
    name their modules as Llama does (transformers' LlamaModel.embed_tokens, LlamaForCausalLM.lm_head); never in
    ``all-linear`` (peft's _maybe_include_all_linear_layers leaves the output layer out, and an embedding is not
    a linear). peft 0.21 tuners/lora/layer.py: Embedding.update_layer makes lora_embedding_A (r, num_embeddings)
    and lora_embedding_B (embedding_dim, r); the head is a Linear (h -> vocab), tied or not."""
    if spec.traits.peft_modules is not None or spec.embedding.proj_dim:
        return []
    h, vocab = spec.hidden_size, spec.vocab_size
    out = [
        LoraModule(
            name="embed_tokens",
            groups=("embeddings.tokens",),
            in_features=vocab,
            out_features=h,
            layers=1,
            place="embedding",
        )
    ]
    if spec.lm_head and spec.head is HeadKind.CAUSAL_LM:
        out.append(
            LoraModule(
                name="lm_head", groups=("head.lm_head",), in_features=h, out_features=vocab, layers=1, place="head"
            )
        )
    return out


def lora_targets(spec: ModelSpec, targets: tuple[str, ...]) -> list[LoraModule]:
    """The modules ``targets`` selects (peft's default for the family when empty); unknown names are errors."""
    modules = linear_modules(spec)
    outer = outer_modules(spec)
    names = sorted({m.name for m in modules + outer})
    if not targets:
        targets = spec.traits.peft_default_targets
        if not targets:
            raise InvalidWorkloadError(
                f"lora_targets: peft has no default for {spec.name}; "
                f"name them (allowed: {', '.join(names)}, all-linear)"
            )
    unknown = [t for t in targets if t not in names and t != "all-linear"]
    if unknown:
        raise InvalidWorkloadError(
            f"lora_targets: {shown(', '.join(unknown), quote=False)} not in {spec.name}; allowed: "
            f"{', '.join(names)}, all-linear",
            field="lora_targets",
        )  # shown: a 100,000-character --lora-targets was echoed whole
    chosen = modules if "all-linear" in targets else [m for m in modules if m.name in targets]
    return chosen + [m for m in outer if m.name in targets]

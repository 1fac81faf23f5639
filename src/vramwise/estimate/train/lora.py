"""LoRA target modules, named as peft names them, with their shapes.

peft matches ``target_modules`` against module-name suffixes, so ``gate_proj`` adapts a dense MLP and a
shared expert alike. ``all-linear`` never adapts the output head. Routed experts are 3-D parameters in
transformers 5; peft 0.21 still adapts them under ``all-linear`` (module ``experts``), with rank r x E for
the down projection and 2r x E for the fused gate_up projection, and adapts the router (module ``gate``):
checked against peft's trainable parameters on a Mixtral config.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups

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
# Families whose modules fuse several of our groups, or name them differently: module -> groups it holds.
_FAMILY: dict[str, dict[str, tuple[str, ...]]] = {
    "phi3": {
        "qkv_proj": ("attention.q", "attention.k", "attention.v"),
        "o_proj": ("attention.o",),
        "gate_up_proj": ("mlp.gate", "mlp.up"),
        "down_proj": ("mlp.down",),
    },
    "gpt2": {"c_attn": ("attention.q", "attention.k", "attention.v"), "c_proj": ("attention.o",), "c_fc": ("mlp.up",)},
    "gpt_neox": {
        "query_key_value": ("attention.q", "attention.k", "attention.v"),
        "dense": ("attention.o",),
        "dense_h_to_4h": ("mlp.up",),
        "dense_4h_to_h": ("mlp.down",),
    },
    "opt": {
        "q_proj": ("attention.q",),
        "k_proj": ("attention.k",),
        "v_proj": ("attention.v",),
        "out_proj": ("attention.o",),
        "fc1": ("mlp.up",),
        "fc2": ("mlp.down",),
    },
    "phi": {
        "q_proj": ("attention.q",),
        "k_proj": ("attention.k",),
        "v_proj": ("attention.v",),
        "dense": ("attention.o",),
        "fc1": ("mlp.up",),
        "fc2": ("mlp.down",),
    },
}
_FAMILY["falcon"] = _FAMILY["gpt_neox"]
_GPT2_MLP_OUT = ("c_proj", ("mlp.down",))  # gpt2 names both output projections c_proj

# peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING for the families it lists
_PEFT_DEFAULT = {
    "phi3": ("qkv_proj",),
    "gpt2": ("c_attn",),
    "gpt_neox": ("query_key_value",),
    "falcon": ("query_key_value",),
    "phi": ("q_proj", "v_proj", "fc1", "fc2"),
}
_PEFT_DEFAULT_QV = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "opt")


@dataclass(frozen=True, kw_only=True)
class LoraModule:
    """``layers`` copies of one adapted linear: ``in_features`` -> ``out_features``, of the given groups."""

    name: str
    groups: tuple[str, ...]
    in_features: int
    out_features: int
    layers: int
    rank_mult: int = 1  # the adapter's rank is r x rank_mult (peft's 3-D expert wrappers)

    def params(self, r: int) -> int:
        return r * self.rank_mult * (self.in_features + self.out_features) * self.layers


def linear_modules(spec: ModelSpec) -> list[LoraModule]:
    """Every nn.Linear inside the decoder layers, as peft sees it."""
    shapes = {}
    for g in parameter_groups(spec):
        if g.kind == "linear" and not g.per_expert and g.category in ("attention", "mlp", "experts_shared"):
            shapes[g.name] = (g.in_features, g.count // g.tensors // g.in_features, g.tensors)
    family = _FAMILY.get(spec.model_type)
    entries = list(family.items()) if family else [(_SEPARATE[n], (n,)) for n in shapes if n in _SEPARATE]
    if spec.model_type == "gpt2":
        entries.append(_GPT2_MLP_OUT)
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


def lora_targets(spec: ModelSpec, targets: tuple[str, ...]) -> list[LoraModule]:
    """The modules ``targets`` selects (peft's default for the family when empty); unknown names are errors."""
    modules = linear_modules(spec)
    names = sorted({m.name for m in modules})
    if not targets:
        if spec.model_type in _PEFT_DEFAULT:
            targets = _PEFT_DEFAULT[spec.model_type]
        elif spec.model_type in _PEFT_DEFAULT_QV:
            targets = ("q_proj", "v_proj")
        else:
            raise InvalidWorkloadError(
                f"lora_targets: peft has no default for model_type '{spec.model_type}'; "
                f"name them (allowed: {', '.join(names)}, all-linear)"
            )
    if "all-linear" in targets:
        return modules
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise InvalidWorkloadError(
            f"lora_targets: {', '.join(unknown)} not in {spec.name} ({spec.model_type}); "
            f"allowed: {', '.join(names)}, all-linear"
        )
    return [m for m in modules if m.name in targets]

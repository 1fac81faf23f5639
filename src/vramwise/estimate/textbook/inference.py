"""Textbook mode for inference: the seeds' formulas exactly as written.

Seed 000 (2024, "Transformer 模型的記憶體使用量估算"): bytes per parameter fp32 4, fp16/bf16 2, int8 1,
int4 0.5; inference ≈ weights (× 1.2 as the usual rule of thumb). Seed 002 (Zhihu p/648924115): KV cache
``4·b·l·h·(s + n)`` bytes in fp16, scaled by ``n_kv / a`` for MQA/GQA; parameters ``Vh + L(12h² + 13h)``.
"""

from __future__ import annotations

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.kv_cache import ENCODER_NOTE, check_generates
from vramwise.estimate.positions import inference_positions
from vramwise.estimate.ssm_state import refuse_textbook
from vramwise.estimate.term import Estimate, Term
from vramwise.spec.load import BareModel, Model
from vramwise.spec.params import total_params
from vramwise.workload import InferSetup

SEED_BYTES: dict[str, float] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}
SEED_000 = "seed 000: memory = params x bytes (fp32 4, fp16/bf16 2, int8 1, int4 0.5)"
SEED_002_KV = "seed 002: KV cache = 4·b·l·h·(s+n) bytes in fp16; MQA x 1/a, GQA x groups/a"


def seed_param_formula(vocab: int, hidden: int, layers: int) -> int:
    """Seed 002's parameter estimate ``V·h + L·(12h² + 13h)`` (GPT-style, untied head not counted)."""
    return vocab * hidden + layers * (12 * hidden**2 + 13 * hidden)


def seed_bytes(fmt: str) -> float:
    if fmt not in SEED_BYTES:
        raise InvalidWorkloadError(
            f"textbook mode knows the seeds' dtypes only: '{fmt}' not allowed; allowed: {', '.join(SEED_BYTES)}"
        )
    return SEED_BYTES[fmt]


def textbook_inference(model: Model, setup: InferSetup) -> Estimate:
    if not isinstance(model, BareModel):
        from vramwise.estimate.encoder_decoder import refuse

        refuse(model, "textbook mode (the seeds' formulas are for decoder-only models)")
    if setup.tp > 1:
        # The seeds give no tensor-parallel inference formula; dividing silently would invent one.
        raise InvalidWorkloadError(
            f"tp ({setup.tp}) is not allowed in textbook mode (the seeds' inference formulas are single-GPU); "
            "use --mode accurate"
        )
    fmt = setup.weight_format or "fp16"
    per = seed_bytes(fmt)
    params = model.params if isinstance(model, BareModel) else total_params(model)
    weights = int(params * per)
    terms = [
        Term(name="weights/all", bytes=weights, formula=f"Φ {params:,} x {per:g} B", source=SEED_000),
        Term(
            name="overhead/rule_of_thumb",
            bytes=int(0.2 * weights),
            formula=f"0.2 x weights {weights:,} (inference total ≈ 1.2 x weights)",
            source="rule of thumb quoted by the seeds (DESIGN §6): total ≈ 1.2 x weights",
        ),
    ]
    missing: tuple[str, ...] = ()
    notes: list[str] = []
    if isinstance(model, BareModel):
        missing = ("kv_cache needs the architecture (layers, hidden, heads): name a catalog model or a config.json",)
    else:
        refuse_textbook(model)  # state-space hybrids (estimate/ssm_state.py)
        check_generates(model, setup.new_tokens)  # an encoder (BERT) runs one forward
        beyond = inference_positions(model, setup)
        notes += [beyond] if beyond else []
        if setup.weight_format is None and (model.stored_format or model.unread_quantization):
            # the seeds know dtypes only: say that a quantized checkpoint is counted at their fp16 width
            notes.append("the checkpoint is quantized (quantization_config); textbook mode counts fp16 weights: "
                         "use --mode accurate for its stored layout")
        b, L, h, s, n = setup.batch, model.num_layers, model.hidden_size, setup.context, setup.new_tokens
        a, kv = model.attention.num_heads, model.attention.num_kv_heads
        if model.traits.causal_kv_cache:  # seed 002's cache is a decoder's; an encoder keeps none
            terms.append(
                Term(
                    name="kv_cache",
                    bytes=4 * b * L * h * (s + n) * kv // a,
                    formula=f"4 x b {b} x l {L} x h {h} x (s {s} + n {n}) x n_kv {kv} / a {a}",
                    source=SEED_002_KV,
                )
            )
        else:
            notes.append(f"{model.name} {ENCODER_NOTE}")
        notes.append(
            f"seed 002 parameter formula Vh + L(12h² + 13h) = {seed_param_formula(model.vocab_size, h, L):,} "
            f"(exact count used above: {params:,})"
        )
    return Estimate(persistent=tuple(terms), missing=missing, notes=tuple(notes))

"""--framework litgpt: LitGPT's own model code (estimate/train/litgpt_code.py) and its preset, by hand arithmetic.

Oracles: lit-gpt 8641822's source (lit_gpt/model.py, lora.py, rmsnorm.py; finetune/lora.py), bitsandbytes 0.41.1
MatMul4Bit.forward, and the trainable-parameter counts LitGPT published in tutorials/resource-tables.md
(commit 0cc02afa): 4,194,304 for Llama 2 7B and 12,042,240 for Falcon 40B with its default LoRA (r 8, q and v).
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Estimate
from vramwise.estimate.train.litgpt_code import litgpt_lora_modules
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup
from vramwise.workload.frameworks import preset

H, L, FFN, HEADS = 4096, 32, 11008, 32  # Llama-2-7B (MHA: 32 query groups)
T = 1024
NO_OVERHEAD = {"cuda_context_mib": 0, "allocator_fraction": 0.0}
LORA = {
    "framework": "litgpt", "precision": "bf16", "peft": "lora", "lora_r": 8, "lora_targets": ("q_proj", "v_proj"),
    "lora_dropout": 0.05, "adapter_dtype": "bf16", "optimizer": "adamw", "attention": "sdpa", "loss": "compute-dtype",
    "loss_chunk": 128, "recompute": "none", "batch": 1, "seq": T,
}  # fmt: skip


def _train(model: str = "llama-2-7b", **kw: object) -> Estimate:
    return estimate_training(catalog_spec(model), TrainSetup.from_flat(**{**NO_OVERHEAD, **LORA, **kw}))


def _bytes(est: Estimate, name: str) -> int:
    return next((t.bytes for t in est.terms if t.name == name), 0)


def test_llama_lora_layer_saves_litgpts_tensors() -> None:
    est = _train()
    per = L * T  # every layer records (no checkpointing), batch 1
    # rmsnorm.py: x * x and x * rsqrt keep the bf16 input (2h) and rsqrt (2), two norms, weights frozen
    assert _bytes(est, "activations/norms") == per * 2 * (2 * H + 2)
    # LoRAQKVLinear: one dropout (1-byte mask + bf16 copy), after_A (2 B x r x 2 parts), index_copy's source
    # (the q and v adapters' outputs before zero_pad, 2 B x (h + h))
    assert _bytes(est, "activations/lora") == per * ((1 + 2) * H + 2 * 8 * 2 + 2 * (H + H))
    # q, k from rotary's cat, v a view of the whole fused qkv output (MHA): 2 x (h + h + 3h)
    assert _bytes(est, "activations/attention/qkv") == per * 2 * (H + H + 3 * H)
    assert _bytes(est, "activations/attention/output") == per * (2 * H + 4 * HEADS)  # output + fp32 lse
    # frozen fc_1/fc_2/proj keep no input: fc_1's, fc_2's and silu's outputs
    assert _bytes(est, "activations/mlp/intermediate") == per * 3 * 2 * FFN
    for absent in ("activations/attention/input", "activations/attention/o_input", "activations/mlp/input"):
        assert _bytes(est, absent) == 0  # the dropout, not the input, feeds lora_A; the base linears are frozen


def test_qlora_keeps_every_4bit_linears_input() -> None:
    # bitsandbytes 0.41.1 MatMul4Bit.forward: ctx.tensors = (A, B) whenever A needs a gradient
    lora, qlora = _train(), _train(peft="qlora", optimizer="paged-adamw")
    per = L * T
    assert _bytes(qlora, "activations/attention/input") == per * 2 * H  # attn's input (norm_1's output)
    assert _bytes(qlora, "activations/attention/o_input") == per * 2 * H  # y.reshape's copy, read by proj
    assert _bytes(qlora, "activations/mlp/input") == per * 2 * H  # norm_2's output, shared by fc_1 and fc_2
    mlp = _bytes(qlora, "activations/mlp/intermediate") - _bytes(lora, "activations/mlp/intermediate")
    assert mlp == per * 2 * FFN  # silu(fc_1) * fc_2, read by the 4-bit proj
    assert _bytes(qlora, "activations/lora") == _bytes(lora, "activations/lora")


def test_gqa_copies_k_and_v_to_every_query_head() -> None:
    # Falcon 40B: 128 heads of 64 in 8 query groups: k.expand / v.expand then reshape copy both to 128 heads
    est = _train("falcon-40b", peft="qlora", optimizer="paged-adamw", seq=512)
    h, layers = 8192, 60
    assert _bytes(est, "activations/attention/qkv") == layers * 512 * 2 * (3 * h)
    # one dropout on the fused qkv, after_A for 2 parts, and the q (8192) and v (8 x 64) adapters' outputs
    assert _bytes(est, "activations/lora") == layers * 512 * ((1 + 2) * h + 2 * 8 * 2 + 2 * (h + 512))


@pytest.mark.parametrize(("model", "published"), [("llama-2-7b", 4_194_304), ("falcon-40b", 12_042_240)])
def test_trainable_parameters_match_litgpts_tables(model: str, published: int) -> None:
    modules = litgpt_lora_modules(catalog_spec(model), ("q_proj", "v_proj"))
    assert sum(m.params(8) for m in modules) == published


def test_fused_name_enables_every_part_and_unknown_names_are_refused() -> None:
    spec = catalog_spec("falcon-40b")
    assert [m.name for m in litgpt_lora_modules(spec, ("query_key_value",))] == ["q_proj", "k_proj", "v_proj"]
    with pytest.raises(InvalidWorkloadError, match="lora_targets: gate_proj not in falcon-40b"):
        litgpt_lora_modules(spec, ("gate_proj",))


def test_preset_fills_litgpts_defaults() -> None:
    flat = preset({"framework": "litgpt", "peft": "qlora"}).flat
    assert flat["optimizer"] == "paged-adamw" and flat["double_quant"] is False
    assert flat["lora_targets"] == ("q_proj", "v_proj") and flat["lora_r"] == 8 and flat["lora_dropout"] == 0.05
    assert flat["loss"] == "compute-dtype" and flat["loss_chunk"] == 128 and flat["precision"] == "bf16"
    multi = preset({"framework": "litgpt", "peft": "lora", "dp": 2}).flat
    assert (multi["fsdp"], multi["recompute"]) == ("full", "full") and "loading" not in multi
    assert preset({"framework": "litgpt", "peft": "lora"}).flat["optimizer"] == "adamw"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"peft": "qlora", "dp": 2, "fsdp": "full"}, "dp"),  # finetune/lora.py: no quantization on multi-GPU
        ({"zero": 2, "dp": 2}, "zero"),
        ({"tp": 2}, "tp"),
        ({"attention": "eager"}, "attention"),
        ({"precision": "amp"}, "precision"),  # LitGPT's bf16-mixed under autocast: not modelled
        ({"norm_impl": "fused"}, "norm_impl"),  # LitGPT runs its own RMSNorm, not Liger's
    ],
)
def test_refusals_name_their_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidWorkloadError) as err:
        _train(**kw)
    assert err.value.field == field


def test_lightning_quantizes_the_head_and_dequantizes_through_fp16() -> None:
    # Lightning's BitsandbytesPrecision replaces every torch.nn.Linear built under init_module, lm_head included:
    # 131,072,000 codes two per byte, an fp32 absmax per 64, the 16-value fp32 code
    est = _train(peft="qlora", optimizer="paged-adamw")
    head = 32000 * H
    assert _bytes(est, "weights/head") == head // 2 + head // 64 * 4 + 16 * 4
    # _quantize_weight quantized weight.to(torch.half): dequantize_4bit gives fp16, .to(bf16) a second copy; the
    # head is the largest quantized weight
    assert _bytes(est, "qlora/dequantized_weight") == head * (2 + 2)
    assert _bytes(_train(), "weights/head") == head * 2  # LoRA on a bf16 base: the head stays bf16


def test_verify_refuses_litgpts_model_code() -> None:
    from vramwise.verify.twin import _untraceable_knobs

    setup = TrainSetup.from_flat(**{**NO_OVERHEAD, **LORA})
    assert any(bad and "litgpt" in what for bad, what in _untraceable_knobs(setup))

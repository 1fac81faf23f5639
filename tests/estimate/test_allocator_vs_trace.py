"""The estimate's allocator reserve against the replay of a traced step's own allocations.

Oracle: the sequence of storage allocations and frees of a real transformers training step (verify/trace.py under
FakeTensorMode, verify/live.py records them), replayed through the same caching-allocator model
(estimate/allocator_model.py). The allocator model is shared, so this checks only the estimate's sequence
(estimate/train/allocation.py: the persistent tensors, each layer's saved tensors and temporaries, the weights'
gradients as backward produces them, the loss's and the optimizer step's temporaries) against the traced one.
Compared: reserved − requested at the peaks (``max_memory_reserved`` − the tensors' peak).

Cases: Llama shapes of real width (hidden 4,096, 32 heads; Llama 2's MLP 11,008 and vocabulary 32,000, or
Llama 3's 8 KV heads, MLP 14,336 and vocabulary 128,256) at 2 and 4 layers, one micro-batch of 2,048 tokens, so a
trace takes about a second. Tolerance: 40% of the traced reserve (the reserve steps by whole segments: one block
of the logits' size that finds no free block moves it by hundreds of MiB). Measured when written, estimate /
trace in MiB: Llama 2 shapes bf16 300/354 at 2 layers, 448/586 at 4; bf16-mixed 996/1,206, 1,143/1,695; amp
1,716/2,158; full recompute 440/478, 472/544; LoRA all-linear 232/348, 339/393; Llama 3 shapes bf16 294/466 at 2
layers (batch 1 x 2,048), 622/464 at 2 x 1,024 (one sequence of 1,024 replayed, times the micro-batch: linear, as
the layout search needs; replayed at 2 x 1,024 itself it read 294); Llama 3 shapes LoRA all-linear, full
recompute, 4,096 tokens 2,076/2,066 at 4 layers. Before the layers' temporaries, the optimizer's first-step
states and the loss's two gradients were in the sequence: bf16 228/354 and 364/586, bf16-mixed 434/1,206 and
743/1,695, LoRA 64/348 and 115/393.

Known gaps, not asserted: fp32 weights (trace 1,478 MiB at 2 layers, estimate 658): the second step's fp32
temporaries of the embedding's size find no free block in the trace, not in the estimate; LoRA on Llama 3
shapes at 3 layers reads 1.6x the trace (1,273/783); README's LoRA case at 2 layers 50/2,102 (the trace's second
step finds the logits' block split at 2 layers already, the estimate's from 4).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from tiny_configs import FAMILIES

from vramwise.estimate.allocator_model import replay_ops
from vramwise.estimate.train.allocation import StepTensors
from vramwise.estimate.train.training import _vars, _worst_candidates
from vramwise.spec.adapters import spec_from_config
from vramwise.verify.trace import TraceRecipe, trace_training
from vramwise.workload import TrainSetup

TOLERANCE = 0.40
# Llama 2 7B's and Llama 3 8B's widths (their config.json), at a few layers
LLAMA2 = {
    **FAMILIES["llama"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "head_dim": 128,
    "vocab_size": 32000,
}
LLAMA3 = {**LLAMA2, "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256}
ALL = ("all-linear",)
CASES = [
    (LLAMA2, 2, TraceRecipe(batch=1, seq=2048)),
    (LLAMA2, 4, TraceRecipe(batch=1, seq=2048)),
    (LLAMA2, 2, TraceRecipe(batch=1, seq=2048, precision="bf16-mixed")),
    (LLAMA2, 4, TraceRecipe(batch=1, seq=2048, precision="bf16-mixed")),
    (LLAMA2, 2, TraceRecipe(batch=1, seq=2048, precision="amp")),
    (LLAMA2, 2, TraceRecipe(batch=1, seq=2048, recompute="full")),
    (LLAMA2, 4, TraceRecipe(batch=1, seq=2048, recompute="full")),
    (LLAMA2, 2, TraceRecipe(batch=1, seq=2048, lora_r=16, lora_targets=ALL)),
    (LLAMA2, 4, TraceRecipe(batch=1, seq=2048, lora_r=16, lora_targets=ALL)),
    (LLAMA3, 2, TraceRecipe(batch=1, seq=2048)),
    (LLAMA3, 2, TraceRecipe(batch=2, seq=1024)),
    # README's LoRA example at 4 layers: a block of the fp32 logits' size (2 GiB) that the second step's loss
    # backward finds split, in the trace and in the estimate alike
    (LLAMA3, 4, TraceRecipe(batch=1, seq=4096, precision="bf16-mixed", recompute="full", lora_r=16, lora_targets=ALL)),
]


def _estimated(config: dict[str, Any], r: TraceRecipe) -> int:
    spec = spec_from_config(config, name="llama", source="test")
    flat: dict[str, Any] = {
        "batch": r.batch, "seq": r.seq, "precision": r.precision, "recompute": r.recompute, "allocator_replay": True
    }
    if r.lora_r:
        flat.update(peft="lora", lora_r=r.lora_r, lora_targets=r.lora_targets)
    setup = TrainSetup.from_flat(**flat)
    steps = _worst_candidates(spec, setup)[0].allocator
    assert isinstance(steps, StepTensors)
    return steps.reserve(_vars(spec, setup))


@pytest.mark.parametrize(("config", "layers", "recipe"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_reserve_is_near_the_traced_steps_replay(config: dict[str, Any], layers: int, recipe: TraceRecipe) -> None:
    config = {**config, "num_hidden_layers": layers}
    traced = replay_ops(trace_training(config, recipe).allocator_ops)
    expected = traced.peak_reserved - traced.peak_requested
    assert _estimated(config, recipe) == pytest.approx(expected, rel=TOLERANCE)

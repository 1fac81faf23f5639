"""Precision recipes: bytes per parameter of weights, gradients, master copy and optimizer states.

fp32        weights 4, grads 4, states fp32, compute fp32.
amp         fp32 weights under torch.autocast: weights 4, grads 4, states fp32, compute 16-bit; autocast
            also keeps a 16-bit copy of every weight a matmul reads until its backward (the cast cache).
bf16-mixed  16-bit weights + fp32 master copy of the trainable ones (Megatron, DeepSpeed):
fp16-mixed  weights 2, master 4, states fp32, grads 2 (DeepSpeed, the ZeRO paper) or 4 (Megatron main_grad).
bf16        everything in bf16 (model.to(bfloat16)): weights 2, grads 2, states bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.workload import TrainSetup


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    weight: int  # bytes per parameter as stored on the GPU (frozen and trainable)
    grad: int
    master: int  # fp32 master copy of trainable parameters (0: none)
    state: int  # bytes per optimizer-state element (before 8-bit quantization)
    compute: int  # bytes of activations
    autocast_cache: bool


def recipe_for(setup: TrainSetup) -> Recipe:
    p = setup.precision
    if p == "fp32":
        return Recipe(name=p, weight=4, grad=4, master=0, state=4, compute=4, autocast_cache=False)
    if p in ("amp", "amp-fp16"):
        return Recipe(name=p, weight=4, grad=4, master=0, state=4, compute=2, autocast_cache=True)
    if p == "bf16":
        return Recipe(name=p, weight=2, grad=2, master=0, state=2, compute=2, autocast_cache=False)
    grad = 4 if setup.grad_dtype == "fp32" else 2
    return Recipe(name=p, weight=2, grad=grad, master=4, state=4, compute=2, autocast_cache=False)

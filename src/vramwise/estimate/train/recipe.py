"""Precision recipes: bytes per parameter of weights, gradients, master copy and optimizer states.

fp32        weights 4, grads 4, states fp32, compute fp32.
amp         fp32 weights under torch.autocast: weights 4, grads 4, states fp32, compute 16-bit; autocast
            also keeps a 16-bit copy of every weight a matmul reads until its backward (the cast cache; with
            every layer checkpointed only until the forward's region exits: training.py _autocast_cache), and
            runs softmax and pow in fp32 on a GPU (autocast.py).
bf16-mixed  16-bit weights + fp32 master copy of the trainable ones (Megatron, DeepSpeed):
fp16-mixed  weights 2, master 4, states fp32, grads 2 (DeepSpeed, the ZeRO paper) or 4 (Megatron main_grad).
bf16        everything in bf16 (loaded with dtype=bfloat16): weights 2, grads 2, states bf16.
Modules transformers keeps in fp32 at load (DeepSeek's routers) stay fp32 under bf16, with fp32 gradients and
states; the mixed recipes cast the whole module to 16 bit (DeepSpeed's engine calls module.bfloat16()/.half()),
so there they are 16-bit like every other weight.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.workload import GradDtype, Precision, PrecisionConfig


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    weight: int  # bytes per parameter as stored on the GPU (frozen and trainable)
    grad: int
    master: int  # fp32 master copy of trainable parameters (0: none)
    state: int  # bytes per optimizer-state element (before 8-bit quantization)
    compute: int  # bytes of activations
    autocast_cache: bool
    keeps_fp32_modules: bool = False  # the framework's fp32-kept modules survive (no blanket cast)


def recipe_for(precision: PrecisionConfig) -> Recipe:
    p = precision.recipe
    if p == Precision.FP32:
        return Recipe(name=p, weight=4, grad=4, master=0, state=4, compute=4, autocast_cache=False)
    if p in (Precision.AMP, Precision.AMP_FP16):
        return Recipe(name=p, weight=4, grad=4, master=0, state=4, compute=2, autocast_cache=True)
    if p == Precision.BF16:
        return Recipe(
            name=p, weight=2, grad=2, master=0, state=2, compute=2, autocast_cache=False, keeps_fp32_modules=True
        )
    grad = 4 if precision.grad_dtype == GradDtype.FP32 else 2
    return Recipe(name=p, weight=2, grad=grad, master=4, state=4, compute=2, autocast_cache=False)

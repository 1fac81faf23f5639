"""CUDA's autocast policy for a few ops, applied to a CPU trace, so the twin's amp step saves what a GPU's does.

CPU autocast runs ``softmax``, ``log_softmax``, ``layer_norm`` and ``pow`` in their input's dtype; CUDA autocast
runs them in fp32 (pytorch aten/src/ATen/autocast_mode.cpp, commit 008ec6b1840c: ``AT_FORALL_FP32_SET_OPT_DTYPE`` and
``AT_FORALL_FP32`` under ``TORCH_LIBRARY_IMPL(aten, Autocast, m)``; estimate/train/autocast.py says which of
them change a saved tensor). While ``cuda_autocast_rules`` is entered, a kernel on the AutocastCPU dispatch key
does for those ops what CUDA's wrappers in aten/src/ATen/autocast_mode.h do: ``fp32_set_opt_dtype`` passes
``dtype=float32`` when the caller gave none (``WrapFunction_<CastPolicy::fp32_set_opt_dtype>``), ``fp32`` casts
every floating input to fp32 (``WrapFunction_<CastPolicy::fp32>``: ``cached_cast(at::kFloat, ...)``, never
cached). The autocast key sits above autograd, so the casts are recorded as autograd would record CUDA's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from vramwise.estimate.train.autocast import TWIN_CUDA_RULES

_AUTOCAST_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def _eligible(t: Any) -> bool:
    """autocast_mode.h ``is_eligible``: a defined floating tensor that is not fp64."""
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


def _to_fp32(t: Any) -> Any:
    return t.to(torch.float32) if _eligible(t) else t


def _set_opt_dtype(op: Any) -> Callable[..., Any]:
    def kernel(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            if dtype is None and _eligible(x):  # firstarg_is_eligible, then set_opt_dtype(at::kFloat, ...)
                dtype = torch.float32
            return op(x, dim, dtype)

    return kernel


def _fp32(op: Any) -> Callable[..., Any]:
    def kernel(*args: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            return op(*(_to_fp32(a) for a in args))

    return kernel


_POLICIES = {"fp32_set_opt_dtype": _set_opt_dtype, "fp32": _fp32}


def _aten(overload: str) -> Any:
    name, _, variant = overload.partition(".")
    return getattr(getattr(torch.ops.aten, name), variant or "default")


@contextmanager
def cuda_autocast_rules() -> Iterator[None]:
    """CUDA's autocast policy for ``TWIN_CUDA_RULES`` on the CPU, until the block exits."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        for overload, policy in TWIN_CUDA_RULES:
            lib.impl(overload, _POLICIES[policy](_aten(overload)), "AutocastCPU")
        yield
    finally:
        lib._destroy()

"""Workloads: what the user wants to run, validated once, frozen.

Validation errors name the field and what is allowed; nothing downstream re-checks user input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vramwise.errors import InvalidWorkloadError

Mode = Literal["accurate", "textbook"]
AttentionImpl = Literal["sdpa", "flash", "eager"]
KV_DTYPES = ("auto", "fp32", "fp16", "bf16", "fp8")
ATTENTION_IMPLS = ("sdpa", "flash", "eager")


def _positive(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidWorkloadError(f"{field} must be a positive integer, got {value!r}")


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidWorkloadError(f"{field} '{value}' is not allowed; allowed: {', '.join(allowed)}")


@dataclass(frozen=True, kw_only=True)
class InferSetup:
    """Serving or generation: ``batch`` sequences of ``context`` prompt tokens plus ``new_tokens`` generated."""

    batch: int = 1
    context: int = 2048  # prompt tokens per sequence (s)
    new_tokens: int = 0  # generated tokens per sequence (n)
    weight_format: str | None = None  # None: the checkpoint's own format
    kv_dtype: str = "auto"  # auto: the compute dtype
    attention: AttentionImpl = "sdpa"
    tp: int = 1
    kv_block: int = 16  # paged-KV block in tokens (vLLM's default); 1 for a contiguous cache
    prefill_chunk: int | None = None  # tokens per prefill forward (chunked prefill); None: the whole prompt
    all_logits: bool = False  # a plain forward returns logits for every position; generate() keeps the last
    cuda_context_mib: int | None = None  # None: the default in overheads.py
    allocator_fraction: float | None = None  # None: the default in overheads.py
    gpu_utilization: float = 0.9  # fraction of the GPU an engine may use (vLLM gpu_memory_utilization)
    mode: Mode = "accurate"

    def __post_init__(self) -> None:
        _positive("batch", self.batch)
        _positive("context", self.context)
        if isinstance(self.new_tokens, bool) or not isinstance(self.new_tokens, int) or self.new_tokens < 0:
            raise InvalidWorkloadError(f"new_tokens must be a non-negative integer, got {self.new_tokens!r}")
        _positive("tp", self.tp)
        _positive("kv_block", self.kv_block)
        if self.prefill_chunk is not None:
            _positive("prefill_chunk", self.prefill_chunk)
        _choice("kv_dtype", self.kv_dtype, KV_DTYPES)
        _choice("attention", self.attention, ATTENTION_IMPLS)
        _choice("mode", self.mode, ("accurate", "textbook"))
        if self.cuda_context_mib is not None and self.cuda_context_mib < 0:
            raise InvalidWorkloadError(f"cuda_context_mib must be >= 0, got {self.cuda_context_mib}")
        if self.allocator_fraction is not None and not 0 <= self.allocator_fraction < 1:
            raise InvalidWorkloadError(f"allocator_fraction must be in [0, 1), got {self.allocator_fraction}")
        if not 0 < self.gpu_utilization <= 1:
            raise InvalidWorkloadError(f"gpu_utilization must be in (0, 1], got {self.gpu_utilization}")

    @property
    def tokens(self) -> int:
        """Tokens each sequence holds in the KV cache at the end: s + n."""
        return self.context + self.new_tokens

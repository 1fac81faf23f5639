"""The inference workload: serving or generation on one GPU (or one tensor-parallel group)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vramwise.errors import InvalidWorkloadError
from vramwise.workload.checks import coerce, non_negative, positive
from vramwise.workload.options import AttentionImpl, KvDtype, Mode
from vramwise.workload.overheads import check_overheads


@dataclass(frozen=True, kw_only=True)
class InferSetup:
    """Serving or generation: ``batch`` sequences of ``context`` prompt tokens plus ``new_tokens`` generated.

    Flat on purpose: every field is an inference knob read by the inference estimators, and the two overheads
    are the same fields (and the same checks) as ``workload.overheads.Overheads``.
    """

    batch: int = 1
    context: int = 2048  # prompt tokens per sequence (s)
    new_tokens: int = 0  # generated tokens per sequence (n)
    weight_format: str | None = None  # None: the checkpoint's own format
    kv_dtype: KvDtype = KvDtype.AUTO  # auto: the compute dtype
    attention: AttentionImpl = AttentionImpl.SDPA
    tp: int = 1
    kv_block: int = 16  # paged-KV block in tokens (vLLM's default); 1 for a contiguous cache
    prefill_chunk: int | None = None  # tokens per prefill forward (chunked prefill); None: the whole prompt
    all_logits: bool = False  # a plain forward returns logits for every position; generate() keeps the last
    cuda_context_mib: int | None = None  # None: the default in overheads.py
    allocator_fraction: float | None = None  # None: the default in overheads.py
    gpu_utilization: float = 0.9  # fraction of the GPU an engine may use (vLLM gpu_memory_utilization)
    mode: Mode = Mode.ACCURATE

    def __post_init__(self) -> None:
        positive("batch", self.batch)
        positive("context", self.context)
        non_negative("new_tokens", self.new_tokens)
        positive("tp", self.tp)
        positive("kv_block", self.kv_block)
        if self.prefill_chunk is not None:
            positive("prefill_chunk", self.prefill_chunk)
        coerce(self, "kv_dtype", KvDtype)
        coerce(self, "attention", AttentionImpl)
        coerce(self, "mode", Mode)
        check_overheads(self.cuda_context_mib, self.allocator_fraction)
        if not 0 < self.gpu_utilization <= 1:
            raise InvalidWorkloadError(f"gpu_utilization must be in (0, 1], got {self.gpu_utilization}")

    @property
    def tokens(self) -> int:
        """Tokens each sequence holds in the KV cache at the end: s + n."""
        return self.context + self.new_tokens

    @classmethod
    def from_flat(cls, **flat: Any) -> InferSetup:
        """The setup from flat field names (the CLI's and the JSON ``setup`` object's)."""
        return cls(**flat)

    def to_flat(self) -> dict[str, Any]:
        """JSON schema v1's ``setup`` object: every field by name, enums as their strings."""
        return {k: str(v) if isinstance(v, (KvDtype, AttentionImpl, Mode)) else v for k, v in asdict(self).items()}

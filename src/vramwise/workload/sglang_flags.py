"""SGLang's memory flags, named as ``python -m sglang.launch_server`` spells them (``--mem-fraction-static``).

None means SGLang's own default, which it derives from the GPU's memory and tp at startup
(server_args.py ``ServerArgs._handle_gpu_memory_settings``); ``engines/sglang.py`` derives the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError
from vramwise.workload.checks import MAX_BATCH, MAX_TOKENS, boolean, real, show, version

# The releases whose defaults engines/sglang.py models: 0.5 (read at 0.5.5) and 0.4 (read at 0.4.9.post2), each from the
# GPU's memory (0.4.9.post2 reserves by tp x pp as well).
VERSIONS = ("0.5", "0.4")

# Each count's plausibility bound (workload/checks.py explains the two): tokens, or requests in one batch.
_TOKENS = ("chunked_prefill_size", "max_total_tokens", "context_length", "page_size", "max_prefill_tokens")
_REQUESTS = ("cuda_graph_max_bs", "max_running_requests")


def count(field: str, value: object) -> None:
    """``value`` is a positive int within its bound (tokens: MAX_TOKENS; requests: MAX_BATCH)."""
    high = MAX_TOKENS if field in _TOKENS else MAX_BATCH
    allowed = f"an integer from 1 to {high:,}"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidWorkloadError(f"{field} must be {allowed}, got {show(value)}", field=field, allowed=allowed)


@dataclass(frozen=True, kw_only=True)
class SglangFlags:
    """The server arguments that size SGLang's memory (server_args.py ``ServerArgs`` fields of the same names)."""

    mem_fraction_static: float | None = None  # --mem-fraction-static: (weights + KV pool) / the GPU's free memory
    chunked_prefill_size: int | None = None  # --chunked-prefill-size: tokens per prefill chunk (-1: no chunking)
    cuda_graph_max_bs: int | None = None  # --cuda-graph-max-bs: the largest decode batch captured in a CUDA graph
    max_running_requests: int | None = None  # --max-running-requests
    max_total_tokens: int | None = None  # --max-total-tokens: a cap on the token pool
    context_length: int | None = None  # --context-length: None, the model's max_position_embeddings
    page_size: int = 1  # --page-size: tokens per KV page (the pool is rounded down to pages)
    disable_cuda_graph: bool = False  # --disable-cuda-graph
    max_prefill_tokens: int = 16384  # --max-prefill-tokens (used when chunked prefill is off)
    version: str = "0.5"  # the release whose defaults apply: 0.5 or 0.4 (0.4.9.post2)

    def __post_init__(self) -> None:
        if self.mem_fraction_static is not None:
            real("mem_fraction_static", self.mem_fraction_static, 0, 1, low_open=True)
        # -1 turns chunking off (server_args.py --chunked-prefill-size help)
        optional = ("chunked_prefill_size",) if self.chunked_prefill_size != -1 else ()
        for name in (*optional, "cuda_graph_max_bs", "max_running_requests", "max_total_tokens", "context_length"):
            value = getattr(self, name)
            if value is not None:
                count(name, value)
        count("page_size", self.page_size)
        count("max_prefill_tokens", self.max_prefill_tokens)
        version("SGLang", "version", self.version, VERSIONS)
        boolean("disable_cuda_graph", self.disable_cuda_graph)

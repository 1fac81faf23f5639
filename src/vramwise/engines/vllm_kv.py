"""vLLM's KV pool at v0.11.0: pages, groups of layers, the tokens it logs, concurrency and the max_model_len check.

Every layer's cache is cut into pages of ``block_size`` tokens (vllm/v1/kv_cache_interface.py
``AttentionSpec.page_size_bytes`` = block_size x 2 x n_kv x d x dtype bytes; MLA ``MLAAttentionSpec``: block_size x
(kv_lora_rank + qk_rope_head_dim) x dtype bytes). Layers of one kind share a group; a model mixing kinds (Gemma-2's
sliding and full layers, a Mamba hybrid) is cut into groups of ``g`` layers, g the smallest count of one kind
(vllm/v1/core/kv_cache_utils.py ``_get_kv_cache_config_uniform_page_size``), and the pool into
``num_blocks = available // (page x g)`` blocks; vLLM logs ``GPU KV cache size: num_blocks // groups x block_size
tokens`` (``get_kv_cache_config``). A request of n tokens needs, per group (``max_memory_usage_bytes`` of its spec):
a full-attention layer cdiv(n, block); a sliding-window layer cdiv(min(window - 1 + max_num_batched_tokens, n),
block) + 1 (``SlidingWindowSpec.max_memory_usage_bytes``: chunked prefill keeps the window plus one step's
tokens, and the window may start mid-block); a Mamba layer one page (``MambaSpec``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vramwise.spec.model import ModelSpec
from vramwise.spec.ssm import is_ssm_layer


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, kw_only=True)
class KvLayout:
    """The pool's shape on one GPU: layers by kind, the page and the group size."""

    full: int  # full-attention layers on this rank
    sliding: int  # sliding-window layers on this rank
    mamba: int  # Mamba layers (one state page per request)
    window: int  # the sliding window in tokens (0: none)
    block: int  # tokens per block (the hybrid rule may grow it past --block-size)
    page: int  # bytes of one block of one layer
    batched_tokens: int  # max_num_batched_tokens (the sliding rule's step)

    @property
    def kinds(self) -> tuple[int, ...]:
        return tuple(n for n in (self.full, self.sliding, self.mamba) if n)

    @property
    def group(self) -> int:
        """Layers per group: all of them for one kind, else the smallest count of one kind."""
        return min(self.kinds) if self.kinds else 0

    @property
    def groups(self) -> int:
        g = self.group
        return sum(_cdiv(n, g) for n in self.kinds) if g else 0

    def blocks(self, available: int) -> int:
        """num_blocks of the pool: every group holds this many pages of g layers."""
        per = self.page * self.group
        return max(0, available) // per if per else 0

    def tokens(self, num_blocks: int) -> int:
        """Tokens of KV, as vLLM logs them ("GPU KV cache size: N tokens")."""
        return num_blocks // self.groups * self.block if self.groups else 0

    def blocks_per_request(self, n: int) -> int:
        """Blocks one request of ``n`` tokens takes over all groups (get_max_concurrency_for_kv_cache_config)."""
        g = self.group
        per_full = _cdiv(n, self.block)
        per_sliding = _cdiv(min(self.window - 1 + self.batched_tokens, n), self.block) + 1 if self.window else 0
        return (
            _cdiv(self.full, g) * per_full if self.full else 0
        ) + (_cdiv(self.sliding, g) * per_sliding if self.sliding else 0) + (_cdiv(self.mamba, g) if self.mamba else 0)

    def needed(self, n: int) -> int:
        """Bytes every layer needs for one request of ``n`` tokens (check_enough_kv_cache_memory's
        ``max_memory_usage_bytes`` over all layers' specs)."""
        per_sliding = _cdiv(min(self.window - 1 + self.batched_tokens, n), self.block) + 1 if self.window else 0
        return self.page * (self.full * _cdiv(n, self.block) + self.sliding * per_sliding + self.mamba)

    def concurrency(self, num_blocks: int, n: int) -> float:
        """Requests of n tokens the pool holds at once ("Maximum concurrency for n tokens per request: Yx")."""
        per = self.blocks_per_request(n)
        return num_blocks / per if per else math.inf

    def largest_fit(self, available: int, max_model_len: int) -> int:
        """The largest max_model_len whose one request fits ``available`` (estimate_max_model_len: a binary
        search from 1 to max_model_len), 0 when not even one token does."""
        low, high = 0, max_model_len
        while low < high:
            mid = (low + high + 1) // 2
            if self.needed(mid) <= available:
                low = mid
            else:
                high = mid - 1
        return low


def layer_kinds(spec: ModelSpec, layers: range) -> tuple[int, int, int]:
    """(full, sliding, mamba) layer counts among ``layers``; a cross-attention layer (mllama) caches no text."""
    full = sliding = mamba = 0
    cross = spec.vision.cross_layers if spec.vision else ()
    for i in layers:
        if is_ssm_layer(spec, i):
            mamba += 1
        elif i in cross:
            continue
        elif spec.layer_attention(i) == "sliding" and spec.attention.sliding_window:
            sliding += 1
        else:
            full += 1
    return full, sliding, mamba

"""What a checkpoint's own files say it stores: bytes per category, read from headers, never from the weights.

Readers fill one ``CheckpointBytes`` from whatever the user gave: the safetensors headers of a local folder or a
hub repo (``spec/safetensors_headers.py``), the tensor infos of a GGUF file (``spec/gguf_file.py``). The weights
term reads these bytes exactly when the user keeps the checkpoint's own format; the config arithmetic stays
the oracle for everything else (activations, KV, LoRA targets), and a note says where the two disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class CategoryBytes:
    """The tensors of one weight category (``embeddings``, ``attention``, ``mlp``, ``experts``, ``norms``,
    ``head``, ``other``, and for multimodal models ``vision`` and ``projector``) as stored."""

    category: str
    bytes: int  # exactly as stored: packed integers, scales, zeros and g_idx included
    elements: int  # stored elements (a GPTQ int32 holds 8 4-bit weights: it counts 1 here)
    tensors: int
    dtypes: tuple[tuple[str, int], ...]  # (stored dtype or ggml type, bytes), largest first


@dataclass(frozen=True, kw_only=True)
class CheckpointBytes:
    """Every tensor of a checkpoint, grouped by category, from its headers."""

    source: str  # "safetensors headers of org/name@rev (4 files)", "GGUF tensor infos of model.gguf"
    categories: tuple[CategoryBytes, ...]
    files: int = 1  # how many files the headers came from (a sharded checkpoint's shards)
    # A 16-bit load casts floats stored wider (fp32) to 16 bits: transformers and vLLM do (safetensors); llama.cpp
    # keeps every tensor as stored (GGUF: its F32 norms stay F32).
    cast_on_load: bool = False
    # Bytes of each repeating layer's tensors (GGUF ``blk.N.*``), by layer index; empty when not read per layer.
    # llama.cpp places whole layers on devices (-ngl), and quantization mixes (Q4_K_M's Q6_K layers) make them
    # differ, so its plan reads these rather than an average.
    layer_bytes: tuple[int, ...] = ()

    @property
    def kind(self) -> str:
        """What was read, the source's words before " of " ("safetensors headers", "GGUF tensor infos")."""
        return self.source.split(" of ", 1)[0]

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.categories)

    def bytes_of(self, category: str) -> int:
        return sum(c.bytes for c in self.categories if c.category == category)

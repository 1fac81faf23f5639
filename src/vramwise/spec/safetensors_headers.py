"""A checkpoint's own bytes from its safetensors headers: every tensor's dtype and shape, never its data.

The safetensors format (https://huggingface.co/docs/safetensors/index#format; safetensors/src/tensor.rs): 8 bytes,
a little-endian u64 N, then N bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (and an optional ``"__metadata__"`` of strings), then the data. A tensor's bytes
are its elements times its dtype's width (``DTYPE_BITS``), packed types rounded up to whole bytes, and must equal
``end - begin``; a header that says otherwise is refused, as safetensors itself refuses to load it.

Each tensor is put in one weight category by its name (``category_of``), the categories the weights term uses
(``spec/params.py: CATEGORIES``) plus ``vision`` and ``projector`` for the towers of multimodal checkpoints.

Readers here: a local folder's ``*.safetensors`` (``local_checkpoint``), and a list of already-parsed headers
(``checkpoint_from_tensors``: the hub reader in ``spec/hub.py`` gets them from huggingface_hub's ranged reads).
Nothing here imports safetensors, numpy or torch: the header is JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vramwise.errors import ConfigError, shown
from vramwise.files import open_nonblocking
from vramwise.spec.checkpoint import CategoryBytes, CheckpointBytes

# Bits per element of every dtype a safetensors header may name: safetensors/src/tensor.rs, ``Dtype::bitsize``
# (safetensors 0.6+; F4 is float4_e2m1 packed two to a byte, F6_* are MX 6-bit floats, E8M0 the MX scale).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

# safetensors refuses a header longer than 100,000,000 bytes (safetensors/src/tensor.rs, MAX_HEADER_SIZE); the
# largest real ones (DeepSeek-V3's 163 shards) are well under 1 MB each.
MAX_HEADER_BYTES = 100_000_000
# A folder holds a few hundred shards at most (DeepSeek-V3: 163); this bounds the work of listing a wrong folder.
MAX_FILES = 4096

_FIELD = "model"
_ALLOWED = "a folder holding config.json and *.safetensors files written by the safetensors library"


@dataclass(frozen=True, kw_only=True)
class TensorHeader:
    """One tensor as a header describes it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    bytes: int  # as stored: end - begin of its data_offsets

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


def header_error(where: str, what: str) -> ConfigError:
    return ConfigError(
        f"{shown(where, 200, quote=False)}: not a safetensors header vramwise reads ({what}); download the file "
        "again, or give the config.json alone to estimate from the config",
        field=_FIELD,
        allowed=_ALLOWED,
    )


def tensor_from_entry(where: str, name: str, info: object, data_bytes: int | None = None) -> TensorHeader:
    """One header entry, checked: dtype, shape, offsets, and bytes = elements x dtype width."""
    if not isinstance(info, dict):
        raise header_error(where, f"tensor {shown(name, 80)} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list):
        raise header_error(where, f"tensor {shown(name, 80)} lacks dtype, shape or data_offsets")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise header_error(where, f"tensor {shown(name, 80)} has shape {shown(shape, 60)}")
    if len(offsets) != 2 or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]:
        raise header_error(where, f"tensor {shown(name, 80)} has data_offsets {shown(offsets, 60)}")
    if data_bytes is not None and offsets[1] > data_bytes:
        raise header_error(where, f"tensor {shown(name, 80)} ends at byte {offsets[1]:,}, past the file's data")
    tensor = TensorHeader(name=name, dtype=dtype, shape=tuple(shape), bytes=offsets[1] - offsets[0])
    bits = DTYPE_BITS.get(dtype)
    if bits is not None and -(-tensor.elements * bits // 8) != tensor.bytes:
        raise header_error(
            where,
            f"tensor {shown(name, 80)}: {tensor.elements:,} {dtype} elements are "
            f"{-(-tensor.elements * bits // 8):,} bytes, its data_offsets span {tensor.bytes:,}",
        )
    return tensor


def parse_header(where: str, raw: bytes, data_bytes: int | None = None) -> tuple[TensorHeader, ...]:
    """The tensors of one header's JSON (the N bytes after the length); ``data_bytes``, when known, is the size
    of the data section every tensor must lie within."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise header_error(where, f"the header is not UTF-8 JSON: {shown(str(err), 80, quote=False)}") from None
    if not isinstance(obj, dict):
        raise header_error(where, "the header is not a JSON object")
    return tuple(tensor_from_entry(where, k, v, data_bytes) for k, v in obj.items() if k != "__metadata__")


# (start, end) inclusive -> those bytes (fewer at the end of the file) and the file's size, -1 when unknown
RangeRead = Callable[[int, int], tuple[bytes, int]]


def read_header_with(where: str, read: RangeRead) -> tuple[TensorHeader, ...]:
    """The tensors of one safetensors file read through ``read`` (a local file or ranged requests): two bounded
    reads, the 8-byte length, then the header itself, each checked against the file's size."""
    head, size = read(0, 7)
    if len(head) < 8:
        raise header_error(where, f"{len(head)} bytes; a safetensors file starts with an 8-byte length")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES:
        raise header_error(where, f"header length {n:,} bytes, above safetensors' limit of 100,000,000")
    if size >= 0 and 8 + n > size:
        raise header_error(where, f"header length {n:,} bytes runs past the end of the {size:,}-B file")
    raw = read(8, 7 + n)[0] if n else b""
    if len(raw) < n:
        raise header_error(where, f"header length {n:,} bytes, but the file ends after {8 + len(raw):,}")
    return parse_header(where, raw, data_bytes=size - 8 - n if size >= 0 else None)


def read_header(path: Path) -> tuple[TensorHeader, ...]:
    """The tensors of a local ``.safetensors`` file, reading its header only (8 + N bytes)."""
    where = str(path)
    try:
        # a FIFO given by mistake is refused below instead of waiting for a writer
        with open_nonblocking(path) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise header_error(where, "not a regular file")

            def read(start: int, end: int) -> tuple[bytes, int]:
                f.seek(start)
                return f.read(end - start + 1), st.st_size

            return read_header_with(where, read)
    except OSError as err:
        raise header_error(where, f"cannot read it: {err.strerror or err}") from None


# --- categories ---------------------------------------------------------------------------------------------------

# Multimodal towers, by the module names transformers gives them (llava: vision_tower, multi_modal_projector;
# qwen2_vl: visual, visual.merger; gemma3: vision_tower, multi_modal_projector; mllama: vision_model,
# multi_modal_projector; idefics3: vision_model, connector). The projector is tested first: it can sit under the
# tower's name (qwen2_vl's visual.merger).
_PROJECTOR = re.compile(r"(^|\.)(multi_modal_projector|mm_projector|connector|merger|vision_proj)(\.|$)")
_VISION = re.compile(r"(^|\.)(vision_tower|vision_model|visual|vision_encoder|image_encoder|vision)(\.|$)")
# the first numbered stack in the name: T5's "block.N" comes before its sublayer index "layer.K"
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks|block)\.(\d+)\.")
# Mamba mixers of a hybrid (Jamba: model.layers.N.mamba.*, its dt/b/c layernorms included): spec/ssm.py counts
# them all in "ssm"
_SSM = re.compile(r"(^|\.)mamba(\.|$)")
# BERT's masked-LM head is "cls.predictions.*" (its transform dense + LayerNorm and the decoder bias)
_HEAD = {"lm_head", "embed_out", "score", "classifier", "qa_outputs", "cls"}
# RobertaClassificationHead's dense (classifier.dense) has BertPooler's shape and place on the first token: it is
# counted as the pooler ("other", spec/params.py other.pooler); its out_proj is the classifier
_POOLER_DENSE = re.compile(r"(^|\.)classifier\.dense\.")
# T5 keeps its (tied) token table as "shared.weight" (modeling_t5.py: T5ForConditionalGeneration.shared)
_EMBED = re.compile(
    r"(^|\.)(embed_tokens|embed_positions|embeddings|wte|wpe|word_embeddings|tok_embeddings|embed_in|shared\.weight$)"
)
_EXPERTS = re.compile(r"(^|\.)(experts|shared_experts?|shared_expert_gate|router|gate|block_sparse_moe|moe)(\.|$)")
_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)  # T5: SelfAttention, EncDecAttention
_NORM = re.compile(r"(^|\.)([\w]*norm[\w]*|ln_\w+|ln\d*)(\.|$)", re.IGNORECASE)
_QK_NORM = re.compile(r"(q|k|kv|q_a|kv_a)_(norm|layernorm)", re.IGNORECASE)
_MLP = re.compile(
    r"(^|\.)(mlp|feed_forward|ffn|fc1|fc2|c_fc|dense_h_to_4h|dense_4h_to_h|intermediate|output|DenseReluDense)(\.|$)"
)


# whole-model parts, tested in this order before a layer's own modules
_BY_NAME = ((_EMBED, "embeddings"), (_EXPERTS, "experts"), (_SSM, "ssm"))


def category_of(name: str, num_layers: int | None = None) -> str:
    """The weight category of a tensor, by its name: ``embeddings``, ``attention``, ``mlp``, ``experts``, ``ssm``,
    ``norms``, ``head``, ``other``, ``vision`` or ``projector``.

    A layer numbered ``num_layers`` or above is ``other``: it is in the checkpoint but not in the model
    transformers builds (DeepSeek-V3's multi-token-prediction layer 61)."""
    if _PROJECTOR.search(name):
        return "projector"
    if _VISION.search(name):
        return "vision"
    layer = _LAYER.search(name)
    # the encoder of an encoder-decoder has its own depth (T5's num_layers vs num_decoder_layers)
    beyond = layer is not None and num_layers is not None and int(layer.group(1)) >= num_layers
    if beyond and not name.startswith(("encoder.", "model.encoder.")):
        return "other"
    parts = name.split(".")
    if _POOLER_DENSE.search(name):
        return "other"
    if any(p in _HEAD for p in parts):
        return "head"
    if layer is None and parts[-2:-1] == ["output"]:  # Llama's original checkpoints: output.weight
        return "head"
    for pattern, category in _BY_NAME:
        if pattern.search(name):
            return category
    return _in_layer(parts, name)


def _in_layer(parts: list[str], name: str) -> str:
    """A tensor of a layer's own modules: norms, attention or MLP."""
    # a norm module is a norm wherever it sits (BERT's attention.output.LayerNorm, Falcon's ln_attn), except the
    # per-head q/k norms inside attention, which spec/params.py counts with attention (Qwen3's q_norm, k_norm)
    if len(parts) >= 2 and _NORM.fullmatch(parts[-2]) and not _QK_NORM.fullmatch(parts[-2]):
        return "norms"
    # a module named for attention, not a norm named after it (post_attention_layernorm is a layer norm); Mllama's
    # cross-attention layers hold their two scalar gates (cross_attn_attn_gate, cross_attn_mlp_gate) as bare
    # parameters, which its adapter counts with attention (spec/adapters/vision_towers.py)
    if any(_ATTENTION.search(p) and "norm" not in p.lower() for p in parts[:-1]) or parts[-1].startswith("cross_attn"):
        return "attention"
    if _NORM.search(name):
        return "norms"
    if _MLP.search(name):
        return "mlp"
    return "other"


def checkpoint_from_tensors(
    tensors: Iterable[TensorHeader], *, source: str, files: int, num_layers: int | None = None
) -> CheckpointBytes:
    """Every tensor's bytes summed per category; ``source`` says where the headers were read. Headers that list
    no tensor at all are refused: a weights term of 0 bytes would be a silent wrong number."""
    bytes_: dict[str, int] = {}
    elements: dict[str, int] = {}
    count: dict[str, int] = {}
    dtypes: dict[str, dict[str, int]] = {}
    for t in tensors:
        cat = category_of(t.name, num_layers)
        bytes_[cat] = bytes_.get(cat, 0) + t.bytes
        elements[cat] = elements.get(cat, 0) + t.elements
        count[cat] = count.get(cat, 0) + 1
        per = dtypes.setdefault(cat, {})
        per[t.dtype] = per.get(t.dtype, 0) + t.bytes
    if not bytes_:
        raise header_error(source, "the headers list no tensors; pass the config.json alone to estimate from it")
    categories = tuple(
        CategoryBytes(
            category=cat,
            bytes=bytes_[cat],
            elements=elements[cat],
            tensors=count[cat],
            dtypes=tuple(sorted(dtypes[cat].items(), key=lambda kv: (-kv[1], kv[0]))),
        )
        for cat in sorted(bytes_, key=_category_order)
    )
    return CheckpointBytes(source=source, categories=categories, files=files, cast_on_load=True)


_ORDER = ("embeddings", "attention", "mlp", "experts", "ssm", "norms", "head", "other", "vision", "projector")


def _category_order(cat: str) -> int:
    return _ORDER.index(cat) if cat in _ORDER else len(_ORDER)


SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"  # transformers' names (utils/constants)


def index_shards(where: str, text: str) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names (its ``weight_map`` values), checked."""
    try:
        weight_map = json.loads(text).get("weight_map")
    except (ValueError, AttributeError, RecursionError) as err:
        raise header_error(where, f"the index is not a JSON object ({shown(str(err), 80, quote=False)})") from None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise header_error(where, "the index has no weight_map of tensor names to shard files")
    shards = sorted(set(weight_map.values()))
    if len(shards) > MAX_FILES:
        raise header_error(where, f"the index names {len(shards):,} shards; at most {MAX_FILES:,} are read")
    if any(not s.endswith(".safetensors") or s.startswith("/") or ".." in s.split("/") for s in shards):
        raise header_error(where, "the index names a shard that is not a .safetensors file in the repo")
    return shards


def checkpoint_files(names: list[str]) -> list[str] | None:
    """Which ``.safetensors`` files of a folder or repo (top-level names) hold the model: ``model.safetensors``
    when there is one, else every one (older GPTQ names such as ``gptq_model-4bit-128g.safetensors``). A sharded
    checkpoint is read through its index instead (``index_shards``): a Mistral repo also holds
    ``consolidated.safetensors``, the same weights again, which the index does not name. None: no safetensors."""
    if SINGLE in names:
        return [SINGLE]
    found = sorted(n for n in names if n.endswith(".safetensors") and "/" not in n)
    return found or None


def local_checkpoint(folder: Path, num_layers: int | None = None) -> CheckpointBytes | None:
    """The headers of the checkpoint in ``folder`` (not its subfolders), or None when it holds no safetensors:
    the shards its ``model.safetensors.index.json`` names, else ``checkpoint_files``."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError:
        return None
    if INDEX in names:
        where = str(folder / INDEX)
        try:
            text = (folder / INDEX).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise header_error(where, f"cannot read the index ({getattr(err, 'strerror', None) or err})") from None
        chosen: list[str] | None = index_shards(where, text)
        missing = [n for n in chosen or [] if n not in names]
        if missing:
            raise header_error(where, f"the index names {shown(missing[0], 80)}, which the folder lacks")
    else:
        chosen = checkpoint_files(names)
    if not chosen:
        return None
    if len(chosen) > MAX_FILES:
        raise header_error(str(folder), f"{len(chosen):,} .safetensors files; at most {MAX_FILES:,} are read")
    tensors = [t for n in chosen for t in read_header(folder / n)]
    where = shown(str(folder), 200, quote=False)
    source = f"safetensors headers of {where} ({_files(len(chosen))})"
    return checkpoint_from_tensors(tensors, source=source, files=len(chosen), num_layers=num_layers)


def _files(n: int) -> str:
    return f"{n} file" + ("" if n == 1 else "s")

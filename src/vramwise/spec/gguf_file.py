"""A local GGUF file (or a split set) as a ModelSpec: the architecture from its metadata, the checkpoint's own
bytes from its tensor infos. Only the header is read (``spec/gguf_header.py``), never the tensor data.

The metadata is turned back into the transformers config keys that llama.cpp's ``convert_hf_to_gguf.py`` read to
write it, and the usual adapter (``spec/adapters``) builds the spec from them, so a GGUF and the config.json it
was converted from give the same spec. The inversion follows ``convert_hf_to_gguf.py`` (ggml-org/llama.cpp,
commit 0024aa74): ``TextModel.set_gguf_parameters`` writes ``block_count`` <- num_hidden_layers,
``context_length`` <- max_position_embeddings, ``embedding_length`` <- hidden_size, ``feed_forward_length`` <-
intermediate_size, ``attention.head_count(_kv)`` <- num_attention_heads / num_key_value_heads, ``expert_count`` <-
num_local_experts / num_experts, ``expert_used_count`` <- num_experts_per_tok and ``attention.key_length`` and
``value_length`` <- head_dim; the family classes add the rest (each noted where it is read below). Sizes the
metadata may omit are read from the tensor shapes, which are exact.

The ``gguf`` package (imported here only, so only for a GGUF input) gives the ggml type table:
``GGML_QUANT_SIZES`` (elements per block, bytes per block) makes each tensor's bytes exact,
``n_elements / block * type_size``, as gguf-py's ``GGUFReader._build_tensors`` and ggml's ``ggml_nbytes`` count.
"""

from __future__ import annotations

import os
import re
import stat
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vramwise.errors import ConfigError, shown
from vramwise.files import open_nonblocking
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.checkpoint import CategoryBytes, CheckpointBytes
from vramwise.spec.gguf_header import ArrayValue, GgufHeader, TensorInfo, read_header
from vramwise.spec.model import ModelSpec

_FIELD = "model"
_ALLOWED = "a GGUF file written by llama.cpp's convert_hf_to_gguf.py or llama-quantize"
# llama.cpp's split files (examples/gguf-split, llama_split_path): "%s-%05d-of-%05d.gguf".
SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def _error(where: str, what: str, allowed: str = _ALLOWED) -> ConfigError:
    return ConfigError(f"{where}: {what}", field=_FIELD, allowed=allowed)


# --- reading the files --------------------------------------------------------------------------------------------


def read_local(path: Path) -> GgufHeader:
    where = shown(str(path), 200, quote=False)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _error(where, "no such file") from None
    except (OSError, ValueError) as err:
        raise _error(where, f"cannot read ({getattr(err, 'strerror', None) or err})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _error(where, "not a regular file (a folder, FIFO, device or socket); give a .gguf file")
    try:
        f = open_nonblocking(path)
    except OSError as err:
        raise _error(where, f"cannot read ({err.strerror or err})") from None
    with f:

        def fetch(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        return read_header(fetch, st.st_size, where)


def split_parts(path: Path) -> list[Path]:
    """Every part of a split set, from any one part's name (``x-00002-of-00003.gguf``); ``[path]`` otherwise."""
    m = SPLIT_NAME.match(path.name)
    if not m:
        return [path]
    count = int(m.group("count"))
    if not 1 <= int(m.group("no")) <= count:
        raise _error(shown(str(path), 200, quote=False), f"part {int(m.group('no'))} of {count} is not a part number")
    return [path.with_name(f"{m.group('stem')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _read_parts(path: Path) -> list[tuple[str, GgufHeader]]:
    parts = split_parts(path)
    missing = [p for p in parts if not p.is_file()]
    if missing and len(parts) > 1:
        raise _error(
            shown(str(missing[0]), 200, quote=False),
            f"split GGUF part {parts.index(missing[0]) + 1} of {len(parts)} is missing; download every part of "
            "the set into one folder",
        )
    return [(shown(str(p), 200, quote=False), read_local(p)) for p in parts]


# --- tensors: exact bytes and categories --------------------------------------------------------------------------

# GGUF tensor names (gguf-py constants.py TENSOR_NAMES) -> the categories of spec/params.py (ParamGroup.category).
_LAYER = re.compile(r"^blk\.(\d+)\.")
_OLD_EXPERT = re.compile(r"^ffn_(gate|up|down)\.\d+\.")
_LAYER_NORMS = re.compile(r"^(attn_norm(_2)?|ffn_norm|post_attention_norm|post_ffw_norm|layer_output_norm)\.")


def category(name: str) -> str:
    """The weight category of a GGUF tensor, as ``spec/params.py`` groups the same parameter."""
    if name.startswith(("token_embd.", "token_embd_norm.", "position_embd.", "token_types.")):
        return "embeddings"
    if name.startswith("output_norm."):
        return "norms"
    if name.startswith("output."):
        return "head"
    m = re.match(r"^blk\.\d+\.(.*)$", name)
    if not m:  # e.g. rope_freqs, llama3-style rope factors (LlamaModel.generate_extra_tensors): no parameter
        return "other"
    rest = m.group(1)
    if _LAYER_NORMS.match(rest):
        return "norms"
    if rest.startswith("attn_"):  # q/k/v/output, fused qkv, MLA's q_a/q_b/kv_a_mqa/kv_b/k_b/v_b, qk norms, sinks
        return "attention"
    if "_shexp" in rest:  # shared experts and Qwen2-MoE's shared-expert gate
        return "experts_shared"
    # routed experts (one 3-D tensor each, or one tensor per expert, ffn_up.<E>, in early Mixtral files) and the router
    if "_exps" in rest or _OLD_EXPERT.match(rest) or rest.startswith(("ffn_gate_inp.", "exp_probs_b.")):
        return "experts"
    if rest.startswith("ffn_"):
        return "mlp"
    return "other"


def _quant_sizes() -> tuple[dict[int, tuple[int, int]], dict[int, str]]:
    import gguf  # lazy: numpy comes with it, and only a GGUF input needs it

    sizes = {int(t): v for t, v in gguf.GGML_QUANT_SIZES.items()}
    return sizes, {int(t): t.name for t in gguf.GGMLQuantizationType}


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    type_name: str
    elements: int
    bytes: int


# ModelSpec.MAX_PARAMS bounds a whole model at 2^48 parameters (adapters/__init__.py); one tensor cannot exceed it.
_MAX_TENSOR_ELEMENTS = 2**48


def _exact(part: str, header: GgufHeader, t: TensorInfo, sizes: dict, names: dict) -> _Tensor:
    where = f"{part}: tensor '{shown(t.name, 60, quote=False)}'"
    if t.ggml_type not in sizes:
        known = ", ".join(names[k] for k in sorted(sizes))
        raise _error(where, f"has ggml type {t.ggml_type}, unknown to the gguf package here (known: {known})")
    block, type_size = sizes[t.ggml_type]
    if any(d > _MAX_TENSOR_ELEMENTS for d in t.shape) or t.elements > _MAX_TENSOR_ELEMENTS:
        raise _error(where, f"has shape {list(t.shape)}: more than 2^48 elements (a corrupt header)")
    if t.shape and t.shape[0] % block:  # gguf.cpp: ne[0] must be a multiple of the type's block size
        raise _error(where, f"row of {t.shape[0]} is not a multiple of {names[t.ggml_type]}'s block of {block}")
    nbytes = t.elements // block * type_size
    if t.offset % header.alignment:
        raise _error(where, f"data offset {t.offset:,} is not aligned to {header.alignment} (a corrupt header)")
    end = header.data_start + t.offset + nbytes
    if end > header.file_size:
        raise _error(
            where,
            f"ends at byte {end:,} but the file has {header.file_size:,} (an incomplete download: fetch it again)",
        )
    return _Tensor(t.name, t.shape, names[t.ggml_type], t.elements, nbytes)


def _checkpoint(tensors: list[_Tensor], source: str, files: int = 1) -> CheckpointBytes:
    acc: dict[str, dict[str, Any]] = defaultdict(lambda: {"bytes": 0, "elements": 0, "tensors": 0, "dtypes": {}})
    for t in tensors:
        c = acc[category(t.name)]
        c["bytes"] += t.bytes
        c["elements"] += t.elements
        c["tensors"] += 1
        c["dtypes"][t.type_name] = c["dtypes"].get(t.type_name, 0) + t.bytes
    order = ("embeddings", "attention", "mlp", "experts", "experts_shared", "norms", "head", "other")
    layers: dict[int, int] = defaultdict(int)
    for t in tensors:
        m = _LAYER.match(t.name)
        if m:
            layers[int(m.group(1))] += t.bytes
    return CheckpointBytes(
        source=source,
        files=files,  # the title says how many files were read
        # a layer index past the tensor count cannot be a real layer (a corrupt name): no per-layer bytes then
        layer_bytes=tuple(layers.get(i, 0) for i in range(max(layers) + 1))
        if layers and max(layers) < len(tensors)
        else (),
        categories=tuple(
            CategoryBytes(
                category=name,
                bytes=acc[name]["bytes"],
                elements=acc[name]["elements"],
                tensors=acc[name]["tensors"],
                dtypes=tuple(sorted(acc[name]["dtypes"].items(), key=lambda kv: (-kv[1], kv[0]))),
            )
            for name in sorted(acc, key=lambda n: order.index(n) if n in order else len(order))
        ),
    )


# --- the public entry point ---------------------------------------------------------------------------------------


def _local(text: str) -> Path | None:
    """The local path ``text`` names when something is there (or it can only be local: absolute, ./, ~)."""
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~nosuchuser"
        return Path(text)
    if text.startswith(("/", "./", "../", "~", ".\\")) or os.path.lexists(path):
        return path
    return None


def gguf_from_text(text: str) -> tuple[ModelSpec, Mapping[str, Any]]:
    """MODEL naming a GGUF: a local file or split set when one is there, else a hub reference
    (``org/name[@rev]:TAG``, ``org/name[@rev]/path/file.gguf``: spec/gguf_hub.py), else "no such file"."""
    path = _local(text)
    if path is None:
        from vramwise.spec.gguf_hub import hub_gguf_model, parse_ref

        ref = parse_ref(text)
        if ref is not None and ref.path is None:
            return hub_gguf_model(ref)
        if ref is not None:  # org/name/file.gguf: not here, so a file in a hub repo, or a mistyped local path
            try:
                return hub_gguf_model(ref)
            except ConfigError as err:
                raise _error(shown(text, 200, quote=False), f"no such local file; as a hub file: {err}") from None
        path = Path(text)
    return gguf_model(path)


def gguf_model(path: Path) -> tuple[ModelSpec, Mapping[str, Any]]:
    """The spec of a local GGUF file or split set, with ``checkpoint`` from its tensor infos, and the
    transformers-style config the spec was built from (what verify's twin would build)."""
    parts = _read_parts(path)
    return model_from_headers(parts, name=_model_name(path), source=shown(str(path), 200, quote=False))


def _model_name(path: Path) -> str:
    m = SPLIT_NAME.match(path.name)
    return shown(m.group("stem") if m else path.name.removesuffix(path.suffix), 200, quote=False)


def model_from_headers(
    parts: list[tuple[str, GgufHeader]], *, name: str, source: str
) -> tuple[ModelSpec, Mapping[str, Any]]:
    """The spec from the headers of every part of one GGUF model (one part unless split), in order."""
    from vramwise.spec.gguf_arch import config_from_metadata, storage_from_file_type

    sizes, names = _quant_sizes()
    _check_split(parts)
    tensors = [_exact(part, h, t, sizes, names) for part, h in parts for t in h.tensors]
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise _error(source, f"tensor '{shown(t.name, 60, quote=False)}' appears twice")
        seen.add(t.name)
    shapes = {t.name: t.shape for t in tensors}
    first = parts[0][1]
    config = config_from_metadata(first.metadata, shapes, source)
    spec = spec_from_config(config, name=name, source=source)
    files = f" ({len(parts)} files)" if len(parts) > 1 else ""
    checkpoint = _checkpoint(tensors, f"GGUF tensor infos of {source}{files}", len(parts))
    matrices = [t.type_name for t in tensors if len(t.shape) >= 2]
    spec = replace(spec, checkpoint=checkpoint, **storage_from_file_type(first.metadata, matrices, source))
    return spec, MappingProxyType(config)


def _check_split(parts: list[tuple[str, GgufHeader]]) -> None:
    """A split set's parts say which they are (split.no, split.count: gguf-split writes both); they must agree."""
    for i, (part, header) in enumerate(parts):
        count = header.metadata.get("split.count", 1 if len(parts) == 1 else None)
        no = header.metadata.get("split.no", 0 if len(parts) == 1 else None)
        if isinstance(count, ArrayValue) or count != len(parts) or no != i:
            raise _error(
                part,
                f"split.no {shown(no)} / split.count {shown(count)} in the header, but the file name says part "
                f"{i + 1} of {len(parts)} (split.no counts from 0); the parts do not belong together",
            )

"""``quantization_config``: which stored layout a pre-quantized checkpoint's linear weights have.

Each reader returns the name of a format (formats.py / formats/quantized.py parse it; spec may not import them),
or an ``Unread`` (field, value and why) when the bytes do not follow from the config alone; formats.default_format
then refuses in one line that says what the user can do, instead of estimating 16-bit weights for a 4-bit
checkpoint. The methods are those of transformers 5.24's AUTO_QUANTIZER_MAPPING (quantizers/auto.py); every
default below is the one of the method's config class in transformers utils/quantization_config.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from vramwise.spec.adapters.config import MAX_FFN, RawConfig, shown

Q = "quantization_config"
Result = tuple[str | None, tuple[str, str] | None]  # (format, or None: 16-bit) and what was not read


def _unread(field: str, value: object, why: str) -> Result:
    """Not read: formats.default_format refuses with ``<source>: <field> <value>; pass --format ...``."""
    return None, (f"{Q}.{field}", f"{shown(value)} is not read ({why})")


def _group_token(cfg: RawConfig, q: dict[str, Any], key: str, default: int) -> str:
    """``g<size>`` or ``g-1`` (one group per output column: transformers' per-channel spelling)."""
    group = q.get(key, default)
    if group == -1:
        return "g-1"
    # A group never spans more than one input row, so MAX_FFN (the widest input) bounds it.
    if isinstance(group, bool) or not isinstance(group, int) or not 0 < group <= MAX_FFN:
        raise cfg.error(
            f"{Q}.group_size",
            f"field '{Q}.group_size' must be a positive integer or -1, got {shown(group)}",
            "a positive integer or -1",
        )
    return f"g{group}"


def _bits(cfg: RawConfig, q: dict[str, Any], method: str, allowed: tuple[int, ...], key: str = "bits") -> int:
    bits = q.get(key, q.get("w_bit"))
    if isinstance(bits, bool) or bits not in allowed:
        text = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
        raise cfg.error(f"{Q}.{key}", f"field '{Q}.{key}' of a {method} checkpoint must be {text}, got {shown(bits)}",
                        text)
    return int(bits)


def _gptq(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # GPTQConfig: group_size 128, desc_act False; g_idx is stored whatever desc_act (QuantLinear registers it).
    # lm_head True (GPTQModel) quantizes the head too: not expressed by the layer-only layout.
    bits = _bits(cfg, q, "gptq", (2, 3, 4, 8))
    if q.get("lm_head") is True:
        return _unread("lm_head", True, "a quantized lm_head is not modelled")
    if q.get("dynamic"):  # GPTQModel per-module overrides ("+:.*down_proj": {"bits": 8}, "-:..." skipped)
        return _unread("dynamic", "per-module overrides", "the bits and groups vary by module")
    for key in ("checkpoint_format", "format"):
        # GPTQConfig.format "gptq" (v1); GPTQModel also writes "gptq_v2" (the same tensors, zero points
        # stored without the v1 offset); Marlin and BitBLAS repack them
        if str(q.get(key, "gptq")).lower() not in ("gptq", "gptq_v2"):
            return _unread(key, q.get(key), "only the GPTQ v1/v2 packing is read")
    return f"gptq-{bits}bit-{_group_token(cfg, q, 'group_size', 128)}", None


def _awq(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # AwqConfig: bits 4, group_size 128, zero_point True, format (legacy key: version) gemm. The exllama and
    # ipex backends load GEMM-packed checkpoints; GEMV and Marlin pack differently.
    bits = _bits(cfg, q, "awq", (2, 3, 4, 8))
    version = str(q.get("version", q.get("format", "gemm"))).lower()
    if bits != 4:
        return _unread("bits", bits, "AutoAWQ packs 4-bit weights only")
    if version not in ("gemm", "exllama", "ipex"):
        return _unread("version", version, "only the GEMM packing is read")
    token = _group_token(cfg, {"group_size": q.get("group_size", q.get("q_group_size", 128))}, "group_size", 128)
    return f"awq-4bit-{token}" + ("" if q.get("zero_point", True) else "-nozp"), None


def _bitsandbytes(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # BitsAndBytesConfig: bnb_4bit_quant_type fp4, bnb_4bit_use_double_quant False.
    if q.get("load_in_4bit") is True:
        kind = q.get("bnb_4bit_quant_type", "fp4")
        if kind not in ("nf4", "fp4"):
            raise cfg.error(f"{Q}.bnb_4bit_quant_type",
                            f"field '{Q}.bnb_4bit_quant_type' must be nf4 or fp4, got {shown(kind)}", "nf4 or fp4")
        return kind + ("-dq" if q.get("bnb_4bit_use_double_quant") is True else ""), None
    if q.get("load_in_8bit") is True:
        # llm_int8_has_fp16_weight keeps the 16-bit weights (Int8Params(has_fp16_weights=True)): nothing stored in 8 bit
        return (None if q.get("llm_int8_has_fp16_weight") is True else "int8"), None
    return _unread("load_in_4bit", "neither load_in_4bit nor load_in_8bit set", "no bitsandbytes mode given")


def _fp8(cfg: RawConfig, q: dict[str, Any], method: str) -> Result:
    # FineGrainedFP8Config: weight_block_size (128, 128), null for one scale per tensor; scale_fmt "float"
    # (fp32) or "ue8m0" (1 byte); MXFP8 is this quantizer with [1, 32] blocks and E8M0 scales (quantizers/auto.py).
    # dequantize True loads the weights in 16 bit.
    if q.get("dequantize") is True:
        return None, None
    if q.get("expert_dtype", "fp8") != "fp8":
        return _unread("expert_dtype", q.get("expert_dtype"), "FP4-packed experts are not modelled")
    mx = method == "mxfp8"
    block = q.get("weight_block_size", [1, 32] if mx else [128, 128])
    e8m0 = mx or q.get("scale_fmt") == "ue8m0"
    if block is None:
        return "fp8-e4m3", None  # FP8Linear: one fp32 weight_scale_inv per tensor
    if not (isinstance(block, list | tuple) and len(block) == 2 and all(type(b) is int and b > 0 for b in block)):
        raise cfg.error(f"{Q}.weight_block_size",
                        f"field '{Q}.weight_block_size' must be two positive integers or null, got {shown(block)}",
                        "two positive integers or null")
    if list(block) == [128, 128] and not e8m0:
        return "fp8-block", None
    return f"fp8-block{block[0]}x{block[1]}" + ("-e8m0" if e8m0 else ""), None


def _mxfp4(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # Mxfp4Config(dequantize=False); dequantize True (or a GPU without the triton kernels) loads bf16 experts.
    return (None if q.get("dequantize") is True else "mxfp4"), None


def _hqq(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # HqqConfig.to_dict writes quant_config = hqq's BaseQuantizeConfig: weight_quant_params {nbits, group_size};
    # with dynamic_config it is one such dict per layer tag (several layouts: not one format).
    params = q.get("quant_config")
    weights = params.get("weight_quant_params") if isinstance(params, dict) else q  # none: the constructor's keys
    if not isinstance(weights, dict):
        return _unread("quant_config", "per-layer settings", "HQQ dynamic_config mixes layouts")
    nbits = weights.get("nbits", 4)
    group = weights.get("group_size", 64)
    if nbits not in (1, 2, 4, 8) or isinstance(nbits, bool):
        return _unread("quant_config.weight_quant_params.nbits", nbits, "HQQ packs 8/4/2/1 bits in uint8 here")
    if isinstance(params, dict) and (params.get("scale_quant_params") or params.get("zero_quant_params")):
        return _unread("quant_config.scale_quant_params", "set", "quantized HQQ scales/zeros are not modelled")
    if isinstance(group, bool) or not isinstance(group, int) or not 0 < group <= MAX_FFN:
        return _unread("quant_config.weight_quant_params.group_size", group, "HQQ needs a positive group size")
    return f"hqq-{nbits}bit-g{group}", None


def _torchao(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # TorchAoConfig.to_dict: quant_type {"default": {"_type": "<Config class>", "_data": {...}}}.
    qt = q.get("quant_type")
    inner = qt.get("default") if isinstance(qt, dict) else None
    kind = inner.get("_type") if isinstance(inner, dict) else qt
    data = inner.get("_data", {}) if isinstance(inner, dict) else q.get("quant_type_kwargs", {})
    data = data if isinstance(data, dict) else {}
    if kind in ("Int4WeightOnlyConfig", "int4_weight_only"):
        group = data.get("group_size", 128)  # Int4WeightOnlyConfig's default
        if isinstance(group, bool) or not isinstance(group, int) or group <= 0:
            return _unread("quant_type.group_size", group, "a positive group size is needed")
        return f"torchao-int4-g{group}", None
    if kind in ("Int8WeightOnlyConfig", "int8_weight_only") and data.get("group_size") is None:
        return "torchao-int8", None
    if kind in ("Float8WeightOnlyConfig", "float8_weight_only"):
        return "fp8-channel", None  # torchao quantize_float8: Float8Tensor, PerRow fp32 scale
    return _unread("quant_type", kind, "this torchao config is not read")


def _bitnet(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # BitNetQuantConfig: quantization_mode offline stores packed ternary weights (BitLinear); online
    # (AutoBitLinear, QAT) keeps the 16-bit weights and quantizes them in the forward.
    return (None if q.get("quantization_mode") == "online" else "bitnet"), None


_CT_FORMATS = {"pack-quantized": "pack", "int-quantized": "int", "float-quantized": "fp", "naive-quantized": ""}
_CT_READ = ", ".join([*_CT_FORMATS, "nvfp4-pack-quantized", "dense"])


def _ct_strategy(w: dict[str, Any]) -> str | None:
    strategy = w.get("strategy", "tensor")
    if strategy in ("tensor", "channel"):
        return str(strategy)
    if strategy == "group" and type(w.get("group_size")) is int and w["group_size"] > 0:
        return f"g{w['group_size']}"
    block = w.get("block_structure")
    if isinstance(block, str) and "x" in block:  # older releases wrote "128x128"
        block = block.split("x")
    if strategy == "block" and isinstance(block, list | tuple) and len(block) == 2:
        rows, cols = (int(b) for b in block)
        return f"b{rows}x{cols}" if rows > 0 and cols > 0 else None
    return None


def _compressed_tensors(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # CompressedTensorsConfig (transformers) wraps compressed_tensors.QuantizationConfig: config_groups, each
    # {targets, weights: QuantizationArgs, input_activations, format}, a global format, ignore, kv_cache_scheme.
    if q.get("sparsity_config") and (q["sparsity_config"].get("format") not in (None, "dense")):
        return _unread("sparsity_config.format", q["sparsity_config"].get("format"), "sparse formats are not read")
    groups = q.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return _unread("config_groups", groups, "no quantization scheme given")
    names = set()
    for group in groups.values():
        w = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(w, dict):
            return _unread("config_groups", "a scheme without weights", "activation-only schemes are not read")
        targets = group.get("targets", ["Linear"])
        if targets != ["Linear"]:  # module names or regexes: only some layers carry this scheme
            return _unread("config_groups.targets", targets, "a scheme on some modules only")
        fmt = (group.get("format") or q.get("format") or "dense").lower()
        if fmt == "dense":
            return None, None  # saved decompressed: 16-bit weights
        if fmt == "nvfp4-pack-quantized":
            names.add("nvfp4")
            continue
        if fmt not in _CT_FORMATS:
            return _unread("format", fmt, f"compressed-tensors formats read: {_CT_READ}")
        bits, kind, strategy = w.get("num_bits", 8), w.get("type", "int"), _ct_strategy(w)
        store = _CT_FORMATS[fmt] or ("fp" if kind == "float" else "int")
        if strategy is None or not isinstance(bits, int) or (store != "pack" and bits != 8) or not 0 < bits <= 8:
            return _unread("config_groups.weights", {k: w.get(k) for k in ("num_bits", "type", "strategy")},
                           "this weight scheme is not read")
        asym = "-asym" if w.get("symmetric", True) is False else ""
        gidx = "-gidx" if w.get("actorder") in ("group", True) else ""
        names.add(f"ct-{store}{bits}-{strategy}{asym}{gidx}")
    if len(names) != 1:
        return _unread("config_groups", sorted(names), "several weight schemes in one checkpoint")
    ignore = q.get("ignore") or []
    if not any(isinstance(e, str) and "lm_head" in e for e in ignore):
        # targets "Linear" reach lm_head too unless ignored (llm-compressor's recipes all pass ignore=["lm_head"])
        return _unread("ignore", ignore, "lm_head is quantized too; the layouts keep it in 16 bit")
    return names.pop(), None


def _auto_round(cfg: RawConfig, q: dict[str, Any]) -> Result:
    # AutoRoundConfig: bits 4, group_size 128, sym True, packing_format "auto_round:gptq"; from_dict keeps a GPTQ
    # or AWQ checkpoint's packing ("auto_round:gptq" / "auto_round:awq"). Both are read as those layouts.
    packing = str(q.get("packing_format", "auto_round:gptq")).lower()
    if packing in ("auto_round", "auto_round:gptq", "auto_round:auto_gptq"):
        return _gptq(cfg, {"bits": q.get("bits", 4), "group_size": q.get("group_size", 128)})
    if packing in ("auto_round:awq", "auto_round:auto_awq"):
        return _awq(cfg, {"bits": q.get("bits", 4), "group_size": q.get("group_size", 128), "zero_point": True})
    return _unread("packing_format", packing, "only the GPTQ and AWQ packings are read")


def _not_read(why: str) -> Callable[[RawConfig, dict[str, Any]], Result]:
    return lambda cfg, q: _unread("quant_method", q.get("quant_method"), why)


READERS: dict[str, Callable[[RawConfig, dict[str, Any]], Result]] = {
    "gptq": _gptq,
    "awq": _awq,
    "bitsandbytes": _bitsandbytes,
    "fp8": lambda cfg, q: _fp8(cfg, q, "fp8"),
    "mxfp8": lambda cfg, q: _fp8(cfg, q, "mxfp8"),
    "fbgemm_fp8": lambda cfg, q: ("fp8-channel", None),  # FbgemmFp8Linear: fp8 weight, fp32 scale per row
    "mxfp4": _mxfp4,
    "compressed-tensors": _compressed_tensors,
    "hqq": _hqq,
    "torchao": _torchao,
    "eetq": lambda cfg, q: ("eetq-int8", None),  # EetqConfig accepts weights "int8" only
    "bitnet": _bitnet,
    "auto-round": _auto_round,
}
# Methods transformers lists whose bytes do not follow from the config (codebooks, outliers, Hadamard
# rotations) or which it cannot load from a saved checkpoint (is_serializable False).
NOT_READ = {
    "aqlm": "AQLM codebooks: the bytes depend on the codebook count and size per layer",
    "vptq": "VPTQ vector codebooks per layer",
    "spqr": "SpQR sparse outliers: their count is only in the weights",
    "higgs": "HIGGS Hadamard-rotated lattice codes",
    "fp_quant": "FP-Quant (Hadamard-rotated MXFP4/NVFP4)",
    "quark": "AMD Quark: per-layer schemes",
    "fouroversix": "FourOverSix",
    "quanto": "transformers cannot load a saved quanto checkpoint (QuantoHfQuantizer.is_serializable is False)",
    "nvfp4": "transformers NVFP4Config quantizes at load and cannot be saved (is_serializable False)",
    "gguf": "a GGUF file: pass the .gguf itself",
    "metal": "the Metal quantizer",
    "sinq": "SINQ",
    "gemma": "the Gemma quantizer",
}
READERS.update({method: _not_read(why) for method, why in NOT_READ.items()})
METHODS_READ = ", ".join(m for m in READERS if m not in NOT_READ)


def quantization(cfg: RawConfig) -> Result:
    """(format, unread): the checkpoint's quantized format, or the (field, why) no format here expresses."""
    q = cfg.data.get(Q)
    if q is None:
        return None, None
    if not isinstance(q, dict):
        raise cfg.error(Q, f"field '{Q}' must be an object, got {shown(q)}", "an object")
    raw = q.get("quant_method")
    if not isinstance(raw, str):
        raise cfg.error(f"{Q}.quant_method", f"field '{Q}.quant_method' must be a string, got {shown(raw)}",
                        METHODS_READ)
    method = raw.lower()
    reader = READERS.get(method)
    if reader is None:
        return None, (f"{Q}.quant_method", f"{shown(raw)} is not a method read here (read: {METHODS_READ})")
    return reader(cfg, q)


_COMPUTE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def compute_dtype(cfg: RawConfig) -> str | None:
    """bitsandbytes 4-bit's compute dtype: bnb_4bit_compute_dtype, float32 when absent (BitsAndBytesConfig)."""
    q = cfg.data.get(Q)
    if not isinstance(q, dict) or q.get("quant_method") != "bitsandbytes" or q.get("load_in_4bit") is not True:
        return None
    raw = q.get("bnb_4bit_compute_dtype") or "float32"
    name = _COMPUTE.get(raw.removeprefix("torch.")) if isinstance(raw, str) else None
    if name is None:
        raise cfg.error(f"{Q}.bnb_4bit_compute_dtype",
                        f"field '{Q}.bnb_4bit_compute_dtype' must be float32, float16 or bfloat16, got {shown(raw)}",
                        "float32, float16 or bfloat16")
    return name


# --- modules kept in high precision ---------------------------------------------------------------------------
# The skip lists of the config classes: modules_to_not_convert (most), ignore (compressed-tensors), ignored_layers
# (MiniMax fp8), llm_int8_skip_modules (bitsandbytes), skip_modules (HQQ). Embeddings, lm_head, norms, routers
# and vision towers are kept by every layout here already; an entry naming a projection inside the decoder layers
# is not expressed by a format, and the report says so.
_SKIP_KEYS = ("modules_to_not_convert", "ignore", "ignored_layers", "llm_int8_skip_modules", "skip_modules")
# Pattern text (compiled by re's cache when a config names modules to skip; most configs name none).
_IN_LAYER = r"self_attn|attention|attn|[qkvo]_proj|qkv|mlp|gate_proj|up_proj|down_proj|experts?\b|fc[12]"
_ALREADY_KEPT = r"(^|\.)(gate|router|shared_expert_gate)\$?$|lm_head|embed|norm|vision|visual|multi_modal"


def kept_in_layers(cfg: RawConfig) -> tuple[str, ...]:
    """Skip-list entries naming a quantizable module inside the layers (the layouts count them quantized)."""
    q = cfg.data.get(Q)
    if not isinstance(q, dict):
        return ()
    entries = [e for key in _SKIP_KEYS if isinstance(q.get(key), list) for e in q[key] if isinstance(e, str)]
    return tuple(e for e in entries if re.search(_IN_LAYER, e) and not re.search(_ALREADY_KEPT, e.removeprefix("re:")))


# --- training ----------------------------------------------------------------------------------------------------
# transformers trainer_utils.validate_quantization_for_training: a quantized model trains only with adapters
# attached (unless its quantizer is_qat_trainable), and only when its quantizer's is_trainable is True. Methods
# whose config can load the weights dequantized (FineGrainedFP8Config / Mxfp4Config ``dequantize=True``) can
# instead be trained as a 16-bit model.
NOT_TRAINABLE = {
    "fbgemm_fp8": "FbgemmFp8HfQuantizer.is_trainable is False",
    "auto-round": "AutoRoundQuantizer.is_trainable is False",
    "mxfp4": "Mxfp4HfQuantizer.is_trainable is False",
}
DEQUANTIZE = {
    "fp8": "FineGrainedFP8Config(dequantize=True)",
    "mxfp8": "FineGrainedFP8Config(dequantize=True)",
    "mxfp4": "Mxfp4Config(dequantize=True)",
}


def not_trainable(method: str, fmt: str) -> str | None:
    """Why transformers refuses adapters on this quantized base, or None when it trains them."""
    if fmt.startswith("torchao-int4"):
        # TorchAoHfQuantizer.is_trainable: only the 8-bit configs (the digit before "weight" in the class name)
        return "TorchAoHfQuantizer.is_trainable is False for Int4WeightOnlyConfig"
    return NOT_TRAINABLE.get(method)

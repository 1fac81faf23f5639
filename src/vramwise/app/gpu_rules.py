"""What ``--gpu`` does to a setup: the count fills the layout, a GPU without bf16 gets fp16 rules, and notes.

Count semantics (``--gpu 8xH100``: the user has that many GPUs, and every estimate stays per GPU):
- inference: tensor-parallel over all of them (``tp = count``, as vLLM users run ``--tensor-parallel-size`` =
  the GPUs they have); an explicit ``--tp`` must equal the count.
- training: ``dp x tp x pp x cp`` must equal the count; ``dp`` defaults to ``count / (tp x pp x cp)``.
- ``fit --layouts N``: the count is N (both given must agree); ``fit --min-gpus`` searches the count itself,
  so a count is refused there.

No bf16 (NVIDIA below compute capability 8.0, Apple M1): an option left to its default takes the fp16 form
(inference weights fp16, as vLLM casts a bf16 checkpoint on such GPUs: vllm/config.py ``_check_valid_dtype``;
training ``fp16-mixed`` instead of ``bf16-mixed``, ``amp-fp16`` instead of ``amp``); an explicit bf16 choice is
refused, as HF Trainer refuses ``--bf16`` there ("Your setup doesn't support bf16/gpu", transformers
training_args.py). The bytes of the fp16 and bf16 forms are equal; the names and the warning are what change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vramwise.catalog import Gpu, GpuChoice
from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.spec.model import ModelSpec
from vramwise.units import fmt

# training precisions that need bf16, and their fp16 counterpart
_BF16_PRECISIONS = {"bf16-mixed": "fp16-mixed", "amp": "amp-fp16", "bf16": "fp16-mixed"}


def _no_bf16(choice: GpuChoice) -> str:
    g = choice.gpu
    why = f"compute capability {g.compute_capability} < 8.0" if g.compute_capability else "no native bf16"
    return f"{g.label} has no bf16 ({why})"


def budget_notes(choice: GpuChoice) -> tuple[str, ...]:
    """What the budget is, when it is not a published CUDA-visible total."""
    g = choice.gpu
    if g.custom:
        return (
            f"budget: the {g.name} given, all of it (a size has no nvidia-smi or CUDA figure; a real GPU shows "
            "CUDA a few hundred MiB less than its nominal size)",
        )
    out: tuple[str, ...] = ()
    if not g.confirmed:
        out = (f"budget: {fmt(g.memory_bytes)} for {g.label} is {g.basis}; unconfirmed (`vramwise gpus`)",)
    if g.segment in ("amd", "apple"):  # catalog/gpus.toml: ROCm/HIP or Metal, no CUDA
        out += (f"{g.label} is not an NVIDIA GPU: overhead/cuda_context is a stand-in (a CUDA process's context, "
                "estimate/cuda_context.py), not its own runtime's (ROCm/HIP or Metal), which is not modelled",)
    return out


def infer_options(choice: GpuChoice | None, options: Mapping[str, Any], default_format: str | None) -> tuple[
    dict[str, Any], tuple[str, ...]
]:
    """The inference options with the GPU's rules applied, and the notes saying so. ``default_format`` is the
    checkpoint's own format (None: a model known only by its size, served as bf16 by default)."""
    opts = dict(options)
    if choice is None:
        return opts, ()
    notes: list[str] = _spread(choice, opts) if choice.counted else []
    _architecture(choice, opts)
    if not choice.gpu.bf16:
        for name in ("format", "kv_dtype"):
            if opts.get(name) == "bf16":
                raise InvalidWorkloadError(
                    f"--{name.replace('_', '-')} bf16: {_no_bf16(choice)}; use fp16", field=name, allowed="fp16"
                )
        if opts.get("format") is None and (default_format or "bf16") == "bf16":
            opts["format"] = "fp16"
        notes.append(f"WARNING: {_no_bf16(choice)}: estimated with fp16 weights and compute (vLLM casts bf16 to fp16)")
    return opts, (*notes, *budget_notes(choice))


def _spread(choice: GpuChoice, opts: dict[str, Any]) -> list[str]:
    """How counted GPUs share the model (``opts`` updated in place), and the notes saying so: accelerate's
    device_map and llama.cpp place whole layers; otherwise one tensor-parallel group (x pp stages for vLLM)."""
    notes: list[str] = []
    pp = opts.get("pp") or 1  # vLLM's pipeline stages (--engine vllm): the GPUs are tp x pp
    if opts.get("device_map") is not None:
        # accelerate spreads whole layers over the GPUs (engines/hf.py): one model, no tensor parallelism
        if (opts.get("tp") or 1) != 1:
            raise InvalidLayoutError(
                f"--device-map splits whole layers over the {choice.count} GPUs; --tp {opts['tp']} cannot join it",
                field="tp",
                allowed="no --tp with --device-map",
            )
        notes.append(f"--gpu {choice.text}: --device-map {opts['device_map']} places whole layers on each GPU")
    elif opts.get("engine") == "llama.cpp":  # no tensor parallelism: layers split over GPUs
        if choice.count > 1:
            notes.append(f"--gpu {choice.text}: llama.cpp splits the layers over the {choice.count} GPUs (-sm layer); "
                         "the memory shown is the fullest GPU's")
    elif pp > 1:
        _check_tp_pp(choice, opts, pp)
    else:
        tp = opts.get("tp")
        if tp is None:
            opts["tp"] = choice.count
            spread = f"tensor-parallel over all {choice.count} GPUs" if choice.count > 1 else "one GPU"
            notes.append(f"--gpu {choice.text}: {spread} (tp = {choice.count}); the memory shown is per GPU")
        elif tp != choice.count:
            raise InvalidLayoutError(
                f"tp({tp}) != gpus({choice.count}) of --gpu {choice.text}: inference runs one tensor-parallel group "
                f"over the GPUs; give --tp {choice.count}, or --gpu {tp}x{choice.gpu.name}",
                field="tp",
                allowed=f"--tp {choice.count} (the count), or no --tp",
            )
    return notes


def _check_tp_pp(choice: GpuChoice, opts: dict[str, Any], pp: int) -> None:
    """With pipeline stages, the counted GPUs are tp x pp: tp fills what pp leaves, or must agree."""
    tp = opts.get("tp")
    if tp is None and choice.count % pp == 0:
        opts["tp"] = choice.count // pp
    elif (tp or 0) * pp != choice.count:
        raise InvalidLayoutError(
            f"tp({tp if tp is not None else '?'}) x pp({pp}) != gpus({choice.count}) of --gpu {choice.text}: give "
            "--tp and --pp whose product is the count",
            field="tp",
            allowed=f"tp x pp = {choice.count}",
        )


def train_options(choice: GpuChoice | None, options: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The training options with the GPU's rules applied, and the notes saying so."""
    opts = dict(options)
    if choice is None:
        return opts, ()
    notes: list[str] = []
    _architecture(choice, opts)
    if choice.counted:
        notes.append(_train_count(choice, opts))
    if opts.get("interconnect") in (None, "auto") and (link := _interconnect(choice.gpu)):
        opts["interconnect"] = link
    _float8(choice, opts)
    if not choice.gpu.bf16:
        asked = opts.get("precision")
        if asked in _BF16_PRECISIONS:
            raise InvalidWorkloadError(
                f"--precision {asked} needs bf16: {_no_bf16(choice)}; use {_BF16_PRECISIONS[asked]}",
                field="precision",
                allowed="fp32, amp-fp16, fp16-mixed",
            )
        if asked is None:
            opts["precision"] = "fp16-mixed"
            notes.append(
                f"WARNING: {_no_bf16(choice)}: precision fp16-mixed (fp16 AMP with loss scaling) instead of the "
                "default bf16-mixed"
            )
    return opts, (*notes, *budget_notes(choice))


# torchao's Float8Linear runs its matmuls with torch._scaled_mm, whose fp8 kernels need compute capability 8.9 (Ada)
# or 9.0+ (torch 2.13 testing/_internal/common_cuda.py evaluate_platform_supports_fp8: SM90OrLater or (8, 9); the
# same bound verify/twin.py cites for --float8)
_FLOAT8_CC = 8.9


def _float8(choice: GpuChoice, opts: Mapping[str, Any]) -> None:
    """--float8 on an NVIDIA GPU whose compute capability has no fp8 matmul is refused in one line."""
    cc = choice.gpu.compute_capability
    if opts.get("float8") and cc and float(cc) < _FLOAT8_CC:
        raise InvalidWorkloadError(
            f"--float8: torchao's float8 matmuls (torch._scaled_mm) need compute capability {_FLOAT8_CC}+; "
            f"{choice.gpu.label} has {cc}",
            field="float8",
            allowed=f"a GPU of compute capability {_FLOAT8_CC} or later (Ada, Hopper, Blackwell), or no --float8",
        )


def _architecture(choice: GpuChoice, opts: dict[str, Any]) -> None:
    """The catalog GPU's compute capability, which picks the CUDA context's row (estimate/cuda_context.py)."""
    if choice.gpu.compute_capability and opts.get("compute_capability") is None:
        opts["compute_capability"] = choice.gpu.compute_capability


def _train_count(choice: GpuChoice, opts: dict[str, Any]) -> str:
    """Fill dp from the count, or check the layout's product against it; the note saying which."""
    sizes = {name: int(opts.get(name) or 1) for name in ("tp", "pp", "cp")}
    per_replica = sizes["tp"] * sizes["pp"] * sizes["cp"]
    shown = " * ".join(f"{k}({v})" for k, v in sizes.items())
    dp = opts.get("dp")
    if dp is None:
        if choice.count % per_replica:
            raise InvalidLayoutError(
                f"{shown} = {per_replica} does not divide gpus({choice.count}) of --gpu {choice.text}",
                field="gpu",
                allowed="a count that tp * pp * cp divides",
            )
        opts["dp"] = choice.count // per_replica
        return f"--gpu {choice.text}: dp = {choice.count} / ({shown}) = {opts['dp']}; the memory shown is per GPU"
    if dp * per_replica != choice.count:
        raise InvalidLayoutError(
            f"dp({dp}) * {shown} = {dp * per_replica} != gpus({choice.count}) of --gpu {choice.text}",
            field="gpu",
            allowed="dp * tp * pp * cp equal to the count, or no --dp (then dp = count / (tp * pp * cp))",
        )
    return f"--gpu {choice.text}: dp({dp}) * {shown} = {choice.count} GPUs; the memory shown is per GPU"


def native_format(model: object, choice: GpuChoice | None, options: Mapping[str, Any]) -> str | None:
    """The checkpoint's own format, asked only where a GPU without bf16 must replace a bf16 default."""
    if choice is None or choice.gpu.bf16 or options.get("format") is not None or not isinstance(model, ModelSpec):
        return None
    from vramwise.formats import default_format

    return default_format(model)


def uncounted(choice: GpuChoice) -> GpuChoice:
    """The same GPU without its count: its bf16 and budget rules only (``fit --layouts`` searches the layout)."""
    return GpuChoice(gpu=choice.gpu, count=1, text=choice.gpu.name)


def single(text: str, why: str) -> GpuChoice:
    """A ``--gpu`` without a count, for questions about one GPU (``why`` says which)."""
    from vramwise.catalog import parse_gpu

    choice = parse_gpu(text)
    if choice.counted and choice.count != 1:
        raise InvalidWorkloadError(
            f"--gpu {choice.text}: {why}; drop the count ({choice.count}x)", field="gpu", allowed="one GPU: no count"
        )
    return choice


def _interconnect(gpu: Gpu) -> str | None:
    """The interconnect the catalog's entry says, or None (the estimate then assumes nvswitch, in a note); the rule
    lives in catalog/gpu_spec.py ``gpu_interconnect``, below the engines, which read it too."""
    from vramwise.catalog.gpu_spec import gpu_interconnect

    return gpu_interconnect(gpu)

"""transformers ``generate`` as an engine: today's inference estimate, and accelerate's ``device_map`` layer split.

Without ``device_map`` the plan is ``estimate/inference.py``'s estimate, number for number (transformers 5.24:
sdpa, eager or flash attention, a growing cache, no pool). With ``device_map`` (``auto``, ``balanced``,
``balanced_low_0``, ``sequential``, optionally ``max_memory``) whole decoder layers go to the GPUs as
``engines/device_map.py`` places them; each GPU then holds its modules' weights, the KV cache of its layers
(transformers' cache keeps each layer's keys and values on that layer's device), the CUDA context, and the
transients of the phases it takes part in: a layer's workspace on every GPU with layers, the logits on the
head's GPU. The worst GPU decides the verdict; every GPU's estimate is in ``per_gpu``.
"""

from __future__ import annotations

from dataclasses import replace

from vramwise.catalog.gpu_spec import Gpu
from vramwise.engines.device_map import Device, Placement, balanced_memory, module_tree, placement
from vramwise.engines.result import EngineEstimate
from vramwise.errors import InvalidWorkloadError, NeedsArchitectureError, UnsupportedArchitectureError
from vramwise.estimate.cuda_context import context_term
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.kv_cache import cached_tokens, kv_elements_per_token
from vramwise.estimate.overheads import tensor_bytes, with_allocator
from vramwise.estimate.precision import kv_dtype
from vramwise.estimate.term import Estimate, Term
from vramwise.estimate.weights import own_format
from vramwise.formats import DTYPE_BYTES
from vramwise.spec.load import BareModel, Model
from vramwise.spec.model import ModelSpec
from vramwise.units import GIB
from vramwise.workload import InferSetup
from vramwise.workload.hf_flags import DeviceMap, HfFlags

VERSION = "5.24.0"  # the transformers release the inference estimate follows (tests/constraints.txt)
_SOURCE = "transformers 5.24 integrations/accelerate.py _get_device_map (get_balanced_memory, infer_auto_device_map)"
_FORMATS = ("fp32", "fp16", "bf16")  # what the placement's sizes know (a quantizer sizes its own tensors)


def plan(model: Model, setup: InferSetup, flags: HfFlags, gpu: Gpu, gpu_count: int = 1) -> EngineEstimate:
    """transformers ``generate`` on ``gpu_count`` GPUs of ``gpu``: one GPU's estimate, or the device_map split."""
    if flags.device_map is None:
        return EngineEstimate(engine="hf", version=VERSION, estimate=estimate_inference(model, setup))
    if isinstance(model, BareModel):
        raise NeedsArchitectureError(
            "--device-map needs the architecture (layers, their sizes): name a catalog model or a config.json",
            field="device_map",
        )
    _refuse(model, setup, flags, gpu_count)
    fmt = setup.weight_format or own_format(model)
    c = DTYPE_BYTES[fmt]
    root = module_tree(model, c)
    context = context_term(setup.overheads)
    caps = _caps(flags, gpu, gpu_count, context.bytes)
    if flags.device_map is not DeviceMap.SEQUENTIAL:
        caps = balanced_memory(
            root, caps, low_zero=flags.device_map is DeviceMap.BALANCED_LOW_0, user_set=flags.max_memory is not None
        )
    placed = placement(model, c, caps)
    full = estimate_inference(model, setup)  # one GPU's phases: each GPU takes the transients it runs
    gpus = sorted({d for d in caps if isinstance(d, int)})
    per_gpu = tuple(_gpu_estimate(model, setup, placed, full, g, context, fmt) for g in gpus)
    worst = max(range(len(per_gpu)), key=lambda i: per_gpu[i].peak_bytes)
    off = sum(b for d, b in placed.bytes.items() if not isinstance(d, int))
    notes = [_gpu_line(model, placed, g, e) for g, e in zip(gpus, per_gpu, strict=True)]
    emb = model.embedding
    if emb.learned_positions or emb.token_types or emb.norm or emb.proj_dim:
        notes.append(
            f"the module tree is modelled as Llama's (embeddings, layers, final norm, head): {model.name}'s extra "
            "embedding modules (learned positions, embedding norm or projections) are placed with the embedding"
        )
    if off:
        where = ", ".join(sorted({str(d) for d in placed.layers + tuple(placed.parts.values()) if isinstance(d, str)}))
        notes.append(f"{off:,} B of weights do not fit the GPUs' caps: accelerate offloads them to {where}")
    notes = [f"device_map={flags.device_map.value}: GPU {gpus[worst]} peaks highest (its terms are shown)", *notes]
    shown = replace(per_gpu[worst], notes=(*per_gpu[worst].notes, *notes))
    return EngineEstimate(
        engine="hf",
        version=VERSION,
        estimate=shown,
        host_bytes=off,
        notes=tuple(notes),
        per_gpu=per_gpu,
        sequence_tokens=setup.tokens,
    )


def hf_plan(model: Model, setup: InferSetup, gpu: Gpu, count: int = 1) -> EngineEstimate:
    """The dispatch table's entry (app/engines.py PLANS): the flags from the setup's ``hf`` group."""
    return plan(model, setup, setup.hf, gpu, count)


def _refuse(spec: ModelSpec, setup: InferSetup, flags: HfFlags, gpu_count: int) -> None:
    allowed = "a decoder-only language model in fp32, fp16 or bf16, tp 1"
    why = None
    if spec.encoder_decoder is not None or spec.ssm is not None or spec.vision is not None:
        why = f"{spec.name}'s module tree (encoder-decoder, Mamba or vision layers) is not modelled"
    elif setup.tp > 1:
        why = f"--tp {setup.tp} is transformers' tp_plan; device_map splits whole layers instead (use tp 1)"
    elif (setup.weight_format or own_format(spec)) not in _FORMATS:
        why = f"weights in {setup.weight_format or own_format(spec)}: a quantizer's placement sizes are not modelled"
    if why:
        message = f"--device-map {flags.device_map}: {why}"
        raise UnsupportedArchitectureError(message, field="device_map", allowed=allowed)
    if flags.max_memory is not None and len(flags.max_memory) > gpu_count:
        raise InvalidWorkloadError(
            f"--max-memory names {len(flags.max_memory)} GPUs, --gpu gives {gpu_count}",
            field="max_memory",
            allowed=f"at most {gpu_count} sizes",
        )


def _caps(flags: HfFlags, gpu: Gpu, gpu_count: int, context: int) -> dict[Device, float]:
    """accelerate's max_memory: as given (those GPUs only, then the disk), or each GPU's free memory once its CUDA
    context exists (utils/modeling.py get_max_memory: mem_get_info after torch.tensor([0], device=i)), then the
    CPU, whose size is not modelled (unbounded here: what goes there is reported as offloaded)."""
    if flags.max_memory is not None:
        return {i: float(b) for i, b in enumerate(flags.max_memory)}
    caps: dict[Device, float] = {i: float(gpu.memory_bytes - context) for i in range(gpu_count)}
    caps["cpu"] = float("inf")
    return caps


def _gpu_estimate(
    spec: ModelSpec, setup: InferSetup, placed: Placement, full: Estimate, gpu: int, context: Term, fmt: str
) -> Estimate:
    layers = [i for i, d in enumerate(placed.layers) if d == gpu]
    head = placed.parts.get("lm_head") == gpu
    weights = Term(
        name="weights/placed",
        bytes=placed.bytes.get(gpu, 0),
        formula=_modules(spec, placed, gpu) or "no modules",
        source=_SOURCE,
    )
    kv_name, kv_b = kv_dtype(setup, fmt)
    per_token = kv_elements_per_token(spec, 1) * kv_b
    kept = sum(cached_tokens(spec, i, setup.tokens, setup.kv_block) for i in layers)
    kv = Term(
        name="kv_cache",
        bytes=setup.batch * per_token * kept,
        formula=f"b {setup.batch} x {per_token:,} B per token per layer ({kv_name}) x {kept:,} tokens over "
        f"{len(layers)} layers on this GPU",
        source="transformers DynamicCache: each layer's keys and values on that layer's device",
    )
    # an encoder (ImplTraits.causal_kv_cache False) keeps no cache: no term, as in the inference estimate
    persistent = (weights, kv, context) if spec.traits.causal_kv_cache else (weights, context)
    tensors = tensor_bytes(persistent)
    phases = []
    for phase in full.phases:
        live = [t for t in phase.transient if _runs_here(t.name, bool(layers), head)]
        phases.append(with_allocator(tensors, phase.kind, live, setup.overheads.allocator_fraction))
    return Estimate(persistent=persistent, phases=tuple(phases), notes=full.notes)


def _runs_here(name: str, has_layers: bool, has_head: bool) -> bool:
    """Which of one GPU's transients a GPU of the split holds: the head's logits on the head's GPU, a layer's
    temporaries (workspace, the prefill's cache views) on every GPU with layers; the allocator reserve is redone."""
    if name == "overhead/allocator":
        return False
    if name.startswith("activations/logits"):
        return has_head
    return has_layers


def _modules(spec: ModelSpec, placed: Placement, gpu: int) -> str:
    parts = [name.removeprefix("model.") for name, d in placed.parts.items() if d == gpu]
    layers = [i for i, d in enumerate(placed.layers) if d == gpu]
    if layers:
        span = f"layers {layers[0]}-{layers[-1]}" if len(layers) > 1 else f"layer {layers[0]}"
        parts.insert(1 if "embed_tokens" in parts else 0, span)
    return ", ".join(parts)


def _gpu_line(spec: ModelSpec, placed: Placement, gpu: int, est: Estimate) -> str:
    cap = placed.max_memory.get(gpu)
    capped = f" (weights cap, max_memory {cap / GIB:.2f} GiB)" if cap is not None and cap != float("inf") else ""
    return f"GPU {gpu}: {_modules(spec, placed, gpu) or 'nothing'}; peak {est.peak_bytes / GIB:.2f} GiB{capped}"

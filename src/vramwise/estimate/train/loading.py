"""The loading phase: device memory while the checkpoint is loaded, quantized and sharded, before the first step.

Read at transformers 5.24.0, accelerate 1.15.0 and torch 2.13.0 (the versions the project's environment installs)
and DeepSpeed v0.19.5-27-gedaa72212. Per GPU, what is live at the loading peak (W: the stage's weights as
training keeps them, whole; n: the GPUs they are sharded over; t: the largest single tensor; u: the largest FSDP
unit, a decoder layer or the embeddings + head + final norm of the root unit):

  hf             W       ``from_pretrained`` without a device map fills the model on the host
                         (core_model_loading.py ``convert_and_load_state_dict_in_model``: ``device_map or
                         {"": "cpu"}``); the Trainer then moves it with ``model.to(device)``
                         (trainer.py ``_move_model_to_device``), one parameter at a time: the weights, no more.
                         Refused with ZeRO-3 (transformers then always builds with zero.Init) and FSDP.
  hf-device-map  W + c   ``from_pretrained(device_map=...)`` reads each tensor and sends it to its device in the
                         parameter's dtype (``_materialize_copy``: ``tensor.to(device=..., dtype=...)``) from up to
                         ``GLOBAL_WORKERS = min(4, cpu_count)`` threads; when the checkpoint's dtype is cast to
                         another width the source tensor is copied to the device first: c = 4 x t in the
                         checkpoint's dtype, else 0. Refused with ZeRO-3 (integrations/accelerate.py
                         ``check_and_set_device_map``: "DeepSpeed Zero-3 is not compatible with passing a
                         `device_map`") and with FSDP (a model on the GPU before FSDP wraps it is fsdp-full).
  fsdp-full      W + W/n  the model is on the GPU before FSDP shards it (``from_pretrained(device_map=local rank)``
                         or ``model.to(device)`` first); accelerate's FSDP2 preparation keeps
                         ``original_sd = model.state_dict()`` alive across ``fully_shard`` (utils/fsdp_utils.py
                         ``fsdp2_prepare_model``), so every whole tensor stays beside its shard. Counted as torch's
                         FSDP holds it, at the weights' width: accelerate under mixed precision first upcasts every
                         trainable parameter to fp32 ("Upcast to fp32 master weights"), which would make W 4 B per
                         trainable parameter; the term's formula names those bytes rather than add them, since
                         nothing here says accelerate runs (a framework preset can). (FSDP1 on such a model frees
                         each unit as it shards it: at most W + u.) The issue's case: runs whose peak
                         is loading were under by up to 75%.
  fsdp-meta      W/n + t + t/n  the model built on the meta device and sharded there, then the full state dict
                         sent one tensor at a time: accelerate FSDP2 with ``cpu_ram_efficient_loading``
                         (``fsdp2_load_full_state_dict``: the whole tensor on the GPU, broadcast from rank 0,
                         ``distribute_tensor`` into its shard), torchtune (v0.6.0-rc1-220 training/_distributed.py
                         ``load_from_full_model_state_dict``: each full tensor ``.to(device)``, chunked, copied into
                         its shard). torchtitan's DCP load reads each rank's shard only (t ~ 0): an upper bound there.
  fsdp-sync      W/n + 2u  FSDP1 unit by unit: with ``sync_module_states`` (accelerate FSDP1
                         ``cpu_ram_efficient_loading``: rank 0 loads, the others build empty and receive the
                         broadcast) or from a model on the host (``_move_module_to_device`` moves only the unit's
                         own parameters): the unit on the GPU and its flattened copy (_flat_param.py
                         ``flatten_tensors``: ``torch.cat``), then its shard. Lightning's FSDP strategy under
                         ``init_module(empty_init=True)`` is this path too: each unit materialised, reset and
                         sharded, bottom up (Lightning-AI/lightning #18122 Fabric, #18385 Trainer, 2.1). FSDP2 from a
                         host model holds less (u + u/n: ``fully_shard`` moves the unit, then chunks it).
  zero-init      W/n + t  DeepSpeed ``zero.Init`` partitions each module's own parameters right after the module
                         is built (partition_parameters.py ``_post_init_method``), transformers turns it on for a
                         ZeRO-3 config (modeling_utils ``needs_zero3_init``), then fills the model module by module,
                         gathering only that module's own parameters (integrations/deepspeed.py
                         ``_load_state_dict_into_zero3_model``: ``named_parameters(recurse=False)``).
  bnb-quantize   Wq + t16  quantizing on load, transformers loads synchronously "to avoid worker threads loading
                         full-precision tensors to GPU faster than the main thread can quantize them"
                         (core_model_loading.py): the quantized weights so far and one 16-bit weight (its quantized
                         copy is among the weights already).

transformers 5 has no ``low_cpu_mem_usage`` (``from_pretrained`` pops it as "Not used anymore": the model is always
built on the meta device and filled), so the v4 distinction between it and a materialised model is gone; with and
without ``device_map`` are the hf and hf-device-map paths.

``auto`` picks from the layout: FSDP -> fsdp-full (the largest of the FSDP paths, and the one the published runs
that died loading took), ZeRO-3 -> zero-init, a bitsandbytes base -> bnb-quantize, otherwise hf. The HF Trainer
with FSDP (transformers 5.24 ``fsdp_config`` version 2 by default, training_args.py) keeps the model on the host
(``place_model_on_device`` False under FSDP) and accelerate shards it unit by unit: fsdp-sync (FSDP2 holds u + u/n
of a unit where this path counts 2u); with ``cpu_ram_efficient_loading`` it is fsdp-meta. ``--loading`` or a
framework preset says which.

The phase shares the plan's persistent terms (the step's model states), which do not exist yet while loading
(the optimizer states, master weights and gradients come after it). The phase's one term is therefore the
loading bytes beyond them, ``max(0, loading - persistent model states)``: persistent + phase is the loading peak
whenever loading can be the run's peak, and the phase is left out when the term is 0 (it cannot be the peak then).
A fused tensor that transformers assembles from several checkpoint tensors (MoE experts merged by a
``WeightConverter``) is counted as the one tensor it becomes.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Term
from vramwise.estimate.train.layout import Stage, in_layer, stage_share
from vramwise.estimate.train.quantized import training_base
from vramwise.formats import DTYPE_BYTES
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import FsdpMode, Loading, TrainSetup

# the bitsandbytes formats (formats/__init__.py, the formats whose source is _BNB): LLM.int8() and the 4-bit ones
BNB_FORMATS = ("int8", "nf4", "nf4-dq", "fp4", "fp4-dq")
LOAD_WORKERS = 4  # transformers core_model_loading.GLOBAL_WORKERS = min(4, os.cpu_count()): training hosts have 4+


def loading_path(spec: ModelSpec, setup: TrainSetup) -> Loading:
    """The loading path of ``setup`` (``auto`` resolved from the layout); a path the layout cannot run is refused."""
    fsdp = setup.parallel.fsdp != FsdpMode.NONE
    zero3 = setup.parallel.sharding.stage == 3 and not fsdp
    base = training_base(spec, setup.peft).fmt
    # quantized on load: a bitsandbytes base from a checkpoint that does not already store it
    bnb = base in BNB_FORMATS and base != spec.stored_format
    chosen = setup.loading
    if chosen == Loading.AUTO:
        from vramwise.workload.frameworks import fsdp_loading  # torchtune and torchtitan build on the meta device

        under_fsdp = Loading(fsdp_loading(setup.framework))
        auto = ((fsdp, under_fsdp), (zero3, Loading.ZERO_INIT), (bnb, Loading.BNB_QUANTIZE))
        return next((path for applies, path in auto if applies), Loading.HF)
    by_fsdp = (fsdp, "--fsdp (FSDP shards the model it loads)")
    rules = {
        Loading.FSDP_FULL: by_fsdp,
        Loading.FSDP_META: by_fsdp,
        Loading.FSDP_SYNC: by_fsdp,
        Loading.ZERO_INIT: (zero3, "--zero 3 (zero.Init partitions for ZeRO stage 3)"),
        Loading.BNB_QUANTIZE: (bnb, "a bitsandbytes base quantized on load (--peft qlora from a 16-bit checkpoint)"),
        # transformers refuses a device map under ZeRO-3 (integrations/accelerate.py check_and_set_device_map); a
        # model on the GPU before FSDP wraps it is the fsdp-full path
        Loading.HF_DEVICE_MAP: (not fsdp and not zero3, "no --fsdp (that is fsdp-full) and no --zero 3"),
        # a whole model moved to one GPU: under ZeRO-3 transformers always builds with zero.Init (modeling_utils
        # needs_zero3_init), and FSDP from a host model shards unit by unit (fsdp-sync)
        Loading.HF: (not fsdp and not zero3, "no --fsdp and no --zero 3 (their paths: fsdp-*, zero-init)"),
    }
    ok, needs = rules[Loading(chosen)]
    if not ok:
        raise InvalidWorkloadError(f"loading {chosen} needs {needs}", field="loading", allowed=needs)
    return Loading(chosen)


@dataclass(frozen=True, kw_only=True)
class _Sizes:
    whole: int  # W: the stage's weights as training keeps them, unsharded
    shard: int  # W/n: this GPU's part of them
    tensor: int  # t: the largest single tensor, at the weights' width (bnb: the checkpoint's dtype)
    unit: int  # u: the largest FSDP unit
    cast: int  # c: the device map's in-flight source copies when the checkpoint's dtype is cast
    upcast: int  # accelerate FSDP2 under mixed precision: the trainable parameters' growth to fp32 (named only)


def _sizes(
    spec: ModelSpec, setup: TrainSetup, stage: Stage, weights: int, width: float, bnb: bool, master: int
) -> _Sizes:
    n = setup.parallel.sharding.weights
    # accelerate fsdp2_prepare_model: "Upcast to fp32 master weights" for every trainable parameter not in fp32
    # when mixed precision is on, before fully_shard; ``master`` (this GPU's fp32 master copy, on the GPU or the
    # host) counts those parameters: master x optimizer shards / 4 of them
    trainable = master * setup.parallel.sharding.optimizer // 4
    upcast = round(trainable * (4 - width)) if width < 4 else 0
    groups = [g for g in parameter_groups(spec) if stage_share(g, spec, stage, setup.parallel)]
    largest = max((g.count // g.tensors for g in groups if not bnb or (in_layer(g) and g.kind == "linear")), default=0)
    # the checkpoint's own width (config.json's dtype): a cast to another width stages the source on the device,
    # from up to LOAD_WORKERS threads at once
    stored = DTYPE_BYTES.get(spec.stored_dtype, 2)
    cast = LOAD_WORKERS * largest * stored if width != stored else 0
    layer = sum(g.count for g in parameter_groups(spec) if in_layer(g)) // spec.num_layers
    outer = sum(g.count for g in groups if not in_layer(g))
    return _Sizes(
        whole=weights * n,
        shard=weights,
        tensor=round(largest * (stored if bnb else width)),
        unit=round(max(layer, outer) * width),
        cast=round(cast),
        upcast=upcast,
    )


def _formula(path: Loading, s: _Sizes, n: int) -> tuple[int, str]:
    """(bytes live on the GPU at the loading peak, the arithmetic), per path."""
    if path == Loading.HF_DEVICE_MAP:
        return s.whole + s.cast, f"weights {s.whole:,} + {LOAD_WORKERS} source tensors being cast {s.cast:,}"
    if path == Loading.FSDP_FULL:
        upcast = (
            f"; accelerate's FSDP2 would first upcast the trainable parameters to fp32, {s.upcast:,} more whole and "
            f"{s.upcast // n:,} more in the shard: not counted (torch's FSDP does not upcast)"
            if s.upcast
            else ""
        )
        return s.whole + s.shard, f"whole model {s.whole:,} + its shard {s.shard:,} (/{n}){upcast}"
    if path == Loading.FSDP_META:
        part = -(-s.tensor // n)
        arithmetic = f"shard {s.shard:,} (/{n}) + one whole tensor {s.tensor:,} + its shard {part:,}"
        return s.shard + s.tensor + part, arithmetic
    if path == Loading.ZERO_INIT:
        return s.shard + s.tensor, f"shard {s.shard:,} (/{n}) + one module's parameters gathered {s.tensor:,}"
    if path == Loading.FSDP_SYNC:
        return s.shard + 2 * s.unit, f"shard {s.shard:,} (/{n}) + one unit materialised and flattened 2 x {s.unit:,}"
    if path == Loading.BNB_QUANTIZE:
        return s.whole + s.tensor, f"quantized weights {s.whole:,} + one 16-bit weight {s.tensor:,}"
    return s.whole, f"weights {s.whole:,}, moved to the GPU after loading on the host"


def loading_term(
    spec: ModelSpec,
    setup: TrainSetup,
    stage: Stage,
    states: tuple[Term, ...],
    width: float,
    master: int = 0,
    *,
    fp32_params: bool = False,
) -> Term:
    """The loading phase's one term: what loading holds beyond the persistent model states ``states`` (every
    persistent tensor term of the step but the context), ``width`` the weights' bytes per element, ``master`` this
    GPU's fp32 master copy (0: none; on the GPU or offloaded). ``fp32_params``: FSDP2 under a mixed recipe, whose
    weight terms are the fp32 shards (states.py fsdp2_fp32_params): the checkpoint is loaded at ``width`` and those
    shards are the master copy."""
    path = loading_path(spec, setup)
    weights = sum(t.bytes for t in states if t.name.startswith("weights/") and t.name != "weights/lora")
    if fp32_params:
        weights, master = round(weights * width / 4), weights
    bnb = path == Loading.BNB_QUANTIZE
    sizes = _sizes(spec, setup, stage, weights, width, bnb, master)
    live, arithmetic = _formula(path, sizes, setup.parallel.sharding.weights)
    held = sum(t.bytes for t in states)
    return Term(
        name=f"loading/{path}",
        bytes=max(0, live - held),
        formula=f"{arithmetic} = {live:,} on the GPU while loading, less the {held:,} of model states counted as "
        "persistent (optimizer states, master weights and gradients come after loading)",
        source="estimate/train/loading.py (the path's framework function in its docstring)",
    )

"""The loading phase: device memory while the checkpoint is loaded, quantized and sharded, before the first step.

Per GPU, what is live at the loading peak (W: the model's weights as training keeps them, whole; n: the GPUs the
weights are sharded over; t: the largest single tensor; u: the largest FSDP unit, a decoder layer or the
embeddings + head + final norm that the root unit holds):

  hf             W      transformers ``from_pretrained`` builds and fills the model on the host; the trainer then
                        moves it to its GPU one parameter at a time (``Trainer._move_model_to_device`` ->
                        ``nn.Module.to``): the GPU ends with the weights and never holds more.
  hf-device-map  W + t  ``from_pretrained(device_map=...)`` reads each tensor straight onto its device and casts
                        it there (modeling_utils ``_load_state_dict_into_meta_model``, v5: one checkpoint shard
                        after another): the weights so far plus the tensor being cast.
  fsdp-full      W + W/n  every rank builds the whole model and moves it to its GPU, then FSDP flattens and shards
                        it (FSDP1 ``_init_param_handle_from_module`` after ``_move_module_to_device``): before the
                        unsharded storage is freed the GPU holds the whole model and its shard. The issue's case:
                        runs whose peak is loading were under by up to 75%.
  fsdp-meta      W/n + t  FSDP2: the model built on the meta device, ``fully_shard``, ``to_empty`` on the shard,
                        then the full state dict broadcast or distributed one tensor at a time
                        (torch.distributed.checkpoint.state_dict ``set_model_state_dict`` with
                        ``broadcast_from_rank0``: ``_broadcast_state_dict`` / ``_distribute_state_dict``). Lightning's
                        FSDP strategy under ``init_module(empty_init=True)`` loads this way.
  fsdp-sync      W/n + 2u  accelerate ``cpu_ram_efficient_loading``: rank 0 loads on the host, the others build on
                        the meta device; FSDP1 with ``sync_module_states`` materialises each unit on the GPU,
                        broadcasts it from rank 0, flattens it (a second copy) and shards it, unit by unit.
  zero-init      W/n + t  DeepSpeed ``zero.Init`` partitions each parameter as its module is built
                        (partition_parameters.py ``_post_init_method``); transformers then fills a ZeRO-3 model
                        module by module, gathering only that module's own parameters (modeling_utils
                        ``_load_state_dict_into_zero3_model``: ``GatheredParameters(named_parameters(recurse=False))``).
  bnb-quantize   Wq + t16  bitsandbytes quantizes on load: each 16-bit weight reaches the GPU, is quantized, and
                        the 16-bit copy is freed (transformers quantizer_bnb_4bit ``create_quantized_param`` ->
                        ``bnb.nn.Params4bit.to``): the quantized weights so far plus one 16-bit tensor (its
                        quantized copy is among the weights already).

``auto`` picks from the layout: FSDP -> fsdp-full (what ``FSDP(model.to(device))`` and a Trainer without
``cpu_ram_efficient_loading`` do), ZeRO-3 -> zero-init (transformers turns it on when the DeepSpeed config is
stage 3: ``is_deepspeed_zero3_enabled``), a bitsandbytes base -> bnb-quantize, otherwise hf. Framework presets
(``--framework``) choose theirs.

The phase shares the plan's persistent terms (the step's model states), which do not exist yet while loading
(the optimizer states, master weights and gradients come after it). The phase's one term is therefore the
loading bytes beyond them: ``max(0, loading - persistent model states)``, so that persistent + phase is the
loading peak whenever it can be the run's peak, and no more than the step's own phases otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Term
from vramwise.estimate.train.layout import Stage, in_layer, stage_share
from vramwise.estimate.train.quantized import training_base
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import FsdpMode, Loading, TrainSetup

_SHARDED = (Loading.FSDP_FULL, Loading.FSDP_META, Loading.FSDP_SYNC)


def loading_path(spec: ModelSpec, setup: TrainSetup) -> Loading:
    """The loading path of ``setup`` (``auto`` resolved from the layout); a path the layout cannot run is refused."""
    fsdp = setup.parallel.fsdp != FsdpMode.NONE
    zero3 = setup.parallel.sharding.stage == 3 and not fsdp
    bnb = (training_base(spec, setup.peft).fmt or "").startswith("bnb")
    chosen = setup.loading
    if chosen == Loading.AUTO:
        auto = ((fsdp, Loading.FSDP_FULL), (zero3, Loading.ZERO_INIT), (bnb, Loading.BNB_QUANTIZE))
        return next((path for applies, path in auto if applies), Loading.HF)
    by_fsdp = (fsdp, "--fsdp (FSDP shards the model it loads)")
    rules = {
        Loading.FSDP_FULL: by_fsdp,
        Loading.FSDP_META: by_fsdp,
        Loading.FSDP_SYNC: by_fsdp,
        Loading.ZERO_INIT: (zero3, "--zero 3 (zero.Init partitions for ZeRO stage 3)"),
        Loading.BNB_QUANTIZE: (bnb, "a bitsandbytes base (--peft qlora, or a bnb checkpoint)"),
        # transformers Trainer: "You can't train a model that has been loaded with `device_map='auto'` in any
        # distributed mode" (trainer.py __init__, is_model_parallel with a distributed run)
        Loading.HF_DEVICE_MAP: (setup.parallel.gpus == 1, "one GPU (the Trainer refuses device_map when distributed)"),
        Loading.HF: (True, ""),
    }
    ok, needs = rules[Loading(chosen)]
    if not ok:
        raise InvalidWorkloadError(f"loading {chosen} needs {needs}", field="loading", allowed=needs)
    return Loading(chosen)


@dataclass(frozen=True, kw_only=True)
class _Sizes:
    whole: int  # W: the stage's weights as training keeps them, unsharded
    shard: int  # W/n: this GPU's part of them
    tensor: int  # t: the largest single tensor, at the weights' width (bnb: the checkpoint's 16 bits)
    unit: int  # u: the largest FSDP unit


def _sizes(spec: ModelSpec, setup: TrainSetup, stage: Stage, weights: int, width: float, bnb: bool) -> _Sizes:
    n = setup.parallel.sharding.weights
    groups = [g for g in parameter_groups(spec) if stage_share(g, spec, stage, setup.parallel)]
    largest = max((g.count // g.tensors for g in groups if not bnb or (in_layer(g) and g.kind == "linear")), default=0)
    layer = sum(g.count for g in parameter_groups(spec) if in_layer(g)) // spec.num_layers
    outer = sum(g.count for g in groups if not in_layer(g))
    return _Sizes(
        whole=weights * n,
        shard=weights,
        tensor=round(largest * (2 if bnb else width)),
        unit=round(max(layer, outer) * width),
    )


def _formula(path: Loading, s: _Sizes, n: int) -> tuple[int, str]:
    """(bytes live on the GPU at the loading peak, the arithmetic), per path."""
    if path == Loading.HF_DEVICE_MAP:
        return s.whole + s.tensor, f"weights {s.whole:,} + the tensor being cast {s.tensor:,}"
    if path == Loading.FSDP_FULL:
        return s.whole + s.shard, f"whole model {s.whole:,} + its shard {s.shard:,} (/{n})"
    if path in (Loading.FSDP_META, Loading.ZERO_INIT):
        return s.shard + s.tensor, f"shard {s.shard:,} (/{n}) + one whole tensor {s.tensor:,}"
    if path == Loading.FSDP_SYNC:
        return s.shard + 2 * s.unit, f"shard {s.shard:,} (/{n}) + one unit materialised and flattened 2 x {s.unit:,}"
    if path == Loading.BNB_QUANTIZE:
        return s.whole + s.tensor, f"quantized weights {s.whole:,} + one 16-bit weight {s.tensor:,}"
    return s.whole, f"weights {s.whole:,}, moved to the GPU after loading on the host"


def loading_term(spec: ModelSpec, setup: TrainSetup, stage: Stage, states: tuple[Term, ...], width: float) -> Term:
    """The loading phase's one term: what loading holds beyond the persistent model states ``states`` (every
    persistent tensor term of the step but the context), ``width`` the weights' bytes per element."""
    path = loading_path(spec, setup)
    weights = sum(t.bytes for t in states if t.name.startswith("weights/") and t.name != "weights/lora")
    bnb = path == Loading.BNB_QUANTIZE
    sizes = _sizes(spec, setup, stage, weights, width, bnb)
    live, arithmetic = _formula(path, sizes, setup.parallel.sharding.weights)
    held = sum(t.bytes for t in states)
    return Term(
        name=f"loading/{path}",
        bytes=max(0, live - held),
        formula=f"{arithmetic} = {live:,} on the GPU while loading, less the {held:,} of model states counted as "
        "persistent (optimizer states, master weights and gradients come after loading)",
        source="estimate/train/loading.py (the path's framework function in its docstring)",
    )

"""Lightning's FSDP strategy as LitGPT runs it: FSDP1 flat parameters, and the gradients they make.

LitGPT's multi-GPU fine-tuning (lit-gpt 8641822 finetune/lora.py ``setup``: ``FSDPStrategy(auto_wrap_policy={Block},
activation_checkpointing_policy={Block}, ...)``) runs torch's FSDP1 through Lightning's strategy, which turns on
``use_orig_params`` (Lightning 71aed751 src/lightning/fabric/strategies/fsdp.py ``FSDPStrategy.__init__``:
``self._fsdp_kwargs.setdefault("use_orig_params", True)``). Each ``Block`` is one ``FlatParameter`` holding the
layer's frozen weights and its LoRA adapters together, and a flat parameter requires a gradient when any of its
tensors does (torch 2.13 distributed/fsdp/_flat_param.py ``_validate_tensors_to_flatten``: "the logical OR over
each tensor's value", non-uniform ``requires_grad`` permitted for ``use_orig_params=True``). Its gradient is the
whole flat parameter's: FSDP's own docstring (fully_sharded_data_parallel.py: mixing frozen and non-frozen
parameters gives "higher than expected gradient memory usage") and its wrap warning (_wrap_utils.py: "total numel
instead of nonfrozen numel before sharding via reduce-scatter"). After the reduce-scatter each rank keeps its shard
of it (``_post_backward_hook`` -> ``_saved_grad_shard``), until ``optimizer.zero_grad()`` after the step.

Gradient accumulation keeps the whole gradient: LitGPT's loop runs every micro-batch but the last of a step under
``fabric.no_backward_sync(model, enabled=is_accumulating)`` (finetune/lora.py ``train``; finetune/full.py the same),
which is ``module.no_sync()`` under FSDP (fsdp.py ``_FSDPBackwardSyncControl.no_backward_sync``); there
``_post_backward_hook`` returns before the reduce-scatter ("if not state._sync_gradients: ... return"), so
``.grad`` "remains the unsharded gradient from prior no_sync() iterations" (_runtime_utils.py
``_post_backward_final_callback``) -- "FSDP will accumulate the full model gradients (instead of gradient shards)"
(``no_sync``'s docstring). Each GPU then holds the whole gradient of every unit that trains, from the first
micro-batch's backward to the last one's reduce-scatter. The root unit (embeddings, final norm, head) has no
adapter under LitGPT's default LoRA (``lora_head = False``), so it has no gradient.

The flat parameter has one dtype (_flat_param.py: "Must flatten tensors with uniform dtype"): its gradient is at
the weights' width (2 B under LitGPT's ``bf16-true``).
"""

from __future__ import annotations

from vramwise.estimate.term import Term
from vramwise.estimate.train.layout import Stage, in_layer, stage_share
from vramwise.estimate.train.lora import LoraModule
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import FsdpMode, ParallelConfig, PeftConfig, TrainSetup
from vramwise.workload.options import Framework

SRC = (
    "Lightning 71aed751 fabric/strategies/fsdp.py (use_orig_params=True; no_backward_sync -> FSDP.no_sync); "
    "torch 2.13 distributed/fsdp/_flat_param.py _validate_tensors_to_flatten (a flat parameter requires grad if any "
    "tensor does), _runtime_utils.py _post_backward_hook (no reduce-scatter under no_sync); lit-gpt 8641822 "
    "finetune/lora.py train (no_backward_sync while accumulating)"
)


def flat_gradients(
    spec: ModelSpec,
    stage: Stage,
    parallel: ParallelConfig,
    peft: PeftConfig,
    lora: list[LoraModule],
    width: int,
    *,
    no_sync: bool,
) -> Term:
    """The gradients one GPU holds under Lightning's FSDP: every unit with a trainable tensor contributes its whole
    flat parameter, sharded over the FSDP group after the reduce-scatter, whole while ``no_sync`` accumulates."""
    layers, outer = 0.0, 0.0
    for g in parameter_groups(spec):
        share = stage_share(g, spec, stage, parallel)
        if in_layer(g):
            layers += g.count * share
        else:
            outer += g.count * share
    adapters = peft.adapters
    in_layers = sum(m.params(peft.lora_r) for m in lora if m.place == "layers") * len(stage.layers) / spec.num_layers
    outside = sum(m.params(peft.lora_r) for m in lora if m.place != "layers")
    # a unit trains when any of its tensors does: every Block and the root under full fine-tuning; under LoRA the
    # Blocks when an adapter sits in the layers, the root when one sits on the embeddings or the head
    layer_trains = not adapters or in_layers > 0
    root_trains = not adapters or outside > 0
    count = round((layers + in_layers) * layer_trains + (outer + outside) * root_trains)
    n = parallel.sharding.gradients
    per_gpu = count * width if no_sync else -(-count // n) * width
    which = "Blocks" if layer_trains and not root_trains else "units"
    how = (
        "whole on every GPU while no_sync accumulates (LitGPT's micro-batches before the step's last)"
        if no_sync
        else f"/ {n} (the shard kept after each unit's reduce-scatter)"
    )
    return Term(
        name="gradients",
        bytes=per_gpu,
        formula=f"FSDP1 flat parameters of the {which} that train, frozen weights included: {count:,} x {width} B "
        f"{how}",
        source=SRC,
    )


def whole_unit_gradient(setup: TrainSetup) -> bool:
    """Whether backward makes one whole unit's gradient before each reduce-scatter although only adapters train:
    Lightning's FSDP1 flat parameters (LitGPT) when micro-batches do not accumulate; under ``no_sync`` those
    gradients are already counted whole among the persistent ones."""
    litgpt = setup.framework == Framework.LITGPT  # estimate/train/litgpt_code.py runs_litgpt_code
    return litgpt and setup.parallel.fsdp != FsdpMode.NONE and setup.peft.adapters and setup.grad_accum == 1

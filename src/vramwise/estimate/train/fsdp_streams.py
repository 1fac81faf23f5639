"""FSDP2's side streams: memory the caching allocator keeps reserved for them, which the compute stream cannot use.

PyTorch's caching allocator reuses a freed block only for the stream that allocated it (c10/cuda/
CUDACachingAllocator.cpp: a block's ``stream`` is part of its pool key, get_free_block searches the requesting
stream's blocks only). FSDP2 allocates two kinds of buffers on its own streams (torch 2.13
torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py, and the same in the torch of torchtitan's benchmarks):

- foreach_reduce: ``reduce_output`` is allocated under ``reduce_scatter_stream`` and the sharded gradients are
  views of it ("The RS output is allocated in the RS stream and used in the default stream"). When
  ``zero_grad(set_to_none=True)`` drops them before the next step, their blocks go back to that stream's pool:
  from the second step on, the forward and the loss backward run beside a reduce-scatter pool as large as the
  gradient shards, which the estimate counts as live only from backward's end to the step.
- foreach_all_gather: ``all_gather_output`` is allocated under ``all_gather_copy_in_stream`` during forward and
  pre-backward (_fsdp_param_group.py FSDPCommContext.get_all_gather_streams), and freed after the copy-out into
  the unsharded parameters. Its pool is as large as the most all-gather outputs alive at once. In forward,
  _fsdp_param_group.py FSDPParamGroup.wait_for_unshard keeps the unit's all-gather result in
  ``comm_ctx.all_gather_state`` ("Defer free to allow for overlap of this copy-out with next all-gather
  collective") and frees it only in the next unit's wait_for_unshard, after that unit's unshard has allocated
  its own output (pre_forward: unshard, then wait_for_unshard; the same in the torch of torchtitan's end-2024
  benchmarks, 1963fc8, torch/distributed/_composable/fsdp/_fsdp_param_group.py): the root unit's output
  (embeddings, head) is alive when the first layer's is allocated. In backward (the else branch: freed at the
  copy-out) the current layer's and the prefetched one's. The pool: root + one layer, or two layers.

Both are reserve, not tensors (``overhead/allocator/...``: in max_memory_reserved, not in max_memory_allocated),
and left out when the allocator reserve is (``allocator_fraction`` 0, as a CPU trace measures). The all-gather
pool is counted where no all-gather output is live otherwise (forward end, the loss backward, a rebuilt layer);
in a layer's backward part of it holds the prefetched layer, which the FSDP units count already.
"""

from __future__ import annotations

from vramwise.estimate.term import Term
from vramwise.estimate.train.recipe import Recipe
from vramwise.estimate.train.sharded import layer_and_outer_params
from vramwise.spec.model import ModelSpec
from vramwise.workload import FsdpMode, TrainSetup

SRC_RS = (
    "torch 2.13 torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_reduce: reduce_output allocated "
    "under reduce_scatter_stream, the sharded gradients view it; CUDACachingAllocator reuses a block for its own "
    "stream only"
)
SRC_AG = (
    "torch 2.13 torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_all_gather: all_gather_output "
    "allocated under all_gather_copy_in_stream (forward, pre-backward); _fsdp_param_group.py wait_for_unshard: "
    "in forward the previous unit's output is freed after the next unit's is allocated (all_gather_state); "
    "CUDACachingAllocator reuses a block for its own stream only"
)


def stream_pools(spec: ModelSpec, setup: TrainSetup, recipe: Recipe, grads: Term | None) -> tuple[Term, Term] | None:
    """(reduce-scatter pool, all-gather pool) under FSDP full sharding, or None where they do not apply:
    no FSDP, adapters (only their gradients are reduced), gradients that persist (accumulation: counted live) or
    live on the host (CPU offload; its all-gather pool is left out too),
    or the allocator reserve left out."""
    p = setup.parallel
    if p.fsdp == FsdpMode.NONE or p.sharding.stage < 3 or setup.peft.adapters or grads is None:
        return None
    if setup.overheads.allocator_fraction == 0.0:
        return None
    layer, outer = layer_and_outer_params(spec, p.tp)
    w = recipe.weight
    largest = max(outer + layer, 2 * layer)
    what = f"the root unit's {outer:,} + the first layer's {layer:,}" if outer >= layer else f"two layers 2 x {layer:,}"
    rs = Term(
        name="overhead/allocator/fsdp_reduce_stream",
        bytes=grads.bytes,
        formula=f"the gradient shards' blocks, freed by zero_grad to the reduce-scatter stream: {grads.bytes:,} B",
        source=SRC_RS,
    )
    ag = Term(
        name="overhead/allocator/fsdp_all_gather_stream",
        bytes=largest * w,
        formula=f"the largest all-gather outputs at once, {what} parameters x {w} B",
        source=SRC_AG,
    )
    return rs, ag

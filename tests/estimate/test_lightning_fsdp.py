"""LitGPT under Lightning's FSDP (estimate/train/lightning_fsdp.py): FSDP1 flat gradients, by hand arithmetic and a
traced FSDP1 step on the CPU.

Oracles: Lightning 71aed751 fabric/strategies/fsdp.py (use_orig_params=True, no_backward_sync -> FSDP.no_sync),
lit-gpt 8641822 finetune/lora.py (no_backward_sync while accumulating), torch's FSDP1 (_flat_param.py: a flat
parameter requires grad if any of its tensors does; _runtime_utils.py: no reduce-scatter under no_sync), traced
below with torch's own FullyShardedDataParallel on a one-process gloo group.
"""

from __future__ import annotations

import pytest

from vramwise.estimate.term import Estimate
from vramwise.estimate.train.loading import loading_path
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

H, L, FFN, V = 4096, 32, 11008, 32000  # Llama-2-7B
LAYER = 4 * H * H + 3 * H * FFN + 2 * H  # q, k, v, o; gate, up, down; two RMSNorm weights: 202,383,360
LORA_LAYER = 2 * 8 * (H + H)  # r 8 on q and v (LitGPT's fused qkv: two parts), A (r x h) and B (h x r) each
LITGPT = {
    "framework": "litgpt", "precision": "bf16", "peft": "lora", "lora_r": 8, "lora_targets": ("q_proj", "v_proj"),
    "adapter_dtype": "bf16", "optimizer": "adamw", "attention": "sdpa", "loss": "compute-dtype", "loss_chunk": 128,
    "recompute": "full", "batch": 1, "seq": 1024, "dp": 2, "fsdp": "full",
    "cuda_context_mib": 0, "allocator_fraction": 0.0,
}  # fmt: skip


def _train(**kw: object) -> Estimate:
    return estimate_training(catalog_spec("llama-2-7b"), TrainSetup.from_flat(**{**LITGPT, **kw}))


def _term(est: Estimate, name: str) -> int:
    return max((t.bytes for t in est.terms if t.name == name), default=0)


def test_accumulating_keeps_every_blocks_whole_gradient() -> None:
    # 128 // micro-batch 1: no_sync for 127 of 128 micro-batches; every Block's flat parameter trains (its LoRA), its
    # gradient spans the frozen weights too, unsharded, bf16
    est = _train(grad_accum=128)
    assert LAYER == 202_383_360
    grads = next(t for t in est.persistent if t.name == "gradients")
    assert grads.bytes == L * (LAYER + LORA_LAYER) * 2 == 12_960_923_648
    assert _term(est, "fsdp/unsharded_grads") == 0  # counted among the persistent gradients already


def test_without_accumulation_each_rank_keeps_its_shard() -> None:
    est = _train(grad_accum=1)
    assert not any(t.name == "gradients" for t in est.persistent)  # from backward to the step only
    assert _term(est, "gradients") == L * (LAYER + LORA_LAYER) * 2 // 2
    # one Block's unsharded flat gradient waits for its reduce-scatter, frozen weights included
    assert _term(est, "fsdp/unsharded_grads") == LAYER * 2


def test_full_fine_tuning_accumulates_the_whole_model() -> None:
    est = _train(peft="none", grad_accum=4)
    whole = L * LAYER + 2 * V * H + H  # the Blocks and the root unit (embeddings, head, final norm)
    assert next(t for t in est.persistent if t.name == "gradients").bytes == whole * 2


def test_transformers_fsdp_is_unchanged() -> None:
    # the rule is Lightning's FSDP1; FSDP2 elsewhere keeps per-parameter gradients: only the adapters' shard
    setup = TrainSetup.from_flat(**{**LITGPT, "framework": "none", "grad_accum": 4})
    est = estimate_training(catalog_spec("llama-2-7b"), setup)
    assert next(t for t in est.persistent if t.name == "gradients").bytes == L * LORA_LAYER * 2 // 2


def test_litgpt_loads_unit_by_unit() -> None:
    # Lightning builds on the meta device, shards each Block as it materialises, loads in the full-state-dict context
    spec = catalog_spec("llama-2-7b")
    assert loading_path(spec, TrainSetup.from_flat(**LITGPT)) == "fsdp-sync"


@pytest.mark.filterwarnings("ignore::UserWarning")  # FSDP1 warns of this very gradient, and of NO_SHARD at world 1
def test_fsdp1_flat_gradient_spans_frozen_weights_traced() -> None:
    """torch's FSDP1 with use_orig_params=True (Lightning's default) on a Block holding a frozen weight and a
    trainable adapter: the flat parameter requires grad, and its gradient under no_sync is the whole unit."""
    torch = pytest.importorskip("torch")
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is needed")
    from torch import nn
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Linear(64, 64, bias=False)  # the frozen base
            self.a = nn.Linear(64, 4, bias=False)  # the adapter
            self.b = nn.Linear(4, 64, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.w(x) + self.b(self.a(x))

    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = nn.Sequential(Block(), Block())
        for name, p in model.named_parameters():
            p.requires_grad = not name.endswith("w.weight")
        wrapped = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True,
                       device_id=torch.device("cpu"))  # fmt: skip
        with wrapped.no_sync():
            wrapped(torch.randn(3, 64)).sum().backward()
        units = [m for m in wrapped.modules() if isinstance(m, FSDP) and isinstance(m.module, Block)]
        assert len(units) == 2
        for unit in units:
            flat = unit._flat_param
            assert flat.requires_grad and flat.grad is not None
            assert flat.grad.numel() == 64 * 64 + 2 * 4 * 64  # frozen weight included
    finally:
        dist.destroy_process_group()

"""FSDP2 under a mixed recipe (estimate/train/states.py fsdp2_fp32_params): the fp32 shard is the parameter and the
master copy at once, the 16-bit copy exists only while a unit is gathered. By hand arithmetic, and torch's own
fully_shard on a one-rank gloo group (CPU).

Oracle: torch 2.13 distributed/fsdp/_fully_shard/_fsdp_param.py (FSDPParam keeps ``_sharded_param_data`` in the
parameter's dtype; ``all_gather_inputs`` casts it to ``param_dtype`` per all-gather).
"""

from __future__ import annotations

import pytest

from vramwise.estimate.term import Estimate
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import catalog_spec
from vramwise.workload import TrainSetup

N = 8_030_261_248  # Llama-3.1-8B parameters
BARE = {"batch": 1, "seq": 1024, "cuda_context_mib": 0, "allocator_fraction": 0.0, "nccl_buffers": False}


def _train(**kw: object) -> Estimate:
    return estimate_training(catalog_spec("llama-3.1-8b"), TrainSetup.from_flat(**{**BARE, **kw}))


def _persistent(est: Estimate, prefix: str) -> int:
    return sum(t.bytes for t in est.persistent if t.name.startswith(prefix))


def test_fsdp2_mixed_holds_only_the_fp32_shard() -> None:
    est = _train(dp=8, fsdp="full", precision="bf16-mixed")
    assert abs(_persistent(est, "weights/") - N * 4 // 8) <= 8  # rounded per category
    assert _persistent(est, "optimizer/master_weights") == 0  # the fp32 shard is the master copy
    assert _persistent(est, "optimizer/states") == 2 * N * 4 // 8


def test_other_layouts_keep_the_16_bit_weights_and_the_master() -> None:
    zero3 = _train(dp=8, zero=3, precision="bf16-mixed")  # DeepSpeed: bf16 partition + fp32 master partition
    assert abs(_persistent(zero3, "weights/") - N * 2 // 8) <= 8
    assert _persistent(zero3, "optimizer/master_weights") == N * 4 // 8
    pure = _train(dp=8, fsdp="full", precision="bf16")  # no master: the bf16 shard
    assert abs(_persistent(pure, "weights/") - N * 2 // 8) <= 8
    lora = _train(dp=8, fsdp="full", precision="bf16-mixed", peft="lora")  # frozen weights keep their dtype
    assert abs(_persistent(lora, "weights/") - _persistent(lora, "weights/lora") - N * 2 // 8) <= 8


def test_loading_still_reads_the_checkpoint_in_16_bits() -> None:
    # fsdp-full (the auto path without a framework): the whole 16-bit model and its 16-bit shard, as before
    est = _train(dp=8, fsdp="full", precision="bf16-mixed")
    load = next(t for p in est.phases for t in p.transient if t.name == "loading/fsdp-full")
    assert "whole model 16,060,522,496 + its shard 2,007,565,312 (/8)" in load.formula


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fully_shard_keeps_fp32_shards_and_frees_the_bf16_copy() -> None:
    torch = pytest.importorskip("torch")
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is needed")
    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.fsdp._fully_shard._fsdp_state import _get_module_fsdp_state

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)
        model = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False))
        for layer in model:
            fully_shard(layer, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        out = model(torch.randn(2, 64))
        assert out.dtype == torch.bfloat16  # computed in param_dtype
        out.float().sum().backward()
        state = _get_module_fsdp_state(model[0])
        assert state is not None and state._fsdp_param_group is not None
        param = state._fsdp_param_group.fsdp_params[0]
        assert param._sharded_param_data.dtype == torch.float32 and param.param_dtype == torch.bfloat16
        assert all(p.to_local().dtype == torch.float32 for p in model.parameters())  # the parameter: fp32 shard
        # after backward the bf16 all-gather output is freed: no 16-bit copy is held between steps
        assert all(t.untyped_storage().size() == 0 for t in param.all_gather_outputs)
    finally:
        dist.destroy_process_group()

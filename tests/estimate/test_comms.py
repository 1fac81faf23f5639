"""Communication memory against NCCL's, PyTorch's and DeepSpeed's own rules, written out by hand.

NCCL v2.27.3-1: src/init.cc DEFAULT_BUFFSIZE (1 << 22), DEFAULT_LL_BUFFSIZE (8 lines x 512 threads x 8 steps x
16 B), DEFAULT_LL128_BUFFSIZE (120 x 640 x 8 steps x 8 B); src/graph/connect.cc ncclTopoPostset (search channels
doubled, capped by NCCL_MAX_NCHANNELS, raised to NCCL_MIN_NCHANNELS); src/transport/nvls.cc ncclNvlsBufferSetup
(16 channels x 2 x 128 KiB x 8 steps x heads). DeepSpeed v0.16.4: parameter_offload.py
mark_persistent_parameters, partitioned_param_coordinator.py fetch_sub_module.
"""

from __future__ import annotations

import pytest

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.nccl import NcclEnv, channels, communicator
from vramwise.estimate.train.comms import communicators, groups, nccl_terms
from vramwise.estimate.train.training import estimate_training
from vramwise.spec.load import resolve_model
from vramwise.workload import TrainSetup
from vramwise.workload.options import Interconnect

MIB = 1 << 20
PER_CHANNEL = 4 * MIB + 512 * 1024 + 4_915_200  # SIMPLE + LL + LL128 = 9,633,792 B
# p2p.cc: the send side (ncclSendMem 4,096 B [+ SIMPLE under P2P read]) and the receive side (ncclRecvMem 4,096 B
# + LL + LL128 [+ SIMPLE without read]) each rounded up to CUDA_IPC_MIN 2 MiB:
# read (NVLink): 4,198,400 -> 6 MiB and 5,443,584 -> 6 MiB; write (PCIe): 4,096 -> 2 MiB and 9,637,888 -> 10 MiB
CONN = 12 * MIB
# ncclNvlsBufferSetup: 16 channels x 2 x 1 MiB x 8 heads = 256 MiB; ncclNvlsSetup's credits 16 x 2 x 64 B x 8 =
# 16 KiB, rounded up to the 2 MiB granularity
NVLS_8 = 16 * 2 * (128 * 1024 * 8) * 8 + 2 * MIB


def test_buffers_per_channel_are_nccls_defaults() -> None:
    assert NcclEnv().per_channel == PER_CHANNEL == 9_633_792
    assert NcclEnv().connection(read=True) == 6 * MIB + 6 * MIB == CONN
    assert NcclEnv().connection(read=False) == 2 * MIB + 10 * MIB == CONN
    env = NcclEnv(buffsize=1 << 20)  # NCCL_BUFFSIZE=1048576 replaces SIMPLE only
    assert env.per_channel == 1 * MIB + 512 * 1024 + 4_915_200
    # read: 4,096 + 1 MiB -> 2 MiB; 4,096 + 5,439,488 -> 6 MiB. write: 2 MiB; 4,096 + 6,488,064 -> 8 MiB
    assert env.connection(read=True) == 8 * MIB and env.connection(read=False) == 10 * MIB


def test_channels_by_interconnect_and_environment() -> None:
    # search channels x 2 (ncclTopoPostset): NVSwitch H100 2 x 16, A100 NVLink 2 x 12, PCIe 2 x 1
    assert channels(Interconnect.NVSWITCH, NcclEnv()) == 32
    assert channels(Interconnect.NVLINK, NcclEnv()) == 24
    assert channels(Interconnect.PCIE, NcclEnv()) == 2
    assert channels(Interconnect.NVSWITCH, NcclEnv(max_channels=8)) == 8  # NCCL_MAX_NCHANNELS caps
    assert channels(Interconnect.PCIE, NcclEnv(min_channels=4)) == 4  # NCCL_MIN_NCHANNELS raises
    assert channels(Interconnect.PCIE, NcclEnv(min_channels=100)) == 64  # never past MAXCHANNELS 64


def test_environment_is_read_and_bad_values_refused() -> None:
    env = NcclEnv.from_environ({"NCCL_BUFFSIZE": "2097152", "NCCL_NVLS_ENABLE": "0", "NCCL_MAX_NCHANNELS": "16"})
    assert env == NcclEnv(buffsize=2 * MIB, max_channels=16, nvls_enable=False)
    with pytest.raises(InvalidWorkloadError, match="NCCL_BUFFSIZE"):
        NcclEnv.from_environ({"NCCL_BUFFSIZE": "lots"})


def test_nvls_only_on_nvswitch_above_two_local_gpus() -> None:
    eight = communicator(8, 8, Interconnect.NVSWITCH, NcclEnv())
    assert eight.ring == 32 * CONN and eight.nvls == NVLS_8 == 258 * MIB
    assert communicator(2, 2, Interconnect.NVSWITCH, NcclEnv()).nvls == 0  # ncclNvlsInit: gpuCount <= 2
    assert communicator(8, 8, Interconnect.NVLINK, NcclEnv()).nvls == 0
    assert communicator(8, 8, Interconnect.NVSWITCH, NcclEnv(nvls_enable=False)).nvls == 0


def test_groups_of_a_megatron_layout() -> None:
    # 64 GPUs: tp 8 inside a node, pp 2, dp 4; ranks tp-cp-ep-dp-pp, 8 GPUs a node
    setup = TrainSetup.from_flat(tp=8, pp=2, dp=4)
    got = {g.name: (g.size, g.local) for g in groups(setup)}
    # the world's default group gets its own communicator (barriers) as no layout group spans the 64 GPUs
    assert got == {"tp": (8, 8), "dp": (4, 1), "pp": (2, 1), "world": (64, 8)}
    terms = {t.name: t.bytes for t in nccl_terms(setup)}
    assert terms["overhead/nccl"] == 3 * 32 * CONN  # tp, dp and world rings at 32 channels (nvswitch assumed)
    assert terms["overhead/nccl_nvls"] == NVLS_8  # only the tp group has more than 2 GPUs on the node
    # pp: send/recv only, to one neighbour on another node: 2 channels per network peer (ncclTopoGetNchannels)
    assert terms["overhead/nccl_p2p"] == 1 * 2 * CONN


def test_pipeline_send_recv_channels_per_neighbour() -> None:
    # pp 4 inside one node: a middle stage sends to and receives from two neighbours, over NVLink with
    # p2pnChannelsPerPeer = pow2Up(32) channels each (ncclTopoComputeP2pChannels); over PCIe 2 channels each
    inside = {t.name: t.bytes for t in nccl_terms(TrainSetup.from_flat(pp=4, grad_accum=4))}
    assert inside == {"overhead/nccl_p2p": 2 * 32 * CONN}
    end = {t.name: t.bytes for t in nccl_terms(TrainSetup.from_flat(pp=4, grad_accum=4), pipeline_end=True)}
    assert end == {"overhead/nccl_p2p": 1 * 32 * CONN}  # the first and the last stage have one neighbour
    pcie = {t.name: t.bytes for t in nccl_terms(TrainSetup.from_flat(pp=2, grad_accum=2, interconnect="pcie"))}
    assert pcie == {"overhead/nccl_p2p": 1 * 2 * CONN}
    a100 = {t.name: t.bytes for t in nccl_terms(TrainSetup.from_flat(pp=2, grad_accum=2, interconnect="nvlink"))}
    assert a100 == {"overhead/nccl_p2p": 1 * 32 * CONN}  # 24 channels, rounded up to a power of 2


def test_context_parallel_reduces_over_dp_x_cp_and_hybrid_has_two_groups() -> None:
    cp = {g.name: g.size for g in groups(TrainSetup.from_flat(dp=2, cp=2, seq=4096))}
    assert cp == {"cp": 2, "dp x cp": 4}
    hybrid = {g.name: g.size for g in groups(TrainSetup.from_flat(dp=16, fsdp="hybrid", fsdp_shard=8))}
    assert hybrid == {"fsdp shard": 8, "fsdp replicate": 2, "world": 16}


def test_no_communicator_on_one_gpu_and_none_when_switched_off() -> None:
    assert nccl_terms(TrainSetup()) == ()
    assert nccl_terms(TrainSetup.from_flat(dp=8, fsdp="full", nccl_buffers=False)) == ()


def test_pcie_ddp_counts_two_channels_outside_the_allocator() -> None:
    spec = resolve_model("llama-3-8b")
    setup = TrainSetup.from_flat(dp=4, interconnect="pcie", peft="lora")
    est = estimate_training(spec, setup)
    assert est.term("overhead/nccl").bytes == 2 * CONN  # one dp communicator, 2 channels
    bare = estimate_training(spec, TrainSetup.from_flat(dp=4, interconnect="pcie", peft="lora", nccl_buffers=False))
    # NCCL's buffers are not tensors: the allocator's reserve does not grow with them
    assert est.peak_bytes - bare.peak_bytes == 2 * CONN


def test_zero3_persistent_small_parameters() -> None:
    # Llama-3-8B: 65 RMSNorm weights of 4,096 elements are under 1e5 (mark_persistent_parameters); every linear and
    # the embeddings are larger. Kept whole on each of 8 ranks: 65 x 4,096 x (1 - 1/8) x 2 B beyond the shard.
    spec = resolve_model("llama-3-8b")
    est = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3))
    assert est.term("zero/persistent_params").bytes == round(65 * 4096 * 7 / 8) * 2
    none = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3, param_persistence_threshold=0))
    assert "zero/persistent_params" not in {t.name for t in none.persistent}


def test_zero3_gathers_one_leaf_module_and_a_prefetch_bounded_by_max_live_parameters() -> None:
    # fetch_sub_module gathers a module's own parameters (one Linear: Llama-3-8B's largest is lm_head, 128,256 x
    # 4,096) and prefetches while numel < min(max_live - available, prefetch_bucket 5e7).
    spec = resolve_model("llama-3-8b")
    head = 128_256 * 4096
    est = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3))
    assert est.term("zero/gathered_params").bytes == (head + 50_000_000) * 2
    tight = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3, max_live_params=500_000_000))
    assert tight.term("zero/gathered_params").bytes == head * 2  # 5e8 - 525,336,576 available < 0: no prefetch


def test_zero3_keeps_the_last_layers_for_their_reuse() -> None:
    # __params_to_release keeps what reoccurs within stage3_max_reuse_distance (1e9) elements. Llama-2-7B's head
    # side is lm_head 32,000 x 4,096 + the final norm's 4,096 = 131,076,096, traversed twice (forward, backward):
    # (1e9 - 2 x 131,076,096) / 2 = 368,923,904 elements of the last layers stay gathered at the turn.
    spec = resolve_model("llama-2-7b")
    est = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3))
    kept = (1_000_000_000 - 2 * (32_000 * 4096 + 4096)) // 2
    assert kept == 368_923_904
    forward = next(p for p in est.phases if p.name == "forward end")
    assert {t.name: t.bytes for t in forward.transient}["zero/reused_params"] == kept * 2
    end = next(p for p in est.phases if p.name == "backward end")
    assert "zero/reused_params" not in {t.name for t in end.transient}  # released after their backward
    off = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3, max_reuse_distance=0))
    assert "zero/reused_params" not in {t.name for p in off.phases for t in p.transient}
    # Llama-3-8B: 2 x 525,340,672 > 1e9 already: nothing kept
    big = estimate_training(resolve_model("llama-3-8b"), TrainSetup.from_flat(dp=8, zero=3))
    assert "zero/reused_params" not in {t.name for p in big.phases for t in p.transient}


def test_fsdp_reduce_scatter_input_is_one_layer_and_no_deepspeed_bucket() -> None:
    # foreach_reduce: reduce_scatter_input = world x padded shard of one unit's gradients. Llama-3-8B's layer:
    # q, o 4,096^2 each; k, v 4,096 x 1,024 each; gate, up, down 3 x 4,096 x 14,336; two norms of 4,096.
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert layer == 218_112_000
    spec = resolve_model("llama-3-8b")
    est = estimate_training(spec, TrainSetup.from_flat(dp=8, fsdp="full", precision="bf16"))
    by_phase = {p.name: {t.name: t.bytes for t in p.transient} for p in est.phases}
    # the first layer in backward holds no earlier layer's reduce-scatter input; with full recompute the next
    # layer, which does, is the larger moment
    assert "fsdp/reduce_scatter_input" not in by_phase["backward (layer)"]
    recompute = estimate_training(spec, TrainSetup.from_flat(dp=8, fsdp="full", precision="bf16", recompute="full"))
    layer_phase = next(p for p in recompute.phases if p.name == "backward (layer)")
    got = {t.name: t.bytes for t in layer_phase.transient}
    assert got["fsdp/reduce_scatter_input"] == got["fsdp/unsharded_grads"] == layer * 2
    # backward end: the root's reduce-scatter (embeddings + head + norm, 1,050,677,248 elements x 2 B) outweighs a
    # layer's moment (2 x 436,224,000 B of parameters + 436,224,000 of gradients + 436,224,000 of input)
    end = by_phase["backward end"]
    assert end["fsdp/root_reduce_scatter_input"] == (2 * 128_256 * 4096 + 4096) * 2 > 4 * layer * 2
    names = {t.name for p in est.phases for t in p.transient}
    assert "zero/reduce_bucket" not in names  # DeepSpeed's reduce_bucket_size is not FSDP's
    head = next(p for p in est.phases if p.name == "backward (head)")
    assert "fsdp/reduce_scatter_input" not in {t.name for t in head.transient}
    grad_op = estimate_training(spec, TrainSetup.from_flat(dp=8, fsdp="grad-op", precision="bf16"))
    end = next(p for p in grad_op.phases if p.name == "backward end")
    assert {t.name: t.bytes for t in end.transient}["fsdp/reduce_scatter_input"] == layer * 2


def test_deepspeed_reduce_bucket_is_reduce_bucket_size_held_through_backward() -> None:
    # stage_1_and_2.py backward: ipg_buffer = torch.empty(reduce_bucket_size 5e8) of the 16-bit dtype at every
    # backward, released in its epilogue; stage3.py _setup_for_real_optimizer allocates it once and keeps it.
    spec = resolve_model("llama-2-7b")
    zero2 = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=2))
    by_phase = {p.name: {t.name: t.bytes for t in p.transient} for p in zero2.phases}
    assert by_phase["backward (loss)"]["zero/reduce_bucket"] == by_phase["backward end"]["zero/reduce_bucket"] == 10**9
    assert all("zero/reduce_bucket" not in by_phase[p] for p in ("forward end", "optimizer step"))
    zero3 = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3))
    assert zero3.term("zero/reduce_bucket").bytes == 10**9
    assert "zero/reduce_bucket" in {t.name for t in zero3.persistent}


def test_zero_offload_stages_gradients_through_one_gpu_buffer() -> None:
    # stage_1_and_2.py __init__ (cpu_offload): temp_grad_buffer_for_gpu_offload of largest_param_numel, 16-bit;
    # Llama-2-7B's largest parameters are the embeddings and the head, 32,000 x 4,096. No gradient partition on
    # the GPU; stage 3 keeps its 16-bit partition (6,738,415,616 / 8 x 2 B) on the host (stage3.py self.device).
    spec = resolve_model("llama-2-7b")
    zero2 = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=2, offload="optimizer"))
    assert zero2.term("zero/offload_grad_buffer").bytes == 32_000 * 4096 * 2
    assert "gradients" not in {t.name for t in zero2.persistent} | {t.name for p in zero2.phases for t in p.transient}
    zero3 = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3, offload="optimizer"))
    assert {t.name: t.bytes for t in zero3.host}["offload/gradients"] == 6_738_415_616 // 8 * 2


def test_ddp_buckets_hold_every_gradient_once_more() -> None:
    # DistributedDataParallel: gradient_as_bucket_view=False (the default) copies each gradient into its bucket;
    # "the saved memory size will be equal to the total gradients size" with views (torch/nn/parallel/distributed.py).
    spec = resolve_model("llama-2-7b")
    est = estimate_training(spec, TrainSetup.from_flat(dp=2, precision="bf16-mixed"))
    assert est.term("ddp/buckets").bytes == 6_738_415_616 * 2
    assert "ddp/buckets" in {t.name for t in est.persistent}  # allocated once, kept across steps


def test_expert_parallel_all_to_all_connects_every_peer() -> None:
    # NVIDIA/nccl issue #1685: all-to-all on 8 H100s connects 32 channels to each of the 7 peers, allocating
    # 10,485,760 B and 2,097,152 B per connection; after the first all_to_all_single the memory outside PyTorch
    # went from 1.06 GB to 4.34 GB. Counted here: 7 peers x 32 channels x 12 MiB = 2,818,572,288 B (no fit to it).
    setup = TrainSetup.from_flat(dp=8, ep=8, zero=1)
    ep = next(c for g, c in communicators(setup) if g.name == "ep")
    assert ep.p2p == 7 * 32 * CONN == 2_818_572_288


def test_the_jobs_nccl_environment_sizes_the_buffers() -> None:
    # NCCL_BUFFSIZE=1 MiB: read connection 2 + 6 MiB (test_buffers_per_channel_are_nccls_defaults), 32 channels;
    # NCCL_NVLS_ENABLE=0: no NVLS buffers
    setup = TrainSetup.from_flat(dp=8, fsdp="full", nccl_env="NCCL_BUFFSIZE=1048576,NCCL_NVLS_ENABLE=0")
    assert {t.name: t.bytes for t in nccl_terms(setup)} == {"overhead/nccl": 32 * 8 * MIB}
    capped = TrainSetup.from_flat(dp=8, fsdp="full", nccl_env="NCCL_MAX_NCHANNELS=4")
    assert {t.name: t.bytes for t in nccl_terms(capped)}["overhead/nccl"] == 4 * CONN
    with pytest.raises(InvalidWorkloadError, match="nccl_env"):
        TrainSetup.from_flat(nccl_env="NCCL_P2P_DISABLE=1")


def test_fsdp_cpu_offload_keeps_the_gradient_shards_on_the_host() -> None:
    # foreach_reduce: with offload_to_cpu each reduce-scattered shard is copied to the host. Mistral-7B's
    # 7,241,732,096 parameters / 4 x 2 B (bf16-mixed gradients).
    spec = resolve_model("mistral-7b")
    est = estimate_training(spec, TrainSetup.from_flat(dp=4, fsdp="full", offload="params"))
    assert {t.name: t.bytes for t in est.host}["offload/gradients"] == 7_241_732_096 // 4 * 2
    assert "gradients" not in {t.name for p in est.phases for t in p.transient}


def test_fsdp_root_gradients_wait_for_the_end_of_backward() -> None:
    # FSDPParamGroup.post_backward fires for the root after the embeddings' backward: GPT-2's root (wte 50,257 x
    # 768 tied with the head, wpe 1,024 x 768, ln_f 2 x 768) holds its unsharded gradients, then reshards and copies
    # them into the reduce-scatter input. Its 39,385,344 elements outweigh a layer's 7,087,872 (and so its moment
    # replaces the layers' at backward end); the head's gradient is held through every layer's backward.
    spec = resolve_model("gpt2")
    est = estimate_training(spec, TrainSetup.from_flat(dp=2, fsdp="full", precision="bf16", seq=128))
    by_phase = {p.name: {t.name: t.bytes for t in p.transient} for p in est.phases}
    outer = 50_257 * 768 + 1_024 * 768 + 2 * 768
    assert outer == 39_385_344
    end = by_phase["backward end"]
    assert end["fsdp/root_grads"] == end["fsdp/root_reduce_scatter_input"] == outer * 2
    assert "fsdp/layer_units" not in end
    assert by_phase["backward (layer)"]["fsdp/head_grad"] == 50_257 * 768 * 2


def test_overlap_comm_doubles_the_stage_1_2_bucket_only() -> None:
    # stage_1_and_2.py backward: with overlap_comm a second ipg buffer (buf_1); stage3.py keeps one flat buffer
    spec = resolve_model("llama-2-7b")
    two = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=2, overlap_comm=True))
    loss = next(p for p in two.phases if p.name == "backward (loss)")
    assert {t.name: t.bytes for t in loss.transient}["zero/reduce_bucket"] == 2 * 500_000_000 * 2
    three = estimate_training(spec, TrainSetup.from_flat(dp=8, zero=3, overlap_comm=True))
    assert three.term("zero/reduce_bucket").bytes == 500_000_000 * 2

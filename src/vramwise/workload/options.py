"""Every choice a workload offers, one StrEnum each: validation, ``--help`` and the type checker share them.

A StrEnum member equals its string (``Precision.FP32 == "fp32"``), so setups built from command-line strings
and JSON written from them read the same as before the enums existed.
"""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """The precision recipe (see ``estimate/train/recipe.py`` for the bytes of each)."""

    FP32 = "fp32"
    AMP = "amp"
    AMP_FP16 = "amp-fp16"
    BF16_MIXED = "bf16-mixed"
    FP16_MIXED = "fp16-mixed"
    BF16 = "bf16"


class GradDtype(StrEnum):
    """Gradients of the mixed recipes: fp32 or 16-bit (auto: 16-bit, as DeepSpeed and the ZeRO paper count)."""

    AUTO = "auto"
    FP32 = "fp32"
    HALF = "half"


class Optimizer(StrEnum):
    ADAMW = "adamw"
    ADAM = "adam"
    SGD = "sgd"
    SGD_MOMENTUM = "sgd-momentum"
    LION = "lion"
    ADAFACTOR = "adafactor"
    ADAMW_8BIT = "adamw-8bit"
    PAGED_ADAMW = "paged-adamw"
    PAGED_ADAMW_8BIT = "paged-adamw-8bit"
    LOMO = "lomo"
    # torchao's AdamW8bit (torchao 0.7.0 prototype/low_bit_optim, torchao.optim since 0.11): blockwise 8-bit states
    # like bitsandbytes', but its step is a torch.compile'd graph per parameter, not a fused CUDA kernel
    AO_ADAMW_8BIT = "ao-adamw-8bit"


class OptimizerImpl(StrEnum):
    """torch.optim's implementation (auto: fused for the mixed recipes, as DeepSpeed/Megatron, else foreach)."""

    AUTO = "auto"
    FOREACH = "foreach"
    FUSED = "fused"
    FOR_LOOP = "for-loop"


class PeftMethod(StrEnum):
    NONE = "none"
    LORA = "lora"
    QLORA = "qlora"
    LORA_8BIT = "lora-8bit"  # LoRA over a bitsandbytes LLM.int8() frozen base (load_in_8bit)
    # peft 0.21: LoraConfig(use_dora=True), IA3Config, PromptTuningConfig, PrefixTuningConfig
    DORA = "dora"
    IA3 = "ia3"
    PROMPT_TUNING = "prompt-tuning"
    PREFIX_TUNING = "prefix-tuning"


class Recompute(StrEnum):
    """none; selective: Megatron's (drops the attention scores: a no-op under sdpa/flash); full: every layer;
    op-sac: torchtitan's op-level selective policy; layer-sac: every ``recompute_every``-th layer in full."""

    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"
    OP_SAC = "op-sac"
    LAYER_SAC = "layer-sac"


class AttentionImpl(StrEnum):
    SDPA = "sdpa"
    FLASH = "flash"
    EAGER = "eager"


class LossImpl(StrEnum):
    """full: transformers' fp32 upcast; chunked: a generic fused linear cross entropy of ``loss_chunk`` tokens;
    compute-dtype: F.cross_entropy on the 16-bit logits; liger: Liger-Kernel's fused linear cross entropy;
    cce: Apple's Cut Cross Entropy; torchtune-chunked: torchtune's CEWithChunkedOutputLoss (8 chunks, fp32, v0.6);
    torchtune-linear: torchtune's LinearCrossEntropyLoss (the head per chunk inside the loss, v0.7);
    compiled: the fp32-upcast cross entropy under torch.compile (torchtitan's loss when compile is on);
    loss-parallel: the fp32-upcast cross entropy on vocabulary-sharded DTensor logits (torch's loss_parallel, as
    torchtitan runs it under tensor parallelism)."""

    FULL = "full"
    CHUNKED = "chunked"
    COMPUTE_DTYPE = "compute-dtype"
    LIGER = "liger"
    CCE = "cce"
    TORCHTUNE_CHUNKED = "torchtune-chunked"
    TORCHTUNE_LINEAR = "torchtune-linear"
    COMPILED = "compiled"
    LOSS_PARALLEL = "loss-parallel"


class AdapterDtype(StrEnum):
    """LoRA adapters' dtype: auto (peft's autocast_adapter_dtype: fp32), fp32, or bf16 (the model's 16-bit
    dtype, as torchtune keeps them)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


class KernelImpl(StrEnum):
    """An MLP or norm as transformers' eager modules compute it (composite) or as one fused kernel (Liger)."""

    COMPOSITE = "composite"
    FUSED = "fused"


class FsdpMode(StrEnum):
    """FSDP sharding: full (like ZeRO-3), grad-op (like ZeRO-2), hybrid (full inside a shard group)."""

    NONE = "none"
    FULL = "full"
    GRAD_OP = "grad-op"
    HYBRID = "hybrid"


class Offload(StrEnum):
    NONE = "none"
    OPTIMIZER = "optimizer"
    PARAMS = "params"


class KvDtype(StrEnum):
    """KV cache dtype (auto: the compute dtype)."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"


class Loading(StrEnum):
    """How the checkpoint reaches the GPUs before the first step (estimate/train/loading.py says what each holds)."""

    AUTO = "auto"  # from the layout: FSDP -> fsdp-full, ZeRO-3 -> zero-init, a bitsandbytes base -> bnb-quantize
    HF = "hf"  # transformers from_pretrained on the host, then the trainer moves the model to its GPU
    HF_DEVICE_MAP = "hf-device-map"  # from_pretrained(device_map=...): tensors read straight onto the GPU
    FSDP_FULL = "fsdp-full"  # every rank materialises the whole model on its GPU, then FSDP shards it
    FSDP_META = "fsdp-meta"  # meta-device init, to_empty on the shard, then the (sharded) state dict
    FSDP_SYNC = "fsdp-sync"  # accelerate cpu_ram_efficient_loading: rank 0 loads, sync_module_states broadcasts
    ZERO_INIT = "zero-init"  # DeepSpeed zero.Init: parameters partitioned as each module is built
    BNB_QUANTIZE = "bnb-quantize"  # bitsandbytes quantizes each 16-bit weight as it reaches the GPU


class Mode(StrEnum):
    """accurate: what the frameworks allocate; textbook: a seed's closed formulas."""

    ACCURATE = "accurate"
    TEXTBOOK = "textbook"


class Seed(StrEnum):
    """Textbook mode: which seed's formulas (000: one GPU, LoRA; 002: ZeRO, TP/SP/PP)."""

    SEED_000 = "000"
    SEED_002 = "002"


class Framework(StrEnum):
    """Whose defaults fill the options not given (workload/frameworks.py: one table per framework and version)."""

    NONE = "none"
    HF_TRAINER = "hf-trainer"
    ACCELERATE = "accelerate"
    DEEPSPEED = "deepspeed"
    TORCHTUNE = "torchtune"
    TORCHTITAN = "torchtitan"
    AXOLOTL = "axolotl"
    UNSLOTH = "unsloth"
    LLAMA_FACTORY = "llama-factory"
    MEGATRON = "megatron"
    LITGPT = "litgpt"


# The allowed values as tuples, in the order ``--help`` lists them.
PRECISIONS = tuple(Precision)
GRAD_DTYPES = tuple(GradDtype)
OPTIMIZERS = tuple(Optimizer)
OPTIMIZER_IMPLS = tuple(OptimizerImpl)
PEFT_METHODS = tuple(PeftMethod)
RECOMPUTE = tuple(Recompute)
ATTENTION_IMPLS = tuple(AttentionImpl)
LOSS_IMPLS = tuple(LossImpl)
ADAPTER_DTYPES = tuple(AdapterDtype)
KERNEL_IMPLS = tuple(KernelImpl)
FSDP_MODES = tuple(FsdpMode)
LOADINGS = tuple(Loading)
OFFLOAD = tuple(Offload)
KV_DTYPES = tuple(KvDtype)
MODES = tuple(Mode)
SEEDS = tuple(Seed)
FRAMEWORKS = tuple(Framework)


class Interconnect(StrEnum):
    """How a node's GPUs talk (sizes NCCL's channels, estimate/nccl.py): auto follows --gpu where it names a
    catalog GPU's form factor, else nvswitch; nvswitch: NVLink through NVSwitch with NVLS multicast (H100, H200,
    B200 HGX); nvlink: NVLink without NVLS (A100 HGX, NVLink bridges); pcie: PCIe only; shm: no GPU
    peer-to-peer access (many VMs and consumer boards): NCCL's SHM transport, its buffers in host memory."""

    AUTO = "auto"
    NVSWITCH = "nvswitch"
    NVLINK = "nvlink"
    PCIE = "pcie"
    SHM = "shm"


INTERCONNECTS = tuple(Interconnect)


class ZeroGrad(StrEnum):
    """What ``zero_grad()`` does to the gradients after each optimizer step: ``none`` frees them (``set_to_none=True``,
    torch.optim's and nn.Module's default from PyTorch 2.0, pytorch/pytorch#92731), so the next forward runs without
    them; ``zeros`` zeroes them in place (``set_to_none=False``, the default before 2.0: the HF Trainer of
    transformers 4.x called ``model.zero_grad()``), so they stay allocated through every later step."""

    NONE = "none"
    ZEROS = "zeros"


ZERO_GRADS = tuple(ZeroGrad)

"""Workloads: what the user wants to run, validated once, frozen.

Validation errors name the field and what is allowed; nothing downstream re-checks user input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError

Mode = Literal["accurate", "textbook"]
AttentionImpl = Literal["sdpa", "flash", "eager"]
KV_DTYPES = ("auto", "fp32", "fp16", "bf16", "fp8")
ATTENTION_IMPLS = ("sdpa", "flash", "eager")


def _positive(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidWorkloadError(f"{field} must be a positive integer, got {value!r}")


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidWorkloadError(f"{field} '{value}' is not allowed; allowed: {', '.join(allowed)}")


@dataclass(frozen=True, kw_only=True)
class InferSetup:
    """Serving or generation: ``batch`` sequences of ``context`` prompt tokens plus ``new_tokens`` generated."""

    batch: int = 1
    context: int = 2048  # prompt tokens per sequence (s)
    new_tokens: int = 0  # generated tokens per sequence (n)
    weight_format: str | None = None  # None: the checkpoint's own format
    kv_dtype: str = "auto"  # auto: the compute dtype
    attention: AttentionImpl = "sdpa"
    tp: int = 1
    kv_block: int = 16  # paged-KV block in tokens (vLLM's default); 1 for a contiguous cache
    prefill_chunk: int | None = None  # tokens per prefill forward (chunked prefill); None: the whole prompt
    all_logits: bool = False  # a plain forward returns logits for every position; generate() keeps the last
    cuda_context_mib: int | None = None  # None: the default in overheads.py
    allocator_fraction: float | None = None  # None: the default in overheads.py
    gpu_utilization: float = 0.9  # fraction of the GPU an engine may use (vLLM gpu_memory_utilization)
    mode: Mode = "accurate"

    def __post_init__(self) -> None:
        _positive("batch", self.batch)
        _positive("context", self.context)
        if isinstance(self.new_tokens, bool) or not isinstance(self.new_tokens, int) or self.new_tokens < 0:
            raise InvalidWorkloadError(f"new_tokens must be a non-negative integer, got {self.new_tokens!r}")
        _positive("tp", self.tp)
        _positive("kv_block", self.kv_block)
        if self.prefill_chunk is not None:
            _positive("prefill_chunk", self.prefill_chunk)
        _choice("kv_dtype", self.kv_dtype, KV_DTYPES)
        _choice("attention", self.attention, ATTENTION_IMPLS)
        _choice("mode", self.mode, ("accurate", "textbook"))
        if self.cuda_context_mib is not None and self.cuda_context_mib < 0:
            raise InvalidWorkloadError(f"cuda_context_mib must be >= 0, got {self.cuda_context_mib}")
        if self.allocator_fraction is not None and not 0 <= self.allocator_fraction < 1:
            raise InvalidWorkloadError(f"allocator_fraction must be in [0, 1), got {self.allocator_fraction}")
        if not 0 < self.gpu_utilization <= 1:
            raise InvalidWorkloadError(f"gpu_utilization must be in (0, 1], got {self.gpu_utilization}")

    @property
    def tokens(self) -> int:
        """Tokens each sequence holds in the KV cache at the end: s + n."""
        return self.context + self.new_tokens


PRECISIONS = ("fp32", "amp", "amp-fp16", "bf16-mixed", "fp16-mixed", "bf16")
GRAD_DTYPES = ("auto", "fp32", "half")
OPTIMIZERS = (
    "adamw",
    "adam",
    "sgd",
    "sgd-momentum",
    "lion",
    "adafactor",
    "adamw-8bit",
    "paged-adamw",
    "paged-adamw-8bit",
    "lomo",
)
OPTIMIZER_IMPLS = ("auto", "foreach", "fused", "for-loop")
PEFT_METHODS = ("none", "lora", "qlora")
RECOMPUTE = ("none", "selective", "full")
LOSS_IMPLS = ("full", "chunked")
FSDP_MODES = ("none", "full", "grad-op", "hybrid")
OFFLOAD = ("none", "optimizer", "params")


@dataclass(frozen=True, kw_only=True)
class TrainSetup:
    """One training step per GPU: a micro-batch of ``batch`` sequences of ``seq`` tokens, and the layout."""

    batch: int = 1  # micro-batch per data-parallel rank
    seq: int = 2048
    grad_accum: int = 1  # micro-batches per optimizer step (also the pipeline's micro-batches)
    precision: str = "bf16-mixed"
    grad_dtype: str = "auto"  # mixed recipes: fp32 or half gradients (auto: half, as DeepSpeed and ZeRO count)
    optimizer: str = "adamw"
    optimizer_impl: str = "auto"  # auto: fused for the mixed recipes (DeepSpeed/Megatron), else torch's foreach
    peft: str = "none"
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ()  # peft module names or "all-linear"; () = peft's default for the model
    lora_dropout: float = 0.0
    freeze_layers: int = 0  # the first N decoder layers get no gradients
    recompute: str = "none"
    attention: str = "sdpa"
    loss: str = "full"
    loss_chunk: int = 1024  # tokens per chunk of the chunked cross entropy
    dp: int = 1
    zero: int = 0
    fsdp: str = "none"
    fsdp_shard: int | None = None  # hybrid shard: GPUs in a shard group (default: dp)
    offload: str = "none"
    tp: int = 1
    sp: bool = False
    pp: int = 1
    interleave: int = 1  # virtual pipeline stages per rank
    cp: int = 1
    ep: int = 1
    reduce_bucket: int = 500_000_000  # DeepSpeed reduce_bucket_size (elements)
    prefetch_bucket: int = 50_000_000  # DeepSpeed stage3_prefetch_bucket_size (elements)
    cuda_context_mib: int | None = None
    allocator_fraction: float | None = None
    mode: Mode = "accurate"
    seed: str = "002"  # textbook mode: which seed's formulas (000: one GPU, LoRA; 002: ZeRO, TP/SP/PP)
    lora_fraction: float = 0.02  # textbook seed 000: LoRA's trainable parameters as a fraction of Φ

    def __post_init__(self) -> None:
        _choice("seed", self.seed, ("000", "002"))
        if not 0 < self.lora_fraction < 1:
            raise InvalidWorkloadError(f"lora_fraction must be in (0, 1), got {self.lora_fraction}")
        for name in ("batch", "seq", "grad_accum", "lora_r", "loss_chunk", "dp", "tp", "pp", "interleave", "cp"):
            _positive(name, getattr(self, name))
        _positive("ep", self.ep)
        _positive("reduce_bucket", self.reduce_bucket)
        _positive("prefetch_bucket", self.prefetch_bucket)
        if isinstance(self.freeze_layers, bool) or not isinstance(self.freeze_layers, int) or self.freeze_layers < 0:
            raise InvalidWorkloadError(f"freeze_layers must be a non-negative integer, got {self.freeze_layers!r}")
        _choice("precision", self.precision, PRECISIONS)
        _choice("grad_dtype", self.grad_dtype, GRAD_DTYPES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("optimizer_impl", self.optimizer_impl, OPTIMIZER_IMPLS)
        _choice("peft", self.peft, PEFT_METHODS)
        _choice("recompute", self.recompute, RECOMPUTE)
        _choice("attention", self.attention, ATTENTION_IMPLS)
        _choice("loss", self.loss, LOSS_IMPLS)
        _choice("fsdp", self.fsdp, FSDP_MODES)
        _choice("offload", self.offload, OFFLOAD)
        _choice("mode", self.mode, ("accurate", "textbook"))
        if not 0 <= self.lora_dropout < 1:
            raise InvalidWorkloadError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.zero not in (0, 1, 2, 3):
            raise InvalidWorkloadError(f"zero must be 0, 1, 2 or 3, got {self.zero!r}")
        self._check_layout()
        if self.cuda_context_mib is not None and self.cuda_context_mib < 0:
            raise InvalidWorkloadError(f"cuda_context_mib must be >= 0, got {self.cuda_context_mib}")
        if self.allocator_fraction is not None and not 0 <= self.allocator_fraction < 1:
            raise InvalidWorkloadError(f"allocator_fraction must be in [0, 1), got {self.allocator_fraction}")

    def _check_layout(self) -> None:
        if self.zero and self.fsdp != "none":
            raise InvalidLayoutError("zero and fsdp both shard the model states; choose one (zero=0 or fsdp=none)")
        if (self.zero or self.fsdp != "none") and self.dp == 1:
            what = f"zero={self.zero}" if self.zero else f"fsdp={self.fsdp}"
            raise InvalidLayoutError(f"{what} shards over data-parallel GPUs: dp must be >= 2, got dp=1")
        if self.fsdp_shard is not None:
            _positive("fsdp_shard", self.fsdp_shard)
            if self.fsdp != "hybrid" or self.dp % self.fsdp_shard:
                raise InvalidLayoutError(
                    f"fsdp_shard ({self.fsdp_shard}) applies to fsdp=hybrid and must divide dp ({self.dp})"
                )
        if self.offload != "none" and not (self.zero or self.fsdp in ("full", "hybrid")):
            raise InvalidLayoutError("offload needs zero (1-3) or fsdp=full/hybrid to manage the offloaded states")
        if self.offload == "params" and self.zero not in (0, 3):
            raise InvalidLayoutError("offload=params needs zero=3 (only stage 3 partitions the parameters)")
        if self.sp and self.tp == 1:
            raise InvalidLayoutError("sp (sequence parallel) splits the tensor-parallel group: it needs tp >= 2")
        if self.interleave > 1 and self.pp == 1:
            raise InvalidLayoutError("interleave (virtual pipeline stages) needs pp >= 2")
        if self.dp % self.ep:
            raise InvalidLayoutError(f"ep ({self.ep}) must divide dp ({self.dp}): experts are spread over DP ranks")
        if self.seq % self.cp:
            raise InvalidLayoutError(f"cp ({self.cp}) must divide seq ({self.seq})")
        if self.peft != "none" and self.optimizer == "lomo":
            raise InvalidWorkloadError(
                "optimizer lomo fuses the update into backward of full fine-tuning; use peft=none"
            )

    @property
    def step_impl(self) -> str:
        """The optimizer implementation: DeepSpeed and Megatron ship fused Adam; torch.optim defaults to foreach."""
        if self.optimizer_impl != "auto":
            return self.optimizer_impl
        return "fused" if self.precision in ("bf16-mixed", "fp16-mixed") else "foreach"

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def half_bytes(self) -> int:
        """Bytes of the 16-bit compute dtype, or 4 when everything runs in fp32."""
        return 4 if self.precision == "fp32" else 2

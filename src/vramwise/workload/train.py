"""The training workload: one step of one GPU, grouped by concern.

``TrainSetup`` keeps the per-step knobs (micro-batch, sequence, accumulation, recompute, attention, loss, mode)
and groups the rest: ``precision``, ``optimizer``, ``peft``, ``parallel``, ``overheads`` and ``textbook``. Each
group is frozen and hashable, so caches key on the groups they read and cannot miss a field added later.
The CLI, the JSON report and the benches speak flat names (``dp``, ``lora_r``): ``TrainSetup.from_flat`` and
``TrainSetup.to_flat`` are the one bridge (schema v1's ``setup`` object is ``to_flat()``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.workload.checks import coerce, non_negative, positive, real, show
from vramwise.workload.comms import CommsConfig
from vramwise.workload.flat import FlatNames
from vramwise.workload.layout import ParallelConfig
from vramwise.workload.options import (
    AdapterDtype,
    AttentionImpl,
    Framework,
    GradDtype,
    KernelImpl,
    Loading,
    LossImpl,
    Mode,
    Optimizer,
    OptimizerImpl,
    PeftMethod,
    Precision,
    Recompute,
    Seed,
    ZeroGrad,
)
from vramwise.workload.overheads import AllocatorSettings, Overheads
from vramwise.workload.static import static_key
from vramwise.workload.torch_release import DEFAULT_TORCH_VERSION, torch_release


@dataclass(frozen=True, kw_only=True)
class PrecisionConfig:
    recipe: Precision = Precision.BF16_MIXED
    grad_dtype: GradDtype = GradDtype.AUTO  # mixed recipes: fp32 or half gradients

    def __post_init__(self) -> None:
        coerce(self, "recipe", Precision, "precision")
        coerce(self, "grad_dtype", GradDtype)


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    name: Optimizer = Optimizer.ADAMW
    impl: OptimizerImpl = OptimizerImpl.AUTO  # auto: fused for the mixed recipes, else torch's foreach
    # torchtune's optimizer_in_bwd: each parameter steps in its post-accumulate-grad hook and frees its gradient
    in_backward: bool = False
    zero_grad: ZeroGrad = ZeroGrad.NONE  # torch >= 2.0's zero_grad frees the gradients; zeros: torch < 2.0 keeps them

    def __post_init__(self) -> None:
        coerce(self, "name", Optimizer, "optimizer")
        coerce(self, "impl", OptimizerImpl, "optimizer_impl")
        _flag("optimizer_in_backward", self.in_backward)
        coerce(self, "zero_grad", ZeroGrad)


@dataclass(frozen=True, kw_only=True)
class PeftConfig:
    """Which parameters train: all, LoRA/QLoRA adapters, or all but the first ``freeze_layers`` layers."""

    method: PeftMethod = PeftMethod.NONE
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ()  # peft module names or "all-linear"; () = peft's default for the model
    lora_dropout: float = 0.0
    freeze_layers: int = 0  # the first N decoder layers get no gradients
    adapter_dtype: AdapterDtype = AdapterDtype.AUTO  # auto: peft's fp32 adapters (autocast_adapter_dtype=True)
    double_quant: bool = False  # QLoRA: bnb_4bit_use_double_quant (BitsAndBytesConfig's default: False)
    # prompt and prefix tuning: virtual tokens prepended (peft's PromptLearningConfig has no default; 20 is the
    # value of peft's own prompt-tuning and prefix-tuning examples)
    num_virtual_tokens: int = 20

    def __post_init__(self) -> None:
        coerce(self, "method", PeftMethod, "peft")
        coerce(self, "adapter_dtype", AdapterDtype)
        positive("lora_r", self.lora_r)
        positive("num_virtual_tokens", self.num_virtual_tokens)
        non_negative("freeze_layers", self.freeze_layers)
        real("lora_dropout", self.lora_dropout, 0, 1, high_open=True)
        _targets(self.lora_targets)
        _flag("double_quant", self.double_quant)
        if self.double_quant and self.method != PeftMethod.QLORA:
            raise InvalidWorkloadError(
                f"double_quant quantizes QLoRA's 4-bit absmax; it needs peft qlora, got peft {self.method}",
                field="double_quant",
                allowed="--peft qlora, or no --double-quant",
            )

    @property
    def adapters(self) -> bool:
        """A peft method (LoRA, QLoRA, DoRA, IA3, prompt or prefix tuning): the base is frozen, only adapters train."""
        return self.method != PeftMethod.NONE

    @property
    def virtual_tokens(self) -> int:
        """Prompt tuning's tokens prepended to every sequence (0 for every other method)."""
        return self.num_virtual_tokens if self.method == PeftMethod.PROMPT_TUNING else 0


@dataclass(frozen=True, kw_only=True)
class ImplConfig:
    """How the step's kernels and saved tensors are implemented, beyond transformers' eager defaults."""

    mlp_impl: KernelImpl = KernelImpl.COMPOSITE  # composite: transformers' eager MLP; fused: Liger's SwiGLU/GeGLU
    norm_impl: KernelImpl = KernelImpl.COMPOSITE  # composite: transformers' eager RMSNorm; fused: Liger's RMSNorm
    activation_offload: bool = False  # torchtune's OffloadActivations: saved tensors to pinned host memory
    compile: bool = False  # torch.compile per layer: inductor's saved tensors, measured (bench/compile_saved.py)
    float8: bool = False  # torchao float8 training of the linears (Float8Linear, tensorwise scaling)
    # the training loop keeps the model's output, its logits, until the next step's forward returns: a plain loop's
    # ``outputs = model(**batch)`` (peft's method_comparison/MetaMathQA/run.py train); HF Trainer's compute_loss
    # returns the loss alone, so its outputs are freed before backward (estimate/train/training.py _kept_logits)
    keep_logits: bool = False
    # the PyTorch release the step runs (MAJOR.MINOR): autograd's saved tensors changed between releases
    # (estimate/train/activations.py ``_scores``: before 1.11 softmax's backward node keeps its input)
    torch_version: str = DEFAULT_TORCH_VERSION
    # the dataset is packed (torchtune dataset.packed=True): each batch carries input_pos, the positions within each
    # packed sample, which torchtune's rotary embedding gathers per call (estimate/train/activations.py
    # TORCHTUNE_ROPE_GATHER); modelled for --framework torchtune only
    packed: bool = False

    def __post_init__(self) -> None:
        coerce(self, "mlp_impl", KernelImpl)
        coerce(self, "norm_impl", KernelImpl)
        for name in ("activation_offload", "compile", "float8", "keep_logits", "packed"):
            _flag(name, getattr(self, name))
        torch_release(self.torch_version)

    @property
    def softmax_keeps_input(self) -> bool:
        """torch < 1.11: SoftmaxBackward0 (and LogSoftmaxBackward0) save the op's input ``self_`` beside its
        result (torch 1.10.1 wheel, git 302ee7bf, include/torch/csrc/autograd/generated/Functions.h: ``SavedVariable
        self_; SavedVariable result_;``, for ``_softmax_backward_data(grad, result, dim, self)``); from 1.11.0 (git
        bc2c6eda, same header) only ``self_scalar_type`` and ``result_``."""
        return torch_release(self.torch_version) < (1, 11)


@dataclass(frozen=True, kw_only=True)
class TextbookConfig:
    """Knobs of textbook mode only."""

    seed: Seed = Seed.SEED_002  # which seed's formulas (000: one GPU, LoRA; 002: ZeRO, TP/SP/PP)
    lora_fraction: float = 0.02  # seed 000: LoRA's trainable parameters as a fraction of Φ

    def __post_init__(self) -> None:
        coerce(self, "seed", Seed)
        real("lora_fraction", self.lora_fraction, 0, 1, low_open=True, high_open=True)


@dataclass(frozen=True, kw_only=True)
class TrainSetup:
    """One training step per GPU: a micro-batch of ``batch`` sequences of ``seq`` tokens, and the layout."""

    batch: int = 1  # micro-batch per data-parallel rank
    seq: int = 2048
    grad_accum: int = 1  # micro-batches per optimizer step (also the pipeline's micro-batches)
    recompute: Recompute = Recompute.NONE
    attention: AttentionImpl = AttentionImpl.SDPA
    loss: LossImpl = LossImpl.FULL
    loss_chunk: int = 1024  # tokens per chunk of the chunked cross entropy
    mode: Mode = Mode.ACCURATE
    # an encoder-decoder's target length (the decoder's tokens; None: seq, which is the encoder's)
    decoder_seq: int | None = None
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    overheads: Overheads = field(default_factory=Overheads)
    textbook: TextbookConfig = field(default_factory=TextbookConfig)
    # layer-sac: every N-th layer is checkpointed (torchtitan config ActivationCheckpoint.selective_ac_option, "2")
    recompute_every: int = 2
    impl: ImplConfig = field(default_factory=ImplConfig)
    framework: Framework = Framework.NONE  # whose defaults filled the options not given (workload/frameworks.py)
    loading: Loading = Loading.AUTO  # how the checkpoint reaches the GPUs (estimate/train/loading.py)
    comms: CommsConfig = field(default_factory=CommsConfig)
    allocator: AllocatorSettings = field(default_factory=AllocatorSettings)

    def __post_init__(self) -> None:
        for name in ("batch", "seq", "grad_accum", "loss_chunk", "recompute_every"):
            positive(name, getattr(self, name))
        coerce(self, "loading", Loading)
        if self.decoder_seq is not None:
            positive("decoder_seq", self.decoder_seq)
        coerce(self, "recompute", Recompute)
        coerce(self, "attention", AttentionImpl)
        coerce(self, "loss", LossImpl)
        coerce(self, "mode", Mode)
        if self.recompute_every != 2 and self.recompute != Recompute.LAYER_SAC:
            raise InvalidWorkloadError(
                f"recompute_every applies to recompute layer-sac, got recompute {self.recompute}",
                field="recompute_every",
                allowed="--recompute layer-sac",
            )
        if self.seq % self.parallel.cp:
            raise InvalidLayoutError(f"cp ({self.parallel.cp}) must divide seq ({self.seq})")
        if self.peft.adapters and self.optimizer.name == Optimizer.LOMO:
            raise InvalidWorkloadError(
                "optimizer lomo fuses the update into backward of full fine-tuning; use peft=none"
            )
        _zero_grad_rules(self)
        shortest = self.allocator.replay_min_seq
        if shortest is not None and shortest > self.seq:
            raise InvalidWorkloadError(
                f"replay_min_seq {shortest:,} is longer than seq {self.seq:,}: it is the run's shortest sequence, "
                f"seq its longest",
                field="replay_min_seq",
                allowed=f"an integer from 1 to seq ({self.seq:,})",
            )
        coerce(self, "framework", Framework)
        if self.framework != Framework.NONE:
            from vramwise.workload.frameworks import check_rules  # imported only when a framework is named

            check_rules(self)

    @property
    def step_impl(self) -> OptimizerImpl:
        """The optimizer implementation: DeepSpeed and Megatron ship fused Adam; torch.optim defaults to foreach."""
        return step_impl(self.precision, self.optimizer)

    @property
    def gpus(self) -> int:
        return self.parallel.gpus

    @functools.cached_property
    def static(self) -> tuple[Any, ...]:
        """Every field but the micro-batch and the sequence, for caches shared by sweeps over those two.

        Read from ``fields()``, so a field added later joins every key built on it.
        """
        return static_key(self, _PER_STEP)

    @classmethod
    def from_flat(cls, **flat: Any) -> TrainSetup:
        """The setup from flat field names (``dp=8, zero=3, recompute="full"``): the CLI's and schema v1's."""
        return cls(**_FLAT.build(flat))

    def to_flat(self) -> dict[str, Any]:
        """JSON schema v1's ``setup`` object: today's flat field names and order, enums as their strings."""
        return _FLAT.flatten(self)

    def with_flat(self, **flat: Any) -> TrainSetup:
        """A copy with some fields changed, by their flat names; untouched groups are shared, not rebuilt."""
        return dataclasses.replace(self, **_FLAT.changes(self, flat))


def _zero_grad_rules(setup: TrainSetup) -> None:
    """zero_grad zeros keeps torch.optim's ``.grad`` tensors between steps; the engines that own the gradients'
    memory themselves are not modelled with it."""
    if setup.optimizer.zero_grad != ZeroGrad.ZEROS:
        return
    owner = (
        "DeepSpeed ZeRO (its engine owns the gradient buffers)" if setup.parallel.zero
        else "FSDP (its reduce-scatter stream's pool is modelled with set_to_none)" if setup.parallel.fsdp != "none"
        else "optimizer_in_backward (each gradient is freed in its hook)" if setup.optimizer.in_backward
        else None
    )
    if owner is not None:
        raise InvalidWorkloadError(
            f"zero_grad zeros is modelled for torch.optim's own gradients, not with {owner}",
            field="zero_grad",
            allowed="zero_grad none, or no zero/fsdp/optimizer_in_backward",
        )


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidWorkloadError(f"{name} must be true or false, got {show(value)}", field=name)


def _targets(targets: object) -> None:
    """LoRA targets: a tuple of non-empty module names (empty: peft's default for the model)."""
    if not isinstance(targets, tuple) or not all(isinstance(t, str) and t.strip() for t in targets):
        raise InvalidWorkloadError(
            f"lora_targets must be module names (such as q_proj,v_proj) or all-linear, got {show(targets)}",
            field="lora_targets",
        )


def step_impl(precision: PrecisionConfig, optimizer: OptimizerConfig) -> OptimizerImpl:
    """The optimizer implementation: DeepSpeed and Megatron ship fused Adam; torch.optim defaults to foreach."""
    if optimizer.impl != OptimizerImpl.AUTO:
        return optimizer.impl
    mixed = precision.recipe in (Precision.BF16_MIXED, Precision.FP16_MIXED)
    return OptimizerImpl.FUSED if mixed else OptimizerImpl.FOREACH


_PER_STEP = ("batch", "seq")


# Flat name -> (group, attribute), in schema v1's order ('' = a field of TrainSetup itself).
_FLAT = FlatNames(
    owner="TrainSetup",
    groups={
        "precision": PrecisionConfig,
        "optimizer": OptimizerConfig,
        "peft": PeftConfig,
        "parallel": ParallelConfig,
        "overheads": Overheads,
        "textbook": TextbookConfig,
        "impl": ImplConfig,
        "comms": CommsConfig,
        "allocator": AllocatorSettings,
    },
    names={
        "batch": ("", "batch"),
        "seq": ("", "seq"),
        "grad_accum": ("", "grad_accum"),
        "precision": ("precision", "recipe"),
        "grad_dtype": ("precision", "grad_dtype"),
        "optimizer": ("optimizer", "name"),
        "optimizer_impl": ("optimizer", "impl"),
        "peft": ("peft", "method"),
        "lora_r": ("peft", "lora_r"),
        "lora_targets": ("peft", "lora_targets"),
        "lora_dropout": ("peft", "lora_dropout"),
        "freeze_layers": ("peft", "freeze_layers"),
        "recompute": ("", "recompute"),
        "attention": ("", "attention"),
        "loss": ("", "loss"),
        "loss_chunk": ("", "loss_chunk"),
        **{
            name: ("parallel", name)
            for name in ("dp", "zero", "fsdp", "fsdp_shard", "offload", "tp", "sp", "pp", "interleave", "cp", "ep")
        },
        "reduce_bucket": ("parallel", "reduce_bucket"),
        "prefetch_bucket": ("parallel", "prefetch_bucket"),
        "cuda_context_mib": ("overheads", "cuda_context_mib"),
        "allocator_fraction": ("overheads", "allocator_fraction"),
        "mode": ("", "mode"),
        "seed": ("textbook", "seed"),
        "lora_fraction": ("textbook", "lora_fraction"),
        # issue 14's implementation knobs (estimate/train: loss.py, activations.py, knobs.py)
        "adapter_dtype": ("peft", "adapter_dtype"),
        "double_quant": ("peft", "double_quant"),
        "recompute_every": ("", "recompute_every"),
        "mlp_impl": ("impl", "mlp_impl"),
        "norm_impl": ("impl", "norm_impl"),
        "activation_offload": ("impl", "activation_offload"),
        "compile": ("impl", "compile"),
        "optimizer_in_backward": ("optimizer", "in_backward"),
        "float8": ("impl", "float8"),
        "framework": ("", "framework"),
        "cuda_version": ("overheads", "cuda_version"),
        "compute_capability": ("overheads", "compute_capability"),
        "loading": ("", "loading"),
        **{
            name: ("comms", name)
            for name in (
                "interconnect", "nccl_buffers", "max_live_params", "param_persistence_threshold", "max_reuse_distance",
                "nccl_env",
            )
        },
        "overlap_comm": ("parallel", "overlap_comm"),
        "expandable_segments": ("allocator", "expandable_segments"),
        "max_split_size_mb": ("allocator", "max_split_size_mb"),
        "allocator_replay": ("allocator", "replay"),
        "num_virtual_tokens": ("peft", "num_virtual_tokens"),
        "decoder_seq": ("", "decoder_seq"),
        "fsdp_outer_units": ("parallel", "fsdp_outer_units"),
        "fsdp_over_cp": ("parallel", "fsdp_over_cp"),
        "zero_grad": ("optimizer", "zero_grad"),
        "replay_min_seq": ("allocator", "replay_min_seq"),  # issue 15: --range's bound over varied lengths
        "keep_logits": ("impl", "keep_logits"),  # issue 14: a plain loop's outputs kept to the next forward
        "torch_version": ("impl", "torch_version"),  # issue 14: autograd's saved tensors by PyTorch release
        "packed": ("impl", "packed"),  # issue 14: torchtune's packed dataset (input_pos)
    },
)
FLAT_NAMES = _FLAT  # the flat names, for workload/frameworks.py (which option a preset row can set)

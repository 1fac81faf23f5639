"""Trace a real training step of the transformers model under FakeTensorMode: no weights, no GPU, exact bytes.

The model is built from its config inside ``FakeTensorMode`` on the CPU, so every tensor has a shape and a
dtype but no storage. ``LiveStorages`` counts what autograd and the optimizer keep alive. The step mirrors
Hugging Face's Trainer: forward with labels, keep only the loss, backward, optimizer step, ``zero_grad`` with
``set_to_none``; two iterations so the optimizer states exist during the second forward.

Findings this relies on are in the project notes (cpu-memory-measurement.md): fake equals real to the byte on
CPU; transformers must be told positions are never packed, or under fake tensors it builds a 4-D mask that a
real run skips.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from vramwise.verify.cuda_autocast import cuda_autocast_rules
from vramwise.verify.live import LiveStorages


@dataclass(frozen=True, kw_only=True)
class TraceRecipe:
    """What to run: a subset of TrainSetup that the twin can reproduce exactly on the CPU."""

    batch: int = 1
    seq: int = 128
    precision: str = "bf16"  # fp32 | bf16 (pure) | amp (fp32 weights, bf16 autocast) | bf16-mixed | fp16-mixed
    attention: str = "sdpa"  # sdpa | eager
    recompute: str = "none"  # none | full
    optimizer: str = "adamw"  # adamw | adam | sgd | sgd-momentum | adafactor
    optimizer_impl: str = "foreach"  # foreach | for-loop | fused
    lora_r: int = 0
    lora_targets: tuple[str, ...] = ()
    freeze_layers: int = 0  # the embeddings and the first N decoder layers get requires_grad=False
    fsdp: int = 0  # > 1: FSDP2 fully_shard per decoder layer and the root, over a fake world of this size
    steps: int = 2
    # issue 14's knobs the CPU twin reproduces (estimate/train: lora.py, loss.py, training.py, states.py)
    adapter_dtype: str = "auto"  # auto | fp32: peft's fp32 adapters; bf16: built in bf16 (torchtune's LoRALinear)
    loss: str = "full"  # full: transformers' | compute-dtype | torchtune-chunked | torchtune-linear
    recompute_every: int = 2  # recompute layer-sac: torchtitan's rule, layer k checkpointed when (k + 1) % N == 0
    optimizer_in_backward: bool = False  # torchtune's optimizer_in_bwd: one optimizer per parameter, stepped in a hook
    # the peft method: lora (with lora_r), dora, ia3, prompt-tuning, prefix-tuning; "" = lora when lora_r is set
    peft: str = ""
    num_virtual_tokens: int = 20  # prompt and prefix tuning
    decoder_seq: int = 0  # an encoder-decoder's labels (the decoder's length); 0: seq
    zero_grad: str = "none"  # none: zero_grad(set_to_none=True); zeros: set_to_none=False (torch < 2.0's default)


_MODEL_DTYPE = {"bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}


@dataclass(frozen=True, kw_only=True)
class Trace:
    peak: int  # bytes, 512-rounded, over the traced iterations
    peak_phase: str
    params: int  # exact bytes of the parameters
    grads: int  # exact bytes of the gradients right after backward
    optimizer_states: int  # exact bytes of the optimizer states after a step (without 'step' counters)
    trainable: int  # trainable parameter count
    master_weights: int = 0  # exact bytes of fp32 master copies (mixed-precision recipes)
    cuda: dict[str, int] = field(default_factory=dict)  # real GPU runs: allocator and device figures
    marks: dict[str, int] = field(default_factory=dict)  # live bytes at forward_end / backward_end / step_end
    phase_peaks: dict[str, int] = field(default_factory=dict)  # highest live bytes in forward / backward / step
    # every storage allocation and free of the traced step, as estimate/allocator_model.replay_ops takes them
    allocator_ops: list[tuple[int, int]] = field(default_factory=list)


def _hf_config(config: dict[str, Any], attention: str) -> Any:
    import transformers

    data = {k: v for k, v in config.items() if k not in ("auto_map", "quantization_config", "architectures")}
    model_type = data.pop("model_type")
    if model_type not in transformers.CONFIG_MAPPING:  # e.g. falcon's old RefinedWebModel, a remote-code type (U2)
        from vramwise.errors import VerifyUnsupportedError

        raise VerifyUnsupportedError(
            f"transformers {transformers.__version__} has no model type {str(model_type)[:60]!r}, so verify cannot "
            "build the model (infer and train estimate it from the config alone)",
            field="model",
        )
    hf = transformers.AutoConfig.for_model(model_type, **data)
    hf._attn_implementation = attention
    return hf


def model_class(config: dict[str, Any]) -> Any:
    """The transformers class ``architectures[0]`` names (the head the estimate reads, spec/heads.py), or the
    causal LM when the config names none or a class transformers lacks (RWForCausalLM, a wrapper)."""
    import transformers

    names = config.get("architectures")
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return cls
    return transformers.AutoModelForCausalLM


def _build(config: dict[str, Any], hf: Any, dtype: Any) -> Any:
    if getattr(hf, "is_encoder_decoder", False):
        import transformers

        model = transformers.AutoModelForSeq2SeqLM.from_config(hf, dtype=dtype)
        seq2seq_as_loaded(model, config, dtype)
        return model
    cls = model_class(config)
    concrete = cls._model_mapping[type(hf)] if cls.__name__.startswith("Auto") else cls
    supported = {"sdpa": concrete._supports_sdpa, "eager": True}.get(hf._attn_implementation, True)
    if not supported:
        # a family with only its own attention code (BLOOM): transformers refuses sdpa; the estimate models
        # the eager path for it whatever is asked (ImplTraits.eager_only), and so does the twin
        hf._attn_implementation = "eager"
    if cls.__name__.startswith("Auto"):
        return cls.from_config(hf, dtype=dtype)
    return cls._from_config(hf, dtype=dtype)


def seq2seq_as_loaded(model: Any, config: dict[str, Any], dtype: Any) -> None:
    """An encoder-decoder built from its config as from_pretrained leaves it: T5 keeps wo in fp32 for fp16, and
    its head untied when the checkpoint has its own."""
    if dtype == torch.float16:  # from_pretrained keeps wo in fp32 for fp16 (_keep_in_fp32_modules = ["wo"])
        for name, module in model.named_modules():
            if name.endswith(".wo"):  # module.float() cannot swap fake parameters in place
                module.weight = torch.nn.Parameter(module.weight.float())
    if config.get("tie_word_embeddings") is False:
        # T5Config ties the head whatever the config says; from_pretrained unties it when the checkpoint
        # holds its own lm_head.weight, as v1.1, flan-t5 and mT5 checkpoints do (modeling_utils.tie_weights)
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))


def generates(model: Any) -> bool:
    """Whether the built model has a causal-LM head (generate() and logits_to_keep apply)."""
    return bool(model.can_generate())


class _DropMessage(logging.Filter):
    """Drops one log message (by its start) and lets every other through."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


@contextlib.contextmanager
def _quiet_cache_rename() -> Iterator[None]:
    """transformers 5 renamed ``past_key_values`` to ``cache``: it logs "`past_key_values`/`cache_params` are
    deprecated" once per process (transformers/utils/generic.py, ``logger.warning_once`` in the kwarg shim and the
    output property) and a model's forward warns once more (a FutureWarning). The trace keeps the old name, which
    every supported version accepts, so those lines are dropped from stderr (K6). Nothing else is silenced."""
    log = logging.getLogger("transformers.utils.generic")
    drop = _DropMessage("`past_key_values`/`cache_params` are deprecated")
    log.addFilter(drop)
    try:
        with warnings.catch_warnings():
            # the per-model forward's deprecate_kwarg decorator warns too (FutureWarning, e.g. Qwen2ForCausalLM)
            warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
            yield
    finally:
        log.removeFilter(drop)


@contextlib.contextmanager
def _never_packed() -> Iterator[None]:
    import transformers.masking_utils as mu

    original = mu.find_packed_sequence_indices
    mu.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        mu.find_packed_sequence_indices = original


@contextlib.contextmanager
def _adapters_stay_put() -> Iterator[None]:
    """peft moves each new adapter to its base layer's device and dtype with ``.to()``, which cannot swap
    FakeTensor parameters. Everything already lives on the one fake device, and peft upcasts adapters to
    fp32 afterwards (autocast_adapter_dtype), which is the dtype they are created in: skipping the moves
    leaves the adapters exactly as a real run ends up."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    original_move = BaseTunerLayer._move_adapter_to_device_of_base_layer
    original_to = torch.nn.Module.to
    BaseTunerLayer._move_adapter_to_device_of_base_layer = lambda self, adapter_name, device=None: None  # type: ignore[method-assign]
    # !!! GLOBAL PATCH: this turns `.to()` into a no-op for EVERY nn.Module in the process, not only peft's. !!!
    # Safe because it is scoped: it lives only inside this context manager, which wraps peft's get_peft_model
    # alone (no other module is moved meanwhile), and the finally below restores the original even when peft
    # raises. What would break it: another thread calling `.to()` while it is active (its move silently does
    # nothing), or a caller holding the context open across more than the wrapping of the adapters.
    torch.nn.Module.to = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        BaseTunerLayer._move_adapter_to_device_of_base_layer = original_move  # type: ignore[method-assign]
        torch.nn.Module.to = original_to  # type: ignore[method-assign]


def peft_method(recipe: TraceRecipe) -> str:
    """The recipe's peft method: its own, or LoRA when only a rank is given, or "none"."""
    return recipe.peft or ("lora" if recipe.lora_r else "none")


def peft_config(recipe: TraceRecipe, *, causal: bool = True) -> Any:
    """The peft config of ``recipe`` (None: full fine-tuning), as a user would write it with peft's defaults.

    Prompt and prefix tuning need the task type (PeftModelForCausalLM prepends the virtual tokens); the other
    methods wrap the model as a plain PeftModel, whose forward is the base model's.
    """
    method = peft_method(recipe)
    if method == "none":
        return None
    import peft

    targets: Any = list(recipe.lora_targets) or None  # None: peft's default for the model type
    if recipe.lora_targets == ("all-linear",):
        targets = "all-linear"
    if method in ("lora", "dora"):
        r = recipe.lora_r or 8
        return peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, use_dora=method == "dora")
    if method == "ia3":
        return peft.IA3Config(target_modules=targets)
    task = peft.TaskType.CAUSAL_LM if causal else peft.TaskType.SEQ_CLS
    n = recipe.num_virtual_tokens
    if method == "prompt-tuning":
        return peft.PromptTuningConfig(task_type=task, num_virtual_tokens=n)
    if method == "prefix-tuning":
        return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=n)
    raise ValueError(f"the trace cannot run peft method {method!r}")


def _freeze_bottom(model: Any, layers: int) -> None:  # a PreTrainedModel: torch types Module attributes as Tensor
    """Freeze the input embeddings and the first ``layers`` decoder layers (the common "freeze the bottom")."""
    model.get_input_embeddings().requires_grad_(False)
    decoder = model.get_decoder()
    stack = next(m for name, m in decoder.named_children() if isinstance(m, torch.nn.ModuleList))
    for layer in list(stack)[:layers]:
        layer.requires_grad_(False)
    for name, module in decoder.named_children():
        if name in ("embed_positions", "wpe"):  # learned positions sit below the layers too
            module.requires_grad_(False)


@contextlib.contextmanager
def _fsdp_accounting(tracker: LiveStorages) -> Iterator[None]:
    """Count FSDP2's storage resizes, and skip DTensor's sharding propagation: it runs ops on global shapes
    inside the fake mode and caches their results, which are metadata, not memory (notes §2c)."""
    from torch.distributed.tensor._sharding_prop import ShardingPropagator

    original_resize = torch.UntypedStorage.resize_
    original_meta = ShardingPropagator.propagate

    def resize(storage: torch.UntypedStorage, nbytes: int) -> Any:
        out = original_resize(storage, nbytes)
        tracker.resized(storage, nbytes)
        return out

    def meta(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracker.paused += 1
        try:
            return original_meta(self, *args, **kwargs)
        finally:
            tracker.paused -= 1

    torch.UntypedStorage.resize_ = resize  # type: ignore[method-assign,assignment]
    ShardingPropagator.propagate = meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.UntypedStorage.resize_ = original_resize  # type: ignore[method-assign]
        ShardingPropagator.propagate = original_meta  # type: ignore[method-assign]


def _fake_world(size: int) -> Any:
    """A process group of ``size`` ranks in this one process (torch's fake backend): collectives do nothing."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("fake", rank=0, world_size=size, store=FakeStore())
    return init_device_mesh("cpu", (size,))


def _shard(model: Any, mesh: Any) -> None:  # a PreTrainedModel, as in _freeze_bottom
    from torch.distributed.fsdp import fully_shard

    decoder = model.get_decoder()
    stack = next(m for _, m in decoder.named_children() if isinstance(m, torch.nn.ModuleList))
    for layer in stack:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _optimizer(params: list[torch.nn.Parameter], recipe: TraceRecipe) -> Any:
    if recipe.precision in ("bf16-mixed", "fp16-mixed") and peft_method(recipe) == "none":
        # LoRA adapters are fp32 already (peft upcasts them): they are their own master copy
        return _MasterWeights(params, lambda masters: _torch_optimizer(masters, recipe))
    return _torch_optimizer(params, recipe)


def _torch_optimizer(params: list[torch.nn.Parameter], recipe: TraceRecipe) -> torch.optim.Optimizer:
    impl: dict[str, Any] = {"foreach": {"foreach": True}, "for-loop": {"foreach": False}, "fused": {"fused": True}}[
        recipe.optimizer_impl
    ]
    if recipe.optimizer in ("adamw", "adam"):
        cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=1e-4, **impl)
    if recipe.optimizer in ("sgd", "sgd-momentum"):
        # SGD updates in place in every implementation; the fused CPU kernel allocates real memory under
        # fake tensors (gigabytes for a 7B model), so the trace runs the equivalent foreach one.
        impl = {"foreach": True} if recipe.optimizer_impl == "fused" else impl
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9 if recipe.optimizer == "sgd-momentum" else 0.0, **impl)
    if recipe.optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=1e-3, foreach=recipe.optimizer_impl == "foreach")
    raise ValueError(f"the trace cannot run optimizer {recipe.optimizer!r}")


class _MasterWeights:
    """DeepSpeed/Megatron mixed precision: 16-bit model, fp32 master copies that the optimizer updates.

    At the step the half gradients are copied to fp32 for the masters, the masters are updated and copied
    back into the 16-bit weights, and the fp32 gradients are released.
    """

    def __init__(self, params: list[torch.nn.Parameter], make: Any) -> None:
        self.params = params
        self.masters = [p.detach().float().requires_grad_(True) for p in params]
        self.inner = make(self.masters)
        self.state = self.inner.state

    def step(self) -> None:
        for p, m in zip(self.params, self.masters, strict=True):
            m.grad = None if p.grad is None else p.grad.float()
        self.inner.step()
        with torch.no_grad():
            for p, m in zip(self.params, self.masters, strict=True):
                p.copy_(m)
                m.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.zero_()


def _local(t: torch.Tensor) -> torch.Tensor:
    """What this rank holds: a DTensor's local shard, or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _local_bytes(t: torch.Tensor) -> int:
    local = _local(t)
    return local.numel() * local.element_size()


def _cuda_stats() -> dict[str, int]:
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return {
        "max_memory_allocated": torch.cuda.max_memory_allocated(),
        "max_memory_reserved": torch.cuda.max_memory_reserved(),
        "device_used": total - free,  # the process's context and reserve plus other processes, as nvidia-smi
        "device_total": total,
    }


def _labels(model: Any, ids: torch.Tensor, decoder_seq: int = 0) -> torch.Tensor:
    """Labels of the head's shape: one class per sequence or per token for a classifier, an encoder-decoder's
    target of ``decoder_seq`` tokens (from which it shifts its decoder inputs), else the ids."""
    if getattr(model.config, "is_encoder_decoder", False):
        return torch.ones((ids.shape[0], decoder_seq or ids.shape[1]), dtype=torch.long)
    name = type(getattr(model, "get_base_model", lambda: model)()).__name__
    if name.endswith("ForSequenceClassification"):
        return torch.zeros(ids.shape[0], dtype=torch.long)
    if name.endswith("ForTokenClassification"):
        return torch.zeros_like(ids)
    return ids


def _loss(model: Any, ids: torch.Tensor, loss: str, decoder_seq: int = 0) -> torch.Tensor:
    """The loss as ``loss`` computes it; only the loss is returned, so nothing else outlives the forward."""
    if loss == "full":
        return model(input_ids=ids, labels=_labels(model, ids, decoder_seq)).loss
    import torch.nn.functional as F

    if loss == "compute-dtype":
        # plain PyTorch: cross_entropy on the logits in their own dtype; the logits are dropped
        logits = model(input_ids=ids).logits
        out = F.cross_entropy(logits.flatten(0, 1), ids.flatten())
        del logits
        return out
    if loss == "torchtune-chunked":
        # torchtune TransformerDecoder.chunked_output: the head per chunk of tensor_split(8, dim=1); then
        # CEWithChunkedOutputLoss: cross_entropy(chunk.float(), reduction="sum") per chunk, summed, / tokens;
        # the recipe deletes the logits before backward
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state
        head = model.get_output_embeddings()
        chunks = [head(c) for c in hidden.tensor_split(TORCHTUNE_CHUNKS, dim=1)]
        del hidden
        labels = ids.tensor_split(TORCHTUNE_CHUNKS, dim=1)
        total = torch.zeros(())
        for c, y in zip(chunks, labels, strict=True):
            total = total + F.cross_entropy(c.float().flatten(0, 1), y.flatten(), reduction="sum")
        del chunks
        return total / ids.numel()
    if loss == "torchtune-linear":
        return _torchtune_linear(model, ids)
    raise ValueError(f"the trace cannot compute loss {loss!r}")


def _torchtune_linear(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """torchtune 0.7 LinearCrossEntropyLoss (modules/loss/cross_entropy_loss.py): the model without its head; per
    chunk the hidden states are indexed by the label mask, the head runs on them and cross_entropy on the fp32
    logits. Every label is valid here, and the mask's indexing is done with the equivalent (batch, position) index
    tensors: fake tensors cannot take a boolean mask's data-dependent shape (they save 16 B per token where
    torchtune's bool mask saves 1 B)."""
    import torch.nn.functional as F

    hidden = model.get_decoder()(input_ids=ids).last_hidden_state
    head = model.get_output_embeddings()
    total = torch.zeros(())
    chunks = zip(hidden.tensor_split(TORCHTUNE_CHUNKS, dim=1), ids.tensor_split(TORCHTUNE_CHUNKS, dim=1), strict=True)
    for h, y in chunks:
        b, s = y.shape
        rows = torch.arange(b).repeat_interleave(s)
        cols = torch.arange(s).repeat(b)
        logits = head(h[rows, cols])
        total = total + F.cross_entropy(logits.float(), y[rows, cols], reduction="sum")
        del logits
    del hidden
    return total / ids.numel()


# torchtune/modules/transformer.py TransformerDecoder.set_num_output_chunks, called by the recipes with
# CEWithChunkedOutputLoss.num_output_chunks = 8 (torchtune/modules/loss/ce_chunked_output_loss.py)
TORCHTUNE_CHUNKS = 8


def _checkpointing(model: Any, recipe: TraceRecipe) -> None:
    """transformers' gradient checkpointing on every layer (full), on every N-th (layer-sac), or on every layer
    with torchtitan's op-level policy (op-sac)."""
    if recipe.recompute in ("full", "layer-sac"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if recipe.recompute == "op-sac":
        kwargs = {"use_reentrant": False, "context_fn": _op_sac_context}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if recipe.recompute == "layer-sac":
        _every_nth_layer(model, recipe.recompute_every)


def _op_sac_context() -> Any:
    """torchtitan's op-level SAC policy (commit cfb93265, distributed/activation_checkpoint.py _apply_op_sac, with
    llama3's _op_sac_save_list): save mm and sdpa outputs, except every second mm of the block; the CPU's own sdpa
    kernel stands in for the CUDA flash / efficient ones."""
    from collections import defaultdict

    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    aten = torch.ops.aten
    save = {
        aten.mm.default,
        aten._scaled_dot_product_flash_attention.default,
        aten._scaled_dot_product_efficient_attention.default,
        aten._scaled_dot_product_flash_attention_for_cpu.default,
    }
    meta: dict[str, int] = defaultdict(int)

    def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        key = f"{'recompute' if ctx.is_recompute else 'forward'}_mm_count"
        if func == aten.mm.default:
            meta[key] += 1
        keep = func in save and not (func == aten.mm.default and meta[key] % 2 == 0)
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def _every_nth_layer(model: Any, every: int) -> None:
    """torchtitan's layer selective checkpointing (llama3 parallelize.py _apply_ac_to_transformer_block, mode
    selective with an integer option): the k-th block wrapped (k counted from 1) checkpoints when k % N == 0."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for k, layer in enumerate(layers, start=1):
        layer.gradient_checkpointing = k % every == 0


@contextlib.contextmanager
def _adapter_dtype(dtype: str) -> Iterator[None]:
    """bf16 adapters are built in bf16 (torchtune builds the model under its dtype): FakeTensor parameters cannot be
    cast by a later ``.to()``."""
    if dtype != "bf16":
        yield
        return
    original = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        yield
    finally:
        torch.set_default_dtype(original)


class _InBackward:
    """torchtune's optimizer_in_bwd (torchtune/training/memory.py create_optim_in_bwd_wrapper and
    register_optim_in_bwd_hooks): one optimizer per parameter, stepped and zeroed in the parameter's
    post-accumulate-grad hook, so only the gradient being stepped is alive; step() and zero_grad() do nothing."""

    def __init__(self, params: list[torch.nn.Parameter], recipe: TraceRecipe) -> None:
        self.optims = {p: _torch_optimizer([p], recipe) for p in params}

        def step(p: torch.Tensor) -> None:
            self.optims[p].step()  # type: ignore[index]
            self.optims[p].zero_grad(set_to_none=True)  # type: ignore[index]

        for p in params:
            p.register_post_accumulate_grad_hook(step)

    @property
    def state(self) -> dict[Any, Any]:
        return {k: v for o in self.optims.values() for k, v in o.state.items()}

    def step(self) -> None:
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        return None


def _step(model: torch.nn.Module, opt: Any, ids: torch.Tensor, autocast: Any) -> None:
    """One untracked training iteration (the FSDP warm-up)."""
    with autocast:
        loss = model(input_ids=ids, labels=_labels(model, ids)).loss
    loss.backward()
    del loss
    opt.step()
    opt.zero_grad(set_to_none=True)


def _state_bytes(opt: Any) -> int:
    return sum(
        _local_bytes(v)
        for state in opt.state.values()
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and k != "step"
    )


def trace_training(config: dict[str, Any], recipe: TraceRecipe, *, fake: bool = True, device: str = "cpu") -> Trace:
    """Run ``recipe.steps`` training iterations of the model described by ``config`` and measure them.

    ``fake=False`` runs real CPU tensors instead (small models only): the check that the fake run counts
    exactly what a real one allocates. ``device="cuda"`` runs for real on the GPU with random weights and
    also records the CUDA allocator's view (max allocated and reserved) and the device's used memory, which
    calibrate the context and reserve terms. Not yet run on a GPU by this project: no GPU was available.
    """
    if device == "cuda":
        fake = False
    from torch._subclasses.fake_tensor import FakeTensorMode

    moe = config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts")
    if moe and fake and _MODEL_DTYPE.get(recipe.precision) != torch.bfloat16:
        # the per-expert loop indexes tokens with nonzero(), a data-dependent shape fake tensors cannot take
        raise ValueError("mixture-of-experts traces run in bf16 only (transformers' grouped_mm path)")
    hf = _hf_config(config, recipe.attention)
    tracker = LiveStorages()
    mesh = _fake_world(recipe.fsdp) if recipe.fsdp > 1 else None
    fsdp = _fsdp_accounting(tracker) if mesh is not None else contextlib.nullcontext()
    # With FSDP the count starts after sharding and one warm-up step: the unsharded originals and DTensor's
    # cached global-shape metadata are not memory a rank holds in steady state (notes §2c).
    late = mesh is not None
    with contextlib.ExitStack() as stack:
        stack.enter_context(_never_packed())
        stack.enter_context(fsdp)
        stack.enter_context(FakeTensorMode() if fake else contextlib.nullcontext())
        if recipe.precision == "amp" and device == "cpu":
            # the GPU's autocast runs softmax, log_softmax, layer_norm and pow in fp32, the CPU's does not: the twin
            # applies CUDA's rule (verify/cuda_autocast.py), as the estimate does (estimate/train/autocast.py)
            stack.enter_context(cuda_autocast_rules())
        if device == "cuda":
            stack.enter_context(torch.device("cuda"))
        if not late:
            stack.enter_context(tracker)
        torch.manual_seed(0)
        # Built in its final dtype: FakeTensor parameters cannot be swapped by a later .to().
        dtype = _MODEL_DTYPE.get(recipe.precision, torch.float32)
        model = _build(config, hf, dtype)
        model.train()
        _checkpointing(model, recipe)
        adapters = peft_config(recipe, causal=generates(model))
        if adapters is not None:
            import peft

            with _adapters_stay_put(), _adapter_dtype(recipe.adapter_dtype):
                # autocast_adapter_dtype=False leaves bf16 adapters as built (peft's default upcasts them to fp32)
                model = peft.get_peft_model(model, adapters, autocast_adapter_dtype=recipe.adapter_dtype != "bf16")
        if recipe.freeze_layers:
            _freeze_bottom(model, recipe.freeze_layers)
        if mesh is not None:
            _shard(model, mesh)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = _InBackward(trainable, recipe) if recipe.optimizer_in_backward else _optimizer(trainable, recipe)
        ids = torch.randint(0, hf.vocab_size, (recipe.batch, recipe.seq))
        autocast = (
            torch.autocast(device, dtype=torch.bfloat16) if recipe.precision == "amp" else contextlib.nullcontext()
        )
        if late:
            _step(model, opt, ids, autocast)
            stack.enter_context(tracker)
            tracker.track([_local(t) for t in model.parameters()])
            tracker.track([_local(t) for t in model.buffers()])
            tracker.track([_local(v) for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)])
            tracker.track(ids)
        tracker.reset_peak()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        grads = states = 0
        for _ in range(recipe.steps):
            tracker.phase("forward")
            with autocast:
                loss = _loss(model, ids, recipe.loss, recipe.decoder_seq)
            tracker.mark("forward_end")
            tracker.phase("backward")
            loss.backward()
            del loss
            tracker.mark("backward_end")
            grads = sum(_local_bytes(p.grad) for p in trainable if p.grad is not None)
            tracker.phase("optimizer step")
            opt.step()
            tracker.mark("step_end")
            states = _state_bytes(opt)
            opt.zero_grad(set_to_none=recipe.zero_grad != "zeros")
        params = sum(_local_bytes(p) for p in model.parameters())
        cuda = _cuda_stats() if device == "cuda" else {}
    return Trace(
        peak=tracker.peak,
        peak_phase=tracker.peak_at,
        params=params,
        grads=grads,
        optimizer_states=states,
        trainable=sum(p.numel() for p in trainable),
        master_weights=sum(m.numel() * 4 for m in getattr(opt, "masters", [])),
        cuda=cuda,
        marks=dict(tracker.marks),
        phase_peaks={k: v for k, v in tracker.phase_peaks.items() if k != "setup"},
        allocator_ops=tracker.ops,
    )


@dataclass(frozen=True, kw_only=True)
class InferRecipe:
    """A prefill of ``context`` tokens, then ``new_tokens`` decode steps with the KV cache."""

    batch: int = 1
    context: int = 128
    new_tokens: int = 0
    precision: str = "bf16"  # fp32 | bf16 | fp16
    attention: str = "sdpa"
    all_logits: bool = False  # a plain forward returns every position's logits; generate() keeps the last


@dataclass(frozen=True, kw_only=True)
class InferTrace:
    peak: int
    peak_phase: str
    params: int
    kv_cache: int  # exact bytes of the cache's keys and values at the end
    phase_peaks: dict[str, int] = field(default_factory=dict)
    cuda: dict[str, int] = field(default_factory=dict)


def _cache_bytes(cache: Any) -> int:
    # an EncoderDecoderCache holds two caches (decoder self-attention, cross-attention), each with its layers
    parts = [getattr(cache, name, None) for name in ("self_attention_cache", "cross_attention_cache")]
    if any(p is not None for p in parts):
        return sum(_cache_bytes(p) for p in parts if p is not None)
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def trace_inference(
    config: dict[str, Any], recipe: InferRecipe, *, fake: bool = True, device: str = "cpu"
) -> InferTrace:
    """Prefill then decode step by step, as ``generate()`` does, counting live storages throughout.

    generate() itself cannot run on fake tensors (its stopping checks read values), so the loop feeds a fixed
    next token: memory does not depend on which token it is.
    """
    import transformers
    from torch._subclasses.fake_tensor import FakeTensorMode

    hf = _hf_config(config, recipe.attention)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}.get(recipe.precision, torch.bfloat16)
    tracker = LiveStorages()
    fake = fake and device == "cpu"
    place = torch.device(device) if device != "cpu" else contextlib.nullcontext()
    quiet = _quiet_cache_rename()
    with (
        quiet,
        _never_packed(),
        FakeTensorMode() if fake else contextlib.nullcontext(),
        place,
        tracker,
        torch.no_grad(),
    ):
        if getattr(hf, "is_encoder_decoder", False):
            model = transformers.AutoModelForSeq2SeqLM.from_config(hf, dtype=dtype)
            if recipe.all_logits:
                from vramwise.errors import VerifyUnsupportedError

                raise VerifyUnsupportedError(
                    "verify traces generate() for encoder-decoder models (the last position's logits); "
                    "drop --all-logits"
                )
            seq2seq_as_loaded(model, config, dtype)
            model.eval()
            params = sum(p.numel() * p.element_size() for p in model.parameters())
            tracker.reset_peak()
            kv = _seq2seq_generation(model, recipe, tracker)
            cuda = _cuda_stats() if device == "cuda" else {}
            return InferTrace(
                peak=tracker.peak,
                peak_phase=tracker.peak_at,
                params=params,
                kv_cache=kv,
                phase_peaks={k: v for k, v in tracker.phase_peaks.items() if k != "setup"},
                cuda=cuda,
            )
        model = _build(config, hf, dtype)
        model.eval()
        ids = torch.zeros((recipe.batch, recipe.context), dtype=torch.long)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        tracker.reset_peak()
        tracker.phase("prefill")
        keep = 0 if recipe.all_logits else 1  # logits_to_keep: 0 means every position
        # a classifier, masked LM or bare model takes no logits_to_keep and never generates
        causal = generates(model)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=keep) if causal else model(input_ids=ids)
        cache = getattr(out, "past_key_values", None)
        del out
        tracker.phase("decode")
        step = torch.zeros((recipe.batch, 1), dtype=torch.long)
        for _ in range(max(0, recipe.new_tokens - 1) if causal else 0):  # the prefill produced the first token
            out = model(input_ids=step, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            del out
        kv = _cache_bytes(cache)
        cuda = _cuda_stats() if device == "cuda" else {}
    return InferTrace(
        peak=tracker.peak,
        peak_phase=tracker.peak_at,
        params=params,
        kv_cache=kv,
        phase_peaks={k: v for k, v in tracker.phase_peaks.items() if k != "setup"},
        cuda=cuda,
    )


def _seq2seq_generation(model: Any, recipe: InferRecipe, tracker: LiveStorages) -> int:
    """generate() of an encoder-decoder (T5): the encoder once over the context, then the decoder from its start
    token, one token a step, reading the encoder's output (kept throughout, as generate() keeps encoder_outputs)
    and its EncoderDecoderCache. The input ids avoid the pad id, so no padding mask is built (as for a prompt
    without padding). Returns the cache's bytes at the end."""
    tracker.phase("prefill")
    ids = torch.ones((recipe.batch, recipe.context), dtype=torch.long)
    encoder_outputs = model.get_encoder()(input_ids=ids)
    start = torch.zeros((recipe.batch, 1), dtype=torch.long)  # decoder_start_token_id (T5: the pad id, 0)
    out = model(encoder_outputs=encoder_outputs, decoder_input_ids=start, use_cache=True)
    cache = out.past_key_values
    del out
    tracker.phase("decode")
    step = torch.ones((recipe.batch, 1), dtype=torch.long)
    for _ in range(max(0, recipe.new_tokens - 1)):  # the first step produced the first new token
        out = model(encoder_outputs=encoder_outputs, decoder_input_ids=step, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        del out
    return _cache_bytes(cache)

"""The PyTorch twin of an estimate: the same model and setup, traced, side by side with the estimate.

What the trace can reproduce on one CPU: fp32 / bf16 / amp (CPU autocast policy, with CUDA's fp32 softmax, pow,
log_softmax and layer_norm: verify/cuda_autocast.py) / bf16- and fp16-mixed
(fp32 master weights as DeepSpeed and Megatron keep them), SGD / momentum / Adam / AdamW (foreach, for-loop,
fused), LoRA, DoRA, IA3, prompt and prefix tuning, full recompute, freezing the bottom layers, sdpa and eager
attention, and inference prefill plus decode, and FSDP2 full sharding over a fake process group of dp ranks in
this one process. Everything else (bitsandbytes optimizers and QLoRA, which need CUDA; tp/pp/cp and DeepSpeed
ZeRO) is an error naming what is not reproducible, never a silently different run.

Semantics: fake CPU tensors with CUDA's 512-byte rounding. CPU SDPA takes a flash kernel that saves what
CUDA's flash kernel saves (output and log-sum-exp) for equal q/k/v head dims; it takes its math path when
they differ (DeepSeek MLA) or with 3-D inputs (old Falcon), where CUDA would use the memory-efficient kernel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from vramwise.errors import VerifyUnsupportedError, VramwiseError
from vramwise.estimate.allocator_model import AllocatorConfig, replay_ops
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.term import Estimate, Step
from vramwise.estimate.train.quantized import training_base
from vramwise.estimate.train.training import estimate_training
from vramwise.formats import default_format
from vramwise.spec.load import ResolvedModel
from vramwise.spec.model import ModelSpec
from vramwise.units import MIB
from vramwise.verify.compare import Comparison, Row
from vramwise.workload import (
    NO_OVERHEADS,
    AttentionImpl,
    FsdpMode,
    InferSetup,
    LossImpl,
    PeftMethod,
    Precision,
    Recompute,
    TrainSetup,
)

CUDA_SEMANTICS = "real CUDA tensors with random weights; torch.cuda allocator statistics and device memory"
SEMANTICS = (
    "fake CPU tensors (FakeTensorMode), 512-byte rounding as CUDA's allocator, CPU SDPA kernels (flash: output + "
    "log-sum-exp, as CUDA's flash), CPU autocast policy for amp but CUDA's fp32 softmax, log_softmax, layer_norm "
    "and pow"
)
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_TRACE_OPTIMIZERS = ("adamw", "adam", "sgd", "sgd-momentum")
_TRACE_PRECISIONS = ("fp32", "bf16", "amp", "bf16-mixed", "fp16-mixed")
# Rows that compare the estimate's peak over every phase of one step with the trace's peak in that step:
# phases are matched by their kind's step, so a new backward phase counts in backward_peak by construction.
TRAINING_PEAKS = {"forward_end": Step.FORWARD, "backward_peak": Step.BACKWARD, "step_peak": Step.OPTIMIZER}
_KV_TERMS = ("kv_cache", "kv_cache/self", "kv_cache/cross")
INFERENCE_STEPS = (Step.PREFILL, Step.DECODE)  # the prefill_peak and decode_peak rows


def _twin_config(resolved: ResolvedModel) -> dict[str, Any]:
    """The config the real model is built from: the keys the spec was parsed from (spec/load hands them over)."""
    if resolved.raw_config is None:
        raise VerifyUnsupportedError("verify needs the architecture: name a catalog model or a config.json")
    if getattr(resolved.spec, "vision", None) is not None:
        # the twin builds AutoModelForCausalLM from the language model's keys: no vision tower, no projector, no
        # images, so its trace could not be compared with an estimate that counts them
        raise VerifyUnsupportedError(
            f"verify traces text-only models; {resolved.spec.name} is a vision-language model (its vision tower, "
            "projector and images are estimated by infer and train, not traced)"
        )
    return dict(resolved.raw_config)


@contextmanager
def _one_line_failure() -> Iterator[None]:
    """Any failure of the traced run is one line, never a traceback: the twin runs third-party code (torch,
    transformers, peft) on configs it was never tested with. That also hides a bug in the twin itself, so
    VRAMWISE_DEBUG=1 re-raises the original exception with its traceback."""
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    # torch logs the whole traceback of a failed meta kernel before re-raising it (fake_tensor.py, _dispatch_impl:
    # log.exception("failed while attempting to run meta for %s", func)): the error below is the one line (U3)
    fake_log.setLevel(logging.CRITICAL)
    try:
        yield
    except VramwiseError:
        raise  # already one line that names what verify cannot do
    except Exception as err:
        if os.environ.get("VRAMWISE_DEBUG", "") not in ("", "0"):
            raise
        raise VerifyUnsupportedError(f"the traced run failed: {type(err).__name__}: {str(err)[:200]}") from None
    finally:
        fake_log.setLevel(level)


def _check_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise VerifyUnsupportedError(
            f"verify needs the verify extra ({err.name} is missing): pip install 'vramwise[verify]' "
            "(on a CPU-only machine first: pip install torch==2.13.0)"
        ) from None


def train_recipe(setup: TrainSetup) -> Any:
    from vramwise.verify.trace import TraceRecipe

    precision, optimizer, peft, par = setup.precision.recipe, setup.optimizer.name, setup.peft, setup.parallel
    unsupported = [
        (
            precision not in _TRACE_PRECISIONS,
            f"precision {precision} (traceable: amp, fp32, bf16, *-mixed)",
        ),
        (
            optimizer not in _TRACE_OPTIMIZERS,
            f"optimizer {optimizer} (traceable: {', '.join(_TRACE_OPTIMIZERS)}; bitsandbytes needs CUDA, "
            "Adafactor reads values that fake tensors do not have)",
        ),
        (peft.method == PeftMethod.QLORA, "peft qlora (bitsandbytes 4-bit needs CUDA)"),
        (peft.method == PeftMethod.LORA_8BIT, "peft lora-8bit (bitsandbytes LLM.int8() needs CUDA)"),
        (
            setup.recompute == Recompute.SELECTIVE,
            "recompute selective (Megatron's; transformers has none: traceable none, full, op-sac, layer-sac)",
        ),
        (
            setup.loss in (LossImpl.CHUNKED, LossImpl.LIGER, LossImpl.CCE),
            f"loss {setup.loss} (a Triton kernel; traceable: full, compute-dtype, torchtune-chunked, torchtune-linear)",
        ),
        (
            setup.loss in (LossImpl.COMPILED, LossImpl.LOSS_PARALLEL),
            f"loss {setup.loss} (inductor's kernels, or DTensor over tp; traceable: full, compute-dtype, "
            "torchtune-chunked, torchtune-linear)",
        ),
        *_untraceable_knobs(setup),
        (peft.lora_dropout > 0, "lora_dropout > 0 (the CPU dropout kernel keeps a wider mask than CUDA's)"),
        (
            par.tp * par.pp * par.cp > 1 or par.zero > 0 or par.fsdp not in (FsdpMode.NONE, FsdpMode.FULL),
            "tp, pp, cp or ZeRO layouts (the twin traces one GPU, or FSDP2 full sharding over a fake world)",
        ),
        (par.dp > 1 and par.fsdp == FsdpMode.NONE, "plain data parallelism (DDP buckets): use --fsdp full or dp 1"),
        (peft.adapters and par.fsdp != FsdpMode.NONE, "LoRA under FSDP"),
        (
            par.fsdp_outer_units and par.fsdp == FsdpMode.FULL,
            "fsdp_outer_units (the twin wraps only the layers and the root)",
        ),
        (
            par.fsdp != FsdpMode.NONE and precision not in (Precision.BF16, Precision.FP32),
            "FSDP with mixed precision (traceable FSDP recipes: bf16, fp32)",
        ),
        (setup.grad_accum > 1, "grad_accum > 1"),
    ]
    for bad, what in unsupported:
        if bad:
            raise VerifyUnsupportedError(f"verify cannot reproduce {what}")
    return TraceRecipe(
        batch=setup.batch,
        seq=setup.seq,
        precision=str(Precision.AMP if precision == Precision.AMP_FP16 else precision),
        attention=str(AttentionImpl.SDPA if setup.attention == AttentionImpl.FLASH else setup.attention),
        recompute=str(setup.recompute),
        optimizer=str(optimizer),
        optimizer_impl=str(setup.step_impl),
        lora_r=peft.lora_r if peft.method in (PeftMethod.LORA, PeftMethod.DORA) else 0,
        lora_targets=peft.lora_targets,
        peft=str(peft.method) if peft.adapters else "",
        num_virtual_tokens=peft.num_virtual_tokens,
        decoder_seq=setup.decoder_seq or 0,
        freeze_layers=peft.freeze_layers,
        fsdp=par.dp if par.fsdp == FsdpMode.FULL else 0,
        adapter_dtype=str(peft.adapter_dtype),
        loss=str(setup.loss),
        recompute_every=setup.recompute_every,
        optimizer_in_backward=setup.optimizer.in_backward,
        zero_grad=str(setup.optimizer.zero_grad),
    )


def _untraceable_knobs(setup: TrainSetup) -> list[tuple[bool, str]]:
    """Issue 14's knobs whose code needs CUDA: Liger's Triton kernels, torchtune's CUDA-stream offloading, float8."""
    impl = setup.impl
    return [
        (impl.mlp_impl == "fused" or impl.norm_impl == "fused", "fused MLP or norm kernels (Liger: Triton, CUDA)"),
        (impl.activation_offload, "activation_offload (torchtune's OffloadActivations uses CUDA streams)"),
        (impl.float8, "float8 (torchao's float8 matmuls need CUDA compute capability 8.9+)"),
        (impl.compile, "compile (inductor cannot run on fake tensors; bench/compile_saved.py measures it for real)"),
        # the twin builds transformers' modules; --framework litgpt estimates LitGPT's own (litgpt_code.py)
        (setup.framework == "litgpt", "--framework litgpt (the twin traces transformers' modules, not LitGPT's)"),
        # torchtune's attention copies k and v to every query head (activations.py TORCHTUNE_KV_COPY)
        (setup.framework == "torchtune", "--framework torchtune (the twin traces transformers' modules)"),
        # one step is traced: the logits a loop keeps into the next step's forward are never in it
        (impl.keep_logits, "keep_logits (the twin traces one step; the loop's outputs outlive it)"),
        # the twin traces the installed torch; another release's autograd keeps other tensors
        (impl.softmax_keeps_input, f"torch_version {impl.torch_version} (the twin traces the installed torch)"),
    ]


def _truncated(config: dict[str, Any], layers: int) -> dict[str, Any]:
    key = next((k for k in _LAYER_KEYS if k in config), None)
    if key is None:
        raise VerifyUnsupportedError("--layers: the config names no layer count (num_hidden_layers / n_layer)")
    out = {**config, key: layers}
    for per_layer in ("layer_types", "mlp_only_layers"):
        if isinstance(out.get(per_layer), list):
            out[per_layer] = out[per_layer][:layers]
    return out


def _layers_of(config: dict[str, Any]) -> int:
    return next(int(config[k]) for k in _LAYER_KEYS if k in config)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _traced_training(
    config: dict[str, Any], recipe: Any, layers: int | None, cuda: dict[str, int], allocator: AllocatorConfig
) -> dict[str, int]:
    """Measured quantities, and the caching-allocator replay of the traced allocations (``replay_*``); with
    ``layers``, traced at N and N + 1 layers and extrapolated linearly."""
    from vramwise.verify.trace import trace_training

    device = "cuda" if recipe.fsdp <= 1 and _device() == "cuda" else "cpu"

    def measure(cfg: dict[str, Any]) -> dict[str, int]:
        t = trace_training(cfg, recipe, device=device)
        cuda.update(t.cuda)
        replayed = replay_ops(t.allocator_ops, allocator)
        return {
            "replay_max_allocated": replayed.peak_allocated,
            "replay_max_reserved": replayed.peak_reserved,
            "replay_allocations": replayed.allocations,
            "weights": t.params,
            "master_weights": t.master_weights,
            "gradients": t.grads,
            "optimizer_states": t.optimizer_states,
            "forward_end": t.marks.get("forward_end", 0),
            "backward_peak": t.phase_peaks.get(Step.BACKWARD, 0),
            "step_peak": t.phase_peaks.get(Step.OPTIMIZER, 0),
            "peak": t.peak,
        }

    total = _layers_of(config)
    if not layers or layers >= total:
        return measure(config)
    lo, hi = measure(_truncated(config, layers)), measure(_truncated(config, layers + 1))
    # the replay's reserve does not grow linearly with depth (segments are reused or split as they come), so it is
    # not extrapolated: it is reported only for a trace at the full depth
    out = {k: lo[k] + (hi[k] - lo[k]) * (total - layers) for k in lo if k != "peak" and not k.startswith("replay_")}
    out["peak"] = max(out["forward_end"], out["backward_peak"], out["step_peak"])
    return out


def _steps_only(est: Estimate) -> Estimate:
    """The estimate without its loading phase, which no trace reproduces (the twin builds the model, it loads
    no checkpoint)."""
    return replace(est, phases=tuple(p for p in est.phases if p.kind.step is not Step.LOAD))


def step_peak(est: Estimate, step: Step) -> int:
    """The estimate's highest per-GPU bytes over its phases in ``step`` (every backward phase, say)."""
    return max((est.phase_total(p) for p in est.phases if p.kind.step is step), default=0)


def _named(est: Estimate, name: str) -> int:
    for t in est.persistent + tuple(t for p in est.phases for t in p.transient):
        if t.name == name:
            return t.bytes
    return 0


def verify_training(resolved: ResolvedModel, setup: TrainSetup, *, layers: int | None = None) -> Comparison:
    import time

    _check_torch()
    model, config = resolved.spec, _twin_config(resolved)
    if isinstance(model, ModelSpec) and model.encoder_decoder is not None and setup.attention != AttentionImpl.EAGER:
        # T5's trainable position bias is sdpa's attn_mask: the CPU takes the math path (fp32 scores), CUDA the
        # memory-efficient kernel the estimate models (estimate/train/seq2seq.py)
        raise VerifyUnsupportedError(
            f"verify traces encoder-decoder training ({model.name}) with --attention eager only: under sdpa the CPU "
            "keeps the scores that CUDA's kernel does not"
        )
    recipe = train_recipe(setup)
    if isinstance(model, ModelSpec) and model.attention_dropout and setup.attention != AttentionImpl.EAGER:
        # CUDA's sdpa kernels drop inside the kernel; on the CPU a dropout probability sends sdpa to its math path,
        # which keeps the (b, heads, s, s) scores the estimate rightly leaves out
        raise VerifyUnsupportedError(
            f"verify cannot reproduce attention dropout under sdpa ({model.name}: {model.attention_dropout:g}; the "
            "CPU takes sdpa's math path): set the config's attention dropout to 0, or use --attention eager"
        )
    if isinstance(model, ModelSpec) and model.stored_format and training_base(model, setup.peft).fmt:
        # the twin builds the 16-bit model: its quantized base (GPTQ, AWQ, fp8...) needs the method's kernels
        raise VerifyUnsupportedError(f"verify cannot reproduce a {model.stored_format} base (the twin traces 16 bit)")
    # a CPU trace sees no NCCL either: the fake process group allocates no communicator buffers
    bare = replace(setup, overheads=NO_OVERHEADS, comms=replace(setup.comms, nccl_buffers=False))
    # the trace starts from a built model: checkpoint loading (estimate/train/loading.py) is not traced, so its
    # phase is left out of both sides (README: what verify cannot trace)
    est = _steps_only(estimate_training(model, bare))
    full = _steps_only(estimate_training(model, setup))
    start = time.perf_counter()
    cuda: dict[str, int] = {}
    with _one_line_failure():
        traced_layers = None if _device() == "cuda" else layers
        measured = _traced_training(config, recipe, traced_layers, cuda, _allocator_config(setup))
    estimated = {
        "weights": sum(t.bytes for t in est.persistent if t.name.startswith("weights/")),
        "master_weights": _named(est, "optimizer/master_weights"),
        "gradients": _named(est, "gradients"),
        "optimizer_states": _named(est, "optimizer/states"),
        **{row: step_peak(est, step) for row, step in TRAINING_PEAKS.items()},
        "peak": est.peak_bytes,
    }
    rows = tuple(Row(name=k, estimate=estimated[k], measured=measured[k]) for k in estimated)
    replayed = {k.removeprefix("replay_"): v for k, v in measured.items() if k.startswith("replay_")}
    if replayed:
        replayed["estimate_reserve"] = _named(full, "overhead/allocator")
    return Comparison(
        kind="training",
        rows=rows,
        semantics=CUDA_SEMANTICS if cuda else SEMANTICS,
        layers_traced=None if cuda else layers,
        overheads=full.peak_bytes - est.peak_bytes,
        seconds=time.perf_counter() - start,
        cuda=cuda,
        full_estimate=full.peak_bytes,
        allocator_replay=replayed,
    )


def _allocator_config(setup: TrainSetup) -> AllocatorConfig:
    """The caching allocator as the setup runs it (PYTORCH_CUDA_ALLOC_CONF), on a device with room."""
    mb = setup.allocator.max_split_size_mb
    return AllocatorConfig(
        expandable_segments=setup.allocator.expandable_segments,
        max_split_size=None if mb is None else mb * MIB,
    )


def verify_inference(resolved: ResolvedModel, setup: InferSetup) -> Comparison:
    import time

    from vramwise.verify.trace import InferRecipe, trace_inference

    _check_torch()
    model, config = resolved.spec, _twin_config(resolved)
    if getattr(model, "ssm", None):  # a bare size has no layers, hence none of them Mamba
        # the twin's transformers has no mamba-ssm kernels: it would trace the PyTorch scan the estimate does not
        # model (estimate/ssm_state.py)
        raise VerifyUnsupportedError(
            f"verify cannot reproduce {model.name}'s Mamba layers: the twin runs transformers' PyTorch scan "
            "(no mamba-ssm kernels), while the estimate models the CUDA kernels"
        )
    if setup.tp > 1:
        raise VerifyUnsupportedError("verify cannot reproduce tp > 1 (the twin traces one GPU)")
    # the checkpoint's own format when none is given, as the estimate reads it: a GPTQ config is not traced in bf16
    fmt = setup.weight_format or (default_format(model) if isinstance(model, ModelSpec) else "bf16")
    if fmt not in ("fp32", "fp16", "bf16"):
        raise VerifyUnsupportedError(f"verify cannot reproduce weight format {fmt} (traceable: fp32, fp16, bf16)")
    bare = replace(setup, overheads=NO_OVERHEADS, kv_block=1)
    est = estimate_inference(model, bare)
    full = estimate_inference(model, setup)
    recipe = InferRecipe(
        batch=setup.batch,
        context=setup.context,
        new_tokens=setup.new_tokens,
        precision=fmt,
        attention="sdpa" if setup.attention == "flash" else setup.attention,
        all_logits=setup.all_logits,
    )
    start = time.perf_counter()
    with _one_line_failure():
        t = trace_inference(config, recipe)
    weights = sum(x.bytes for x in est.persistent if x.name.startswith("weights/"))
    prefill = step_peak(est, Step.PREFILL)
    rows = [
        Row(name="weights", estimate=weights, measured=t.params),
        # generate() never writes back the last new token's keys and values; the estimate reserves its slot
        # encoder-decoder models hold two caches (decoder self-attention, cross-attention)
        Row(name="kv_cache", estimate=sum(_named(est, n) for n in _KV_TERMS), measured=t.kv_cache),
        Row(name="prefill_peak", estimate=prefill, measured=t.phase_peaks.get(Step.PREFILL, 0)),
    ]
    if setup.new_tokens > 1:
        decode = step_peak(est, Step.DECODE)
        rows.append(Row(name="decode_peak", estimate=decode, measured=t.phase_peaks[Step.DECODE]))
    rows.append(Row(name="peak", estimate=est.peak_bytes, measured=t.peak))
    return Comparison(
        kind="inference",
        rows=tuple(rows),
        semantics=SEMANTICS,
        layers_traced=None,
        overheads=full.peak_bytes - est.peak_bytes,
        seconds=time.perf_counter() - start,
    )

"""Megatron-LM's command-line arguments (``torchrun ... pretrain_gpt.py --tensor-model-parallel-size 2 ...``) as
vramwise's training options.

Flags as Megatron-LM core 0.20.0 (git d98e8a64, the ``--framework megatron`` preset's version) defines them in
``megatron/training/arguments.py``: the batch (``--micro-batch-size``, ``--global-batch-size``: accumulation =
global / (micro x data-parallel size)), ``--seq-length``, the parallel sizes, ``--bf16``/``--fp16`` (neither: fp32),
``--use-distributed-optimizer`` (ZeRO-1-like), ``--recompute-granularity``/``--recompute-activations``,
``--use-flash-attn``, ``--use-torch-fsdp2``. The model's shape flags (``--num-layers``, ``--hidden-size``, ...) are
not read: MODEL names the architecture, and the notes list the shape flags ignored.
"""

from __future__ import annotations

from typing import Any

from vramwise.configs.imported import Imported
from vramwise.configs.serve import read_flags
from vramwise.configs.values import refuse

KIND = "megatron"
FLAGS = {
    "--micro-batch-size": ("batch", "int"),
    "--global-batch-size": ("global_batch", "int"),
    "--seq-length": ("seq", "int"),
    "--tensor-model-parallel-size": ("tp", "int"),
    "--pipeline-model-parallel-size": ("pp", "int"),
    "--virtual-pipeline-model-parallel-size": ("interleave", "int"),
    "--context-parallel-size": ("cp", "int"),
    "--expert-model-parallel-size": ("ep", "int"),
    "--sequence-parallel": ("sp", "switch"),
    "--bf16": ("bf16", "switch"),
    "--fp16": ("fp16", "switch"),
    "--use-distributed-optimizer": ("distributed_optimizer", "switch"),
    "--recompute-granularity": ("recompute", "any"),
    "--recompute-activations": ("recompute_activations", "switch"),
    "--use-flash-attn": ("flash", "switch"),
    "--use-torch-fsdp2": ("fsdp2", "switch"),
    "--optimizer": ("optimizer", "any"),
    "--accumulate-allreduce-grads-in-fp32": ("grads_fp32", "switch"),
}
SHAPE = ("--num-layers", "--hidden-size", "--ffn-hidden-size", "--num-attention-heads", "--group-query-attention",
         "--num-query-groups", "--max-position-embeddings", "--position-embedding-type", "--swiglu", "--normalization",
         "--untie-embeddings-and-output-weights", "--disable-bias-linear", "--vocab-size", "--rotary-base",
         "--kv-channels", "--num-experts", "--moe-router-topk", "--make-vocab-size-divisible-by",
         "--use-rotary-position-embeddings", "--rotary-percent", "--norm-epsilon")  # fmt: skip
_HARMLESS_PREFIXES = (
    "--lr", "--min-lr", "--train-", "--save", "--load", "--data-", "--split", "--log", "--eval", "--weight-decay",
    "--clip-grad", "--adam-", "--init-method-std", "--attention-dropout", "--hidden-dropout", "--distributed-",
    "--no-", "--seed", "--tensorboard", "--wandb", "--transformer-impl", "--exit-", "--dataloader-type",
    "--num-workers", "--tokenizer-", "--vocab-file", "--merge-file", "--timing-", "--ckpt-", "--use-mcore-models",
    "--overlap-", "--attention-softmax-in-fp32", "--cross-entropy-loss-fusion", "--bias-", "--masked-softmax-fusion",
    "--moe-", "--use-checkpoint-args", "--finetune", "--bf16-", "--initial-loss-scale", "--loss-scale",
    "--decoupled-lr", "--sgd-momentum", "--manual-gc", "--recompute-method", "--recompute-num-layers",
)  # fmt: skip
_REFUSED = {
    "--cpu-offloading": "Megatron's activation CPU offloading is not modelled",
    "--fp8-format": "Transformer Engine fp8 training is not modelled",
    "--fp8": "Transformer Engine fp8 training is not modelled",
    "--num-layers-per-virtual-pipeline-stage": "give --virtual-pipeline-model-parallel-size",
    "--expert-tensor-parallel-size": "expert tensor parallelism is not modelled",
}


def is_megatron(words: list[str]) -> bool:
    return any(w.startswith(("--tensor-model-parallel-size", "--micro-batch-size", "--use-distributed-optimizer"))
               or w.endswith(("pretrain_gpt.py", "pretrain_mamba.py")) for w in words)  # fmt: skip


def from_arguments(args: list[str], world: int | None) -> Imported:
    """The script's arguments; ``world``: the launcher's GPU count (torchrun --nproc_per_node x --nnodes)."""
    harmless = lambda flag: flag in SHAPE or flag.startswith(_HARMLESS_PREFIXES)  # noqa: E731
    raw, used, ignored = read_flags(KIND, args, FLAGS, harmless, _REFUSED)
    opts: dict[str, Any] = {"framework": "megatron"}
    for name in ("batch", "seq", "tp", "pp", "interleave", "cp", "ep"):
        if name in raw:
            opts[name] = raw[name]
    if raw.get("sp"):
        opts["sp"] = True
    if raw.get("bf16") and raw.get("fp16"):
        raise refuse(KIND, "--fp16", "--bf16 and --fp16 are both given", "one of them")
    opts["precision"] = "bf16-mixed" if raw.get("bf16") else "fp16-mixed" if raw.get("fp16") else "fp32"
    if raw.get("grads_fp32"):
        opts["grad_dtype"] = "fp32"
    if raw.get("distributed_optimizer"):
        opts["zero"] = 1
    if raw.get("fsdp2"):
        opts["fsdp"] = "full"
    _switches(raw, opts)
    notes = _batch(raw, opts, world)
    shape = [f for f in ignored if f in SHAPE]
    if shape:
        notes.append(f"the model's shape is MODEL's; not read: {', '.join(shape)}")
    return Imported(kind=KIND, command="train", options=opts, used=tuple(used), ignored=tuple(ignored),
                    notes=tuple(notes))  # fmt: skip


def _batch(raw: dict[str, Any], opts: dict[str, Any], world: int | None) -> list[str]:
    """The data-parallel size from the GPUs launched, the accumulation from the global batch."""
    notes = []
    if world is not None:
        model_parallel = opts.get("tp", 1) * opts.get("pp", 1) * opts.get("cp", 1)
        if world % model_parallel:
            raise refuse(KIND, "--tensor-model-parallel-size", f"tp x pp x cp ({model_parallel}) does not divide the "
                         f"{world} GPUs launched")  # fmt: skip
        opts["dp"] = world // model_parallel
    if "global_batch" in raw:
        dp = opts.get("dp")
        micro = opts.get("batch", 1)
        if dp is None:
            notes.append("--global-batch-size needs the GPU count for the accumulation: give --grad-accum or launch "
                         "with torchrun --nproc_per_node")  # fmt: skip
        elif raw["global_batch"] % (micro * dp):
            raise refuse(KIND, "--global-batch-size", f"{raw['global_batch']} is not a multiple of micro-batch "
                         f"{micro} x data-parallel size {dp}")  # fmt: skip
        else:
            opts["grad_accum"] = raw["global_batch"] // (micro * dp)
    return notes


def _switches(raw: dict[str, Any], opts: dict[str, Any]) -> None:
    granularity = raw.get("recompute")
    if granularity not in (None, "full", "selective"):
        raise refuse(KIND, "--recompute-granularity", f"{granularity!r}", "full, selective")
    if granularity or raw.get("recompute_activations"):
        opts["recompute"] = granularity or "selective"
    if raw.get("flash"):
        opts["attention"] = "flash"
    optimizer = raw.get("optimizer")
    if optimizer is not None:
        opts["optimizer"] = {"adam": "adamw", "sgd": "sgd"}.get(optimizer) or _bad(optimizer)


def _bad(value: str) -> Any:
    raise refuse(KIND, "--optimizer", f"{value!r} is not one vramwise models", "adam, sgd")

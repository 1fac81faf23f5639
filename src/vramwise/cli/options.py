"""The one option table of the command line: every option once, with its flags, type, help and commands.

argparse is built from it (``build_parser``), the tests read it (every option of ``infer`` is accepted by
``fit``, ``plot`` and ``verify``), and a later web form can be too. Defaults are not written here: a setup
option's default is its field's in ``workload.py`` (the help text reads it from there), a question's is the
application layer's; argparse leaves every option it did not see as None, which means "not given".
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NoReturn

from vramwise.app.choices import DEFAULT_AXIS, DEFAULT_TOP, MAX_TARGETS, SWEEP_AXES
from vramwise.app.setups import infer_default, train_default
from vramwise.configs.emit import EMIT_FORMATS
from vramwise.errors import shown
from vramwise.estimate.cuda_context import DEFAULT_CUDA_VERSION
from vramwise.estimate.overheads import DEFAULT_ALLOCATOR_FRACTION
from vramwise.units import DEFAULT_UNIT, UNITS
from vramwise.workload import (
    ATTENTION_IMPLS,
    ENGINES,
    FSDP_MODES,
    GRAD_DTYPES,
    KV_DTYPES,
    LOADINGS,
    LOSS_IMPLS,
    OFFLOAD,
    OPTIMIZER_IMPLS,
    OPTIMIZERS,
    PEFT_METHODS,
    PRECISIONS,
    RECOMPUTE,
)
from vramwise.workload.engines import MXFP4_BACKENDS, VLLM_SAMPLERS, VLLM_VERSION, VLLM_VERSIONS
from vramwise.workload.llamacpp_flags import CACHE_TYPES, FLASH_ATTN, SPLIT_MODES
from vramwise.workload.options import ADAPTER_DTYPES, FRAMEWORKS, INTERCONNECTS, KERNEL_IMPLS, MODES, SEEDS, ZERO_GRADS


def tokens(text: str) -> int:
    """A token count as `vllm serve --max-model-len` reads one (vLLM 0.11 vllm/engine/arg_utils.py
    human_readable_int): a plain integer, or a lowercase decimal suffix (``128k`` = 128,000, ``25.6k`` = 25,600)
    or an uppercase binary one (``128K`` = 131,072; no decimals with it)."""
    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG])", value)
    if match is None:
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid token count {shown(text)} (an integer, or 128k = 128,000, 128K = 131,072)"
            ) from None
    number, suffix = match.groups()
    if suffix.islower():
        return int(float(number) * {"k": 10**3, "m": 10**6, "g": 10**9}[suffix])
    if "." in number:
        raise argparse.ArgumentTypeError(
            f"invalid token count {shown(text)}: no decimals with a binary suffix (K, M, G); {number}{suffix.lower()}?"
        )
    return int(number) * {"K": 2**10, "M": 2**20, "G": 2**30}[suffix]


# the exit status, a CI gate (cli/__init__.py sets it; README "Exit status" says the same)
EXIT_STATUS = (
    "exit status: 0 fits (infer/train: the peak fits --gpu, with --range its high, or no --gpu was given; fit: an "
    "answer exists), "
    "3 does not fit (infer/train with --gpu; fit: nothing fits), 2 bad input, 1 output closed early"
)


class Group(Enum):
    SETUP = "setup"  # a field of InferSetup or TrainSetup: goes to the application as an option value
    QUESTION = "question"  # what to ask (--gpu, --serve, --max, ...): a field of the request
    OUTPUT = "output"  # how to show the answer (--json, --units, ...): the renderer's


INFER, TRAIN, FIT, PLOT, VERIFY = "infer", "train", "fit", "plot", "verify"
MODELS, GPUS, FORMATS = "models", "gpus", "formats"
WEB = "web"
COMMANDS = {  # in the order `vramwise --help` lists them
    INFER: "memory to serve or generate with a model",
    TRAIN: "memory to train or fine-tune a model, per GPU",
    VERIFY: "trace the real transformers model and compare with the estimate",
    FIT: "what fits a GPU: largest batch or context, fewest GPUs, best format, layouts",
    PLOT: "chart memory against sequence length or batch (needs the plot extra)",
    MODELS: "list the built-in model catalog",
    GPUS: "list the built-in GPU catalog",
    FORMATS: "list weight storage formats",
    WEB: "serve the page and the JSON API on this machine (needs the web extra)",
    "mcp": "serve infer, train and fit as tools of an MCP server over stdio (needs the mcp extra)",
}
WRAPPERS = (FIT, PLOT, VERIFY)  # each takes every setup option of infer (with --infer) and of train
INF = (INFER, *WRAPPERS)
TRN = (TRAIN, *WRAPPERS)
BOTH = (INFER, TRAIN, *WRAPPERS)
# a serving engine and its own flags: infer, fit --infer and verify --log answer with the engine's plan; plot draws
# transformers' sweep only, so its --help does not list them (it used to, and then refused them)
ENG = (INFER, FIT, VERIFY)


@dataclass(frozen=True, kw_only=True)
class Option:
    name: str  # the key of its value (argparse dest, app option name)
    flags: tuple[str, ...]  # a positional argument has one flag without dashes
    help: str
    commands: tuple[str, ...]
    group: Group = Group.SETUP
    type: Callable[[str], Any] | None = None  # None: a switch (present or not)
    choices: tuple[str, ...] | None = None  # checked by argparse (setup choices are checked by the setup)
    default: Any = None  # None: not given; only output options have one here
    short_in: tuple[str, ...] | None = None  # the commands where the one-letter flag applies (None: all)
    help_in: Mapping[str, str] = field(default_factory=dict)  # a command's own help text
    exclusive: str | None = None  # a required one-of group of the command
    metavar: str | None = None
    required_in: tuple[str, ...] = ()  # the commands that cannot do without it
    optional_in: tuple[str, ...] = ()  # a positional argument that these commands can do without

    def flags_in(self, command: str) -> tuple[str, ...]:
        if self.short_in is None or command in self.short_in:
            return self.flags
        return tuple(f for f in self.flags if f.startswith("--"))


def _one_of(names: tuple[str, ...]) -> str:
    return ", ".join(names)


_MODEL_HELP = "catalog name (see `vramwise models`), path to a config.json, or a size like 14b"
_ARCH_HELP = "catalog name (see `vramwise models`) or path to a config.json"

OPTIONS: tuple[Option, ...] = (
    Option(name="model", flags=("model",), group=Group.QUESTION, commands=(INFER, TRAIN, VERIFY, FIT, PLOT),
           help=_MODEL_HELP, optional_in=(VERIFY, INFER, TRAIN, FIT),
           help_in={FIT: _ARCH_HELP, PLOT: _ARCH_HELP, VERIFY: _ARCH_HELP + " (not with --log)"}),
    # --- the workload: both setups
    Option(name="batch", flags=("-b", "--batch"), type=int, commands=BOTH,
           help="sequences in the batch; training: the micro-batch per data-parallel GPU "
                "(default {infer.batch})"),
    Option(name="context", flags=("-s", "--context"), type=tokens, commands=INF, short_in=(INFER,),
           help="prompt tokens per sequence (default {infer.context})"),
    Option(name="seq", flags=("-s", "--seq"), type=tokens, commands=(INFER, *TRN), short_in=TRN,
           help="tokens per sequence (default {train.seq}); with --infer, the context (same as --context)",
           help_in={INFER: "the context's other spelling (the name train uses): same as --context"}),
    Option(name="new_tokens", flags=("-n", "--new-tokens"), type=int, commands=INF,
           help="generated tokens per sequence (default {infer.new_tokens})"),
    Option(name="format", flags=("-f", "--format"), type=str, commands=INF,
           help="weight format (see `vramwise formats`; default: the checkpoint's)",
           help_in={VERIFY: "weight format: fp32, fp16 or bf16 (default: the checkpoint's)"}),
    Option(name="kv_dtype", flags=("--kv-dtype", "--kv-cache-dtype"), type=str, commands=INF,
           help=f"KV cache dtype: {_one_of(KV_DTYPES)} (default {{infer.kv_dtype}}: the compute dtype)"),
    Option(name="attention", flags=("--attention",), type=str, commands=BOTH,
           help=f"attention implementation: {_one_of(ATTENTION_IMPLS)} (default {{infer.attention}})"),
    Option(name="tp", flags=("--tp",), type=int, commands=BOTH,
           help="tensor-parallel GPUs (default {infer.tp})"),
    Option(name="kv_block", flags=("--kv-block", "--block-size"), type=int, commands=INF,
           help="paged KV block in tokens, vLLM's --block-size (default {infer.kv_block}; 1 = contiguous)"),
    Option(name="prefill_chunk", flags=("--prefill-chunk",), type=tokens, commands=INF,
           help="tokens per prefill forward (chunked prefill; default: the whole prompt)"),
    Option(name="all_logits", flags=("--all-logits",), commands=INF,
           help="logits for every position (a plain forward; default: the last, as generate)"),
    Option(name="images", flags=("--images",), type=int, commands=INF,
           help="images per sequence, for vision-language models: their tokens join the context, the vision "
           "tower's activations join the prefill (default {infer.images})"),
    Option(name="image_size", flags=("--image-size",), type=str, commands=INF, metavar="WxH",
           help="each image's width x height in pixels, for models whose tokens follow the resolution (Qwen2-VL, "
           "idefics3, smolvlm; default: the image processor's largest)"),
    Option(name="gpu_util", flags=("--gpu-memory-utilization", "--gpu-util"), type=float, commands=ENG,
           help="fraction of the GPU vLLM gives itself (--engine vllm, --serve) (default {infer.gpu_util})"),
    # --- the serving engine and its own flags, spelled as the engine spells them
    Option(name="engine", flags=("--engine",), type=str, commands=ENG,
           help=f"whose memory plan: {_one_of(ENGINES)} (default {{infer.engine}}: transformers generate; "
                "vllm follows vLLM {vllm_version}'s `vllm serve`; --serve is --engine vllm)"),
    Option(name="max_model_len", flags=("--max-model-len",), type=tokens, commands=ENG,
           help="vLLM: the longest sequence it must hold (default: the model's context)"),
    Option(name="max_num_seqs", flags=("--max-num-seqs",), type=int, commands=ENG,
           help="vLLM: concurrent sequences, and the sampler warm-up's rows (default by GPU: 1024 on >= 70 GiB "
                "non-A100, else 256)"),
    Option(name="max_num_batched_tokens", flags=("--max-num-batched-tokens", "--max-batched-tokens"), type=tokens,
           commands=ENG, help="vLLM: tokens per step, the profile run's and each prefill chunk's (default by GPU: "
                              "8192 on >= 70 GiB non-A100, else 2048)"),
    Option(name="enforce_eager", flags=("--enforce-eager",), commands=ENG,
           help="vLLM: no CUDA graphs (their memory drops out)"),
    Option(name="kv_cache_memory", flags=("--kv-cache-memory-bytes", "--kv-cache-memory"), type=int, commands=ENG,
           help="vLLM: the KV pool in bytes per GPU, instead of what --gpu-memory-utilization leaves"),
    Option(name="mem_fraction_static", flags=("--mem-fraction-static",), type=float, commands=ENG,
           help="SGLang: the share of free memory for weights and the KV pool (default by GPU memory and tp)"),
    Option(name="chunked_prefill_size", flags=("--chunked-prefill-size",), type=int, commands=ENG,
           help="SGLang: tokens per prefill chunk, -1 for none (default by GPU memory: 2048 to 16384)"),
    Option(name="cuda_graph_max_bs", flags=("--cuda-graph-max-bs",), type=int, commands=ENG,
           help="SGLang: the largest decode batch captured in a CUDA graph (default by GPU memory and tp)"),
    Option(name="max_running_requests", flags=("--max-running-requests",), type=int, commands=ENG,
           help="SGLang: concurrent requests (default: from the token pool, 2048 to 4096)"),
    Option(name="max_total_tokens", flags=("--max-total-tokens",), type=int, commands=ENG,
           help="SGLang: a cap on the token pool"),
    Option(name="context_length", flags=("--context-length",), type=tokens, commands=ENG,
           help="SGLang: the context it is set up for (default: the model's)"),
    Option(name="page_size", flags=("--page-size",), type=int, commands=ENG,
           help="SGLang: tokens per KV page (default 1)"),
    Option(name="disable_cuda_graph", flags=("--disable-cuda-graph",), commands=ENG,
           help="SGLang: no CUDA graphs"),
    Option(name="max_prefill_tokens", flags=("--max-prefill-tokens",), type=int, commands=ENG,
           help="SGLang: tokens per prefill batch when chunking is off (default 16384)"),
    Option(name="sglang_version", flags=("--sglang-version",), type=str, commands=ENG,
           help="SGLang: whose defaults, 0.5 (by GPU memory) or 0.4 (0.4.9.post2: by GPU memory and tp) (default 0.5)"),
    Option(name="device_map", flags=("--device-map",), type=str, commands=ENG,
           help="transformers: spread whole layers over the GPUs with accelerate: auto, balanced, balanced_low_0, "
                "sequential (default: the whole model on each GPU)"),
    Option(name="max_memory", flags=("--max-memory",), type=str, commands=ENG, metavar="SIZES",
           help="transformers with --device-map: each GPU's cap for weights, in index order (20GiB,30GiB)"),
    # llama.cpp's own flags (--engine llama.cpp), as llama-server spells them (-b is vramwise's --batch: -np here)
    Option(name="ctx_size", flags=("-c", "--ctx-size"), type=tokens, commands=ENG,
           help="llama.cpp: KV cells over all sequences (default: (context + new tokens) x -np; 0 = the model's)"),
    Option(name="batch_size", flags=("--batch-size",), type=int, commands=ENG,
           help="llama.cpp: logical batch (default 2048)"),
    Option(name="ubatch_size", flags=("-ub", "--ubatch-size"), type=int, commands=ENG,
           help="llama.cpp: physical batch its compute buffers are reserved for (default 512)"),
    Option(name="n_gpu_layers", flags=("-ngl", "--n-gpu-layers", "--gpu-layers"), type=int, commands=ENG,
           help="llama.cpp: layers on the GPU(s), the output layer counting as one more (default -1: all)"),
    Option(name="cache_type_k", flags=("-ctk", "--cache-type-k"), type=str, commands=ENG,
           help=f"llama.cpp: K cache type, {_one_of(tuple(CACHE_TYPES))} (default f16)"),
    Option(name="cache_type_v", flags=("-ctv", "--cache-type-v"), type=str, commands=ENG,
           help="llama.cpp: V cache type, as -ctk; a quantized one needs flash attention (default f16)"),
    Option(name="flash_attn", flags=("-fa", "--flash-attn"), type=str, commands=ENG,
           help=f"llama.cpp: flash attention, {_one_of(FLASH_ATTN)} (default auto)"),
    Option(name="parallel", flags=("-np", "--parallel"), type=int, commands=ENG,
           help="llama.cpp: sequences served together, each with -c / -np cells (default: --batch)"),
    Option(name="tensor_split", flags=("-ts", "--tensor-split"), type=str, commands=ENG,
           metavar="SHARES", help="llama.cpp: share of the layers per GPU of --gpu Nx..., e.g. 3,1 (default: equal)"),
    Option(name="split_mode", flags=("-sm", "--split-mode"), type=str, commands=ENG,
           help=f"llama.cpp: {_one_of(SPLIT_MODES)} (default layer; row is not modelled)"),
    Option(name="no_mmap", flags=("--no-mmap",), commands=ENG,
           help="llama.cpp: read the host-side weights into RAM instead of mapping the file"),
    Option(name="no_kv_offload", flags=("-nkvo", "--no-kv-offload"), commands=ENG,
           help="llama.cpp: keep the KV cache in host RAM"),
    Option(name="kv_unified", flags=("-kvu", "--kv-unified"), commands=ENG,
           help="llama.cpp: one KV buffer shared by every sequence"),
    Option(name="swa_full", flags=("--swa-full",), commands=ENG,
           help="llama.cpp: full-size cache for sliding-window layers"),
    Option(name="embeddings", flags=("--embeddings",), commands=ENG,
           help="llama.cpp: the output buffer keeps embeddings too"),
    Option(name="ollama", flags=("--ollama",), commands=ENG,
           help="llama.cpp as Ollama 0.12.10 runs it: -c per sequence as num_ctx, num_batch 512, -fa off unless "
                "given, the layers fitted to the GPU unless -ngl"),
    Option(name="vllm_version", flags=("--vllm-version",), type=str, commands=ENG,
           help="vLLM: whose memory plan, 0.11 (V1), 0.10 or 0.9 (V1 of 0.10.x / 0.9.2: NCCL inside the budget), 0.8 "
                "(V1 of 0.7.x-0.8.x: context and NCCL inside the budget), 0.6 (V0 of 0.6.5-0.6.6) or 0.6.4 (V0, the "
                "CUDA context inside the budget) (default 0.11)"),
    Option(name="mxfp4_backend", flags=("--mxfp4-backend",), type=str, commands=ENG,
           help="vLLM: the MoE backend of an MXFP4 checkpoint, marlin, triton or flashinfer (default: marlin, what "
                "pip's vLLM 0.11.0 picks without FlashInfer or triton_kernels; marlin is VLLM_MXFP4_USE_MARLIN=1)"),
    Option(name="vllm_sampler", flags=("--vllm-sampler",), type=str, commands=ENG,
           help="vLLM V1 (--vllm-version 0.8 to 0.11): the sampler warm-up's top-k/top-p path, torch (pip's vLLM, "
                "no FlashInfer; the default) or flashinfer (0.8: FlashInfer < 0.2.3 installed, as in vLLM's v0.8.5 "
                "docker image; 0.9-0.11: FlashInfer >= 0.2.3 installed, the log's 'Using FlashInfer for top-p & "
                "top-k sampling.')"),
    # --- training only
    Option(name="grad_accum", flags=("--grad-accum",), type=int, commands=TRN,
           help="micro-batches per step (pipeline micro-batches; default {train.grad_accum})"),
    Option(name="precision", flags=("--precision",), type=str, commands=TRN,
           help=f"{_one_of(PRECISIONS)} (default {{train.precision}})"),
    Option(name="grad_dtype", flags=("--grad-dtype",), type=str, commands=TRN,
           help=f"mixed recipes: {_one_of(GRAD_DTYPES)}; auto/half as DeepSpeed, fp32 as Megatron "
                f"(default {{train.grad_dtype}})"),
    Option(name="optimizer", flags=("--optimizer",), type=str, commands=TRN,
           help=f"{_one_of(OPTIMIZERS)} (default {{train.optimizer}})"),
    Option(name="optimizer_impl", flags=("--optimizer-impl",), type=str, commands=TRN,
           help=f"{_one_of(OPTIMIZER_IMPLS)} (default {{train.optimizer_impl}}: fused for *-mixed)"),
    Option(name="peft", flags=("--peft",), type=str, commands=TRN,
           help=f"{_one_of(PEFT_METHODS)} (default {{train.peft}}: full fine-tuning)"),
    Option(name="lora_r", flags=("--lora-r",), type=int, commands=TRN,
           help="LoRA rank (default {train.lora_r})"),
    Option(name="lora_targets", flags=("--lora-targets",), type=str, commands=TRN,
           help="comma-separated peft module names or all-linear (default: peft's)"),
    Option(name="lora_dropout", flags=("--lora-dropout",), type=float, commands=TRN,
           help="LoRA dropout (default {train.lora_dropout:g})"),
    Option(name="freeze_layers", flags=("--freeze-layers",), type=int, commands=TRN,
           help="freeze the embeddings and the first N layers (default {train.freeze_layers})"),
    Option(name="num_virtual_tokens", flags=("--num-virtual-tokens",), type=int, commands=TRN,
           help="prompt/prefix tuning: virtual tokens (default {train.num_virtual_tokens})"),
    Option(name="decoder_seq", flags=("--decoder-seq",), type=int, commands=TRN,
           help="encoder-decoder (T5): the target's tokens (default: --seq)"),
    Option(name="recompute", flags=("--recompute",), type=str, commands=TRN,
           help=f"activation recompute: {_one_of(RECOMPUTE)}; selective is Megatron's (drops the attention "
                "scores: no change under sdpa/flash), op-sac torchtitan's op-level policy, layer-sac every "
                "--recompute-every layers (default {train.recompute})"),
    Option(name="loss", flags=("--loss",), type=str, commands=TRN,
           help=f"{_one_of(LOSS_IMPLS)}: full is transformers' fp32 upcast, compute-dtype F.cross_entropy on "
                "16-bit logits, chunked a fused linear cross entropy of --loss-chunk tokens, liger Liger-Kernel's, "
                "cce Cut Cross Entropy, torchtune-chunked torchtune's CEWithChunkedOutputLoss (0.6), torchtune-linear "
                "its LinearCrossEntropyLoss (0.7), compiled the fp32-upcast loss under torch.compile (torchtitan's "
                "with compile), loss-parallel torch's loss_parallel on vocabulary-sharded logits (torchtitan's "
                "with tp) (default {train.loss})"),
    Option(name="loss_chunk", flags=("--loss-chunk",), type=int, commands=TRN,
           help="tokens per chunk for --loss chunked (default {train.loss_chunk})"),
    Option(name="adapter_dtype", flags=("--adapter-dtype",), type=str, commands=TRN,
           help=f"LoRA adapters' dtype: {_one_of(ADAPTER_DTYPES)}; auto is peft's fp32, bf16 the model's 16-bit "
                "dtype as torchtune keeps them (default {train.adapter_dtype})"),
    Option(name="double_quant", flags=("--double-quant",), commands=TRN,
           help="QLoRA: bitsandbytes double quantization of the 4-bit absmax (bnb_4bit_use_double_quant)"),
    Option(name="recompute_every", flags=("--recompute-every",), type=int, commands=TRN,
           help="--recompute layer-sac: checkpoint every N-th layer (default {train.recompute_every})"),
    Option(name="mlp_impl", flags=("--mlp-impl",), type=str, commands=TRN,
           help=f"MLP activation: {_one_of(KERNEL_IMPLS)}; fused is Liger's SwiGLU/GeGLU kernel "
                "(default {train.mlp_impl})"),
    Option(name="norm_impl", flags=("--norm-impl",), type=str, commands=TRN,
           help=f"RMSNorm: {_one_of(KERNEL_IMPLS)}; fused is Liger's RMSNorm kernel (default {{train.norm_impl}})"),
    Option(name="activation_offload", flags=("--activation-offload",), commands=TRN,
           help="torchtune's activation offloading: saved tensors go to pinned host memory"),
    Option(name="compile", flags=("--compile",), commands=TRN,
           help="torch.compile per decoder layer (torchtitan's blocks): inductor recomputes norms' and the MLP "
                "activation's pointwise chains, measured on CPU for dense RMSNorm + gated-MLP families"),
    Option(name="optimizer_in_backward", flags=("--optimizer-in-backward",), commands=TRN,
           help="torchtune's optimizer_in_bwd: each parameter steps in backward and frees its gradient"),
    Option(name="float8", flags=("--float8",), commands=TRN,
           help="torchao float8 training of the linears (Float8Linear, tensorwise scaling)"),
    Option(name="keep_logits", flags=("--keep-logits",), commands=TRN,
           help="the training loop keeps the model's output logits until the next step's forward returns (a plain "
                "loop's outputs = model(**batch); HF Trainer's compute_loss drops them)"),
    Option(name="torch_version", flags=("--torch-version",), type=str, commands=TRN,
           help="the PyTorch release the step runs, MAJOR.MINOR: before 1.11 autograd's softmax keeps its input "
                "(eager attention's masked scores) beside its output (default {train.torch_version})"),
    Option(name="packed", flags=("--packed",), commands=TRN,
           help="the dataset is packed (torchtune dataset.packed=True: each batch carries input_pos, which its "
                "rotary embedding gathers per layer); --framework torchtune only"),
    Option(name="zero_grad", flags=("--zero-grad",), type=str, commands=TRN,
           help=f"what zero_grad() leaves after each step: {_one_of(ZERO_GRADS)}; none frees the gradients "
                "(set_to_none=True, PyTorch >= 2.0), zeros keeps them allocated through the next forward "
                "(PyTorch < 2.0's default) (default {train.zero_grad})"),
    Option(name="dp", flags=("--dp",), type=int, commands=TRN,
           help="data-parallel GPUs (default {train.dp})"),
    Option(name="zero", flags=("--zero",), type=int, commands=TRN,
           help="DeepSpeed ZeRO stage 0-3 (default {train.zero})"),
    Option(name="fsdp", flags=("--fsdp",), type=str, commands=TRN,
           help=f"FSDP sharding: {_one_of(FSDP_MODES)} (default {{train.fsdp}})"),
    Option(name="fsdp_shard", flags=("--fsdp-shard",), type=int, commands=TRN,
           help="GPUs per shard group for --fsdp hybrid (default: dp)"),
    Option(name="offload", flags=("--offload",), type=str, commands=TRN,
           help=f"offload to host RAM: {_one_of(OFFLOAD)} (default {{train.offload}})"),
    Option(name="sp", flags=("--sp",), commands=TRN, help="sequence parallelism inside the tensor-parallel group"),
    Option(name="pp", flags=("--pp",), type=int, commands=BOTH,
           help="pipeline stages (default {train.pp})",
           help_in={INFER: "vLLM's --pipeline-parallel-size: pipeline stages (default 1)"}),
    Option(name="interleave", flags=("--interleave",), type=int, commands=TRN,
           help="virtual pipeline stages per GPU (default {train.interleave})"),
    Option(name="cp", flags=("--cp",), type=int, commands=TRN,
           help="context-parallel GPUs (default {train.cp})"),
    Option(name="ep", flags=("--ep",), type=int, commands=TRN,
           help="expert-parallel GPUs (default {train.ep})"),
    Option(name="framework", flags=("--framework",), type=str, commands=TRN,
           help=f"whose defaults fill the options not given: {_one_of(FRAMEWORKS)} (default {{train.framework}}: "
                "vramwise's own); options given win, combinations the framework does not run are refused"),
    Option(name="interconnect", flags=("--interconnect",), type=str, commands=(*TRN, INFER),
           help=f"how a node's GPUs talk, sizing NCCL's buffers (training, and a serving engine's tp): "
                f"{_one_of(INTERCONNECTS)} (shm: no GPU peer-to-peer access, NCCL through host memory and no custom "
                "all-reduce; default auto: from --gpu's form factor where the catalog says it, else nvswitch)"),
    Option(name="max_live_params", flags=("--max-live-params",), type=int, commands=TRN,
           help="DeepSpeed ZeRO-3 stage3_max_live_parameters (default {train.max_live_params})"),
    Option(name="param_persistence_threshold", flags=("--param-persistence-threshold",), type=int, commands=TRN,
           help="DeepSpeed ZeRO-3 stage3_param_persistence_threshold (default {train.param_persistence_threshold})"),
    Option(name="max_reuse_distance", flags=("--max-reuse-distance",), type=int, commands=TRN,
           help="DeepSpeed ZeRO-3 stage3_max_reuse_distance (default {train.max_reuse_distance})"),
    Option(name="nccl_env", flags=("--nccl-env",), type=str, commands=TRN,
           help="NCCL's environment as the job sets it, e.g. NCCL_BUFFSIZE=1048576,NCCL_NVLS_ENABLE=0 "
                "(default: none set)"),
    Option(name="overlap_comm", flags=("--overlap-comm",), commands=TRN,
           help="DeepSpeed overlap_comm at ZeRO 1-2: a second reduce bucket (default: DeepSpeed's, on at ZeRO-3 "
                "only)"),
    Option(name="reduce_bucket", flags=("--reduce-bucket",), type=int, commands=TRN,
           help="DeepSpeed reduce_bucket_size in elements (default {train.reduce_bucket})"),
    Option(name="prefetch_bucket", flags=("--prefetch-bucket",), type=int, commands=TRN,
           help="DeepSpeed stage3_prefetch_bucket_size in elements (default {train.prefetch_bucket})"),
    Option(name="fsdp_outer_units", flags=("--fsdp-outer-units",), commands=TRN,
           help="FSDP: the embeddings and the head are units of their own, not the root's (torchtune's "
                "custom_sharded_layers)"),
    Option(name="fsdp_over_cp", flags=("--fsdp-over-cp",), commands=TRN,
           help="FSDP shards over dp x cp GPUs, as torchtitan's dp_shard x cp mesh (so --fsdp runs at --dp 1 with "
                "--cp > 1; default: over dp only)"),
    # --- both setups: overheads and mode
    Option(name="cuda_context", flags=("--cuda-context",), type=int, commands=BOTH,
           help="CUDA context in MiB (default: the table by GPU architecture and --cuda-version)"),
    Option(name="cuda_version", flags=("--cuda-version",), type=str, commands=BOTH,
           help=f"the CUDA runtime of the torch wheel (torch.version.cuda), which sizes the CUDA context with the "
                f"GPU's architecture (default {DEFAULT_CUDA_VERSION}; < 11.7: every kernel loaded eagerly)"),
    Option(name="allocator_fraction", flags=("--allocator-fraction",), type=float, commands=BOTH,
           help=f"allocator reserve as a fraction (default {DEFAULT_ALLOCATOR_FRACTION}; training with "
                "--allocator-replay: the caching-allocator replay)"),
    Option(name="loading", flags=("--loading",), type=str, commands=TRN,
           help=f"how the checkpoint is loaded before the first step: {_one_of(LOADINGS)} (default {{train.loading}}: "
                "FSDP fsdp-full, ZeRO-3 zero-init, a bitsandbytes base bnb-quantize, else hf)"),
    Option(name="expandable_segments", flags=("--expandable-segments",), commands=TRN,
           help="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (the allocator replay grows one segment by pages)"),
    Option(name="max_split_size_mb", flags=("--max-split-size-mb",), type=int, commands=TRN,
           help="PYTORCH_CUDA_ALLOC_CONF max_split_size_mb: cached blocks this large are not split (above 20)"),
    Option(name="allocator_replay", flags=("--allocator-replay",), commands=TRN,
           help="the reserve from a replay of the step's allocations through the caching-allocator model instead "
                "of the flat fraction (on with --expandable-segments or --max-split-size-mb; experimental: replayed "
                "at one of the run's sequences, times the micro-batch)"),
    Option(name="mode", flags=("--mode",), type=str, commands=BOTH,
           help="accurate (default {infer.mode}) or textbook (the seeds' formulas; infer and train)"),
    Option(name="seed", flags=("--seed",), type=str, commands=TRN,
           help="textbook mode: seed 000 (one GPU, LoRA) or 002 (ZeRO, TP, PP) (default {train.seed})"),
    Option(name="lora_fraction", flags=("--lora-fraction",), type=float, commands=TRN,
           help="textbook seed 000: LoRA share of Φ (default {train.lora_fraction})"),
    # --- the question
    Option(name="infer", flags=("--infer",), group=Group.QUESTION, commands=WRAPPERS,
           help="inference instead of training (--context, or --seq, is the context)"),
    Option(name="gpu", flags=("--gpu",), type=str, group=Group.QUESTION, commands=(INFER, TRAIN, FIT, PLOT, VERIFY),
           required_in=(FIT,),
           help="GPU to check the fit against: a name or alias (`vramwise gpus`), a size (24GiB = 2^30 bytes each, "
                "24GB = 10^9), optionally a count (2x4090: inference tp = count, training dp x tp x pp x cp = count)",
           help_in={FIT: "the GPU whose memory is the budget: a name (`vramwise gpus`), a size (24GiB, 24GB), "
                         "optionally a count (8xH100)",
                    PLOT: "draw this GPU's capacity line (a name or a size; no count)",
                    VERIFY: "with --log: a name gives the GPU's kind and keeps the CUDA total the log reports; a size "
                            "replaces that total"}),
    Option(name="serve", flags=("--serve",), group=Group.QUESTION, commands=(INFER, FIT),
           help="serving capacity on --gpu: the same as --engine vllm (vLLM's memory plan, verdict and capacity)"),
    Option(name="per_stage", flags=("--per-stage",), group=Group.QUESTION, commands=(TRAIN,),
           help="show every pipeline stage, not only the worst"),
    Option(name="max", flags=("--max",), type=str, choices=MAX_TARGETS, group=Group.QUESTION, commands=(FIT,),
           exclusive="question", help="the largest micro-batch, sequence (seq) or inference context that fits"),
    Option(name="min_gpus", flags=("--min-gpus",), group=Group.QUESTION, commands=(FIT,), exclusive="question",
           help="training: fewest ZeRO-3 (or --fsdp) GPUs that fit"),
    Option(name="best_format", flags=("--best-format",), group=Group.QUESTION, commands=(FIT,),
           exclusive="question", help="inference: the most faithful format that fits"),
    Option(name="layouts", flags=("--layouts",), type=int, metavar="GPUS", group=Group.QUESTION, commands=(FIT,),
           exclusive="question", help="training: parallel layouts of GPUS GPUs, ranked"),
    Option(name="top", flags=("--top",), type=int, group=Group.QUESTION, commands=(FIT,),
           help=f"--layouts: how many to show (default {DEFAULT_TOP})"),
    Option(name="max_batch", flags=("--max-batch",), type=int, group=Group.QUESTION, commands=(FIT,),
           help="--layouts: try every micro-batch from 1 to this (default --batch)"),
    Option(name="vs", flags=("--vs",), type=str, choices=SWEEP_AXES, group=Group.QUESTION, commands=(PLOT,),
           help=f"the x axis (default {DEFAULT_AXIS}; with --infer, seq is the context)"),
    Option(name="points", flags=("--points",), type=str, group=Group.QUESTION, commands=(PLOT,),
           help="comma-separated x values (default: powers of two)"),
    Option(name="layers", flags=("--layers",), type=int, group=Group.QUESTION, commands=(VERIFY,),
           help="trace N and N+1 layers and extrapolate (fast for 70B)"),
    Option(name="log", flags=("--log",), type=str, metavar="FILE", group=Group.QUESTION, commands=(VERIFY,),
           help="a vLLM, SGLang or llama.cpp startup log: every figure it printed beside the engine plan of the same "
                "setup (model, flags and GPU total read from the log; options given override them; no torch)"),
    Option(name="log_model", flags=("--model",), type=str, group=Group.QUESTION, commands=(VERIFY,),
           help="with --log: the model to estimate instead of the logged one (a catalog name or a config.json)"),
    # issue 15: a framework's config in, a framework's config out (configs/)
    Option(name="source", flags=("--from",), type=str, metavar="FILE", group=Group.QUESTION,
           commands=(INFER, TRAIN, FIT, VERIFY),
           help="read the setup from a framework's config: a DeepSpeed JSON, HF TrainingArguments/SFTConfig (JSON, "
                "YAML), Axolotl or torchtune YAML, an Ollama Modelfile, or a command line in quotes (vllm serve ..., "
                "python -m sglang.launch_server ..., llama-server ..., a training script's --arguments); options "
                "given on the command line win"),
    Option(name="margin", flags=("--margin",), type=float, metavar="F", group=Group.QUESTION,
           commands=(INFER, TRAIN, FIT),
           help="keep this fraction of each GPU free: the peak must fit the rest (0 <= F < 1; default 0)"),
    # issue 15: low and high over the estimate's uncertainties (app/ranges.py)
    Option(name="range", flags=("--range",), group=Group.QUESTION, commands=(INFER, TRAIN, FIT),
           help="low and high peaks over what the estimate assumes (allocator, sequence length, vLLM release, CUDA "
                "context), and a bound; the verdict and the exit status are the high's",
           help_in={FIT: "fit --max: the range of the setup at the answer, and whether its high fits (the exit "
                         "status stays the answer's)"}),
    Option(name="max_seq", flags=("--max-seq",), type=tokens, group=Group.QUESTION, commands=(INFER, TRAIN, FIT),
           help="with --range: the longest sequence (train: --seq's, infer: the context's) (default: the model's "
                "positions)"),
    # --- the output
    Option(name="output", flags=("-o", "--output"), type=str, group=Group.OUTPUT, commands=(PLOT,),
           default="vramwise.png", help="output file, .png or .svg (default vramwise.png)"),
    Option(name="json", flags=("--json",), group=Group.OUTPUT,
           commands=(INFER, TRAIN, VERIFY, MODELS, GPUS, FORMATS, FIT),
           help="print the estimate as JSON (schema vramwise/estimate v1)",
           help_in={VERIFY: "print the comparison as JSON (schema vramwise/verify v1)",
                    FIT: "print the answer as JSON (schema vramwise/fit v1; with advice when nothing fits)",
                    MODELS: "print the catalog as JSON", GPUS: "print the catalog as JSON (memory in bytes)",
                    FORMATS: "print the formats as JSON"}),
    Option(name="explain", flags=("--explain",), group=Group.OUTPUT, commands=(INFER, TRAIN),
           help="show each term's formula and source"),
    Option(name="emit", flags=("--emit",), type=str, choices=EMIT_FORMATS, group=Group.OUTPUT,
           commands=(INFER, TRAIN, FIT),
           help="print the runnable config or command of the setup (fit: of its answer) instead of the table: "
                + ", ".join(EMIT_FORMATS)),
    Option(name="units", flags=("--units",), type=str, choices=UNITS, group=Group.OUTPUT, default=DEFAULT_UNIT,
           commands=(INFER, TRAIN, VERIFY, FIT, GPUS),
           help=f"GiB = 2^30 bytes (default {DEFAULT_UNIT}) or GB = 10^9"),
    # issue 16: `vramwise web` (cli/web.py applies the defaults)
    Option(name="host", flags=("--host",), type=str, group=Group.QUESTION, commands=(WEB,),
           help="the address to listen on (default 127.0.0.1: this machine only)"),
    Option(name="port", flags=("--port",), type=int, group=Group.QUESTION, commands=(WEB,),
           help="the TCP port (default 8000; 0: any free port, printed)"),
    Option(name="open", flags=("--open",), group=Group.QUESTION, commands=(WEB,),
           help="open the page in the default browser"),
    Option(name="rate_limit", flags=("--rate-limit",), type=float, group=Group.QUESTION, commands=(WEB,),
           metavar="PER_SECOND", help="API requests a second from one address, with bursts of three seconds' worth "
                                      "(default 20; 0: no cap)"),
)  # fmt: skip


def _values(choices: Any) -> tuple[str, ...]:
    return tuple(str(c) for c in choices)


# The values a setup option takes, for a form's choice lists (the web API lists them): the setup checks them, not
# argparse (so the command line's messages stay the setup's), and its help text lists them from the same constants.
SUGGESTED: dict[str, tuple[str, ...]] = {
    "kv_dtype": _values(KV_DTYPES), "attention": _values(ATTENTION_IMPLS), "engine": _values(ENGINES),
    "precision": _values(PRECISIONS), "grad_dtype": _values(GRAD_DTYPES), "optimizer": _values(OPTIMIZERS),
    "optimizer_impl": _values(OPTIMIZER_IMPLS), "peft": _values(PEFT_METHODS), "recompute": _values(RECOMPUTE),
    "loss": _values(LOSS_IMPLS), "adapter_dtype": _values(ADAPTER_DTYPES), "mlp_impl": _values(KERNEL_IMPLS),
    "norm_impl": _values(KERNEL_IMPLS), "fsdp": _values(FSDP_MODES), "offload": _values(OFFLOAD),
    "framework": _values(FRAMEWORKS), "interconnect": _values(INTERCONNECTS), "loading": _values(LOADINGS),
    "cache_type_k": _values(CACHE_TYPES), "cache_type_v": _values(CACHE_TYPES), "flash_attn": _values(FLASH_ATTN),
    "split_mode": _values(SPLIT_MODES), "mode": _values(MODES), "seed": _values(SEEDS),
    "sglang_version": ("0.5", "0.4"), "vllm_version": VLLM_VERSIONS, "mxfp4_backend": MXFP4_BACKENDS,
    "vllm_sampler": VLLM_SAMPLERS,
    "device_map": ("auto", "balanced", "balanced_low_0", "sequential"),
    "zero_grad": _values(ZERO_GRADS),
}


def options_of(command: str) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if command in o.commands)


def setup_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The setup options given (not None), by name: what the application layer builds a setup from."""
    return {o.name: values[o.name] for o in OPTIONS if o.group is Group.SETUP and values.get(o.name) is not None}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vramwise: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        # argparse reports an option the command does not take from the top parser, which does not know the
        # command: name it, so the hint points at the help that lists the command's options
        values, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(values, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self.exit(2, f"vramwise: error: unrecognized arguments: {' '.join(extras)} (see '{prog} --help')\n")
        return values


class _Defaults:
    """``{infer.batch}`` and ``{train.seq}`` in help text: a setup's default, read only when a parser shows it
    (a fresh ``vramwise infer`` then never builds, or imports, the training setup)."""

    def __init__(self, of: Callable[[str], Any]) -> None:
        self._of = of

    def __getattr__(self, name: str) -> Any:
        return self._of(name)


_HELP_DEFAULTS: dict[str, Any] = {
    "infer": _Defaults(infer_default),
    "train": _Defaults(train_default),
    "vllm_version": VLLM_VERSION,
}


def help_text(option: Option, command: str) -> str:
    """The option's help in ``command``, its defaults filled in (what ``--help`` shows; the web API lists it)."""
    return option.help_in.get(command, option.help).format(**_HELP_DEFAULTS)


def _add(parser: argparse.ArgumentParser | Any, option: Option, command: str) -> None:
    kw: dict[str, Any] = {"help": help_text(option, command)}
    flags = option.flags_in(command)
    if not flags[0].startswith("-"):
        if command in option.optional_in:
            kw["nargs"] = "?"
        parser.add_argument(*flags, **kw)
        return
    kw["dest"] = option.name
    kw["default"] = option.default
    if option.type is None:
        kw["action"] = "store_true"
    else:
        kw["type"] = option.type
        for key in ("choices", "metavar"):
            if getattr(option, key) is not None:
                kw[key] = getattr(option, key)
    if command in option.required_in:
        kw["required"] = True
    parser.add_argument(*flags, **kw)


def build_parser(command: str | None = None, *, parser_class: type[argparse.ArgumentParser] = _Parser
                 ) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command`` that one's options only (the others keep their line in
    ``vramwise --help``): a command line builds what it runs. ``parser_class``: ``parse_options`` raises where the
    command line exits."""
    description = "GPU memory for transformers, per GPU, per term, with formulas."
    parser = parser_class(prog="vramwise", description=description, epilog=EXIT_STATUS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)
    for name, summary in COMMANDS.items():
        p = sub.add_parser(name, help=summary, epilog=EXIT_STATUS if name in (INFER, TRAIN, FIT) else None)
        if command not in (None, name):
            continue
        groups: dict[str, Any] = {}
        for option in options_of(name):
            target: Any = p
            if option.exclusive:
                target = groups.get(option.exclusive) or p.add_mutually_exclusive_group(required=True)
                groups[option.exclusive] = target
            _add(target, option, name)
    return parser


def parse_options(command: str, args: Mapping[str, Any], *, model_path: str | None = None) -> dict[str, Any]:
    """Options sent as data (the web API, the MCP server) parsed by this table's parser, as the command line parses
    them: ``args`` maps a long flag without its dashes (``gpu-util``, ``peft``) or ``model`` to a JSON value; the
    values by name come back, ready for ``app.documents``. Every refusal is one ``UsageError`` in argparse's words
    with ``field`` the option's name; a file path as MODEL, ``from``, ``emit``, ``json`` and ``help`` are refused.
    ``model_path``: a config.json the server itself wrote (a dropped file's text), the one path taken."""
    from vramwise.cli.json_args import parse  # the conversion is only loaded by the servers

    return parse(command, args, model_path=model_path)


def command_line(command: str, args: Mapping[str, Any], *, model: str | None = None) -> str:
    """The command line of options sent as data (``parse_options``' ``args``, after it took them), as a user types
    it, ending in ``--json``: the page shows it, the API sends it as ``X-Vramwise-Command``."""
    from vramwise.cli.json_args import command_line as line

    return line(command, args, model=model)

"""Which serving engine runs the model, and each engine's own flags, spelled as the engine spells them.

``Engine`` names the engine whose memory plan ``vramwise infer --engine`` follows (``engines/``). Each engine's
flags are a frozen group on ``InferSetup`` (``vllm``: ``VllmFlags``; the other engines append theirs): a flag an
engine does not read is refused when another engine is chosen (``foreign_flag``), never ignored. Flags the
engines share with transformers keep the setup's existing fields: vLLM's ``gpu_memory_utilization`` is
``InferSetup.gpu_utilization``, ``block_size`` is ``kv_block``, ``kv_cache_dtype`` is ``kv_dtype`` and
``tensor_parallel_size`` is ``tp``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from vramwise.workload.checks import boolean, non_negative, positive, version


class Engine(StrEnum):
    """hf: transformers ``generate`` (today's plain ``vramwise infer``); the others: their serving memory plans."""

    HF = "hf"
    VLLM = "vllm"
    SGLANG = "sglang"
    LLAMA_CPP = "llama.cpp"


ENGINES = tuple(Engine)

# The vLLM release whose source the vLLM plan and these defaults follow (engines/vllm.py cites its files).
VLLM_VERSION = "0.11.0"
# --vllm-version: which release's plan. "0.11" is VLLM_VERSION's (V1); "0.8" the V1 engine of 0.7.x-0.8.x (read at
# v0.7.3 and v0.8.5: every byte outside torch inside the budget, engines/vllm_releases.py); "0.9" (v0.9.2) and "0.10"
# (v0.10.0-v0.10.2) the V1 engine whose communicators count inside the budget, the context outside; "0.6" the V0
# engine of v0.6.5-v0.6.6 (memory_profiling: the CUDA context outside the budget); "0.6.4" the V0 engine of v0.6.4 (its
# non-torch memory counts everything outside torch, the CUDA context included). engines/vllm_v0.py cites the
# files of each.
VLLM_VERSIONS = ("0.11", "0.8", "0.6", "0.6.4", "0.9", "0.10")
# vLLM's MXFP4 MoE backends on CUDA (vllm/model_executor/layers/quantization/mxfp4.py Mxfp4Backend)
MXFP4_BACKENDS = ("marlin", "triton", "flashinfer")
# --vllm-sampler: the top-k/top-p path of vLLM 0.8.5's sampler warm-up (v0.8.5 vllm/v1/sample/ops/topk_topp_sampler.py
# TopKTopPSampler.__init__): torch's sort (forward_native: pip's vLLM, no FlashInfer) or FlashInfer's rejection
# sampling (forward_cuda: FlashInfer < 0.2.3 installed, as in vLLM's v0.8.5 docker image); engines/vllm_v085.py
VLLM_SAMPLERS = ("torch", "flashinfer")


@dataclass(frozen=True, kw_only=True)
class VllmFlags:
    """vLLM's engine arguments (``vllm serve``), at ``VLLM_VERSION``, by vLLM's own names.

    None means "vLLM's default": ``max_model_len`` is the model's own context (``ModelConfig.max_model_len``
    from the config's ``max_position_embeddings``); ``max_num_seqs`` and ``max_num_batched_tokens`` follow the
    hardware (vllm/engine/arg_utils.py ``EngineArgs.get_batch_defaults``, see ``vllm_batch_defaults``).
    """

    max_model_len: int | None = None  # --max-model-len
    max_num_seqs: int | None = None  # --max-num-seqs
    max_num_batched_tokens: int | None = None  # --max-num-batched-tokens (V1 always chunks prefill at it)
    enforce_eager: bool = False  # --enforce-eager: no CUDA graphs
    kv_cache_memory_bytes: int | None = None  # --kv-cache-memory-bytes: the KV pool's size, not the budget rule's
    pipeline_parallel_size: int = 1  # --pipeline-parallel-size (--pp)
    version: str = "0.11"  # --vllm-version: whose memory plan (VLLM_VERSIONS)
    # --mxfp4-backend: the MoE backend of an MXFP4 checkpoint (None: what pip's vLLM 0.11.0 picks without FlashInfer
    # or triton_kernels, Marlin; engines/vllm_mxfp4.py); vLLM 0.10-0.14 spell "marlin" as VLLM_MXFP4_USE_MARLIN=1
    mxfp4_backend: str | None = None
    # --vllm-sampler (VLLM_SAMPLERS; None: torch's path, pip's vLLM); --vllm-version 0.8 only (engines/vllm.py)
    sampler: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) is not None:
                positive(name, getattr(self, name))
        if self.kv_cache_memory_bytes is not None:
            non_negative("kv_cache_memory_bytes", self.kv_cache_memory_bytes)
        boolean("enforce_eager", self.enforce_eager)
        positive("pp", self.pipeline_parallel_size)
        _one_of("mxfp4_backend", self.mxfp4_backend, MXFP4_BACKENDS, "--mxfp4-backend {} is not one vLLM has")
        _one_of("vllm_sampler", self.sampler, VLLM_SAMPLERS,
                "--vllm-sampler {} is not a path vLLM 0.8.5's sampler has")
        version("vLLM", "vllm_version", self.version, VLLM_VERSIONS)


# vLLM's batch defaults for `vllm serve` (UsageContext.OPENAI_API_SERVER), vllm/engine/arg_utils.py
# EngineArgs.get_batch_defaults at v0.11.0: a GPU of at least 70 GiB whose name does not contain "a100" (the
# comment there cites vLLM PR #17885: a large budget cut A100 throughput) gets 8192 batched tokens and 1024
# sequences; any other GPU 2048 and 256.
_LARGE_GPU_BYTES = 70 * 2**30
LARGE_GPU_DEFAULTS = (8192, 1024)  # (max_num_batched_tokens, max_num_seqs)
OTHER_GPU_DEFAULTS = (2048, 256)


def _one_of(field: str, value: str | None, allowed: tuple[str, ...], message: str) -> None:
    """One line naming the flag and its values when ``value`` (None: not given) is not among ``allowed``."""
    if value is None or value in allowed:
        return
    from vramwise.errors import InvalidWorkloadError, shown

    choices = ", ".join(allowed)
    raise InvalidWorkloadError(f"{message.format(shown(value))}; allowed: {choices}", field=field, allowed=choices)


def vllm_batch_defaults(gpu_bytes: int, gpu_name: str) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that `vllm serve` picks on this GPU when neither is given."""
    large = gpu_bytes >= _LARGE_GPU_BYTES and "a100" not in gpu_name.lower()
    return LARGE_GPU_DEFAULTS if large else OTHER_GPU_DEFAULTS


# Each engine's flags group on InferSetup (attribute name): the flags an engine owns. Other engines append theirs.
ENGINE_GROUPS: dict[Engine, str] = {
    Engine.VLLM: "vllm", Engine.SGLANG: "sglang", Engine.HF: "hf", Engine.LLAMA_CPP: "llamacpp"
}


def foreign_flag(setup: object, engine: Engine) -> tuple[str, Engine] | None:
    """The first flag set away from its default in another engine's group: (its field name, that engine)."""
    for owner, group in ENGINE_GROUPS.items():
        if owner is engine:
            continue
        flags = getattr(setup, group)
        default = _default(type(flags))
        if flags == default:  # the common case, checked on every setup a sweep builds
            continue
        for f in dataclasses.fields(flags):
            if getattr(flags, f.name) != getattr(default, f.name):
                return f.name, owner
    return None


_DEFAULTS: dict[type, object] = {}


def _default(kind: type) -> object:
    """Each flags group's default instance, built once."""
    if kind not in _DEFAULTS:
        _DEFAULTS[kind] = kind()
    return _DEFAULTS[kind]

"""The inference workload: serving or generation on one GPU (or one tensor-parallel group)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from vramwise.errors import InapplicableOptionError
from vramwise.workload.checks import boolean, coerce, non_negative, pixels_text, positive, real
from vramwise.workload.engines import ENGINE_GROUPS, Engine, VllmFlags, foreign_flag
from vramwise.workload.flat import FlatNames
from vramwise.workload.hf_flags import HfFlags
from vramwise.workload.llamacpp_flags import LlamaCppFlags
from vramwise.workload.options import AttentionImpl, Interconnect, KvDtype, Mode
from vramwise.workload.overheads import Overheads
from vramwise.workload.sglang_flags import SglangFlags
from vramwise.workload.static import static_key


@dataclass(frozen=True, kw_only=True)
class InferSetup:
    """Serving or generation: ``batch`` sequences of ``context`` prompt tokens plus ``new_tokens`` generated.

    The process overheads are the group training has too (``overheads``); every other field is an inference
    knob read directly by the inference estimators. The CLI and schema v1 speak flat names
    (``cuda_context_mib``): ``from_flat``, ``to_flat`` and ``with_flat`` are the bridge.
    """

    batch: int = 1
    context: int = 2048  # prompt tokens per sequence (s)
    new_tokens: int = 0  # generated tokens per sequence (n)
    weight_format: str | None = None  # None: the checkpoint's own format
    kv_dtype: KvDtype = KvDtype.AUTO  # auto: the compute dtype
    attention: AttentionImpl = AttentionImpl.SDPA
    tp: int = 1
    kv_block: int = 16  # paged-KV block in tokens (vLLM's default); 1 for a contiguous cache
    prefill_chunk: int | None = None  # tokens per prefill forward (chunked prefill); None: the whole prompt
    all_logits: bool = False  # a plain forward returns logits for every position; generate() keeps the last
    gpu_utilization: float = 0.9  # fraction of the GPU an engine may use (vLLM gpu_memory_utilization)
    mode: Mode = Mode.ACCURATE
    overheads: Overheads = field(default_factory=Overheads)
    images: int = 0  # images per sequence (vision-language models): their tokens join the context
    image_size: str | None = None  # WIDTHxHEIGHT of each image in pixels; None: each family's stated default
    engine: Engine = Engine.HF  # whose memory plan: hf (transformers generate) or a serving engine (engines/)
    vllm: VllmFlags = field(default_factory=VllmFlags)  # vLLM's own flags; refused with another engine
    sglang: SglangFlags = field(default_factory=SglangFlags)  # SGLang's server arguments (engines/sglang.py)
    hf: HfFlags = field(default_factory=HfFlags)  # from_pretrained's device_map and max_memory (engines/hf.py)
    llamacpp: LlamaCppFlags = field(default_factory=LlamaCppFlags)  # llama.cpp's flags; refused elsewhere
    # how the node's GPUs talk, for a serving engine's NCCL communicators and custom all-reduce (engines/nccl_comm.py);
    # auto: the --gpu catalog entry's form factor
    interconnect: Interconnect = Interconnect.AUTO

    def __post_init__(self) -> None:
        positive("batch", self.batch)
        positive("context", self.context)
        non_negative("new_tokens", self.new_tokens)
        positive("tp", self.tp)
        positive("kv_block", self.kv_block)
        if self.prefill_chunk is not None:
            positive("prefill_chunk", self.prefill_chunk)
        coerce(self, "kv_dtype", KvDtype)
        coerce(self, "attention", AttentionImpl)
        coerce(self, "mode", Mode)
        boolean("all_logits", self.all_logits)
        real("gpu_utilization", self.gpu_utilization, 0, 1, low_open=True)
        non_negative("images", self.images)
        if self.image_size is not None:
            object.__setattr__(self, "image_size", pixels_text("image_size", self.image_size))
        coerce(self, "engine", Engine)
        coerce(self, "interconnect", Interconnect)
        if self.interconnect != Interconnect.AUTO and self.engine not in (Engine.VLLM, Engine.SGLANG):
            # only the serving engines' plans size NCCL communicators (engines/nccl_comm.py); transformers' generate
            # and llama.cpp run none, so the option would be ignored in silence
            raise InapplicableOptionError(
                f"interconnect sizes a serving engine's NCCL communicators, which engine {self.engine} does not "
                "create: add --engine vllm or sglang, or drop --interconnect",
                field="interconnect",
                allowed="--interconnect with --engine vllm or sglang",
            )
        foreign = foreign_flag(self, self.engine)
        if foreign:  # an engine flag with another engine would be ignored in silence
            attr, owner = foreign
            # the option's own name (vllm_sampler, pp), not the group's attribute (sampler, pipeline_parallel_size)
            name = next(flat for flat, where in _FLAT.names.items() if where == (ENGINE_GROUPS[owner], attr))
            raise InapplicableOptionError(
                f"{name} is a flag of {owner}, not of engine {self.engine}: add --engine {owner}", field=name
            )

    @property
    def tokens(self) -> int:
        """Tokens each sequence holds in the KV cache at the end: s + n."""
        return self.context + self.new_tokens

    @property
    def image_pixels(self) -> tuple[int, int] | None:
        """``image_size`` as (width, height), or None."""
        if self.image_size is None:
            return None
        width, height = self.image_size.split("x")
        return int(width), int(height)

    @functools.cached_property
    def static(self) -> tuple[Any, ...]:
        """Every field but the batch: the key of the inference plan a sweep over the batch shares."""
        return static_key(self, ("batch",))

    @classmethod
    def from_flat(cls, **flat: Any) -> InferSetup:
        """The setup from flat field names (the CLI's and the JSON ``setup`` object's)."""
        return cls(**_FLAT.build(flat))

    def to_flat(self) -> dict[str, Any]:
        """JSON schema v1's ``setup`` object: every flat name in order, enums as their strings."""
        return _FLAT.flatten(self)

    def with_flat(self, **flat: Any) -> InferSetup:
        """A copy with some fields changed, by their flat names; the overheads are shared unless named."""
        return dataclasses.replace(self, **_FLAT.changes(self, flat))


# Flat name -> (group, attribute), in schema v1's order ('' = a field of InferSetup itself).
_FLAT = FlatNames(
    owner="InferSetup",
    groups={"overheads": Overheads, "vllm": VllmFlags, "sglang": SglangFlags, "hf": HfFlags, "llamacpp": LlamaCppFlags},
    names={
        "batch": ("", "batch"),
        "context": ("", "context"),
        "new_tokens": ("", "new_tokens"),
        "weight_format": ("", "weight_format"),
        "kv_dtype": ("", "kv_dtype"),
        "attention": ("", "attention"),
        "tp": ("", "tp"),
        "kv_block": ("", "kv_block"),
        "prefill_chunk": ("", "prefill_chunk"),
        "all_logits": ("", "all_logits"),
        "cuda_context_mib": ("overheads", "cuda_context_mib"),
        "allocator_fraction": ("overheads", "allocator_fraction"),
        "gpu_utilization": ("", "gpu_utilization"),
        "mode": ("", "mode"),
        "images": ("", "images"),
        "image_size": ("", "image_size"),
        "engine": ("", "engine"),
        "max_model_len": ("vllm", "max_model_len"),
        "max_num_seqs": ("vllm", "max_num_seqs"),
        "max_num_batched_tokens": ("vllm", "max_num_batched_tokens"),
        "enforce_eager": ("vllm", "enforce_eager"),
        "kv_cache_memory_bytes": ("vllm", "kv_cache_memory_bytes"),
        "pp": ("vllm", "pipeline_parallel_size"),
        "mem_fraction_static": ("sglang", "mem_fraction_static"),
        "chunked_prefill_size": ("sglang", "chunked_prefill_size"),
        "cuda_graph_max_bs": ("sglang", "cuda_graph_max_bs"),
        "max_running_requests": ("sglang", "max_running_requests"),
        "max_total_tokens": ("sglang", "max_total_tokens"),
        "context_length": ("sglang", "context_length"),
        "page_size": ("sglang", "page_size"),
        "disable_cuda_graph": ("sglang", "disable_cuda_graph"),
        "max_prefill_tokens": ("sglang", "max_prefill_tokens"),
        "sglang_version": ("sglang", "version"),
        "device_map": ("hf", "device_map"),
        "max_memory": ("hf", "max_memory"),
        "ctx_size": ("llamacpp", "ctx_size"),
        "batch_size": ("llamacpp", "batch_size"),
        "ubatch_size": ("llamacpp", "ubatch_size"),
        "n_gpu_layers": ("llamacpp", "n_gpu_layers"),
        "cache_type_k": ("llamacpp", "cache_type_k"),
        "cache_type_v": ("llamacpp", "cache_type_v"),
        "flash_attn": ("llamacpp", "flash_attn"),
        "parallel": ("llamacpp", "parallel"),
        "tensor_split": ("llamacpp", "tensor_split"),
        "split_mode": ("llamacpp", "split_mode"),
        "no_mmap": ("llamacpp", "no_mmap"),
        "no_kv_offload": ("llamacpp", "no_kv_offload"),
        "kv_unified": ("llamacpp", "kv_unified"),
        "swa_full": ("llamacpp", "swa_full"),
        "embeddings": ("llamacpp", "embeddings"),
        "fit_gpu_layers": ("llamacpp", "fit_gpu_layers"),
        "ollama": ("llamacpp", "ollama"),
        "vllm_version": ("vllm", "version"),
        "mxfp4_backend": ("vllm", "mxfp4_backend"),
        "cuda_version": ("overheads", "cuda_version"),
        "compute_capability": ("overheads", "compute_capability"),
        "vllm_sampler": ("vllm", "sampler"),
        "interconnect": ("", "interconnect"),
    },
)

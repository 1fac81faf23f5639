"""The llama.cpp plan's numbers under the names llama.cpp's startup log prints them, for ``verify --log``.

A llama.cpp log (at 7049736b; older builds print the same buffers under ``llm_load_tensors`` /
``llama_new_context_with_model``) prints, per backend buffer (``CUDA0``, ``ROCm0``, ``CPU_Mapped``, ``CUDA_Host``):

- ``load_tensors:  CUDA0 model buffer size = X MiB`` and ``CPU_Mapped model buffer size`` (``CPU`` or
  ``CUDA_Host`` with ``--no-mmap``): ``gpu{i}/model``, ``host/model``;
- ``llama_kv_cache:  CUDA0 KV buffer size = X MiB`` (``CPU`` for layers on the CPU or ``--no-kv-offload``):
  ``gpu{i}/kv``, ``host/kv``; and ``size = X MiB (N cells, L layers, s/n seqs), K (f16): X MiB, V (f16): X MiB``:
  ``kv_cells``, ``kv_k``, ``kv_v``;
- ``llama_context:  CUDA_Host output buffer size``, ``CUDA0 compute buffer size``, ``CUDA_Host compute buffer
  size``: ``host/output``, ``gpu{i}/compute``, ``host/compute``.

Bytes, except ``kv_cells`` (cells over all streams). A log parser maps its backend names (CUDA0, ROCm0, Vulkan0) to
``gpu{i}`` in order.
"""

from __future__ import annotations

from vramwise.catalog.gpu_spec import Gpu
from vramwise.engines.llamacpp import kv_totals, per_gpu, plan
from vramwise.spec.model import ModelSpec
from vramwise.workload.infer import InferSetup
from vramwise.workload.llamacpp_flags import LlamaCppFlags


def llamacpp_figures(spec: ModelSpec, setup: InferSetup, flags: LlamaCppFlags, gpu_count: int = 1) -> dict[str, int]:
    """Every buffer figure the log prints, from the same plan the table shows."""
    # the budget plays no part in the buffers; a GPU the plan cannot overflow keeps fit_gpu_layers out of it
    roomy = Gpu(name="figures", label="figures", memory_bytes=2**62)
    whole = plan(spec, setup, flags, roomy, gpu_count)
    out: dict[str, int] = {}
    for i, est in sorted(per_gpu(spec, setup, flags, gpu_count).items()):
        out[f"gpu{i}/model"] = est.bytes_of("weights")
        out[f"gpu{i}/kv"] = sum(t.bytes for t in est.persistent if t.name.startswith("kv_cache/"))
        out[f"gpu{i}/compute"] = max((p.bytes for p in est.phases), default=0)
    host = {t.name: t.bytes for t in whole.estimate.host}
    out["host/model"] = host.get("host/weights", 0)
    out["host/kv"] = host.get("host/kv_cache", 0)
    out["host/compute"] = host.get("host/compute_buffer", 0)
    out["host/output"] = host.get("host/output_buffer", 0)
    out["kv_cells"] = whole.kv_tokens or 0
    out["kv_k"], out["kv_v"] = kv_totals(spec, setup, flags, gpu_count)
    return out

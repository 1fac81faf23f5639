"""The CUDA context of a PyTorch process, by GPU architecture and CUDA release: a table of published measurements.

What the context is: the driver's per-process state, the per-SM local-memory (stack) reservation, and the
kernel images of every loaded module (torch's, cuBLAS's, cuDNN's). It sits inside CUDA's total (cudaMemGetInfo's
free drops by it) and outside torch's allocator statistics.

Module loading decides most of it. Before CUDA 11.7 every kernel of every library was loaded when the library
was (over 1,000 MB, ptrblck in pytorch/pytorch#107667); from 11.7 the runtime can load modules lazily, PyTorch
sets ``CUDA_MODULE_LOADING=LAZY`` when the user has not (pytorch/pytorch#86509, torch 1.13), and CUDA 12.2 made
it the driver's default on Linux (NVIDIA CUDA Programming Guide, "Lazy Loading", change history). Lazy loading
needs a CUDA 11.7+ runtime and a driver that supports it (same guide, "Requirements"): a wheel older than 11.7
loads eagerly, whatever the driver. The driver is not an option here: a driver too old for the wheel's runtime
cannot run it at all, and every driver that runs an 11.7+ runtime (R515+) loads lazily.

Lookup (``context_row``): the row measured on the same architecture (compute capability) at the same CUDA
release; without one, the largest row of the same loading mode (eager or lazy) stands in, and the term says so.
Why the largest and not the nearest: the context grows with the SM count (the stack reservation is
``cudaLimitStackSize`` x resident threads per SM x SMs: 216 MB on an A100's 108 SMs, arcs-skku/EMDC_llvm#13) and
with the release's kernel images, neither of which a row of another GPU or release pins down; the largest
measured keeps a fit verdict on the safe side. Kernels a training step loads lazily after start-up (its GEMMs,
attention, optimizer) are not in these start-up figures: no published measurement separates them.

Each row's MiB is what the source printed less what the source's own tensor held in the caching allocator
(c10/cuda/CUDACachingAllocator.cpp ``get_allocation_size``: a request of at most 1 MiB takes a 2 MiB segment
(kSmallBuffer), one under 10 MiB a 20 MiB segment (kLargeBuffer), a larger one is rounded up to 2 MiB
(kRoundLarge)); the arithmetic is in each row's ``measured``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.estimate.term import Term
from vramwise.units import MIB
from vramwise.workload.overheads import Overheads, cuda_release

# The CUDA release assumed when --cuda-version is not given: that of the wheel the project's README pins
# (torch==2.13.0 from PyPI). PyPI's torch wheels moved their CUDA from 12.8 to 13.0 (pytorch/pytorch#177975, "Move
# cuda stable 12.8->13.0"); from torch 2.12 "CUDA 13 is now the default version installed for both x86_64 and ARM"
# and the cu128 builds were removed (the release manager in googlecolab/colabtools#5982). Any release from 11.7
# reads the lazy rows, so this choice moves only which row is exact.
DEFAULT_CUDA_VERSION = "13.0"
LAZY_FROM = (11, 7)  # NVIDIA CUDA Programming Guide, "Lazy Loading": runtime version requirement


@dataclass(frozen=True, kw_only=True)
class ContextRow:
    """One published measurement of a PyTorch process's CUDA context."""

    compute_capability: str | None  # None: the source does not name the GPU
    gpu: str
    cuda: str  # the torch wheel's CUDA runtime
    lazy: bool  # modules loaded lazily (CUDA_MODULE_LOADING=LAZY)
    bytes: int
    measured: str  # what was run and the arithmetic from the printed figure to the context
    source: str  # URL


ROWS: tuple[ContextRow, ...] = (
    ContextRow(
        compute_capability="7.0", gpu="Tesla V100 (p3.8xlarge)", cuda="10.0", lazy=False, bytes=400 * MIB,
        measured="torch 1.1, a=torch.cuda.FloatTensor(1): 'around 300MB to 400MB' per process; the upper end",
        source="https://github.com/pytorch/pytorch/issues/20532",
    ),
    ContextRow(
        compute_capability="6.1", gpu="GeForce GTX 1080", cuda="10.1", lazy=False, bytes=(721 - 2) * MIB,
        measured="torch 1.8.2+cu101, torch.Tensor(1).cuda(): nvidia-smi 721 MiB less its 2 MiB small segment",
        source="https://github.com/pytorch/pytorch/issues/55277",
    ),
    ContextRow(
        compute_capability="7.5", gpu="GeForce RTX 2080 Ti", cuda="10.1", lazy=False, bytes=(1035 - 158) * MIB,
        measured="torch 1.6.0+cu101, randn(64,16,200,200) fp32 on the GPU: nvidia-smi 1035 MiB less the tensor's "
        "163,840,000 B rounded to 79 x 2 MiB = 158 MiB",
        source="https://github.com/pytorch/pytorch/issues/49877",
    ),
    ContextRow(
        compute_capability="8.6", gpu="GeForce RTX 3090", cuda="11.0", lazy=False, bytes=(1644 - 158) * MIB,
        measured="torch 1.7.1+cu110, the same tensor: nvidia-smi 1644 MiB less its 158 MiB",
        source="https://github.com/pytorch/pytorch/issues/49877",
    ),
    ContextRow(
        compute_capability=None, gpu="not named", cuda="11.0", lazy=False, bytes=1105 * MIB,
        measured="torch 1.7.1+cu110, ones(4000, 4000) fp32 then del and empty_cache: nvidia-smi 1105 MiB (1167 MiB "
        "with the tensor: 1105 + its 64,000,000 B rounded to 31 x 2 MiB = 62 MiB)",
        source="https://github.com/pytorch/pytorch/issues/60150",
    ),
    ContextRow(
        compute_capability="8.6", gpu="GeForce RTX 3090", cuda="11.1", lazy=False, bytes=(1687 - 2) * MIB,
        measured="torch 1.8.2+cu111, torch.Tensor(1).cuda(): nvidia-smi 1687 MiB less its 2 MiB small segment",
        source="https://github.com/pytorch/pytorch/issues/55277",
    ),
    ContextRow(
        compute_capability="7.0", gpu="Tesla V100-SXM2 16GB", cuda="11.2", lazy=False, bytes=(1343 - 2) * MIB,
        measured="torch.ones((1, 1)).to('cuda') then NVML used memory (print_gpu_utilization: used // 1024**2, "
        "printed 'MB'): 1343 MiB less the tensor's 2 MiB small segment; driver 460.91.03, nvidia-smi's CUDA 11.2 "
        "(the wheel's runtime is not stated: an eager-loading 11.x one, January 2022)",
        source="https://github.com/huggingface/transformers/blob/249ef8164cfbd8e288c2f6d8395539b9e90e8300/docs/"
        "source/en/model_memory_anatomy.md",
    ),
    ContextRow(
        compute_capability=None, gpu="not named", cuda="11.5", lazy=False, bytes=543 * MIB,
        measured="torch 1.11 (NGC 21.11), a second rank's stray context on GPU 0, no tensors: nvidia-smi 543 MiB",
        source="https://github.com/pytorch/pytorch/issues/81257",
    ),
    ContextRow(
        compute_capability=None, gpu="not named", cuda="11.7", lazy=True, bytes=287_047_680 - 20 * MIB,
        measured="torch 1.13, randn(20,16,50,100).cuda(), total - free = 287,047,680 B less the 6,400,000 B "
        "tensor's 20 MiB segment (666,632,192 B with CUDA_MODULE_LOADING=DEFAULT, then eager)",
        source="https://github.com/pytorch/pytorch/pull/86509",
    ),
    ContextRow(
        compute_capability="8.6", gpu="GeForce RTX 3090", cuda="12.8", lazy=True, bytes=256 * MIB,
        measured="torch 2.7.1+cu128, driver 610.43: a context and no tensor, nvidia-smi 256 MiB",
        source="https://github.com/invoke-ai/InvokeAI/issues/9413",
    ),
    ContextRow(
        compute_capability="8.9", gpu="RTX 6000 Ada", cuda="13.0", lazy=True, bytes=426 * MIB,
        measured="torch 2.10.0+cu130, torch.cuda.mem_get_info(0) only (no tensor): nvidia-smi 426 MiB",
        source="https://github.com/unslothai/unsloth-zoo/pull/1053",
    ),
)


@dataclass(frozen=True, kw_only=True)
class ContextLookup:
    """The row that sizes a context, and why that row (exact, or the stand-in and what it stands in for)."""

    row: ContextRow
    exact: bool
    why: str


def _release(text: str) -> tuple[int, int]:
    return cuda_release(text)


def context_row(compute_capability: str | None, cuda_version: str | None) -> ContextLookup:
    """The table's row for a GPU of ``compute_capability`` (None: not known) running CUDA ``cuda_version``."""
    cuda = cuda_version or DEFAULT_CUDA_VERSION
    release = _release(cuda)
    lazy = release >= LAZY_FROM
    mode = "lazy" if lazy else "eager"
    for row in ROWS:
        if row.lazy == lazy and row.compute_capability == compute_capability and _release(row.cuda) == release:
            return ContextLookup(row=row, exact=True, why=f"measured on {row.gpu}, CUDA {row.cuda}")
    largest = max((r for r in ROWS if r.lazy == lazy), key=lambda r: r.bytes)
    arch = f"sm_{compute_capability.replace('.', '')}" if compute_capability else "an unknown GPU"
    return ContextLookup(
        row=largest,
        exact=False,
        why=f"no measurement of {arch} at CUDA {cuda}; the largest {mode}-loading row stands in "
        f"({largest.gpu}, CUDA {largest.cuda})",
    )


def context_term(overheads: Overheads) -> Term:
    """``overhead/cuda_context``: the user's ``cuda_context_mib``, else the table's row for the GPU and CUDA."""
    if overheads.cuda_context_mib is not None:
        mib = overheads.cuda_context_mib
        return Term(
            name="overhead/cuda_context",
            bytes=mib * MIB,
            formula=f"{mib} MiB (--cuda-context)",
            source="given",
        )
    found = context_row(overheads.compute_capability, overheads.cuda_version)
    cuda = overheads.cuda_version or f"{DEFAULT_CUDA_VERSION} (default)"
    loading = "lazy module loading" if found.row.lazy else "eager module loading (CUDA < 11.7)"
    return Term(
        name="overhead/cuda_context",
        bytes=found.row.bytes,
        formula=f"{found.row.bytes / MIB:,.2f} MiB: CUDA {cuda}, {loading}; {found.why} (--cuda-context to override)",
        source=f"{found.row.measured}: {found.row.source} (estimate/cuda_context.py)",
    )

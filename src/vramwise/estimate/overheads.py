"""Memory outside PyTorch tensors: the CUDA context and the caching allocator's reserve.

Neither can be traced without a GPU. The defaults are stated assumptions, overridable per run:
- CUDA context: a PyTorch process's comes from the table in estimate/cuda_context.py (by GPU architecture and
  CUDA release). ``cuda_context_term`` keeps the flat 512 MiB for the one process that is not PyTorch's
  (llama.cpp: its ggml kernels, not torch's, fill the context; no published measurement to tabulate).
  The context is spent inside the total CUDA reports (cudaMemGetInfo's free drops by it), and that total is
  already nvidia-smi's less the driver's own reserve (NVML nvmlMemory_v2_t.reserved). The GPU budgets are that
  CUDA-visible total (catalog/gpu_spec.py), so the reserve is not in this term and the context is not in the
  budget: neither is counted twice. (Until issue 12 the budgets were nvidia-smi's totals, and the catalog's
  comment let this term stand for the gap too; it never did: 512 MiB is the context, measured or assumed.)
- Allocator reserve (reserved − allocated): 3% of tensor bytes for the block rounding and fragmentation (published
  runs show 3-10%; vLLM pre-allocates its KV cache in one tensor, so serving sits near the low end). Training with
  the replay (workload/overheads.py AllocatorSettings: opt-in, and why) takes bytes instead: its step's
  allocations replayed through the caching-allocator model at the workload's own shapes
  (estimate/allocator_model.py, estimate/train/allocation.py; ``modelled_allocator``). ``--allocator-fraction``
  overrides either.
"""

from __future__ import annotations

from vramwise.estimate.term import Phase, PhaseKind, Term
from vramwise.units import MIB

DEFAULT_CUDA_CONTEXT_MIB = 512
DEFAULT_ALLOCATOR_FRACTION = 0.03


def cuda_context_term(mib: int | None) -> Term:
    """A flat context (llama.cpp's): ``mib``, else DEFAULT_CUDA_CONTEXT_MIB. PyTorch processes read
    ``estimate/cuda_context.context_term`` instead."""
    mib = DEFAULT_CUDA_CONTEXT_MIB if mib is None else mib
    return Term(
        name="overhead/cuda_context",
        bytes=mib * MIB,
        formula=f"{mib} MiB (--cuda-context to override)",
        source="assumed: a CUDA context without PyTorch (overheads.py docstring)",
    )


def allocator_bytes(tensors: int, fraction: float | None) -> int:
    return int(tensors * (DEFAULT_ALLOCATOR_FRACTION if fraction is None else fraction))


def is_tensor(name: str) -> bool:
    """Whether the term called ``name`` is tensors, which the allocator reserve grows with (not an overhead)."""
    return not name.startswith("overhead/")


def tensor_bytes(terms: tuple[Term, ...]) -> int:
    """Bytes of tensors among ``terms``: everything but the overheads themselves."""
    return sum(t.bytes for t in terms if is_tensor(t.name))


def with_allocator(persistent_tensors: int, kind: PhaseKind, transient: list[Term], fraction: float | None) -> Phase:
    """A phase whose transients include the allocator reserve on everything live then (``persistent_tensors``
    is ``tensor_bytes`` of the persistent terms, computed once per estimate)."""
    tensors = persistent_tensors + sum(t.bytes for t in transient)
    fraction = DEFAULT_ALLOCATOR_FRACTION if fraction is None else fraction
    reserve = Term(
        name="overhead/allocator",
        bytes=allocator_bytes(tensors, fraction),
        formula=f"{fraction:g} x tensor bytes {tensors:,} (--allocator-fraction to override)",
        source="assumed: PyTorch caching allocator reserve and fragmentation (reserved − allocated)",
    )
    return Phase(kind=kind, transient=(*transient, reserve))


def modelled_allocator(kind: PhaseKind, transient: list[Term], reserve: int, formula: str) -> Phase:
    """A phase whose transients include the reserve the caching-allocator model replayed for the step, in bytes
    (``formula`` states the replay: estimate/train/allocation.py)."""
    term = Term(
        name="overhead/allocator",
        bytes=reserve,
        formula=formula,
        source="PyTorch caching allocator replayed: pools, rounding, best fit, splitting (estimate/allocator_model.py)",
    )
    return Phase(kind=kind, transient=(*transient, term))

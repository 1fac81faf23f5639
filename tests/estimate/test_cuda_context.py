"""The CUDA context table (estimate/cuda_context.py): each row's arithmetic from the figure its source printed, and
the lookup rule (the same architecture at the same CUDA release, else the largest row of the same loading mode).

Segments of the caching allocator that the sources' own tensors took (c10/cuda/CUDACachingAllocator.cpp
``get_allocation_size``): at most 1 MiB -> a 2 MiB segment; under 10 MiB -> 20 MiB; larger -> rounded up to 2 MiB.
"""

from __future__ import annotations

import pytest

from vramwise.app import TrainRequest, train
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.cuda_context import DEFAULT_CUDA_VERSION, ROWS, context_row, context_term
from vramwise.estimate.overheads import cuda_context_term
from vramwise.units import MIB
from vramwise.workload import Overheads, TrainSetup

# randn(64, 16, 200, 200) fp32 = 163,840,000 B -> ceil(163,840,000 / 2 MiB) = 79 segments of 2 MiB = 158 MiB
BIG_TENSOR_SEGMENT = -(-64 * 16 * 200 * 200 * 4 // (2 * MIB)) * 2 * MIB


def test_the_segment_arithmetic() -> None:
    assert 64 * 16 * 200 * 200 * 4 == 163_840_000 and BIG_TENSOR_SEGMENT == 158 * MIB
    assert 1 < 20 * 16 * 50 * 100 * 4 / MIB < 10  # pytorch#86509's tensor: 6,400,000 B, a 20 MiB segment


@pytest.mark.parametrize(
    ("cc", "cuda", "expected"),
    [
        ("8.6", "12.8", 256 * MIB),  # InvokeAI#9413: a bare context, no tensor
        ("8.9", "13.0", 426 * MIB),  # unsloth-zoo#1053: mem_get_info only
        ("8.6", "11.1", 1687 * MIB - 2 * MIB),  # pytorch#55277: one 4-byte tensor, a 2 MiB segment
        ("6.1", "10.1", 721 * MIB - 2 * MIB),  # pytorch#55277
        ("7.5", "10.1", 1035 * MIB - BIG_TENSOR_SEGMENT),  # pytorch#49877
        ("8.6", "11.0", 1644 * MIB - BIG_TENSOR_SEGMENT),  # pytorch#49877
        ("7.0", "10.0", 400 * MIB),  # pytorch#20532: "around 300MB to 400MB", the upper end
        # transformers docs model_memory_anatomy.md (249ef81): torch.ones((1, 1)) on a V100-SXM2, NVML 1343 MiB
        ("7.0", "11.2", 1343 * MIB - 2 * MIB),
    ],
)
def test_a_measured_cell_reads_its_row(cc: str, cuda: str, expected: int) -> None:
    found = context_row(cc, cuda)
    assert found.exact and found.row.bytes == expected


def test_the_unnamed_gpus_rows() -> None:
    freed = next(r for r in ROWS if r.source.endswith("/issues/60150"))
    # the same process before the free: the context plus the tensor's segments, as printed
    assert freed.bytes + -(-4000 * 4000 * 4 // (2 * MIB)) * 2 * MIB == 1167 * MIB
    lazy = next(r for r in ROWS if r.source.endswith("/pull/86509"))
    assert lazy.bytes == 287_047_680 - 20 * MIB == 266_076_160
    assert lazy.lazy and lazy.compute_capability is None


@pytest.mark.parametrize(
    ("cc", "cuda", "stand_in"),
    [
        ("9.0", "12.8", 426 * MIB),  # H100: no measurement; the largest lazy row (RTX 6000 Ada, CUDA 13.0)
        ("8.0", "12.4", 426 * MIB),  # A100
        (None, None, 426 * MIB),  # no --gpu, the default CUDA (13.0)
        ("8.6", None, 426 * MIB),  # an RTX 3090 at the default CUDA: its own row is at 12.8
        ("7.0", "11.3", 1685 * MIB),  # V100 on an older CUDA: the largest eager row (RTX 3090, CUDA 11.1)
        ("8.6", "12.4", 426 * MIB),  # a measured GPU at another release: not its own row
    ],
)
def test_a_cell_without_a_measurement_takes_the_largest_row_of_its_loading_mode(
    cc: str | None, cuda: str | None, stand_in: int
) -> None:
    found = context_row(cc, cuda)
    assert not found.exact and found.row.bytes == stand_in
    assert "stands in" in found.why and (cc is None or f"sm_{cc.replace('.', '')}" in found.why)


def test_lazy_loading_starts_at_cuda_11_7() -> None:
    # NVIDIA CUDA Programming Guide, Lazy Loading: runtime 11.7 or newer
    assert not context_row(None, "11.6").row.lazy
    assert context_row(None, "11.7").row.lazy
    assert DEFAULT_CUDA_VERSION == "13.0" and context_row(None, None).row.lazy  # torch 2.13's PyPI wheel


def test_the_term_names_its_row_and_source() -> None:
    term = context_term(Overheads(compute_capability="8.6", cuda_version="12.8"))
    assert term.name == "overhead/cuda_context" and term.bytes == 256 * MIB
    assert "invoke-ai/InvokeAI/issues/9413" in term.source and "measured on GeForce RTX 3090" in term.formula


def test_the_override_wins() -> None:
    term = context_term(Overheads(cuda_context_mib=300, compute_capability="9.0", cuda_version="11.0"))
    assert term.bytes == 300 * MIB and term.source == "given"


def test_llama_cpp_keeps_its_flat_context() -> None:
    assert cuda_context_term(None).bytes == 512 * MIB  # not a PyTorch process: no row applies


@pytest.mark.parametrize("bad", ["9.2", "14.0", "12", "twelve", "12.8.1"])
def test_a_cuda_release_outside_the_table_is_refused(bad: str) -> None:
    with pytest.raises(InvalidWorkloadError, match="cuda_version") as err:
        TrainSetup.from_flat(cuda_version=bad)
    assert err.value.field == "cuda_version"


def test_gpu_gives_the_architecture() -> None:
    r = train(TrainRequest(model="llama-3-8b", gpu="h100", options={"peft": "lora"}))
    assert r.setup.overheads.compute_capability == "9.0"
    r = train(TrainRequest(model="llama-3-8b", gpu="rtx-3090", options={"peft": "lora", "cuda_version": "12.8"}))
    assert r.stages[0].estimate.term("overhead/cuda_context").bytes == 256 * MIB


def test_the_serving_engines_read_the_table() -> None:
    from vramwise.app import InferRequest, infer

    r = infer(InferRequest(model="llama-3-8b", gpu="rtx-3090", options={"cuda_version": "12.8"}, serve=True))
    assert r.estimate.term("overhead/cuda_context").bytes == 256 * MIB


def test_llama_cpp_refuses_a_cuda_version_rather_than_ignoring_it() -> None:
    from vramwise.app import InferRequest, infer
    from vramwise.errors import InapplicableOptionError

    with pytest.raises(InapplicableOptionError, match="--cuda-version"):
        infer(InferRequest(model="llama-3-8b", gpu="rtx-4090", options={"engine": "llama.cpp", "cuda_version": "12.4"}))

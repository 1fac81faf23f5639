"""Process overheads shared by inference and training setups."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vramwise.errors import InvalidWorkloadError
from vramwise.workload.checks import boolean, integer, non_negative, real, show

# The CUDA releases the context table speaks of (estimate/cuda_context.py): 10.0 (the oldest a published
# measurement used) to 13.x (the newest torch wheels'); anything else is refused rather than guessed.
CUDA_VERSIONS = "a CUDA release MAJOR.MINOR from 10.0 to 13.9 (e.g. 12.8), the torch wheel's (torch.version.cuda)"


@dataclass(frozen=True, kw_only=True)
class Overheads:
    """What every GPU process holds besides the model: the CUDA context and the allocator's reserve."""

    cuda_context_mib: int | None = None  # None: the table in estimate/cuda_context.py
    allocator_fraction: float | None = None  # None: the default in estimate/overheads.py
    # the CUDA runtime the process runs (torch.version.cuda); None: the default in estimate/cuda_context.py
    cuda_version: str | None = None
    # the GPU's compute capability ("9.0"), filled from the --gpu catalog entry; None: not known
    compute_capability: str | None = None

    def __post_init__(self) -> None:
        if self.cuda_context_mib is not None:
            non_negative("cuda_context_mib", self.cuda_context_mib)
        if self.allocator_fraction is not None:
            real("allocator_fraction", self.allocator_fraction, 0, 1, high_open=True)
        if self.cuda_version is not None:
            cuda_release(self.cuda_version)
        if self.compute_capability is not None and not re.fullmatch(r"\d{1,2}\.\d", str(self.compute_capability)):
            raise InvalidWorkloadError(
                f"compute_capability must be MAJOR.MINOR such as 9.0, got {show(self.compute_capability)}",
                field="compute_capability",
                allowed="MAJOR.MINOR (https://developer.nvidia.com/cuda-gpus)",
            )


def cuda_release(text: object) -> tuple[int, int]:
    """(major, minor) of a CUDA release as ``--cuda-version`` spells it; refused in one line otherwise."""
    m = re.fullmatch(r"(\d{1,2})\.(\d{1,2})", text) if isinstance(text, str) else None
    if m is None or not (10, 0) <= (int(m.group(1)), int(m.group(2))) <= (13, 9):
        raise InvalidWorkloadError(
            f"cuda_version {show(text)} is not a CUDA release the context table covers; allowed: {CUDA_VERSIONS}",
            field="cuda_version",
            allowed=CUDA_VERSIONS,
        )
    return int(m.group(1)), int(m.group(2))


# Neither a CUDA context nor an allocator reserve: what a traced step measures (verify, the accuracy bench).
NO_OVERHEADS = Overheads(cuda_context_mib=0, allocator_fraction=0.0)


# c10/cuda/CUDAAllocatorConfig.cpp parseMaxSplitSize: "max_split_size_mb too small, must be > kLargeBuffer / MiB"
# (kLargeBuffer: 20 MiB, CUDACachingAllocator.cpp); the top is checks.py's 1 TiB bound for memory in MiB
MAX_SPLIT_SIZE_MB_RANGE = (21, 1 << 20)


@dataclass(frozen=True, kw_only=True)
class AllocatorSettings:
    """PYTORCH_CUDA_ALLOC_CONF as the training step runs it: what the caching-allocator model replays with."""

    expandable_segments: bool = False  # expandable_segments:True
    max_split_size_mb: int | None = None  # max_split_size_mb:N; None: unlimited (PyTorch's default)
    # The reserve from the replay instead of the flat fraction, in bytes at the workload's own shapes (replayed at
    # one of its sequences, times the micro-batch: estimate/train/allocation.py). Off by default, for three reasons
    # measured when written: the replayed reserve swings with the shapes (Llama 3.2 3B full fine-tuning at 768
    # tokens: 339, 2,565, 5,187, 3,301 MiB at micro-batches 1-4, one logits-sized block finding a free block or
    # not), so the peak is not monotone in the sequence (Llama 3.2 3B: it falls in 16 of 60 steps of 128 tokens
    # from 512 to 8,192, by up to 1.7 GiB), which fit's bisections assume; it costs the layout search one replay
    # per layout (about 1,260 for bench/speed.py's search: several seconds against its 1 s target); and on the
    # published runs (bench/training.py) it moves the median little (5.2% against the flat 5.3%) while spreading
    # the reserved peaks from -6% to +8%. On whenever an allocator setting is given, which a flat fraction ignores.
    replay: bool = False
    # A run whose batches differ in length (a dataset not packed to one length): the shortest sequence, up to the
    # workload's seq. The replay then runs steps of both lengths in turn at the workload's own micro-batch
    # (estimate/train/allocation.py ``StepTensors.varied_reserve``): blocks cached by one length are split by the
    # other's tensors, which two identical steps never show. None: every step at seq. What --range's bound runs
    # (app/ranges.py); off in the estimate, which keeps one sequence's replay.
    replay_min_seq: int | None = None

    @property
    def replayed(self) -> bool:
        """Whether the estimate's reserve comes from the caching-allocator replay."""
        return (
            self.replay
            or self.expandable_segments
            or self.max_split_size_mb is not None
            or self.replay_min_seq is not None
        )

    def __post_init__(self) -> None:
        boolean("expandable_segments", self.expandable_segments)
        boolean("replay", self.replay)
        if self.replay_min_seq is not None:
            integer("seq", self.replay_min_seq, 1, name="replay_min_seq")
        n = self.max_split_size_mb
        low, high = MAX_SPLIT_SIZE_MB_RANGE
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not low <= n <= high):
            raise InvalidWorkloadError(
                f"max_split_size_mb must be an integer above 20 (PyTorch refuses kLargeBuffer's 20 MiB or less), "
                f"got {show(n)}",
                field="max_split_size_mb",
                allowed=f"an integer from {low} to {high:,}",
            )

"""Optimizer states per trainable tensor, and the step's transient buffers.

States (elements per parameter, in the recipe's state dtype unless 8-bit):
  sgd 0; sgd-momentum 1; adam/adamw 2 (exp_avg, exp_avg_sq); lion 1 (exp_avg);
  adafactor (torch.optim.Adafactor, no first moment): a matrix keeps a row and a column vector, a vector
  keeps a full variance; adamw-8bit (bitsandbytes): 2 x 1 byte plus one fp32 absmax per 256-element
  block and state, for tensors of at least 4096 elements (smaller ones keep fp32 states); paged variants hold
  the same bytes in unified memory that the driver may evict to host RAM; lomo: no states and no stored
  gradients (the update is fused into backward, one gradient alive at a time).
Transients at the step (torch.optim implementations): foreach Adam/AdamW makes one state-sized copy of
every trainable tensor (``_foreach_sqrt(exp_avg_sq)``, measured: +4 B/param in fp32), and so does foreach
Adafactor (traced); the for-loop implementations two copies of the largest tensor (Adafactor one); fused
none. SGD updates in place. Lion's reference
implementation clones the momentum per tensor (two copies of the largest).
"""

from __future__ import annotations

from dataclasses import dataclass

BNB_BLOCK = 256  # bitsandbytes blockwise quantization of optimizer states
BNB_MIN_SIZE = 4096  # bitsandbytes min_8bit_size: smaller tensors keep 32-bit states
# bitsandbytes 0.44.0 (git 9841697, Sept 2024), bitsandbytes/optim/optimizer.py Optimizer8bit.get_state_buffer: a
# paged optimizer allocates state1 and state2 of every parameter of at least 1e5 elements with F.get_paged
# (functional.py get_paged: lib.cget_managed_ptr, csrc/pythonInterface.cpp cudaMallocManaged(ptr, bytes,
# cudaMemAttachHost)), registered with GlobalPageManager; smaller parameters' states are torch.zeros_like on the
# device, and so are the 8-bit states' absmax blocks (Optimizer2State.init_state). Unified memory is outside
# PyTorch's caching allocator: torch.cuda.memory_allocated, active and reserved never count it, and the driver
# migrates its pages to host RAM when the GPU runs out, so it never makes the step run out of memory.
BNB_PAGED_MIN = 100_000


@dataclass(frozen=True, kw_only=True)
class Tensor:
    """One trainable tensor shape: ``rows x cols`` (cols 1 for a vector), repeated ``copies`` times."""

    rows: int
    cols: int
    copies: float  # tensors of this shape on this GPU (fractional when pipeline stages split a group)
    expert: bool = False  # a routed expert's tensor: its data-parallel replicas are dp / ep, not dp
    fp32: bool = False  # kept in fp32 by the framework: its gradient and states follow the parameter's dtype

    @property
    def numel(self) -> int:
        return self.rows * self.cols

    def width(self, nominal: int) -> int:
        return 4 if self.fp32 and nominal < 4 else nominal


def tensor_bytes(tensors: list[Tensor], nominal: int) -> int:
    """Bytes of ``tensors`` at ``nominal`` bytes per element (fp32-kept tensors at 4)."""
    return round(sum(t.numel * t.copies * t.width(nominal) for t in tensors))


def fp32_note(tensors: list[Tensor], nominal: int) -> str:
    kept = round(sum(t.numel * t.copies for t in tensors if t.width(nominal) != nominal))
    return f" (of which {kept:,} kept in fp32 at 4 B)" if kept else ""


def state_bytes(optimizer: str, tensors: list[Tensor], state: int) -> tuple[int, str]:
    """Bytes of optimizer states for ``tensors`` with ``state`` bytes per element, and the formula."""
    n = round(sum(t.numel * t.copies for t in tensors))
    base = optimizer.removeprefix("paged-")
    if optimizer == "paged-adamw":
        state = 4  # bitsandbytes Optimizer2State.init_state: optim_bits 32 -> torch.float32, whatever the params
    if base in ("sgd", "lomo"):
        return 0, f"{optimizer}: no states"
    kept = fp32_note(tensors, state)
    if base in ("sgd-momentum", "lion"):
        return tensor_bytes(tensors, state), f"1 state x {n:,} x {state} B{kept}"
    if base in ("adam", "adamw"):
        return 2 * tensor_bytes(tensors, state), f"2 states x {n:,} x {state} B{kept}"
    if base == "adafactor":
        total = sum((t.rows + t.cols if t.cols > 1 else t.rows) * t.copies * t.width(state) for t in tensors)
        n = round(sum((t.rows + t.cols if t.cols > 1 else t.rows) * t.copies for t in tensors))
        return round(total), f"factored: rows + cols per matrix, full per vector = {n:,} x {state} B{kept}"
    if base == "adamw-8bit":
        big = round(sum(t.numel * t.copies for t in tensors if t.numel >= BNB_MIN_SIZE))
        blocks = round(sum(-(-t.numel // BNB_BLOCK) * t.copies for t in tensors if t.numel >= BNB_MIN_SIZE))
        small = n - big
        total = 2 * big + 2 * 4 * blocks + 2 * 4 * small
        return total, (
            f"2 x ({big:,} x 1 B + {blocks:,} blocks x 4 B absmax) + 2 x {small:,} small-tensor elements x 4 B"
        )
    raise AssertionError(optimizer)  # TrainSetup validated the name


def paged_state_bytes(optimizer: str, tensors: list[Tensor]) -> tuple[int, str]:
    """Bytes of ``state_bytes`` that a bitsandbytes paged optimizer holds in unified memory (cudaMallocManaged),
    and the formula: both states of every tensor of at least ``BNB_PAGED_MIN`` elements (0 if not paged)."""
    if not optimizer.startswith("paged-"):
        return 0, ""
    big = [t for t in tensors if t.numel >= BNB_PAGED_MIN]
    n = round(sum(t.numel * t.copies for t in big))
    width = 1 if optimizer.endswith("8bit") else 4  # uint8 codes for 8-bit, else float32 (optim_bits 32)
    return 2 * n * width, f"2 states x {n:,} elements of tensors >= {BNB_PAGED_MIN:,} x {width} B"


def step_transient(optimizer: str, impl: str, tensors: list[Tensor], state: int) -> tuple[int, str]:
    """Extra bytes the optimizer step allocates on top of params, grads and states."""
    if not tensors:
        return 0, "nothing to update"
    if optimizer.startswith("paged-"):  # bitsandbytes' update kernels write params and states in place
        return 0, f"{optimizer}: bitsandbytes kernel, in place"
    base = optimizer.removeprefix("paged-")
    largest = max(t.numel for t in tensors)
    if base in ("adam", "adamw"):
        if impl == "fused":
            return 0, "fused kernel: in place"
        if impl == "foreach":
            n = round(sum(t.numel * t.copies for t in tensors))
            kept = fp32_note(tensors, state)
            return tensor_bytes(tensors, state), f"foreach: sqrt(exp_avg_sq) copy of {n:,} x {state} B{kept}"
        return 2 * largest * state, f"for-loop: 2 x largest tensor {largest:,} x {state} B"
    if base == "lion":
        return 2 * largest * state, f"per tensor: 2 x largest tensor {largest:,} x {state} B"
    if base == "adafactor":
        if impl == "foreach":
            n = round(sum(t.numel * t.copies for t in tensors))
            kept = fp32_note(tensors, state)
            return tensor_bytes(tensors, state), f"foreach: one update-sized copy of {n:,} x {state} B{kept}"
        return largest * state, f"per tensor: the update of the largest tensor {largest:,} x {state} B"
    return 0, f"{optimizer}: updates in place"

"""Optimizer states per trainable tensor, and the step's transient buffers.

States (elements per parameter, in the recipe's state dtype unless 8-bit):
  sgd 0; sgd-momentum 1; adam/adamw 2 (exp_avg, exp_avg_sq); lion 1 (exp_avg);
  adafactor (torch.optim.Adafactor, no first moment): a matrix keeps a row and a column vector, a vector
  keeps a full variance; adamw-8bit (bitsandbytes): 2 x 1 byte plus one fp32 absmax per 256-element
  block and state, for tensors of at least 4096 elements (smaller ones keep fp32 states); paged variants hold
  the same bytes in unified memory that the driver may evict to host RAM; lomo: no states and no stored
  gradients (the update is fused into backward, one gradient alive at a time); ao-adamw-8bit (torchao): 1-byte
  codes plus one fp32 scale per 256 elements and a 256-entry fp32 code map per state, for tensors of at least 4096
  elements divisible by 256 (others keep states in the parameter's dtype).
Transients at the step (torch.optim implementations): foreach Adam/AdamW makes one state-sized copy of
every trainable tensor (``_foreach_sqrt(exp_avg_sq)``, measured: +4 B/param in fp32), and so does foreach
Adafactor (traced); the for-loop implementations two copies of the largest tensor (Adafactor one); fused
none. SGD updates in place. Lion's reference
implementation clones the momentum per tensor (two copies of the largest). torchao's 8-bit AdamW compiles one
graph per parameter that writes both block-scaled fp32 states before requantizing them: two fp32 copies of the
largest quantized tensor, and their new scales.
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

# torchao 0.7.0 (PyPI wheel; the build torchtune's README of 2024-11-18 could run: 0.6.1's single_param_adam lerps
# the fp32-dequantized state with a bf16 gradient, which torch refuses) torchao/prototype/low_bit_optim/:
# adam.py AdamW8bit(block_size=256); _AdamBase._new_buffer quantizes a state only when numel >= 4096 and
# numel % block_size == 0, else torch.zeros_like(p) (the parameter's dtype); subclass_8bit.py OptimState8bit.zeros:
# uint8 codes of the parameter's shape, an fp32 scale per block and a 256-entry fp32 qmap per state.
AO_BLOCK = 256
AO_MIN_SIZE = 4096
AO_QMAP = 256
# The step: _AdamBase.step runs torch.compile(single_param_adam, fullgraph=True) per parameter. The graph upcasts
# the states (dequant_with_qmap), lerps them, and copy_ requantizes each (subclass_8bit.py aten.copy_ ->
# quant_utils.py scale_tensor, then quantize_8bit_with_qmap's eight-step binary search reading the scaled input
# nine times). Inductor realizes that scaled input as a buffer (many readers), so the compiled step holds, for the
# tensor it updates, two fp32 state-sized buffers and two fp32 scale vectors: traced with torch 2.13's inductor
# (bench/ao_step_buffers.py -> bench/data/compile/ao-adamw8bit-step-cpu.json: the CPU backend's output code allocates
# (numel/256, 256) and (numel/256,) float32 buffers, two of each, for a bf16 parameter). Triton's kernels may keep
# them in registers instead (not traced: no GPU); one parameter at a time, the largest quantized tensor bounds it.
AO_STEP_FP32 = 2  # block-scaled states written as fp32 buffers by the compiled step
SRC_AO = (
    "torchao 0.7.0 prototype/low_bit_optim/adam.py _AdamBase.step, single_param_adam; subclass_8bit.py "
    "OptimState8bit; quant_utils.py scale_tensor, quantize_8bit_with_qmap"
)


def step_source(optimizer: str) -> str:
    """Where the step's transient rule comes from."""
    if optimizer == "ao-adamw-8bit":
        return SRC_AO + "; inductor's output code on CPU (torch 2.13, bench/ao_step_buffers.py)"
    return "torch.optim implementations, measured in notes §6"


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
    if base == "ao-adamw-8bit":
        return _ao_state_bytes(tensors, state)
    raise AssertionError(optimizer)  # TrainSetup validated the name


def _ao_quantized(t: Tensor) -> bool:
    """torchao _AdamBase._new_buffer: an OptimState8bit for numel >= 4096 divisible by the block, else plain."""
    return t.numel >= AO_MIN_SIZE and t.numel % AO_BLOCK == 0


def _ao_state_bytes(tensors: list[Tensor], state: int) -> tuple[int, str]:
    quantized = [t for t in tensors if _ao_quantized(t)]
    plain = [t for t in tensors if not _ao_quantized(t)]
    big = round(sum(t.numel * t.copies for t in quantized))
    blocks = round(sum(t.numel // AO_BLOCK * t.copies for t in quantized))
    maps = round(sum(t.copies for t in quantized))
    small = round(sum(t.numel * t.copies for t in plain))
    total = 2 * (big + 4 * blocks + 4 * AO_QMAP * maps) + 2 * tensor_bytes(plain, state)
    return total, (
        f"2 x ({big:,} x 1 B codes + {blocks:,} blocks x 4 B scale + {maps:,} tensors x {AO_QMAP} x 4 B qmap) "
        f"+ 2 x {small:,} unquantized elements x {state} B{fp32_note(plain, state)}"
    )


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
    if base == "ao-adamw-8bit":
        return ao_step_transient(tensors)
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


def ao_step_transient(tensors: list[Tensor]) -> tuple[int, str]:
    """torchao AdamW8bit's compiled per-parameter step (``AO_STEP_FP32``): the largest quantized tensor's two
    block-scaled fp32 states and their two fp32 scale vectors; unquantized states update pointwise in place."""
    quantized = [t.numel for t in tensors if _ao_quantized(t)]
    if not quantized:
        return 0, "ao-adamw-8bit: no quantized state, pointwise in place"
    n = max(quantized)
    blocks = n // AO_BLOCK
    return AO_STEP_FP32 * 4 * (n + blocks), (
        f"compiled single_param_adam on the largest quantized tensor: {AO_STEP_FP32} x ({n:,} block-scaled fp32 "
        f"state + {blocks:,} fp32 scales) x 4 B"
    )

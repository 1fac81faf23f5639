"""What ``--gpu`` names: a catalog GPU (by name or alias), a memory size, and how many of them.

Grammar (case-insensitive, spaces ignored), parsed strictly:
    [COUNT x] (NAME | SIZE)        COUNT: 1 to MAX_COUNT, followed by ``x`` (``2x4090``, ``8xH100``, ``4x24GiB``)
    SIZE: a number and a unit: GiB, MiB, TiB (powers of 2: 2^30, 2^20, 2^40), GB, MB, TB (powers of 10), B.
A bare number (``24``) and a lone ``G``/``M``/``T`` are refused: the reader cannot tell 2^30 from 10^9 (the
difference is 7% at GiB scale, more than most headrooms).

The budget of a catalog GPU is the memory the framework sees (``Gpu.memory_bytes``): CUDA's total
(``torch.cuda.get_device_properties().total_memory``, cudaMemGetInfo's total), which is nvidia-smi's total less
what the driver reserves for itself (NVML ``nvmlMemory_v2_t.reserved``: "Device memory (in bytes) reserved for
system use (driver or firmware)", https://docs.nvidia.com/deploy/nvml-api/structnvmlMemory__v2__t.html); on
Apple silicon it is Metal's ``recommendedMaxWorkingSetSize``. A size the user gives is taken as that budget.
vLLM's serving budget starts from the same total (``torch.cuda.mem_get_info()[1]``, vllm/worker/worker.py
``determine_num_available_blocks``), so ``--serve`` reads it too.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

from vramwise.errors import UnknownGpuError, shown

# Sizes in bytes of each unit a SIZE may carry; GiB and GB are the two the CLI documents.
UNITS = {"gib": 2**30, "mib": 2**20, "tib": 2**40, "gb": 10**9, "mb": 10**6, "tb": 10**12, "b": 1}
# The largest count accepted: far above the largest published training runs (Llama 3 405B: 16,384 H100s,
# "The Llama 3 Herd of Models", section 3.3.1), low enough to catch a typo.
MAX_COUNT = 100_000
# The largest size accepted: 16 TiB, above any single device (the largest Apple unified memory is 512 GB).
MAX_SIZE = 16 * 2**40
ALLOWED = (
    "a catalog GPU name or alias (see `vramwise gpus`, e.g. h100, 4090, a100, mi300x, m3-max), a size with a "
    "unit (24GiB = 24 x 2^30 bytes, 24GB = 24 x 10^9 bytes), optionally a count (2x4090, 8xH100, 4x24GiB)"
)
# NVIDIA: bf16 arithmetic needs compute capability 8.0 (Ampere); torch.cuda.is_bf16_supported checks
# `major >= 8` (torch/cuda/__init__.py), and HF Trainer refuses --bf16 below it.
BF16_MIN_CC = 8.0
_PUBLISHED = "the published visible total"
_REPORTED = "the vendor tool's total (CUDA's own total is not published for it)"
_NOMINAL = "the nominal capacity (neither total is published for it)"


@dataclass(frozen=True, kw_only=True)
class Gpu:
    """One GPU (or one custom size): the budget the framework sees, and what the vendor tool reports."""

    name: str  # catalog key, or the size as typed (``24GiB``)
    label: str
    memory_bytes: int  # the budget: CUDA-visible total (Apple: recommendedMaxWorkingSetSize; custom: the size)
    smi_bytes: int | None = None  # nvidia-smi / rocm-smi total (Apple: the unified RAM); None for a custom size
    bf16: bool = True  # native bf16 arithmetic (NVIDIA: compute capability >= 8.0)
    confirmed: bool = True  # memory_bytes seen in a published output; False: nominal or derived (see ``basis``)
    nominal: bool = False  # smi_bytes is the vendor's nominal capacity (no vendor-tool total published)
    basis: str = ""  # how memory_bytes was obtained, in words
    source: str = ""  # URL where memory_bytes (or, unconfirmed, the nominal figure) was published
    segment: str = "custom"  # datacenter, workstation, consumer, laptop, amd, apple, custom
    compute_capability: str | None = None  # NVIDIA only
    aliases: tuple[str, ...] = ()

    @property
    def custom(self) -> bool:
        return self.segment == "custom"


@dataclass(frozen=True, kw_only=True)
class GpuChoice:
    """What ``--gpu`` said: ``count`` GPUs of one kind (count 1 without an ``Nx`` prefix)."""

    gpu: Gpu
    count: int = 1
    text: str = ""  # as typed

    @property
    def counted(self) -> bool:
        """Whether the user gave a count (``1xH100`` counts too: it pins the layout to one GPU)."""
        return bool(re.match(r"^\s*\d+\s*[x×*]", self.text, re.IGNORECASE))


def _key(text: str) -> str:
    """The lookup form of a name: lower case, without spaces, dashes, underscores or dots."""
    return re.sub(r"[\s\-_.]", "", text.lower())


def _fail(message: str) -> UnknownGpuError:
    return UnknownGpuError(message, field="gpu", allowed=ALLOWED)


def parse_size(text: str, *, what: str = "--gpu") -> int:
    """Bytes of ``24GiB`` / ``24 GB`` / ``1.5TiB``; a number without a unit or with an ambiguous one is refused."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m:
        raise _fail(f"{what} size {shown(text)} is not a number with a unit; {ALLOWED}")
    number, unit = m.group(1), m.group(2).lower()
    if not unit:
        raise _fail(f"{what} size {shown(text)} has no unit: write {number}GiB (2^30 bytes) or {number}GB (10^9)")
    if unit in ("g", "m", "t"):
        raise _fail(
            f"{what} size {shown(text)}: '{m.group(2)}' is ambiguous; write {number}{unit.upper()}iB (powers of 2) "
            f"or {number}{unit.upper()}B (powers of 10)"
        )
    if unit not in UNITS:
        raise _fail(f"{what} size {shown(text)}: unknown unit; allowed: GiB, MiB, TiB, GB, MB, TB, B")
    try:
        size = int(Decimal(number) * UNITS[unit])
    except InvalidOperation:  # pragma: no cover - the regex admits only decimal digits
        raise _fail(f"{what} size {shown(text)} is not a number") from None
    if size <= 0 or size > MAX_SIZE:
        raise _fail(f"{what} size {shown(text)} must be more than 0 and at most 16TiB")
    return size


def _custom(text: str) -> Gpu:
    size = parse_size(text)
    shown_as = re.sub(r"\s+", "", text)
    return Gpu(
        name=shown_as,
        label=f"a {shown_as} GPU",
        memory_bytes=size,
        basis="the size given: the whole of it is the budget (no nvidia-smi or CUDA figure to start from)",
        segment="custom",
    )


def parse_gpu(text: str) -> GpuChoice:
    """The GPU and count ``--gpu`` names; raises UnknownGpuError (field ``gpu``) with the allowed forms."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(f"--gpu {shown(text)} is empty; {ALLOWED}")
    body, count = text.strip(), 1
    if re.fullmatch(r"\d+\s*[x×*]", body, re.IGNORECASE):
        raise _fail(f"--gpu {shown(text)}: a count needs a GPU after it, e.g. {body}4090 or {body}24GiB")
    m = re.fullmatch(r"(\d+)\s*[x×*]\s*(.+)", body, re.IGNORECASE)
    if m:
        count, body = int(m.group(1)), m.group(2)
        if not 1 <= count <= MAX_COUNT:
            raise _fail(f"--gpu {shown(text)}: the count must be 1 to {MAX_COUNT:,}, got {count:,}")
    if re.match(r"\s*\d+(\.\d+)?\s*[a-zA-Z]*\s*$", body) and _key(body) not in _index():
        return GpuChoice(gpu=_custom(body), count=count, text=text.strip())
    return GpuChoice(gpu=get_gpu(body), count=count, text=text.strip())


@cache
def gpus() -> dict[str, Gpu]:
    """Every catalog GPU by name, in file order."""
    raw = tomllib.loads(resources.files(__package__).joinpath("gpus.toml").read_text(encoding="utf-8"))
    return {name: _entry(name, e) for name, e in raw.items()}


def _entry(name: str, e: dict[str, Any]) -> Gpu:
    """One TOML entry: ``reported`` (the vendor tool's total) and ``visible`` (the framework's), as printed."""
    smi = parse_size(e["reported"], what=f"catalog {name} reported")
    visible = e.get("visible")
    cc = e.get("compute_capability")
    bf16 = float(cc) >= BF16_MIN_CC if cc is not None else bool(e["bf16"])
    return Gpu(
        name=name,
        label=e["label"],
        memory_bytes=parse_size(visible, what=f"catalog {name} visible") if visible else smi,
        smi_bytes=smi,
        bf16=bf16,
        confirmed=bool(e.get("confirmed", visible is not None)),
        nominal=bool(e.get("nominal", False)),
        basis=e.get("basis", _PUBLISHED if visible else _NOMINAL if e.get("nominal") else _REPORTED),
        source=e["source"],
        segment=e["segment"],
        compute_capability=cc,
        aliases=tuple(e.get("aliases", ())),
    )


@cache
def _index() -> dict[str, str]:
    """Lookup key -> catalog name, for every name and alias."""
    out: dict[str, str] = {}
    for name, g in gpus().items():
        for word in (name, *g.aliases):
            out.setdefault(_key(word), name)
    return out


def get_gpu(name: str) -> Gpu:
    """A catalog GPU by name or alias (any case; spaces, dashes, dots and underscores ignored)."""
    index = _index()
    key = _key(name)
    if key in index:
        return gpus()[index[key]]
    near = difflib.get_close_matches(key, list(index), n=3, cutoff=0.6)
    hint = f" (did you mean: {', '.join(dict.fromkeys(index[k] for k in near))}?)" if near else ""
    raise _fail(f"unknown GPU {shown(name)}{hint}; allowed: {ALLOWED}")


# Datacenter cards without an NVLink connector: the NVIDIA datasheets of the A10, L4, L40, L40S and T4 list PCIe
# Gen4 (Gen3 for the T4) and no NVLink (the A40's lists a 2-way NVLink bridge, kept as nvlink)
PCIE_ONLY = ("a10", "l4", "l40", "l40s", "t4")


def gpu_interconnect(gpu: Gpu) -> str | None:
    """The interconnect a catalog entry's form factor says (sizes NCCL's buffers, estimate/nccl.py; a value of
    workload/options.py ``Interconnect``), or None where it says none (a custom size): an SXM module sits on an HGX
    board, NVSwitch with NVLS from Hopper (compute capability 9.0), NVLink without NVLS before; "PCIe" and the
    consumer, workstation and laptop segments are PCIe cards; H100 NVL pairs cards with NVLink bridges; before
    Hopper a datacenter GPU is taken as NVLink (no NVLS either way). Training (app/gpu_rules.py) and the serving
    engines' plans (engines/nccl_comm.py) both read it."""
    label = gpu.label
    if "(SXM)" in label:
        return "nvswitch" if float(gpu.compute_capability or 0) >= 9.0 else "nvlink"
    if "PCIe" in label or gpu.segment in ("consumer", "workstation", "laptop") or gpu.name in PCIE_ONLY:
        return "pcie"
    if " NVL " in label:
        return "nvlink"
    if gpu.compute_capability and float(gpu.compute_capability) < 9.0:
        return "nvlink"  # NVLS needs Hopper's multicast (nvls.cc ncclNvlsInit: CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED)
    return None

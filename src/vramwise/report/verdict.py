"""Does an estimate fit a GPU, and with how much headroom."""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.catalog import Gpu
from vramwise.estimate.term import Estimate
from vramwise.units import Unit, fmt


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The per-GPU peak against one GPU's budget: the memory the framework sees (``Gpu.memory_bytes``, the
    CUDA-visible total, not nvidia-smi's; see catalog/gpu_spec.py). With a count, every GPU holds that peak."""

    gpu: Gpu
    peak_bytes: int
    count: int = 1  # GPUs of this kind (``--gpu 2x4090``); the estimate is per GPU
    # a serving engine's own refusal to start (vLLM: "No available memory for the cache blocks", max_model_len
    # larger than the KV cache), in a few words; None when it starts. The peak alone cannot say it.
    refusal: str | None = None
    # --margin: the fraction of the GPU kept free (0 <= margin < 1); the peak must fit the rest (``budget_bytes``)
    margin: float = 0.0

    @property
    def budget_bytes(self) -> int:
        """The memory the peak may use: the GPU's budget less the margin kept free."""
        return usable(self.gpu.memory_bytes, self.margin)

    @property
    def fits(self) -> bool:
        return self.refusal is None and self.peak_bytes <= self.budget_bytes

    @property
    def reason(self) -> str:
        """Why it does not fit, in a few words ("" when it fits)."""
        if self.refusal:
            return self.refusal
        if self.fits:
            return ""
        return "the peak exceeds the GPU less the margin" if self.margin else "the peak exceeds the GPU"

    @property
    def headroom_bytes(self) -> int:
        """Free memory at the peak, the margin not counted as free; negative when it does not fit."""
        return self.budget_bytes - self.peak_bytes


def usable(memory_bytes: int, margin: float = 0.0) -> int:
    """The bytes a peak may use when ``margin`` of the GPU is kept free (rounded down: the margin is never less)."""
    return int(memory_bytes * (1.0 - margin)) if margin else memory_bytes


def margin_words(margin: float, memory_bytes: int, unit: Unit = "gib") -> str:
    """``margin 10% kept free: 21.28 GiB usable`` (empty without a margin)."""
    if not margin:
        return ""
    return f"margin {margin:.0%} kept free: {fmt(usable(memory_bytes, margin), unit)} usable"


def verdict(estimate: Estimate, gpu: Gpu, count: int = 1) -> Verdict:
    return Verdict(gpu=gpu, peak_bytes=estimate.peak_bytes, count=count)


def _seen_by(gpu: Gpu) -> str:
    """Who sees the budget: Metal's working set on Apple silicon, ROCm on AMD, CUDA elsewhere."""
    return {"apple": "Metal working set", "amd": "visible to ROCm"}.get(gpu.segment, "visible to CUDA")


def _reporter(gpu: Gpu) -> str:
    return {"apple": "unified RAM", "amd": "rocm-smi"}.get(gpu.segment, "nvidia-smi")


def budget_words(gpu: Gpu, unit: Unit = "gib", count: int = 1) -> str:
    """The budget and the vendor tool's total, as the verdict line says them:
    ``23.64 GiB visible to CUDA; nvidia-smi 23.99 GiB``."""
    if gpu.smi_bytes is None:
        return f"{fmt(gpu.memory_bytes, unit)}, the size given"
    per = "per GPU " if count > 1 else ""
    budget = f"{per}{fmt(gpu.memory_bytes, unit)}"
    if gpu.confirmed or gpu.memory_bytes != gpu.smi_bytes:  # published, or derived (Apple) from the RAM
        derived = "" if gpu.confirmed else ", derived: unconfirmed"
        nominal = " nominal" if gpu.nominal else ""
        return f"{budget} {_seen_by(gpu)}{derived}; {_reporter(gpu)}{nominal} {fmt(gpu.smi_bytes, unit)}"
    if gpu.nominal:
        return f"{budget} nominal, no total published: unconfirmed"
    return f"{budget} = {_reporter(gpu)}'s total, CUDA's own unpublished: unconfirmed"


def gpu_title(gpu: Gpu, count: int = 1) -> str:
    return f"{count} x {gpu.label}" if count > 1 else gpu.label

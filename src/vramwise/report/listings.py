"""The catalog listings of ``vramwise models``, ``gpus`` and ``formats``, as text or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from vramwise.catalog import Gpu
from vramwise.report.json_out import render_json
from vramwise.units import Unit, to_unit, unit_label


@dataclass(frozen=True, kw_only=True)
class ModelRow:
    name: str
    model_type: str
    params: int
    active_params: int  # per token (MoE: the routed experts only)
    hf_id: str


@dataclass(frozen=True, kw_only=True)
class FormatRow:
    name: str
    summary: str


# how to spell the formats that take any bit width, group or block size (not in the named table)
GROUPED_FORMATS = "gptq-<b>bit-g<g>, awq-<b>bit-g<g>  GPTQ/AWQ with b bits and group size g (e.g. gptq-4bit-g128)"


def _templates() -> tuple[str, ...]:
    from vramwise.formats.quantized import TEMPLATES  # the parametric names, spelled where they are parsed

    return TEMPLATES


def render_models(rows: Sequence[ModelRow]) -> str:
    lines = [f"{'name':<20} {'model_type':<12} {'parameters':>17} {'active/token':>17}  hf_id"]
    lines += [f"{r.name:<20} {r.model_type:<12} {r.params:>17,} {r.active_params:>17,}  {r.hf_id}" for r in rows]
    return "\n".join(lines)


def models_json(rows: Sequence[ModelRow]) -> str:
    return render_json({"models": [asdict(r) for r in rows]})


GPUS_FOOTER = (
    "budget: the memory the framework sees (CUDA's total = torch total_memory; Apple: Metal's "
    "recommendedMaxWorkingSetSize), which --gpu checks against; reported: nvidia-smi / rocm-smi total (Apple: "
    "RAM).\nunconfirmed (*): no published CUDA total; the budget is the reported figure, or derived (Apple: 3/4 "
    "of RAM). nominal (~): no published vendor-tool total either; the vendor's size in GiB. --json lists each "
    "entry's source URL. A size (--gpu 24GiB) is its own budget."
)


def render_gpus(rows: Sequence[Gpu], unit: Unit = "gib") -> str:
    label = unit_label(unit)
    lines = [f"{'name':<18} {'segment':<11} {'budget ' + label:>11} {'reported':>9}  bf16  label"]
    for g in rows:
        flag = " " if g.confirmed else "*"
        smi = to_unit(g.smi_bytes, unit) if g.smi_bytes is not None else 0.0
        approx = "~" if g.nominal else " "
        lines.append(
            f"{g.name:<18} {g.segment:<11} {to_unit(g.memory_bytes, unit):>10.2f}{flag} {smi:>8.2f}{approx}  "
            f"{'yes' if g.bf16 else 'no ':<4}  {g.label}" + (f"  [{', '.join(g.aliases)}]" if g.aliases else "")
        )
    lines.append(GPUS_FOOTER)
    return "\n".join(lines)


def gpus_json(rows: Sequence[Gpu]) -> str:
    """Every GPU with both totals in bytes (``memory_bytes`` is the budget; the table converts them)."""
    return render_json({"gpus": [asdict(g) for g in rows]})


def formats_json(rows: Sequence[FormatRow]) -> str:
    """The named formats; ``grouped`` spells the GPTQ/AWQ names that take any bit width and group size."""
    return render_json({"formats": [asdict(r) for r in rows], "grouped": list(_templates())})


def render_formats(rows: Sequence[FormatRow]) -> str:
    templates = "parametric (the quantization_config of a checkpoint names one): " + ", ".join(_templates())
    return "\n".join([*(f"{f.name:<12} {f.summary}" for f in rows), GROUPED_FORMATS, templates])

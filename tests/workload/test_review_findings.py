"""Findings of the post-merge review (issue 14/15 merges), each pinned by the command an engineer typed."""

from __future__ import annotations

import re

import pytest
from cli_run import run


def test_deepspeed_layouts_skip_zero_2_3_with_pipeline_stages(capsys: pytest.CaptureFixture[str]) -> None:
    """fit --layouts --framework deepspeed used to stop at the first pp > 1 ZeRO-2 candidate with the framework's
    refusal (exit 2); a layout DeepSpeed does not run (runtime/pipe/engine.py: ZeRO-2/3 with pp) is no candidate."""
    code, out, err = run(capsys, "fit", "llama-3.1-8b", "--gpu", "h100", "--layouts", "8", "--framework", "deepspeed",
                         "--top", "500")  # fmt: skip
    assert code == 0, err
    rows = re.findall(r"tp=\d+ pp=(\d+) dp=\d+(?: zero=(\d))?", out)
    assert rows
    assert all(int(pp) == 1 or int(zero or 0) <= 1 for pp, zero in rows)
    assert any(int(pp) > 1 for pp, _ in rows)  # pipeline layouts stay, at ZeRO 0-1


@pytest.mark.parametrize(
    ("framework", "method"),
    [("torchtune", "ia3"), ("torchtune", "prompt-tuning"), ("litgpt", "dora"), ("litgpt", "prefix-tuning"),
     ("llama-factory", "ia3"), ("llama-factory", "prefix-tuning"), ("unsloth", "prompt-tuning")],
)  # fmt: skip
def test_a_peft_method_the_framework_lacks_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], framework: str, method: str
) -> None:
    """These used to fail on a preset default the user never gave (torchtune's and LitGPT's bf16 adapter_dtype,
    LLaMA-Factory's all-linear targets as IA3 targets, unsloth's recompute under prefix tuning), or ran a method
    the framework does not have; the refusal now names the framework and the method."""
    code, _, err = run(capsys, "train", "llama-3.1-8b", "--framework", framework, "--peft", method)
    assert code == 2 and err.count("\n") == 1
    assert f"--framework {framework} does not run peft={method}" in err


def test_torchtitan_names_what_its_lora_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    """torchtitan's refusal of dora said 'has no 4-bit base', which is not what dora is."""
    code, _, err = run(capsys, "train", "llama-3.1-8b", "--framework", "torchtitan", "--peft", "dora")
    assert code == 2 and "no DoRA" in err


@pytest.mark.parametrize(
    "given", [("llama-3.1-8b", "--peft", "lora"), ("qwen3-30b-a3b",), ("deepseek-v3",)]
)
def test_torchtitan_default_recompute_is_named_as_the_presets(
    capsys: pytest.CaptureFixture[str], given: tuple[str, ...]
) -> None:
    """torchtitan's preset sets op-sac; on LoRA or MoE/MLA layers (not modelled) the refusal read as if the user
    had given --recompute op-sac. It now says the preset set it and which --recompute to give."""
    code, _, err = run(capsys, "train", *given, "--framework", "torchtitan")
    assert code == 2 and err.count("\n") == 1
    assert "--framework torchtitan sets recompute=op-sac" in err and "give --recompute" in err
    assert "trains no adapters" not in err  # torchtitan has LoRA (components/lora.py LoRAConverter)
    code, _, _ = run(capsys, "train", *given, "--framework", "torchtitan", "--recompute", "full")
    assert code == 0


@pytest.mark.parametrize(("gpu", "cc"), [("a100", "8.0"), ("t4", "7.5"), ("8xa100", "8.0")])
def test_float8_is_refused_on_a_gpu_without_fp8_matmuls(
    capsys: pytest.CaptureFixture[str], gpu: str, cc: str
) -> None:
    """`train --float8 --gpu a100` gave a verdict for a run torch._scaled_mm cannot run (fp8 needs 8.9 or 9.0+:
    torch testing/_internal/common_cuda.py evaluate_platform_supports_fp8); now one line, exit 2."""
    code, _, err = run(capsys, "train", "llama-3.1-8b", "--float8", "--gpu", gpu)
    assert code == 2 and err.count("\n") == 1 and "--float8" in err and f"has {cc}" in err
    for ok in ("h100", "4090", "mi300x"):  # 9.0, 8.9, and a GPU without an NVIDIA compute capability
        assert run(capsys, "train", "llama-3.1-8b", "--float8", "--gpu", ok)[0] in (0, 3)


@pytest.mark.parametrize("given", [(), ("--dp", "8", "--fsdp", "full")])
def test_fsdp_over_cp_says_when_it_changes_nothing(capsys: pytest.CaptureFixture[str], given: tuple[str, ...]) -> None:
    """--fsdp-over-cp without FSDP or at cp 1 was accepted in silence (like --fsdp-outer-units, which says so)."""
    code, out, _ = run(capsys, "train", "llama-3.1-8b", "--fsdp-over-cp", *given)
    assert code == 0 and "fsdp_over_cp not applied" in out
    code, out, _ = run(capsys, "train", "llama-3.1-8b", "--fsdp-over-cp", "--dp", "1", "--cp", "4", "--fsdp", "full")
    assert code == 0 and "fsdp_over_cp not applied" not in out


def test_torchtune_dora_names_the_presets_adapter_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    """torchtune --peft dora was refused as 'adapter_dtype: bf16 adapters ...', an option the user never gave."""
    code, _, err = run(capsys, "train", "llama-3.1-8b", "--framework", "torchtune", "--peft", "dora")
    assert code == 2 and err.count("\n") == 1
    assert "--framework torchtune builds its adapters in bf16" in err and "--adapter-dtype fp32" in err
    assert run(capsys, "train", "llama-3.1-8b", "--framework", "torchtune", "--peft", "dora",
               "--adapter-dtype", "fp32")[0] == 0  # fmt: skip

"""`vramwise plot` writes a real image: a valid PNG of a sensible size, and an SVG document."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from vramwise.cli import main


def test_plot_writes_a_valid_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mem.png"
    code = main(["plot", "llama-3-8b", "--peft", "lora", "--recompute", "full", "--gpu", "rtx-4090", "-o", str(out)])
    assert code == 0 and out.exists()
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300 and len(data) > 10_000


def test_plot_svg_and_bad_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mem.svg"
    assert main(["plot", "qwen2-7b", "--infer", "--vs", "batch", "--points", "1,2,4,8", "-o", str(out)]) == 0
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()
    assert main(["plot", "qwen2-7b", "--points", "1,x", "-o", str(out)]) == 2
    assert main(["plot", "qwen2-7b", "-o", str(tmp_path / "mem.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.count("vramwise: error:") == 2

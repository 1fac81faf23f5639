"""The buffers torch.compile (inductor) allocates for torchao's AdamW8bit step, read from its generated code.

torchao 0.7.0 prototype/low_bit_optim/adam.py _AdamBase.step runs ``torch.compile(single_param_adam, fullgraph=True,
dynamic=False)`` on each parameter. This builds AdamW8bit on one bf16 parameter (rows x cols, the default block of
256), runs two steps on the CPU (the first creates the 8-bit states) and lists the buffers inductor's output code
allocates (``empty_strided_*``), which are what the compiled step holds beyond its inputs.

    python bench/ao_step_buffers.py PATH    # PATH: the folder holding torchao 0.7.0's ``torchao`` package (from
                                            # its PyPI wheel, py3-none-any)

Writes bench/data/compile/ao-adamw8bit-step-cpu.json. Needs a C++ compiler for inductor's CPU backend.
optimizers.py AO_STEP_FP32 and tests/estimate/test_ao_adamw8bit.py read the result: two fp32 buffers of the
parameter's size (the block-scaled states quantize_8bit_with_qmap reads) and two fp32 scale vectors.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "data" / "compile" / "ao-adamw8bit-step-cpu.json"
ROWS, COLS = 1024, 512
_BUFFER = re.compile(r"(buf\d+) = empty_strided_\w+\(\(([\d, ]*)\), \([\d, ]*\), torch\.(\w+)\)")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python bench/ao_step_buffers.py PATH-TO-TORCHAO-0.7.0")
    sys.path.insert(0, sys.argv[1])
    import torch
    from torch._inductor.utils import run_and_get_code
    from torchao.prototype.low_bit_optim import AdamW8bit  # type: ignore[import-not-found]

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(ROWS, COLS, dtype=torch.bfloat16))
    opt = AdamW8bit([p])

    def step() -> None:
        p.grad = torch.randn_like(p)
        opt.step()

    step()  # states created, the graph compiled
    torch._dynamo.reset()
    _, codes = run_and_get_code(step)
    buffers: list[dict[str, Any]] = []
    for code in codes:
        for name, shape, dtype in _BUFFER.findall(code):
            dims = [int(d) for d in shape.replace(" ", "").split(",") if d]
            numel = 1
            for d in dims:
                numel *= d
            buffers.append({"name": name, "shape": dims, "numel": numel, "dtype": dtype})
    OUT.write_text(json.dumps({"torch": torch.__version__, "python": platform.python_version(), "torchao": "0.7.0",
                               "param": {"shape": [ROWS, COLS], "dtype": "bfloat16"}, "buffers": buffers},
                              indent=1) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()

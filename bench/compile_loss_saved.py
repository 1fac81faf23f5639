"""What torch.compile (inductor) saves for torchtune's chunked cross entropy, measured on a real CPU run.

torchtune 0.3-0.6 (training/_compile.py compile_loss) compiles only CEWithChunkedOutputLoss.compute_cross_entropy,
``F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")``, once per chunk of 16-bit logits.
This runs that function eager and compiled on one chunk and counts the distinct storages its autograd graph saves
(torch.autograd.graph.saved_tensors_hooks sees inductor's saved tensors too), on the second iteration.

    python bench/compile_loss_saved.py     # writes bench/data/compile/loss-saved-cpu.json (under a minute, 2 cores)

Needs a C++ compiler for inductor's CPU backend. tests/estimate/test_torchtune_bench.py reads the file.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "data" / "compile" / "loss-saved-cpu.json"
ROWS, VOCAB = 512, 8192


def _saved(compiled: bool) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    def compute_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")

    fn = torch.compile(compute_cross_entropy) if compiled else compute_cross_entropy
    torch.manual_seed(0)
    logits = torch.randn(ROWS, VOCAB, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, VOCAB, (ROWS,))
    seen: dict[int, dict[str, Any]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = {
            "bytes": t.untyped_storage().nbytes(), "dtype": str(t.dtype), "shape": list(t.shape),
            "is_input": t.untyped_storage().data_ptr() == logits.untyped_storage().data_ptr(),
        }
        return t

    for _ in range(2):
        seen.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = fn(logits, labels)
        loss.backward()
    return sorted(seen.values(), key=lambda r: -r["bytes"])


def main() -> int:
    import torch

    data = {
        "torch": torch.__version__, "machine": platform.machine(), "rows": ROWS, "vocab": VOCAB,
        "logits_dtype": "bfloat16", "eager": _saved(False), "compiled": _saved(True),
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What torch.compile (inductor) saves for backward, measured on a real CPU run of the tiny configs.

Each decoder layer is compiled on its own, as torchtitan compiles each transformer block (torchtitan
models/llama3/infra/parallelize.py apply_compile: torch.compile(block, fullgraph=True)); the embeddings, the final
norm, the head and the loss stay eager. The saved tensors are counted with torch.autograd.graph.saved_tensors_hooks
(the pack hook sees every tensor a node saves, inductor's compiled function included): the bytes of the distinct
storages packed during one forward, eager and compiled, on the second iteration. The difference divided by
layers x tokens is what inductor's partitioner recomputes instead of saving, per token and layer.

    python bench/compile_saved.py            # writes bench/data/compile/saved-cpu.json (about 4 minutes, 2 cores)

Needs a C++ compiler for inductor's CPU backend. tests/estimate/test_knobs.py reads the file.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "data" / "compile" / "saved-cpu.json"
CASES = [("llama", "bf16"), ("llama", "fp32"), ("gemma", "bf16"), ("phi3", "bf16"), ("qwen3", "bf16")]
BATCH, SEQ = 2, 64


def _saved(family: str, dtype_name: str, compiled: bool) -> int:
    import torch
    import transformers

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_configs import FAMILIES

    cfg = dict(FAMILIES[family])
    hf = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    hf._attn_implementation = "sdpa"
    torch._dynamo.reset()  # a fresh cache per case: the layer classes' code is shared across models
    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    model = transformers.AutoModelForCausalLM.from_config(hf, dtype=dtype)
    model.train()
    if compiled:
        layers = model.get_decoder().layers
        for i, layer in enumerate(layers):
            layers[i] = torch.compile(layer)
    ids = torch.randint(0, hf.vocab_size, (BATCH, SEQ))
    saved: dict[int, int] = {}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    n = 0
    for _ in range(2):  # the second iteration: compiled, warm
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(input_ids=ids, labels=ids).loss
        n = sum(saved.values())
        loss.backward()
        del loss
    return n


def main() -> None:
    import torch

    rows = []
    for family, dtype in CASES:
        eager, compiled = _saved(family, dtype, False), _saved(family, dtype, True)
        rows.append({"family": family, "dtype": dtype, "eager": eager, "compiled": compiled})
        print(family, dtype, eager, compiled, flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "what": "bytes of the distinct storages saved for backward in one forward (saved_tensors_hooks)",
                "batch": BATCH,
                "seq": SEQ,
                "torch": torch.__version__,
                "machine": platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

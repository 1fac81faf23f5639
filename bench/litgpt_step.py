"""LitGPT's own training step at lit-gpt 8641822 (its resource tables' commit), traced under FakeTensorMode.

finetune/lora.py's step on Llama-2-7B with LoRA on q and v (r 8, dropout 0.05), bf16-true: the model built under
Fabric's bf16 default dtype, ``model.max_seq_length`` set outside it (fp32 rope cache), forward with
``lm_head_chunk_size=128`` inside the bf16 default dtype, the output cast to fp32 as Lightning 2.1.0's
HalfPrecision.convert_output does (fabric/wrappers.py _FabricModule.forward) and assigned to the loop's
``logits`` (the previous step's list lives until then), ``logits[-1] = logits[-1][..., :-1, :]``, utils.py
chunked_cross_entropy, backward, AdamW (foreach) step, two iterations. Dropout runs CUDA's path
(torch.native_dropout, a bool mask; the CPU path saves a noise tensor in the input dtype). verify/live.py counts
every storage; the peak is compared with the estimate in tests/estimate/test_litgpt_loss.py.

    python bench/litgpt_step.py PATH    # PATH: a lit-gpt checkout at 8641822 (git archive 8641822 lit_gpt)

Writes bench/data/compile/litgpt-step-cpu.json. Nothing is installed: lit_gpt's imports of lightning and
lightning_utilities (availability checks, FSDP and checkpoint helpers the step does not call) are stubbed.
"""

from __future__ import annotations

import json
import platform
import sys
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "data" / "compile" / "litgpt-step-cpu.json"
SEQ = 1304  # the longest Llama 2 alpaca sample (tutorials/resource-tables.md), forced into the first batch


class _Requirement:
    def __init__(self, req: str, *_: Any, **__: Any) -> None:
        self.req = req

    def __bool__(self) -> bool:
        return self.req.startswith("lightning")  # no flash-attn: F.scaled_dot_product_attention


def _stub_imports() -> None:
    def module(name: str, **attrs: Any) -> None:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod

    for name in ("lightning_utilities", "lightning_utilities.core", "lightning.fabric", "lightning.fabric.utilities"):
        module(name)
    module("lightning_utilities.core.imports", RequirementCache=_Requirement)
    module("lightning", Fabric=object, LightningModule=object)
    module("lightning.fabric.strategies", FSDPStrategy=object)
    module("lightning.fabric.utilities.load", _lazy_load=None)


def trace(litgpt: Path, batch: int) -> dict[str, Any]:
    sys.path.insert(0, str(litgpt))
    _stub_imports()
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from vramwise.verify.live import LiveStorages

    lora = __import__("lit_gpt.lora", fromlist=["GPT"])
    utils = __import__("lit_gpt.utils", fromlist=["chunked_cross_entropy"])
    torch.nn.Dropout.forward = lambda self, x: torch.native_dropout(x, self.p, self.training)[0]  # type: ignore[method-assign]
    cfg = lora.Config.from_name("Llama-2-7b-hf", r=8, alpha=16, dropout=0.05, to_query=True, to_key=False,
                                to_value=True, to_projection=False, to_mlp=False, to_head=False)
    with FakeTensorMode(), LiveStorages() as live:
        torch.set_default_dtype(torch.bfloat16)  # fabric.init_module under bf16-true
        model = lora.GPT(cfg)
        torch.set_default_dtype(torch.float32)
        lora.mark_only_lora_as_trainable(model)
        model.max_seq_length = SEQ  # train(): outside any dtype context
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.01, foreach=True)
        def fabric_forward(idx: Any) -> list[Any]:  # _FabricModule.forward
            torch.set_default_dtype(torch.bfloat16)  # HalfPrecision.forward_context
            out = model(idx, lm_head_chunk_size=128)
            torch.set_default_dtype(torch.float32)
            return [t.to(torch.get_default_dtype()) for t in out]  # HalfPrecision.convert_output

        logits: list[Any] = []
        for _ in range(2):
            idx = torch.zeros((batch, SEQ), dtype=torch.int64)
            targets = torch.zeros((batch, SEQ), dtype=torch.int64)
            live.phase("forward")
            logits = fabric_forward(idx)  # the previous step's list lives until this returns, as in the loop
            logits[-1] = logits[-1][..., :-1, :]
            live.phase("loss")
            loss = utils.chunked_cross_entropy(logits, targets[..., 1:])
            live.phase("backward")
            loss.backward()
            live.phase("step")
            opt.step()
            opt.zero_grad()
    return {"batch": batch, "seq": SEQ, "peak_bytes": live.peak, "phase_peaks": live.phase_peaks}


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python bench/litgpt_step.py PATH-TO-LIT-GPT-8641822")
    import torch

    runs = [trace(Path(sys.argv[1]), b) for b in (1, 2)]
    OUT.write_text(json.dumps({"torch": torch.__version__, "python": platform.python_version(),
                               "lit_gpt": "8641822", "model": "Llama-2-7b-hf", "runs": runs}, indent=1) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()

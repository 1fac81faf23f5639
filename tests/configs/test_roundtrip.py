"""Round trip per format: the setup built from options, written by --emit, read back by --from, is the same setup
(TrainSetup/InferSetup equality). The oracle is the first setup itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vramwise.app.setups import infer_setup, train_setup
from vramwise.configs import load
from vramwise.configs.emit import emit

_FILE = {"deepspeed": "ds.json", "trainer": "args.json", "axolotl": "axolotl.yaml", "torchtune": "recipe.yaml"}

TRAIN_CASES: list[tuple[str, dict[str, Any]]] = [
    ("deepspeed", {"framework": "deepspeed", "dp": 8, "zero": 3, "batch": 2, "grad_accum": 4,
                   "precision": "bf16-mixed", "offload": "optimizer", "reduce_bucket": 123_456}),
    ("deepspeed", {"framework": "deepspeed", "dp": 4, "zero": 2, "batch": 1, "precision": "fp16-mixed",
                   "overlap_comm": True, "grad_dtype": "fp32"}),
    ("deepspeed", {"framework": "deepspeed", "dp": 2, "zero": 1, "precision": "fp32", "optimizer_impl": "foreach"}),
    ("trainer", {"framework": "hf-trainer", "batch": 4, "grad_accum": 2, "seq": 4096, "recompute": "full",
                 "peft": "qlora", "lora_r": 32, "lora_targets": "all-linear", "optimizer": "paged-adamw-8bit"}),
    ("trainer", {"framework": "hf-trainer", "batch": 2, "seq": 1024, "optimizer": "adamw", "optimizer_impl": "foreach",
                 "dp": 4, "fsdp": "full", "attention": "flash", "compile": True}),
    ("trainer", {"framework": "deepspeed", "dp": 8, "zero": 3, "batch": 1, "seq": 2048, "precision": "bf16-mixed",
                 "recompute": "full"}),
    ("trainer", {"framework": "hf-trainer", "batch": 1, "seq": 512, "precision": "amp-fp16", "loss": "liger",
                 "mlp_impl": "fused", "norm_impl": "fused", "peft": "lora", "lora_r": 8,
                 "lora_targets": "q_proj,v_proj"}),
    ("trainer", {"framework": "hf-trainer", "batch": 2, "seq": 2048, "precision": "amp"}),
    ("trainer", {"framework": "hf-trainer", "batch": 2, "seq": 2048, "precision": "fp32", "recompute": "full"}),
    ("axolotl", {"framework": "axolotl", "batch": 2, "grad_accum": 4, "seq": 4096, "peft": "qlora", "lora_r": 32,
                 "lora_dropout": 0.05, "lora_targets": "all-linear", "recompute": "full", "attention": "flash",
                 "optimizer": "paged-adamw"}),
    ("axolotl", {"framework": "axolotl", "batch": 1, "seq": 2048, "peft": "lora-8bit", "lora_targets": "q_proj,k_proj",
                 "loss": "liger", "norm_impl": "fused", "dp": 2, "fsdp": "full"}),
    ("torchtune", {"framework": "torchtune", "batch": 2, "grad_accum": 8, "seq": 2048, "peft": "lora", "lora_r": 8,
                   "lora_targets": "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"}),
    ("torchtune", {"framework": "torchtune", "batch": 4, "seq": 1024}),  # full fine-tune on one GPU: 8-bit paged
    ("torchtune", {"framework": "torchtune", "batch": 1, "seq": 4096, "peft": "qlora", "lora_r": 16,
                   "lora_targets": "q_proj,k_proj,v_proj", "activation_offload": True, "compile": True}),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "options"), TRAIN_CASES)
def test_training_round_trip(tmp_path: Path, fmt: str, options: dict[str, Any]) -> None:
    setup = train_setup(options)
    text, _ = emit(fmt, "llama-3.1-8b", setup)
    path = tmp_path / _FILE[fmt]
    path.write_text(text)
    imported = load(str(path))
    # a TrainingArguments or Axolotl file has no key for the GPU count (the launcher's): given on the command line
    given = {"dp": options["dp"]} if "dp" in options and fmt in ("trainer", "axolotl") else {}
    assert train_setup({**imported.options, **given}) == setup
    if fmt in ("trainer", "axolotl", "torchtune"):
        assert imported.model in ("meta-llama/Llama-3.1-8B", "llama-3.1-8b")  # the catalog's hub id, or its builder


INFER_CASES: list[tuple[str, dict[str, Any]]] = [
    ("vllm", {"engine": "vllm", "max_model_len": 16384, "gpu_util": 0.85, "tp": 2, "kv_dtype": "fp8",
              "enforce_eager": True, "max_num_seqs": 64, "kv_block": 32}),
    ("vllm", {"engine": "vllm", "max_num_batched_tokens": 4096, "kv_cache_memory": 8 * 2**30, "pp": 2,
              "format": "fp16"}),
    ("sglang", {"engine": "sglang", "mem_fraction_static": 0.8, "chunked_prefill_size": 4096, "tp": 2,
                "context_length": 8192, "page_size": 16, "disable_cuda_graph": True, "max_running_requests": 32}),
    ("llama.cpp", {"engine": "llama.cpp", "ctx_size": 16384, "n_gpu_layers": 20, "flash_attn": "on", "parallel": 4,
                   "cache_type_k": "q8_0", "cache_type_v": "q4_0", "ubatch_size": 256, "tensor_split": "3,1",
                   "no_mmap": True, "kv_unified": True}),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "options"), INFER_CASES)
def test_serving_round_trip(fmt: str, options: dict[str, Any]) -> None:
    setup = infer_setup(options)
    text, _ = emit(fmt, "llama-3.1-8b", setup)
    imported = load(text)  # a command line, pasted as one argument
    assert infer_setup(imported.options) == setup


def test_formats_cover_the_issue() -> None:
    from vramwise.configs.emit import EMIT_FORMATS

    covered = {f for f, _ in TRAIN_CASES} | {f for f, _ in INFER_CASES}
    assert covered == set(EMIT_FORMATS) == {"deepspeed", "trainer", "axolotl", "torchtune", "vllm", "sglang",
                                            "llama.cpp"}


def test_every_option_an_importer_sets_is_one_the_setups_take() -> None:
    # an option name outside TRAIN_FIELDS/INFER_FIELDS would be dropped in silence by the setup builders
    import ast
    from pathlib import Path as P

    from vramwise.app.setups import INFER_FIELDS, TRAIN_FIELDS

    src = P(__file__).resolve().parents[2] / "src" / "vramwise" / "configs"
    names: set[str] = set()
    for path in src.glob("*.py"):
        if path.name in ("emit.py", "emit_train.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            # opts["name"] = ..., and (below) the option names in the serving flag tables
            target = isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "opts"
            if target and isinstance(node.slice, ast.Constant) and isinstance(node.ctx, ast.Store):
                names.add(node.slice.value)
    from vramwise.configs import serve

    for table in (serve.VLLM, serve.SGLANG, serve.LLAMA):
        names |= {name for name, _ in table.values() if name != "model"}
    assert names and not names - set(TRAIN_FIELDS) - set(INFER_FIELDS), sorted(names - set(TRAIN_FIELDS) -
                                                                               set(INFER_FIELDS))

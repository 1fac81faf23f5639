"""Bad input, across every command and the API: one clear line naming the field, exit 2, never a traceback.

The table is the reliability notes' 254-case CLI table (``shared/notes/reliability-findings.md`` §6; its case
numbers in the comments) and the reproducers of §3-5, run in-process through ``vramwise.cli.main``. The oracle is
the project's rule for bad input (``errors.py``): exit status 2, exactly one stderr line beginning
``vramwise: error:``, nothing on stdout, no traceback, and the line names the field or the value at fault
(each case lists what it must name; ``a|b`` accepts either). API cases assert a ``VramwiseError`` subclass.

A few cases can hang or exhaust memory when the bug they guard against is back (a FIFO, ``/dev/zero``, configs
with 10^9 or more layers, a 999,999,937-head config, ``fit --layouts`` of 10^300): those run ``python -m vramwise``
in a child with a wall-clock limit and an address-space limit, so that a regression fails the test instead of
stalling the suite.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vramwise
from reliability.conftest import run_cli
from vramwise.errors import VramwiseError


def case(cid: str, argv: str | list[str], *needles: str, finding: str | None = None, child: bool = False) -> Any:
    """One row: ``argv`` (``{bad}`` is the bad-files folder), what the error line must name; ``child`` runs it in a
    limited child process (a case that loops or allocates without end when its bug is back)."""
    args = argv.split(" ") if isinstance(argv, str) else argv
    return pytest.param(args, needles, child, id=cid)  # `finding` names the reliability finding it reproduces


A256 = "a" * 256

CLI_CASES = [
    # --- files (§6 1-22) ---------------------------------------------------------------------------------------
    case("file-malformed", "infer {bad}/malformed.json", "malformed.json", "json"),
    case("file-list", "infer {bad}/list.json", "list.json", "object"),
    case("file-number", "infer {bad}/number.json", "number.json", "object"),
    case("file-string", "infer {bad}/string.json", "string.json", "object"),
    case("file-null", "infer {bad}/null.json", "null.json", "object"),
    case("file-empty", "infer {bad}/empty.json", "empty.json"),
    case("file-blank", "infer {bad}/blank.json", "blank.json"),
    case("file-binary", "infer {bad}/binary.json", "binary.json", finding="C1"),
    case("file-binary-json", "infer {bad}/binary.json --json", "binary.json", finding="C1"),
    case("file-binary-train", "train {bad}/binary.json", "binary.json", finding="C1"),
    case("file-binary-fit", "fit {bad}/binary.json --gpu h100-80gb --max batch", "binary.json", finding="C1"),
    case("file-binary-verify", "verify {bad}/binary.json", "binary.json", finding="C1"),
    case("file-latin1", "infer {bad}/latin1.json", "latin1.json", finding="C1"),
    case("file-bom", "infer {bad}/bom.json", "bom.json|gpt5"),
    case("file-utf16", "infer {bad}/utf16.json", "utf16.json|gpt5", finding="C1"),
    case("file-deep-nesting", "infer {bad}/deep.json", "deep.json", finding="C3"),
    case("file-int-5000-digits", "infer {bad}/bigint.json", "bigint.json", finding="C2"),
    case("dir-empty", "infer {bad}/emptydir", "emptydir"),
    case("dev-null", "infer /dev/null", "/dev/null"),
    case("symlink-loop", "infer {bad}/loop.json", "loop.json"),
    case("path-missing", "infer nosuch/dir/config.json", "nosuch/dir"),
    case("pickle-dir", "infer {bad}/pickledir", "pickledir", finding="C1"),
    case("pickle-dir-train", "train {bad}/pickledir", "pickledir", finding="C1"),
    # --- config fields (§6 23-56, U7, U8, U12) -------------------------------------------------------------
    case("cfg-no-model_type", "infer {bad}/no_model_type.json", "model_type"),
    case("cfg-unknown-model_type", "infer {bad}/unknown_type.json", "gpt5"),
    case("cfg-int-model_type", "infer {bad}/int_type.json", "model_type"),
    case("cfg-empty-model_type", "infer {bad}/empty_type.json", "model_type"),
    case("cfg-no-hidden", "infer {bad}/no_hidden.json", "hidden_size"),
    case("cfg-hidden-str", "infer {bad}/hidden_str.json", "hidden_size"),
    case("cfg-hidden-float", "infer {bad}/hidden_float.json", "hidden_size"),
    case("cfg-hidden-bool", "infer {bad}/hidden_bool.json", "hidden_size"),
    case("cfg-hidden-null", "infer {bad}/hidden_null.json", "hidden_size"),
    case("cfg-hidden-neg", "infer {bad}/hidden_neg.json", "hidden_size"),
    case("cfg-hidden-zero", "infer {bad}/hidden_zero.json", "hidden_size"),
    case("cfg-hidden-nan", "infer {bad}/hidden_nan.json", "hidden_size|NaN"),  # refused as JSON, before the field
    case("cfg-hidden-inf", "infer {bad}/hidden_inf.json", "hidden_size|Infinity"),
    case("cfg-hidden-1e308", "infer {bad}/hidden_1e308.json", "hidden_size"),
    case("cfg-hidden-1e30", "infer {bad}/hidden_1e30.json", "hidden_size", finding="W9"),
    case("cfg-hidden-1e30-train", "train {bad}/hidden_1e30.json", "hidden_size", finding="W9"),
    case("cfg-vocab-1e30", "infer {bad}/vocab_1e30.json", "vocab_size", finding="W9"),
    case("cfg-vocab-1e30-json", "infer {bad}/vocab_1e30.json --json", "vocab_size", finding="W9"),
    case("cfg-vocab-1e400", "infer {bad}/vocab_1e400.json", "vocab_size", finding="C7"),
    case("cfg-layers-1e400", "infer {bad}/layers_1e400.json", "num_hidden_layers", finding="C7", child=True),
    case("cfg-layers-1e400-train", "train {bad}/layers_1e400.json", "num_hidden_layers", finding="C7", child=True),
    case("cfg-layers-1e30", "infer {bad}/layers_1e30.json", "num_hidden_layers", finding="C7", child=True),
    case("cfg-heads-nodiv", "infer {bad}/heads_nodiv.json", "num_attention_heads"),
    case("cfg-kv-nodiv", "infer {bad}/kv_nodiv.json", "num_key_value_heads"),
    case("cfg-kv>heads", "infer {bad}/kv_gt_heads.json", "num_key_value_heads"),
    case("cfg-tie-str", "infer {bad}/tie_str.json", "tie_word_embeddings"),
    case("cfg-dtype-garbage", "infer {bad}/dtype_garbage.json", "dtype", finding="W8"),
    case("cfg-dtype-int", "infer {bad}/dtype_int.json", "dtype", finding="W8"),
    case("cfg-maxpos-str", "infer {bad}/maxpos_str.json", "max_position_embeddings", finding="C8"),
    case("cfg-maxpos-list", "infer {bad}/maxpos_list.json", "max_position_embeddings", finding="C8"),
    case("cfg-maxpos-dict-train", "train {bad}/maxpos_dict.json", "max_position_embeddings", finding="C8"),
    case("cfg-intermediate-0", "infer {bad}/intermediate_zero.json", "intermediate_size"),
    case("cfg-layers-0", "infer {bad}/layers_zero.json", "num_hidden_layers"),
    case("cfg-topk>experts", "infer {bad}/mixtral_topk.json", "num_experts_per_tok", finding="W2"),
    case("cfg-topk>experts-train", "train {bad}/mixtral_topk.json", "num_experts_per_tok", finding="W2"),
    case("cfg-remote-code-type", "infer {bad}/remote_code.json", "evil_model"),
    case("cfg-text_config-int-type", "infer {bad}/text_config_weird.json", "model_type"),
    case("cfg-escape-model_type", "infer {bad}/escape_type.json", "model_type", finding="U7"),
    case("cfg-hidden-1mb-string", "infer {bad}/hidden_longstr.json", "hidden_size"),
    # --- names and sizes (§6 57-83, C4-C6) ---------------------------------------------------------------
    case("name-unknown", "infer llama-9", "llama-9"),
    case("name-typo", "infer lama-2-7b", "lama-2-7b"),
    case("name-hub-id", "infer meta-llama/Llama-3-8B", "meta-llama/Llama-3-8B"),
    case("name-traversal", "infer ../../../../../etc/passwd", "passwd"),
    case("name-traversal-dir", "infer ../../../../../etc", "etc"),
    case("name-unicode", "infer 模型-7b", "模型-7b"),
    case("name-empty", ["infer", ""], "model|empty|''", finding="U4"),
    case("name-space", ["infer", " "], "model"),
    case("name-256-chars", ["infer", A256], "aaaaaaaa", finding="C5"),
    case("name-256-chars-verify", ["verify", A256], "aaaaaaaa", finding="C5"),
    case("name-tilde-user", "infer ~nosuchuser/config.json", "nosuchuser", finding="C6"),
    case("name-tilde-only-user", "infer ~nosuchuser", "nosuchuser", finding="C6"),
    case("name-tilde-verify", "verify ~nosuchuser/config.json", "nosuchuser", finding="C6"),
    case("size-abc-b", ["infer", "abc b"], "abc b"),
    case("size-0b", "infer 0b", "0b"),
    case("size-neg", "infer -- -7b", "-7b"),
    case("size-1e400", "infer 1e400", "1e400", finding="C4"),
    case("size-1E400-textbook", "train 1E400 --mode textbook", "1E400", finding="C4"),
    case("size-1e308t", "infer 1e308t", "1e308t", finding="C4"),
    case("size-1e400-verify", "verify 1e400", "1e400", finding="C4"),
    case("size-1e30", "infer 1e30 --mode textbook", "1e30", finding="W9"),
    case("size-nan", "infer nan", "nan"),
    case("size-0x10", "infer 0x10", "0x10"),
    case("size-7b-nf4", "infer 7b -f nf4", "nf4"),
    case("size-7b-format-bogus", "infer 7b -f bogus", "bogus"),
    case("catalog.json", "infer llama-2-7b.json", "llama-2-7b.json"),
    # --- infer settings (§6 84-124, C7, C9) ----------------------------------------------------------------
    case("infer-batch-0", "infer llama-2-7b -b 0", "batch"),
    case("infer-batch--1", "infer llama-2-7b -b -1", "batch"),
    case("infer-batch-1e12", "infer llama-2-7b -b 1e12", "batch"),
    case("infer-batch-x", "infer llama-2-7b -b x", "batch"),
    case("infer-batch-10^12", "infer llama-2-7b -b 1000000000000", "batch", finding="W9"),
    case("infer-batch-10^300", ["infer", "llama-2-7b", "-b", "1" + "0" * 300], "batch", finding="C7"),
    case("infer-batch-10^300-json", ["infer", "llama-2-7b", "--json", "-b", "1" + "0" * 300], "batch", finding="C7"),
    case("infer-context-0", "infer llama-2-7b -s 0", "context"),
    case("infer-context-neg", "infer llama-2-7b -s -5", "context"),
    case("infer-context-10^300", ["infer", "llama-2-7b", "-s", "1" + "0" * 300], "context", finding="W9"),
    case("infer-new--1", "infer llama-2-7b -n -1", "new_tokens"),
    case("infer-new-10^300", ["infer", "llama-2-7b", "-n", "1" + "0" * 300], "new_tokens", finding="W9"),
    case("infer-tp-3", "infer llama-2-7b --tp 3", "tp"),
    case("infer-tp-0", "infer llama-2-7b --tp 0", "tp"),
    case("infer-tp-64", "infer llama-2-7b --tp 64", "tp"),
    case("infer-deepseek-tp3", "infer deepseek-v3 --tp 3", "tp"),
    case("infer-format-bogus", "infer llama-2-7b -f fp7", "fp7"),
    case("infer-format-gptq-5bit", "infer llama-2-7b -f gptq-5bit-g128", "gptq-5bit-g128"),
    case("infer-format-gptq-g0", "infer llama-2-7b -f gptq-4bit-g0", "gptq-4bit-g0"),
    case("infer-kv-dtype-int4", "infer llama-2-7b --kv-dtype int4", "kv_dtype"),
    case("infer-attention-bogus", "infer llama-2-7b --attention paged", "attention"),
    case("infer-gpu-bogus", "infer llama-2-7b --gpu h300", "h300"),
    case("infer-gpu-bare-number", "infer llama-2-7b --gpu 24", "24GiB"),  # a unit is never guessed
    case("infer-gpu-ambiguous-unit", "infer llama-2-7b --gpu 80G", "80GiB"),
    case("infer-gpu-count-vs-tp", "infer llama-2-7b --gpu 4xh100 --tp 2", "tp"),
    case("train-gpu-count-vs-layout", "train llama-2-7b --gpu 8xh100 --dp 3", "gpus(8)"),
    case("train-no-bf16", "train llama-2-7b --gpu t4 --precision bf16-mixed", "fp16-mixed"),
    case("infer-serve-no-gpu", "infer llama-2-7b --serve", "gpu"),
    case("infer-serve-textbook", "infer llama-2-7b --serve --gpu a100-80gb --mode textbook", "textbook"),
    case("infer-serve-bare", "infer 7b --serve --gpu a100-80gb", "architecture"),
    case("infer-gpu-util-0", "infer llama-2-7b --serve --gpu a100-80gb --gpu-util 0", "gpu_util"),
    case("infer-gpu-util-nan", "infer llama-2-7b --serve --gpu a100-80gb --gpu-util nan", "gpu_util"),
    case("infer-gpu-util-1.5", "infer llama-2-7b --serve --gpu a100-80gb --gpu-util 1.5", "gpu_util"),
    case("infer-gpu-util-noserve", "infer llama-2-7b --gpu-util 0.5", "gpu_util"),
    case("infer-max-batched--5", "infer llama-2-7b --serve --gpu a100-80gb --max-batched-tokens -5", "batched",
         finding="C9"),
    case("infer-max-batched--1-l4", "infer gpt2 --serve --gpu l4 --max-batched-tokens -1", "batched", finding="C9"),
    case("infer-alloc-frac-1", "infer llama-2-7b --allocator-fraction 1", "allocator_fraction"),
    case("infer-alloc-frac-nan", "infer llama-2-7b --allocator-fraction nan", "allocator_fraction"),
    case("infer-alloc-frac-neg", "infer llama-2-7b --allocator-fraction -0.1", "allocator_fraction"),
    case("infer-cuda-ctx--1", "infer llama-2-7b --cuda-context -1", "cuda_context"),
    case("infer-cuda-ctx-10^300", ["infer", "llama-2-7b", "--cuda-context", "1" + "0" * 300], "cuda_context",
         finding="W9"),
    case("infer-kv-block-0", "infer llama-2-7b --kv-block 0", "kv_block"),
    case("infer-kv-block-10^9", "infer llama-2-7b --kv-block 1000000000", "kv_block", finding="W9"),
    case("infer-prefill-chunk-0", "infer llama-2-7b --prefill-chunk 0", "prefill_chunk"),
    case("infer-images-neg", "infer llama-2-7b --images -1", "images"),
    case("infer-images-text-model", "infer llama-2-7b --images 2", "images"),
    case("train-images", "train llama-2-7b --images 2", "--images"),
    case("infer-mode-bogus", "infer llama-2-7b --mode fast", "mode"),
    case("infer-units-bogus", "infer llama-2-7b --units tb", "units"),
    case("infer-unknown-flag", "infer llama-2-7b --batchsize 2", "--batchsize"),
    case("infer-textbook-tp3", "infer llama-2-7b --mode textbook --tp 3", "tp"),
    case("infer-textbook-bare-tp3", "infer 7b --mode textbook --tp 3", "tp"),
    case("infer-json-error", "infer llama-2-7b -b 0 --json", "batch"),
    case("infer-json-badfile", "infer {bad}/malformed.json --json", "malformed.json"),
    case("infer-json-argparse", "infer llama-2-7b -b x --json", "batch"),
    case("infer-gpt2-beyond-positions", "infer gpt2 -s 100000", "context|position", finding="W7"),
    case("infer-opt-beyond-positions", "infer opt-125m -s 4096 -b 1", "context|position", finding="W7"),
    case("infer-layers-flag", "infer llama-2-7b --layers 2", "--layers"),
    # --- train settings (§6 125-168) ---------------------------------------------------------------------
    case("train-zero-4", "train llama-2-7b --dp 8 --zero 4", "zero"),
    case("train-zero-1-dp1", "train llama-2-7b --zero 1", "dp"),
    case("train-fsdp+zero", "train llama-2-7b --dp 8 --zero 3 --fsdp full", "fsdp"),
    case("train-fsdp-bogus", "train llama-2-7b --dp 8 --fsdp ddp", "fsdp"),
    case("train-pp>layers", "train llama-2-7b --pp 33", "pp"),
    case("train-interleave-nopp", "train llama-2-7b --interleave 2", "interleave"),
    case("train-interleave-too-many", "train llama-2-7b --pp 4 --interleave 9", "interleave"),
    case("train-lora-r-0", "train llama-2-7b --peft lora --lora-r 0", "lora_r"),
    case("train-lora-r-10^9", "train llama-2-7b --peft lora --lora-r 1000000000", "lora_r", finding="W9"),
    case("train-lora-targets-bogus", "train llama-2-7b --peft lora --lora-targets foo_proj", "foo_proj"),
    case("train-peft-bogus", "train llama-2-7b --peft adalora", "peft"),
    case("train-optimizer-bogus", "train llama-2-7b --optimizer adam9", "optimizer"),
    case("train-precision-bogus", "train llama-2-7b --precision fp4", "precision"),
    case("train-recompute-bogus", "train llama-2-7b --recompute some", "recompute"),
    case("train-dp-0", "train llama-2-7b --dp 0", "dp"),
    case("train-dp-x", "train llama-2-7b --dp x", "dp"),
    case("train-ep-dense", "train llama-2-7b --dp 2 --ep 2", "ep"),
    case("train-ep-nodiv", "train mixtral-8x7b --dp 3 --ep 3", "ep"),
    case("train-cp-nodiv", "train llama-2-7b --cp 3", "cp"),
    case("train-freeze>layers", "train llama-2-7b --freeze-layers 100", "freeze_layers"),
    case("train-freeze--1", "train llama-2-7b --freeze-layers -1", "freeze_layers"),
    case("train-seq-0", "train llama-2-7b --seq 0", "seq"),
    case("train-seq-10^300", ["train", "llama-2-7b", "--seq", "1" + "0" * 300], "seq", finding="W9"),
    case("train-grad-accum-0", "train llama-2-7b --grad-accum 0", "grad_accum"),
    case("train-loss-bogus", "train llama-2-7b --loss fused", "loss"),
    case("train-loss-chunk-0", "train llama-2-7b --loss chunked --loss-chunk 0", "loss_chunk"),
    case("train-offload-nozero", "train llama-2-7b --offload optimizer", "offload"),
    case("train-offload-params-z2", "train llama-2-7b --dp 2 --zero 2 --offload params", "offload"),
    case("train-sp-notp", "train llama-2-7b --sp", "sp"),
    case("train-fsdp-shard-nodiv", "train llama-2-7b --dp 4 --fsdp hybrid --fsdp-shard 3", "fsdp_shard"),
    case("train-seed-001", "train llama-2-7b --mode textbook --seed 001", "seed"),
    case("train-seed-accurate", "train llama-2-7b --seed 000", "seed"),
    case("train-lora-fraction-0", "train llama-2-7b --mode textbook --seed 000 --lora-fraction 0", "lora_fraction"),
    case("train-lora-fraction-nan", "train llama-2-7b --mode textbook --seed 000 --lora-fraction nan", "lora_fraction"),
    case("train-lora-dropout-1", "train llama-2-7b --peft lora --lora-dropout 1", "lora_dropout"),
    case("train-per-stage-textbook", "train llama-2-7b --mode textbook --per-stage", "per-stage"),
    case("train-lomo-lora", "train llama-2-7b --optimizer lomo --peft lora", "lomo"),
    case("train-grad-dtype-bogus", "train llama-2-7b --grad-dtype fp8", "grad_dtype"),
    case("train-optimizer-impl-bogus", "train llama-2-7b --optimizer-impl cuda", "optimizer_impl"),
    case("train-bare-accurate", "train 7b", "architecture"),
    case("train-bare-textbook-tp3", "train 7b --mode textbook --tp 3", "tp|architecture"),
    case("train-textbook-tp3", "train llama-2-7b --mode textbook --tp 3", "tp"),
    case("train-textbook-pp>layers", "train llama-2-7b --mode textbook --pp 64", "pp"),
    case("train-batch-10^300", ["train", "llama-2-7b", "-b", "1" + "0" * 300], "batch", finding="C7"),
    case("train-json-error", "train llama-2-7b --zero 4 --json", "zero"),
    case("train-bert-nohead", "train {bad}/bert_nohead.json", "bert_nohead", "architectures"),
    case("train-gpt2-tp5", "train gpt2 --tp 5", "tp"),
    case("train-serve", "train gpt2 --serve", "--serve"),
    # --- verify (§6 172-181, 251-253): each refused before anything is traced --------------------------------
    case("verify-unknown", "verify llama-9", "llama-9"),
    case("verify-missing", "verify nosuch.json", "nosuch.json"),
    case("verify-layers-0", "verify llama-2-7b --layers 0", "layers"),
    case("verify-layers-x", "verify llama-2-7b --layers x", "layers"),
    case("verify-malformed", "verify {bad}/malformed.json", "malformed.json"),
    case("verify-no-model", "verify", "model"),
    # --- fit (§6 182-202, 225-228) --------------------------------------------------------------------------
    case("fit-no-gpu", "fit llama-2-7b --max batch", "--gpu"),
    case("fit-no-question", "fit llama-2-7b --gpu a100-80gb", "--max"),
    case("fit-two-questions", "fit llama-2-7b --gpu a100-80gb --max batch --min-gpus", "--min-gpus"),
    case("fit-bare", "fit 7b --gpu a100-80gb --max batch", "architecture"),
    case("fit-best-format-noinfer", "fit llama-2-7b --gpu a100-80gb --best-format", "--infer"),
    case("fit-layouts-0", "fit llama-2-7b --gpu a100-80gb --layouts 0", "layouts"),
    case("fit-layouts--4", "fit llama-2-7b --gpu a100-80gb --layouts -4", "layouts"),
    case("fit-layouts-x", "fit llama-2-7b --gpu a100-80gb --layouts x", "layouts"),
    case("fit-max-batch--1", "fit llama-2-7b --gpu a100-80gb --layouts 8 --max-batch -1", "max_batch"),
    case("fit-min-gpus-infer", "fit llama-2-7b --gpu a100-80gb --min-gpus --infer", "--min-gpus"),
    case("fit-gpu-bogus", "fit llama-2-7b --gpu x100 --max batch", "x100"),
    case("fit-gpu-unknown", "fit deepseek-v3 --gpu gtx-1080 --max batch", "gtx-1080"),  # rtx-3060 joined the catalog
    case("fit-max-bogus", "fit llama-2-7b --gpu a100-80gb --max tp", "--max"),
    case("fit-min-gpus-ep2", "fit mixtral-8x7b --gpu a100-80gb --min-gpus --dp 2 --ep 2", "ep"),
    case("fit-min-gpus-fsdp-shard", "fit llama-2-7b --gpu a100-80gb --min-gpus --dp 4 --fsdp hybrid --fsdp-shard 2",
         "fsdp_shard"),
    case("fit-zero-4", "fit llama-2-7b --gpu a100-80gb --max batch --dp 2 --zero 4", "zero"),
    case("fit-binary", "fit {bad}/binary.json --gpu l4 --max batch --infer", "binary.json", finding="C1"),
    case("fit-layouts-10^300", ["fit", "llama-2-7b", "--gpu", "a100-80gb", "--layouts", "1" + "0" * 300], "layouts",
         finding="W9", child=True),
    # --- plot (§6 203-224) ----------------------------------------------------------------------------------
    case("plot-points-abc", "plot llama-2-7b --points abc -o {bad}/p.png", "points"),
    case("plot-points-0", "plot llama-2-7b --points 0,1 -o {bad}/p.png", "points"),
    case("plot-points-neg", "plot llama-2-7b --points=-1 -o {bad}/p.png", "points"),
    case("plot-out-txt", "plot llama-2-7b -o {bad}/x.txt", "x.txt"),
    case("plot-out-noext", "plot llama-2-7b -o {bad}/x", "png"),
    case("plot-out-devfull", "plot llama-2-7b -o /dev/full", "full"),
    case("plot-bare", "plot 7b -o {bad}/p.png", "architecture"),
    case("plot-vs-bogus", "plot llama-2-7b --vs tp", "--vs"),
    case("plot-gpu-bogus", "plot llama-2-7b --gpu x -o {bad}/p.png", "'x'"),
    case("plot-zero4", "plot llama-2-7b --dp 2 --zero 4 -o {bad}/p.png", "zero"),
    case("plot-unknown-model", "plot llama-9 -o {bad}/p.png", "llama-9"),
    case("plot-out-parent-is-file", "plot llama-2-7b -o {bad}/list.json/x.png", "list.json", finding="C11"),
    case("plot-out-existing-dir", "plot llama-2-7b -o {bad}/adir.png", "adir.png", finding="C11"),
    case("plot-out-proc", "plot llama-2-7b -o /proc/vramwise-test.png", "/proc/vramwise-test.png", finding="C11"),
    # --- listings and the command itself (§6 216-221) ----------------------------------------------------
    case("models-extra-arg", "models foo", "foo"),
    case("models-bogus-flag", "models --bogus", "--bogus"),
    case("gpus-extra-arg", "gpus h100", "h100"),
    case("gpus-bogus-flag", "gpus --bogus", "--bogus"),
    case("formats-extra-arg", "formats int4", "int4"),
    case("formats-bogus-flag", "formats --bogus", "--bogus"),
    case("no-subcommand", [], "command"),
    case("bogus-subcommand", "estimate llama-2-7b", "estimate"),
    case("infer-no-model", "infer", "model"),
    case("train-no-model", "train", "model"),
    case("fit-no-model", "fit --gpu l4 --max batch", "model"),
    case("plot-no-model", "plot", "model"),
]


def names(line: str, needle: str) -> bool:
    """``line`` names one of ``needle``'s ``|``-separated alternatives; a field may be named as its option
    (``gpu_util`` as ``--gpu-util``)."""
    low = line.lower()
    return any(alt.lower() in low or alt.lower().replace("_", "-") in low for alt in needle.split("|"))


def check_one_line(rc: int, out: str, err: str, needles: tuple[str, ...]) -> str:
    """The bad-input rule: exit 2, nothing on stdout, one stderr line that names every needle."""
    # a traceback starts a line; a config's own text may hold the word, escaped inside the one line (U7)
    assert not any(x.startswith("Traceback") for x in err.splitlines()), err[-2000:]
    assert rc == 2, f"exit {rc}; stdout {out[:300]!r}; stderr {err[-1000:]!r}"
    assert out == "", f"stdout should be empty: {out[:300]!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"{len(lines)} stderr lines: {err[:1000]!r}"
    line = lines[0]
    assert line.startswith("vramwise: error: ") and line[len("vramwise: error: ") :].strip(), line
    assert "\x1b" not in line and "\r" not in line, f"terminal control characters in {line[:300]!r}"
    for needle in needles:
        assert names(line, needle), f"{needle!r} not named in {line[:500]!r}"
    return line


@pytest.mark.parametrize(("argv", "needles", "child"), CLI_CASES)
def test_cli_refuses_in_one_line(
    argv: list[str], needles: tuple[str, ...], child: bool, bad: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.replace("{bad}", str(bad)) for a in argv]
    if child:
        check_one_line(*_run_child(args, bad), tuple(needles))
        return
    try:
        rc, out, err = run_cli(args, capsys)
    except Exception as exc:  # anything but a VramwiseError escaping main is a crash
        pytest.fail(f"crash: {type(exc).__name__}: {str(exc)[:300]}")
    check_one_line(rc, out, err, tuple(n.replace("{bad}", str(bad)) for n in needles))


# Nothing fits: not bad input but the CI gate's "does not fit" (exit 3, cli/__init__.py): the reason in one stdout
# line that names the needle, then the advice (app/advice.py); nothing on stderr
NOFIT_CASES = [
    case("fit-doesnt-fit-l4", "fit deepseek-v3 --gpu l4 --max batch", "batch"),
    case("fit-best-format-nofit", "fit deepseek-v3 --gpu l4 --best-format --infer", "awq-4bit-g128|format"),
    case("fit-max-seq-cp3", "fit llama-2-7b --gpu a100-80gb --max seq --cp 3 --seq 3", "seq"),
]


@pytest.mark.parametrize(("argv", "needles", "child"), NOFIT_CASES)
def test_nothing_fits_is_exit_3_with_one_reason_line(
    argv: list[str], needles: tuple[str, ...], child: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run_cli(argv, capsys)
    assert rc == 3 and err == "", (rc, err[-500:])
    first = out.splitlines()[0]
    assert first.startswith("DOES NOT FIT: ") and "Traceback" not in out
    for needle in needles:
        assert names(first, needle), f"{needle!r} not named in {first[:500]!r}"


def test_table_size() -> None:
    """The issue asks for at least 120 cases across every command and the API."""
    commands = {p.values[0][0] for p in CLI_CASES if p.values[0]}
    assert {"infer", "train", "fit", "plot", "verify", "models", "gpus", "formats"} <= commands
    assert len(CLI_CASES) + len(NOFIT_CASES) + len(API_CASES) >= 120


# --- the four cases that hang or eat memory when their bug is back: a child with limits -------------------------


def _limited() -> None:  # in the child, before exec: 2 GiB of address space, so /dev/zero fails fast
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


_CHILD_S = 8  # a fresh `vramwise train` of a catalog model takes about 1 s


def _run_child(args: list[str], cwd: Path) -> tuple[int, str, str]:
    src = str(Path(vramwise.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    try:
        p = subprocess.run(
            [sys.executable, "-m", "vramwise", *args],
            capture_output=True,
            text=True,
            timeout=_CHILD_S,
            cwd=cwd,
            env=env,
            preexec_fn=_limited,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: vramwise {' '.join(args)[:200]} did not end within {_CHILD_S} s")
    return p.returncode, p.stdout, p.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "h1.json"
    os.mkfifo(fifo)
    rc, out, err = _run_child(["infer", str(fifo)], tmp_path)
    check_one_line(rc, out, err, ("h1.json",))


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    rc, out, err = _run_child(["infer", "/dev/zero"], tmp_path)
    check_one_line(rc, out, err, ("/dev/zero",))


def test_a_billion_layers_is_refused_fast(bad: Path) -> None:
    rc, out, err = _run_child(["train", str(bad / "layers_1e9.json")], bad)
    check_one_line(rc, out, err, ("num_hidden_layers",))


def test_a_prime_head_count_with_tp_is_refused_fast(bad: Path) -> None:
    rc, out, err = _run_child(["infer", str(bad / "heads_prime.json"), "--tp", "2"], bad)
    check_one_line(rc, out, err, ("num_attention_heads|head|tp",))


# --- the API: the same refusals as VramwiseError subclasses -----------------------------------------------------


def _spec(name: str) -> Any:
    return vramwise.resolve_model(name)


def _infer(**flat: Any) -> Callable[[], object]:
    return lambda: vramwise.InferSetup.from_flat(**flat)


def _train(**flat: Any) -> Callable[[], object]:
    return lambda: vramwise.TrainSetup.from_flat(**flat)


def api(cid: str, call: Callable[[], object], needle: str, finding: str | None = None) -> Any:
    return pytest.param(call, needle, id=cid)  # `finding` names the reliability finding the case reproduces


NAN, INF = math.nan, math.inf
API_CASES = [
    api("infer-batch-0", _infer(batch=0), "batch"),
    api("infer-batch-bool", _infer(batch=True), "batch"),
    api("infer-batch-float", _infer(batch=2.0), "batch"),
    api("infer-batch-str", _infer(batch="2"), "batch"),
    api("infer-batch-10^400", _infer(batch=10**400), "batch", "W9"),
    api("infer-context-neg", _infer(context=-1), "context"),
    api("infer-context-10^30", _infer(context=10**30), "context", "W9"),
    api("infer-new-tokens-neg", _infer(new_tokens=-1), "new_tokens"),
    api("infer-tp-0", _infer(tp=0), "tp"),
    api("infer-kv-block-0", _infer(kv_block=0), "kv_block"),
    api("infer-prefill-chunk-0", _infer(prefill_chunk=0), "prefill_chunk"),
    api("infer-kv-dtype", _infer(kv_dtype="int4"), "kv_dtype"),
    api("infer-attention", _infer(attention="paged"), "attention"),
    api("infer-mode", _infer(mode="fast"), "mode"),
    api("infer-gpu-util-nan", _infer(gpu_utilization=NAN), "gpu_utilization"),
    api("infer-gpu-util-0", _infer(gpu_utilization=0), "gpu_utilization"),
    api("infer-cuda-ctx-nan", _infer(cuda_context_mib=NAN), "cuda_context_mib", "W6"),
    api("infer-cuda-ctx-inf", _infer(cuda_context_mib=INF), "cuda_context_mib", "W6"),
    api("infer-cuda-ctx-half", _infer(cuda_context_mib=0.5), "cuda_context_mib", "W6"),
    api("infer-cuda-ctx-neg", _infer(cuda_context_mib=-1), "cuda_context_mib"),
    api("infer-alloc-nan", _infer(allocator_fraction=NAN), "allocator_fraction"),
    api("infer-alloc-1", _infer(allocator_fraction=1.0), "allocator_fraction"),
    api("train-batch-0", _train(batch=0), "batch"),
    api("train-seq-float", _train(seq=2048.0), "seq"),
    api("train-grad-accum-bool", _train(grad_accum=False), "grad_accum"),
    api("train-zero-4", _train(dp=2, zero=4), "zero"),
    api("train-zero-true", _train(dp=2, zero=True), "zero", "W6"),
    api("train-zero-float", _train(dp=2, zero=2.0), "zero", "W6"),
    api("train-zero-str", _train(dp=2, zero="2"), "zero"),
    api("train-dp-0", _train(dp=0), "dp"),
    api("train-dp-10^30", _train(dp=10**30), "dp", "W9"),
    api("train-fsdp", _train(dp=2, fsdp="ddp"), "fsdp"),
    api("train-offload", _train(dp=2, zero=3, offload="disk"), "offload"),
    api("train-lora-r-0", _train(peft="lora", lora_r=0), "lora_r"),
    api("train-lora-r-10^9", _train(peft="lora", lora_r=10**9), "lora_r", "W9"),
    api("train-lora-dropout-nan", _train(peft="lora", lora_dropout=NAN), "lora_dropout"),
    api("train-lora-fraction-inf", _train(mode="textbook", lora_fraction=INF), "lora_fraction"),
    api("train-precision", _train(precision="fp4"), "precision"),
    api("train-optimizer", _train(optimizer="adam9"), "optimizer"),
    api("train-cuda-ctx-nan", _train(cuda_context_mib=NAN), "cuda_context_mib", "W6"),
    api("train-alloc-inf", _train(allocator_fraction=INF), "allocator_fraction"),
    api("train-cp-nodiv", _train(seq=2048, cp=3), "cp"),
    api("train-sp-notp", _train(sp=True), "sp"),
    api("resolve-unknown", lambda: _spec("llama-9"), "llama-9"),
    api("resolve-missing-file", lambda: _spec("nosuch/config.json"), "nosuch"),
    api("resolve-empty", lambda: _spec(""), "model|empty|''", "U4"),
    api("resolve-1e400", lambda: _spec("1e400"), "1e400", "C4"),
    api("resolve-256", lambda: _spec(A256), "aaaaaaaa", "C5"),
    api("resolve-tilde", lambda: _spec("~nosuchuser"), "nosuchuser", "C6"),
    api("estimate-infer-tp3", lambda: vramwise.estimate_inference(_spec("llama-2-7b"), vramwise.InferSetup(tp=3)),
        "tp"),
    api("estimate-infer-format", lambda: vramwise.estimate_inference(
        _spec("llama-2-7b"), vramwise.InferSetup(weight_format="fp7")), "fp7"),
    api("estimate-infer-bare-nf4", lambda: vramwise.estimate_inference(
        _spec("7b"), vramwise.InferSetup(weight_format="nf4")), "nf4"),
    api("inference-peak-tp64", lambda: vramwise.inference_peak(_spec("llama-2-7b"), vramwise.InferSetup(tp=64)),
        "tp"),
    api("estimate-infer-gpt2-positions", lambda: vramwise.estimate_inference(
        _spec("gpt2"), vramwise.InferSetup(context=100_000)), "context|position", "W7"),
    api("estimate-train-bare", lambda: vramwise.estimate_training(_spec("7b"), vramwise.TrainSetup()),
        "architecture"),
    api("estimate-train-bert", lambda: vramwise.estimate_training(_spec("bert-base"), vramwise.TrainSetup()),
        "bert-base"),
    api("estimate-train-pp33", lambda: vramwise.estimate_training(
        _spec("llama-2-7b"), vramwise.TrainSetup.from_flat(pp=33)), "pp"),
    api("training-peak-tp5", lambda: vramwise.training_peak(_spec("gpt2"), vramwise.TrainSetup.from_flat(tp=5)),
        "tp"),
    api("estimate-stages-ep-dense", lambda: vramwise.estimate_stages(
        _spec("llama-2-7b"), vramwise.TrainSetup.from_flat(dp=2, ep=2)), "ep"),
    api("estimate-train-freeze", lambda: vramwise.estimate_training(
        _spec("llama-2-7b"), vramwise.TrainSetup.from_flat(freeze_layers=100)), "freeze_layers"),
    api("estimate-train-lora-targets", lambda: vramwise.estimate_training(
        _spec("llama-2-7b"), vramwise.TrainSetup.from_flat(peft="lora", lora_targets=("foo_proj",))), "foo_proj"),
]


@pytest.mark.parametrize(("call", "needle"), API_CASES)
def test_api_raises_a_vramwise_error(call: Callable[[], object], needle: str) -> None:
    try:
        result = call()
    except VramwiseError as err:
        message = str(err)
        assert "\n" not in message, message[:500]
        assert names(message, needle), f"{needle!r} not in {message[:500]!r}"
        return
    except Exception as exc:
        pytest.fail(f"not a VramwiseError: {type(exc).__name__}: {str(exc)[:300]}")
    pytest.fail(f"accepted: {str(result)[:300]}")

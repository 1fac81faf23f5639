"""A llama.cpp log's model buffer is compared on the GPU, not on the host: llama.cpp prints its host-side model
buffer (the input embeddings it never offloads) before the GPU's, and the plan's per-device figures are a GPU's.

Oracles: bench/data/engine_logs/llamacpp-llama3-8b-q4km-rtx3070-tp1-1.log (developer0hye/llama-3-korean-bllossom-8b-
q4-docker README.md, llama-cpp-python on an RTX 3070) as a published measurement, and the KV arithmetic written out.
"""

from __future__ import annotations

from pathlib import Path

from vramwise.app.verify_log import compare_parsed
from vramwise.engines.compare import figure_rows
from vramwise.engines.logs import load_log, parse_log

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "data" / "engine_logs"
LOG = CORPUS / "llamacpp-llama3-8b-q4km-rtx3070-tp1-1.log"
MIB = 2**20


def test_the_gpu_model_buffer_is_compared_not_the_host_one() -> None:
    c = compare_parsed(load_log(LOG), model="llama-3-8b", gpu="H100", options={"format": "q4_k_m"})
    rows = {r.name: r for r in c.rows}
    assert rows["weights"].rank == "CUDA0" and rows["weights"].printed == "4403.49"
    assert rows["weights"].within  # the Q4_K_M layers, output and norms on the GPU, to the log's 0.01 MiB
    # 32 layers x 512 cells x (8 KV heads x 128) x K and V x 2 B (f16)
    assert rows["kv_cache"].estimate == 32 * 512 * 1024 * 2 * 2 == 64 * MIB


def test_a_host_buffer_alone_is_still_compared() -> None:
    # with no GPU line for a figure, its first (host) rank stays: nothing logged is dropped
    parsed = parse_log("llm_load_tensors:        CPU buffer size =   281.81 MiB\n")
    (row,) = figure_rows(parsed, {"weights": 1})
    assert row.rank == "CPU" and row.printed == "281.81"

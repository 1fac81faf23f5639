"""The measuring instrument itself: live-storage accounting by hand, and fake runs equal real ones."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramwise.verify.live import LiveStorages  # noqa: E402
from vramwise.verify.trace import TraceRecipe, trace_training  # noqa: E402


def test_live_storages_counts_rounded_storages_once_and_frees_them() -> None:
    with LiveStorages() as live:
        a = torch.empty(1000, dtype=torch.float32)  # 4000 B -> one 4096 B block (512-B rounding)
        view = a[10:20]  # a view shares the storage: nothing new
        b = torch.empty(3, 128, dtype=torch.bfloat16)  # 768 B -> 1024 B
        assert live.current == 4096 + 1024
        del a, view
        assert live.current == 1024
        c = torch.empty(100, dtype=torch.float64)  # 800 B -> 1024 B
        assert live.current == 2048
        assert live.peak == 4096 + 1024
        del b, c
    assert live.current == 0


def test_fake_trace_equals_real_cpu_run() -> None:
    # Tiny Llama in fp32 (real bf16 on these CPUs is ~25x slower): both runs must count the same bytes.
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 160,
        "vocab_size": 512,
    }
    recipe = TraceRecipe(batch=2, seq=32, precision="fp32")
    fake = trace_training(config, recipe)
    real = trace_training(config, recipe, fake=False)
    assert fake.peak == real.peak
    assert fake.marks == real.marks
    assert (fake.params, fake.grads, fake.optimizer_states) == (real.params, real.grads, real.optimizer_states)
    # fp32 AdamW: parameters, gradients and two states, 4 bytes each
    assert fake.params == fake.grads == fake.optimizer_states // 2 == 4 * fake.trainable

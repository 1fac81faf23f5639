"""accelerate's device_map placement, against transformers 5.24 and accelerate 1.15 themselves: the real model
built on the meta device from a tiny config, placed by ``_get_device_map`` (what ``from_pretrained(device_map=...)``
calls) and by accelerate's ``infer_auto_device_map``; every decoder layer and top-level part must land on the
same device as ours."""

from __future__ import annotations

import pytest
from tiny_configs import FAMILIES

from vramwise.engines import device_map as dm
from vramwise.spec.adapters import spec_from_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MB = 10**6
FAMILY_NAMES = ("llama", "qwen2", "mixtral", "qwen3", "phi3", "deepseek_v3", "gemma", "qwen2_moe")
CAPS = (
    {0: 30 * MB, 1: 30 * MB},  # everything fits on GPU 0
    {0: 8 * MB, 1: 8 * MB, 2: 8 * MB},
    {0: 6 * MB, 1: 20 * MB},  # GPU 0 too small for the embedding plus the reserve
    {0: 3 * MB, 1: 3 * MB, 2: 3 * MB, 3: 30 * MB},
    {0: 5 * MB, 1: 5 * MB},  # does not fit: the rest goes to the disk
)


def _config(family: str, layers: int) -> dict:
    return {**FAMILIES[family], "num_hidden_layers": layers}


def _meta(config: dict):
    cfg = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)


def _per_module(root: dm.Node, placed: dict) -> dict[str, object]:
    """Each layer-level module's device, from a cleaned device map ('' or a parent can stand for its children)."""
    out = {}
    for node in dm._walk([root]):
        for prefix in sorted(placed, key=len, reverse=True):
            if prefix in ("", node.name) or (node.name + ".").startswith(prefix + "."):
                out[node.name] = placed[prefix]
                break
    return out


def test_module_sizes_equal_transformers() -> None:
    from transformers.integrations.accelerate import compute_module_sizes

    for family in ("llama", "qwen2", "mixtral", "qwen3", "phi3"):
        config = _config(family, 3)
        sizes, _ = compute_module_sizes(_meta(config))
        root = dm.module_tree(spec_from_config(config, name=family, source="test"), 2)
        assert root.size == sizes[""], family
        assert {n.name: n.size for n in dm._walk([root])} == {n.name: sizes[n.name] for n in dm._walk([root])}


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("mode", ["balanced", "balanced_low_0", "sequential"])
def test_placement_equals_transformers(family: str, mode: str) -> None:
    from transformers.integrations.accelerate import _get_device_map

    transformers.logging.set_verbosity_error()
    for layers in (3, 8):
        config = _config(family, layers)
        model = _meta(config)
        spec = spec_from_config(config, name=family, source="test")
        root = dm.module_tree(spec, 2)
        for caps in CAPS:
            want = _get_device_map(model, mode, dict(caps), None)
            ours: dict = {k: float(v) for k, v in caps.items()}
            if mode != "sequential":
                ours = dm.balanced_memory(root, ours, low_zero=mode == "balanced_low_0", user_set=True)
            got = dm.infer_device_map(root, ours, dm.ties(spec))
            assert _per_module(root, got) == _per_module(root, want), (family, layers, caps)


def test_placement_with_the_cpu_equals_transformers() -> None:
    """Without max_memory the CPU follows the GPUs and, like GPU 0, keeps room for the largest layer."""
    from transformers.integrations.accelerate import _get_device_map

    transformers.logging.set_verbosity_error()
    config = _config("llama", 8)
    model, spec = _meta(config), spec_from_config(config, name="llama", source="test")
    root = dm.module_tree(spec, 2)
    for caps in ({0: 5 * MB, 1: 5 * MB, "cpu": 50 * MB}, {0: 2 * MB, 1: 9 * MB, "cpu": 50 * MB}):
        want = _get_device_map(model, "sequential", dict(caps), None)
        got = dm.infer_device_map(root, {k: float(v) for k, v in caps.items()}, dm.ties(spec))
        assert _per_module(root, got) == _per_module(root, want)


@pytest.mark.parametrize("family", ["llama", "mixtral", "phi3"])
def test_sequential_equals_accelerate(family: str) -> None:
    """accelerate 1.15's own infer_auto_device_map (untied models: its size rule counts a tied head twice)."""
    from accelerate.utils import infer_auto_device_map

    config = _config(family, 8)
    model = _meta(config)
    spec = spec_from_config(config, name=family, source="test")
    root = dm.module_tree(spec, 2)
    for caps in CAPS:
        want = infer_auto_device_map(model, max_memory=dict(caps), no_split_module_classes=model._no_split_modules)
        got = dm.infer_device_map(root, {k: float(v) for k, v in caps.items()}, dm.ties(spec))
        assert _per_module(root, got) == _per_module(root, want), caps


def test_balanced_budget_by_hand() -> None:
    spec = spec_from_config(_config("llama", 8), name="llama", source="test")
    root = dm.module_tree(spec, 2)
    # llama tiny, bf16: embed 8000 x 256 x 2 = 4,096,000 B (also the head); a layer 1,385,472 B
    total = 2 * 4_096_000 + 8 * 1_385_472 + 512 + 128
    assert root.size == total
    caps = dm.balanced_memory(root, {0: 80 * MB, 1: 80 * MB}, low_zero=False, user_set=True)
    # total // 2 + 1.25 x the largest module (the embedding, 4,096,000) on every GPU but the last
    assert caps == {0: total // 2 + int(1.25 * 4_096_000), 1: 80 * MB}
    low = dm.balanced_memory(root, {0: 80 * MB, 1: 80 * MB, 2: 80 * MB}, low_zero=True, user_set=True)
    per_gpu = total // 2 + int(1.25 * 4_096_000)
    assert low[1] == per_gpu and low[2] == 80 * MB
    assert low[0] == max(0, total - per_gpu - 80 * MB)
    one = dm.balanced_memory(root, {0: 80 * MB}, low_zero=False, user_set=False)
    assert one == {0: 0.9 * 80 * MB}  # one GPU, no max_memory: 90% of it

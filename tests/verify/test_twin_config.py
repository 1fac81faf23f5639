"""The twin reads the model once, through spec/load, and a failing trace is one line unless VRAMWISE_DEBUG=1.

Oracles: the adapter itself (the spec rebuilt from the keys handed to the twin equals the spec resolved), the
wrapped config written out in the test, and the exception raised by a planted failing trace.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import pytest
from tiny_configs import FAMILIES

from vramwise.catalog import models
from vramwise.errors import VerifyUnsupportedError
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import BareModel, ResolvedModel, resolve_model, resolve_model_with_config
from vramwise.verify import twin
from vramwise.verify.compare import Comparison
from vramwise.workload import InferSetup, TrainSetup


def _write(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


def _rebuilt(resolved: ResolvedModel) -> Any:
    assert resolved.raw_config is not None
    return spec_from_config(dict(resolved.raw_config), name=resolved.spec.name, source="rebuilt")


@pytest.mark.parametrize("name", sorted(models()))
def test_the_twin_gets_the_keys_the_spec_was_built_from(name: str) -> None:
    resolved = resolve_model_with_config(name)
    assert resolved.spec == resolve_model(name)  # resolve_model is the same answer without the keys
    assert _rebuilt(resolved) == resolved.spec


def test_a_multimodal_wrapper_is_a_vision_language_model(tmp_path: Path) -> None:
    # Gemma3ForConditionalGeneration builds its SigLIP tower (from SiglipVisionConfig's defaults when vision_config
    # is absent): the spec counts it, keeps the whole config, and the twin, which traces text models, refuses it
    text = FAMILIES["gemma3"]
    wrapped = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "text_config": text}
    resolved = resolve_model_with_config(_write(tmp_path, wrapped))
    assert dict(resolved.raw_config or {}) == wrapped
    assert _rebuilt(resolved) == resolved.spec and resolved.spec.vision is not None
    with pytest.raises(VerifyUnsupportedError, match="vision-language model"):
        twin._twin_config(resolved)


def test_a_supported_top_level_is_read_as_it_stands(tmp_path: Path) -> None:
    # The twin used to unwrap text_config always, the adapters only for an unknown top-level model_type: a
    # supported model carrying a text_config would have been estimated and traced as two different models.
    other = {**FAMILIES["gemma3"], "hidden_size": 512}
    data = {**FAMILIES["qwen2"], "text_config": other}
    resolved = resolve_model_with_config(_write(tmp_path, data))
    assert dict(resolved.raw_config or {}) == data
    assert _rebuilt(resolved) == resolved.spec


def test_the_handed_config_cannot_be_changed_behind_the_spec() -> None:
    resolved = resolve_model_with_config("llama-2-7b")
    with pytest.raises(TypeError):
        resolved.raw_config["hidden_size"] = 1  # type: ignore[index]


def test_a_bare_size_has_no_config_and_the_twin_says_so() -> None:
    resolved = resolve_model_with_config("7b")
    assert resolved == ResolvedModel(spec=BareModel(name="7b", params=7 * 10**9), raw_config=None)
    with pytest.raises(VerifyUnsupportedError, match="needs the architecture"):
        twin._twin_config(resolved)


# --- VRAMWISE_DEBUG: a bug in the twin keeps its traceback ---------------------------------------------


def _planted_bug(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug in the twin " + "x" * 400)


def _run_twin(infer: bool) -> Comparison:
    resolved = resolve_model_with_config("llama-3.2-1b")
    if infer:
        return twin.verify_inference(resolved, InferSetup(context=256, new_tokens=2))
    return twin.verify_training(resolved, TrainSetup.from_flat(seq=128))


@pytest.fixture
def failing_trace(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramwise.verify import trace

    monkeypatch.setattr(trace, "trace_training", _planted_bug)
    monkeypatch.setattr(trace, "trace_inference", _planted_bug)
    monkeypatch.delenv("VRAMWISE_DEBUG", raising=False)
    return monkeypatch


@pytest.mark.parametrize("infer", [False, True], ids=["training", "inference"])
def test_a_failing_trace_is_one_line(failing_trace: pytest.MonkeyPatch, infer: bool) -> None:
    with pytest.raises(VerifyUnsupportedError) as caught:
        _run_twin(infer)
    message = str(caught.value)
    assert message.startswith("the traced run failed: RuntimeError: a bug in the twin x")
    assert "\n" not in message and len(message) < 300  # the message is cut, the traceback dropped
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("value", ["0", ""])
def test_debug_off_values_keep_the_one_line(failing_trace: pytest.MonkeyPatch, value: str) -> None:
    failing_trace.setenv("VRAMWISE_DEBUG", value)
    with pytest.raises(VerifyUnsupportedError):
        _run_twin(infer=False)


@pytest.mark.parametrize("infer", [False, True], ids=["training", "inference"])
def test_vramwise_debug_reraises_the_original_with_its_traceback(
    failing_trace: pytest.MonkeyPatch, infer: bool
) -> None:
    failing_trace.setenv("VRAMWISE_DEBUG", "1")
    with pytest.raises(RuntimeError) as caught:
        _run_twin(infer)
    assert str(caught.value) == "a bug in the twin " + "x" * 400  # whole, not cut at 200 characters
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "_planted_bug"  # the traceback reaches the line that failed

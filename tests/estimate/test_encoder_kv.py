"""An encoder keeps no KV cache and cannot generate (ImplTraits.causal_kv_cache), by hand arithmetic.

transformers' BertModel.forward sets ``use_cache = False`` unless ``config.is_decoder`` (modeling_bert.py, 5.24),
so BERT's masked LM, classifiers and bare model run one bidirectional forward and cache nothing; the traced
prefills are in test_infer_vs_trace.py (HEAD_CONFIGS, BERT's four heads).
"""

from __future__ import annotations

import pytest
from cli_run import run

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.kv_cache import kv_elements_per_token
from vramwise.estimate.textbook import textbook_inference
from vramwise.fit.solve import max_infer
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.load import resolve_model
from vramwise.workload import NO_OVERHEADS, InferSetup

# bert-base-cased (google-bert/bert-base-cased config.json): V 28996, h 768, L 12, a 12, i 3072, 512 positions,
# 2 token types; BertModel with its pooler, stored in bf16 (2 B)
V, H, L, FF, P, T = 28996, 768, 12, 3072, 512, 2
EMBEDDINGS = V * H + P * H + T * H + 2 * H  # word, position, token-type tables and the embedding LayerNorm
LAYER = 4 * (H * H + H) + (H * FF + FF) + (FF * H + H) + 2 * 2 * H  # q, k, v, o; up; down; two LayerNorms
PARAMS = EMBEDDINGS + L * LAYER + (H * H + H)  # + the pooler's dense
# the prefill's largest one-layer live set per token (estimate/workspace.py): the MLP's 4·h + 2·i (plain gelu:
# the up projection and its activation) beats attention's 3·h + 2·(a + 2·n_kv)·d + a·d = 7,680
MLP_LIVE = 4 * H + 2 * FF
# that config without architectures: BertModel, pooler included (the catalog's entry names BertForMaskedLM, as the
# hub's config.json does, so its count differs by the MLM head less the pooler)
BARE_CONFIG = {"model_type": "bert", "vocab_size": V, "hidden_size": H, "intermediate_size": FF,
               "num_hidden_layers": L, "num_attention_heads": 12, "max_position_embeddings": P, "type_vocab_size": T}


def _bare():
    return spec_from_config(BARE_CONFIG, name="bert-base-cased", source="test")


def test_bert_base_cased_is_weights_plus_one_forward_without_kv() -> None:
    assert PARAMS == 108_310_272  # the count the model card publishes (110M)
    spec = _bare()
    est = estimate_inference(spec, InferSetup(batch=1, context=512, overheads=NO_OVERHEADS))
    names = {t.name for t in est.persistent}
    assert not any(n.startswith("kv_cache") for n in names)
    assert sum(t.bytes for t in est.persistent if t.name.startswith("weights/")) == PARAMS * 2
    assert est.peak_bytes == PARAMS * 2 + MLP_LIVE * 512 * 2  # 216,620,544 + 9,437,184: no 18,874,368 B of KV
    assert kv_elements_per_token(spec) == 0
    assert any("keeps no KV cache" in n for n in est.notes)


def test_max_batch_of_an_encoder_counts_no_kv_per_sequence() -> None:
    spec = _bare()
    per_sequence = MLP_LIVE * 512 * 2  # the workspace only; a decoder would add 2·12·64·12·512·2 = 18,874,368
    budget = PARAMS * 2 + 10 * per_sequence + 5
    answer = max_infer(spec, InferSetup(context=512, overheads=NO_OVERHEADS), budget, "batch")
    assert answer.value == 10


def test_an_encoder_refuses_new_tokens_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "infer", "bert-base-cased", "-n", "64")
    assert code == 2 and not out
    assert err.count("\n") == 1 and "-n 64" in err and "encoder" in err and "decoder" in err
    with pytest.raises(InvalidWorkloadError) as caught:
        textbook_inference(resolve_model("bert-base-cased"), InferSetup(new_tokens=1))
    assert caught.value.field == "new_tokens" and caught.value.allowed == "0"


ENGINES = [["--serve"], ["--engine", "vllm"], ["--engine", "sglang"], ["--engine", "llama.cpp"]]


@pytest.mark.parametrize("engine", ENGINES)
def test_serving_an_encoder_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], engine: list[str]) -> None:
    code, out, err = run(capsys, "infer", "bert-base-cased", "--gpu", "l4", *engine)
    assert code == 2 and not out
    assert err.count("\n") == 1 and "encoder" in err and "--engine hf" in err


def test_transformers_device_map_places_no_cache(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "infer", "bert-base-cased", "--gpu", "2xl4", "--device-map", "auto")
    assert code == 0 and "kv_cache" not in out


def test_textbook_mode_drops_the_decoder_cache_for_an_encoder() -> None:
    est = textbook_inference(resolve_model("bert-base-cased"), InferSetup(context=512))
    assert "kv_cache" not in {t.name for t in est.persistent}


def test_bert_as_a_decoder_keeps_its_cache() -> None:
    config = {"model_type": "bert", "hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 8,
              "intermediate_size": 1024, "vocab_size": 8000}  # fmt: skip
    assert not spec_from_config(config, name="enc", source="test").traits.causal_kv_cache
    # BertModel.forward with is_decoder: use_cache from the config (True by default), causal attention
    assert spec_from_config({**config, "is_decoder": True}, name="dec", source="test").traits.causal_kv_cache

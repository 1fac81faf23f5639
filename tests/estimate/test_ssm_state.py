"""A state-space hybrid (Jamba) at inference: KV on attention layers only, a fixed state per Mamba layer.

Oracles: the cache transformers 5.24 allocates for a tiny JambaForCausalLM run on the CPU (its conv and recurrent
state tensors and its keys and values), JambaConfig's own layer pattern, transformers on the meta device for the
parameter counts, and arithmetic written out below (symbols of spec/ssm.py: D = d_inner, N = d_state, K = d_conv).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cli_run import run as _cli
from hf_oracle import hf_params
from tiny_configs import JAMBA

from vramwise.catalog import get_gpu
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.term import PhaseKind
from vramwise.spec.adapters import spec_from_config
from vramwise.spec.params import active_params, total_params
from vramwise.spec.traits import Positions
from vramwise.workload import InferSetup

SPEC = spec_from_config(JAMBA, name="jamba-tiny", source="test")
# JAMBA: h 64, D = 2 x 64 = 128, N 8, K 3; layers 0 and 2 Mamba, 1 and 3 attention (2 KV heads of 64 / 4 = 16)
H, D, N, K, MAMBA, ATTENTION, KV_HEADS, HEAD_DIM = 64, 128, 8, 3, 2, 2, 2, 16


def _est(spec=SPEC, **setup):  # type: ignore[no-untyped-def]
    return estimate_inference(spec, InferSetup(**setup))


def test_layer_pattern_is_jambas() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.JambaConfig(**{k: v for k, v in JAMBA.items() if k != "model_type"})
    assert SPEC.ssm is not None and SPEC.moe is not None
    assert SPEC.ssm.layers == tuple(i for i, t in enumerate(config.layers_block_type) if t == "mamba") == (0, 2)
    assert SPEC.moe.moe_layers == tuple(i for i, e in enumerate(config.layers_num_experts) if e > 1) == (0, 2)
    assert (SPEC.ssm.d_inner, SPEC.ssm.d_state, SPEC.ssm.d_conv, SPEC.ssm.dt_rank) == (D, N, K, 4)  # ceil(64 / 16)


def test_state_bytes_by_hand() -> None:
    est = _est(batch=3, context=100)
    assert est.term("ssm_state/conv").bytes == 3 * MAMBA * D * K * 2  # bf16 conv window
    assert est.term("ssm_state/ssm").bytes == 3 * MAMBA * D * N * 4  # fp32 recurrent state


def test_kv_only_on_attention_layers() -> None:
    est = _est(batch=3, context=1000, kv_block=1)
    assert est.term("kv_cache").bytes == 3 * 2 * KV_HEADS * HEAD_DIM * 2 * 1000 * ATTENTION  # not x 4 layers


def test_context_grows_the_attention_kv_only() -> None:
    short, long = _est(batch=2, context=1024), _est(batch=2, context=4096)
    assert long.term("kv_cache").bytes == 4 * short.term("kv_cache").bytes
    for name in ("ssm_state/conv", "ssm_state/ssm", "weights/ssm", "weights/attention"):
        assert long.term(name).bytes == short.term(name).bytes


def test_state_and_kv_equal_the_cache_transformers_allocates() -> None:
    """A bf16 forward of the tiny model on the CPU with use_cache: the DynamicCache's tensors, layer by layer."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.JambaConfig(**{k: v for k, v in JAMBA.items() if k != "model_type"})
    torch.manual_seed(0)
    model = transformers.JambaForCausalLM(config).to(torch.bfloat16).eval()
    batch, tokens = 2, 7
    with torch.no_grad():
        cache = model(input_ids=torch.randint(0, 1000, (batch, tokens)), use_cache=True).cache

    def nbytes(tensors) -> int:  # type: ignore[no-untyped-def]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    conv = nbytes(t for layer in cache.layers for t in getattr(layer, "conv_states", {}).values())
    ssm = nbytes(t for layer in cache.layers for t in getattr(layer, "recurrent_states", {}).values())
    kv = nbytes(t for layer in cache.layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None)))
    est = _est(batch=batch, context=tokens, kv_block=1)
    assert (conv, ssm, kv) == (
        est.term("ssm_state/conv").bytes,
        est.term("ssm_state/ssm").bytes,
        est.term("kv_cache").bytes,
    )
    assert kv == batch * 2 * KV_HEADS * HEAD_DIM * 2 * tokens * ATTENTION


def _wide() -> object:
    """Mamba's expansion 4 (D = 256): the Mamba layer's live set outgrows the MoE layer's."""
    return spec_from_config({**JAMBA, "mamba_expand": 4}, name="jamba-wide", source="test")


def test_mamba_prefill_workspace_by_hand() -> None:
    spec, b, s, d = _wide(), 2, 4096, 256
    moe = s * 2 * (4 * H + 2 * 4 * 96 + 2 * H)  # 4h + top-2 x (fused gate/up 2i + act + product) + 2 input copies
    mamba = s * 2 * (3 * H + 8 * d + 4 * N) + d * 2 * 2 * N * 4  # + chunk states: ceil(4096 / 2048) = 2 chunks
    assert mamba > moe
    est = _est(spec, batch=b, context=s)
    assert est.term("activations/prefill_workspace").bytes == b * mamba
    # the PyTorch scan's discrete A, discrete B and deltaB_u, (D, s, N) fp32 each, named in a note
    assert any(f"{3 * d * s * N * 4:,} B more per sequence" in n for n in est.notes)


def test_mamba_decode_workspace_by_hand() -> None:
    spec, b, d = _wide(), 3, 256
    est = _est(spec, batch=b, context=64, new_tokens=8)
    decode = next(p for p in est.phases if p.kind is PhaseKind.DECODE)
    workspace = next(t for t in decode.transient if t.name == "activations/prefill_workspace")
    assert workspace.bytes == b * 1 * 2 * (3 * H + 5 * d + 2 * N)  # one token: state-update kernels, no copies


def test_the_moe_layer_wins_when_it_is_larger() -> None:
    spec, s = spec_from_config({**JAMBA, "intermediate_size": 192}, name="jamba-wide-ffn", source="test"), 4096
    moe = s * 2 * (4 * H + 2 * 4 * 192 + 2 * H)  # 4h + top-2 x (fused gate/up 2i + act + product) + 2 input copies
    assert moe > s * 2 * (3 * H + 8 * D + 4 * N) + D * 2 * 2 * N * 4
    workspace = _est(spec, context=s).term("activations/prefill_workspace")
    assert workspace.bytes == moe and "a Mamba layer's" in workspace.formula


def test_serving_counts_the_state_pages_per_sequence() -> None:
    """vLLM's hybrid rule (HybridAttentionMambaModelConfig, no prefix caching), written out for the tiny model, in
    the vLLM plan (engines/vllm.py; the old estimate/serving.py rule it duplicated is gone)."""
    from vramwise.app.setups import infer_setup
    from vramwise.engines.vllm import vllm_plan

    setup = infer_setup({"context": 1000, "new_tokens": 24, "engine": "vllm", "max_model_len": 1024}, SPEC)
    plan = vllm_plan(SPEC, setup, get_gpu("a100-80gb"))
    layer_token = 2 * KV_HEADS * HEAD_DIM * 2  # 128 B of K and V per token per attention layer
    mamba_page = ((K - 1) * D + D * N) * 2  # vLLM: conv (d_conv - 1, D) and (D, N), both bf16: 2,560 B
    block = 16 * -(-mamba_page // (16 * layer_token))  # 32 tokens: the smallest multiple of 16 holding a state
    page = block * layer_token  # the Mamba page padded to one attention page: 4,096 B
    assert (block, page) == (32, 4096)
    assert plan.kv_bytes_per_token == layer_token * ATTENTION and plan.kv_pool is not None
    # 2 groups (attention, Mamba) of g = 2 layers share one block pool: num_blocks pages of g layers
    num_blocks = plan.kv_pool.bytes // (page * 2)
    assert plan.kv_pool.bytes == num_blocks * page * 2
    assert plan.kv_tokens == num_blocks // 2 * block
    # a request of 1,024 tokens: 1024 / 32 = 32 attention blocks + one Mamba state page
    assert plan.max_sequences == num_blocks // (1024 // block + 1)

def test_an_all_mamba_config_has_no_kv_and_counts_like_transformers() -> None:
    config = {**JAMBA, "attn_layer_period": 8, "attn_layer_offset": 4}  # 4 layers: none is index 4 mod 8
    spec = spec_from_config(config, name="mamba-only", source="test")
    assert spec.ssm is not None and spec.ssm.layers == (0, 1, 2, 3)
    assert total_params(spec) == hf_params(config)[0]
    est = _est(spec, batch=2, context=512)
    assert est.term("kv_cache").bytes == 0
    assert est.term("ssm_state/ssm").bytes == 2 * 4 * D * N * 4


def _config(tmp_path: Path, **changes: object) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**JAMBA, **changes}))
    return str(path)


def test_cli_json_shows_the_state_terms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "infer", _config(tmp_path), "--context", "512", "-b", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    terms = {t["name"]: t["bytes"] for t in data["terms"]}
    assert terms["ssm_state/conv"] == 2 * MAMBA * D * K * 2 and terms["ssm_state/ssm"] == 2 * MAMBA * D * N * 4
    assert "weights/ssm" in terms and sum(terms.values()) == data["peak"]["bytes"]
    assert data["model"]["params"] == 396_904


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (("train",), "training estimates do not cover state-space"),
        (("train", "--mode", "textbook"), "training estimates do not cover state-space"),
        (("infer", "--mode", "textbook"), "Mamba layers"),
        (("infer", "--tp", "2"), "tp (2)"),
        (("verify", "--infer"), "verify cannot reproduce"),
    ],
)
def test_unmodelled_questions_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], field: str
) -> None:
    code, out, err = _cli(capsys, argv[0], _config(tmp_path), *argv[1:])
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and field in err


def test_a_bad_layer_pattern_names_its_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "infer", _config(tmp_path, attn_layer_offset=2))
    assert code == 2 and "'attn_layer_offset' (2) must be smaller than 'attn_layer_period' (2)" in err


def test_transformer_specs_have_no_state() -> None:
    llama = dataclasses.replace(SPEC, ssm=None, moe=None)
    names = {t.name for t in estimate_inference(llama, InferSetup()).persistent}
    assert not {"ssm_state/conv", "ssm_state/ssm", "weights/ssm"} & names


def test_every_term_the_hybrid_emits_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "json-schema.md").read_text()
    est = _est(batch=2, context=4096, new_tokens=4)
    names = {t.name for t in est.persistent} | {t.name for p in est.phases for t in p.transient}
    assert {"ssm_state/conv", "ssm_state/ssm", "weights/ssm"} <= names
    assert all(f"`{name}`" in doc for name in names), sorted(n for n in names if f"`{n}`" not in doc)


def test_jamba_has_no_position_encoding() -> None:
    """No rotary module and no position table in the model; past the trained length the note asks no rope scaling."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.JambaConfig(**{k: v for k, v in JAMBA.items() if k != "model_type"})
    with torch.device("meta"):
        model = transformers.JambaForCausalLM(config)
    assert not any("Rotary" in type(m).__name__ for m in model.modules())
    assert [m for m in model.modules() if isinstance(m, torch.nn.Embedding)] == [model.get_input_embeddings()]
    assert SPEC.traits.positions is Positions.NONE and not SPEC.traits.rotary
    spec = spec_from_config({**JAMBA, "max_position_embeddings": 1024}, name="jamba-1k", source="test")
    notes = _est(spec, context=2048).notes
    assert any("exceeds the 1,024 positions the model was trained on" in n for n in notes)
    assert not any("rope" in n for n in notes)


def test_the_pytorch_scan_note_matches_a_traced_prefill() -> None:
    """Oracle for the note (not for the kernel path, which needs mamba-ssm on CUDA): a traced bf16 prefill of
    transformers' PyTorch scan peaks at the kernel-path estimate plus the note's 3 x D x s x N fp32 tensors."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramwise.estimate.term import Step
    from vramwise.verify.trace import InferRecipe, trace_inference
    from vramwise.verify.twin import NO_OVERHEADS, step_peak

    config, b, s, n = {**JAMBA, "mamba_d_state": 64}, 2, 256, 64  # a wide state: the scan's tensors dominate
    spec = spec_from_config(config, name="jamba-n64", source="test")
    est = estimate_inference(spec, InferSetup(batch=b, context=s, kv_block=1, overheads=NO_OVERHEADS))
    extra = 3 * D * s * n * 4  # discrete_A, discrete_B, deltaB_u per sequence (modeling_jamba.py lines 375-377)
    assert any(f"{extra:,} B more per sequence" in note for note in est.notes)
    traced = trace_inference(config, InferRecipe(batch=b, context=s)).phase_peaks["prefill"]
    assert traced == pytest.approx(step_peak(est, Step.PREFILL) + b * extra, rel=0.03)


# ai21labs/Jamba-v0.1's config.json: JambaConfig's defaults, which were taken from it (configuration_jamba.py)
JAMBA_V01 = {
    "model_type": "jamba",
    "vocab_size": 65536,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "num_experts": 16,
    "num_experts_per_tok": 2,
    "mamba_dt_rank": 256,
}


def test_jamba_v01_matches_the_papers_table() -> None:
    """Lieber et al. 2024, "Jamba: A Hybrid Transformer-Mamba Language Model" (arXiv 2403.19887), Table 1:
    52B available and 12B active parameters, a 4GB KV cache for a 256K context in 16 bit."""
    spec = spec_from_config(JAMBA_V01, name="jamba-v0.1", source="test")
    assert round(total_params(spec) / 1e9) == 52 and round(active_params(spec) / 1e9) == 12
    kv = _est(spec, context=256 * 1024, kv_block=1).term("kv_cache").bytes
    assert kv == 4 * 2 * 8 * 128 * 2 * 256 * 1024 == 4 * 2**30  # 4 attention layers of 32: exactly 4 GiB

"""Images at inference: tokens in the context, mllama's cross-attention cache, the vision tower's activations.

Oracles: arithmetic written out here from the tiny configs (tests/tiny_configs.py VLM) and the rules the module
cites; the CLI on those configs in tmp_path (exit 0, vision terms in the JSON; one line and exit 2 when refused).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from tiny_configs import VLM

from vramwise.cli import main
from vramwise.estimate.inference import estimate_inference
from vramwise.estimate.term import PhaseKind
from vramwise.spec.adapters import spec_from_config
from vramwise.workload import InferSetup


def _spec(name: str):
    return spec_from_config(VLM[name], name=name, source=name)


def _terms(est) -> dict[str, int]:
    out = {t.name: t.bytes for t in est.persistent}
    for phase in est.phases:
        out.update({t.name: t.bytes for t in phase.transient})
    return out


def test_image_tokens_join_the_kv_cache() -> None:
    # llava: 16 tokens per image (4 x 4 patches, CLS dropped); 2 images -> context 100 + 32 = 132 tokens.
    # KV per token: 2 layers x 2 (K, V) x 2 KV heads x head_dim 16 x 2 B = 256 B; paged in blocks of 16: 144 tokens.
    spec = _spec("llava")
    with_images = _terms(estimate_inference(spec, InferSetup(context=100, images=2)))
    assert with_images["kv_cache"] == 144 * 2 * 2 * 2 * 16 * 2
    text = _terms(estimate_inference(spec, InferSetup(context=132)))
    assert text["kv_cache"] == with_images["kv_cache"]


def test_mllama_cross_kv_and_no_text_kv_in_cross_layers() -> None:
    # mllama tiny: 4 text layers, 1 and 3 cross-attend. Vision tokens per image: 2 tiles x ((56/14)^2 + 1) = 34.
    # cross K/V: 2 layers x 3 images x 34 tokens x (2 x 2 KV heads x 16) x 2 B
    spec = _spec("mllama")
    terms = _terms(estimate_inference(spec, InferSetup(context=64, images=3, kv_block=1)))
    assert terms["kv_cache/cross"] == 2 * 3 * 34 * (2 * 2 * 16) * 2
    # the text cache: 64 + 3 <|image|> tokens in the 2 self-attention layers only
    assert terms["kv_cache"] == 2 * 67 * (2 * 2 * 16) * 2


def test_vision_activations_by_hand() -> None:
    # llava tiny CLIP tower: hv 32, iv 48, 2 heads, S = 16 patches + CLS = 17 per image, c = 2 (bf16), eager.
    # attention: S·c·(4hv + 4hv) + heads·S²·(c+8) = 17·2·256 + 2·289·10 = 8,704 + 5,780 = 14,484
    # MLP (quick_gelu, 3 intermediates): S·c·(4hv + 3iv) = 17·2·272 = 9,248; the larger, x 3 images x batch 2
    spec = _spec("llava")
    est = estimate_inference(spec, InferSetup(context=64, images=3, batch=2, attention="eager"))
    vision = next(p for p in est.phases if p.kind is PhaseKind.PREFILL_VISION)
    assert {t.name: t.bytes for t in vision.transient}["activations/vision"] == 2 * 3 * 14_484


def test_mllama_tower_holds_its_mask_and_local_outputs() -> None:
    # mllama tiny: S = 2 tiles x 24 (17 patches padded to a multiple of 8) = 48; hv 32, iv 48, gelu; sdpa.
    # attention 48·2·(8·32) = 24,576 > MLP 48·2·(4·32 + 2·48) = 21,504; held: the S² mask and the patch embeddings
    # (2 tiles x 16 patches x 32) in c bytes, (2,304 + 1,024)·2 = 6,656, and the 2 local layers' outputs 2·48·32·2
    est = estimate_inference(_spec("mllama"), InferSetup(context=64, images=1))
    vision = next(p for p in est.phases if p.kind is PhaseKind.PREFILL_VISION)
    assert {t.name: t.bytes for t in vision.transient}["activations/vision"] == 24_576 + 6_656 + 6_144


def test_no_images_no_vision_phase() -> None:
    est = estimate_inference(_spec("gemma3"), InferSetup(context=64))
    assert PhaseKind.PREFILL_VISION not in {p.kind for p in est.phases}
    assert {"weights/vision", "weights/projector"} <= {t.name for t in est.persistent}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(VLM))
def test_cli_on_every_family(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(VLM[name]))
    code, out, _ = _cli(["infer", str(path), "--images", "2", "-s", "128", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["setup"]["images"] == 2
    names = {t["name"] for t in doc["terms"]}
    assert {"weights/vision", "weights/projector"} <= names
    assert "prefill (vision encoder)" in {p["name"] for p in doc["phases"]}
    assert any("image" in n for n in doc["notes"])
    code, out, _ = _cli(["train", str(path), "-s", "128", "--json"], capsys)
    assert code == 0 and any("frozen" in n for n in json.loads(out)["notes"])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["infer", "llama-2-7b", "--images", "1"], "--images (1): llama-2-7b has no vision tower"),
        (["infer", "7b", "--images", "1"], "--images (1) needs the architecture"),
        (["infer", "llama-2-7b", "--images", "-1"], "images"),
        (["fit", "llama-2-7b", "--gpu", "A100-80GB", "--max", "batch", "--images", "1"], "--images is an inference"),
    ],
)
def test_images_refused_in_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(argv, capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_images_with_serve_or_textbook_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(VLM["llava"]))
    for extra in (["--mode", "textbook"], ["--serve", "--gpu", "A100-80GB"]):
        code, _, err = _cli(["infer", str(path), "--images", "1", *extra], capsys)
        assert code == 2 and "--images is not modelled" in err and len(err.strip().splitlines()) == 1


def test_verify_refuses_vision_language_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(VLM["gemma3"]))
    with contextlib.redirect_stdout(io.StringIO()):
        code, _, err = _cli(["verify", str(path), "--infer"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "vision-language model" in err or "torch" in err  # without the verify extra, that refusal comes first


# Oracle: transformers' own image processors (no network: they are built from their defaults), on blank images of
# each size. Qwen2VLImageProcessor's image_grid_thw gives the patches; the merged tokens are a quarter of them.
# Idefics3ImageProcessor, with the tiny tower's 64-pixel tile (max_image_size) and 4 x 64 longest edge, gives the
# tiles it splits the image into (the global image included) as pixel_values' second dimension.
SIZES = [(448, 448), (1920, 1080), (100, 100), (3000, 200), (64, 64), (333, 1001)]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_image_size_follows_the_image_processors(width: int, height: int) -> None:
    np = pytest.importorskip("numpy")
    transformers = pytest.importorskip("transformers")
    from vramwise.estimate.vision import image_shape

    blank = np.zeros((height, width, 3), dtype=np.uint8)
    try:
        grid = transformers.Qwen2VLImageProcessor()(images=[blank], return_tensors="np")["image_grid_thw"][0]
        idefics = transformers.Idefics3ImageProcessor(size={"longest_edge": 256}, max_image_size={"longest_edge": 64})
        tiles = idefics(images=[[blank]], return_tensors="np")["pixel_values"].shape[1]
    except ImportError as err:  # a torchvision-less install: the processors' backend is missing
        pytest.skip(str(err))
    qwen, smol = _spec("qwen2_vl").vision, _spec("idefics3").vision
    assert qwen is not None and smol is not None
    assert image_shape(qwen, (width, height)).tokens == int(grid[1] * grid[2]) // 4
    assert image_shape(qwen, (width, height)).patches == int(grid[1] * grid[2])
    assert image_shape(smol, (width, height)) == (tiles * 16, tiles, 64)


def test_image_size_by_hand() -> None:
    # Qwen2-VL, 448x448: multiples of 28 already, 448·448 < max_pixels: (448/28)^2 = 256 tokens, 1,024 patches.
    est = estimate_inference(_spec("qwen2_vl"), InferSetup(context=100, images=1, image_size="448x448", kv_block=1))
    # KV: (100 + 256) tokens x 2 layers x 2 (K, V) x 2 KV heads x 16 x 2 B
    assert _terms(est)["kv_cache"] == 356 * 2 * 2 * 2 * 16 * 2
    assert any("256 token(s) each" in n for n in est.notes)
    # llava resizes every image: the size changes nothing, and a note says so
    fixed = estimate_inference(_spec("llava"), InferSetup(context=100, images=1, image_size="4000x3000"))
    assert _terms(fixed) == _terms(estimate_inference(_spec("llava"), InferSetup(context=100, images=1)))
    assert any("does not change" in n for n in fixed.notes)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--image-size", "640x480"], "--image-size applies with --images"),
        (["--images", "1", "--image-size", "640"], "image_size must be WIDTHxHEIGHT"),
        (["--images", "1", "--image-size", "0x10"], "image_size must be WIDTHxHEIGHT"),
        (["--images", "1", "--image-size", "10000x10"], "aspect ratio above 200"),
    ],
)
def test_image_size_refused_in_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(VLM["qwen2_vl"]))
    code, _, err = _cli(["infer", str(path), *argv], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_text_only_fine_tuning_freezes_the_tower() -> None:
    # bf16-mixed AdamW: fp32 master weights and two fp32 moments of the trainable parameters only, i.e. the whole
    # model less the tower and projector (whose counts equal transformers' submodules: tests/spec/test_vision_params)
    import vramwise
    from vramwise.spec.params import parameter_groups, total_params

    spec = _spec("llava")
    frozen = sum(g.count for g in parameter_groups(spec) if g.category in ("vision", "projector"))
    est = vramwise.estimate_training(spec, vramwise.TrainSetup.from_flat(seq=128))
    terms = _terms(est)
    assert terms["optimizer/master_weights"] == 4 * (total_params(spec) - frozen)
    assert terms["optimizer/states"] == 2 * 4 * (total_params(spec) - frozen)
    assert terms["weights/vision"] + terms["weights/projector"] == 2 * frozen  # still held, in bf16
    assert any("frozen" in n for n in est.notes)


@pytest.mark.parametrize(
    ("quant", "kept"),
    [
        (
            {
                "quant_method": "awq",
                "bits": 4,
                "group_size": 128,
                "version": "gemm",
                "modules_to_not_convert": ["visual"],
            },
            True,
        ),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}, True),
        ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}, False),
    ],
)
def test_quantized_checkpoints_keep_the_tower_as_they_say(quant: dict, kept: bool) -> None:
    # AutoAWQ's VLM checkpoints name the tower in modules_to_not_convert; optimum's GPTQ quantizes only the blocks
    # of block_name_to_quantize (the language model's layers). Kept: 2 bytes (bf16) per vision and projector weight.
    from vramwise.estimate.weights import weight_terms
    from vramwise.formats import default_format, get_format
    from vramwise.spec.params import parameter_groups

    spec = spec_from_config({**VLM["qwen2_vl"], "quantization_config": quant}, name="q", source="q")
    terms = {t.name: t.bytes for t in weight_terms(spec, get_format(default_format(spec)), hp_bytes=2)}
    counts = {c: sum(g.count for g in parameter_groups(spec) if g.category == c) for c in ("vision", "projector")}
    assert (terms["weights/vision"] == 2 * counts["vision"]) is kept
    assert (terms["weights/projector"] == 2 * counts["projector"]) is kept


def test_fit_counts_the_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the largest batch with two images per sequence is no larger than without them (their tokens and the tower)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(VLM["qwen2_vl"]))
    answers = []
    for extra in ([], ["--images", "2"]):
        code, out, _ = _cli(["fit", str(path), "--infer", "--gpu", "l4", "--max", "batch", "-s", "512", *extra], capsys)
        assert code == 0
        answers.append(int(out.splitlines()[0].rsplit(": ", 1)[1]))  # "max batch on GPU (...): N"
    assert answers[1] < answers[0]

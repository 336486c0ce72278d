"""RetinaFace against the reference goldens of shared/specs/retinaface_mnet025 (tolerances from its SPEC §8)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from models.retinaface import (
    CFG_MNET025,
    CFG_RESNET50,
    RetinaFace,
    RetinaFaceDetector,
    decode_boxes,
    decode_landmarks,
    nms_legacy,
    postprocess,
    prior_boxes,
)
from models.weights import WeightsNotFoundError, resolve

SPEC = "retinaface_mnet025"
REAL_GOLDENS = {
    # name: (coordinate atol in px, expected top box, expected top score)
    "rf_real_hdtf_aoc_f30": (0.01, [152.45, 93.03, 416.84, 471.74], 0.9993),
    "rf_real_dfdc_lynaeydofd_f30": (0.03, [850.23, 261.13, 1038.64, 500.12], 0.9998),
}


@pytest.fixture(scope="module")
def spec_dir(specs_dir: Path) -> Path:
    return specs_dir / SPEC


@pytest.fixture(scope="module")
def detector(shared_weights: Path) -> RetinaFaceDetector:
    return RetinaFaceDetector.load(device="cpu")  # resolved through the registry (WEIGHTS_DIR from conftest)


def golden(spec_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(spec_dir / "golden" / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def run_heads(det: RetinaFaceDetector, image_bgr: np.ndarray) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return det.model(det.preprocess(image_bgr[None, ..., ::-1]))  # preprocess takes RGB


def assert_heads(out: tuple[torch.Tensor, ...], g: dict[str, np.ndarray]) -> None:
    loc, conf, landms = (t.numpy() for t in out)
    np.testing.assert_allclose(loc, g["loc"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(conf, g["conf_logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(torch.from_numpy(conf).softmax(-1).numpy(), g["conf_softmax"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(landms, g["landms"], rtol=0, atol=1e-4)


def assert_dets(dets: np.ndarray, idx: np.ndarray | None, g: dict[str, np.ndarray], atol: float) -> None:
    """Rows with golden score >= 0.05: same count, order (prior index) and values."""
    n = int((g["dets"][:, 4] >= 0.05).sum())
    assert n >= 1
    assert int((dets[:, 4] >= 0.05).sum()) == n
    if idx is not None:
        np.testing.assert_array_equal(idx[:n], g["kept_prior_index"][:n])
    coords = [0, 1, 2, 3, *range(5, 15)]
    np.testing.assert_allclose(dets[:n, coords], g["dets"][:n, coords], rtol=0, atol=atol)
    np.testing.assert_allclose(dets[:n, 4], g["dets"][:n, 4], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------- goldens


def test_random_golden_heads_and_priors(detector: RetinaFaceDetector, spec_dir: Path) -> None:
    g = golden(spec_dir, "rf_random")
    x = detector.preprocess(g["image_bgr_u8"][None, ..., ::-1])
    np.testing.assert_array_equal(x.numpy(), g["x"])  # BGR order and mean exactly as the reference
    assert_heads(run_heads(detector, g["image_bgr_u8"]), g)
    np.testing.assert_allclose(prior_boxes(250, 330, CFG_MNET025).numpy(), g["priors"], rtol=0, atol=1e-7)


def test_random_golden_intermediates(detector: RetinaFaceDetector, spec_dir: Path) -> None:
    g = golden(spec_dir, "rf_random")
    gi = golden(spec_dir, "rf_random_intermediates_f16")
    with torch.inference_mode():
        _, inter = detector.model.forward_with_intermediates(torch.from_numpy(g["x"]))
    names = [k for k in gi if k != "meta"]
    assert sorted(names) == sorted(inter)
    for k in names:
        ref = gi[k].astype(np.float32)
        assert inter[k].shape == ref.shape, k
        err = np.abs(inter[k].numpy() - ref).max() / np.abs(ref).max()
        assert err < 2e-3, f"{k}: relative error {err:.2e}"


@pytest.mark.parametrize("name", sorted(REAL_GOLDENS))
def test_real_golden_heads_and_dets(detector: RetinaFaceDetector, spec_dir: Path, name: str) -> None:
    g = golden(spec_dir, name)
    meta = json.loads(str(g["meta"]))
    atol = REAL_GOLDENS[name][0]
    h, w = g["image_bgr_u8"].shape[:2]
    out = run_heads(detector, g["image_bgr_u8"])
    assert_heads(out, g)
    priors = prior_boxes(h, w, CFG_MNET025)
    np.testing.assert_allclose(priors.numpy(), g["priors"], rtol=0, atol=1e-7)

    # Full post-processing from our heads (dets in original pixels: divided by resize)...
    ((dets, idx),) = postprocess(*out, priors, h, w, meta["resize"], conf_is_logits=True, return_index=True)
    assert_dets(dets, idx, g, atol)
    # ...and from the golden heads, where every row (down to the 0.02 cut) must agree.
    ((dets, idx),) = postprocess(
        g["loc"], g["conf_softmax"], g["landms"], g["priors"], h, w, meta["resize"], return_index=True
    )
    np.testing.assert_array_equal(idx, g["kept_prior_index"])
    np.testing.assert_allclose(dets, g["dets"], rtol=0, atol=atol)


def test_final_threshold_prefilter_is_exact(spec_dir: Path) -> None:
    """Filtering by the final threshold before NMS must equal filtering after it."""
    g = golden(spec_dir, "rf_real_dfdc_lynaeydofd_f30")
    args = (g["loc"], g["conf_softmax"], g["landms"], g["priors"], 360, 640, 1 / 3)
    (full,) = postprocess(*args)
    for thr in (0.03, 0.05, 0.1, 0.5, 0.9):
        (cut,) = postprocess(*args, threshold=thr)
        np.testing.assert_array_equal(cut, full[full[:, 4] >= thr])


# ----------------------------------------------------------------------------------- detect()


def test_detect_rgb_aoc_frame(detector: RetinaFaceDetector, spec_dir: Path) -> None:
    g = golden(spec_dir, "rf_real_hdtf_aoc_f30")
    rgb = np.ascontiguousarray(g["image_bgr_u8"][..., ::-1])
    # Three frames in batches of 2 (the middle one mirrored): every frame gets its own answer.
    out = detector.detect(np.stack([rgb, rgb[:, ::-1], rgb]), threshold=0.8, batch_size=2)
    assert len(out) == 3
    dets = out[0]
    assert dets.shape == (1, 15) and dets.dtype == np.float32
    _, top_box, top_score = REAL_GOLDENS["rf_real_hdtf_aoc_f30"]
    np.testing.assert_allclose(dets[0, :4], top_box, atol=0.01)
    assert dets[0, 4] == pytest.approx(top_score, abs=1e-4)
    np.testing.assert_allclose(dets[0], g["dets"][0], rtol=0, atol=0.01)
    np.testing.assert_allclose(out[2], dets, rtol=0, atol=1e-3)
    # Landmarks: left eye left of right eye, nose between the eyes and the mouth, all inside the box.
    lm = dets[0, 5:].reshape(5, 2)
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0] and lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()
    assert np.all((lm >= dets[0, :2]) & (lm <= dets[0, 2:4]))
    # The mirrored frame finds the mirrored face (the network is not exactly flip-equivariant: compare by IoU).
    assert out[1].shape == (1, 15)
    m = out[1][0, :4]
    assert _iou([512 - m[2], m[1], 512 - m[0], m[3]], top_box) > 0.9


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_detect_resizes_and_maps_back_dfdc(detector: RetinaFaceDetector, spec_dir: Path, dev_data: Path) -> None:
    """1920x1080 RGB frame from the video -> max_side 640 -> golden dets in original pixels."""
    g = golden(spec_dir, "rf_real_dfdc_lynaeydofd_f30")
    meta = json.loads(str(g["meta"]))
    with av.open(str(dev_data / meta["source_path_rel_to_shared_data_dev"])) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == meta["frame_index"]:
                rgb = frame.to_ndarray(format="rgb24")
                break
    assert rgb.shape[:2] == tuple(meta["original_frame_hw"])
    (dets,) = detector.detect(rgb[None], threshold=0.02, max_side=640)
    assert_dets(dets, None, g, REAL_GOLDENS["rf_real_dfdc_lynaeydofd_f30"][0])
    assert (dets[:, 4] >= 0.8).sum() == 1
    np.testing.assert_allclose(dets[0, :4], REAL_GOLDENS["rf_real_dfdc_lynaeydofd_f30"][1], atol=0.03)


def test_detect_edge_cases(detector: RetinaFaceDetector) -> None:
    assert detector.detect(np.zeros((0, 64, 64, 3), np.uint8)) == []
    (dets,) = detector.detect(np.full((64, 48, 3), 127, np.uint8))  # single frame, no face
    assert dets.shape == (0, 15) and dets.dtype == np.float32
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((1, 64, 64, 3), np.float32))
    assert detector.name == "retinaface" and detector.modality == "faces"
    assert detector.weights_info.name == "retinaface_mnet025"
    assert detector.weights_info.sha256 == "38ec7bb3c9cbfe2f40edabc05fab970a6d648747cbc534092be85d5eb9b37ed0"


# ----------------------------------------------------------------------------------- building blocks


def test_priors_count_and_decode_identity() -> None:
    pri = prior_boxes(640, 640, CFG_MNET025)
    assert pri.shape == (16800, 4)
    # Level 0, row 0, col 1, second min_size comes 4th: order is level -> row -> col -> anchor.
    np.testing.assert_allclose(pri[3].numpy(), [12 / 640, 4 / 640, 32 / 640, 32 / 640], atol=1e-7)
    zero = torch.zeros(1, 16800, 4)
    boxes = decode_boxes(zero, pri)
    np.testing.assert_allclose(boxes[0, :, :2].numpy(), (pri[:, :2] - pri[:, 2:] / 2).numpy(), atol=1e-7)
    lms = decode_landmarks(torch.zeros(1, 16800, 10), pri)
    np.testing.assert_allclose(lms[0, :, 8:].numpy(), pri[:, :2].numpy(), atol=1e-7)


def test_nms_legacy_plus_one_convention() -> None:
    # Two 10x10 boxes (11x11 in the +1 convention) overlapping by 5 columns:
    # IoU = 66 / (121 + 121 - 66) = 0.375 (kept at 0.4); without "+1" it would be 50/150 = 0.333.
    dets = np.array([[0, 0, 10, 10, 0.9], [5, 0, 15, 10, 0.8], [0, 0, 10, 9, 0.95]], np.float32)
    keep = nms_legacy(dets[:2], 0.4)
    np.testing.assert_array_equal(keep, [0, 1])
    np.testing.assert_array_equal(nms_legacy(dets[:2], 0.3), [0])
    np.testing.assert_array_equal(nms_legacy(dets, 0.4), [2, 1])  # highest score first; box 0 suppressed
    assert nms_legacy(np.zeros((0, 5), np.float32)).shape == (0,)


def _keys_with_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split(" ", 1)
            out[key] = tuple(int(s) for s in shape.strip("()").replace(" ", "").split(",") if s)
    return out


@pytest.mark.parametrize(
    ("cfg", "keys_file"),
    [
        (CFG_MNET025, "state_dict_keys_mobilenet0.25.txt"),
        (CFG_RESNET50, "state_dict_keys_resnet50_after_prefix_strip.txt"),
    ],
)
def test_state_dict_keys_match_spec(spec_dir: Path, cfg, keys_file: str) -> None:
    expected = _keys_with_shapes(spec_dir / keys_file)
    with torch.device("meta"):  # shapes only: skips initialising 25M ResNet parameters
        model = RetinaFace(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(expected), (sorted(set(ours) - set(expected))[:5], sorted(set(expected) - set(ours))[:5])
    assert ours == expected


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = RetinaFace(CFG_RESNET50)
    # Halved conv weights: at full scale, random activations grow through 50 layers until exp() in the box decode
    # overflows (inf boxes); the test is about layout and loading, not about those numbers.
    return {k: (v * 0.5 if k.endswith("weight") and v.dim() == 4 else v) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("wrapped", [False, True])
def test_resnet50_variant_loads_production_layout(tmp_path: Path, resnet_state, wrapped: bool) -> None:
    # Production Resnet50_Final.pth was saved under DataParallel: every key starts with "module.".
    state = {f"module.{k}": v for k, v in resnet_state.items()}
    if wrapped:  # also drop num_batches_tracked, which copies of the file may lack
        state = {"state_dict": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}}
    path = tmp_path / "Resnet50_Final.pth"
    torch.save(state, path)
    det = RetinaFaceDetector.load(path, device="cpu", variant="resnet50")
    assert det.cfg is CFG_RESNET50 and det.weights_info.name == "retinaface_resnet50"
    # the detector folds BN into its convs, so compare what the network computes with a strict plain load
    reference = RetinaFace(CFG_RESNET50)
    reference.load_state_dict(resnet_state, strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for got, want in zip(det.model(x.contiguous(memory_format=torch.channels_last)), reference.eval()(x),
                             strict=True):
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 72, 100, 3), dtype=np.uint8)
    out = det.detect(frames, threshold=0.0)
    assert len(out) == 2
    for dets in out:
        assert dets.ndim == 2 and dets.shape[1] == 15 and np.isfinite(dets).all()


def test_resnet50_strict_load_rejects_wrong_keys(tmp_path: Path, resnet_state) -> None:
    state = dict(resnet_state)
    state.pop("fpn.merge1.0.weight")
    path = tmp_path / "Resnet50_Final.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=re.escape("fpn.merge1.0.weight")):
        RetinaFaceDetector.load(path, variant="resnet50")
    # The mobilenet file under the ResNet-50 config is a different architecture, not a silent partial load.
    with pytest.raises(RuntimeError, match="state dict mismatch"):
        RetinaFaceDetector.load(resolve("retinaface_mnet025"), variant="resnet50")


def test_missing_weights_raise_helpful_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError) as exc:
        resolve("retinaface_resnet50", weights_dir=empty, cache_dir=tmp_path / "cache", allow_download=False)
    msg = str(exc.value)
    assert "Resnet50_Final.pth" in msg and str(empty) in msg and "WEIGHTS_DIR" in msg
    monkeypatch.setenv("WEIGHTS_DIR", str(empty))
    monkeypatch.setenv("WEIGHTS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match=re.escape("retinaface_mobilenet0.25_Final.pth")):
        RetinaFaceDetector.load(variant="mnet025")
    with pytest.raises(ValueError, match="variant"):
        RetinaFaceDetector.load(variant="vgg")


def test_fold_batchnorm_keeps_the_function_and_removes_the_bn_passes() -> None:
    from models.base import fold_batchnorm

    torch.manual_seed(0)
    net = RetinaFace(CFG_MNET025).eval()
    for m in net.modules():  # non-trivial running statistics, or folding would be a no-op
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        want = net(x)
        folded = fold_batchnorm(net)
        got = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)

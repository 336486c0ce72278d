"""The detail-normalised MesoNet: a face's fine detail is brought to one level before MesoNet reads it, so a
blurred (beauty-filtered) copy and a sharpened copy of a face reach MesoNet far closer to each other than they came,
and the detector is its own model (its own identity) over MesoNet's weights."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models import detail_norm as dn
from models import registry
from models.face_layout import face_regions
from models.mouth_blur import mouth_detail
from pipeline.settings import Settings

SIZE = 256


def _faces(n: int = 6, seed: int = 0) -> np.ndarray:
    """Smooth random faces with camera-like fine grain."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (n * SIZE, SIZE, 3), dtype=np.uint8), (0, 0), 3.0)
    grain = rng.normal(0, 4, base.shape)
    return np.clip(base + grain, 0, 255).astype(np.uint8).reshape(n, SIZE, SIZE, 3)


BOX = face_regions(SIZE, dn.MARGIN)["face"]


def test_the_face_box_covers_eyes_and_mouth_inside_the_crop():
    from models.face_layout import canonical_points

    y0, y1, x0, x1 = BOX
    assert 1 <= y0 < y1 <= SIZE - 1 and 1 <= x0 < x1 <= SIZE - 1
    for x, y in canonical_points(SIZE, dn.MARGIN):
        assert y0 < y < y1 and x0 < x < x1
    # the detector places it where the visual stage's crops put the face
    assert Settings().visual_crop_margin == dn.MARGIN


def test_blurred_and_sharpened_copies_reach_the_detector_with_nearly_the_same_detail():
    faces = _faces()
    soft = np.stack([cv2.bilateralFilter(f, 9, 40, 5) for f in faces])
    sharp = np.stack([cv2.addWeighted(f, 2.2, cv2.GaussianBlur(f, (0, 0), 1.0), -1.2, 0) for f in faces])
    before = np.abs(mouth_detail(sharp, BOX) - mouth_detail(soft, BOX))
    after = np.abs(mouth_detail(dn.normalise_detail(sharp, BOX), BOX)
                   - mouth_detail(dn.normalise_detail(soft, BOX), BOX))
    assert before.min() > 1.0  # the two copies differ a lot in detail
    assert np.all(after < 0.5 * before), (before, after)
    # a copy is softened or sharpened, never left far from the target
    for copy in (soft, sharp):
        got = mouth_detail(dn.normalise_detail(copy, BOX), BOX)
        assert np.all(np.abs(got - dn.TARGET) < np.abs(mouth_detail(copy, BOX) - dn.TARGET) + 1e-9)


def test_the_choice_reads_the_box_as_the_whole_filtered_crop_would():
    """Filtering only the box and its border gives the whole crop's numbers inside the box (the chosen filter is the
    one a per-crop float filter of the whole crop would choose)."""
    faces = np.concatenate([_faces(3, 1), np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in _faces(3, 2)])])
    got = dn.bank_details(faces, BOX)
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in faces]).astype(np.float32)
    for j, (kind, s) in enumerate(dn.BANK):
        if kind == "blur":
            g = np.stack([cv2.GaussianBlur(im, (0, 0), s) for im in grey])
        elif kind == "sharpen":
            g = np.stack([cv2.addWeighted(im, 1 + s, cv2.GaussianBlur(im, (0, 0), dn.UNSHARP_SIGMA), -s, 0)
                          for im in grey])
        else:
            g = grey
        y0, y1, x0, x1 = BOX
        lap = (g[:, y0 - 1:y1 - 1, x0:x1] + g[:, y0 + 1:y1 + 1, x0:x1] + g[:, y0:y1, x0 - 1:x1 - 1]
               + g[:, y0:y1, x0 + 1:x1 + 1] - 4 * g[:, y0:y1, x0:x1])
        want = np.log((lap.astype(np.float64) ** 2).mean(axis=(1, 2)) + 1e-3)
        np.testing.assert_allclose(got[:, j], want, atol=1e-3)
    assert np.array_equal(dn.choose_filters(faces, BOX), np.argmin(np.abs(got - dn.TARGET), axis=1))


def test_it_is_its_own_model_over_mesonets_weights():
    det = registry.spec("mesonet_detail").load(device="cpu")
    plain = registry.spec("mesonet").load(device="cpu")
    assert det.weights_info.sha256 != plain.weights_info.sha256  # never calibrated by MesoNet's calibration
    assert registry.identity("mesonet_detail:mesoinception_df", det).sha256 == det.weights_info.sha256
    faces = _faces(4)
    p = det.predict(faces).fake_prob
    assert p.shape == (4,) and np.all((p > 0) & (p < 1))
    # what MesoNet reads is the normalised face
    np.testing.assert_allclose(p, plain.predict(dn.normalise_detail(faces, det.box)).fake_prob, rtol=1e-6)
    with pytest.raises(ValueError, match="256 px"):
        det.predict(faces[:, :128, :128])
    assert det.predict(faces[:0]).fake_prob.shape == (0,)


TALKING = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"


def test_visual_rescore_gives_a_kept_row_the_score_the_pipeline_gives_with_the_detector(dev_data, tmp_path):
    """A row ``make eval`` scored with plain MesoNet, rescored from its kept crops, reads what a pipeline running the
    detail-normalised detector reports for the same file; a second pass reuses it instead of scoring again."""
    import json
    from dataclasses import asdict

    import pipeline
    from pipeline.report import VISUAL
    from training import visual_rescore
    from training.evaluate import ItemResult, run_items
    from training.split import read_manifest

    items = [it for it in read_manifest(dev_data / "manifest.tsv") if it.path == TALKING]
    kept = tmp_path / "visual"
    plain = pipeline.build(Settings(device="cpu", explain=False, visual_detector="mesonet"))
    [row] = run_items(items, tmp_path / "run", None, pipeline_obj=plain, visual_features=kept)
    src = tmp_path / "all" / "results.jsonl"
    src.parent.mkdir()
    src.write_text(json.dumps(asdict(row)) + "\n")
    args = ["--manifest", str(dev_data / "manifest.tsv"), "--results", str(src), "--visual-features", str(kept)]
    assert visual_rescore.main([*args, "--out", str(tmp_path / "detail")]) == 0
    out = tmp_path / "detail" / "all" / "results.jsonl"
    [back] = [ItemResult(**json.loads(x)) for x in out.read_text().splitlines()]
    detail = pipeline.build(Settings(device="cpu", explain=False, visual_detector="mesonet_detail"))
    want = detail.run(dev_data / TALKING).detector(VISUAL)
    assert back.detectors[VISUAL][0] == want.model == "mesonet_detail:mesoinception_df"
    assert back.raw[VISUAL] == pytest.approx(want.score, abs=1e-6) and back.raw[VISUAL] != row.raw[VISUAL]
    assert visual_rescore.main([*args, "--reuse", str(out), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["counts"] == {"reused": 1}

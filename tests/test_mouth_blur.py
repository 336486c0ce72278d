"""The mouth-blur detector: a repainted (blurred) mouth reads as more fake, the pipeline runs it on every video with
a face whatever the visual detector crops, and ``training.mouth_fill`` gives a kept row the score the pipeline
gave it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from media_factory import tone, write_audio
from test_registry import _tiny_b7

import pipeline
from models.mouth_blur import MouthBlurDetector, mouth_detail
from pipeline.core import Components, Slot
from pipeline.faces import face_regions
from pipeline.report import MOUTH, VISUAL, Status
from pipeline.settings import Settings

SIZE, MARGIN = 256, 0.05
TALKING = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"


def _faces(n: int = 5, seed: int = 0) -> np.ndarray:
    """Smooth random faces with camera-like fine grain."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (n * SIZE, SIZE, 3), dtype=np.uint8), (0, 0), 3.0)
    grain = rng.normal(0, 6, base.shape)
    return np.clip(base + grain, 0, 255).astype(np.uint8).reshape(n, SIZE, SIZE, 3)


@pytest.fixture(scope="module")
def pipe():
    return pipeline.build(Settings(device="cpu", explain=False))


def test_a_blurred_mouth_reads_more_fake_than_the_same_face_with_its_own_mouth():
    box = face_regions(SIZE, MARGIN)["mouth"]
    y0, y1, x0, x1 = box
    faces = _faces()
    repainted = faces.copy()
    for f in repainted:  # what a lip-sync generator leaves: a low-resolution mouth pasted into a sharp face
        small = cv2.resize(f[y0:y1, x0:x1], None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
        f[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    det = MouthBlurDetector()
    p_real, per_real = det.score(faces, box)
    p_fake, per_fake = det.score(repainted, box)
    assert 0 <= p_real < p_fake <= 1
    assert np.all(per_fake > per_real) and per_fake.shape == (len(faces),)
    np.testing.assert_allclose(det.predict(repainted, box).fake_prob, per_fake)
    # the clip reads its median face
    assert p_fake == pytest.approx(float(np.median(per_fake)), abs=1e-12)


def test_the_measure_is_the_laplacian_of_the_grey_mouth():
    faces = _faces(3, seed=1)
    box = face_regions(SIZE, MARGIN)["mouth"]
    y0, y1, x0, x1 = box
    expected = [np.log(float((cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32),
                                             cv2.CV_32F)[y0:y1, x0:x1] ** 2).mean()) + 1e-3) for f in faces]
    np.testing.assert_allclose(mouth_detail(faces, box), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="inside"):
        mouth_detail(faces, (0, 10, 0, 10))


def test_the_pipeline_scores_the_mouth_of_a_talking_face_and_says_why_not_for_a_voice_note(pipe, dev_data, tmp_path):
    rep = pipe.run(dev_data / TALKING)
    d = rep.detector(MOUTH)
    assert d.status is Status.OK and 0 <= d.score <= 1 and d.model == "mouth_blur"
    assert d.extra("faces_scored") > 0 and d.timeline
    stored = rep.detector_scores()
    assert stored["detectors"][MOUTH]["label"] == "Mouth Detail"
    assert stored["mouth_blur"] == pytest.approx(d.calibrated if d.calibrated is not None else d.score, abs=1e-4)
    note = pipe.run(write_audio(tmp_path / "note.wav", tone(3.0)))
    m = note.detector(MOUTH)
    assert m.status is Status.NOT_APPLICABLE and "no video stream" in m.reason and m.score is None


def test_the_mouth_is_measured_on_aligned_faces_even_when_the_visual_detector_sees_boxes(pipe, dev_data):
    """B7 crops unaligned boxes: the mouth stage then aligns its own faces, the same ones MesoNet's would be."""
    c = pipe.c
    assert pipe._mouth_crop_key() == VISUAL  # MesoNet's aligned 256 px crops serve both: nothing made twice
    comps = Components(face=c.face, visual=Slot(VISUAL, "efficientnet_b7:dfdc", _tiny_b7(0.0)), temporal=c.temporal,
                       audio=c.audio, speaker=c.speaker, sync=c.sync, fusion_model=c.fusion_model, mouth=c.mouth)
    b7 = pipeline.build(Settings(device="cpu", explain=False), comps)
    assert b7._mouth_crop_key() == MOUTH
    with_b7, with_meso = b7.run(dev_data / TALKING).detector(MOUTH), pipe.run(dev_data / TALKING).detector(MOUTH)
    assert with_b7.status is Status.OK and with_b7.score == pytest.approx(with_meso.score, abs=1e-9)


def test_mouth_fill_gives_a_kept_row_the_score_the_pipeline_gave(pipe, dev_data, tmp_path):
    from dataclasses import asdict, replace

    from training import mouth_fill
    from training.evaluate import ItemResult, run_items, visual_cache
    from training.split import read_manifest

    items = [it for it in read_manifest(dev_data / "manifest.tsv") if it.path in (TALKING,)]
    kept = tmp_path / "visual"
    [row] = run_items(items, tmp_path / "run", None, pipeline_obj=pipe, visual_features=kept)
    assert visual_cache(pipe, kept).get(items[0].file, "orig") is not None
    native = row.raw[MOUTH]
    older = replace(row, status={k: v for k, v in row.status.items() if k != MOUTH},
                    raw={k: v for k, v in row.raw.items() if k != MOUTH})
    src = tmp_path / "all" / "results.jsonl"
    src.parent.mkdir()
    src.write_text(json.dumps(asdict(older)) + "\n")
    assert mouth_fill.main(["--manifest", str(dev_data / "manifest.tsv"), "--results", str(src),
                            "--visual-features", str(kept), "--out", str(tmp_path / "filled")]) == 0
    [back] = [ItemResult(**json.loads(x)) for x in (tmp_path / "filled" / "all" / "results.jsonl").read_text()
              .splitlines()]
    assert back.status[MOUTH] == "ok" and back.raw[MOUTH] == pytest.approx(native, abs=1e-9)
    assert back.detectors[MOUTH][0] == "mouth_blur" and back.raw[VISUAL] == row.raw[VISUAL]
    summary = json.loads((tmp_path / "filled" / "summary.json").read_text())
    assert summary["counts"]["filled"] == 1 and summary["checked"] == 0


def test_other_constants_are_another_model_with_another_calibration_key():
    from models.registry import identity

    shipped, other = MouthBlurDetector(), MouthBlurDetector(MouthBlurDetector.CENTRE + 1.0)
    assert identity("mouth_blur", shipped).key != identity("mouth_blur", other).key
    assert identity("mouth_blur", shipped) == identity("mouth_blur", MouthBlurDetector())
    box = face_regions(SIZE, MARGIN)["mouth"]
    assert other.score(_faces(), box)[0] < shipped.score(_faces(), box)[0]  # a higher centre reads as less blurred

"""Evidence figures: the occlusion heatmap finds what moves a detector, every figure renders, and a drawing
failure never costs a verdict."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import pipeline
from pipeline import explain
from pipeline.report import (
    DetectorResult,
    Fusion,
    MediaSummary,
    Report,
    Status,
    TimelinePoint,
    Verdict,
)
from pipeline.settings import Settings

TALKING = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"


def _top_left_detector(crops: np.ndarray) -> np.ndarray:
    """A stand-in detector whose P(fake) is the brightness of the crop's top-left quarter."""
    h, w = crops.shape[1:3]
    return crops[:, : h // 2, : w // 2].mean(axis=(1, 2, 3)) / 255.0


def _png_shape(png: bytes) -> tuple[int, ...]:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a PNG"
    return img.shape


def test_occlusion_heat_points_at_the_region_that_drives_the_score():
    crops = np.zeros((2, 64, 64, 3), np.uint8)
    crops[:, :32, :32] = 255  # the "artifact" sits in the top-left quarter
    crops[1, 40:, 40:] = 200  # a bright patch the detector ignores
    heat = explain.occlusion_heat(_top_left_detector, crops, grid=4)
    assert heat.shape == (2, 4, 4)
    hot = heat[:, :2, :2].mean()
    assert hot > 0.05 and hot > 20 * abs(heat[:, 2:, 2:]).mean()
    assert np.all(heat[:, 3, 3] == 0)  # covering the ignored patch (far from the quarter) changes nothing


def test_frames_the_detector_finds_clean_get_no_map_and_cost_no_calls():
    calls = []

    def det(x):
        calls.append(len(x))
        return _top_left_detector(x)

    crops = np.zeros((5, 32, 32, 3), np.uint8)
    scores = np.array([0.0, 0.02, 0.5, 0.01, 0.9])
    ev = explain.face_evidence(det, crops, np.arange(5.0), scores, n=3)
    assert list(ev.times_s) == [1.0, 2.0, 4.0]  # the three most suspicious, in time order
    assert not ev.heat[0].any()  # 0.02: nothing to take away
    assert sum(calls) == 2 * (1 + explain.GRID ** 2)  # only the two hot frames were covered


def _report(kind: str, verdict=Verdict.FAKE) -> Report:
    tl = tuple(TimelinePoint(float(s), s + 1.0, v) for s, v in enumerate([0.2, 0.9, 0.8, 0.1]))
    video = kind == "video"
    dets = (
        DetectorResult("visual", "m", Status.OK if video else Status.NOT_APPLICABLE, None, 0.3, 0.3,
                       tl if video else ()),
        DetectorResult("temporal", "t", Status.NOT_APPLICABLE, "no"),
        DetectorResult("audio", "a", Status.OK, None, 0.8, 0.8, tl),
        DetectorResult("lip_sync", "s", Status.OK if video else Status.NOT_APPLICABLE, None, 0.9, 0.9,
                       tl if video else ()),
    )
    fusion = Fusion("evidence-noisy-or", 0.9, 0.5, (0.3, 0.7), (), None, (), (("lip_sync", 0.9), ("audio", 0.5)))
    media = MediaSummary(kind, 4.0, 64, 64, 25.0, True, video, 0, "mp4", None, None, 1, "0" * 64)
    return Report(verdict, None, fusion, dets, (), 0.9, media, (), "cpu", (), 4)


def test_every_figure_renders_for_a_video_and_only_what_applies_for_a_voice_note():
    rng = np.random.default_rng(0)
    face = explain.face_evidence(_top_left_detector, rng.integers(0, 255, (3, 64, 64, 3), np.uint8),
                                 np.arange(3.0), np.array([0.4, 0.5, 0.6]))
    m = 15
    sync = explain.SyncEvidence(np.arange(-m, m + 1) / 25, np.exp(-((np.arange(-m, m + 1) - 5) / 4.0) ** 2), 0.2,
                                np.arange(100) / 25, rng.random(100), rng.random(100))
    voice = explain.voice_evidence(rng.standard_normal(16000 * 4).astype(np.float32) * 0.1, 16000)
    crops = rng.integers(0, 255, (5, 64, 64, 3), np.uint8)
    mouth = explain.mouth_evidence(crops, np.arange(5.0), np.array([0.1, 0.9, 0.2, 0.8, 0.7]), (40, 56, 16, 48),
                                   (30, 38, 8, 56))
    assert mouth.times_s.tolist() == [1.0, 3.0, 4.0]  # the three blurriest, in time order
    assert mouth.mouths.shape == mouth.cheeks.shape == (3, 16, 32, 3)
    assert (mouth.mouths[0] == crops[1, 40:56, 16:48]).all()
    figs = explain.draw(_report("video"), explain.Evidence(face, sync, voice, mouth))
    assert [f.name for f in figs] == ["timeline", "face_heatmap", "lip_sync", "mouth", "voice", "summary"]
    for f in figs:
        h, w, _ = _png_shape(f.png)
        assert h > 100 and w > 300 and f.title and f.caption
    audio_only = explain.draw(_report("audio"), explain.Evidence(None, None, voice))
    assert [f.name for f in audio_only] == ["timeline", "voice", "summary"]


def test_spans_merge_neighbouring_suspicious_seconds():
    pts = [(0, 1, 0.6), (1, 2, 0.7), (2, 3, 0.2), (3, 4, 0.9)]
    assert explain._spans(pts, 0.5) == [(0, 2), (3, 4)]


@pytest.fixture(scope="module")
def pipe():
    return pipeline.build(Settings(device="cpu"))


def test_a_run_stores_its_figures_beside_the_row_not_in_it(pipe, dev_data):
    rep = pipe.run(dev_data / TALKING)  # a real clip: the face check's raw 1.0 carries no calibrated evidence
    names = [f.name for f in rep.figures]
    assert names == ["timeline", "lip_sync", "voice", "summary"]
    assert "explain" in dict(rep.stage_seconds)
    ds = rep.detector_scores()
    assert [f["name"] for f in ds["figures"]] == names
    assert "png" not in str(ds["figures"])  # names and captions only: the bytes go to file storage


def test_a_drawing_failure_costs_the_figures_not_the_verdict(pipe, dev_data, monkeypatch):
    good = pipe.run(dev_data / TALKING)

    def broken(*a, **k):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(explain, "draw", broken)
    rep = pipe.run(dev_data / TALKING)
    assert rep.verdict == good.verdict and rep.fake_probability == pytest.approx(good.fake_probability)
    assert rep.figures == () and any("evidence figures failed: no fonts" in w for w in rep.warnings)


def test_per_second_scores_are_shown_on_the_scale_of_the_bar(pipe, dev_data):
    """A detector's timeline goes through the same calibrator as its clip score: what the charts, the figure and
    the highlighted seconds show is on the scale of the bar, not the raw output."""
    from pipeline.fusion import calibrate_values

    rep = pipe.run(dev_data / TALKING)
    vis = rep.detector("visual")
    raw = [p.score for p in vis.timeline]
    shown = [p.score for p in vis.shown_timeline]
    assert len(shown) == len(raw) and vis.calibrated_timeline
    ident = pipe.identities["visual"]
    expected = calibrate_values(raw, pipe.c.fusion_model, (ident.name, ident.sha256))
    assert shown == pytest.approx(expected)
    assert max(shown) < max(raw) - 0.05  # MesoNet's raw ~1.0 seconds are pulled down by its calibration
    d = rep.to_dict()["detector_scores"]["detectors"]["visual"]
    assert [p[2] for p in d["timeline_calibrated"]] == pytest.approx(shown, abs=1e-4)

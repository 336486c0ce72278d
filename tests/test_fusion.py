"""Late fusion: calibration, missing detectors, thresholds, face-quality widening, persistence."""

from __future__ import annotations

import math

import pytest

from pipeline import fusion as fusion_mod
from pipeline.fusion import SEED_WEIGHTS, Calibrator, FusionModel, decide, fuse, logit, widened
from pipeline.report import Verdict


def model(**kw) -> FusionModel:
    base = dict(
        calibrators={"visual": Calibrator("platt", 2.0, -0.5), "audio": Calibrator("identity")},
        intercept=-0.2,
        weights={"visual": 1.0, "temporal": 0.8, "audio": 0.9, "lip_sync": 0.6},
        thresholds=(0.3, 0.7),
    )
    return FusionModel(**(base | kw))


def test_platt_and_isotonic_calibrators():
    p = Calibrator("platt", 2.0, -0.5)(0.8)
    assert p == pytest.approx(1 / (1 + math.exp(-(2 * logit(0.8) - 0.5))))
    iso = Calibrator("isotonic", xs=(0.0, 0.5, 1.0), ys=(0.1, 0.2, 0.9))
    assert iso(0.25) == pytest.approx(0.15) and iso(0.75) == pytest.approx(0.55)
    assert Calibrator("identity")(0.42) == 0.42


def test_missing_detectors_drop_out_without_renormalising():
    m = model()
    only_audio, cal, _verdict = fuse({"audio": 0.9}, m)
    # only the audio term and the intercept: z = -0.2 + 0.9 * logit(0.9)
    expected = 1 / (1 + math.exp(0.2 - 0.9 * logit(0.9)))
    assert only_audio.fake_probability == pytest.approx(expected)
    assert set(cal) == {"audio"}
    # one strong detector alone gets less confidence than the same evidence from all of them
    everything, _, _ = fuse({"visual": 0.9, "temporal": 0.9, "audio": 0.9, "lip_sync": 0.9}, m)
    assert everything.fake_probability > only_audio.fake_probability
    assert everything.confidence > only_audio.confidence


def test_seed_fallback_counts_missing_as_neutral():
    f, cal, verdict = fuse({"audio": 1.0}, None)
    assert f.method == "seed-fixed-weights" and cal == {}
    assert f.fake_probability == pytest.approx(0.25 * 1.0 + 0.75 * 0.5)
    assert verdict is Verdict.SUSPICIOUS  # one detector alone cannot reach FAKE
    f_all, _, v_all = fuse({s: 1.0 for s in SEED_WEIGHTS}, None)
    assert f_all.fake_probability == pytest.approx(1.0) and v_all is Verdict.FAKE
    assert sum(SEED_WEIGHTS.values()) == pytest.approx(1.0)


def test_nothing_ran_gives_no_verdict():
    for m in (None, model()):
        f, _cal, verdict = fuse({}, m)
        assert verdict is None and f.fake_probability is None and f.confidence == 0.0


def test_thresholds_and_quality_widening():
    assert decide(0.1, (0.3, 0.7)) is Verdict.AUTHENTIC
    assert decide(0.5, (0.3, 0.7)) is Verdict.SUSPICIOUS
    assert decide(0.7, (0.3, 0.7)) is Verdict.FAKE
    assert widened((0.3, 0.7), 1.0, 0.15) == (0.3, 0.7)
    lo, hi = widened((0.3, 0.7), 0.0, 0.15)
    assert lo == pytest.approx(0.15) and hi == pytest.approx(0.85)
    assert widened((0.3, 0.7), None, 0.15) == (0.3, 0.7)  # audio only: no face, no widening
    # the same score is FAKE on a sharp face and SUSPICIOUS on a poor one
    m = model(intercept=0.0, weights={"visual": 1.0}, calibrators={"visual": Calibrator("identity")})
    _, _, sharp = fuse({"visual": 0.75}, m, face_quality=1.0)
    _, _, poor = fuse({"visual": 0.75}, m, face_quality=0.1)
    assert sharp is Verdict.FAKE and poor is Verdict.SUSPICIOUS


def test_roundtrip_and_unreadable_file(tmp_path):
    m = model(metrics={"auc": 0.8}, fitted_on="unit test")
    path = tmp_path / "cal.json"
    m.save(path)
    back = FusionModel.load(path)
    assert back.weights == m.weights and back.thresholds == m.thresholds and back.metrics == {"auc": 0.8}
    assert back.calibrate("visual", 0.8) == pytest.approx(m.calibrate("visual", 0.8))
    assert FusionModel.load(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert FusionModel.load(tmp_path / "bad.json") is None


def test_a_detector_without_its_own_calibrator_is_fused_at_half_strength_and_named():
    m = model(intercept=0.0, weights={"visual": 1.0}, calibrators={"mesonet:x": Calibrator("platt", 0.017, 0.0)})
    fusion, calibrated, _ = fuse({"visual": 0.95}, m, detectors={"visual": ("efficientnet_b7:dfdc", "f" * 64)})
    # never the MesoNet calibrator (it would flatten 0.95 to ~0.51): raw log-odds at half strength instead
    assert calibrated["visual"] == pytest.approx(fusion_mod.uncalibrated(0.95))
    assert calibrated["visual"] == pytest.approx(1 / (1 + (0.05 / 0.95) ** 0.5))
    assert fusion.uncalibrated == ("visual (efficientnet_b7:dfdc)",) and "efficientnet_b7:dfdc" in fusion.note
    # the model it was fitted for does get it
    _, cal2, _ = fuse({"visual": 0.95}, m, detectors={"visual": ("mesonet:x", "")})
    assert cal2["visual"] == pytest.approx(Calibrator("platt", 0.017, 0.0)(0.95))
    # the same name with other weights is another model: not calibrated by this entry
    m2 = model(intercept=0.0, weights={"visual": 1.0},
               calibrators={"mesonet:x": Calibrator("platt", 0.017, 0.0, sha256="a" * 64)})
    f3, cal3, _ = fuse({"visual": 0.95}, m2, detectors={"visual": ("mesonet:x", "b" * 64)})
    assert cal3["visual"] == pytest.approx(fusion_mod.uncalibrated(0.95)) and f3.uncalibrated


def test_a_slot_the_calibration_was_never_fitted_with_is_shown_but_not_counted():
    """A fusion of four detectors cannot weigh a fifth it never saw: the mouth score neither moves P(fake) nor
    narrows the AUTHENTIC band for not running, and the note says so."""
    cals = {"v": Calibrator("platt", 1.0, 0.0, slot="visual", reliability=0.8),
            "a": Calibrator("platt", 1.0, 0.0, slot="audio", reliability=0.8)}
    model = FusionModel(cals, 0.0, {}, thresholds=(0.3, 0.8), combiner="noisy-or", leak=0.02)
    ids = {"visual": ("v", ""), "audio": ("a", ""), "mouth": ("mouth_blur", "x")}
    base, _, _ = fuse({"visual": 0.2, "audio": 0.3}, model, detectors=ids, applicable=("visual", "audio"))
    more, cal_more, _ = fuse({"visual": 0.2, "audio": 0.3, "mouth": 0.99}, model, detectors=ids,
                             applicable=("visual", "audio", "mouth"))
    assert more.fake_probability == pytest.approx(base.fake_probability)
    assert more.thresholds == base.thresholds and "mouth" not in cal_more
    assert "not counted: mouth" in more.note and "not counted" not in (base.note or "")
    assert model.unfitted_slots(["visual", "mouth"]) == ("mouth",)

"""`python -m training.calibrate`: fusion fitted on eval results, anti-correlated detectors dropped, grouped CV."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from pipeline.fusion import FusionModel
from training import calibrate
from training.evaluate import ItemResult


def _results(n_groups: int, seed: int, reencode: str | None = None) -> list[ItemResult]:
    """Two clips per group (one real, one fake): visual separates them, lip-sync runs against the labels."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_groups):
        for label in ("real", "fake"):
            fake = label == "fake"
            visual = float(np.clip(rng.normal(0.7 if fake else 0.3, 0.15), 0.01, 0.99))
            lip = float(np.clip(rng.normal(0.2 if fake else 0.6, 0.1), 0.01, 0.99))
            out.append(ItemResult(
                path=f"V/{label}_{g}.mp4", label=label, modality="video_av", manipulation="talking_head" if fake
                else "none", group=f"id:{g}", verdict="SUSPICIOUS", fake_probability=0.5, reason=None,
                status={"visual": "ok", "temporal": "unavailable", "audio": "ok", "lip_sync": "ok"},
                raw={"visual": visual, "temporal": None, "audio": 0.5, "lip_sync": lip},
                calibrated={}, face_quality=0.8, seconds=1.0, reencode=reencode, detectors=IDS))
    return out


IDS = {"visual": ["mesonet:mesoinception_df", "a" * 64], "audio": ["aasist:aasist_ft", "b" * 64],
       "lip_sync": ["sync:lrasd-head", "c" * 64]}


def test_anti_correlated_detector_keeps_its_meaning():
    calibrators, weights, _ = calibrate.fit_fusion(_results(20, 0))
    assert calibrators["lip_sync"].method == "identity"  # not flipped to fit fakes that are in sync
    assert weights["lip_sync"] == 0.0
    assert weights["visual"] > 0


def test_stricter_thresholds_take_the_narrowest_bands():
    assert calibrate.stricter_thresholds((0.4, 0.7), (0.3, 0.8)) == (0.3, 0.8)
    assert calibrate.stricter_thresholds((0.5, 0.5), (0.45, 0.6)) == (0.45, 0.6)


def test_thresholds_respect_the_false_positive_budget():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(100), np.ones(100)]
    p = np.r_[rng.uniform(0, 0.7, 100), rng.uniform(0.3, 1, 100)]
    lo, hi = calibrate.pick_thresholds(p, y, max_fpr=0.05, max_miss=0.15)
    assert (p[y == 0] >= hi).mean() <= 0.05
    assert (p[y == 1] < lo).mean() <= 0.15
    assert lo <= 0.5 <= hi


def test_main_fits_on_raw_and_reencoded_runs(tmp_path):
    raw, wa = _results(12, 2), _results(12, 3, reencode="whatsapp")
    files = []
    for name, rs in (("raw", raw), ("wa", wa)):
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps(asdict(r)) + "\n" for r in rs))
        files.append(str(f))
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("path\tlabel\tmodality\tmanipulation\tgroup\n" + "".join(
        f"{r.path}\t{r.label}\tvideo_av\t{r.manipulation}\t{r.group}\n" for r in raw))
    out = tmp_path / "calibration.json"
    # a deployment with B7 calibrated earlier: its entry must survive this fit of the embedded detectors
    b7 = {"method": "platt", "slot": "visual", "sha256": "d" * 64, "a": 1.5, "b": -0.2}
    out.write_text(json.dumps({"version": 2, "calibrators": {"efficientnet_b7:dfdc": b7},
                               "fusion": {"intercept": 0.0, "weights": {}}}))
    assert calibrate.main(["--manifest", str(manifest), "--results", *files, "--out", str(out)]) == 0

    model = FusionModel.load(out)
    assert "48 items" in model.fitted_on and "whatsapp" in model.fitted_on
    cv = model.metrics["cross_validated"]
    assert cv["n"] == 48 and cv["auc"] > 0.8  # out-of-fold, groups never split between fit and score
    assert model.weights["visual"] > 0 and model.weights["lip_sync"] == 0
    # the FAKE threshold keeps the false-positive budget for the final model as well as out of fold
    assert model.metrics["in_sample"]["fpr_fake_on_real"] <= 0.05
    assert model.metrics["cross_validated"]["fpr_fake_on_real"] <= 0.05
    lo, hi = model.thresholds
    # calibrators are keyed by the detector that produced the scores (name + weights), never by slot
    assert set(model.calibrators) == {"mesonet:mesoinception_df", "aasist:aasist_ft", "sync:lrasd-head",
                                      "efficientnet_b7:dfdc"}
    meso = model.calibrator_for("mesonet:mesoinception_df", "a" * 64)
    assert meso is not None and meso.slot == "visual" and meso.method == "platt"
    assert model.calibrator_for("mesonet:mesoinception_df", "e" * 64) is None  # other weights: not this model
    assert model.calibrator_for("efficientnet_b7:dfdc", "d" * 64).a == 1.5
    assert model.combine({"visual": meso(0.9)}) > hi
    assert model.combine({"visual": meso(0.1)}) < lo

"""The detector registry is the real source of detectors: every entry loads and runs, selectors are validated
against it, and calibration follows the detector that ran, never the slot it sits in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from test_wav2vec2 import _tiny_config
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

import pipeline
from models import registry
from models.efficientnet_b7 import DeepFakeClassifier, EfficientNetB7Detector
from models.errors import DetectorUnavailable
from models.videomae import build_videomae_classifier, save_videomae_checkpoint
from pipeline.core import Components, Slot, load_slot
from pipeline.faces import face_regions
from pipeline.report import VISUAL, Status
from pipeline.settings import Settings

TALKING = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"
TINY_B7_ENCODER = "test_efficientnet"  # timm's 0.36M-parameter EfficientNet stands in for B7's encoder


def _tiny_b7(bias: float) -> EfficientNetB7Detector:
    torch.manual_seed(0)
    model = DeepFakeClassifier(TINY_B7_ENCODER)
    with torch.no_grad():
        model.fc.bias.fill_(bias)
    return EfficientNetB7Detector([model.eval()], device="cpu")


def _tiny_checkpoints(tmp: Path) -> dict[str, str]:
    torch.manual_seed(0)
    w2v = tmp / "w2v"
    Wav2Vec2ForSequenceClassification(_tiny_config({0: "real", 1: "fake"})).save_pretrained(w2v)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True).save_pretrained(w2v)
    mae = save_videomae_checkpoint(build_videomae_classifier("videomae_unittest", seed=0), tmp / "videomae")
    return {"wav2vec2": str(w2v), "videomae": str(mae)}


def _input(spec: registry.DetectorSpec, det) -> np.ndarray | None:
    """A batch shaped like the detector's registry preprocessing."""
    rng = np.random.default_rng(0)
    size = int(getattr(det, "input_size", 0) or spec.preprocess.input_size)
    if spec.preprocess.crop in ("aligned", "dfdc_box") and spec.slot in (registry.VISUAL, registry.MOUTH):
        return rng.integers(0, 255, (2, size, size, 3), dtype=np.uint8)
    if spec.name == "videomae":
        return rng.integers(0, 255, (1, det.num_frames, size, size, 3), dtype=np.uint8)
    if spec.preprocess.crop == "audio":
        n = int(getattr(det, "window_samples", 0) or 64600)
        return (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    return None


def test_every_registered_detector_loads_and_runs(tmp_path, monkeypatch):
    """One loop over the whole registry: real small weights from ../shared where they exist, tiny random
    models for the production checkpoints (B7, VideoMAE, wav2vec2). A new entry without a case here fails."""
    checkpoints = _tiny_checkpoints(tmp_path)
    built: dict[str, object] = {}
    order = ["retinaface", "lrasd", "mesonet", "mesonet_detail", "efficientnet_b7", "lrasd_temporal", "videomae",
             "aasist", "wav2vec2", "whisper_head", "audio_by_kind", "sync", "mouth_blur", "voice_change"]
    assert sorted(order) == sorted(registry.REGISTRY), "add the new detector to this test"
    for name in order:
        spec = registry.spec(name)
        if name == "efficientnet_b7":
            det = _tiny_b7(0.0)
        else:
            det = spec.load(checkpoint=checkpoints.get(name), device="cpu", deps={registry.SPEAKER: built.get("lrasd")})
        assert isinstance(det, spec.detector_class()), name
        assert det.name == spec.name, name
        built[name] = det
        batch = _input(spec, det)
        if name == "mouth_blur":  # measured inside the mouth box of the aligned crop, which the pipeline knows
            p = det.predict(batch, face_regions(int(spec.preprocess.input_size), 0.05)["mouth"]).fake_prob
            assert p.shape == (len(batch),) and np.all((p >= 0) & (p <= 1)), name
        elif batch is not None:
            p = det.predict(batch).fake_prob
            assert p.shape == (len(batch),) and np.all((p >= 0) & (p <= 1)), name
    # the temporal head and the lip-sync head share the speaker slot's LR-ASD instead of loading a copy
    assert built["lrasd_temporal"].front is built["lrasd"]
    assert built["sync"].lrasd is built["lrasd"]
    faces = built["retinaface"].detect(np.zeros((1, 64, 64, 3), np.uint8), threshold=0.8)
    assert len(faces) == 1


def test_selectors_are_validated_against_the_registry():
    with pytest.raises(ValidationError, match="unknown audio detector 'aasst'"):
        Settings(audio_detector="aasst")
    with pytest.raises(ValidationError, match="unknown visual detector"):
        Settings(visual_detector="mesonet:nope")
    with pytest.raises(ValidationError, match="unknown MesoNet variant"):
        Settings(mesonet_variant="mesoinception_xx")
    with pytest.raises(ValidationError, match="unknown temporal detector"):
        Settings(temporal_detector="c3d")
    ok = Settings(audio_detector="aasist_l", visual_detector="mesonet", temporal_detector="lrasd_temporal")
    assert registry.parse_selector("audio", ok.audio_detector)[1] == "aasist_l"
    assert registry.parse_selector("audio", "aasist") == (registry.spec("aasist"), "aasist")  # the released one


def test_missing_weights_are_one_exception_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    from models import weights

    weights.configure(tmp_path, tmp_path / "cache", False)
    try:
        with pytest.raises(DetectorUnavailable) as err:
            registry.spec("aasist").load("aasist_l")
        assert "AASIST-L.pth" in err.value.reason
        slot = load_slot("visual", Settings(visual_detector="efficientnet_b7"), "cpu", {})
        assert not slot.available and "not found" in slot.reason and slot.model_name == "efficientnet_b7:dfdc"
    finally:
        weights.configure()


def test_b7_is_not_calibrated_by_mesonets_calibrator(dev_data):
    """A production B7 in the visual slot: its score must not go through MesoNet's Platt calibrator (fitted on
    another model's score distribution), and the report must name it as uncalibrated."""
    embedded = pipeline.build(Settings(device="cpu"))
    c = embedded.c
    assert embedded.identities["visual"].name == "mesonet_detail:mesoinception_df"
    meso = embedded.identities["visual"]
    meso_cal = c.fusion_model.calibrator_for(meso.name, meso.sha256)
    assert meso_cal is not None and meso_cal.method == "platt"

    def with_b7(bias: float):
        comps = Components(face=c.face, visual=Slot(VISUAL, "efficientnet_b7:dfdc", _tiny_b7(bias)),
                           temporal=c.temporal, audio=c.audio, speaker=c.speaker, sync=c.sync,
                           fusion_model=c.fusion_model)
        return pipeline.build(Settings(device="cpu"), comps).run(dev_data / TALKING)

    low, high = with_b7(-3.0), with_b7(3.0)
    for rep in (low, high):
        vis = rep.detector(VISUAL)
        assert vis.status is Status.OK and vis.model == "efficientnet_b7:dfdc"
        assert rep.fusion.uncalibrated == ("visual (efficientnet_b7:dfdc)",)
        assert "uncalibrated" in rep.fusion.note and "efficientnet_b7:dfdc" in rep.fusion.note
        assert rep.to_dict()["detector_scores"]["fusion"]["uncalibrated"] == ["visual (efficientnet_b7:dfdc)"]
        # the documented fallback (raw log-odds at half strength), not MesoNet's calibrator
        assert vis.calibrated == pytest.approx(pipeline.fusion.uncalibrated(vis.score))
        assert abs(vis.calibrated - meso_cal(vis.score)) > 0.05
    # so B7's evidence moves the verdict through the documented fallback
    assert high.detector(VISUAL).calibrated - low.detector(VISUAL).calibrated > 0.5
    assert high.fake_probability > low.fake_probability
    # the embedded model keeps its own calibration and is not listed as uncalibrated
    rep = embedded.run(dev_data / TALKING)
    assert rep.fusion.uncalibrated == () and "uncalibrated" not in (rep.fusion.note or "")

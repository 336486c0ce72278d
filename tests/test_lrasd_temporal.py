"""The embedded temporal detector: frozen LR-ASD visual front-end + trained head (models/lrasd_temporal.py),
its bundled checkpoint in the pipeline, and its trainer (``python -m training temporal``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import pipeline
from models.lrasd_temporal import (
    HeadConfig,
    LRASDTemporalDetector,
    load_head_checkpoint,
    window_starts,
)
from pipeline.dense import DenseFaceClip
from pipeline.report import TEMPORAL, Status
from pipeline.settings import Settings
from training.features import dense_face_clips
from training.split import DEFAULT_SPLIT, SplitError, read_split, require_train_only
from training.temporal_head import FitConfig
from training.train_temporal import TrackSequence, augment_faces, fit_temporal_head

CLIP = "A_real_av/grid_lipnet/evaluation__samples__GRID__bbaf2n.mpg"  # 3 s, one face


@pytest.fixture(scope="module")
def pipe():
    return pipeline.build(Settings(device="cpu"))


def test_pipeline_uses_the_bundled_head_by_default(pipe, dev_data, tmp_path):
    status = pipe.status()["temporal"]
    assert status["available"] and status["model"] == "lrasd_temporal", status
    det = pipe.c.temporal.detector
    assert det.front is pipe.c.speaker.detector  # one LR-ASD in memory, shared with the speaker slot
    assert {i.name for i in det.weights_infos} == {"lrasd_temporal", "lrasd"}

    rep = pipe.run(dev_data / CLIP)
    res = rep.detector(TEMPORAL)
    assert res.status is Status.OK and 0.0 <= res.score <= 1.0, res
    p = res.calibrated if res.calibrated is not None else res.score  # fusion calibration, when it has one
    assert rep.detector_scores()["temporal_consistency"] == pytest.approx(1.0 - p, abs=1e-4)
    assert dict(res.extras)["windows"] >= 1 and res.timeline

    # predict_clips on the same dense windows the pipeline made gives the same per-track score
    clips = dense_face_clips(dev_data / CLIP, pipe.c.face.detector, pipe.settings, cache_dir=tmp_path)
    probs, starts, ends = det.predict_clips(clips)
    assert len(probs) == len(starts) == len(ends) >= 1
    assert np.all((probs >= 0) & (probs <= 1))
    assert float(probs.mean()) == pytest.approx(res.score, abs=1e-4)
    t0, t1 = clips[0].start_s, clips[0].timestamps_s[-1] + 1 / clips[0].fps
    assert np.all(starts >= t0 - 1e-6) and np.all(ends <= t1 + 1e-6)
    assert np.allclose(ends - starts, det.cfg.window / 25.0)


def test_short_clips_give_no_window(pipe):
    det = pipe.c.temporal.detector
    n = det.num_frames - 1
    clip = DenseFaceClip(np.zeros((n, 64, 64, 3), np.uint8), np.arange(n) / 25.0,
                         np.tile([8.0, 8.0, 56.0, 56.0], (n, 1)), np.zeros((n, 5, 2)), np.ones(n, bool), 25.0, 0)
    probs, starts, ends = det.predict_clips([clip])
    assert len(probs) == len(starts) == len(ends) == 0


def test_window_starts_cover_the_clip_end():
    assert window_starts(100, 40, 20).tolist() == [0, 20, 40, 60]
    assert window_starts(90, 40, 20).tolist() == [0, 20, 40, 50]
    assert window_starts(39, 40, 20).tolist() == []


def _toy_sequences(n_videos: int, rng: np.random.Generator) -> list[TrackSequence]:
    """Real: smooth embedding trajectories; fake: the same with frame-to-frame flicker (a temporal artefact)."""
    out = []
    for i in range(n_videos):
        fake = i % 2
        for source in ("orig", "whatsapp"):
            t = 60 + 7 * i
            emb = np.cumsum(rng.normal(0, 0.1, (t, 128)), 0) + 1.0
            if fake:
                emb = emb + rng.normal(0, 0.6, emb.shape) * (np.arange(t) % 2)[:, None]
            out.append(TrackSequence(f"toy/v{i}.mp4", fake, f"g{i // 2}", "flicker" if fake else "none", source, 0,
                                     emb.astype(np.float32)))
    return out


def test_tiny_training_run_writes_a_loadable_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    train, val = _toy_sequences(12, rng), _toy_sequences(6, rng)
    val = [replace(s, path=s.path.replace("toy/", "toyval/")) for s in val]
    out = tmp_path / "head.pt"
    cfg = HeadConfig(window=16, hop=8, hidden=16)
    split = tmp_path / "toy_split.tsv"  # the leakage guard needs a split that puts the toy videos on TRAIN
    split.write_text("path\tsplit\n" + "".join(f"{s.path}\ttrain\n" for s in train)
                     + "".join(f"{s.path}\tval\n" for s in val))
    summary = fit_temporal_head(train, out, cfg, FitConfig(epochs=8, windows_per_video=6, batch_size=16), folds=3,
                                l2_grid=(0.01, 0.1), split_file=split, val=val)
    assert 1 <= summary["epochs_run"] <= 8 and summary["l2"] in (0.01, 0.1)
    assert all(len(c) == 8 for c in summary["cv_curves"].values()) and summary["cv_mean_fold_auc"] > 0.8
    assert summary["val_video_auc"] > 0.8 and summary["val"]["orig"]["mean_p_fake"] > summary["val"]["orig"][
        "mean_p_real"]
    assert out.stat().st_size < 200_000

    head, loaded_cfg, meta = load_head_checkpoint(out)
    assert loaded_cfg == cfg and meta["epochs_run"] == summary["epochs_run"]
    det = LRASDTemporalDetector.load(out, front=object())
    fake = np.stack([s.emb[:16] for s in val if s.label])
    real = np.stack([s.emb[:16] for s in val if not s.label])
    assert det.predict(fake).fake_prob.mean() > det.predict(real).fake_prob.mean()
    # the stored normalisation came from the training windows, not the defaults
    assert not torch.allclose(head.feat_std, torch.ones_like(head.feat_std))


def test_trainer_refuses_validation_items(tmp_path):
    val_path = next(p for p, side in read_split(DEFAULT_SPLIT).items() if side == "val")
    with pytest.raises(SplitError, match="TRAIN side"):
        require_train_only([val_path])
    with pytest.raises(SplitError, match="not in the split"):  # unknown items are refused too, not waved through
        require_train_only(["A/x.mp4"])
    with pytest.raises(SplitError, match="not found"):  # and no trainer runs without a split at all
        require_train_only([val_path], tmp_path / "missing.tsv")
    leaked = [TrackSequence(val_path, 0, "g", "none", "orig", 0, np.zeros((50, 128), np.float32))]
    with pytest.raises(SplitError, match="TRAIN side"):
        fit_temporal_head(leaked, tmp_path / "never.pt")
    assert not (tmp_path / "never.pt").exists()


def test_augmentation_keeps_the_crop_format_and_is_reproducible():
    faces = np.random.default_rng(1).integers(0, 255, (50, 112, 112), dtype=np.uint8)
    a = augment_faces(faces, np.random.default_rng(3))
    b = augment_faces(faces, np.random.default_rng(3))
    assert a.shape == faces.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert any(not np.array_equal(augment_faces(faces, np.random.default_rng(s)), faces) for s in range(5))


def test_a_missing_model_stops_extraction_but_a_bad_file_is_skipped():
    from models.weights import WEIGHTS, WeightsNotFoundError
    from training.split import ManifestItem
    from training.train_temporal import collect_sequences

    class Extractor:
        def __init__(self, exc):
            self.exc = exc

        def sequences(self, item, source, aug_copies):
            raise self.exc

    item = ManifestItem("A/x.mp4", "real", "video_av", "none", "g", None, None)
    assert collect_sequences([item], ["orig"], 0, Extractor(ValueError("truncated file"))) == []
    missing = WeightsNotFoundError(WEIGHTS["retinaface_mnet025"], ["WEIGHTS_DIR (not set)"])
    with pytest.raises(WeightsNotFoundError, match="retinaface"):
        collect_sequences([item], ["orig"], 0, Extractor(missing))

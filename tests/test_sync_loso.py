"""The lip-sync head's leave-one-source-out trainer (training/sync_loso.py) and the full curve calibration."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models import sync_head
from pipeline import media, sync
from training import sync_loso
from training.split import read_manifest

SR = 16000


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)  # syllable-like bursts
    return (0.3 * env * rng.standard_normal(t.size)).astype(np.float32)


def test_splice_replaces_one_stretch_of_1_5_to_4_seconds():
    a = media.AudioTrack(_speechlike(8.0, 0), SR, 0.25)
    b = media.AudioTrack(_speechlike(8.0, 1), SR, 0.0)
    out = sync_loso.spliced(a, b, np.random.default_rng(3))
    assert out.samples.shape == a.samples.shape and out.source_offset_s == a.source_offset_s
    changed = np.flatnonzero(out.samples != a.samples)
    span = (changed[-1] - changed[0] + 1) / SR
    assert 1.0 <= span <= 4.0  # silent samples of both inside the stretch may coincide
    assert np.array_equal(out.samples[: changed[0]], a.samples[: changed[0]])
    assert np.array_equal(out.samples[changed[-1] + 1 :], a.samples[changed[-1] + 1 :])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (make install)")
def test_voice_over_keeps_the_length_and_starts_with_the_speaker():
    x = np.concatenate([np.zeros(SR, np.float32), _speechlike(5.0, 2)])
    out = sync_loso.voice_over(media.AudioTrack(x, SR, 0.0), np.random.default_rng(0))
    assert out.samples.shape == x.shape
    assert np.abs(out.samples[: int(0.9 * SR)]).max() == 0  # TTS starts when the speaker does (1 s)
    assert np.abs(out.samples[SR:]).max() > 0.05
    assert not np.allclose(out.samples[SR:], x[SR:])


def test_every_real_gets_the_fold_of_the_fakes_made_from_it(dev_data: Path):
    items = read_manifest(dev_data / "manifest.tsv")
    fold_of = sync_loso.fold_of_reals(items)
    by_path = {it.path: it for it in items}
    for it in items:
        if it.label == "fake" and it.modality == "video_av":
            assert fold_of[it.path] == it.path.split("/")[1]
    # a real with no fake made from it is its own collection's fold
    pcavs = [p for p in fold_of if "/pcavs_voxceleb/" in p]
    assert pcavs and all(fold_of[p] == "pcavs_voxceleb" for p in pcavs)
    # a real fed to a generator is scored in that generator's fold, and that fold holds it out
    held = sync_loso.held_out_sets(items)
    moved = [p for p, f in fold_of.items() if by_path[p].label == "real" and f != p.split("/")[1]]
    assert moved
    for p in moved:
        assert p in held[fold_of[p]]
        assert any(o.label == "fake" and o.path.split("/")[1] == fold_of[p] for o in items)


def _variant(clip: str, fold: str, kind: str, rng: np.random.Generator, lag: int = 0) -> sync_loso.Variant:
    t, m = 120, 15
    z = rng.standard_normal((t + 2 * m, 128)).astype(np.float32)
    visual = np.roll(z, -lag, axis=0)[m : m + t] + 0.3 * rng.standard_normal((t, 128)).astype(np.float32)
    audio = z if kind != "swap" else rng.standard_normal(z.shape).astype(np.float32)
    window = sync.TrackWindow(0, np.arange(t) / 25.0, np.ones(t, bool), np.zeros((t, 96, 96), np.uint8), None, visual)
    p = sync.PreparedWindow(window, np.zeros((t + 2 * m) * 640 + 240, np.float32), np.ones(t + 2 * m, bool), audio)
    valid = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(p.covered, t).T)
    return sync_loso.Variant(clip, fold, kind, lag, (p,), rng.standard_normal(2 * m + 1) * 0.01, (valid,))


def test_loso_never_scores_a_clip_with_a_head_fitted_on_its_fold(monkeypatch):
    rng = np.random.default_rng(0)
    variants = []
    for f in ("a", "b", "c", "d"):
        for c in range(3):
            clip = f"{f}/{c}"
            variants += [_variant(clip, f, "real", rng), _variant(clip, f, "shift", rng, lag=8),
                         _variant(clip, f, "swap", rng)]
    seen: list[tuple[set, set]] = []
    real_fit = sync_loso.fit_variant

    def spy(train, cfg, inner_folds=3):
        seen.append(({v.fold for v in train}, set()))
        return real_fit(train, cfg, inner_folds)

    monkeypatch.setattr(sync_loso, "fit_variant", spy)
    monkeypatch.setattr(sync_loso, "FIT_SHIFTS", (8,))
    scores = sync_loso.loso_scores(variants, sync_loso.Config(dims=2, motion_weight=0.0, features="full"))
    assert np.isfinite(scores).all() and len(seen) == 4
    assert all(len(folds) == 3 for folds, _ in seen)  # each fit sees the other three folds only
    summary = sync_loso.summarise(variants, scores)
    # lips that lead the audio by 8 frames and another voice are both told from the in-sync copies
    assert summary["recipes"]["swap"]["auc"] > 0.9


def test_full_calibration_reads_five_curve_features_and_round_trips(tmp_path: Path):
    d = np.arange(-15, 16)
    in_sync = np.exp(-(d / 2.0) ** 2)
    flat = 0.01 * np.cos(d)
    assert len(sync.curve_features(in_sync, 15)) == 2 and len(sync.curve_features(in_sync, 15, full=True)) == 5
    cal = np.array([0.0, -8.0, 4.0, -0.2, 3.0, -5.0])
    assert sync.calibrated_error(flat, 15, cal) > sync.calibrated_error(in_sync, 15, cal)
    head = sync_head.SyncHead()
    head.calibration = torch.from_numpy(cal).float()
    path = tmp_path / "h.pt"
    torch.save({"config": head.config, "state_dict": head.state_dict()}, path)
    loaded = sync_head.load(path)
    assert loaded.calibration.shape == (6,)
    assert np.allclose(loaded.calibration.numpy(), cal)


def _moving_variant(rng: np.random.Generator, est: sync.SyncEstimator) -> sync_loso.Variant:
    """A variant whose mouth moves and whose audio has energy, its motion curve made by the runtime."""
    v = _variant("a/0", "a", "real", rng)
    [p] = v.prepared
    t = len(p.window)
    mouth = rng.integers(0, 255, (t, 96, 96), dtype=np.uint8)
    window = sync.TrackWindow(0, p.window.timestamps_s, p.window.detected, mouth, None, p.window.visual)
    p = sync.PreparedWindow(window, rng.standard_normal(p.samples.shape).astype(np.float32), p.covered, p.audio_emb)
    motion = sync.pool_curve([est.motion_scores(p)], list(v.valid))
    return sync_loso.Variant(v.clip, v.fold, v.kind, 0, (p,), motion, v.valid)


def test_dual_calibration_reads_the_two_curves_apart_in_the_trainer_and_the_runtime(tmp_path: Path):
    from types import SimpleNamespace

    rng = np.random.default_rng(4)
    head = sync_head.SyncHead(dim_out=2)
    head.motion_weight = torch.tensor(1.0)
    # only the motion curve's c(near 0) counts: a motion curve alone moves the score, the head's alone cannot
    cal = np.zeros(11)
    cal[6] = -3.0
    head.calibration = torch.from_numpy(cal).float()
    path = tmp_path / "dual.pt"
    torch.save({"config": head.config, "state_dict": head.state_dict()}, path)
    head = sync_head.load(path)
    assert head.calibration.shape == (11,)
    est = sync.SyncEstimator(SimpleNamespace(device="cpu"), head=head, method="head")
    v = _moving_variant(rng, est)

    runtime = est._measure(0, list(v.prepared), {})
    [trainer] = sync_loso.errors(head, head.calibration.numpy(), [v], 1.0)
    assert runtime.lip_sync_error == pytest.approx(trainer, abs=1e-6)  # one rule for both
    near_motion = sync.curve_features(v.motion, 15)[0]
    assert runtime.lip_sync_error == pytest.approx(1 / (1 + np.exp(3.0 * near_motion)), abs=1e-6)
    # the combined curve the report shows is still head + weight x motion
    h = sync_loso.head_curve(head, v)
    assert np.allclose(runtime.curve, h + v.motion)
    with pytest.raises(ValueError, match="apart"):
        sync.calibrated_error(runtime.curve, 15, cal)


def test_dual_fit_standardises_and_folds_the_scaling_into_the_weights():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60), np.ones(60)].astype(int)
    x = rng.standard_normal((120, 10)) * np.geomspace(0.01, 10, 10) + 50.0 + y[:, None] * 0.5
    cal = sync_loso.fit_calibration(x, y, "dual")
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    ref = LogisticRegression(C=10.0, class_weight="balanced", max_iter=1000).fit((x - mu) / sd, y)
    assert np.allclose(cal[0] + x @ cal[1:], ref.decision_function((x - mu) / sd), atol=1e-6)
    with pytest.raises(ValueError, match="2, 5 or 10"):
        sync.calibration_input(np.zeros(31), 15, 3)


def test_feature_cache_keys_by_file_bytes_and_extractor_weights(tmp_path: Path):
    from types import SimpleNamespace

    from training.split import ManifestItem
    from training.train_sync import FeatureCache

    def model(sha: str):
        return SimpleNamespace(weights_info=SimpleNamespace(sha256=sha))

    clip = tmp_path / "data" / "a.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"first version")
    item = ManifestItem("a.mp4", "real", "video_av", "none", "g", None, clip.parent)
    cache = FeatureCache(tmp_path / "cache", model("face-1"), model("lrasd-1"))
    first = cache.path_for(item, "orig")
    assert first == FeatureCache(tmp_path / "cache", model("face-1"), model("lrasd-1")).path_for(item, "orig")
    assert cache.path_for(item, "msg") != first
    assert FeatureCache(tmp_path / "cache", model("face-1"), model("lrasd-2")).path_for(item, "orig") != first
    assert FeatureCache(tmp_path / "cache", model("face-2"), model("lrasd-1")).path_for(item, "orig") != first
    clip.write_bytes(b"replaced with another clip")  # same path, other bytes: never the old entry
    assert FeatureCache(tmp_path / "cache", model("face-1"), model("lrasd-1")).path_for(item, "orig") != first

"""Lip-sync estimator (pipeline/sync.py): offsets on synthetic and real clips, through the real decode path."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from pipeline import media, sync
from training.train_sync import dense_clips, shifted, swapped

REAL_CLIP = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"
OTHER_CLIP = "A_real_av/pcavs_voxceleb/misc__Pose_Source__00067.mp4"


# ----------------------------------------------------------------------------------------------
# synthetic: mouth motion and audio envelope built with a known lag
# ----------------------------------------------------------------------------------------------
def synthetic(lag: int, n: int = 150, seed: int = 0) -> tuple[sync.TrackWindow, media.AudioTrack]:
    """A face whose mouth region changes at a rate env(t), and noise whose loudness follows env(t - lag)."""
    rng = np.random.default_rng(seed)
    env = np.clip(uniform_filter1d(rng.standard_normal(n), 4) * 3, 0, None)  # bursts of "syllables"
    phase = np.cumsum(env)
    pattern = rng.random((sync.MOUTH_SIZE, sync.MOUTH_SIZE)) * 2 * np.pi
    mouth = np.full((n, sync.MOUTH_SIZE, sync.MOUTH_SIZE), 128, np.uint8)
    rows, cols = sync.MOUTH_ROWS, sync.MOUTH_COLS
    for t in range(n):
        mouth[t, rows, cols] = (128 + 60 * np.sin(pattern[rows, cols] + phase[t])).astype(np.uint8)
    samples = rng.standard_normal((n + 40) * sync.HOP).astype(np.float32) * 0.002
    for t in range(n):
        k = t + lag
        if 0 <= k < n + 40:
            samples[k * sync.HOP : (k + 1) * sync.HOP] *= 1 + 100 * env[t]
    window = sync.TrackWindow(0, np.arange(n) / sync.FPS, np.ones(n, bool), mouth, None)
    return window, media.AudioTrack(np.clip(samples, -1, 1), sync.SAMPLE_RATE, 0.0)


@pytest.mark.parametrize("lag", [-6, 0, 7])
def test_motion_baseline_recovers_a_constructed_lag(lag: int):
    window, audio = synthetic(lag)
    est = sync.SyncEstimator(None, method="motion")
    res = est.measure_track([window], audio, 0)
    assert isinstance(res, sync.SyncResult)
    assert res.best_offset_frames == lag
    assert res.offset_confidence > 3
    assert res.curve.shape == (2 * est.max_offset + 1,)


def test_sign_convention_audio_late_is_positive():
    """Delaying the audio of an in-sync synthetic clip by 5 frames moves the best offset to +5."""
    window, audio = synthetic(0)
    res = sync.SyncEstimator(None, method="motion").measure_track([window], shifted(audio, 5), 0)
    assert res.best_offset_frames == 5


def test_audio_frames_follow_the_timeline():
    audio = media.AudioTrack(np.arange(32000, dtype=np.float32) / 32000, 16000, 0.0)
    samples, covered = sync.audio_frames(audio, 0.5, 10, 2)
    first = int(0.5 * 16000) - 2 * sync.HOP
    assert samples.shape == ((10 + 4) * sync.HOP + 240,)
    assert samples[0] == pytest.approx(first / 32000)
    assert covered.all()
    _, covered = sync.audio_frames(audio, 1.9, 10, 0)  # runs past the 2 s of audio
    assert covered.tolist() == [True, True] + [False] * 8


def test_curve_summary_reads_peak_and_sidelobes():
    d = np.arange(-15, 16)
    curve = np.exp(-((d - 4) ** 2) / 2.0) * 0.5
    best, psr, near, margin = sync.curve_summary(curve, 15)
    assert best == 4
    assert psr > 10
    assert margin == pytest.approx(curve.max() - curve[d == 1][0])
    assert near == pytest.approx(curve[d == 1][0])


# ----------------------------------------------------------------------------------------------
# not applicable
# ----------------------------------------------------------------------------------------------
def test_too_short_and_missed_faces_are_not_applicable():
    window, audio = synthetic(0, n=150)
    est = sync.SyncEstimator(None, method="motion")
    short = est.analyse_windows([window.slice(0, 30)], audio, 0)
    assert isinstance(short, sync.SyncNotApplicable)
    assert "visible with sound for only 1.2 s" in short.reason
    missed = dataclasses.replace(window, detected=np.arange(150) % 4 == 0)
    res = est.analyse_windows([missed], audio, 0)
    assert isinstance(res, sync.SyncNotApplicable)
    assert "missed most frames" in res.reason


def test_window_outside_the_audio_is_not_applicable():
    window, audio = synthetic(0, n=150)
    late = dataclasses.replace(window, timestamps_s=window.timestamps_s + 60.0)
    res = sync.SyncEstimator(None, method="motion").analyse_windows([late], audio, 0)
    assert isinstance(res, sync.SyncNotApplicable)
    assert "audio does not cover" in res.reason


def test_no_audio_is_not_applicable():
    window, _ = synthetic(0)
    res = sync.SyncEstimator(None, method="motion").analyse_windows([window], None, 0)
    assert isinstance(res, sync.SyncNotApplicable) and res.reason == "no audio track"


# ----------------------------------------------------------------------------------------------
# real clips through the decode path
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(shared_weights: Path):
    from models.lrasd import LRASDDetector
    from models.retinaface import RetinaFaceDetector

    return RetinaFaceDetector.load(device="cpu"), LRASDDetector.load(device="cpu")


@pytest.fixture(scope="module")
def estimator(models) -> sync.SyncEstimator:
    return sync.SyncEstimator(models[1])


def _decode(path: Path, face_detector):
    _, audio, clips, main_id = dense_clips(path, face_detector)
    assert clips and audio is not None
    return clips, audio, main_id


@pytest.fixture(scope="module")
def real(dev_data: Path, models):
    return _decode(dev_data / REAL_CLIP, models[0])


@pytest.fixture(scope="module")
def real_result(real, estimator):
    clips, audio, main_id = real
    return estimator.analyse(clips, audio, main_id)


def _itsoffset_copy(src: Path, dst: Path, seconds: float, on_audio: bool) -> Path:
    """Remux with one stream's timestamps moved by ``seconds`` (no re-encode: only the container changes)."""
    first, second = (["-i", str(src)], ["-itsoffset", str(seconds), "-i", str(src)]) if on_audio else (
        ["-itsoffset", str(seconds), "-i", str(src)], ["-i", str(src)])
    subprocess.run(["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", *first, *second, "-map", "0:v",
                    "-map", "1:a", "-c", "copy", str(dst)], check=True)
    return dst


def test_real_clip_in_sync(real_result):
    res = real_result
    assert isinstance(res, sync.SyncResult)
    assert abs(res.best_offset_frames) <= 2
    assert res.lip_sync_error < 0.5
    assert res.speaking_by_track[res.track_id] > 0


def test_contract_fields_and_types(real_result, estimator):
    res = real_result
    assert isinstance(sync.ESTIMATOR_NAME, str) and sync.ESTIMATOR_NAME in sync.METHOD_NAMES.values()
    assert estimator.name == sync.ESTIMATOR_NAME
    assert isinstance(res.lip_sync_error, float) and 0.0 <= res.lip_sync_error <= 1.0
    assert isinstance(res.best_offset_frames, int) and isinstance(res.offset_confidence, float)
    assert isinstance(res.track_id, int)
    assert res.window_starts_s.shape == res.window_ends_s.shape == res.window_error.shape
    assert len(res.window_error) >= 1 and np.all(res.window_ends_s > res.window_starts_s)
    assert np.all((res.window_error >= 0) & (res.window_error <= 1))
    assert all(isinstance(k, int) and isinstance(v, float) for k, v in res.speaking_by_track.items())
    extras = dict(res.extras())
    assert set(extras) == {"best_offset_frames", "offset_s", "offset_confidence", "speaking_logit", "track_id",
                           "method"}
    assert extras["offset_s"] == pytest.approx(res.best_offset_frames / 25.0)
    assert extras["method"] == sync.ESTIMATOR_NAME
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.lip_sync_error = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(("on_audio", "expected"), [(True, 10), (False, -10)])
def test_container_offset_survives_the_decode_path(tmp_path: Path, dev_data: Path, models, estimator, real_result,
                                                   on_audio: bool, expected: int):
    """-itsoffset 0.4 on the audio input delays the audio by 10 frames; on the video input it delays the video,
    i.e. the audio leads by 10. The delay lives only in the container's timestamps (BASELINES pitfall)."""
    copy = _itsoffset_copy(dev_data / REAL_CLIP, tmp_path / "shifted.mp4", 0.4, on_audio)
    clips, audio, main_id = _decode(copy, models[0])
    # the decoded audio is the original's, moved by exactly 0.4 s on the video timeline
    original = media.load_audio(dev_data / REAL_CLIP).samples
    early, late = (original, audio.samples) if on_audio else (audio.samples, original)
    assert np.allclose(early[16000:48000], late[16000 + 6400 : 48000 + 6400], atol=1e-4)
    res = estimator.analyse(clips, audio, main_id)
    assert isinstance(res, sync.SyncResult)
    assert abs(res.best_offset_frames - expected) <= 2
    assert res.lip_sync_error > real_result.lip_sync_error


def test_swapped_audio_scores_higher(real, real_result, dev_data: Path, estimator):
    clips, audio, main_id = real
    other = media.load_audio(dev_data / OTHER_CLIP)
    res = estimator.analyse(clips, swapped(audio, other), main_id)
    assert isinstance(res, sync.SyncResult)
    assert res.lip_sync_error > real_result.lip_sync_error + 0.2


def test_silent_audio_is_not_applicable(real, estimator):
    clips, audio, main_id = real
    silent = media.AudioTrack(np.zeros_like(audio.samples), audio.sample_rate, 0.0)
    res = estimator.analyse(clips, silent, main_id)
    assert isinstance(res, sync.SyncNotApplicable)
    assert "no speech" in res.reason


def test_frozen_face_with_speech_is_a_voice_over(real, estimator):
    """Speech with a face that never moves: LR-ASD says nobody visible speaks, so there are no lips to check."""
    clips, audio, main_id = real
    frozen = [dataclasses.replace(c, frames=np.repeat(c.frames[:1], len(c), 0),
                                  boxes=np.repeat(c.boxes[:1], len(c), 0),
                                  landmarks=np.repeat(c.landmarks[:1], len(c), 0)) for c in clips]
    res = estimator.analyse(frozen, audio, main_id)
    assert isinstance(res, sync.SyncNotApplicable)
    assert "no visible face is speaking" in res.reason
    assert res.speaking_by_track and max(res.speaking_by_track.values()) <= 0


def test_motion_method_selectable(real, estimator):
    clips, audio, main_id = real
    est = sync.SyncEstimator(estimator.lrasd, method="motion")
    res = est.analyse(clips, audio, main_id)
    assert isinstance(res, sync.SyncResult)
    assert res.method == "sync:motion-envelope" and dict(res.extras())["method"] == "sync:motion-envelope"
    assert abs(res.best_offset_frames) <= 2

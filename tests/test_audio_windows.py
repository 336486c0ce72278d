"""Audio windowing, speech activity and score_audio plumbing (pipeline/audio.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from models.base import Scores
from pipeline import audio
from pipeline.audio import (
    AudioResult,
    NotApplicable,
    SpeechActivity,
    detect_speech,
    fix_length,
    make_windows,
    score_audio,
    trim_silence,
)

SR = 16000
SPEECH_FILE = "C_audio/tortoise_real_voices/tortoise__voices__daniel__2.flac"  # real voice, ~7.5 s


def decode(path: Path, sr: int = SR) -> np.ndarray:
    """Any audio file -> mono float32 at ``sr`` (PyAV decodes and resamples)."""
    import av

    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)


class StandIn:
    """Minimal detector: remembers what it was given; P(fake) grows with window loudness."""

    def __init__(self, window_samples: int = 64600):
        self.window_samples = window_samples
        self.calls: list[np.ndarray] = []

    def predict(self, windows: np.ndarray) -> Scores:
        self.calls.append(windows)
        return Scores.from_fake_logits(10.0 * np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1)) - 1.0)


@pytest.fixture(scope="module")
def speech(dev_data: Path) -> np.ndarray:
    return decode(dev_data / SPEECH_FILE)


# ---------------------------------------------------------------- windows


def test_fix_length_crops_and_tiles() -> None:
    x = np.arange(100_000, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x), x[:64600])
    short = np.arange(24000, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(short), np.concatenate([short, short, short[:16600]]))
    assert fix_length(np.ones(64600, np.float32)).shape == (64600,)
    with pytest.raises(ValueError):
        fix_length(np.zeros(0, np.float32))


def test_windows_overlap_and_cover_the_tail() -> None:
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    w = make_windows(x)
    assert w.windows.shape == (3, 64600) and w.windows.dtype == np.float32
    np.testing.assert_array_equal(np.round(w.starts_s * SR), [0, 32300, 100_000 - 64600])
    np.testing.assert_allclose(w.ends_s - w.starts_s, 64600 / SR)
    assert w.ends_s[-1] == pytest.approx(100_000 / SR)
    for row, start in zip(w.windows, np.round(w.starts_s * SR).astype(int), strict=True):
        np.testing.assert_array_equal(row, x[start : start + 64600])
    assert w.starts_s.dtype == np.float64 and w.ends_s.dtype == np.float64


def test_windows_exact_fits_add_no_extra_window() -> None:
    assert len(make_windows(np.zeros(64600, np.float32))) == 1
    w = make_windows(np.zeros(64600 + 32300, np.float32))
    np.testing.assert_array_equal(np.round(w.starts_s * SR), [0, 32300])
    w = make_windows(np.zeros(10 * SR, np.float32), window=16000, hop=4000)
    assert len(w) == 37 and w.ends_s[-1] == pytest.approx(10.0)


def test_short_audio_gives_one_tiled_window() -> None:
    x = np.random.default_rng(1).standard_normal(24000).astype(np.float32)
    w = make_windows(x)
    assert w.windows.shape == (1, 64600)
    np.testing.assert_array_equal(w.windows[0], fix_length(x))
    assert (w.starts_s[0], w.ends_s[0]) == (0.0, pytest.approx(1.5))  # the real end, not 4.04 s


# ---------------------------------------------------------------- speech activity


def test_silence_is_not_applicable() -> None:
    det = StandIn()
    out = score_audio(det, np.zeros(3 * SR, np.float32))
    assert isinstance(out, NotApplicable) and "no speech" in out.reason
    noise = (1e-3 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    assert isinstance(score_audio(det, noise), NotApplicable)
    assert det.calls == []


def test_too_short_is_not_applicable(speech: np.ndarray) -> None:
    out = score_audio(StandIn(), speech[: SR // 2])
    assert isinstance(out, NotApplicable) and "too short" in out.reason


def test_too_little_speech_is_not_applicable(speech: np.ndarray) -> None:
    # 0.6 s of speech inside 3 s of silence
    x = np.zeros(3 * SR, np.float32)
    act = detect_speech(speech)
    start = int(act.segments[0][0] * SR)
    x[SR : SR + int(0.6 * SR)] = speech[start : start + int(0.6 * SR)]
    out = score_audio(StandIn(), x)
    assert isinstance(out, NotApplicable) and "s of speech" in out.reason and out.speech_seconds < 1.0


def test_vad_is_bundled_offline_and_keeps_torch_threads(speech: np.ndarray) -> None:
    threads = torch.get_num_threads()
    act = detect_speech(speech)
    assert act.method == "silero-vad"  # model shipped in the silero_vad package, no download
    assert torch.get_num_threads() == threads  # importing silero_vad sets 1 thread process-wide
    assert act.speech_seconds > 4.0 and act.segments == sorted(act.segments)
    assert all(0 <= s < e <= len(speech) / SR + 1e-6 for s, e in act.segments)
    trimmed = trim_silence(speech, SR, act)
    assert 4.0 * SR < len(trimmed) <= len(speech)


def test_energy_fallback(monkeypatch: pytest.MonkeyPatch, speech: np.ndarray) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("vad exploded")

    monkeypatch.setattr(audio, "_silero_segments", broken)
    x = np.concatenate([np.zeros(2 * SR, np.float32), speech])
    act = detect_speech(x)
    assert act.method == "energy" and act.speech_seconds > 3.0
    assert act.segments[0][0] == pytest.approx(2.0, abs=0.3)
    assert detect_speech(np.zeros(2 * SR, np.float32)).segments == []


def test_trim_silence_without_speech_is_empty() -> None:
    assert trim_silence(np.ones(SR, np.float32), SR, SpeechActivity([], 0.0, "energy")).shape == (0,)


# ---------------------------------------------------------------- score_audio


def test_plumbing_with_a_stand_in_detector(speech: np.ndarray) -> None:
    det = StandIn(window_samples=16000)  # wav2vec2-like 1 s windows: any window size works
    res = score_audio(det, speech, hop=8000)
    assert isinstance(res, AudioResult)
    assert len(det.calls) == 1  # one batched call
    (windows,) = det.calls
    n = windows.shape[0]
    assert windows.shape == (n, 16000) and windows.dtype == np.float32 and n > 5
    for arr in (res.window_starts_s, res.window_ends_s, res.window_fake_prob, res.window_logit):
        assert arr.shape == (n,)
    assert res.clip_fake_prob == pytest.approx(float(np.mean(res.window_fake_prob)))
    np.testing.assert_allclose(res.window_fake_prob, 1 / (1 + np.exp(-res.window_logit)))
    np.testing.assert_allclose(res.window_ends_s - res.window_starts_s, 1.0)
    assert np.all(np.diff(res.window_starts_s) > 0)
    assert res.vad_method == "silero-vad" and res.speech_seconds > 4.0


def test_window_cap_spreads_the_kept_windows(speech: np.ndarray) -> None:
    full = score_audio(StandIn(window_samples=16000), speech, hop=8000)
    det = StandIn(window_samples=16000)
    capped = score_audio(det, speech, hop=8000, max_windows=4)
    assert det.calls[0].shape[0] == 4 < len(full.window_starts_s)
    # the first and last windows are kept, the rest spread between them
    assert capped.window_starts_s[0] == full.window_starts_s[0]
    assert capped.window_ends_s[-1] == full.window_ends_s[-1]
    assert set(capped.window_starts_s) <= set(full.window_starts_s)


def test_leading_silence_is_trimmed_and_timestamps_shift(speech: np.ndarray) -> None:
    ref_det, det = StandIn(), StandIn()
    ref = score_audio(ref_det, speech)
    shifted = score_audio(det, np.concatenate([np.zeros(2 * SR, np.float32), speech]))
    assert isinstance(ref, AudioResult) and isinstance(shifted, AudioResult)
    # the model never sees the 2 s of zeros ...
    first = det.calls[0][0]
    assert np.abs(first[: SR // 2]).max() > 0.01
    assert shifted.window_starts_s[0] >= 2.0
    # ... and the timeline is the original file's: the same windows, 2 s later (VAD frame jitter allowed)
    assert len(ref.window_starts_s) == len(shifted.window_starts_s)
    np.testing.assert_allclose(shifted.window_starts_s, ref.window_starts_s + 2.0, atol=0.05)
    np.testing.assert_allclose(shifted.window_ends_s, ref.window_ends_s + 2.0, atol=0.05)
    assert shifted.window_ends_s[-1] <= len(speech) / SR + 2.0 + 1e-6


def test_other_sample_rates_are_resampled(speech: np.ndarray) -> None:
    from scipy.signal import resample_poly

    x48 = resample_poly(speech, 3, 1).astype(np.float32)
    det = StandIn()
    res = score_audio(det, x48, sr=48000)
    ref = score_audio(StandIn(), speech)
    assert isinstance(res, AudioResult) and isinstance(ref, AudioResult)
    assert det.calls[0].shape[1] == 64600
    np.testing.assert_allclose(res.window_starts_s, ref.window_starts_s, atol=0.05)


def test_real_speech_with_aasist_l(speech: np.ndarray) -> None:
    from models.aasist import AASISTDetector

    det = AASISTDetector.load(variant="aasist_l")  # WEIGHTS_DIR -> shared/weights
    res = score_audio(det, speech)
    assert isinstance(res, AudioResult)
    duration = len(speech) / SR
    assert 2 <= len(res.window_starts_s) <= 4  # ~7 s of speech, 4.04 s windows, 50 % hop
    assert 0.0 <= res.window_starts_s[0] < 1.5 and res.window_ends_s[-1] <= duration + 1e-6
    assert res.window_ends_s[-1] > duration - 1.5
    np.testing.assert_allclose(res.window_ends_s - res.window_starts_s, 64600 / SR)
    assert np.all((res.window_fake_prob >= 0) & (res.window_fake_prob <= 1))
    assert np.isfinite(res.window_logit).all() and 0.0 <= res.clip_fake_prob <= 1.0


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_synthetic_tts_speech_is_detected_as_speech(tmp_path: Path) -> None:
    wav = tmp_path / "tts.wav"
    text = "This sentence is spoken by a speech synthesiser for the voice activity test."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    res = score_audio(StandIn(), decode(wav))
    assert isinstance(res, AudioResult) and res.speech_seconds > 1.0

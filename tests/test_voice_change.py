"""The voice-change detector: its mel front-end is librosa's, its encoder is resemblyzer's GE2E, and a stretch of
another person's speech spliced into a real soundtrack is found and placed on the timeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.voice_change import N_FFT, N_MELS, SAMPLE_RATE, VoiceChangeDetector, mel_filters, mel_frames
from pipeline import media, stages
from pipeline.audio import detect_speech

SPEAKER_A = "A_real_av/sadtalker_hdtf/examples__ref_video__WDA_AlexandriaOcasioCortez_000.mp4"
SPEAKER_B = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"


@pytest.fixture(scope="module")
def detector() -> VoiceChangeDetector:
    return VoiceChangeDetector.load()


def _speech(dev_data, path: str) -> np.ndarray:
    return media.load_audio(dev_data / path).samples


def test_mel_front_end_is_librosas():
    librosa = pytest.importorskip("librosa")
    np.testing.assert_allclose(mel_filters(), librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS),
                               atol=1e-7)
    x = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    ref = librosa.feature.melspectrogram(y=x, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=160, n_mels=N_MELS).T
    np.testing.assert_allclose(mel_frames(x), ref, rtol=1e-3, atol=1e-6)


def test_encoder_is_resemblyzers_ge2e(detector):
    """The re-implemented encoder with the pinned weights gives the package's own embedding of the same mels."""
    resemblyzer = pytest.importorskip("resemblyzer")
    ref = resemblyzer.VoiceEncoder("cpu", verbose=False)
    mels = np.random.default_rng(1).random((3, 160, N_MELS)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(mels)).numpy()
        got = detector.model(torch.from_numpy(mels)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_one_voice_reads_as_one(dev_data, detector):
    x = _speech(dev_data, SPEAKER_A)
    res = stages.score_voice_change(detector, x, SAMPLE_RATE, detect_speech(x).segments)
    assert not isinstance(res, str)
    assert len(res.window_probs) >= 10
    assert res.clip < 0.5, res.window_probs.round(2)


def test_a_splice_of_another_voice_is_found_where_it_is(dev_data, detector):
    a, b = _speech(dev_data, SPEAKER_A), _speech(dev_data, SPEAKER_B)
    x = a.copy()
    start, end = 3.0, 5.5
    i, j = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
    donor = b[SAMPLE_RATE: SAMPLE_RATE + j - i]
    x[i:j] = donor * np.sqrt(np.mean(a[i:j] ** 2) / np.mean(donor ** 2))  # loudness matched, as a forger would
    base = stages.score_voice_change(detector, a, SAMPLE_RATE, detect_speech(a).segments)
    res = stages.score_voice_change(detector, x, SAMPLE_RATE, detect_speech(x).segments)
    assert res.clip > 0.5 > base.clip
    lo, hi = res.changed_span()
    assert lo < end and hi > start, (lo, hi)  # the other voice is placed on the splice
    inside = (res.starts_s >= start - 0.2) & (res.ends_s <= end + 0.2)
    assert inside.any() and res.window_probs[inside].max() == res.window_probs.max()


class _Counting:
    """Stands in for the detector: records the windows it is given."""

    window_samples = 1600

    def __init__(self):
        self.seen = None

    def predict(self, windows):
        from models.base import Scores

        self.seen = windows
        return Scores.from_fake_logits(np.zeros(len(windows)))


def test_windows_are_speech_without_digital_silence():
    sr = 16000
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(4 * sr)).astype(np.float32)
    x[sr: sr + sr // 2] = 0.0  # padding, as a shifted soundtrack's start has
    starts, windows = stages.voice_windows(x, sr, [(0.0, 3.0)], 1600, hop_s=0.1)
    assert len(starts) and windows.shape == (len(starts), 1600)
    ends = starts + 1600
    assert not np.any((starts < 1.5 * sr) & (ends > sr)), "a window touching digital silence was kept"
    assert np.all(ends <= 3.0 * sr + 0.25 * 1600), "a window mostly outside the speech was kept"
    thinned, _ = stages.voice_windows(x, sr, [(0.0, 4.0)], 1600, hop_s=0.01, max_windows=7)
    assert len(thinned) == 7 and thinned[0] == 0


def test_too_little_speech_is_a_reason_not_a_score():
    det = _Counting()
    x = (0.05 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    res = stages.score_voice_change(det, x, 16000, [(0.0, 0.15)])
    assert isinstance(res, str) and "speech" in res and det.seen is None


def test_fill_scores_a_row_as_the_pipeline_would_and_keeps_rows_already_scored(tmp_path, dev_data, detector,
                                                                                monkeypatch):
    """``training.voice_fill``: a dev video row (as-is, and after a processing) gets the stage's own score of its
    file; a voice note is not applicable; a row this detector already scored is kept as it is."""
    import json
    from dataclasses import asdict

    from models.registry import identity
    from pipeline.report import VOICE_CHANGE
    from training import voice_fill
    from training.calibrate import _read_results
    from training.evaluate import ItemResult
    from training.reencode import process

    def row(path, modality, reencode=None, **kw):
        return ItemResult(path, "real", modality, "none", "g", "AUTHENTIC", 0.3, None, {"audio": "ok"},
                          {"audio": 0.2}, {}, None, 1.0, reencode, **kw)

    ident = identity("voice_change", detector)
    kept = row(SPEAKER_B, "video_av", "noise", detectors={VOICE_CHANGE: [ident.name, ident.sha256]})
    kept = voice_fill.filled(kept, 0.123, "ok", (ident.name, ident.sha256))
    note = "C_audio/tortoise_real_voices/tortoise__voices__daniel__2.flac"
    src = tmp_path / "eval" / "all" / "results.jsonl"
    src.parent.mkdir(parents=True)
    src.write_text("".join(json.dumps(asdict(r)) + "\n" for r in
                           [row(SPEAKER_A, "video_av"), row(SPEAKER_A, "video_av", "telephone"), row(note, "audio"),
                            kept]))
    args = ["--manifest", str(dev_data / "manifest.tsv"), "--results", str(src), "--out", str(tmp_path / "filled"),
            "--cache", str(tmp_path / "cache.jsonl")]
    assert voice_fill.main(args) == 0
    out = _read_results(tmp_path / "filled" / "all" / "results.jsonl")
    x = _speech(dev_data, SPEAKER_A)
    want = stages.score_voice_change(detector, x, SAMPLE_RATE, detect_speech(x).segments).clip
    assert out[0].status[VOICE_CHANGE] == "ok" and out[0].raw[VOICE_CHANGE] == pytest.approx(want, abs=1e-9)
    phone = media.load_audio(process(dev_data / SPEAKER_A, tmp_path, "telephone", kind="video")).samples
    want_phone = stages.score_voice_change(detector, phone, SAMPLE_RATE, detect_speech(phone).segments).clip
    assert out[1].raw[VOICE_CHANGE] == pytest.approx(want_phone, abs=1e-9) and want_phone != want
    assert out[2].status[VOICE_CHANGE] == "not_applicable" and out[2].raw[VOICE_CHANGE] is None
    assert out[3].raw[VOICE_CHANGE] == 0.123  # kept, not decoded again
    assert out[0].detectors[VOICE_CHANGE] == [ident.name, ident.sha256]
    # a second run over the same files decodes nothing: every score comes from the cache, unchanged
    monkeypatch.setattr(voice_fill, "score_file", lambda *a: pytest.fail("decoded again"))
    assert voice_fill.main([*args[:-4], "--out", str(tmp_path / "again"), *args[-2:]]) == 0
    again = _read_results(tmp_path / "again" / "all" / "results.jsonl")
    assert [r.raw.get(VOICE_CHANGE) for r in again] == [r.raw.get(VOICE_CHANGE) for r in out]

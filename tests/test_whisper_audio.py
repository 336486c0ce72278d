"""The Whisper audio detector: Whisper's own input features, the real encoder from its pinned wheel, windows pooled
from 30 s of context, the runtime's scoring path, and heads refitted without each fold (training.whisper_oof)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DEV_DATA

from models.whisper_audio import (
    CHUNK,
    CHUNK_FRAMES,
    SAMPLE_RATE,
    WINDOW,
    LinearHead,
    WhisperAudioDetector,
    WhisperEncoder,
    encoder_dir,
    log_mel,
)


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding signal (harmonics with a wandering pitch, syllable envelope, a little noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    return (0.2 * env * voice + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> WhisperEncoder:
    return WhisperEncoder.load(threads=1)


def test_log_mel_is_whispers_recipe():
    """Against a plain numpy/librosa rendering of Whisper's front end: periodic Hann STFT 400/160, Slaney mel,
    log10, floor 8 decades under the peak, (x + 4) / 4; the last STFT frame dropped, frames made even."""
    import librosa

    wave = _speech(2.0)
    n = wave.size
    padded = np.pad(wave, N := 200, mode="reflect")
    win = np.hanning(401)[:-1]  # periodic Hann
    frames = np.stack([padded[i : i + 400] * win for i in range(0, n + 1, 160)][: 1 + n // 160])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80) @ power.T[:, :-1]
    ref = np.log10(np.maximum(mel, 1e-10))
    ref = (np.maximum(ref, ref.max() - 8) + 4) / 4
    ref = ref[:, : ref.shape[1] - ref.shape[1] % 2]
    got = log_mel(wave[None])[0]
    assert N == 200 and got.shape == ref.shape == (80, 200)
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_encoder_weights_are_the_pinned_file():
    from models.weights import WEIGHTS, sha256_of

    d = encoder_dir()
    assert sha256_of(d / "model.bin") == WEIGHTS["whisper_tiny_en"].sha256


def test_a_tampered_encoder_is_refused(tmp_path):
    from models.errors import DetectorUnavailable

    for f in ("model.bin", "config.json", "vocabulary.txt"):
        (tmp_path / f).write_bytes(b"not whisper")
    with pytest.raises(DetectorUnavailable, match="sha256"):
        encoder_dir(tmp_path)


def test_windows_pool_the_frames_they_span_with_30s_of_context(encoder):
    """A window's features are the mean and std of exactly the encoder frames under it, from the chunk encoding;
    a window over the 30 s boundary takes frames from both chunks."""
    speech = _speech(34.0)
    starts = np.array([0.0, 2.0, 28.0])
    feats = encoder.speech_features(speech, starts)
    assert feats.shape == (3, 768)
    h0 = encoder.hidden(log_mel(speech[:CHUNK][None]))[0]
    tail = np.pad(speech[CHUNK:], (0, 2 * CHUNK - speech.size))
    h1 = encoder.hidden(log_mel(tail[None]))[0]
    span = WINDOW // 320
    for k, s in enumerate((0, 100)):
        seg = h0[s : s + span]
        np.testing.assert_allclose(feats[k], np.concatenate([seg.mean(0), seg.std(0)]), rtol=1e-4, atol=1e-4)
    seg = np.concatenate([h0[1400:CHUNK_FRAMES], h1[: 1400 + span - CHUNK_FRAMES]])
    np.testing.assert_allclose(feats[2], np.concatenate([seg.mean(0), seg.std(0)]), rtol=1e-4, atol=1e-4)
    # context matters: the same 4 s encoded alone reads differently
    alone = encoder.speech_features(speech[32000 : 32000 + WINDOW], np.zeros(1))[0]
    assert np.abs(alone - feats[1]).max() > 1e-2


def _head(seed: int = 0) -> LinearHead:
    rng = np.random.default_rng(seed)
    return LinearHead(rng.normal(0, 0.1, 768), np.full(768, 0.5), rng.normal(0, 0.05, 768), 0.2, {"C": 0.003})


def test_score_audio_runs_the_head_on_context_features(encoder, tmp_path):
    """The runtime path: windows cut as for any audio detector, features from the speech around them, the clip
    score the mean window P(fake), and the features handed back for make eval to keep."""
    from pipeline.audio import SpeechActivity, score_audio

    head = _head()
    head.save(tmp_path / "head.pt")
    reloaded = LinearHead.load(tmp_path / "head.pt")
    np.testing.assert_allclose(reloaded.coef, head.coef)
    det = WhisperAudioDetector(encoder, reloaded)
    wave = np.concatenate([np.zeros(8000, np.float32), _speech(9.0), np.zeros(8000, np.float32)])
    # the VAD is the runtime's business, not this detector's: say where the speech is
    res = score_audio(det, wave, SAMPLE_RATE, activity=SpeechActivity([(0.5, 9.5)], 9.0, "given"))
    assert res.window_features is not None and res.window_features.shape == (len(res.window_fake_prob), 768)
    p = 1 / (1 + np.exp(-head.logit(res.window_features)))
    np.testing.assert_allclose(res.window_fake_prob, p, rtol=1e-9)
    assert res.clip_fake_prob == pytest.approx(float(p.mean()))
    assert len(p) == 4 and np.ptp(p) > 0  # 9 s of speech: windows at 0, 2, 4 s and one flush with the end


def test_whisper_oof_scores_each_fold_with_a_head_that_never_saw_it(monkeypatch):
    """Each fold's rows are scored by a head fitted on the other folds' clips only (nor on the reals a fold's
    synthetic items were made from); what a recipe learns from follows --learn-from."""
    from training import whisper_oof
    from training.evaluate import ItemResult
    from training.split import ManifestItem

    def item(path, label, modality="audio", origin="", manipulation=""):
        return ManifestItem(path, label, modality, manipulation, "", 4.0, Path("/dev"), origin)

    items = {p: item(p, lab) for p, lab in (("A_real_audio/a/1.wav", "real"), ("A_real_audio/a/2.wav", "real"),
                                            ("B_fake_audio/b/1.wav", "fake"), ("B_fake_audio/b/2.wav", "fake"),
                                            ("A_real_audio/c/1.wav", "real"), ("B_fake_audio/d/1.wav", "fake"))}
    items["A_real_av/v/1.mp4"] = item("A_real_av/v/1.mp4", "real", "video_av")
    items["voice_over/x.mp4"] = item("voice_over/x.mp4", "fake", "video_av", origin="A_real_av/v/1.mp4",
                                     manipulation="voice_over")
    assert [whisper_oof.audio_label(items["A_real_av/v/1.mp4"], r) for r in whisper_oof.LEARN_FROM] == [None, 0, 0]
    assert [whisper_oof.audio_label(items["voice_over/x.mp4"], r) for r in whisper_oof.LEARN_FROM] == [None, None, 1]
    rng = np.random.default_rng(0)
    feats = {p: rng.normal(0.0, 1.0, (3, 768)) + (0.8 if it.label == "fake" else 0.0) for p, it in items.items()}

    class Cache:  # make eval's kept features, by file
        def get_features(self, file, variant):
            assert variant == "orig"
            return feats[str(Path(file).relative_to("/dev"))]

    rows = [ItemResult(p, it.label, it.modality, it.manipulation, "", "AUTHENTIC", 0.5, None, {"audio": "ok"},
                       {"audio": 0.5}, {}, None, 1.0, None) for p, it in items.items()]
    fold_of = {p: ("v" if p in ("A_real_av/v/1.mp4", "voice_over/x.mp4") else p.split("/")[1]) for p in items}
    train = whisper_oof.examples(rows, items, Cache(), "audio+soundtracks+synth")
    assert {e.path for e in train} == set(items)
    seen = []
    real_fit = whisper_oof.fit
    monkeypatch.setattr(whisper_oof, "fit", lambda keep, c, meta=None: seen.append({e.path for e in keep})
                        or real_fit(keep, c, meta))
    scores, counts = whisper_oof.score_rows(rows, items, train, Cache(), 0.01, fold_of, {})
    assert counts["scored"] == len(rows) and all(0 <= s <= 1 for s in scores.values())
    by_fold = dict(zip(sorted({fold_of[r.path] for r in rows}), seen, strict=True))
    for fold, learned in by_fold.items():
        assert not any(fold_of[p] == fold for p in learned), fold
    # the voice-over's fold holds the real clip it was made from: neither is learned from for that fold
    assert not {"A_real_av/v/1.mp4", "voice_over/x.mp4"} & by_fold["v"]
    # a row's score is the runtime's rule on its own kept features, under its fold's head
    head = real_fit([e for e in train if fold_of[e.path] != "b"], 0.01)
    i = next(k for k, r in enumerate(rows) if r.path == "B_fake_audio/b/1.wav")
    assert scores[i] == pytest.approx(whisper_oof.clip_score(head, feats["B_fake_audio/b/1.wav"]))


def test_the_whisper_fusion_file_fits_the_shipped_head_and_calibrates_a_voice_note():
    """AUDIO_DETECTOR=whisper_head runs with its own fusion file (make calibrate-whisper): a calibrator for exactly
    the pinned head, so a voice note's audio score is calibrated rather than counted at the uncalibrated weight."""
    import pipeline
    from models.weights import WEIGHTS
    from pipeline.fusion import FusionModel
    from pipeline.report import AUDIO, Status
    from pipeline.settings import Settings

    path = Path(__file__).resolve().parent.parent / "pipeline" / "calibration_whisper.json"
    model = FusionModel.load(path)
    assert model.calibrator_for("whisper_head", WEIGHTS["whisper_head"].sha256) is not None
    p = pipeline.build(Settings(audio_detector="whisper_head", calibration_file=path, explain=False))
    voice = DEV_DATA / "C_audio/tortoise_real_voices/tortoise__voices__angie__1.flac"
    rep = p.run(voice)
    audio = next(d for d in rep.detectors if d.slot == AUDIO)
    assert audio.model == "whisper_head" and audio.status is Status.OK
    assert audio.calibrated is not None and 0.0 <= audio.calibrated <= 1.0

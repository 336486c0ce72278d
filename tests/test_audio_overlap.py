"""The overlap-free audio score derived from the half-overlap windows make eval keeps (training/audio_overlap.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_audio_windows import SPEECH_FILE, StandIn, decode

from pipeline.audio import AASIST_WINDOW, AudioResult, score_audio
from training.audio_overlap import overlap_free, overlap_free_score
from training.evaluate import ItemResult


def _kept(res: AudioResult) -> list[list[float]]:
    """The windows as ``make eval`` stores them (times rounded to 0.1 ms)."""
    return [[round(float(a), 4), round(float(b), 4), float(p)]
            for a, b, p in zip(res.window_starts_s, res.window_ends_s, res.window_fake_prob, strict=True)]


@pytest.mark.parametrize("seconds", [3.0, 4.0375, 8.075, 9.0, 12.3, 21.7])
def test_the_subset_of_half_overlap_windows_gives_the_overlap_free_score(dev_data: Path, seconds: float):
    speech = decode(dev_data / SPEECH_FILE)
    wave = np.tile(speech, 4)[: int(seconds * 16000)]
    det = StandIn(window_samples=AASIST_WINDOW)
    half = score_audio(det, wave, hop=AASIST_WINDOW // 2, min_speech_s=0.5)
    whole = score_audio(det, wave, hop=AASIST_WINDOW, min_speech_s=0.5)
    r = ItemResult("x", "real", "audio", "none", "g", "AUTHENTIC", 0.1, None, {"audio": "ok"},
                   {"audio": half.clip_fake_prob}, {}, None, 1.0, None, audio_windows=_kept(half))
    assert overlap_free_score(r) == pytest.approx(whole.clip_fake_prob, abs=1e-12)
    idx = overlap_free(r.audio_windows)
    assert len(idx) == len(whole.window_fake_prob) <= len(half.window_fake_prob)


def test_thinned_or_foreign_windows_are_not_guessed_from():
    w = AASIST_WINDOW / 16000
    full = [[i * w / 2, i * w / 2 + w, 0.1 * i] for i in range(7)]  # 16.15 s of speech, every half window
    assert overlap_free(full) == [0, 2, 4, 6]
    assert overlap_free(full[::2]) is None  # thinned (MAX_AUDIO_WINDOWS): not the complete set
    assert overlap_free([[s + 0.3 * i, e + 0.3 * i, p] for i, (s, e, p) in enumerate(full)]) is None
    assert overlap_free([]) is None


def test_another_detector_rescores_every_audio_row_on_its_kept_windows():
    from types import SimpleNamespace

    from training.audio_rescore import score_rows
    from training.split import ManifestItem

    items = {p: ManifestItem(p, "real", "audio", "none", "g", None, Path("/nowhere"), "")
             for p in ("a.wav", "b.wav", "c.wav")}
    kept = {(str(items["a.wav"].file), "orig"): np.array([[0.2], [0.6]]),
            (str(items["b.wav"].file), "eval-telephone"): np.array([[0.9]])}
    cache = SimpleNamespace(get=lambda f, v: kept.get((str(f), v)))

    def row(path, status="ok", reencode=None):
        return ItemResult(path, "real", "audio", "none", "g", "AUTHENTIC", 0.1, None, {"audio": status},
                          {"audio": 0.5}, {}, None, 1.0, reencode)

    rows = [row("a.wav"), row("b.wav", reencode="telephone"), row("c.wav"), row("a.wav", status="not_applicable")]
    scores, counts = score_rows(rows, items, cache, lambda w: SimpleNamespace(fake_prob=w[:, 0]))
    assert scores == {0: pytest.approx(0.4), 1: pytest.approx(0.9), 2: None}  # the row's own variant's windows
    assert counts == {"scored": 2, "no inputs kept": 1}

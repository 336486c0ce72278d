"""The audio-embedding probe's leave-one-source-out protocol (training/audio_loso.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training import audio_loso
from training.metrics import auc
from training.split import read_manifest


def test_windows_cover_the_speech_and_tile_short_clips():
    short = np.arange(16000, dtype=np.float32)
    w = audio_loso.windows_of(short, 4)
    assert w.shape == (1, audio_loso.WINDOW) and np.array_equal(w[0, 16000:32000], short)
    long = np.random.default_rng(0).standard_normal(16000 * 20).astype(np.float32)
    w = audio_loso.windows_of(long, 3)
    assert w.shape == (3, audio_loso.WINDOW)
    assert np.array_equal(w[0], long[: audio_loso.WINDOW]) and np.array_equal(w[-1], long[-audio_loso.WINDOW :])


def test_the_head_never_scores_an_item_it_was_fitted_on(dev_data: Path):
    """Noise features with noise labels: a head that saw its own items would memorise them (AUC near 1)."""
    all_items = read_manifest(dev_data / "manifest.tsv")
    items = [it for it in all_items if it.modality == "audio"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(items), 160))
    y = rng.integers(0, 2, len(items))
    p = audio_loso.loso_head(x, y, items, all_items, c=10.0)
    ok = ~np.isnan(p)
    assert ok.mean() > 0.9
    assert auc(y[ok], p[ok]) < 0.65


def test_augmented_copies_of_a_held_out_item_never_teach_its_head(dev_data: Path):
    """The Whisper probe's augmented copies are per item: a copy of a held-out item in the training set would let
    the head memorise that item (noise features, noise labels: AUC near 1). Every version is scored by the same
    heads, so an identical version scores identically."""
    from training import whisper_head

    all_items = read_manifest(dev_data / "manifest.tsv")
    items = [it for it in all_items if it.modality == "audio"]
    rng = np.random.default_rng(1)
    feats = [rng.standard_normal((1, 400)) for _ in items]
    copies = [[f + 0.01 * rng.standard_normal(f.shape) for f in feats]]
    y = rng.integers(0, 2, len(items))
    out = whisper_head.loso_scores(feats, y, items, all_items, c=10.0, copies=copies, tests={"same": feats})
    assert set(out) == {"clean", "same"}
    ok = ~np.isnan(out["clean"])
    assert ok.mean() > 0.9
    assert auc(y[ok], out["clean"][ok]) < 0.65
    np.testing.assert_array_equal(out["same"], out["clean"])


def test_augmented_copies_are_reproducible_and_differ_by_copy():
    from training import whisper_head

    wave = np.random.default_rng(2).standard_normal(16000 * 3).astype(np.float32) * 0.1
    a0, a0_again, a1 = (whisper_head.augmented(k)(wave, "x/a.wav") for k in (0, 0, 1))
    np.testing.assert_array_equal(a0, a0_again)  # a cached copy can be made again
    assert a0.shape == wave.shape and not np.array_equal(a0, a1)


def test_the_probe_processes_speech_as_make_eval_processes_a_voice_note():
    """``processed("telephone")`` is the benchmark's narrow-band line: the band above 4 kHz is gone, the speech
    band stays, and the length is the clip's (give or take the codec's padding)."""
    from training import whisper_head

    t = np.arange(16000 * 2) / 16000
    wave = (0.2 * np.sin(2 * np.pi * 500 * t) + 0.2 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    out = whisper_head.processed("telephone")(wave, "x/a.wav")
    assert abs(out.size - wave.size) < 0.1 * wave.size
    spec = np.abs(np.fft.rfft(out[: wave.size] if out.size >= wave.size else np.pad(out, (0, wave.size - out.size))))
    freqs = np.fft.rfftfreq(wave.size, 1 / 16000)
    band = lambda f: spec[np.abs(freqs - f) < 50].max()  # noqa: E731
    assert band(6000) < 0.05 * band(500)


def test_the_probe_judges_only_what_the_runtime_scores(dev_data: Path):
    """A spoken digit under a second is NOT_APPLICABLE at runtime, so the probe leaves it out; a sentence stays."""
    from training import whisper_head

    items = {it.path: it for it in read_manifest(dev_data / "manifest.tsv")}
    digit, sentence = (items["C_audio/fsdd/recordings__0_george_0.flac"],
                       items["C_audio/freevc_demo/data__wavs__F_3575_170457_000032_000001.flac"])
    assert whisper_head.scorable([digit, sentence]) == [sentence]

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

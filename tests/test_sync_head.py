"""The lip-sync head (models/sync_head.py), its fitting (training/train_sync.py) and the committed checkpoint."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter1d

from models import sync_head
from models.weights import BUNDLED_DIR, WEIGHTS, resolve
from pipeline import sync
from training.train_sync import FitConfig, TrainWindow, dense_clips, fit_head

REAL_CLIP = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"
M = 15


def test_checkpoint_is_bundled_small_and_loads():
    spec = WEIGHTS["sync_head"]
    assert spec.bundled
    path = resolve("sync_head")
    assert path == BUNDLED_DIR / "sync_head.pt"
    assert path.stat().st_size < 300 * 1024
    head = sync_head.load()
    assert not head.training
    assert head.max_offset == M
    assert head.visual.weight.shape == (head.config["dim_out"], 128, 2 * head.config["context"] + 1)
    # (bias, near, margin), with the full features also (psr, |best|/m, spread), dual: those five per curve
    assert torch.isfinite(head.calibration).all() and head.calibration.shape in ((3,), (6,), (11,))
    assert float(head.motion_weight) >= 0
    # the calibration must say "more mismatch" for a lower curve at 0 and a higher peak elsewhere
    assert float(head.calibration[1]) < 0 < float(head.calibration[2])


def test_similarities_average_to_correlations():
    """Mean over frames of the per-frame scores at offset d is the channel-mean correlation of the codes."""
    torch.manual_seed(0)
    head = sync_head.SyncHead(dim_out=3, context=1, max_offset=4).eval()
    a = torch.randn(1, 40 + 8, 128)
    v = torch.randn(1, 40, 128)
    with torch.no_grad():
        s = head.similarities(a, v, 4)[0]
        pa, pv = head.project(a, v)
    assert s.shape == (40, 9)
    d = 2  # offset +2: audio frames 2+4 .. of the extended window
    za = pa[0, 4 + d : 4 + d + 40] * np.sqrt(3)
    zv = pv[0] * np.sqrt(3)
    corr_like = (za * zv).sum(1).mean() / 3
    assert float(s[:, 4 + d].mean()) == pytest.approx(float(corr_like), abs=1e-5)
    with pytest.raises(ValueError, match="expected 40"):
        head.similarities(a[:, :-1], v, 4)


def _latent_windows(n_windows: int, lag: int = 0, seed: int = 0, n: int = 120) -> list[TrainWindow]:
    """Visual and audio 'embeddings' that are different random mixtures of one slow latent signal; the audio
    carries it ``lag`` frames late."""
    mixing = np.random.default_rng(123)  # the same "encoders" for every window
    mix_v, mix_a = mixing.standard_normal((3, 128)), mixing.standard_normal((3, 128))
    rng = np.random.default_rng(seed)
    pad = abs(lag)
    out = []
    for _ in range(n_windows):
        z = uniform_filter1d(rng.standard_normal((n + 2 * M + 2 * pad, 3)), 3, axis=0)
        vis = z[pad + M : pad + M + n] @ mix_v  # visual frame t shows the latent at t
        aud = z[pad - lag : pad - lag + n + 2 * M] @ mix_a  # audio frame j (window frame j - M) carries j - M - lag
        vis = vis + 0.5 * rng.standard_normal(vis.shape)
        aud = aud + 0.5 * rng.standard_normal(aud.shape)
        out.append(TrainWindow("synthetic", "g", aud.astype(np.float32), vis.astype(np.float32),
                               np.ones(n + 2 * M, bool)))
    return out


def _curve(head, w: TrainWindow) -> np.ndarray:
    with torch.no_grad():
        s = head.similarities(torch.from_numpy(w.audio)[None], torch.from_numpy(w.visual)[None], M,
                              torch.from_numpy(w.covered)[None])[0].numpy()
    return s.mean(0)


@pytest.mark.parametrize("lag", [-5, 0, 8])
def test_fitted_projections_find_a_known_lag(lag: int):
    """CCA fitted on aligned synthetic windows, then applied to a new window whose audio is ``lag`` late."""
    head = fit_head(_latent_windows(6, 0, seed=1), FitConfig(dim_out=2, context=2))
    test = _latent_windows(1, lag, seed=2)[0]
    curve = _curve(head, test)
    assert int(np.argmax(curve)) - M == lag
    assert curve.max() > 0.5  # two of the codes follow the latent closely


def test_fit_is_deterministic():
    wins = _latent_windows(3, 0, seed=3)
    a, b = fit_head(wins, FitConfig()), fit_head(wins, FitConfig())
    assert torch.equal(a.visual.weight, b.visual.weight) and torch.equal(a.audio.weight, b.audio.weight)


@pytest.fixture(scope="module")
def models(shared_weights: Path):
    from models.lrasd import LRASDDetector
    from models.retinaface import RetinaFaceDetector

    return RetinaFaceDetector.load(device="cpu"), LRASDDetector.load(device="cpu")


def test_head_recovers_the_offset_of_a_remuxed_copy(tmp_path: Path, dev_data: Path, models):
    """The committed head on a copy whose audio starts 0.4 s late in the container (ffmpeg -itsoffset)."""
    src = dev_data / REAL_CLIP
    copy = tmp_path / "late.mp4"
    subprocess.run(["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-i", str(src), "-itsoffset", "0.4",
                    "-i", str(src), "-map", "0:v", "-map", "1:a", "-c", "copy", str(copy)], check=True)
    est = sync.SyncEstimator(models[1], method="head")
    assert est.method == "head" and est.name == "sync:lrasd-head"
    results = {}
    for name, path in (("in sync", src), ("late", copy)):
        _, audio, clips, main_id = dense_clips(path, models[0])
        results[name] = est.analyse(clips, audio, main_id)
        assert isinstance(results[name], sync.SyncResult)
    assert abs(results["in sync"].best_offset_frames) <= 2
    assert abs(results["late"].best_offset_frames - 10) <= 2
    assert results["late"].lip_sync_error > results["in sync"].lip_sync_error


def test_missing_checkpoint_falls_back_to_motion(models, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sync_head, "load", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError("gone")))
    est = sync.SyncEstimator(models[1], method="head")
    assert est.method == "motion" and est.name == "sync:motion-envelope"

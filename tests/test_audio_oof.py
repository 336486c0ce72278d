"""Out-of-fold AASIST-ft scores for the fusion (training/audio_oof.py): which rows are refitted, that the cached
frozen front gives the runtime's scores, and that a bin's model learns only from clips outside the bin."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from models.aasist import AASISTDetector
from pipeline.audio import fix_length
from training import audio_oof
from training.evaluate import ItemResult
from training.split import ManifestItem
from training.train_audio import WINDOW, AugmentConfig, TrainConfig, fast_front, front


def _speech(seconds: float, seed: int = 0, f0: float = 140.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    phase = 2 * np.pi * np.cumsum(f0 + 20 * np.sin(2 * np.pi * 0.7 * t)) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    noise = np.random.default_rng(seed).standard_normal(t.shape) * 0.01
    return (0.1 * sum(np.sin(k * phase) / k for k in range(1, 12)) * env + noise).astype(np.float32)


def _item(path: str, label: str, modality: str = "audio", origin: str = "") -> ManifestItem:
    return ManifestItem(path, label, modality, "tts" if label == "fake" else "none", path, None,
                        Path("/nowhere") / path, origin)


def _row(path: str, label: str, status: str = "ok", reencode: str | None = None) -> ItemResult:
    return ItemResult(path, label, "audio", "none", "g", "AUTHENTIC", 0.3, None, {"audio": status},
                      {"audio": 0.4}, {}, 0.9, 1.0, reencode, detectors={"audio": ["aasist:aasist_ft", "x"]})


def test_only_folds_holding_a_learned_clip_are_refitted():
    items = [_item("audio/tortoise/f1.wav", "fake"), _item("audio/tortoise/r1.wav", "real"),
             _item("audio/valle/f2.wav", "fake"), _item("A_real_av/grid/v.mp4", "real", "video_av"),
             _item("av_swap/s.mp4", "fake", "video_av", origin="A_real_av/grid/v.mp4")]
    by_path = {it.path: it for it in items}
    fold_of = {"audio/tortoise/f1.wav": "tortoise", "audio/tortoise/r1.wav": "tortoise", "audio/valle/f2.wav": "valle",
               "A_real_av/grid/v.mp4": "grid", "av_swap/s.mp4": "grid"}
    held = {"tortoise": frozenset({"audio/tortoise/f1.wav", "audio/tortoise/r1.wav"}),
            "valle": frozenset({"audio/valle/f2.wav"}), "grid": frozenset({"A_real_av/grid/v.mp4"})}
    rows = [_row("audio/tortoise/f1.wav", "fake"), _row("audio/tortoise/r1.wav", "real", reencode="telephone"),
            _row("audio/valle/f2.wav", "fake"), _row("av_swap/s.mp4", "fake"),
            _row("audio/tortoise/r1.wav", "real", status="not_applicable")]
    learnable = {"audio/tortoise/f1.wav", "A_real_av/grid/v.mp4"}
    todo, refit = audio_oof.plan_refit(rows, by_path, fold_of, held, learnable)
    assert todo == {"tortoise": [0, 1], "valle": [2], "grid": [3]}  # a row the audio stage skipped is not scored
    # a synthetic clip made from a learned real is in that real's fold; VALL-E never met a learned clip
    assert refit == {"tortoise": {"audio/tortoise/f1.wav"}, "grid": {"A_real_av/grid/v.mp4"}}


def test_the_shipped_recipe_is_read_back_exactly_from_the_checkpoint():
    blob = torch.load(Path("models/checkpoints/aasist_ft.pt"), map_location="cpu", weights_only=False)
    meta = blob["meta"]
    cfg = audio_oof.train_config({**meta["train_config"], "augment": meta["augment"]})
    assert asdict(cfg)["augment"] == {k: tuple(v) if isinstance(v, list) else v for k, v in meta["augment"].items()}
    assert (cfg.epochs, cfg.lr, cfg.seed) == (meta["train_config"]["epochs"], meta["train_config"]["lr"], 0)
    assert len(audio_oof.learned_from(meta)) == sum(meta["clips"].values())
    assert audio_oof.train_config(asdict(cfg)) == cfg  # what a worker rebuilds from the plan


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return np.stack([fix_length(_speech(4.2, s, f0)[:WINDOW], WINDOW)
                     for s, f0 in ((0, 120.0), (1, 160.0), (2, 200.0), (3, 240.0))])


def test_the_cached_front_gives_the_runtime_score(windows, tmp_path: Path):
    det = AASISTDetector.load(variant="aasist_ft")
    released = AASISTDetector.load(variant="aasist")
    run = fast_front(released.model, released.weights_info.sha256)
    with torch.inference_mode():
        fast = run(torch.from_numpy(windows))
        torch.testing.assert_close(fast, front(released.model, torch.from_numpy(windows)), rtol=1e-4, atol=1e-4)
    kept = tmp_path / "kept.npz"
    np.savez(kept, windows=windows)
    dest = audio_oof.row_front_path(tmp_path / "front", released.weights_info.sha256, kept)
    assert audio_oof._front_features_job(([(str(kept), str(dest))], released.weights_info.sha256, 1)) == 1
    plan = audio_oof.Plan({}, "", "", [], [], [], {0: str(dest)})
    got = audio_oof.score_rows(det.model, plan, [0])[0]
    assert got == pytest.approx(float(det.predict(windows).fake_prob.mean()), abs=5e-3)  # float16 features


def test_a_bin_learns_only_from_clips_outside_it(windows, tmp_path: Path):
    released = AASISTDetector.load(variant="aasist")
    sha = released.weights_info.sha256
    with torch.inference_mode():
        feats = front(released.model, torch.from_numpy(windows)).numpy().astype(np.float16)
    np.save(tmp_path / "train.npy", feats)
    row = tmp_path / "row.npy"
    np.save(row, feats[:1])
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, lr=1e-3, augment=AugmentConfig())
    plan = audio_oof.Plan(asdict(cfg), sha, str(tmp_path / "train.npy"), [0, 1, 0, 1], ["speech", "tts"] * 2,
                          ["a", "b", "c", "d"], {7: str(row)})
    k, scores, info = audio_oof._bin_job((3, plan, {"a", "b"}, [7], 1))
    assert k == 3 and info["clips_learned_from"] == 2 and info["windows_learned_from"] == 2
    assert info["fake_windows"] == 1 and 0.0 <= scores[7] <= 1.0
    before = audio_oof.score_rows(released.model, plan, [7])[7]
    assert scores[7] != pytest.approx(before, abs=1e-9)  # the tail was refitted, not the released model's


def test_each_recipe_learns_from_the_voices_it_names():
    items = [_item("audio/fsdd/r.wav", "real"), _item("audio/valle/f.wav", "fake"),
             ManifestItem("audio/freevc/c.wav", "fake", "audio", "voice_conversion", "g", None, Path("/n"), ""),
             _item("A_real_av/grid/v.mp4", "real", "video_av"),
             ManifestItem("B_fake_av/sadtalker/t.mp4", "fake", "video_av", "talking_head", "g", None, Path("/n"), ""),
             ManifestItem("voice_over/o.mp4", "fake", "video_av", "voice_over", "g", None, Path("/n"),
                          "A_real_av/grid/v.mp4"),
             ManifestItem("av_swap/s.mp4", "fake", "video_av", "av_swap", "g", None, Path("/n"),
                          "A_real_av/grid/v.mp4")]
    names = {r: [it.path for it in audio_oof.learnable_items(items, r, {"train_paths": ["audio/valle/f.wav"]})]
             for r in audio_oof.LEARN_FROM}
    assert names["checkpoint"] == ["audio/valle/f.wav"]
    # a fake video's soundtrack is mostly genuine speech, and av_swap's is a real voice: never learned as fake
    assert names["dev"] == ["audio/fsdd/r.wav", "audio/valle/f.wav", "audio/freevc/c.wav", "A_real_av/grid/v.mp4"]
    assert names["dev+synth"] == names["dev"] + ["voice_over/o.mp4"]

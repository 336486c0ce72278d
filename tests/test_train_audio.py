"""The fine-tuned AASIST: the bundled checkpoint loads by name and through the Settings switch, and the trainer
fine-tunes from released weights on TRAIN items only, with label-blind, pipeline-shaped windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.aasist import AASISTDetector
from models.weights import BUNDLED_DIR, WEIGHTS
from pipeline.audio import fix_length, score_audio
from training.split import read_manifest, read_split, require_train_only
from training.train_audio import (
    FRONT_BLOCKS,
    WINDOW,
    AugmentConfig,
    TrainConfig,
    build_windows,
    codec_roundtrip,
    front,
    is_audio_item,
    make_window,
    released_model,
    tail,
    train,
    training_items,
)


@pytest.fixture(scope="module")
def items(dev_data):
    sides = read_split()
    audio = [it for it in read_manifest(dev_data / "manifest.tsv") if is_audio_item(it)]
    return {side: [it for it in audio if sides[it.path] == side] for side in ("train", "val")}


@pytest.fixture(scope="module")
def bundled() -> AASISTDetector:
    return AASISTDetector.load(variant="aasist_ft")


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: harmonics of a wobbling pitch under a syllable-rate envelope."""
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    noise = np.random.default_rng(seed).standard_normal(t.shape) * 0.01
    return (0.1 * voice * env + noise).astype(np.float32)


def test_bundled_checkpoint_loads_by_name(bundled):
    assert WEIGHTS["aasist_ft"].bundled
    assert bundled.weights_info.file == "aasist_ft.pt"
    assert (BUNDLED_DIR / "aasist_ft.pt").stat().st_size < 2_000_000  # small enough to live in git
    obj = torch.load(BUNDLED_DIR / "aasist_ft.pt", map_location="cpu", weights_only=True)
    assert {"config", "state_dict", "meta"} <= set(obj)
    meta = obj["meta"]
    sides = read_split()
    assert meta["train_paths"] and all(sides[p] == "train" for p in meta["train_paths"])  # no validation clip
    assert meta["tensors_changed"] > 0
    released = released_model(meta["base"]).state_dict()
    sd = bundled.model.state_dict()
    assert any(not torch.equal(sd[k], released[k]) for k in sd if k.startswith("out_layer"))
    assert all(torch.equal(sd[k], released[k]) for k in sd if k.startswith("encoder.0."))  # frozen part


def test_bundled_checkpoint_scores_val_items(bundled, items):
    from pipeline import media

    chosen = [next(it for it in items["val"] if it.label == lab and it.modality == "audio" and "fsdd" not in it.path)
              for lab in ("real", "fake")]
    for it in chosen:
        track = media.load_audio(it.file, None, 16000)
        res = score_audio(bundled, track.samples[: 16000 * 5], 16000)
        assert 0.0 <= res.clip_fake_prob <= 1.0
        assert np.all((res.window_fake_prob >= 0) & (res.window_fake_prob <= 1))


def test_settings_switch_selects_the_fine_tuned_checkpoint():
    from pipeline.core import load_slot
    from pipeline.settings import Settings

    def _audio_slot(settings, device):
        return load_slot("audio", settings, device, {})

    slot = _audio_slot(Settings(audio_detector="aasist_ft"), "cpu")
    assert slot.available, slot.reason
    assert slot.model_name == "aasist:aasist_ft"
    assert slot.detector.weights_info.file == "aasist_ft.pt"
    assert _audio_slot(Settings(audio_detector="aasist_l"), "cpu").detector.weights_info.file == "AASIST-L.pth"
    assert _audio_slot(Settings(audio_detector="aasist"), "cpu").detector.weights_info.file == "AASIST.pth"
    # the default is the fine-tune: it beat the released weights on validation EER
    assert _audio_slot(Settings(audio_detector="auto"), "cpu").detector.weights_info.file == "aasist_ft.pt"


def test_cached_front_and_tail_reproduce_the_full_forward():
    model = released_model("aasist").eval()
    x = torch.from_numpy(np.stack([_speech(4.04), _speech(4.04, 1)])[:, :WINDOW])
    with torch.inference_mode():
        _, full = model(x.clone())
        split = tail(model, front(model, x.clone()))
        cached = tail(model, front(model, x.clone()).half().float())  # the cache stores float16
    torch.testing.assert_close(split, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(cached, full, rtol=0, atol=5e-3)


def test_windows_are_pipeline_shaped():
    rng = np.random.default_rng(0)
    short = _speech(0.5)
    win, tags = make_window(short, rng, AugmentConfig(), clean=True)
    np.testing.assert_array_equal(win, fix_length(short, WINDOW))  # tiled exactly like make_windows
    assert tags == []
    long = _speech(9.0)
    win, _ = make_window(long, rng, AugmentConfig(p_short=0.0), clean=True)
    starts = np.flatnonzero(long == win[0])
    assert any(np.array_equal(long[s:s + WINDOW], win) for s in starts)  # a plain crop: no padding, no tiling


@pytest.mark.parametrize("codec", ["aac", "opus"])
def test_codec_roundtrip_keeps_length_and_alignment(codec):
    x = _speech(2.0)
    y = codec_roundtrip(x, codec, 32)
    assert y.shape == x.shape
    assert np.corrcoef(x, y)[0, 1] > 0.9  # aligned: the AAC priming delay is removed


def test_trainer_refuses_validation_items(items, tmp_path):
    with pytest.raises(ValueError, match="TRAIN side"):
        require_train_only(items["train"][:3] + items["val"][:1])
    with pytest.raises(ValueError, match="TRAIN side"):
        build_windows(items["val"][:2], AugmentConfig(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="TRAIN side"):
        train(items["val"][:2], TrainConfig(epochs=1), out=None, cache_dir=tmp_path)


def test_training_items_are_train_side_and_never_fake_soundtracks(dev_data):
    chosen = training_items(dev_data / "manifest.tsv")
    sides = read_split()
    assert chosen and all(sides[it.path] == "train" for it in chosen)
    assert not [it for it in chosen if it.modality == "video_av" and it.label == "fake"]
    assert {it.manipulation for it in chosen if it.label == "fake"} == {"tts", "vocoder"}


def test_tiny_training_run_end_to_end(items, tmp_path):
    train_items = items["train"]
    chosen = ([it for it in train_items if it.label == "real" and "fsdd" in it.path][:2]
              + [it for it in train_items if it.label == "fake"][:2])
    cfg = TrainConfig(variant="aasist", epochs=1, steps_per_epoch=2, batch_size=2, lr=1e-3,
                      augment=AugmentConfig(p_codec=1.0))
    out = tmp_path / "ft.pt"
    _, meta = train(chosen, cfg, out=out, cache_dir=tmp_path / "cache", max_per_clip=1)
    assert sum(meta["windows"].values()) == 4
    assert meta["tensors_changed"] > 0

    det = AASISTDetector.load(out, variant="aasist_ft")
    released = released_model("aasist").state_dict()
    sd = det.model.state_dict()
    frozen = [k for k in sd if k.startswith(("first_bn.", *(f"encoder.{i}." for i in range(FRONT_BLOCKS))))]
    assert frozen and all(torch.equal(sd[k], released[k]) for k in frozen)
    assert not torch.equal(sd["out_layer.weight"], released["out_layer.weight"])
    p = det.predict(np.stack([_speech(4.04)[:WINDOW]])).fake_prob
    assert 0.0 <= float(p[0]) <= 1.0

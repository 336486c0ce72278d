"""VideoMAE temporal detector: checkpoint round trip, label reading, refusals and the fine-tuning core (tiny config)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel

from models.errors import DetectorUnavailable
from models.videomae import (
    BackboneNotFineTuned,
    TemporalCheckpointMissing,
    VideoMAEDetector,
    build_videomae_classifier,
    find_fake_label,
    save_videomae_checkpoint,
    tiny_videomae_config,
)
from training.metrics import auc as roc_auc
from training.videomae_finetune import finetune_videomae


def _random_clips(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 16, size, size, 3), dtype=np.uint8)


def _synthetic_clips(n: int, seed: int, amplitude: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """Odd items are "fake": frame-to-frame brightness flicker and grain on top of the same smooth moving pattern.

    The flicker alternates every frame, so VideoMAE's 2-frame tubelet embedding sees it directly even with random
    (untrained) backbone weights. A head-only fine-tune then has a real signal to learn.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    clips, labels = [], []
    for i in range(n):
        fake = i % 2
        angle, colour = rng.uniform(0, 2 * np.pi), rng.uniform(80, 170, size=3)
        frames = []
        for t in range(16):
            frame = np.sin((xx * np.cos(angle) + yy * np.sin(angle) + t) / 5.0)[..., None] * 40 + colour
            if fake:
                frame = frame + (amplitude if t % 2 == 0 else -amplitude) + rng.normal(0, 10, size=frame.shape)
            frames.append(frame)
        clips.append(np.clip(np.stack(frames), 0, 255).astype(np.uint8))
        labels.append(fake)
    return np.stack(clips), np.array(labels)


@pytest.fixture
def tiny_model() -> VideoMAEForVideoClassification:
    return build_videomae_classifier("videomae_unittest", seed=0).eval()


def test_tiny_config() -> None:
    cfg = tiny_videomae_config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (32, 2, 2)
    assert (cfg.image_size, cfg.tubelet_size, cfg.patch_size, cfg.num_frames) == (32, 2, 8, 16)
    assert cfg.id2label == {0: "real", 1: "fake"} and cfg.num_labels == 2


def test_save_load_predict(tiny_model: VideoMAEForVideoClassification, tmp_path: Path) -> None:
    in_memory = VideoMAEDetector(tiny_model)
    out = save_videomae_checkpoint(tiny_model, tmp_path / "ckpt")
    det = VideoMAEDetector.load(out, batch_size=2)
    assert (det.name, det.modality, det.num_frames, det.input_size) == ("videomae", "temporal", 16, 32)
    assert det.fake_index == 1 and len(det.weights_info.sha256) == 64

    clips = _random_clips(3, size=48)  # not the model's 32 px: exercises the resize
    scores = det.predict(clips)
    assert scores.fake_prob.shape == (3,) and np.all((scores.fake_prob >= 0) & (scores.fake_prob <= 1))
    np.testing.assert_allclose(scores.fake_prob, in_memory.predict(clips).fake_prob, atol=1e-6)
    assert len(det.predict(np.zeros((0, 16, 32, 32, 3), np.uint8))) == 0
    with pytest.raises(ValueError, match="16-frame"):
        det.predict(_random_clips(1)[:, :8])


def test_flipped_id2label_flips_probability(tiny_model: VideoMAEForVideoClassification, tmp_path: Path) -> None:
    clips = _random_clips(4, seed=1)
    p = VideoMAEDetector(tiny_model).predict(clips)

    flipped = copy.deepcopy(tiny_model)
    flipped.config.id2label = {0: "fake", 1: "real"}
    q = VideoMAEDetector(flipped).predict(clips)
    np.testing.assert_allclose(q.fake_prob, 1 - p.fake_prob, atol=1e-9)
    np.testing.assert_allclose(q.logit, -p.logit, atol=1e-9)

    # The same on disk: edit config.json of a saved checkpoint.
    out = save_videomae_checkpoint(copy.deepcopy(tiny_model), tmp_path / "ckpt")
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "Deepfake", "1": "Original"}, {"Deepfake": 0, "Original": 1}
    cfg_path.write_text(json.dumps(cfg))
    np.testing.assert_allclose(VideoMAEDetector.load(out).predict(clips).fake_prob, 1 - p.fake_prob, atol=1e-6)

    # Saving a model whose labels are the other way round swaps the head rows, so P(fake) is unchanged.
    resaved = VideoMAEDetector.load(save_videomae_checkpoint(copy.deepcopy(flipped), tmp_path / "canon"))
    assert resaved.model.config.id2label == {0: "real", 1: "fake"}
    np.testing.assert_allclose(resaved.predict(clips).fake_prob, q.fake_prob, atol=1e-6)


def test_find_fake_label() -> None:
    assert find_fake_label({0: "pristine", 1: "manipulated"}) == 1
    assert find_fake_label({"0": "SPOOF", "1": "bona fide"}) == 0
    assert find_fake_label({0: "REAL", 1: "something else"}) == 1
    for bad in ({0: "LABEL_0", 1: "LABEL_1"}, {0: "fake", 1: "deepfake"}):
        with pytest.raises(ValueError, match="which label is fake"):
            find_fake_label(bad)


def test_unknown_labels_need_explicit_index(tiny_model: VideoMAEForVideoClassification) -> None:
    tiny_model.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    with pytest.raises(ValueError, match="which label is fake"):
        VideoMAEDetector(tiny_model)
    assert VideoMAEDetector(tiny_model, fake_label_index=0).fake_index == 0


def test_missing_checkpoint_reason(tmp_path: Path) -> None:
    with pytest.raises(TemporalCheckpointMissing) as err:
        VideoMAEDetector.load(None)
    assert err.value.reason == "no fine-tuned temporal checkpoint"
    assert isinstance(err.value, DetectorUnavailable)
    assert "videomae_checkpoint" in str(err.value) and "VIDEOMAE_CHECKPOINT" in str(err.value)
    with pytest.raises(TemporalCheckpointMissing, match="not found"):
        VideoMAEDetector.load(tmp_path / "does-not-exist")


def test_backbone_refused(tmp_path: Path) -> None:
    msg = "a self-supervised backbone is not a deepfake detector; fine-tune it first with `python -m training"
    with pytest.raises(BackboneNotFineTuned, match=msg):
        VideoMAEDetector.load("MCG-NJU/videomae-base")  # refused by name: no network access
    cfg = tiny_videomae_config()
    VideoMAEForPreTraining(cfg).save_pretrained(tmp_path / "pretraining")
    with pytest.raises(BackboneNotFineTuned, match="self-supervised backbone"):
        VideoMAEDetector.load(tmp_path / "pretraining")
    VideoMAEModel(cfg).save_pretrained(tmp_path / "bare")  # backbone weights only: the head would be random
    with pytest.raises(BackboneNotFineTuned, match="no trained classification head"):
        VideoMAEDetector.load(tmp_path / "bare")


def test_roc_auc() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9]) == 0.875  # a tie counts one half
    assert roc_auc([1, 1], [0.2, 0.3]) is None


def test_finetune_separates_and_roundtrips(tiny_model: VideoMAEForVideoClassification, tmp_path: Path) -> None:
    torch.manual_seed(0)
    clips, labels = _synthetic_clips(12, seed=0)
    val_clips, val_labels = _synthetic_clips(8, seed=1)

    def separation(model: VideoMAEForVideoClassification) -> float:
        p = VideoMAEDetector(model).predict(val_clips).fake_prob
        return float(p[val_labels == 1].mean() - p[val_labels == 0].mean())

    before = separation(tiny_model)
    frozen = {k: v.clone() for k, v in tiny_model.videomae.state_dict().items()}
    head_before = tiny_model.classifier.weight.detach().clone()

    history = finetune_videomae(
        tiny_model, clips, labels, val_clips, val_labels,
        epochs=5, lr=3e-2, train_backbone=False, batch_size=4, device="cpu", log_every=2,
    )
    assert len(history["train_loss"]) == 5 and history["train_loss"][-1] < history["train_loss"][0]
    assert 0.0 <= history["val_auc"] <= 1.0
    assert history["val_auc"] >= 0.75  # the flicker is visible to the frozen random features (see _synthetic_clips)
    assert separation(tiny_model) > before + 0.1
    # Only the head moved.
    for k, v in tiny_model.videomae.state_dict().items():
        torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)
    assert not torch.equal(tiny_model.classifier.weight, head_before)
    assert not tiny_model.training

    det = VideoMAEDetector.load(save_videomae_checkpoint(tiny_model, tmp_path / "trained"))
    np.testing.assert_allclose(
        det.predict(val_clips).fake_prob, VideoMAEDetector(tiny_model).predict(val_clips).fake_prob, atol=1e-6
    )


def test_finetune_rejects_bad_labels(tiny_model: VideoMAEForVideoClassification) -> None:
    clips, _ = _synthetic_clips(2, seed=0)
    with pytest.raises(ValueError, match="0 = real and 1 = fake"):
        finetune_videomae(tiny_model, clips, np.array([0, 2]), epochs=1)

"""Wav2Vec2Detector on a tiny random checkpoint: label handling, normalisation, offline errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification  # noqa: E402

from models.wav2vec2 import HubWeightsNotFoundError, Wav2Vec2Detector, find_fake_index  # noqa: E402

WINDOW = 4000  # 0.25 s keeps the tiny model fast


def _tiny_config(id2label: dict[int, str]) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )


def _save(path: Path, id2label: dict[int, str], state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(_tiny_config(id2label))
    if state_dict is not None:
        model.load_state_dict(state_dict)
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("w2v")
    real_fake = _save(root / "real_fake", {0: "real", 1: "fake"})
    weights = Wav2Vec2ForSequenceClassification.from_pretrained(real_fake).state_dict()
    # the same weights with the label order flipped: what index 1 means must come from the config
    fake_real = _save(root / "fake_real", {0: "fake", 1: "real"}, weights)
    return {"real_fake": real_fake, "fake_real": fake_real}


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal((3, WINDOW))).astype(np.float32)


def test_label_index_is_read_not_assumed(checkpoints: dict[str, Path]) -> None:
    assert Wav2Vec2Detector.load(checkpoints["real_fake"], window_samples=WINDOW).fake_label_index == 1
    assert Wav2Vec2Detector.load(checkpoints["fake_real"], window_samples=WINDOW).fake_label_index == 0


def test_predict_shape_range_and_flip(checkpoints: dict[str, Path], windows: np.ndarray) -> None:
    det = Wav2Vec2Detector.load(checkpoints["real_fake"], window_samples=WINDOW)
    assert det.name == "wav2vec2" and det.modality == "audio" and det.window_samples == WINDOW
    s = det.predict(windows)
    assert s.fake_prob.shape == (3,) and s.logit.shape == (3,)
    assert np.all((s.fake_prob >= 0) & (s.fake_prob <= 1))
    raw = det.predict_logits(windows).astype(np.float64)
    np.testing.assert_allclose(s.logit, raw[:, 1] - raw[:, 0], atol=1e-9)

    flipped = Wav2Vec2Detector.load(checkpoints["fake_real"], window_samples=WINDOW).predict(windows)
    np.testing.assert_allclose(flipped.fake_prob, 1.0 - s.fake_prob, atol=1e-6)
    np.testing.assert_allclose(flipped.logit, -s.logit, atol=1e-5)
    assert det.predict(np.zeros((0, WINDOW), np.float32)).fake_prob.shape == (0,)


def test_normalisation_matches_feature_extractor(checkpoints: dict[str, Path], windows: np.ndarray) -> None:
    det = Wav2Vec2Detector.load(checkpoints["real_fake"], window_samples=WINDOW)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(checkpoints["real_fake"])
    ref = fe(list(windows), sampling_rate=16000, return_tensors="np")["input_values"]
    np.testing.assert_allclose(det._prepare(windows), ref, atol=1e-5)
    # gain invariance follows from the per-window normalisation
    np.testing.assert_allclose(det.predict(3.0 * windows).fake_prob, det.predict(windows).fake_prob, atol=1e-5)


@pytest.mark.parametrize(
    ("id2label", "expected"),
    [
        ({0: "bonafide", 1: "spoof"}, 1),
        ({0: "Spoof", 1: "Bona-Fide"}, 0),
        ({0: "human", 1: "AI"}, 1),
        ({0: "real", 1: "tts", 2: "deepfake"}, 2),
        ({0: "FAKE", 1: "REAL"}, 0),
    ],
)
def test_find_fake_index(id2label: dict[int, str], expected: int) -> None:
    assert find_fake_index(id2label) == expected


@pytest.mark.parametrize(
    "id2label",
    [{0: "LABEL_0", 1: "LABEL_1"}, {0: "fake", 1: "spoof"}, {0: "real", 1: "genuine"}, {0: "a", 1: "b", 2: "real"}],
)
def test_ambiguous_labels_raise(id2label: dict[int, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot tell which class is fake"):
        find_fake_index(id2label)


def test_ambiguous_checkpoint_raises_on_load(tmp_path: Path) -> None:
    path = _save(tmp_path / "ambiguous", {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="fake_label_index"):
        Wav2Vec2Detector.load(path, window_samples=WINDOW)
    # an explicit index is the way out
    assert Wav2Vec2Detector.load(path, window_samples=WINDOW, fake_label_index=0).fake_label_index == 0


def test_multiclass_log_odds(tmp_path: Path, windows: np.ndarray) -> None:
    det = Wav2Vec2Detector.load(_save(tmp_path / "three", {0: "real", 1: "tts", 2: "fake"}), window_samples=WINDOW)
    assert det.fake_label_index == 2
    raw = torch.from_numpy(det.predict_logits(windows)).double()
    p_fake = torch.softmax(raw, dim=1)[:, 2].numpy()
    np.testing.assert_allclose(det.predict(windows).fake_prob, p_fake, atol=1e-9)


def test_missing_hub_model_offline_raises_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hf_constants

    # huggingface_hub reads the variable at import time; patch the constant too
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)
    repo = "deepfake-detector-tests/no-such-model"
    with pytest.raises(HubWeightsNotFoundError) as info:
        Wav2Vec2Detector.load(repo)
    msg = str(info.value)
    assert repo in msg and "unreachable" in msg and "local" in msg and "weights=DIR" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_missing_local_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Wav2Vec2Detector.load(tmp_path / "does" / "not" / "exist")

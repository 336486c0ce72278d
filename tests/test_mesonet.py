"""MesoNet: the PyTorch port against the Keras goldens (specs/mesonet), fake direction, and the detector contract."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from models.base import Scores
from models.mesonet import (
    Meso4,
    MesoInception4,
    MesoNetDetector,
    load_checkpoint,
    load_keras_h5,
)
from models.weights import WEIGHTS, WeightsNotFoundError

MODELS = {  # golden key → (h5 file, arch)
    "Meso4_DF": ("Meso4_DF.h5", "meso4"),
    "Meso4_F2F": ("Meso4_F2F.h5", "meso4"),
    "MesoInception_DF": ("MesoInception_DF.h5", "mesoinception4"),
    "MesoInception_F2F": ("MesoInception_F2F.h5", "mesoinception4"),
}
GOLDENS = ("meso_random", "meso_real")


@pytest.fixture(scope="module")
def goldens(specs_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for g in GOLDENS:
        with np.load(specs_dir / "mesonet" / "golden" / f"{g}.npz") as z:
            out[g] = {k: z[k] for k in z.files}
    return out


@pytest.fixture(scope="module")
def keras_models(shared_weights: Path) -> dict[str, torch.nn.Module]:
    return {key: load_keras_h5(shared_weights / fname, arch) for key, (fname, arch) in MODELS.items()}


def _nchw(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_u8.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("golden", GOLDENS)
@pytest.mark.parametrize("key", list(MODELS))
def test_matches_keras_goldens(goldens, keras_models, golden: str, key: str) -> None:
    g = goldens[golden]
    with torch.no_grad():
        f = keras_models[key].features(_nchw(g["images_u8_rgb"]))
    logit = f["logit"].double().numpy()
    prob = 1.0 / (1.0 + np.exp(-logit))
    # preflatten first: it localises a conv/BN mapping error before the fc1 permutation can hide it.
    np.testing.assert_allclose(f["preflatten"].numpy(), g[f"{key}__preflatten_nchw"], rtol=0, atol=2e-4)
    np.testing.assert_allclose(f["dense1_preact"].numpy(), g[f"{key}__dense1_preact"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(logit, g[f"{key}__logit"], rtol=0, atol=1e-3)
    # MesoInception saturates on noise (prob == 1.0 in fp32), where prob carries no information; logit covers it.
    ref = g[f"{key}__prob"].astype(np.float64)
    live = (ref > 1e-6) & (ref < 1 - 1e-6)
    np.testing.assert_allclose(prob[live], ref[live], rtol=0, atol=1e-5)


@pytest.mark.parametrize("key", ["Meso4_DF", "MesoInception_DF"])
def test_fake_direction_on_labelled_images(goldens, keras_models, key: str) -> None:
    g = goldens["meso_real"]
    fake = MesoNetDetector(keras_models[key]).predict(g["images_u8_rgb"]).fake_prob
    assert list(g["labels"][[0, 1, 5]]) == ["df", "df", "df"]
    assert list(g["labels"][[2, 3]]) == ["real", "real"]
    assert (fake[[0, 1, 5]] > 0.5).all(), fake
    assert (fake[[2, 3]] < 0.5).all(), fake


@pytest.mark.parametrize("key", list(MODELS))
def test_detector_predict_is_one_minus_keras_prob(goldens, keras_models, key: str) -> None:
    g = goldens["meso_real"]
    det = MesoNetDetector(keras_models[key], batch_size=3)  # 7 items: exercises a ragged last batch
    scores = det.predict(g["images_u8_rgb"])
    assert isinstance(scores, Scores) and len(scores) == 7
    assert scores.fake_prob.dtype == np.float64
    np.testing.assert_allclose(scores.fake_prob, 1.0 - g[f"{key}__prob"].astype(np.float64), rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores.logit, -g[f"{key}__logit"].astype(np.float64), rtol=0, atol=1e-3)


def test_parameter_counts(shared_weights: Path) -> None:
    assert sum(p.numel() for p in Meso4().parameters()) == 27_977
    # MesoInception4: every trainable Keras array (all but BN moving stats) has a home, and nothing more.
    with h5py.File(shared_weights / "MesoInception_DF.h5", "r") as f:
        n_keras = 0

        def count(name: str, obj) -> None:
            nonlocal n_keras
            if isinstance(obj, h5py.Dataset) and "moving_" not in name:
                n_keras += obj.size

        f.visititems(count)
    assert sum(p.numel() for p in MesoInception4().parameters()) == n_keras


def test_load_variant_through_registry() -> None:
    det = MesoNetDetector.load(variant="meso4_df")
    assert (det.name, det.modality, det.input_size) == ("mesonet", "visual", 256)
    assert isinstance(det.model, Meso4)
    assert det.weights_info.file == "Meso4_DF.h5"
    assert det.weights_info.sha256 == WEIGHTS["meso4_df"].sha256
    assert isinstance(MesoNetDetector.load().model, MesoInception4)  # default variant: mesoinception_df
    with pytest.raises(ValueError, match="variant"):
        MesoNetDetector.load(variant="meso5")


def test_missing_weights_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("WEIGHTS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError):
        MesoNetDetector.load(variant="mesoinception_f2f")


def test_empty_batch(keras_models) -> None:
    scores = MesoNetDetector(keras_models["Meso4_DF"]).predict(np.zeros((0, 256, 256, 3), np.uint8))
    assert len(scores) == 0 and scores.fake_prob.shape == (0,)


def test_other_sizes_are_resized_with_inter_area(keras_models) -> None:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (2, 320, 320, 3), dtype=np.uint8)
    det = MesoNetDetector(keras_models["Meso4_DF"])
    resized = np.stack([cv2.resize(c, (256, 256), interpolation=cv2.INTER_AREA) for c in big])
    np.testing.assert_array_equal(det.predict(big).logit, det.predict(resized).logit)


def test_rejects_bad_input(keras_models) -> None:
    det = MesoNetDetector(keras_models["Meso4_DF"])
    with pytest.raises(TypeError):
        det.predict(np.zeros((1, 256, 256, 3), np.float32))
    with pytest.raises(ValueError):
        det.predict(np.zeros((256, 256, 3), np.uint8))


@pytest.mark.parametrize("wrapped", [True, False])
def test_torch_checkpoint_round_trip(goldens, keras_models, tmp_path: Path, wrapped: bool) -> None:
    x = goldens["meso_real"]["images_u8_rgb"][:3]
    src = keras_models["MesoInception_F2F"]
    path = tmp_path / "finetuned.pt"
    # Plain state_dicts carry no arch: it comes from the variant (and DataParallel's 'module.' prefix is stripped).
    obj = {"arch": "mesoinception4", "state_dict": src.state_dict()} if wrapped else {
        f"module.{k}": v for k, v in src.state_dict().items()
    }
    torch.save(obj, path)
    # The wrapped arch wins over a mismatching variant.
    det = MesoNetDetector.load(weights=path, variant="meso4_df" if wrapped else "mesoinception_df")
    assert isinstance(det.model, MesoInception4)
    assert det.weights_info.file == "finetuned.pt"
    np.testing.assert_array_equal(det.predict(x).logit, MesoNetDetector(src).predict(x).logit)


def test_rejects_non_mesonet_files(tmp_path: Path, shared_weights: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not an HDF5"):
        load_keras_h5(junk)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("something")
    with pytest.raises(ValueError, match="layer_names"):
        load_keras_h5(empty)
    with pytest.raises(ValueError, match="do not match"):
        load_keras_h5(shared_weights / "Meso4_DF.h5", "mesoinception4")
    wrong = tmp_path / "wrong.pt"
    torch.save({"arch": "meso4", "state_dict": MesoInception4().state_dict()}, wrong)
    with pytest.raises(ValueError, match="not a meso4"):
        load_checkpoint(wrong)

"""AASIST / AASIST-L against the golden vectors made with the original code (shared/specs/aasist)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.aasist import AASIST, AASIST_CONFIG, AASIST_L_CONFIG, AASISTDetector, count_parameters, sinc_filterbank
from models.base import load_torch_state_dict
from pipeline.audio import fix_length

VARIANTS = {
    # variant: (golden prefix, checkpoint file, config, trainable parameters)
    "aasist": ("AASIST", "AASIST.pth", AASIST_CONFIG, 297_866),
    "aasist_l": ("AASIST_L", "AASIST-L.pth", AASIST_L_CONFIG, 85_306),
}
POOLS = ("pool_S", "pool_T", "pool_hS1", "pool_hT1", "pool_hS2", "pool_hT2")
LOGIT_ATOL = 1e-4  # SPEC 6


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(variant: str, shared_weights: Path) -> AASIST:
    _, fname, config, _ = VARIANTS[variant]
    m = AASIST(config)
    m.load_state_dict(load_torch_state_dict(shared_weights / fname), strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def golden_random(variant: str, specs_dir: Path) -> dict[str, np.ndarray]:
    return dict(np.load(specs_dir / "aasist" / "golden" / f"{VARIANTS[variant][0]}_random.npz"))


@pytest.fixture(scope="module")
def golden_real(variant: str, specs_dir: Path) -> dict[str, np.ndarray]:
    return dict(np.load(specs_dir / "aasist" / "golden" / f"{VARIANTS[variant][0]}_real.npz"))


@pytest.fixture(scope="module")
def random_run(model: AASIST, golden_random: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict]:
    with torch.inference_mode():
        last_hidden, logits, taps = model.forward_with_intermediates(torch.from_numpy(golden_random["input"]))
    return last_hidden.numpy(), logits.numpy(), {k: v.numpy() for k, v in taps.items()}


@pytest.fixture(scope="module")
def real_run(model: AASIST, golden_real: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        last_hidden, logits = model(torch.from_numpy(golden_real["inputs"]))
    return last_hidden.numpy(), logits.numpy()


def test_parameter_count(model: AASIST, variant: str) -> None:
    assert count_parameters(model) == VARIANTS[variant][3]
    assert "sinc_filters" not in model.state_dict()  # fixed bank, rebuilt from the formula


def test_sinc_bank(golden_random: dict[str, np.ndarray]) -> None:
    bank = sinc_filterbank().numpy()
    assert bank.shape == (70, 129)
    np.testing.assert_allclose(bank, golden_random["sinc_filters"], rtol=0, atol=1e-7)


def test_random_logits_and_hidden(random_run: tuple, golden_random: dict[str, np.ndarray]) -> None:
    last_hidden, logits, _ = random_run
    np.testing.assert_allclose(logits, golden_random["logits"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(last_hidden, golden_random["last_hidden"], rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize("key", ["encoder_out", "gat_S_out", "gat_T_out", "pool_S_out", "pool_T_out"])
def test_random_intermediates(random_run: tuple, golden_random: dict[str, np.ndarray], key: str) -> None:
    ours, ref = random_run[2][key], golden_random[key]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


@pytest.mark.parametrize("pool", POOLS)
def test_random_topk(random_run: tuple, golden_random: dict[str, np.ndarray], pool: str) -> None:
    taps = random_run[2]
    ref_scores = golden_random[f"rand_{pool}_scores"]
    np.testing.assert_allclose(taps[f"{pool}_scores"], ref_scores, rtol=1e-4, atol=1e-5)
    ours, ref = taps[f"{pool}_topk_idx"], golden_random[f"rand_{pool}_topk_idx"]
    assert ours.shape == ref.shape
    for i in range(ref.shape[0]):  # only the kept set matters downstream (SPEC 3.6)
        assert set(ours[i].tolist()) == set(ref[i].astype(int).tolist()), f"{pool} item {i}"


def test_real_clips(real_run: tuple, golden_real: dict[str, np.ndarray]) -> None:
    last_hidden, logits = real_run
    assert logits.shape == (8, 2)
    np.testing.assert_allclose(logits, golden_real["logits"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(last_hidden, golden_real["last_hidden"], rtol=0, atol=LOGIT_ATOL)


def test_short_clip_tiling(model: AASIST, golden_real: dict[str, np.ndarray]) -> None:
    tiled = fix_length(golden_real["short_source_24000"], 64600)
    np.testing.assert_array_equal(tiled, golden_real["short_tiled_input"])
    with torch.inference_mode():
        _, logits = model(torch.from_numpy(tiled[None].astype(np.float32)))
    np.testing.assert_allclose(logits[0].numpy(), golden_real["short_logits"], rtol=0, atol=LOGIT_ATOL)


def test_detector_direction(
    variant: str, shared_weights: Path, golden_random: dict[str, np.ndarray], random_run: tuple
) -> None:
    """P(fake) is softmax(logits)[spoof] (index 0), and the fake logit is logits[0] - logits[1]."""
    # batch_size=1 also checks that batching does not change scores (eval-mode BN) against the batch of 2
    det = AASISTDetector.load(shared_weights / VARIANTS[variant][1], variant=variant, batch_size=1)
    assert (det.name, det.modality, det.window_samples, det.sample_rate) == ("aasist", "audio", 64600, 16000)
    assert det.weights_info.name == variant and len(det.weights_info.sha256) == 64
    scores = det.predict(golden_random["input"])
    ref = golden_random["logits"].astype(np.float64)
    p_spoof = np.exp(ref[:, 0]) / np.exp(ref).sum(axis=1)
    np.testing.assert_allclose(scores.logit, ref[:, 0] - ref[:, 1], atol=LOGIT_ATOL)
    np.testing.assert_allclose(scores.fake_prob, p_spoof, atol=1e-5)
    ours = random_run[1].astype(np.float64)
    np.testing.assert_allclose(scores.logit, ours[:, 0] - ours[:, 1], atol=1e-5)
    assert np.all(scores.fake_prob > 0.99)  # the random-noise inputs are strongly spoof for both models
    with pytest.raises(ValueError, match="64600"):
        det.predict(np.zeros((1, 16000), np.float32))
    assert len(det.predict(np.zeros((0, 64600), np.float32))) == 0


def test_load_finetuned_checkpoint_with_config(tmp_path: Path, shared_weights: Path) -> None:
    """The training step saves {"config": ..., "state_dict": ...}; its config wins over ``variant``."""
    sd = load_torch_state_dict(shared_weights / "AASIST-L.pth")
    path = tmp_path / "finetuned.pth"
    torch.save({"config": AASIST_L_CONFIG.to_dict(), "state_dict": sd}, path)
    det = AASISTDetector.load(path, variant="aasist")
    assert det.model.config == AASIST_L_CONFIG
    assert count_parameters(det.model) == 85_306


def test_wrong_variant_is_a_clear_error(shared_weights: Path) -> None:
    with pytest.raises(ValueError, match="variant"):
        AASISTDetector.load(shared_weights / "AASIST-L.pth", variant="aasist")
    with pytest.raises(ValueError, match="unknown AASIST variant"):
        AASISTDetector.load(variant="aasist_xl")

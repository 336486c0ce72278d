"""The optional attention fusion: it learns from per-second tokens, saves/loads, and is used only when
a checkpoint exists."""

from __future__ import annotations

import numpy as np

import pipeline
from pipeline.attention_fusion import LearnedFusion, tokens_from
from pipeline.settings import Settings
from training.evaluate import auc
from training.train_fusion import predict, train

TALKING = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"


def _item(rng, fake: bool):
    """Clip means look alike; fakes hide one second where audio and lip-sync are suspicious together."""
    n = 8
    audio = rng.uniform(0.3, 0.6, n)
    sync = rng.uniform(0.3, 0.6, n)
    if fake:
        k = rng.integers(0, n)
        audio[k], sync[k] = 0.97, 0.97
        audio[(k + 3) % n] = max(0.05, audio[(k + 3) % n] - 0.47)  # keep the clip mean unchanged
        sync[(k + 3) % n] = max(0.05, sync[(k + 3) % n] - 0.47)
    raw = {"visual": float(rng.uniform(0.4, 0.6)), "temporal": None, "audio": float(audio.mean()),
           "lip_sync": float(sync.mean())}
    tl = {"audio": [[i, i + 1, float(audio[i])] for i in range(n)],
          "lip_sync": [[i, i + 1, float(sync[i])] for i in range(n)]}
    return tokens_from(raw, tl, float(n))


def test_tokens_skip_detectors_that_did_not_run():
    t = tokens_from({"visual": 0.8, "temporal": None, "audio": None, "lip_sync": None},
                    {"visual": [[0, 1, 0.7], [1, 2, 0.9]]}, 2.0)
    assert len(t.values) == 3 and set(t.slot.tolist()) == {0} and t.kind.tolist() == [1, 0, 0]
    assert np.allclose(t.position[1:], [0.25, 0.75])


def test_learns_a_cross_modal_per_second_pattern(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([i % 2 for i in range(160)])
    toks = [_item(rng, bool(v)) for v in y]
    model = train(toks[:120], y[:120], epochs=25, seed=0)
    val_auc = auc(y[120:], predict(model, toks[120:]))
    assert val_auc > 0.9
    path = tmp_path / "af.pt"
    LearnedFusion(model, (0.3, 0.7), {"val_auc": val_auc}, str(path)).save(path)
    back = LearnedFusion.load(path)
    assert back.thresholds == (0.3, 0.7) and back.metrics["val_auc"] == val_auc
    np.testing.assert_allclose(predict(back.model, toks[120:125]), predict(model, toks[120:125]), atol=1e-6)


def test_pipeline_uses_it_only_when_a_checkpoint_exists(tmp_path, dev_data):
    rng = np.random.default_rng(1)
    model = train([_item(rng, bool(i % 2)) for i in range(16)], np.arange(16) % 2, epochs=2)
    path = tmp_path / "af.pt"
    LearnedFusion(model, (0.4, 0.6), {}, str(path)).save(path)
    with_ckpt = pipeline.build(Settings(device="cpu", fusion_checkpoint=path)).run(dev_data / TALKING)
    assert with_ckpt.fusion.method == "attention" and 0 <= with_ckpt.fake_probability <= 1
    assert "calibrated logistic fusion gave" in with_ckpt.fusion.note
    without = pipeline.build(Settings(device="cpu")).run(dev_data / TALKING)
    assert without.fusion.method != "attention"

"""The fine-tuned MesoInception4: the bundled checkpoint loads everywhere the pipeline looks for it, and the trainer
trains on the pipeline's own crops of TRAIN items only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.mesonet import MesoInception4, MesoNetDetector
from models.weights import BUNDLED_DIR, WEIGHTS
from training.split import read_manifest, read_split, require_train_only
from training.train_visual import (
    FileCrops,
    TrainConfig,
    TrainFile,
    augment,
    file_crops,
    fit,
    released_model,
    sample_faces,
    save_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def items(dev_data):
    sides = read_split()
    return {side: [it for it in read_manifest(dev_data / "manifest.tsv") if sides[it.path] == side]
            for side in ("train", "val")}


@pytest.fixture(scope="module")
def face_crop(dev_data) -> np.ndarray:
    from pipeline import media

    return media.load_image(dev_data / "D_image/mesonet/test_images__real__real00240.jpg")  # 256x256 face crop


def _files(items, face_crop, n_per_class: int = 2) -> list[TrainFile]:
    rng = np.random.default_rng(0)
    out = []
    for label in ("real", "fake"):
        chosen = [it for it in items if it.label == label and it.modality == "video_av"][:n_per_class]
        for it in chosen:
            noise = rng.integers(-25, 26, (4, *face_crop.shape))
            crops = np.clip(face_crop[None].astype(int) + noise, 0, 255).astype(np.uint8)
            out.append(TrainFile(it, {"orig": FileCrops(crops, np.zeros(4, np.int64), (0,))}))
    return out


@pytest.mark.parametrize("variant", ["mesoinception_ft", "mesoinception_sbi"])
def test_bundled_checkpoint_loads_by_variant_name(face_crop, variant):
    assert WEIGHTS[variant].bundled
    det = MesoNetDetector.load(variant=variant)
    assert isinstance(det.model, MesoInception4)
    assert det.weights_info.file == f"{variant}.pt"
    assert (BUNDLED_DIR / f"{variant}.pt").stat().st_size < 1_000_000  # small enough to live in git
    p = det.predict(face_crop[None]).fake_prob
    released = MesoNetDetector.load(variant="mesoinception_df").predict(face_crop[None]).fake_prob
    assert 0.0 <= p[0] <= 1.0 and abs(p[0] - released[0]) > 1e-4  # really different weights


def test_settings_select_the_finetuned_checkpoint():
    import pipeline
    from pipeline.settings import Settings

    p = pipeline.build(Settings(mesonet_variant="mesoinception_ft", visual_detector="mesonet", device="cpu"))
    visual = p.status()["visual"]
    assert visual["model"] == "mesonet:mesoinception_ft" and visual["available"], visual
    assert any(m.file == "mesoinception_ft.pt" for m in p.models_used())


def test_training_crops_are_what_the_pipeline_scores(dev_data):
    """The visual stage's detector is handed exactly the crops the trainer extracts (same frames, same margin)."""
    from models.base import Scores
    from models.retinaface import RetinaFaceDetector
    from pipeline import media
    from pipeline.core import Components, Pipeline, Slot
    from pipeline.settings import Settings

    class Recorder:
        name, input_size = "mesonet", 256

        def __init__(self):
            self.seen: list[np.ndarray] = []

        def predict(self, crops):
            self.seen.append(crops)
            return Scores.from_fake_logits(np.zeros(len(crops)))

    from pipeline import stages
    from training.train_visual import MAX_SAMPLE_FPS

    # not the default margin, so a dropped margin shows; the pipeline samples as the trainer does
    settings = Settings(visual_crop_margin=0.2, device="cpu", sample_fps=MAX_SAMPLE_FPS, max_sampled_frames=6)
    face = RetinaFaceDetector.load(device="cpu")
    src = dev_data / "A_real_av/grid_lipnet/evaluation__samples__GRID__bbaf2n.mpg"
    sampled, analysis = sample_faces(src, face, settings, frames=6)
    assert analysis.tracks
    rec = Recorder()
    empty = Slot("x", "x")
    pipe = Pipeline(settings, Components(face=Slot("faces", "rf", face), visual=Slot("visual", "rec", rec),
                                         temporal=empty, audio=empty, speaker=empty, sync=empty))
    info = media.probe(src)
    # the pipeline's own path: frames decoded in chunks, each face keeping the crop made from its frame
    streamed = stages.track_faces_streamed(src, info, face, settings, pipe._face_crops())
    assert [t.frame_indices.tolist() for t in streamed.tracks] == [t.frame_indices.tolist() for t in analysis.tracks]
    result, _ = pipe._visual(info, streamed)
    assert result.status.value == "ok"
    fed = np.split(rec.seen[0], np.cumsum([len(t) for t in analysis.tracks])[:-1])
    fc = file_crops(sampled.frames, analysis, settings)
    assert fc.crops.shape[1:] == (256, 256, 3)
    fed_main = fed[[t.track_id for t in analysis.tracks].index(analysis.main_track_id)]
    np.testing.assert_array_equal(fc.of_track(fc.tracks[0]), fed_main)


def test_trainer_refuses_validation_items(items, face_crop):
    require_train_only(items["train"][:5])  # train items pass
    with pytest.raises(ValueError, match="TRAIN side"):
        require_train_only([items["train"][0], items["val"][0]])
    leaky = _files(items["train"], face_crop)
    leaky[0] = TrainFile(items["val"][0], leaky[0].sources)
    with pytest.raises(ValueError, match="TRAIN side"):
        fit(released_model(), leaky, [], TrainConfig(epochs=1, crops_per_class=2, batch_size=2))
    with pytest.raises(ValueError, match="TRAIN side"):
        train([items["val"][0]], cache=None, cfg=TrainConfig())


def test_augment_keeps_the_crop_format(face_crop):
    outs = [augment(face_crop, np.random.default_rng(s)) for s in range(8)]
    assert all(o.shape == face_crop.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, face_crop) for o in outs)
    np.testing.assert_array_equal(augment(face_crop, np.random.default_rng(3)), outs[3])  # seeded


def test_tiny_training_run_writes_a_checkpoint_that_loads_and_moved(items, face_crop, tmp_path):
    torch.set_num_threads(2)
    start = {k: v.clone() for k, v in released_model().state_dict().items()}
    files = _files(items["train"], face_crop)
    cfg = TrainConfig(epochs=2, crops_per_class=4, batch_size=4, lr=1e-3, freeze_blocks=1)
    res = fit(released_model(), files, [], cfg)
    assert res.best_epoch == 2 and len(res.history) == 2
    path = save_checkpoint(res.model, tmp_path / "ft.pt", {"test": True})
    det = MesoNetDetector.load(weights=path, variant="mesoinception_ft")
    state = det.model.state_dict()
    assert torch.equal(state["inc1.branch1.weight"], start["inc1.branch1.weight"])  # frozen block 1
    assert torch.equal(state["bn3.running_mean"], start["bn3.running_mean"])  # BN statistics frozen
    assert not torch.equal(state["fc2.weight"], start["fc2.weight"])
    assert not torch.equal(state["conv4.weight"], start["conv4.weight"])
    assert det.predict(face_crop[None]).fake_prob.shape == (1,)

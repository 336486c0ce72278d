"""The self-blended-image trainer of the visual detector (training/train_sbi.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEV_DATA, need

from training import train_sbi
from training.split import ManifestItem, read_manifest
from training.train_visual import CropCache, FileCrops, TrainFile, load_files


@pytest.fixture(scope="module")
def real_files(tmp_path_factory, shared_weights: Path) -> list[TrainFile]:
    need(shared_weights / "mediapipe_face_landmark.tflite")
    items = [it for it in read_manifest(DEV_DATA / "manifest.tsv") if it.modality == "video_av"
             and it.label == "real"][:2]
    return load_files(items, CropCache(tmp_path_factory.mktemp("crops")), sources=("orig",))


def test_landmarks_are_found_on_the_pipelines_aligned_crops_and_the_blend_stays_inside_the_face(real_files):
    points = train_sbi.crop_landmarks(real_files)
    n = sum(len(f.sources["orig"]) for f in real_files)
    assert len(points) >= 0.9 * n  # a frontal talking head: Face Mesh sees nearly every crop
    (i, k), pts = next(iter(points.items()))
    crop = real_files[i].sources["orig"].crops[k]
    # the face's landmarks lie where the aligned layout puts a face
    assert (pts.min(0) > 0).all() and (pts.max(0) < 256).all()
    assert np.abs(pts.mean(0) - np.array([128, 140])).max() < 30
    rng = np.random.default_rng(0)
    changed = np.abs(train_sbi.blended(crop, pts, rng).astype(int) - crop).max(2) > 8
    assert changed.any()
    corners = np.zeros_like(changed)
    corners[:16, :16] = corners[:16, -16:] = True
    assert not (changed & corners).any()  # the background around the face is the real crop's


def test_training_on_self_blends_moves_the_released_weights(real_files):
    points = train_sbi.crop_landmarks(real_files)
    model = train_sbi.released_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_sbi.fit(model, real_files, points, train_sbi.SBIConfig(steps=2, pairs=2))
    after = model.state_dict()
    assert not model.training
    assert torch.equal(after["inc1.branch1.weight"], before["inc1.branch1.weight"])  # block 1 frozen
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith(("conv4", "fc")))
    scores = train_sbi.scores_of(model, real_files)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    keys = sorted(points)[:6]
    a = train_sbi.blend_auc(model, real_files, points, keys)
    assert 0.0 <= a <= 1.0
    assert a == train_sbi.blend_auc(model, real_files, points, keys)  # the same fresh blends each time
    assert train_sbi.blend_auc(model, real_files, points, []) is None


def _file(path: str, label: str, group: str, origin: str = "") -> TrainFile:
    item = ManifestItem(path, label, "video_av", "none", group, None, Path("/nowhere"), origin)
    return TrainFile(item, {"orig": FileCrops.empty()})


def test_a_fake_its_real_clip_and_the_same_person_share_a_fold():
    files = [_file("A_real_av/x/a.mp4", "real", "p1"), _file("B_fake_av/gen/f.mp4", "fake", "p1"),
             _file("A_real_av/x/b.mp4", "real", "p1"),
             _file("face_blend/s.mp4", "fake", "p1", origin="A_real_av/x/a.mp4")]
    files += [_file(f"A_real_av/y/{i}.mp4", "real", f"q{i}") for i in range(30)]
    fold = train_sbi.fold_of_files(files, 3)
    assert len(set(fold[:4])) == 1
    assert len(set(fold)) == 3  # 30 unrelated people spread over every fold


def test_per_source_auc_compares_a_sources_fakes_with_the_reals_of_its_family():
    files = [_file(f"A_real_av/x/{i}.mp4", "real", f"r{i}") for i in range(4)]
    files += [_file(f"B_fake_av/gen/{i}.mp4", "fake", f"f{i}") for i in range(2)]
    rows = train_sbi.per_source(files, {"m": np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.35])})
    assert rows == [{"source": "gen", "family": "video", "fakes": 2, "reals": 4, "synthetic": False,
                     "m": pytest.approx(0.875)}]

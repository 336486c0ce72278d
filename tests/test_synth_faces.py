"""Face recipes make what their labels say, checked on a real dev clip: the manipulated pixels are the face's (the
mask covers the face hull), the rest of the frame is untouched, and each recipe runs end to end from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DEV_DATA

from pipeline import media
from training import synth, synth_faces

TALKING = DEV_DATA / "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"


@pytest.fixture(scope="module")
def face_clip():
    fc = synth_faces.load_face_clip(TALKING, max_seconds=1.2)
    assert fc is not None
    return fc


def _outside(masks: np.ndarray, thr: float = 1e-3) -> np.ndarray:
    return masks < thr


def test_landmarks_follow_the_face(face_clip):
    fc = face_clip
    assert fc.landmarks.shape == (len(fc.frames), 468, 2)
    from models.retinaface import RetinaFaceDetector

    det = RetinaFaceDetector.load().detect(fc.frames[[0, -1]])
    for pts, boxes in zip(fc.landmarks[[0, -1]], det, strict=True):
        x1, y1, x2, y2 = boxes[0, :4]
        centre = pts.mean(0)
        assert x1 < centre[0] < x2 and y1 < centre[1] < y2  # the mesh sits on the detected face


def test_face_blend_mask_covers_the_face_and_nothing_else_changes(face_clip):
    fc = face_clip
    p = synth_faces.BlendParams.draw(np.random.default_rng(3))
    pairs = [synth_faces.self_blend(f, pts, p) for f, pts in zip(fc.frames, fc.landmarks, strict=True)]
    frames, masks = np.stack([a for a, _ in pairs]), np.stack([m for _, m in pairs])
    assert synth_faces.mask_coverage(masks, fc.landmarks) > 0.6
    diff = np.abs(frames.astype(np.int16) - fc.frames).mean(-1)
    out = _outside(masks)
    assert diff[out].max() <= 1  # background pixels are the real frame's (up to rounding)
    assert diff[masks > 0.9].mean() > 1.0  # the face is not


def test_mouth_swap_changes_only_the_mouth_region(face_clip):
    fc = face_clip
    frames, masks = synth_faces.mouth_swap_frames(fc.frames, fc.landmarks, shift=10, down=2.5)
    assert synth_faces.mask_coverage(masks, fc.landmarks, synth_faces.LIPS) > 0.95
    diff = np.abs(frames.astype(np.int16) - fc.frames).mean(-1)
    assert diff[_outside(masks)].max() <= 1
    eyes_row = int(fc.landmarks[0][[33, 263], 1].mean())  # the eyes stay as they were
    assert diff[0, eyes_row - 3: eyes_row + 3].max() == 0
    assert diff[masks > 0.9].mean() > 1.0


@pytest.mark.parametrize("kind", synth_faces.UPSAMPLERS)
def test_gen_upsample_re_renders_the_face_through_the_decoder(face_clip, kind):
    fc = face_clip
    synth_faces._DECODERS.pop(kind, None)
    frames, masks = synth_faces.regenerate_faces(fc, kind, np.random.default_rng(0), first_steps=20, steps=5)
    assert synth_faces.mask_coverage(masks, fc.landmarks) > 0.6
    diff = np.abs(frames.astype(np.int16) - fc.frames).mean(-1)
    assert diff[_outside(masks)].max() <= 1
    assert diff[masks > 0.9].mean() > 2.0
    assert kind in synth_faces._DECODERS  # trained once per process, adapted per clip


def test_face_recipe_builds_a_set_with_video_sound_and_card(tmp_path):
    out = tmp_path / "face_blend"
    assert synth.main(["--recipe", "face_blend", "--n", "1", "--manifest", str(DEV_DATA / "manifest.tsv"),
                       "--out", str(out), "--seed", "2"]) == 0
    card = json.loads((out / "card.json").read_text())
    item = card["items"][0]
    assert item["recipe"] == "face_blend" and "mask covers" in item["certain"]
    info = media.probe(item["path"])
    assert info.has_video and info.has_audio and info.fps == pytest.approx(25.0, abs=0.1)


def test_face_swap_puts_another_identity_inside_the_face_oval_only(face_clip):
    donor = synth_faces.load_face_clip(DEV_DATA / "A_real_av/edtalk/test_data__uncrop_Obama.mp4", max_seconds=0.5)
    assert donor is not None
    frames, masks = synth_faces.swap_faces(face_clip, donor.frames[0], donor.landmarks[0])
    assert synth_faces.mask_coverage(masks, face_clip.landmarks, synth_faces.FACE_OVAL) > 0.9
    diff = np.abs(frames.astype(np.int16) - face_clip.frames).mean(-1)
    assert diff[_outside(masks)].max() <= 1  # Poisson blending stays inside the mask
    assert diff[masks > 0.9].mean() > 8.0  # another face, not a touched-up copy of this one

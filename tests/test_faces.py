"""Alignment, tracking and track measurements (no detector needed: detections are synthesised)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import faces
from pipeline.faces import FaceDetection


def _det(fi: int, cx: float, cy: float, size: float, score: float = 0.99) -> FaceDetection:
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    lm = faces.canonical_points(112) / 112.0 * size + box[:2]
    return FaceDetection(fi, box, score, lm)


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = faces.similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


@pytest.mark.parametrize("size,margin", [(112, 0.0), (256, 0.3), (380, 0.5)])
def test_align_face_puts_landmarks_on_the_canonical_layout(size, margin):
    frame = np.zeros((400, 600, 3), np.uint8)
    # a rotated, scaled face: draw a white dot at each landmark and check where the dots land
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lms = (faces.CANONICAL_112 - 56) * 1.8 @ rot.T + np.array([300, 200])
    for (x, y) in lms:
        frame[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    crop = faces.align_face(frame, lms, size, margin)
    target = faces.canonical_points(size, margin)
    for (tx, ty) in target:
        y0, x0 = int(round(ty)), int(round(tx))
        assert crop[max(0, y0 - 2) : y0 + 3, max(0, x0 - 2) : x0 + 3].max() > 100
    # margin shrinks the face around the centre
    assert np.ptp(target[:, 0]) == pytest.approx(np.ptp(faces.CANONICAL_112[:, 0]) / 112 * size / (1 + margin))


def test_square_box_crop_pads_outside_the_frame():
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = faces.square_box_crop(frame, np.array([-20, -20, 40, 40]), size=64, scale=1.0)
    assert crop.shape == (64, 64, 3)
    assert crop[:10, :10].max() == 0 and crop[-10:, -10:].min() == 200


def test_tracks_follow_two_people_and_survive_a_missed_detection():
    # person A moves right, person B stays; A is missed in frame 3
    dets = []
    for fi in range(8):
        row = [_det(fi, 300, 200, 80)]
        if fi != 3:
            row.append(_det(fi, 80 + 15 * fi, 150, 100))
        dets.append(row)
    tracks = faces.build_tracks(dets, np.arange(8) * 0.5)
    assert len(tracks) == 2
    lengths = sorted(len(t) for t in tracks)
    assert lengths == [7, 8]
    for t in tracks:
        xs = [d.box[0] for d in t]
        assert np.all(np.abs(np.diff(xs)) < 40)  # never jumps between the two people


def test_fast_motion_links_by_centre_distance():
    # consecutive boxes of a small fast face barely overlap (IoU 0.05), but keep their size and stay near
    dets = [[_det(fi, 100 + 36 * fi, 100, 40)] for fi in range(5)]
    assert len(faces.build_tracks(dets, np.arange(5) * 0.5)) == 1


def test_a_long_gap_starts_a_new_track():
    dets = [[_det(0, 100, 100, 60)], [], [], [], [], [_det(5, 100, 100, 60)]]
    assert len(faces.build_tracks(dets, np.arange(6) * 0.5, max_gap=2)) == 2


def test_main_track_prefers_large_and_long():
    def track(tid, n, size):
        ds = [_det(i, 100, 100, size) for i in range(n)]
        return faces.FaceTrack(tid, np.arange(n), np.arange(n) * 0.5, np.stack([d.box for d in ds]),
                               np.stack([d.landmarks for d in ds]), np.full(n, 0.99), np.full(n, 200.0))

    small_long, big_short, big_long = track(0, 10, 40), track(1, 2, 200), track(2, 8, 150)
    assert faces.pick_main_track([small_long, big_short, big_long]).track_id == 2
    assert faces.pick_main_track([]) is None


def test_face_quality_ranks_sharp_large_faces_higher():
    good = faces.face_quality(np.full(5, 0.99), np.full(5, 200.0), np.full(5, 400.0))
    small = faces.face_quality(np.full(5, 0.99), np.full(5, 30.0), np.full(5, 400.0))
    blurry = faces.face_quality(np.full(5, 0.99), np.full(5, 200.0), np.full(5, 5.0))
    assert 0.9 < good <= 1.0
    assert small < 0.3 and blurry < good
    assert faces.face_quality(np.zeros(0), np.zeros(0), np.zeros(0)) == 0.0


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]])
    np.testing.assert_allclose(faces.box_iou(a, b)[0], [1.0, 25 / 175, 0.0])


def test_track_interpolation():
    ds = [_det(0, 100, 100, 50), _det(1, 200, 100, 50)]
    t = faces.FaceTrack(0, np.arange(2), np.array([0.0, 1.0]), np.stack([d.box for d in ds]),
                        np.stack([d.landmarks for d in ds]), np.ones(2), np.ones(2))
    np.testing.assert_allclose(t.box_at(0.5), [125, 75, 175, 125])
    np.testing.assert_allclose(t.box_at(5.0), ds[1].box)
    np.testing.assert_allclose(t.landmarks_at(0.5), (ds[0].landmarks + ds[1].landmarks) / 2)

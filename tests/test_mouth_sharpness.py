"""The mouth-blur candidate reads the mouth of the aligned crop, and a blurred mouth scores as blurrier."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.faces import canonical_points, face_regions
from training import mouth_sharpness as ms
from training.evidence_fusion import Table

SIZE, MARGIN = 256, 0.05


def _crops(n: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def test_the_mouth_box_holds_both_mouth_corners_and_no_eye():
    y0, y1, x0, x1 = face_regions(SIZE, MARGIN)["mouth"]
    left_eye, right_eye, _, left_mouth, right_mouth = canonical_points(SIZE, MARGIN)
    for x, y in (left_mouth, right_mouth):
        assert x0 <= x < x1 and y0 <= y < y1
    for _, y in (left_eye, right_eye):
        assert not y0 <= y < y1


def test_blurring_the_mouth_alone_raises_the_score_and_the_relative_score():
    crops = _crops()
    y0, y1, x0, x1 = face_regions(SIZE, MARGIN)["mouth"]
    pasted = crops.copy()
    for c in pasted:  # what a lip-sync generator leaves: a soft mouth pasted into a sharp face
        c[y0:y1, x0:x1] = cv2.GaussianBlur(c[y0:y1, x0:x1], (0, 0), 2.0)
    for relative in (False, True):
        assert ms.blur_score(pasted, SIZE, MARGIN, relative) > ms.blur_score(crops, SIZE, MARGIN, relative) + 1.0


def test_the_relative_score_moves_less_than_the_absolute_one_when_the_whole_face_is_soft():
    crops = _crops()
    soft = np.stack([cv2.GaussianBlur(c, (0, 0), 1.5) for c in crops])
    absolute = ms.blur_score(soft, SIZE, MARGIN) - ms.blur_score(crops, SIZE, MARGIN)
    relative = ms.blur_score(soft, SIZE, MARGIN, True) - ms.blur_score(crops, SIZE, MARGIN, True)
    assert absolute > 1.0 and abs(relative) < absolute / 4


def test_the_column_joins_the_fusion_table_only_where_crops_were_kept():
    n = 5
    ran = np.ones((n, 4), bool)
    t = Table([None] * n, np.zeros((n, 4)), ran, ran.copy(), np.array([0, 1, 0, 1, 0]), np.array(["video"] * n),
              np.zeros(n, bool), np.array(list("abcde")), {}, {})
    ok = np.array([True, True, False, True, True])
    v = ms.with_column(t, np.array([1.0, 3.0, 99.0, 2.0, 0.0]), ok)
    assert v.x.shape == (n, 5) and v.x[2, 4] == 0.0 and not v.ran[2, 4] and v.fit_ok[:, 4].tolist() == ok.tolist()
    assert v.x[1, 4] > v.x[3, 4] > v.x[0, 4] > v.x[4, 4]  # order kept, the missing row's value ignored


def test_the_shipped_column_can_be_taken_out_or_replaced_for_the_comparison():
    n = 4
    ran = np.ones((n, 5), bool)
    t = Table([None] * n, np.arange(n * 5, dtype=float).reshape(n, 5), ran, ran.copy(), np.array([0, 1, 0, 1]),
              np.array(["video"] * n), np.zeros(n, bool), np.array(list("abcd")), {}, {})
    gone = ms.without_column(t, 4)
    assert gone.x.shape == t.x.shape and not gone.ran[:, 4].any() and not gone.fit_ok[:, 4].any()
    assert (gone.x[:, :4] == t.x[:, :4]).all() and gone.ran[:, :4].all() and t.ran[:, 4].all()
    ok = np.array([True, False, True, True])
    other = ms.with_column(t, np.array([2.0, 9.0, 0.0, 1.0]), ok, j=4)
    assert other.x.shape == t.x.shape and other.ran[:, 4].tolist() == ok.tolist()
    assert other.x[0, 4] > other.x[3, 4] > other.x[2, 4] and other.x[1, 4] == 0.0

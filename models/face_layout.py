"""Where an aligned face crop puts the face: the canonical 5-point layout ``pipeline.faces.align_face`` warps to,
and the regions the face checks measure in it. In ``models`` because detectors read these regions too (the mouth
check, the detail-normalised MesoNet); the pipeline aligns to the same layout."""

from __future__ import annotations

import numpy as np

# Canonical 5-point layout (left eye, right eye, nose tip, left and right mouth corner) of a face
# filling a 112×112 square: the layout most face-recognition/forensics models align to.
CANONICAL_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) in crop pixels


def canonical_points(size: int, margin: float = 0.0) -> np.ndarray:
    """The canonical layout for a ``size`` px crop; ``margin`` adds context around the face
    (0.3 = the face region shrinks by 1/1.3 around the crop centre)."""
    pts = CANONICAL_112 / 112.0 * size
    centre = np.array([size / 2.0, size / 2.0])
    return centre + (pts - centre) / (1.0 + margin)


def face_regions(size: int, margin: float = 0.0) -> dict[str, Box]:
    """(y0, y1, x0, x1) of the mouth, of a band across both cheeks, and of the face from a little above the eyes
    to below the mouth (a little wider than the eyes) in an aligned ``size`` px crop: where ``align_face`` puts
    them (the mouth box reaches a little below the mouth corners, to the lower lip)."""
    left_eye, right_eye, _, left_mouth, right_mouth = canonical_points(size, margin)
    eyes = float(np.linalg.norm(right_eye - left_eye))
    mouth_w = float(np.linalg.norm(right_mouth - left_mouth))

    def box(centre, w, h):
        return int(centre[1] - h / 2), int(centre[1] + h / 2), int(centre[0] - w / 2), int(centre[0] + w / 2)

    mouth = (left_mouth + right_mouth) / 2 + np.array([0.0, 0.1 * eyes])
    cheeks = (left_eye + right_eye + left_mouth + right_mouth) / 4
    top, bottom = min(left_eye[1], right_eye[1]) - 0.3 * eyes, (left_mouth[1] + right_mouth[1]) / 2 + 0.3 * eyes
    face = (int(max(1, top)), int(min(size - 1, bottom)), int(max(1, left_eye[0] - 0.3 * eyes)),
            int(min(size - 1, right_eye[0] + 0.3 * eyes)))
    return {"mouth": box(mouth, 1.5 * mouth_w, 0.7 * eyes), "cheeks": box(cheeks, 1.4 * eyes, 0.35 * eyes),
            "face": face}

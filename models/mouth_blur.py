"""Mouth blur: how little fine detail the mouth of an aligned face holds (nothing learned, no weights).

Lip-sync generators (Wav2Lip and its descendants, DINet, HyperLips, zzww) paint the mouth at a lower resolution
than the frame and paste it back, so the mouth of their output carries less of the finest detail than a camera
leaves there. The measure is the log mean squared Laplacian (3×3, 4-neighbour) of the grey crop inside the mouth
box, per face; a clip reads the median over its faces, negated (blurrier = more fake, sign fixed before looking).

It becomes a probability through one fixed affine map (``CENTRE``/``SPREAD``: the median and spread of the measure
over the video rows of the dev set and its processed copies, labels unseen); the evidence fusion then calibrates it
per detector like any other score. A resolution measure as much as a forgery one: it reads every soft video as a
little suspicious, which is why it enters the fusion with its own reliability and never decides alone
(``training.mouth_sharpness`` measured it under leave-one-source-out before it shipped).
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from models.base import Scores, WeightsInfo

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) in crop pixels


def grey_crops(crops: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, H, W) float32 grey: one cvtColor over the stacked crops (the same rounding to
    uint8 as per crop), no per-crop loop."""
    n, h, w = crops.shape[:3]
    grey = cv2.cvtColor(np.ascontiguousarray(crops).reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY)
    return grey.reshape(n, h, w).astype(np.float32)


def box_laplacian(grey: np.ndarray, box: Box) -> np.ndarray:
    """The 3×3 4-neighbour Laplacian of (N, H, W) float images inside ``box`` (a pixel from every edge)."""
    y0, y1, x0, x1 = box
    return (grey[:, y0 - 1:y1 - 1, x0:x1] + grey[:, y0 + 1:y1 + 1, x0:x1] + grey[:, y0:y1, x0 - 1:x1 - 1]
            + grey[:, y0:y1, x0 + 1:x1 + 1] - 4.0 * grey[:, y0:y1, x0:x1])


def mouth_detail(crops: np.ndarray, box: Box) -> np.ndarray:
    """Per crop (N, H, W, 3 uint8 RGB), the log mean squared Laplacian of the grey crop inside ``box``."""
    crops = np.asarray(crops)
    if len(crops) == 0:
        return np.zeros(0)
    h, w = crops.shape[1:3]
    y0, y1, x0, x1 = box
    if not (1 <= y0 < y1 <= h - 1 and 1 <= x0 < x1 <= w - 1):
        raise ValueError(f"mouth box {box} must lie inside the {h}x{w} crop, a pixel from its edge")
    lap = box_laplacian(grey_crops(crops), box)
    return np.log((lap.astype(np.float64) ** 2).mean(axis=(1, 2)) + 1e-3)


class MouthBlurDetector:
    """``predict(crops, box)``: per face P(fake) from its mouth's blur; ``clip_score``: the clip's, from the median."""

    name = "mouth_blur"
    modality = "face"
    # the measure's median and spread over the 593 video rows with a face of `make calibrate` (dev set, synthetic
    # set, WhatsApp / telephone / portrait-crop / noise copies of the reals), labels unseen (December 7, 2026)
    CENTRE = -3.40
    SPREAD = 1.08

    def __init__(self, centre: float = CENTRE, spread: float = SPREAD):
        if not spread > 0:
            raise ValueError(f"spread must be positive, got {spread}")
        self.centre, self.spread = float(centre), float(spread)
        # its only "weights" are the two numbers of the map: other numbers are another model, which must never be
        # calibrated by this one's calibration or resume its stored scores
        params = f"mouth_blur centre={self.centre!r} spread={self.spread!r}"
        self.weights_info = WeightsInfo(self.name, f"<no file: {params}>",
                                        hashlib.sha256(params.encode()).hexdigest())

    @classmethod
    def load(cls, device: str = "cpu") -> MouthBlurDetector:
        return cls()

    def _logit(self, blur: np.ndarray) -> np.ndarray:
        return (np.asarray(blur, dtype=np.float64) - self.centre) / self.spread

    def predict(self, crops: np.ndarray, box: Box) -> Scores:
        return Scores.from_fake_logits(self._logit(-mouth_detail(crops, box)))

    def score(self, crops: np.ndarray, box: Box) -> tuple[float, np.ndarray]:
        """(the clip's P(fake), each face's P(fake)). The clip reads the median face's blur through the same map (a
        sigmoid of the median, not a median of sigmoids, so an even count reads the same either way round)."""
        detail = mouth_detail(crops, box)
        if len(detail) == 0:
            raise ValueError("no face crops to measure")
        per_face = Scores.from_fake_logits(self._logit(-detail)).fake_prob
        return float(1.0 / (1.0 + np.exp(-float(self._logit(-np.median(detail)))))), per_face

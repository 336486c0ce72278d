"""Detail-normalised MesoNet: every face brought to one level of fine detail before MesoNet reads it.

MesoNet reads how much fine detail a face holds as much as how it was made. Measured out of fold on the dev videos
(README, "What moves the face check"): a beauty filter (edge-preserving smoothing) pushed real faces towards FAKE
(median raw log-odds −0.81 → +1.96) and one ffmpeg unsharp mask pushed the dev fakes to AUTHENTIC (+1.34 → −1.49,
fused AUC 0.59 → 0.51). So before MesoNet, each crop is filtered towards one fixed level of detail: of a fixed bank
of Gaussian blurs and unsharp masks (and the identity), the one whose result's detail over the face (eyes to
chin, the same log mean squared Laplacian the mouth check measures) lands nearest ``TARGET``. Nothing is learned;
the bank was fixed before looking, and ``TARGET`` is the median over the dev videos' crops, labels unseen.

The choice reads only the face box and a border wider than any kernel, in floating point; unsharp masks are linear,
so their detail comes from two Laplacians mixed, and each blur costs one pass (~2 ms per crop on one core).
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from models.base import Scores, WeightsInfo
from models.face_layout import face_regions
from models.mouth_blur import box_laplacian, grey_crops

# (kind, strength): Gaussian blur by sigma, or unsharp mask by amount over a sigma-1 blur; in order of detail
BANK: tuple[tuple[str, float], ...] = (
    ("blur", 2.0), ("blur", 1.5), ("blur", 1.1), ("blur", 0.8), ("blur", 0.6), ("none", 0.0),
    ("sharpen", 0.4), ("sharpen", 0.8), ("sharpen", 1.4), ("sharpen", 2.2), ("sharpen", 3.2))
UNSHARP_SIGMA = 1.0
PAD = 8  # > the largest kernel radius (sigma 2.0: 6 px): the box's filtered values need no pixel beyond it
# the median detail over the face box of the 2261 crops of the 125 dev videos' substantial face tracks, as the
# visual stage makes them (labels unseen; December 7, 2026)
TARGET = 3.72
# the context around the aligned face in the visual stage's crops (``Settings.visual_crop_margin``'s default; a
# test keeps the two equal), which places the face box
MARGIN = 0.05
CHUNK = 32


def _filter_each(images: np.ndarray, kind: str, strength: float) -> np.ndarray:
    """``images`` (N, H, W[, C]) each filtered on its own by OpenCV (default border: reflect-101)."""
    if kind == "none" or len(images) == 0:
        return images
    if kind == "blur":
        return np.stack([cv2.GaussianBlur(im, (0, 0), strength) for im in images])
    if kind == "sharpen":
        return np.stack([cv2.addWeighted(im, 1.0 + strength, cv2.GaussianBlur(im, (0, 0), UNSHARP_SIGMA), -strength, 0)
                         for im in images])
    raise ValueError(f"unknown filter {kind!r}")


def bank_details(crops: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(N, len(BANK)): the face detail (log mean squared Laplacian over ``box``) of the grey crops after each
    filter of the bank, in floating point. Only the box and a border wider than any kernel are filtered (inside the
    box the same numbers as the whole crop). Unsharp masks are linear in the image, so their Laplacians are mixes of
    two: the grey crop's and its sigma-1 blur's; each blur costs one filter pass."""
    y0, y1, x0, x1 = box
    n, h, w = crops.shape[:3]
    m = PAD + 1
    if y0 >= m and x0 >= m and y1 + m <= h and x1 + m <= w:
        crops = crops[:, y0 - m:y1 + m, x0 - m:x1 + m]
        box = (m, m + y1 - y0, m, m + x1 - x0)
    grey = grey_crops(crops)

    def blurred(sigma: float) -> np.ndarray:
        return _filter_each(grey, "blur", sigma)

    def energy(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # per crop mean of a·b
        return np.einsum("ij,ij->i", a, b, dtype=np.float64) / a.shape[1]

    def lap(images: np.ndarray) -> np.ndarray:  # (N, pixels of the box)
        return box_laplacian(images, box).reshape(len(images), -1)

    lap0 = lap(grey)
    lap1 = lap(blurred(UNSHARP_SIGMA))
    e00, e01, e11 = energy(lap0, lap0), energy(lap0, lap1), energy(lap1, lap1)
    out = np.empty((n, len(BANK)))
    for j, (kind, strength) in enumerate(BANK):
        if kind == "blur":
            lapb = lap(blurred(strength))
            e = energy(lapb, lapb)
        elif kind == "sharpen":  # mean of ((1 + a)·L0 − a·L1)², expanded
            e = (1.0 + strength) ** 2 * e00 - 2.0 * strength * (1.0 + strength) * e01 + strength**2 * e11
        else:
            e = e00
        out[:, j] = np.log(np.maximum(e, 0.0) + 1e-3)
    return out


def choose_filters(crops: np.ndarray, box: tuple[int, int, int, int], target: float = TARGET) -> np.ndarray:
    """Per crop (N, H, W, 3 uint8 RGB), the index into ``BANK`` whose filtered face detail is nearest ``target``.
    In chunks of ``CHUNK`` crops, whose float copies stay in cache (240 crops at once: 4x slower per crop)."""
    details = np.concatenate([bank_details(crops[i:i + CHUNK], box) for i in range(0, len(crops), CHUNK)])
    return np.argmin(np.abs(details - target), axis=1)


def normalise_detail(crops: np.ndarray, box: tuple[int, int, int, int], target: float = TARGET) -> np.ndarray:
    """``crops`` each filtered by its chosen ``BANK`` entry (uint8 RGB in, uint8 RGB out, same shape)."""
    crops = np.asarray(crops)
    if len(crops) == 0:
        return crops
    chosen = choose_filters(crops, box, target)
    out = crops.copy()
    for k in np.unique(chosen):
        idx = np.flatnonzero(chosen == k)
        out[idx] = _filter_each(crops[idx], *BANK[k])
    return out


class DetailNormalisedMesoNet:
    """MesoNet on detail-normalised crops. Same input (aligned 256 px RGB uint8 crops) and output as MesoNet."""

    name = "mesonet_detail"
    modality = "visual"

    def __init__(self, mesonet, margin: float = MARGIN, target: float = TARGET):
        self.mesonet = mesonet
        self.input_size = int(mesonet.input_size)
        self.device = mesonet.device
        self.target = float(target)
        self.box = face_regions(self.input_size, margin)["face"]
        # another target or bank is another model: its calibration and stored scores are never shared with this one
        params = (f"detail target={self.target!r} bank={BANK!r} unsharp_sigma={UNSHARP_SIGMA!r} box={self.box!r} "
                  "stills as they are")
        base = mesonet.weights_info
        self.weights_info = WeightsInfo(self.name, base.file,
                                        hashlib.sha256(f"{base.sha256} {params}".encode()).hexdigest())

    @classmethod
    def load(cls, weights=None, device: str = "cpu", variant: str = "mesoinception_df", margin: float = MARGIN
             ) -> DetailNormalisedMesoNet:
        from models.mesonet import MesoNetDetector

        return cls(MesoNetDetector.load(weights, device=device, variant=variant), margin=margin)

    def for_kind(self, kind: str):
        """What scores faces of this ``MediaInfo.kind``: still images are read as they are, by MesoNet itself.
        Measured through the fused LOSO, normalising stills lost (real photos SUSPICIOUS or worse 15.8 → 27.3 %,
        docs/quality-history.md, "December 7, sixth session"); video frames are where phone filters and re-encoding
        move detail."""
        return self.mesonet if kind == "image" else self

    def predict(self, crops: np.ndarray) -> Scores:
        """Faces of a video (the pipeline asks ``for_kind`` first; a still goes to MesoNet as it is)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"expected (N,H,W,3) RGB crops, got shape {crops.shape}")
        if len(crops) == 0:
            return Scores.empty()
        if crops.dtype != np.uint8:
            raise TypeError(f"expected uint8 crops, got {crops.dtype}")
        if crops.shape[1:3] != (self.input_size, self.input_size):
            raise ValueError(f"expected {self.input_size} px aligned crops, got {crops.shape[1:3]}")
        return self.mesonet.predict(normalise_detail(crops, self.box, self.target))

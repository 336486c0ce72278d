"""Dense face windows: consecutive 25 fps frames of one face track, with per-frame landmarks.

The sparse track (2 fps) says where a person is; for the temporal and lip-sync stages we decode
dense windows and re-detect the face on every dense frame (batched, at a low detection size), linking
each frame's detection to the track's interpolated box. Frames where the face is missed fall back
to the interpolated landmarks and are flagged ``detected=False``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from pipeline import media
from pipeline.faces import FaceTrack, align_face, box_iou

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenseFaceClip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, decoded at ``scale`` of the original size
    timestamps_s: np.ndarray  # (T,) tick times (constant rate)
    boxes: np.ndarray  # (T, 4) face box per frame, frame pixels
    landmarks: np.ndarray  # (T, 5, 2)
    detected: np.ndarray  # (T,) bool: True where the detector found the face on that very frame
    fps: float
    track_id: int
    # features derived from this very window (crops, embeddings), so stages that share an extractor compute it
    # once; keyed by the extractor and the model instance. Not an init field, so `dataclasses.replace` (new
    # frames) starts empty
    features: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def memo(self, key, compute: Callable[[], Any]) -> Any:
        if key not in self.features:
            self.features[key] = compute()
        return self.features[key]

    @property
    def start_s(self) -> float:
        return float(self.timestamps_s[0])

    @property
    def detection_rate(self) -> float:
        return float(self.detected.mean()) if len(self) else 0.0

    @property
    def has_frames(self) -> bool:
        return self.frames.size > 0 or not len(self)

    def without_frames(self) -> DenseFaceClip:
        """This window with its frames let go (an 8 s window of 640 px frames is ~140 MB), keeping everything
        already derived from them (``memo``: crops, embeddings). For stages that read only crops made first."""
        clip = dataclasses.replace(self, frames=np.empty((len(self), 0, 0, 3), np.uint8))
        clip.features.update(self.features)
        return clip

    def require_frames(self) -> np.ndarray:
        if not self.has_frames:
            raise RuntimeError("this dense window's frames were let go (without_frames) before this crop was made")
        return self.frames

    def aligned(self, size: int, margin: float = 0.0) -> np.ndarray:
        """Aligned RGB face crops (T, size, size, 3)."""
        return np.stack([align_face(f, lm, size, margin) for f, lm in zip(self.require_frames(), self.landmarks,
                                                                            strict=True)])

    def aligned_gray(self, size: int, margin: float = 0.0) -> np.ndarray:
        """Aligned gray face crops (T, size, size), made once per window (``memo``)."""
        return self.memo(("aligned_gray", size, margin), lambda: np.stack(
            [cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in self.aligned(size, margin)]))

    def slice(self, start: int, stop: int) -> DenseFaceClip:
        return DenseFaceClip(self.frames[start:stop], self.timestamps_s[start:stop], self.boxes[start:stop],
                             self.landmarks[start:stop], self.detected[start:stop], self.fps, self.track_id)


def _smooth(x: np.ndarray, k: int = 5) -> np.ndarray:
    """Centred moving average along time (edges use the available neighbours) to calm detector jitter."""
    if len(x) < 3 or k <= 1:
        return x
    k = min(k, len(x) if len(x) % 2 else len(x) - 1)
    pad = k // 2
    xp = np.concatenate([np.repeat(x[:1], pad, 0), x, np.repeat(x[-1:], pad, 0)], 0)
    c = np.cumsum(np.concatenate([np.zeros_like(xp[:1]), xp], 0), 0)
    return (c[k:] - c[:-k]) / k


def track_windows(
    source: media.MediaSource,
    info: media.MediaInfo,
    track: FaceTrack,
    detector,
    window_s: float,
    max_windows: int = 1,
    fps: float = 25.0,
    sparse_scale: float = 1.0,
    max_side: int = 640,
    detect_side: int = 320,
    threshold: float = 0.6,
    limits: media.Limits | None = None,
    prepare: Callable[[DenseFaceClip], DenseFaceClip] | None = None,
) -> list[DenseFaceClip]:
    """Up to ``max_windows`` windows of ``window_s`` seconds spread over the track's time span. ``prepare`` sees
    each located window before the next one is decoded (see ``DenseFaceClip.without_frames``)."""
    t0, t1 = track.span_s
    span = max(0.0, t1 - t0)
    # the sparse track covers [t0, t1] at 2 fps; a window may extend half a sample beyond each end
    lo = max(0.0, t0 - 0.25)
    hi = min(info.video_duration_s, t1 + 0.25)
    length = min(window_s, hi - lo)
    if length < 1.0 / fps * 4:
        return []
    n_windows = max(1, min(max_windows, int(span // window_s) if span >= window_s else 1))
    starts = np.linspace(lo, hi - length, n_windows) if n_windows > 1 else np.array([lo])
    n_frames = int(round(length * fps))
    out = []
    for clip in media.iter_decode_dense(source, starts, n_frames, fps=fps, info=info, max_side=max_side,
                                        limits=limits):
        located = _locate(clip, track, detector, clip.scale / sparse_scale, detect_side, threshold)
        del clip  # each window is located and prepared before the next is decoded: no name here keeps its frames
        out.append(prepare(located) if prepare else located)
        del located
    return out


def _locate(clip: media.DenseClip, track: FaceTrack, detector, rel: float, detect_side: int,
            threshold: float) -> DenseFaceClip:
    """The window with the track's face on every frame; ``rel`` maps sparse-track pixels to dense-frame pixels."""
    n = len(clip)
    expect_boxes = np.stack([track.box_at(t) * rel for t in clip.timestamps_s])
    expect_lms = np.stack([track.landmarks_at(t) * rel for t in clip.timestamps_s])
    dets = detector.detect(clip.frames, threshold=threshold, max_side=detect_side)
    boxes = expect_boxes.copy()
    lms = expect_lms.copy()
    found = np.zeros(n, bool)
    for i, d in enumerate(dets):
        if len(d) == 0:
            continue
        iou = box_iou(expect_boxes[i : i + 1], d[:, :4])[0]
        j = int(np.argmax(iou))
        if iou[j] > 0.2:
            boxes[i] = d[j, :4]
            lms[i] = d[j, 5:15].reshape(5, 2)
            found[i] = True
    if found.any() and not found.all():
        # fill misses by interpolating between detected neighbours (not from the 2 fps track)
        idx = np.flatnonzero(found)
        for j in range(4):
            boxes[:, j] = np.interp(np.arange(n), idx, boxes[idx, j])
        flat = lms.reshape(n, 10)
        for j in range(10):
            flat[:, j] = np.interp(np.arange(n), idx, flat[idx, j])
        lms = flat.reshape(n, 5, 2)
    return DenseFaceClip(clip.frames, clip.timestamps_s, _smooth(boxes), _smooth(lms.reshape(n, 10)).reshape(n, 5, 2),
                         found, clip.fps, track.track_id)

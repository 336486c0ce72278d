"""Faces: detection over sampled frames, 5-point alignment, and per-person tracks.

Coordinates are in the pixels of the decoded (possibly downscaled) frames; ``FaceAnalysis.scale``
converts them back to the original video size for reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from models.face_layout import CANONICAL_112, canonical_points, face_regions  # noqa: F401 (the pipeline's names)

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class FaceDetection:
    frame_index: int  # index into the sampled frames
    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


# what a stage keeps of a face while its frame is decoded: (frame, detection) -> crop
CropFn = Callable[[np.ndarray, FaceDetection], np.ndarray]


@dataclass(frozen=True)
class FaceTrack:
    """One person followed across sampled frames."""

    track_id: int
    frame_indices: np.ndarray  # (K,) indices into the sampled frames
    timestamps_s: np.ndarray  # (K,)
    boxes: np.ndarray  # (K, 4)
    landmarks: np.ndarray  # (K, 5, 2)
    scores: np.ndarray  # (K,) detector confidence
    blur: np.ndarray  # (K,) Laplacian variance of the aligned 112 px grey crop (higher = sharper)

    def __len__(self) -> int:
        return int(self.frame_indices.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        return np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])

    @property
    def mean_size(self) -> float:
        return float(self.sizes.mean())

    @property
    def mean_score(self) -> float:
        return float(self.scores.mean())

    @property
    def span_s(self) -> tuple[float, float]:
        return float(self.timestamps_s[0]), float(self.timestamps_s[-1])

    @property
    def quality(self) -> float:
        """Face quality in [0, 1]: confident, large enough and sharp enough for the visual detectors."""
        return face_quality(self.scores, self.sizes, self.blur)

    def box_at(self, t: float) -> np.ndarray:
        """Box interpolated linearly at time ``t`` (held constant outside the track)."""
        if len(self) == 1:
            return self.boxes[0].copy()
        return np.array([np.interp(t, self.timestamps_s, self.boxes[:, j]) for j in range(4)])

    def landmarks_at(self, t: float) -> np.ndarray:
        if len(self) == 1:
            return self.landmarks[0].copy()
        flat = self.landmarks.reshape(len(self), 10)
        return np.array([np.interp(t, self.timestamps_s, flat[:, j]) for j in range(10)]).reshape(5, 2)


@dataclass(frozen=True)
class FaceAnalysis:
    tracks: tuple[FaceTrack, ...]
    n_frames: int
    frame_size: tuple[int, int]  # (width, height) of the decoded frames
    scale: float  # decoded size / original size
    main_track_id: int | None
    detections_per_frame: tuple[int, ...] = field(default=())
    # crops made while the frames were at hand (``analyse_face_chunks``): name -> track id -> (K, ...) array
    crops: dict[str, dict[int, np.ndarray]] = field(default_factory=dict, compare=False, repr=False)

    def track(self, track_id: int) -> FaceTrack:
        return next(t for t in self.tracks if t.track_id == track_id)

    @property
    def main_track(self) -> FaceTrack | None:
        return None if self.main_track_id is None else self.track(self.main_track_id)


# ----------------------------------------------------------------------------------------------
# Quality
# ----------------------------------------------------------------------------------------------
def face_quality(scores: np.ndarray, sizes: np.ndarray, blur: np.ndarray) -> float:
    """Mean over frames of confidence × size factor × sharpness factor.

    Size saturates at 112 px (the smallest input any of our detectors uses); sharpness maps the
    Laplacian variance of a 112 px crop logarithmically: 10 (mush) → 0, 300 (crisp) → 1.
    """
    if len(scores) == 0:
        return 0.0
    size_f = np.clip(np.asarray(sizes, float) / 112.0, 0.0, 1.0)
    sharp = np.clip((np.log10(np.maximum(blur, 1e-6)) - 1.0) / (np.log10(300.0) - 1.0), 0.0, 1.0)
    return float(np.mean(np.clip(scores, 0, 1) * size_f * (0.5 + 0.5 * sharp)))


def laplacian_variance(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


# ----------------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------------
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping ``src`` points onto ``dst`` (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s0**2).sum() / len(src)
    scale = float((sig * np.diag(sign)).sum() / var_s) if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(frame: np.ndarray, landmarks: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray:
    """Warp ``frame`` so the 5 landmarks land on the canonical layout; black outside the frame."""
    m = similarity_transform(landmarks, canonical_points(size, margin))
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def square_box_crop(frame: np.ndarray, box: np.ndarray, size: int, scale: float = 1.3) -> np.ndarray:
    """Axis-aligned square of side ``scale``·max(w, h) centred on the box, zero-padded, resized to ``size``."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = max(1, int(round(scale * max(x2 - x1, y2 - y1))))
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left, top = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    h, w = frame.shape[:2]
    canvas = np.zeros((side, side, frame.shape[2]), frame.dtype)
    sx0, sy0 = max(0, left), max(0, top)
    sx1, sy1 = min(w, left + side), min(h, top + side)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = frame[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interp)


def track_crops(
    frames: np.ndarray, track: FaceTrack, size: int, margin: float = 0.0, mode: str = "align"
) -> np.ndarray:
    """Crops of one track at ``size`` px, (K, size, size, 3) uint8. ``mode``: "align" (5-point) or "box"."""
    out = np.empty((len(track), size, size, 3), np.uint8)
    for k, fi in enumerate(track.frame_indices):
        if mode == "align":
            out[k] = align_face(frames[fi], track.landmarks[k], size, margin)
        else:
            out[k] = square_box_crop(frames[fi], track.boxes[k], size, 1.0 + margin)
    return out


# ----------------------------------------------------------------------------------------------
# Tracking
# ----------------------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N,4) and (M,4) boxes."""
    a = np.asarray(a, float).reshape(-1, 4)
    b = np.asarray(b, float).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _match_cost(track_boxes: np.ndarray, det_boxes: np.ndarray) -> np.ndarray:
    """1 − IoU, softened by centre distance so a fast-moving face at a low sampling rate still links."""
    iou = box_iou(track_boxes, det_boxes)
    tc = (track_boxes[:, None, :2] + track_boxes[:, None, 2:4]) / 2
    dc = (det_boxes[None, :, :2] + det_boxes[None, :, 2:4]) / 2
    ts = np.maximum(track_boxes[:, 2] - track_boxes[:, 0], track_boxes[:, 3] - track_boxes[:, 1])[:, None]
    ds = np.maximum(det_boxes[:, 2] - det_boxes[:, 0], det_boxes[:, 3] - det_boxes[:, 1])[None, :]
    dist = np.linalg.norm(tc - dc, axis=-1) / np.maximum(ts, 1e-6)
    size_ratio = np.maximum(ts, ds) / np.maximum(np.minimum(ts, ds), 1e-6)
    near = (dist < 1.0) & (size_ratio < 1.5)
    return np.where(near, np.minimum(1.0 - iou, 0.4 + 0.3 * dist), 1.0 - iou)


def build_tracks(
    detections: list[list[FaceDetection]],
    timestamps_s: np.ndarray,
    max_gap: int = 2,
    max_cost: float = 0.75,
) -> list[list[FaceDetection]]:
    """Link per-frame detections into tracks: Hungarian matching on IoU/centre-distance cost, a track may
    skip up to ``max_gap`` sampled frames (a missed detection or a face turning away)."""
    tracks: list[list[FaceDetection]] = []
    open_ids: list[int] = []
    for fi, dets in enumerate(detections):
        open_ids = [t for t in open_ids if fi - tracks[t][-1].frame_index <= max_gap + 1]
        unmatched = list(range(len(dets)))
        if open_ids and dets:
            tb = np.stack([tracks[t][-1].box for t in open_ids])
            db = np.stack([d.box for d in dets])
            cost = _match_cost(tb, db)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] <= max_cost:
                    tracks[open_ids[r]].append(dets[c])
                    unmatched.remove(c)
        for c in unmatched:
            tracks.append([dets[c]])
            open_ids.append(len(tracks) - 1)
    return tracks


def pick_main_track(tracks: list[FaceTrack] | tuple[FaceTrack, ...]) -> FaceTrack | None:
    """The main subject: most frames weighted by face size (a large face seen for long wins)."""
    if not tracks:
        return None
    return max(tracks, key=lambda t: (len(t) * t.mean_size * t.mean_score, t.mean_size))


# ----------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------
def detections_from_arrays(arrays: list[np.ndarray], min_size: float = 0.0) -> list[list[FaceDetection]]:
    out: list[list[FaceDetection]] = []
    for fi, arr in enumerate(arrays):
        row = []
        for d in np.asarray(arr).reshape(-1, 15):
            det = FaceDetection(fi, d[:4].astype(np.float64), float(d[4]), d[5:15].reshape(5, 2).astype(np.float64))
            if det.size >= min_size:
                row.append(det)
        out.append(row)
    return out


def analyse_faces(
    frames: np.ndarray,
    timestamps_s: np.ndarray,
    detector,
    scale: float = 1.0,
    threshold: float = 0.8,
    detect_side: int = 640,
    min_size: float = 24.0,
    batch_size: int = 16,
    min_track_len: int = 1,
    progress: Callable[[int, int], None] | None = None,
    crops: dict[str, CropFn] | None = None,
) -> FaceAnalysis:
    """Detect faces on every sampled frame (batched), link them into tracks, measure each track."""
    chunk = (frames, np.asarray(timestamps_s))
    return analyse_face_chunks([chunk], len(frames), detector, scale=scale, threshold=threshold,
                               detect_side=detect_side, min_size=min_size, batch_size=batch_size,
                               min_track_len=min_track_len, progress=progress, crops=crops)


def analyse_face_chunks(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    total: int,
    detector,
    scale: float = 1.0,
    threshold: float = 0.8,
    detect_side: int = 640,
    min_size: float = 24.0,
    batch_size: int = 16,
    min_track_len: int = 1,
    progress: Callable[[int, int], None] | None = None,
    crops: dict[str, CropFn] | None = None,
) -> FaceAnalysis:
    """``analyse_faces`` over (frames, timestamps) chunks in order, ``total`` frames expected. Everything a
    face needs from its frame (the blur measure and each ``crops`` function's crop) is made while that chunk
    is at hand, so no more than one chunk of frames is ever held."""
    crops = crops or {}
    detections: list[list[FaceDetection]] = []
    stamps: list[np.ndarray] = []
    blur: dict[int, float] = {}  # by id() of the detection
    made: dict[str, dict[int, np.ndarray]] = {name: {} for name in crops}
    step = max(batch_size, 1) * 4
    n = 0
    frame_size = (0, 0)
    for frames, times in chunks:
        arrays: list[np.ndarray] = []
        for start in range(0, len(frames), step):
            arrays += detector.detect(frames[start : start + step], threshold=threshold, max_side=detect_side,
                                      batch_size=batch_size)
            if progress:
                progress(min(total, n + start + step), total)
        for k, row in enumerate(detections_from_arrays(arrays, min_size=min_size * scale)):
            row = [FaceDetection(n + k, d.box, d.score, d.landmarks) for d in row]  # global frame index
            for det in row:
                blur[id(det)] = laplacian_variance(cv2.cvtColor(align_face(frames[k], det.landmarks, 112),
                                                                cv2.COLOR_RGB2GRAY))
                for name, fn in crops.items():
                    made[name][id(det)] = fn(frames[k], det)
            detections.append(row)
        stamps.append(np.asarray(times, np.float64))
        frame_size = (int(frames.shape[2]), int(frames.shape[1])) if len(frames) else frame_size
        n += len(frames)
    timestamps_s = np.concatenate(stamps) if stamps else np.zeros(0)
    tracks: list[FaceTrack] = []
    per_track: dict[str, dict[int, np.ndarray]] = {name: {} for name in crops}
    for dets in build_tracks(detections, timestamps_s):
        if len(dets) < min_track_len:
            continue
        idx = np.array([d.frame_index for d in dets])
        track_id = len(tracks)
        tracks.append(
            FaceTrack(
                track_id=track_id,
                frame_indices=idx,
                timestamps_s=timestamps_s[idx],
                boxes=np.stack([d.box for d in dets]),
                landmarks=np.stack([d.landmarks for d in dets]),
                scores=np.array([d.score for d in dets]),
                blur=np.array([blur[id(d)] for d in dets]),
            )
        )
        for name in crops:
            per_track[name][track_id] = np.stack([made[name][id(d)] for d in dets])
    main = pick_main_track(tracks)
    return FaceAnalysis(
        tracks=tuple(tracks),
        n_frames=n,
        frame_size=frame_size,
        scale=scale,
        main_track_id=None if main is None else main.track_id,
        detections_per_frame=tuple(len(d) for d in detections),
        crops=per_track,
    )

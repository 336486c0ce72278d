"""Training inputs extracted with the pipeline's own decode and face code (so training matches inference).

``dense_face_clips`` runs exactly what ``Pipeline.run`` runs before the temporal and lip-sync stages:
sparse sampling → RetinaFace → tracks → 25 fps windows of the main track with per-frame landmarks.
Results are cached per file (sha256 + parameters) under ``out/cache`` because decoding dominates.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from pipeline import media
from pipeline.dense import DenseFaceClip, track_windows
from pipeline.faces import analyse_faces
from pipeline.settings import Settings

logger = logging.getLogger(__name__)

CACHE = Path("out/cache")


def _key(path: Path, *parts) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(repr(parts).encode())
    return h.hexdigest()[:24]


def dense_face_clips(
    path: str | Path,
    face_detector,
    settings: Settings,
    window_s: float | None = None,
    max_windows: int | None = None,
    cache_dir: Path | None = CACHE,
) -> list[DenseFaceClip]:
    """Dense windows of the main face track of one video (empty when no face is found)."""
    path = Path(path)
    window_s = window_s or settings.dense_window_s
    max_windows = max_windows or settings.max_dense_windows
    cache_file = None
    if cache_dir is not None:
        key = _key(path, "dense", window_s, max_windows, settings.sample_fps, settings.face_threshold,
                   settings.dense_detect_side, settings.max_decode_side)
        cache_file = Path(cache_dir) / "dense" / f"{key}.npz"
        if cache_file.exists():
            return _load_clips(cache_file)
    info = media.probe(path, media.Limits.from_settings(settings))
    if info.kind != "video":
        return []
    sampled = media.sample_frames(path, info, fps=settings.sample_fps, max_frames=settings.max_sampled_frames,
                                  max_side=settings.max_decode_side)
    analysis = analyse_faces(sampled.frames, sampled.timestamps_s, face_detector, scale=sampled.scale,
                             threshold=settings.face_threshold, detect_side=settings.face_detect_side,
                             min_size=settings.face_min_size, batch_size=settings.detect_batch_size)
    clips: list[DenseFaceClip] = []
    if analysis.main_track is not None:
        clips = track_windows(path, info, analysis.main_track, face_detector, window_s=window_s,
                              max_windows=max_windows, fps=settings.dense_fps, sparse_scale=analysis.scale,
                              detect_side=settings.dense_detect_side)
    if cache_file is not None:
        _save_clips(cache_file, clips)
    return clips


def _save_clips(path: Path, clips: list[DenseFaceClip]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"n": np.array(len(clips))}
    for i, c in enumerate(clips):
        arrays |= {f"{i}_frames": c.frames, f"{i}_t": c.timestamps_s, f"{i}_boxes": c.boxes,
                   f"{i}_lms": c.landmarks, f"{i}_det": c.detected, f"{i}_meta": np.array([c.fps, c.track_id])}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def _load_clips(path: Path) -> list[DenseFaceClip]:
    d = np.load(path)
    out = []
    for i in range(int(d["n"])):
        fps, tid = d[f"{i}_meta"]
        out.append(DenseFaceClip(d[f"{i}_frames"], d[f"{i}_t"], d[f"{i}_boxes"], d[f"{i}_lms"], d[f"{i}_det"],
                                 float(fps), int(tid)))
    return out


def clip_chunks(clips: list[DenseFaceClip], n_frames: int, size: int, margin: float = 0.3,
                max_chunks: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping ``n_frames`` chunks of aligned RGB face crops, (K, n_frames, size, size, 3), with each
    chunk's start and end time. The temporal stage of the pipeline and the temporal trainer both use this."""
    chunks, starts, ends = [], [], []
    for c in clips:
        if len(c) < n_frames:
            continue
        aligned = c.aligned(size, margin)
        for k in range(0, len(c) - n_frames + 1, n_frames):
            chunks.append(aligned[k : k + n_frames])
            starts.append(c.timestamps_s[k])
            ends.append(c.timestamps_s[k + n_frames - 1] + 1.0 / c.fps)
    if max_chunks is not None and len(chunks) > max_chunks:
        idx = np.linspace(0, len(chunks) - 1, max_chunks).round().astype(int)
        chunks, starts, ends = [chunks[i] for i in idx], [starts[i] for i in idx], [ends[i] for i in idx]
    if not chunks:
        return np.zeros((0, n_frames, size, size, 3), np.uint8), np.zeros(0), np.zeros(0)
    return np.stack(chunks), np.asarray(starts, float), np.asarray(ends, float)

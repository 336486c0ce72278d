"""Training inputs extracted with the pipeline's own decode and face code (so training matches inference).

``dense_face_clips`` runs the pipeline's own stage functions (``pipeline.stages``): sparse sampling →
RetinaFace → tracks → 25 fps windows of the main track with per-frame landmarks.
Results are cached per file (sha256 + parameters) under ``out/cache`` because decoding dominates.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from pipeline.dense import DenseFaceClip
from pipeline.settings import Settings
from pipeline.stages import decode_and_track, dense_windows

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
    tracked = decode_and_track(path, face_detector, settings, with_audio=False)
    clips: list[DenseFaceClip] = []
    if tracked.decoded.info.kind == "video" and tracked.analysis is not None and tracked.analysis.main_track:
        clips = dense_windows(path, tracked.decoded.info, tracked.analysis, face_detector, settings, for_sync=False,
                              window_s=window_s, max_windows=max_windows)
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




class KeptInputs:
    """What ``make eval`` fed one trained stage, per (manifest item, variant), so a trainer can score these very
    inputs with models refitted without each row's fold. Keyed by the file's bytes (sha256), the variant ("orig",
    or "eval-<processing>") and the inputs' maker (``maker_parts``: weights, analysis settings, ...): another
    detector or setting is a miss."""

    VERSION = 1

    def __init__(self, root: Path, settings: Settings, *maker_parts):
        import json

        from pipeline.core import ANALYSIS_SETTINGS

        self.root = Path(root)
        analysis = settings.model_dump(include=ANALYSIS_SETTINGS, mode="json")
        self.maker = hashlib.sha256(json.dumps([self.VERSION, *maker_parts, analysis],
                                               sort_keys=True).encode()).hexdigest()[:16]
        self._digests: dict[str, str] = {}

    def path_for(self, file: str | Path, variant: str) -> Path:
        file = str(file)
        if file not in self._digests:
            from models.weights import sha256_of

            self._digests[file] = sha256_of(Path(file))
        key = hashlib.sha256(f"{self._digests[file]}|{variant}|{self.maker}".encode()).hexdigest()[:16]
        return self.root / f"{Path(file).stem[:40]}-{variant}-{key}.npz"

    def has(self, file: str | Path, variant: str) -> bool:
        return self.path_for(file, variant).is_file()

    def _write(self, path: Path, arrays: dict[str, np.ndarray]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        # uncompressed: zlib on ~10 MB of crops would cost the evaluation more than the disk it saves
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return path


class VisualInputCache(KeptInputs):
    """The visual stage's inputs: every face track's crops and the tracks whose score counts for the clip
    (``pipeline.core.visual_inputs``), for ``training.visual_oof``; made by the face detector's weights, the
    analysis settings and the crop (kind, size)."""

    def __init__(self, root: Path, face_weights: str, crop: str, input_size: int, settings: Settings):
        super().__init__(root, settings, face_weights, crop, int(input_size))
        self.crop, self.input_size = crop, int(input_size)

    def put(self, file: str | Path, variant: str, crops: dict[int, np.ndarray], substantial: list[int]) -> Path:
        return self._write(self.path_for(file, variant),
                           {"track_ids": np.array(list(crops), dtype=np.int64),
                            "substantial": np.array(substantial, np.int64),
                            **{f"crops_{t}": c for t, c in crops.items()}})

    def get(self, file: str | Path, variant: str) -> tuple[dict[int, np.ndarray], list[int]] | None:
        path = self.path_for(file, variant)
        if not path.is_file():
            return None
        with np.load(path) as z:
            crops = {int(t): z[f"crops_{int(t)}"] for t in z["track_ids"]}
            return crops, [int(t) for t in z["substantial"]]


class TemporalInputCache(KeptInputs):
    """The temporal head's inputs: the frozen LR-ASD embedding sequences (T, 128) of the main face track's dense
    windows (``LRASDTemporalDetector.sequences``), for ``training.temporal_oof``; made by the face detector's and
    LR-ASD's weights, the analysis settings and the head's window (shorter windows are not kept)."""

    def __init__(self, root: Path, face_weights: str, front_weights: str, window: int, settings: Settings):
        super().__init__(root, settings, "temporal", face_weights, front_weights, int(window))

    def put(self, file: str | Path, variant: str, sequences: list[np.ndarray]) -> Path:
        return self._write(self.path_for(file, variant),
                           {"n": np.array(len(sequences))} | {f"emb_{i}": np.asarray(e, np.float32)
                                                              for i, e in enumerate(sequences)})

    def get(self, file: str | Path, variant: str) -> list[np.ndarray] | None:
        path = self.path_for(file, variant)
        if not path.is_file():
            return None
        with np.load(path) as z:
            return [z[f"emb_{i}"] for i in range(int(z["n"]))]


class AudioInputCache(KeptInputs):
    """The audio detector's inputs: the (N, window) 16 kHz windows of the speech it scored (``score_audio``), for
    refitting the audio detector per fold; made by the window length, the sample rate and the analysis settings
    (VAD, overlap, window cap)."""

    def __init__(self, root: Path, window: int, sample_rate: int, settings: Settings):
        super().__init__(root, settings, "audio", int(window), int(sample_rate))
        self.window = int(window)

    def put(self, file: str | Path, variant: str, windows: np.ndarray, features: np.ndarray | None = None) -> Path:
        arrays = {"windows": np.asarray(windows, np.float32)}
        if features is not None:  # a detector that pools its front over the speech (Whisper): per window, pre-head
            arrays["features"] = np.asarray(features, np.float32)
        return self._write(self.path_for(file, variant), arrays)

    def get(self, file: str | Path, variant: str) -> np.ndarray | None:
        path = self.path_for(file, variant)
        if not path.is_file():
            return None
        with np.load(path) as z:
            return z["windows"]

    def get_features(self, file: str | Path, variant: str) -> np.ndarray | None:
        """The pre-head features the detector made of the kept windows, or None when it kept none."""
        path = self.path_for(file, variant)
        if not path.is_file():
            return None
        with np.load(path) as z:
            return z["features"] if "features" in z.files else None

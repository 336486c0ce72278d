"""The runtime's stage rules, each written once: ``Pipeline.run``, ``make faces`` and every trainer call these,
so training sees exactly what inference sees.

    decode          probe → sparse frames (+ 16 kHz audio)
    track_faces     RetinaFace on the sampled frames → tracks (+ the main track)
    decode_and_track  both of the above
    track_faces_streamed  both, decoding in chunks and keeping each face's crops instead of the frames (runtime)
    substantial_tracks  the faces whose visual score counts for the clip
    dense_tracks    which tracks get 25 fps windows (main; with a sync check, up to two other large faces)
    dense_windows   those windows, decoded and located
    visual_crop_fn  the crop a spatial detector sees of one face (its registry preprocessing); visual_crops: a track's
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline import media
from pipeline.dense import DenseFaceClip, track_windows
from pipeline.faces import (
    CropFn,
    FaceAnalysis,
    FaceDetection,
    FaceTrack,
    align_face,
    analyse_face_chunks,
    analyse_faces,
)
from pipeline.settings import Settings

MAX_SYNC_CANDIDATES = 2  # besides the main face, the largest other faces that may be the one speaking


@dataclass(frozen=True)
class Decoded:
    """One input after decoding: what it is, its sparse frames (video) and its audio (if any)."""

    info: media.MediaInfo
    sampled: media.SampledFrames | None
    audio: media.AudioTrack | None


@dataclass(frozen=True)
class Tracked:
    decoded: Decoded
    analysis: FaceAnalysis | None  # None: no video, or no face detector


def decode(source: media.MediaSource, settings: Settings, *, info: media.MediaInfo | None = None,
           with_audio: bool = True, sample_fps: float | None = None, max_frames: int | None = None) -> Decoded:
    """Probe (unless ``info`` is given), sample frames at ``SAMPLE_FPS`` and load 16 kHz mono audio."""
    limits = media.Limits.from_settings(settings)
    info = info or media.probe(source, limits)
    sampled = None
    if info.has_video:
        sampled = media.sample_frames(source, info, fps=sample_fps or settings.sample_fps,
                                      max_frames=max_frames or settings.max_sampled_frames,
                                      max_side=settings.max_decode_side, limits=limits)
    audio = None
    if with_audio and info.has_audio:
        audio = media.load_audio(source, info, settings.audio_sample_rate, limits)
    return Decoded(info, sampled, audio)


def track_faces(sampled: media.SampledFrames, face_detector, settings: Settings,
                progress: Callable[[int, int], None] | None = None) -> FaceAnalysis:
    """Faces of every sampled frame, linked into tracks, with the settings' detection threshold and sizes."""
    return analyse_faces(sampled.frames, sampled.timestamps_s, face_detector, scale=sampled.scale,
                         threshold=settings.face_threshold, detect_side=settings.face_detect_side,
                         min_size=settings.face_min_size, batch_size=settings.detect_batch_size, progress=progress)


def decode_and_track(source: media.MediaSource, face_detector, settings: Settings, *, with_audio: bool = True,
                     sample_fps: float | None = None, max_frames: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Tracked:
    decoded = decode(source, settings, with_audio=with_audio, sample_fps=sample_fps, max_frames=max_frames)
    analysis = None
    if decoded.sampled is not None and face_detector is not None:
        analysis = track_faces(decoded.sampled, face_detector, settings, progress)
    return Tracked(decoded, analysis)


def substantial_tracks(analysis: FaceAnalysis) -> list[FaceTrack]:
    """Faces on screen for a while (at least a quarter of the main track, capped at 3 samples): each one's
    visual score counts for the clip, because a swap may target a side character."""
    main = analysis.main_track
    if main is None:
        return []
    return [t for t in analysis.tracks if len(t) >= max(1, min(3, len(main) // 4))]


def score_visual_crops(predict, crops: dict[int, np.ndarray], substantial: list[int], aggregation: str
                       ) -> tuple[float, dict[int, tuple[float, np.ndarray]]]:
    """The visual stage's rule, shared with the trainers that rescore its kept inputs: one batched ``predict`` over
    every face of every track, per-track ``aggregation`` of P(fake), the clip's score the max over the
    ``substantial`` tracks. Returns (clip score, track id -> (track score, per-face P(fake)))."""
    from pipeline.aggregate import aggregate

    ids = list(crops)
    per_track = _per_track(np.asarray(predict(np.concatenate([crops[t] for t in ids])).fake_prob), crops, ids)
    track_scores = {t: (aggregate(probs, aggregation), probs) for t, probs in per_track.items()}
    return max(track_scores[t][0] for t in substantial), track_scores


def _per_track(values: np.ndarray, crops: dict[int, np.ndarray], ids: list[int]) -> dict[int, np.ndarray]:
    """``values`` of the crops of ``ids`` concatenated in that order, split back per track."""
    bounds = np.cumsum([0] + [len(crops[t]) for t in ids])
    return {t: values[a:b] for t, a, b in zip(ids, bounds[:-1], bounds[1:], strict=True)}


def score_mouth_crops(detector, crops: dict[int, np.ndarray], substantial: list[int], size: int, margin: float
                      ) -> tuple[float, dict[int, np.ndarray]]:
    """The mouth stage's rule, shared with the trainer that fills it in from ``make eval``'s kept crops: the clip's
    score is the median blur over every face of the ``substantial`` tracks (aligned ``size`` px crops with
    ``margin``); also each of those tracks' per-face P(fake), for the timeline."""
    from pipeline.faces import face_regions

    box = face_regions(size, margin)["mouth"]
    clip, per_face = detector.score(np.concatenate([crops[t] for t in substantial]), box)
    return clip, _per_track(per_face, crops, substantial)


def dense_tracks(analysis: FaceAnalysis, *, for_sync: bool) -> list[FaceTrack]:
    """The main track; for a lip-sync check also the largest other faces seen at least 3 times (any of them may
    be the one speaking)."""
    main = analysis.main_track
    if main is None:
        return []
    if not for_sync:
        return [main]
    others = sorted((t for t in analysis.tracks if t.track_id != main.track_id and len(t) >= 3),
                    key=lambda t: -len(t) * t.mean_size)
    return [main, *others[:MAX_SYNC_CANDIDATES]]


def dense_windows(source: media.MediaSource, info: media.MediaInfo, analysis: FaceAnalysis, face_detector,
                  settings: Settings, *, for_sync: bool, window_s: float | None = None,
                  max_windows: int | None = None,
                  on_error: Callable[[FaceTrack, media.MediaError], None] | None = None,
                  prepare: Callable[[DenseFaceClip], DenseFaceClip] | None = None) -> list[DenseFaceClip]:
    """25 fps windows of ``dense_tracks``: up to ``MAX_DENSE_WINDOWS`` over the main track, one for the others.
    A track whose window cannot be decoded is skipped (``on_error`` hears why) unless ``on_error`` is None.
    ``prepare`` sees each window as soon as its face is located, before the next one is decoded."""
    limits = media.Limits.from_settings(settings)
    main_id = analysis.main_track_id
    max_windows = max_windows or settings.max_dense_windows
    clips: list[DenseFaceClip] = []
    for track in dense_tracks(analysis, for_sync=for_sync):
        try:
            clips += track_windows(source, info, track, face_detector, window_s=window_s or settings.dense_window_s,
                                   max_windows=max_windows if track.track_id == main_id else 1,
                                   fps=settings.dense_fps, sparse_scale=analysis.scale,
                                   detect_side=settings.dense_detect_side, limits=limits, prepare=prepare)
        except media.MediaError as exc:
            if on_error is None:
                raise
            on_error(track, exc)
    return clips


def visual_crop_fn(crop: str, input_size: int, margin: float) -> CropFn:
    """The crop a spatial detector sees of one face, by its registry preprocessing ``crop``:
    ``aligned``: 5-point aligned face with ``margin`` context (MesoNet);
    ``dfdc_box``: the detection box grown by a third on each side, isotropically resized and centred (DFDC B7)."""
    if crop == "dfdc_box":
        from models.efficientnet_b7 import isotropic_resize, put_to_center

        def dfdc_box(frame: np.ndarray, det: FaceDetection) -> np.ndarray:
            x1, y1, x2, y2 = (int(v) for v in det.box)
            pw, ph = (x2 - x1) // 3, (y2 - y1) // 3
            face = frame[max(y1 - ph, 0) : y2 + ph, max(x1 - pw, 0) : x2 + pw]
            return put_to_center(isotropic_resize(face, input_size), input_size)

        return dfdc_box
    if crop == "aligned":
        return lambda frame, det: align_face(frame, det.landmarks, input_size, margin)
    raise ValueError(f"unknown crop style {crop!r} (aligned, dfdc_box)")


def visual_crops(frames: np.ndarray, track: FaceTrack, crop: str, input_size: int, margin: float) -> np.ndarray:
    """``visual_crop_fn``'s crops of every face of ``track`` (frames indexed by the track's frame indices)."""
    fn = visual_crop_fn(crop, input_size, margin)
    return np.stack([fn(frames[fi], FaceDetection(int(fi), box, float(score), lm)) for fi, box, score, lm
                     in zip(track.frame_indices, track.boxes, track.scores, track.landmarks, strict=True)])


def track_faces_streamed(source: media.MediaSource, info: media.MediaInfo, face_detector, settings: Settings,
                         crops: dict[str, CropFn], on_decode: Callable[[float], None] | None = None,
                         progress: Callable[[int, int], None] | None = None) -> FaceAnalysis:
    """``decode`` + ``track_faces`` without holding the sparse frames: they are decoded in chunks and each
    face keeps only its ``crops`` (what the later stages need of it). ``on_decode`` hears the seconds spent
    decoding, so a caller can time decoding and detection apart."""
    limits = media.Limits.from_settings(settings)
    total, scale, chunks = media.iter_sample_frames(source, info, fps=settings.sample_fps,
                                                    max_frames=settings.max_sampled_frames,
                                                    max_side=settings.max_decode_side, limits=limits)

    def timed():
        while True:
            t0 = time.perf_counter()
            try:
                c = next(chunks)
            except StopIteration:
                return
            finally:
                if on_decode:
                    on_decode(time.perf_counter() - t0)
            yield c.frames, c.timestamps_s

    return analyse_face_chunks(timed(), total, face_detector, scale=scale, threshold=settings.face_threshold,
                               detect_side=settings.face_detect_side, min_size=settings.face_min_size,
                               batch_size=settings.detect_batch_size, progress=progress, crops=crops)


def clip_chunks(clips: list[DenseFaceClip], n_frames: int, size: int, margin: float = 0.3,
                max_chunks: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping ``n_frames`` chunks of aligned RGB face crops, (K, n_frames, size, size, 3), with each
    chunk's start and end time: what a clip-classifier temporal detector (VideoMAE) sees."""
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


# ----------------------------------------------------------------------------------------------------------------
# voice change: the soundtrack's speech windows, each against the rest of the clip's voice
# ----------------------------------------------------------------------------------------------------------------
VOICE_HOP_S = 0.4  # 1.6 s windows every 0.4 s: a 1.5 s splice fills at least one window
VOICE_MIN_SPEECH = 0.75  # share of a window the VAD must call speech (a pause is not another voice)
VOICE_MIN_WINDOWS = 3  # ~2.4 s of speech: fewer windows have no "rest" to be compared with
VOICE_MAX_WINDOWS = 240  # evenly thinned beyond this (a 10 min talk): the cost stays flat
DIGITAL_SILENCE = 1e-5  # RMS of a 20 ms frame below -100 dBFS: padding or an edit, never a microphone's floor


@dataclass(frozen=True)
class VoiceChange:
    """The voice-change stage's result: the clip's P(another voice) and each speech window's."""

    clip: float
    starts_s: np.ndarray
    ends_s: np.ndarray
    window_probs: np.ndarray

    def changed_span(self) -> tuple[float, float]:
        """The run of windows above 0.5 around the most suspicious one (the window itself at least): where the
        other voice speaks."""
        k = int(np.argmax(self.window_probs))
        lo = hi = k
        while lo > 0 and self.window_probs[lo - 1] > 0.5 and self.starts_s[lo - 1] < self.ends_s[lo]:
            lo -= 1
        while hi + 1 < len(self.window_probs) and self.window_probs[hi + 1] > 0.5 \
                and self.starts_s[hi + 1] < self.ends_s[hi]:
            hi += 1
        return float(self.starts_s[lo]), float(self.ends_s[hi])


def voice_windows(samples: np.ndarray, sr: int, segments: list[tuple[float, float]], window: int,
                  hop_s: float = VOICE_HOP_S, min_speech: float = VOICE_MIN_SPEECH,
                  max_windows: int = VOICE_MAX_WINDOWS) -> tuple[np.ndarray, np.ndarray]:
    """(starts in samples, (N, window) windows) of the speech the voice-change measure compares: windows mostly
    inside the VAD's ``segments`` and free of digital silence, thinned evenly to ``max_windows``."""
    samples = np.asarray(samples, np.float32)
    n = samples.shape[0]
    if n < window:
        return np.zeros(0, int), np.zeros((0, window), np.float32)
    starts = np.arange(0, n - window + 1, max(1, int(round(hop_s * sr))))
    speech = np.zeros(n + 1, np.int64)  # running count of speech samples
    mask = np.zeros(n, np.int8)
    for s, e in segments:
        mask[max(0, int(s * sr)):min(n, int(e * sr))] = 1
    speech[1:] = np.cumsum(mask)
    covered = (speech[starts + window] - speech[starts]) / window
    frame = max(1, sr // 50)
    energy = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    f0 = np.arange(0, n - frame + 1, frame)
    silent = np.sqrt((energy[f0 + frame] - energy[f0]) / frame) < DIGITAL_SILENCE
    silent_count = np.concatenate([[0], np.cumsum(silent)])
    first, last = starts // frame, np.minimum((starts + window) // frame, len(silent))
    clean = (silent_count[last] - silent_count[first]) == 0
    starts = starts[(covered >= min_speech) & clean]
    if len(starts) > max_windows:
        starts = starts[np.round(np.linspace(0, len(starts) - 1, max_windows)).astype(int)]
    idx = starts[:, None] + np.arange(window)[None, :]
    return starts, samples[idx]


def score_voice_change(detector, samples: np.ndarray, sr: int, segments: list[tuple[float, float]]
                       ) -> VoiceChange | str:
    """The voice-change stage's rule, shared with the trainer that fills it in for scored rows: every speech
    window's P(another voice) against the rest of the clip, the clip's being its most changed window's. A reason
    (str) when there is too little speech to compare."""
    starts, windows = voice_windows(samples, sr, segments, detector.window_samples)
    if len(starts) < VOICE_MIN_WINDOWS:
        return (f"{len(starts)} window(s) of clear speech; comparing voices needs at least {VOICE_MIN_WINDOWS} "
                f"(~{VOICE_MIN_WINDOWS * VOICE_HOP_S + detector.window_samples / sr - VOICE_HOP_S:.1f} s of speech)")
    probs = np.asarray(detector.predict(windows).fake_prob, np.float64)
    return VoiceChange(float(probs.max()), starts / sr, (starts + detector.window_samples) / sr, probs)

"""Lip sync: does the speaking face's mouth move with the audio?

Two estimators share one contract (``SyncEstimator.analyse``):

* ``"head"`` (sync:lrasd-head, the default): the head of ``models/sync_head.py`` correlates canonical
  projections of FROZEN LR-ASD audio and visual embeddings, fitted on the train split's real clips, and
  adds the motion curve below with the checkpoint's weight. On the validation split it recovers the
  offset of 64 % of real clips (motion alone: 36 %) and separates real from +-0.4 s shifted audio with
  AUC 0.92 (motion: 0.81); see models/checkpoints/sync_head.md.
* ``"motion"`` (sync:motion-envelope): training-free. Mouth-region motion of the aligned face against
  the audio's speech-band energy, both at 25 Hz; the offset curve is their correlation.

Either way the clip's offset curve c(d), d = -max_offset..+max_offset video frames (positive d = audio
late), gives the best offset, a peak-to-sidelobe confidence, and ``lip_sync_error``: a logistic of the
curves' shapes (``calibration_input``) calibrated on real clips against shifted and swapped audio. It
measures audio/lip MISMATCH (dubbing, offsets, foreign audio). Generated talking heads are driven by their
audio and usually score as in sync.

LR-ASD (when loaded) also decides WHO speaks: the track with the highest mean speaking logit. The
SPEC measured that its logit barely reacts to offsets or foreign audio, which is why it only picks the
track and never scores sync itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.signal
from scipy.ndimage import uniform_filter1d

from pipeline.audio import SpeechActivity
from pipeline.dense import DenseFaceClip
from pipeline.media import AudioTrack

logger = logging.getLogger(__name__)

FPS = 25.0
SAMPLE_RATE = 16000
HOP = 640  # audio samples per 25 fps video frame at 16 kHz
MFCC_PER_FRAME = 4
MIN_FRAMES = 50  # 2 s of usable 25 fps frames per track
MIN_WINDOW_FRAMES = 13  # shorter windows are mostly encoder edge
MIN_DETECTION_RATE = 0.5
MIN_SPEECH_S = 1.0
DITHER = 10 ** (-70 / 20)  # amplitude of the noise added before LR-ASD's MFCC
ENERGY_RANGE = 50 / 10 * np.log(10)  # 50 dB in natural-log power
NEAR_ZERO = 1  # |offset| <= 1 frame (40 ms) is "in sync": below what viewers notice

# Aligned face for the motion baseline: 96 px with context; the mouth region's rows and columns in it.
MOUTH_SIZE = 96
MOUTH_MARGIN = 0.5
MOUTH_ROWS = slice(62, 86)
MOUTH_COLS = slice(34, 62)
SPEECH_BINS = slice(12, 137)  # 300-3400 Hz at 25 Hz per bin

METHOD_NAMES = {"head": "sync:lrasd-head", "motion": "sync:motion-envelope"}
DEFAULT_METHOD = "head"
ESTIMATOR_NAME = METHOD_NAMES[DEFAULT_METHOD]

# Logistic calibration of the motion baseline: (bias, w_near, w_margin) on (c(near 0), peak - c(near 0)),
# fitted on the train split's real clips against their shifted and swapped copies (logged by
# ``python -m training.train_sync``; the head's own calibration lives in its checkpoint).
MOTION_CALIBRATION = (-0.037, -2.83, 5.605)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncResult:
    lip_sync_error: float  # [0, 1]: probability-like score that audio and lips do NOT match
    best_offset_frames: int  # audio lag in 25 fps frames (positive = audio late)
    offset_confidence: float  # peak-to-sidelobe ratio of the offset curve
    track_id: int
    window_starts_s: np.ndarray
    window_ends_s: np.ndarray
    window_error: np.ndarray
    speaking_by_track: dict[int, float] = field(default_factory=dict)
    method: str = ESTIMATOR_NAME
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # c(d) for d = -max_offset..max_offset
    speaking_logit: float | None = None
    # (times, mouth movement, speech energy) at 25 Hz over the longest analysed window: the picture of the check
    trace: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def offset_s(self) -> float:
        return self.best_offset_frames / FPS

    def extras(self) -> tuple[tuple[str, float | int | str | None], ...]:
        return (
            ("best_offset_frames", int(self.best_offset_frames)),
            ("offset_s", float(self.offset_s)),
            ("offset_confidence", float(self.offset_confidence)),
            ("speaking_logit", None if self.speaking_logit is None else float(self.speaking_logit)),
            ("track_id", int(self.track_id)),
            ("method", self.method),
        )


@dataclass(frozen=True)
class SyncNotApplicable:
    reason: str
    speaking_by_track: dict[int, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Inputs: what the estimator needs from a dense clip (eval and training cache these)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackWindow:
    """One dense window of one face track, reduced to what the estimators look at."""

    track_id: int
    timestamps_s: np.ndarray  # (T,) on the media timeline, constant rate
    detected: np.ndarray  # (T,) bool
    mouth: np.ndarray  # (T, MOUTH_SIZE, MOUTH_SIZE) uint8 aligned grey face (motion baseline)
    faces: np.ndarray | None  # (T, 112, 112) uint8 LR-ASD crops, None without LR-ASD
    visual: np.ndarray | None = None  # (T, 128) LR-ASD visual embeddings, computed lazily

    def __len__(self) -> int:
        return int(self.timestamps_s.shape[0])

    @property
    def start_s(self) -> float:
        return float(self.timestamps_s[0])

    @property
    def detection_rate(self) -> float:
        return float(np.mean(self.detected)) if len(self) else 0.0

    def slice(self, start: int, stop: int) -> TrackWindow:
        def cut(x):
            return None if x is None else x[start:stop]

        return TrackWindow(self.track_id, self.timestamps_s[start:stop], self.detected[start:stop],
                           self.mouth[start:stop], cut(self.faces), cut(self.visual))


def prepare_window(clip: DenseFaceClip, with_faces: bool = True, lrasd=None) -> TrackWindow:
    """Crops of one dense clip: the aligned face for the baseline and, with LR-ASD, its demo crops; given the
    LR-ASD front-end also their visual embeddings over the whole window (shared with the temporal head)."""
    from models.lrasd import clip_embeddings, clip_faces

    faces = clip_faces(clip) if (with_faces or lrasd is not None) and len(clip) else None
    visual = clip_embeddings(lrasd, clip)[1] if lrasd is not None and len(clip) else None
    return TrackWindow(clip.track_id, np.asarray(clip.timestamps_s, np.float64), np.asarray(clip.detected, bool),
                       clip.aligned_gray(MOUTH_SIZE, MOUTH_MARGIN), faces, visual)


def audio_frames(audio: AudioTrack, start_s: float, n_frames: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """16 kHz samples for video frames -pad .. n_frames+pad from ``start_s`` (zeros outside the audio), plus
    240 trailing samples so the MFCC has exactly 4 frames per video frame; and per frame whether the audio
    really covers it."""
    samples = _resampled(audio)
    first = int(round(start_s * SAMPLE_RATE)) - pad * HOP
    n = (n_frames + 2 * pad) * HOP + 240
    out = np.zeros(n, np.float32)
    lo, hi = max(first, 0), min(first + n, samples.shape[0])
    if hi > lo:
        out[lo - first : hi - first] = samples[lo:hi]
    starts = first + np.arange(n_frames + 2 * pad) * HOP
    covered = (starts >= 0) & (starts + HOP <= samples.shape[0])
    return out, covered


def _resampled(audio: AudioTrack) -> np.ndarray:
    if audio.sample_rate == SAMPLE_RATE:
        return np.asarray(audio.samples, np.float32)
    from math import gcd

    g = gcd(int(audio.sample_rate), SAMPLE_RATE)
    return scipy.signal.resample_poly(audio.samples, SAMPLE_RATE // g, audio.sample_rate // g).astype(np.float32)


def visual_embeddings(lrasd, faces: np.ndarray) -> np.ndarray:
    """Frozen LR-ASD visual embeddings (T, 128) of one window's crops.

    The window is padded with copies of its first and last face for the encoder's temporal reach: its own
    zero padding makes edge frames look like nothing a face does, and such artefacts line up with audio
    edges at one particular offset. The audio input is a dummy; the encoders are separate."""
    return lrasd.visual_embeddings(faces)[1]


def audio_embeddings(lrasd, samples: np.ndarray) -> np.ndarray:
    """Frozen LR-ASD audio embeddings (N, 128), one per 640 samples, of a slice made by ``audio_frames``.

    A fixed -70 dBFS dither goes in first: the MFCC of digital silence (padding, or a clip that starts
    muted) is log(eps), far outside anything the encoder saw, and its edges would dominate the curve."""
    import torch

    from models.base import inference
    from models.lrasd import mfcc

    dither = np.random.default_rng(0).standard_normal(samples.shape[0]).astype(np.float32) * DITHER
    feats = mfcc(samples + dither)
    n = len(feats) // MFCC_PER_FRAME
    x = torch.from_numpy(np.ascontiguousarray(feats[: MFCC_PER_FRAME * n], np.float32))[None].to(lrasd.device)
    with inference(lrasd.device, fp16=False):
        return lrasd.model.embed_audio(x)[0].float().cpu().numpy()


def speaking_logits(lrasd, audio: np.ndarray, visual: np.ndarray) -> np.ndarray:
    """LR-ASD logit[:, 1] per frame (T,) from frame-aligned audio and visual embeddings (T, 128)."""
    import torch

    from models.base import inference

    m = lrasd.model
    with inference(lrasd.device, fp16=False):
        a = torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None].to(lrasd.device)
        v = torch.from_numpy(np.ascontiguousarray(visual, np.float32))[None].to(lrasd.device)
        return m.lossAV.FC(m.backend(a, v))[0, :, 1].float().cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Motion baseline features (25 Hz)
# ----------------------------------------------------------------------------------------------
def mouth_motion(mouth: np.ndarray) -> np.ndarray:
    """(T,) mouth motion: mean absolute frame difference in the mouth region, over 3 frames (a frame
    difference is noisier than the articulation it follows)."""
    roi = mouth[:, MOUTH_ROWS, MOUTH_COLS].astype(np.float32)
    if len(roi) < 2:
        return np.zeros(len(roi))
    d = np.abs(np.diff(roi, axis=0)).mean(axis=(1, 2))
    return uniform_filter1d(np.concatenate([d[:1], d]).astype(np.float64), 3, mode="nearest")


def speech_energy(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames,) log energy in the speech band (300-3400 Hz) of each 640-sample (40 ms) frame of a slice
    made by ``audio_frames``: the band keeps voicing and drops hum and hiss that do not move the lips."""
    x = samples[: n_frames * HOP].astype(np.float64).reshape(n_frames, HOP)
    spec = np.abs(np.fft.rfft(x * np.hanning(HOP), axis=1)) ** 2
    e = np.log(spec[:, SPEECH_BINS].sum(axis=1) + 1e-6)
    # floor 50 dB under the loudest frame: digital silence would otherwise be an outlier that sets the curve
    return np.maximum(e, e.max() - ENERGY_RANGE) if e.size else e


# ----------------------------------------------------------------------------------------------
# Offset curves
# ----------------------------------------------------------------------------------------------
def curve_summary(curve: np.ndarray, max_offset: int) -> tuple[int, float, float, float]:
    """(best offset, peak-to-sidelobe ratio, c(near 0), peak - c(near 0)) of an offset curve."""
    k = int(np.argmax(curve))
    d = np.arange(-max_offset, max_offset + 1)
    side = curve[np.abs(d - d[k]) > 2]
    psr = float((curve[k] - side.mean()) / (side.std() + 1e-6)) if side.size > 1 else 0.0
    near = float(curve[np.abs(d) <= NEAR_ZERO].max())
    return int(d[k]), psr, near, float(curve[k] - near)


def curve_features(curve: np.ndarray, max_offset: int, full: bool = False) -> tuple[float, ...]:
    """What the clip-level calibration reads from an offset curve: (c(near 0), peak - c(near 0)), and with
    ``full`` also the peak-to-sidelobe ratio, |best offset| / max_offset and the curve's spread (a flat curve:
    no offset makes these lips and this voice agree, as with another person's speech)."""
    best, psr, near, margin = curve_summary(curve, max_offset)
    if not full:
        return near, margin
    return near, margin, psr, abs(best) / max_offset, float(np.std(curve))


# Calibration feature sets, by the number of weights that reads them: the combined curve's (c(near 0), margin),
# its five full features, or ("dual") the five of the head's own curve and the five of the motion curve apart.
# Apart, a shifted voice that one curve still half-follows and the other does not keeps both shapes.
FEATURE_SETS = {"near_margin": 2, "full": 5, "dual": 10}


def calibration_input(curve: np.ndarray, max_offset: int, n_weights: int,
                      parts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The features a calibration with ``n_weights`` weights reads (``FEATURE_SETS``); ``parts`` = (head curve,
    motion curve), needed by the dual set."""
    if n_weights == FEATURE_SETS["dual"]:
        if parts is None or parts[0] is None:
            raise ValueError("a dual calibration needs the head's and the motion's curves apart")
        return np.asarray(curve_features(parts[0], max_offset, True) + curve_features(parts[1], max_offset, True))
    if n_weights not in (FEATURE_SETS["near_margin"], FEATURE_SETS["full"]):
        raise ValueError(f"a sync calibration has 2, 5 or 10 weights, not {n_weights}")
    return np.asarray(curve_features(curve, max_offset, full=n_weights == FEATURE_SETS["full"]))


def combined_curve(head: np.ndarray, motion: np.ndarray, motion_weight: float) -> np.ndarray:
    """The head method's offset curve: the head's plus the motion curve times the checkpoint's motion weight.
    Pooling is linear, so this equals pooling the combined frame scores."""
    return head + float(motion_weight) * motion


def calibrated_error(curve: np.ndarray, max_offset: int, calibration,
                     parts: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Logistic of the curve's features: ``calibration`` = (bias, weights...), 2, 5 or 10 weights
    (``calibration_input``)."""
    cal = np.asarray([float(x) for x in calibration])
    x = calibration_input(curve, max_offset, cal.size - 1, parts)
    return float(1.0 / (1.0 + np.exp(-(cal[0] + cal[1:] @ x))))


# ----------------------------------------------------------------------------------------------
# Estimator
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedWindow:
    """One usable window with its audio: the pieces both methods and the speaker choice need."""

    window: TrackWindow
    samples: np.ndarray  # audio slice for frames -m .. T+m (+240 samples)
    covered: np.ndarray  # (T + 2m,) bool: the audio really covers that frame
    audio_emb: np.ndarray | None  # (T + 2m, 128) LR-ASD audio embeddings


class SyncEstimator:
    """Finds the speaking face and measures how well its lips follow the audio (see the module doc)."""

    def __init__(self, lrasd=None, head=None, max_offset: int = 15, method: str | None = None, models=None):
        self.lrasd = lrasd
        self.models = models  # the registry's loaded lip-sync detector (its weights, for the report)
        self.max_offset = int(max_offset)
        method = method or DEFAULT_METHOD
        if method not in METHOD_NAMES:
            raise ValueError(f"unknown sync method {method!r}; choose one of {sorted(METHOD_NAMES)}")
        if method == "head" and lrasd is None:
            logger.warning("the lip-sync head needs LR-ASD embeddings; using the motion baseline")
            method = "motion"
        if method == "head" and head is None:
            from models.sync_head import load
            from models.weights import WeightsNotFoundError

            try:
                head = load(device=lrasd.device)
            except (WeightsNotFoundError, OSError, RuntimeError, KeyError) as exc:  # a broken install still runs
                logger.warning("lip-sync head unavailable (%s); using the motion baseline", exc)
                method = "motion"
        self.head = head
        self.method = method
        self.name = METHOD_NAMES[method]

    @property
    def weights_infos(self) -> tuple:
        return tuple(getattr(self.models, "weights_infos", ()))

    # -- public ------------------------------------------------------------------------------------
    def analyse(self, clips: list[DenseFaceClip], audio: AudioTrack | None, main_track_id: int | None,
                speech: SpeechActivity | None = None) -> SyncResult | SyncNotApplicable:
        """``speech``: the speech already found in the whole of ``audio`` (the audio stage's VAD), if any."""
        windows = [prepare_window(c, lrasd=self.lrasd) for c in clips if len(c)]
        return self.analyse_windows(windows, audio, main_track_id, speech)

    def analyse_windows(self, windows: list[TrackWindow], audio: AudioTrack | None, main_track_id: int | None,
                        speech: SpeechActivity | None = None) -> SyncResult | SyncNotApplicable:
        if audio is None or audio.samples.size == 0:
            return SyncNotApplicable("no audio track")
        if not windows:
            return SyncNotApplicable("no face visible long enough for a lip-sync check")
        by_track, reasons = self.prepare(windows, audio)
        if not by_track:
            key = main_track_id if main_track_id in reasons else next(iter(reasons))
            return SyncNotApplicable(reasons[key])

        speech_s = self._speech_seconds([p for ps in by_track.values() for p in ps], audio, speech)
        if speech_s < MIN_SPEECH_S:
            return SyncNotApplicable(f"no speech to compare the lips with: {speech_s:.1f} s of speech in the "
                                     "analysed video windows")

        chosen = self.select_speaker(by_track, main_track_id, reasons)
        if isinstance(chosen, SyncNotApplicable):
            return chosen
        track, speaking = chosen
        return self._measure(track, by_track[track], speaking)

    def select_speaker(self, by_track: dict[int, list[PreparedWindow]], main_track_id: int | None,
                       reasons: dict[int, str]) -> tuple[int, dict[int, float]] | SyncNotApplicable:
        """The track that speaks most by LR-ASD (its mean logit must be > 0), else the main track."""
        speaking: dict[int, float] = {}
        if self.lrasd is None:
            if main_track_id not in by_track:
                return SyncNotApplicable(reasons.get(main_track_id, "the main face is not in the analysed windows"))
            return main_track_id, speaking
        for tid, ps in by_track.items():
            speaking[tid] = float(np.concatenate([self._speaking(p) for p in ps]).mean())
        track = max(speaking, key=speaking.get)
        if speaking[track] <= 0:
            return SyncNotApplicable(
                "speech is heard but no visible face is speaking (voice-over or off-screen speaker)", speaking)
        return track, speaking

    # -- steps -------------------------------------------------------------------------------------
    def prepare(self, windows: list[TrackWindow], audio: AudioTrack) -> tuple[dict[int, list[PreparedWindow]],
                                                                                dict[int, str]]:
        """Usable windows per track with their audio, and for each unusable track the reason."""
        by_track: dict[int, list[PreparedWindow]] = {}
        reasons: dict[int, str] = {}
        for tid in dict.fromkeys(w.track_id for w in windows):
            prepared, reason = self._usable(tid, [w for w in windows if w.track_id == tid], audio)
            if prepared:
                by_track[tid] = prepared
            else:
                reasons[tid] = reason
        return by_track, reasons

    def _usable(self, tid: int, windows: list[TrackWindow], audio: AudioTrack) -> tuple[list[PreparedWindow], str]:
        """The track's windows trimmed to the audio, or why none is usable."""
        out: list[PreparedWindow] = []
        detected = sum(w.detected.sum() for w in windows)
        total = sum(len(w) for w in windows)
        if total and detected / total < MIN_DETECTION_RATE:
            return [], (f"the face detector missed most frames of the face ({100 * detected / total:.0f} % found), "
                        "too few to follow the lips")
        m = self.max_offset
        outside = 0
        for w in windows:
            _, covered = audio_frames(audio, w.start_s, len(w), 0)
            idx = np.flatnonzero(covered)
            outside += len(w) - idx.size
            if idx.size < MIN_WINDOW_FRAMES or w.detection_rate < MIN_DETECTION_RATE:
                continue
            w = w.slice(int(idx[0]), int(idx[-1]) + 1)
            samples, cov = audio_frames(audio, w.start_s, len(w), m)
            if w.visual is None and self.lrasd is not None and w.faces is not None:
                w = TrackWindow(w.track_id, w.timestamps_s, w.detected, w.mouth, w.faces,
                                visual_embeddings(self.lrasd, w.faces))
            emb = audio_embeddings(self.lrasd, samples) if self.lrasd is not None else None
            out.append(PreparedWindow(w, samples, cov, emb))
        frames = sum(len(p.window) for p in out)
        if frames >= MIN_FRAMES:
            return out, ""
        if outside > total / 2:
            return [], "the audio does not cover the video window where the face is visible"
        return [], (f"the face is visible with sound for only {frames / FPS:.1f} s; a lip-sync check needs "
                    f"{MIN_FRAMES / FPS:.0f} s")

    def _speech_seconds(self, prepared: list[PreparedWindow], audio: AudioTrack,
                        speech: SpeechActivity | None = None) -> float:
        """Seconds of speech inside the analysed windows: from ``speech`` (the whole track's) when given, else
        by running the VAD (silero, energy fallback) on the windows' audio."""
        from pipeline.audio import detect_speech

        lo = min(p.window.start_s for p in prepared)
        hi = max(p.window.start_s + len(p.window) / FPS for p in prepared)
        if speech is not None:  # the same timeline as the audio samples: shift it to the windows' start
            segs = [(s - lo, e - lo) for s, e in speech.segments if e > lo and s < hi]
            activity = SpeechActivity(segs, sum(e - s for s, e in segs), speech.method)
        else:
            samples, _ = audio_frames(audio, lo, int(np.ceil((hi - lo) * FPS)), 0)
            activity = detect_speech(samples, SAMPLE_RATE)
        inside = np.zeros(int(np.ceil((hi - lo) * FPS)), bool)
        for p in prepared:
            k = int(round((p.window.start_s - lo) * FPS))
            inside[k : k + len(p.window)] = True
        speech = np.zeros_like(inside)
        for s, e in activity.segments:
            speech[int(s * FPS) : int(np.ceil(e * FPS))] = True
        return float((speech & inside).sum() / FPS)

    def _speaking(self, p: PreparedWindow) -> np.ndarray:
        m = self.max_offset
        return speaking_logits(self.lrasd, p.audio_emb[m : m + len(p.window)], p.window.visual)

    def measure_track(self, windows: list[TrackWindow], audio: AudioTrack,
                      track_id: int) -> SyncResult | SyncNotApplicable:
        """The offset curve of one given track, without the speech and speaker checks (tests, evaluation)."""
        by_track, reasons = self.prepare([w for w in windows if w.track_id == track_id], audio)
        if track_id not in by_track:
            return SyncNotApplicable(reasons.get(track_id, "no window of this track"))
        return self._measure(track_id, by_track[track_id], {})

    def _measure(self, track: int, prepared: list[PreparedWindow], speaking: dict[int, float]) -> SyncResult:
        m = self.max_offset
        # per window: frame-level scores of each curve (T, 2m+1) and the pairs that exist (audio covers t + d)
        parts, masks = [], []
        for p in prepared:
            s, valid = self.frame_parts(p)
            parts.append(s)
            masks.append(valid)
        pooled = self._pool(parts, masks)
        curve = self.combine(pooled)
        best, psr, _, _ = curve_summary(curve, m)
        error = self.error(pooled)
        starts, ends, errs = [], [], []
        for p, s, valid in zip(prepared, parts, masks, strict=True):
            for a, b in _sub_windows(len(p.window)):
                starts.append(p.window.timestamps_s[a])
                ends.append(p.window.timestamps_s[b - 1] + 1.0 / FPS)
                errs.append(self.error(self._pool([{k: x[a:b] for k, x in s.items()}], [valid[a:b]])))
        longest = max(prepared, key=lambda p: len(p.window))
        trace = (longest.window.timestamps_s, mouth_motion(longest.window.mouth),
                 speech_energy(longest.samples[m * HOP :], len(longest.window)))
        return SyncResult(error, best, psr, track, np.asarray(starts), np.asarray(ends), np.asarray(errs),
                          speaking, self.name, curve, speaking.get(track), trace)

    @staticmethod
    def _pool(parts: list[dict[str, np.ndarray]], masks: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {k: pool_curve([s[k] for s in parts], masks) for k in parts[0]}

    @property
    def calibration(self):
        if self.method == "head":
            return self.head.calibration.tolist()
        return MOTION_CALIBRATION

    def combine(self, curves: dict[str, np.ndarray]) -> np.ndarray:
        """The offset curve: ``combined_curve`` with the checkpoint's weight (the motion method: its curve)."""
        if self.method == "motion":
            return curves["motion"]
        return combined_curve(curves["head"], curves["motion"], self.head.motion_weight)

    def error(self, curves: dict[str, np.ndarray]) -> float:
        """The calibrated lip-sync error of pooled curves (``frame_parts`` pooled by ``pool_curve``)."""
        return calibrated_error(self.combine(curves), self.max_offset, self.calibration,
                                (curves.get("head"), curves["motion"]))

    def frame_parts(self, p: PreparedWindow) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per-frame agreement of lips and audio at each offset, (T, 2m+1) per curve ("motion": ``motion_scores``;
        with the head also "head": ``head_scores``), and which entries exist. Averaged over frames, each gives
        its offset curve; ``combine`` makes the clip's curve of them."""
        valid = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(p.covered, len(p.window)).T)
        parts = {"motion": self.motion_scores(p)}
        if self.method == "head":
            parts["head"] = self.head_scores(p)
        return parts, valid

    def motion_scores(self, p: PreparedWindow) -> np.ndarray:
        """Products of the z-scored mouth motion at t and speech-band energy at t + d: their mean over frames
        is the correlation at offset d."""
        m = self.max_offset
        t = len(p.window)
        v = _zscore(mouth_motion(p.window.mouth))
        e = _zscore(speech_energy(p.samples, t + 2 * m), p.covered)
        return v[:, None] * np.lib.stride_tricks.sliding_window_view(e, t).T

    def head_scores(self, p: PreparedWindow) -> np.ndarray:
        """The head's per-frame products of LR-ASD codes (see models/sync_head.py)."""
        import torch

        dev = self.head.calibration.device
        with torch.inference_mode():
            a = torch.from_numpy(np.ascontiguousarray(p.audio_emb, np.float32))[None].to(dev)
            vis = torch.from_numpy(np.ascontiguousarray(p.window.visual, np.float32))[None].to(dev)
            cov = torch.from_numpy(p.covered)[None].to(dev)
            return self.head.similarities(a, vis, self.max_offset, cov)[0].double().cpu().numpy()


def _zscore(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x, np.float64)
    ref = x if mask is None else x[mask]
    if ref.size < 2:
        return np.zeros_like(x)
    return (x - ref.mean()) / (ref.std() + 1e-8)


def pool_curve(scores: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Mean over all existing (frame, offset) entries, per offset."""
    num = sum((s * v).sum(axis=0) for s, v in zip(scores, masks, strict=True))
    den = sum(v.sum(axis=0) for v in masks)
    return np.asarray(num / np.maximum(den, 1), np.float64)


def _sub_windows(n: int, size: int = 100, hop: int = 50) -> list[tuple[int, int]]:
    """4 s pieces every 2 s for the timeline (one piece when the window is short)."""
    if n <= size:
        return [(0, n)]
    starts = list(range(0, n - size + 1, hop))
    if starts[-1] + size < n:
        starts.append(n - size)
    return [(a, a + size) for a in starts]

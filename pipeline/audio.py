"""From a 16 kHz mono waveform to per-window synthetic-speech scores.

Detectors take fixed-length arrays only; this module decides *what* they see:
  * ``detect_speech``: silero-vad (bundled with the ``silero_vad`` package, runs offline), energy fallback;
  * ``trim_silence``: cut leading/trailing non-speech (fake demos often start with silence, a shortcut
    a detector must not learn to rely on);
  * ``make_windows``: 50 %-overlap windows plus one end-aligned window; short audio is tiled, never
    zero-padded (AASIST never saw zero padding);
  * ``score_audio``: all of the above and one batched ``detector.predict`` call, with timestamps in
    the original file's timeline.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
AASIST_WINDOW = 64600
MIN_CLIP_S = 1.0


# --------------------------------------------------------------------------- windows


def fix_length(wave: np.ndarray, n: int = AASIST_WINDOW) -> np.ndarray:
    """The first ``n`` samples, or a short clip repeated back to back and cut to ``n`` (AASIST SPEC 2)."""
    wave = np.asarray(wave)
    if wave.ndim != 1 or wave.shape[0] == 0:
        raise ValueError(f"expected a non-empty 1-D waveform, got shape {wave.shape}")
    if wave.shape[0] >= n:
        return wave[:n]
    return np.tile(wave, n // wave.shape[0] + 1)[:n]


@dataclass(frozen=True, eq=False)
class AudioWindows:
    windows: np.ndarray  # (N, window) float32
    starts_s: np.ndarray  # (N,) float64, relative to the waveform given to make_windows
    ends_s: np.ndarray  # (N,) float64; a tiled short clip ends at its real end, not at start + window

    def __len__(self) -> int:
        return int(self.windows.shape[0])


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start samples: every ``hop``, plus one final window flush with the end so the tail is covered."""
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def make_windows(
    wave: np.ndarray, sr: int = SAMPLE_RATE, window: int = AASIST_WINDOW, hop: int | None = None
) -> AudioWindows:
    """Cut ``wave`` into (N, window) float32 windows; ``hop`` defaults to half a window (50 % overlap)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.shape[0] == 0:
        raise ValueError(f"expected a non-empty 1-D waveform, got shape {wave.shape}")
    hop = window // 2 if hop is None else int(hop)
    if hop <= 0 or window <= 0:
        raise ValueError(f"window ({window}) and hop ({hop}) must be positive")
    n = wave.shape[0]
    starts = np.asarray(window_starts(n, window, hop), dtype=np.int64)
    if n < window:
        windows = fix_length(wave, window)[None, :]
    else:
        windows = np.stack([wave[s : s + window] for s in starts])
    ends = np.minimum(starts + window, n)
    return AudioWindows(
        windows=np.ascontiguousarray(windows, dtype=np.float32),
        starts_s=starts.astype(np.float64) / sr,
        ends_s=ends.astype(np.float64) / sr,
    )


# --------------------------------------------------------------------------- speech activity


@dataclass(frozen=True)
class SpeechActivity:
    segments: list[tuple[float, float]]  # (start_s, end_s), sorted, non-overlapping
    speech_seconds: float
    method: str  # "silero-vad" or "energy"


_VAD_LOCK = threading.Lock()  # the silero JIT model carries recurrent state: one caller at a time
_VAD_MODEL: Any = None
_VAD_FAILED: str | None = None


def _silero() -> tuple[Any, Any]:
    """(model, get_speech_timestamps), loaded once. ``silero_vad`` ships its model inside the package,
    so no network is needed. Raises if it cannot be loaded (the caller falls back to energy)."""
    global _VAD_MODEL, _VAD_FAILED
    if _VAD_MODEL is None and _VAD_FAILED is None:
        import torch

        threads = torch.get_num_threads()
        try:
            with warnings.catch_warnings():  # silero's loader uses deprecated importlib/jit calls
                warnings.simplefilter("ignore", DeprecationWarning)
                from silero_vad import get_speech_timestamps, load_silero_vad

                _VAD_MODEL = (load_silero_vad(), get_speech_timestamps)
        except Exception as exc:  # broken install: fall back to energy, and say why only once
            _VAD_FAILED = f"{type(exc).__name__}: {exc}"
            logger.warning("silero-vad unavailable (%s); using the energy-based speech detector", _VAD_FAILED)
        finally:
            # importing silero_vad calls torch.set_num_threads(1) process-wide, which would slow every model
            torch.set_num_threads(threads)
    if _VAD_MODEL is None:
        raise RuntimeError(f"silero-vad unavailable ({_VAD_FAILED})")
    return _VAD_MODEL


def _resample(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return wave
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr), int(target))
    return resample_poly(wave, target // g, sr // g).astype(np.float32)


def _silero_segments(wave: np.ndarray, sr: int) -> list[tuple[float, float]]:
    import torch

    model, get_speech_timestamps = _silero()
    wave16 = np.ascontiguousarray(_resample(wave, sr, SAMPLE_RATE), dtype=np.float32)
    with _VAD_LOCK, torch.inference_mode():
        # The VAD runs ~19k tiny 32 ms steps per 10 min; with >1 intra-op thread the per-step thread
        # hand-off dominates (measured 10-20x slower on 2 loaded cores), so run it single-threaded.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            stamps = get_speech_timestamps(torch.from_numpy(wave16), model, sampling_rate=SAMPLE_RATE)
        finally:
            torch.set_num_threads(threads)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def energy_segments(
    wave: np.ndarray,
    sr: int = SAMPLE_RATE,
    frame_s: float = 0.03,
    hop_s: float = 0.01,
    floor_db: float = -50.0,
    range_db: float = 35.0,
    merge_gap_s: float = 0.3,
    min_len_s: float = 0.1,
) -> list[tuple[float, float]]:
    """Fallback VAD: frames louder than max(floor_db, loudest - range_db) dBFS, short gaps bridged."""
    frame, hop = max(1, int(frame_s * sr)), max(1, int(hop_s * sr))
    if wave.shape[0] < frame:
        return []
    # frame energies from a running sum: no (frames, frame) matrix for long recordings
    csum = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    starts = np.arange(0, wave.shape[0] - frame + 1, hop)
    db = 10.0 * np.log10(np.maximum(csum[starts + frame] - csum[starts], 0.0) / frame + 1e-12)
    active = db > max(floor_db, float(db.max()) - range_db)
    segments: list[list[float]] = []
    for i in np.flatnonzero(active):
        start, end = i * hop / sr, (i * hop + frame) / sr
        if segments and start - segments[-1][1] <= merge_gap_s:
            segments[-1][1] = end
        else:
            segments.append([start, end])
    return [(float(s), float(e)) for s, e in segments if e - s >= min_len_s]


def detect_speech(wave: np.ndarray, sr: int = SAMPLE_RATE) -> SpeechActivity:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {wave.shape}")
    try:
        segments, method = _silero_segments(wave, sr), "silero-vad"
    except Exception as exc:
        if _VAD_FAILED is None:  # an unavailable VAD was already reported once
            logger.warning("silero-vad failed (%s); using the energy-based speech detector", exc)
        segments, method = energy_segments(wave, sr), "energy"
    return SpeechActivity(segments=segments, speech_seconds=float(sum(e - s for s, e in segments)), method=method)


def speech_span(activity: SpeechActivity, sr: int, n_samples: int) -> tuple[int, int]:
    """Sample range [first speech start, last speech end) clipped to the waveform; (0, 0) with no speech."""
    if not activity.segments:
        return 0, 0
    start = max(0, int(np.floor(activity.segments[0][0] * sr)))
    end = min(n_samples, int(np.ceil(activity.segments[-1][1] * sr)))
    return start, max(start, end)


def trim_silence(wave: np.ndarray, sr: int, activity: SpeechActivity) -> np.ndarray:
    """The waveform from the first to the last detected speech (empty when there is none)."""
    start, end = speech_span(activity, sr, len(wave))
    return np.asarray(wave)[start:end]


# --------------------------------------------------------------------------- scoring


class AudioDetector(Protocol):
    window_samples: int

    def predict(self, windows: np.ndarray) -> Any: ...  # -> models.base.Scores


@dataclass(frozen=True)
class NotApplicable:
    reason: str
    speech_seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class AudioResult:
    clip_fake_prob: float  # mean of the window probabilities
    window_starts_s: np.ndarray  # (N,) seconds in the ORIGINAL file's timeline
    window_ends_s: np.ndarray
    window_fake_prob: np.ndarray  # (N,)
    window_logit: np.ndarray  # (N,)
    speech_seconds: float
    vad_method: str = ""
    speech_segments: list[tuple[float, float]] = field(default_factory=list)
    windows: np.ndarray | None = field(default=None, repr=False)  # (N, window) what the detector was fed
    # (N, d) what a detector that reads the speech around its windows made of them, before its head
    window_features: np.ndarray | None = field(default=None, repr=False)

    @property
    def max_window(self) -> int:
        """Index of the most fake-looking window, for localisation."""
        return int(np.argmax(self.window_fake_prob))


def score_audio(
    detector: AudioDetector,
    wave: np.ndarray,
    sr: int = SAMPLE_RATE,
    min_speech_s: float = 1.0,
    hop: int | None = None,
    min_clip_s: float = MIN_CLIP_S,
    activity: SpeechActivity | None = None,
    max_windows: int | None = None,
) -> AudioResult | NotApplicable:
    """Score the speech part of ``wave`` with ``detector`` (anything with ``window_samples`` and ``predict``).

    ``wave`` is resampled to the detector's ``sample_rate`` (default 16 kHz) when ``sr`` differs.
    ``hop`` is in samples, default half a window. ``max_windows`` caps the cost on long recordings: the
    windows kept are spread evenly over the speech (the timeline then has gaps, the clip score does not).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {wave.shape}")
    duration = wave.shape[0] / sr
    if duration < min_clip_s:
        return NotApplicable(reason=f"audio too short ({duration:.2f} s < {min_clip_s:.1f} s)")
    target_sr = int(getattr(detector, "sample_rate", SAMPLE_RATE))
    if sr != target_sr:
        wave, sr = _resample(wave, sr, target_sr), target_sr

    activity = activity if activity is not None else detect_speech(wave, sr)
    if activity.speech_seconds < min_speech_s:
        what = "no speech detected" if activity.speech_seconds == 0 else "too little speech"
        return NotApplicable(
            reason=f"{what} ({activity.speech_seconds:.1f} s of speech, need {min_speech_s:.1f} s)",
            speech_seconds=activity.speech_seconds,
        )

    start, end = speech_span(activity, sr, wave.shape[0])
    win = make_windows(wave[start:end], sr, window=int(detector.window_samples), hop=hop)
    if max_windows is not None and len(win) > max_windows:
        keep = np.unique(np.linspace(0, len(win) - 1, max_windows).round().astype(int))
        win = AudioWindows(win.windows[keep], win.starts_s[keep], win.ends_s[keep])
    features = None
    if hasattr(detector, "speech_features"):  # reads each window in the context of the speech around it
        features = detector.speech_features(wave[start:end], win.starts_s)
        scores = detector.score_features(features)
    else:
        scores = detector.predict(win.windows)  # one batched call; the detector batches internally
    probs = np.asarray(scores.fake_prob, dtype=np.float64).reshape(-1)
    logits = np.asarray(scores.logit, dtype=np.float64).reshape(-1)
    if probs.shape[0] != len(win):
        raise RuntimeError(f"detector returned {probs.shape[0]} scores for {len(win)} windows")
    offset = start / sr
    return AudioResult(
        clip_fake_prob=float(probs.mean()),
        window_starts_s=win.starts_s + offset,
        window_ends_s=win.ends_s + offset,
        window_fake_prob=probs,
        window_logit=logits,
        speech_seconds=activity.speech_seconds,
        vad_method=activity.method,
        speech_segments=list(activity.segments),
        windows=win.windows,
        window_features=features,
    )


__all__ = [
    "AudioResult",
    "AudioWindows",
    "NotApplicable",
    "SpeechActivity",
    "detect_speech",
    "energy_segments",
    "fix_length",
    "make_windows",
    "score_audio",
    "speech_span",
    "trim_silence",
    "window_starts",
]

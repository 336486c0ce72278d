"""Voice change: does one voice speak throughout the clip, or does another take over for a while?

A soundtrack spliced from another recording (a sentence dubbed in, a stretch of foreign speech over a real face)
changes the speaker's voice for a few seconds while the face keeps talking. The lip-sync check sees such a splice
only weakly (1.5-4 s of foreign speech moves an 8 s offset curve little); a speaker encoder sees it directly.

The encoder is GE2E (Wan et al., "Generalized end-to-end loss for speaker verification", 2018) as released inside
the ``resemblyzer==0.1.4`` wheel (Apache-2.0): 40 mel bands (25 ms / 10 ms, power, not log) of 1.6 s, a 3-layer
256-unit LSTM, a linear layer and ReLU, L2-normalised. It is re-implemented here (the package itself is not
imported) and loaded from the wheel's ``pretrained.pt``, pinned by sha256.

The measure (nothing is learned): each speech window's cosine similarity to the mean embedding of the clip's
other speech windows. A window far from the rest is a voice the clip does not otherwise have. Its P(fake) comes
from one fixed affine map (``CENTRE``/``SPREAD``, set from GE2E's scale before any dev score was looked at: real
single-speaker windows sit around 0.85, another speaker well under 0.7); the evidence fusion calibrates it per
detector like any other score, with its own reliability.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.base import Scores, WeightsInfo

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
WINDOW_FRAMES = 160  # 1.6 s: GE2E's partial utterance
TARGET_DBFS = -30.0  # resemblyzer's loudness normalisation, applied per window (a voice, not its level)
CENTRE = 0.75  # similarity to the rest of the clip at which a window reads 50 % "another voice"
SPREAD = 0.05
# the measure's identity beside the encoder's weights: a change of rule is a different detector, whose scores are
# never read through this one's calibration
RULE = f"voice_change centre={CENTRE!r} spread={SPREAD!r} dbfs={TARGET_DBFS!r} frames={WINDOW_FRAMES}"


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    f = np.asarray(f, np.float64)
    mel = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, Slaney-normalised (each filter's area is constant)."""
    fft_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    width = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return (weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]).astype(np.float32)


_FILTERS = torch.from_numpy(mel_filters())
_WINDOW = torch.hann_window(N_FFT, periodic=True)


def mel_frames(wave: np.ndarray) -> np.ndarray:
    """(frames, 40) power mel spectrogram of 16 kHz mono ``wave`` (centred frames, zero padded); (N, S) waves give
    (N, frames, 40) in one transform."""
    x = torch.as_tensor(np.asarray(wave, np.float32))
    spec = torch.stft(x, N_FFT, HOP, N_FFT, _WINDOW, center=True, pad_mode="constant", return_complex=True)
    return torch.matmul(_FILTERS, spec.abs() ** 2).transpose(-1, -2).contiguous().numpy()


def normalised(windows: np.ndarray, dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Each (N, S) window scaled to ``dbfs`` RMS."""
    rms = np.sqrt(np.mean(np.asarray(windows, np.float64) ** 2, axis=1, keepdims=True))
    return (windows * (10 ** (dbfs / 20.0) / np.maximum(rms, 1e-9))).astype(np.float32)


class GE2E(nn.Module):
    """The speaker encoder: (B, T, 40) mel frames -> (B, 256) unit-length embeddings."""

    def __init__(self, n_mels: int = N_MELS, hidden: int = 256, layers: int = 3, dim: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(mels)
        e = self.relu(self.linear(h[-1]))
        return e / torch.clamp(e.norm(dim=1, keepdim=True), min=1e-8)


def weights_file(explicit: str | os.PathLike | None = None) -> Path:
    """The GE2E checkpoint: an explicit path, ``$WEIGHTS_DIR/<file>``, or the one inside the resemblyzer wheel
    (found without importing the package); it must match the pinned sha256."""
    import importlib.util

    from models.weights import find_pinned

    found = importlib.util.find_spec("resemblyzer")
    wheel = (Path(next(iter(found.submodule_search_locations))) / "pretrained.pt"
             if found is not None and found.submodule_search_locations else None)
    return find_pinned("ge2e", Path(explicit) if explicit is not None else None, wheel,
                       "pip install --no-deps -r requirements-nodeps.txt",
                       "GE2E speaker encoder")


class VoiceChangeDetector:
    """``predict(windows)``: per 1.6 s speech window of ONE clip, P(another voice) from its similarity to the rest.

    A batch is one clip's windows, never windows of different clips: each is judged against the others."""

    name = "voice_change"
    modality = "audio"
    window_samples = WINDOW_FRAMES * HOP

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", weights: WeightsInfo | None = None,
                 batch_size: int = 64):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.weights_info = weights
        self.batch_size = batch_size

    @property
    def weights_infos(self) -> tuple[WeightsInfo, ...]:
        """The encoder's checkpoint and the measure's constants: together the identity calibration is keyed by."""
        rule = WeightsInfo("voice_change_rule", RULE, hashlib.sha256(RULE.encode()).hexdigest())
        return (self.weights_info, rule) if self.weights_info is not None else (rule,)

    @classmethod
    def load(cls, weights: str | os.PathLike | None = None, device: str = "cpu") -> VoiceChangeDetector:
        from models.weights import sha256_of

        f = weights_file(weights)
        state = torch.load(f, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.get("model_state", state).items() if not k.startswith("similarity_")}
        model = GE2E()
        model.load_state_dict(state)
        return cls(model, device, WeightsInfo("ge2e", str(f), sha256_of(f)))

    @torch.inference_mode()
    def embed(self, windows: np.ndarray) -> np.ndarray:
        """(N, S) 16 kHz windows -> (N, 256) embeddings, in batches (all windows' mels first, one LSTM per batch)."""
        windows = np.asarray(windows, np.float32)
        if len(windows) == 0:
            return np.zeros((0, 256), np.float32)
        mels = np.ascontiguousarray(mel_frames(normalised(windows))[:, :WINDOW_FRAMES])
        # an LSTM is 160 small steps: on CPU a second thread only spins (10x slower beside other work, measured)
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            out = [self.model(torch.from_numpy(mels[i:i + self.batch_size]).to(self.device)).cpu().numpy()
                   for i in range(0, len(mels), self.batch_size)]
        finally:
            torch.set_num_threads(threads)
        return np.concatenate(out)

    @staticmethod
    def similarity_to_rest(emb: np.ndarray) -> np.ndarray:
        """Each embedding's cosine similarity to the (renormalised) mean of all the others."""
        emb = np.asarray(emb, np.float64)
        rest = emb.sum(0, keepdims=True) - emb
        rest /= np.maximum(np.linalg.norm(rest, axis=1, keepdims=True), 1e-9)
        return (emb * rest).sum(1)

    def predict(self, windows: np.ndarray) -> Scores:
        if len(windows) < 2:
            raise ValueError("the voice-change measure compares windows with each other: it needs at least two")
        sim = self.similarity_to_rest(self.embed(windows))
        return Scores.from_fake_logits((CENTRE - sim) / SPREAD)

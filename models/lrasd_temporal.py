"""Embedded temporal detector, LipForensics-style: a FROZEN LR-ASD visual front-end + a small temporal head.

The LR-ASD visual encoder (``models.lrasd``, trained on real talking faces for active-speaker detection) turns
each 25 fps demo crop of a face track (``faces_from_track``: the lower-central face with the mouth, 112x112
gray) into a 128-d embedding that mostly encodes mouth shape and motion. Generated faces move their mouths
differently from real ones; a small dilated 1-D conv head over fixed-length windows of those embeddings
learns that difference from a few dozen labelled clips. Only the head is trained, so the front-end keeps
what it learned from thousands of real speakers.

Windows: ``window`` frames (default 40 = 1.6 s) every ``hop`` frames; P(fake) per window, and a track's
score is the mean over its windows. Fixed-length windows keep clip length from becoming a cue.

The bundled checkpoint (``models/checkpoints/lrasd_temporal.pt``, registry name ``lrasd_temporal``) holds
only the head, its config and training metadata; the LR-ASD weights resolve through the registry.
``training.temporal_head.fit_head`` is the training core behind ``python -m training temporal`` (``--arch lrasd_head``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.base import Scores, WeightsInfo, resolve_device
from models.lrasd import EMBED_DIM, clip_embeddings

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lrasd_temporal/1"


@dataclass(frozen=True)
class HeadConfig:
    window: int = 40  # frames per window (1.6 s at 25 fps)
    hop: int = 20  # frames between window starts at inference
    kind: str = "energy"  # energy: difference filters + log-RMS pooling + linear; conv: a 2-layer dilated conv stack
    hidden: int = 0  # energy: 0 = a linear read-out (what group CV favours on the dev data), else an MLP
    kernel: int = 5
    orders: int = 3  # energy: finite differences of order 0..orders-1 (level, velocity, acceleration)
    dropout: float = 0.1


def difference_filters(kernel: int, orders: int) -> torch.Tensor:
    """(orders, kernel) unit-norm finite-difference kernels of order 0 (identity) .. orders-1, centred."""
    if orders > kernel:
        raise ValueError(f"{orders} difference orders need at least {orders} taps, got {kernel}")
    rows = []
    for k in range(orders):
        taps = np.array([(-1) ** (k - i) * math.comb(k, i) for i in range(k + 1)], float)
        row = np.zeros(kernel)
        off = (kernel - len(taps)) // 2
        row[off : off + len(taps)] = taps
        rows.append(row / np.linalg.norm(row))
    return torch.tensor(np.stack(rows), dtype=torch.float32)


class EnergyHead(nn.Module):
    """(B, W, 128) embeddings -> (B,) fake logit, from how much each embedding channel moves at each time scale.

    Each window is centred in time (static appearance out: identity, lighting, resolution), filtered along time
    by fixed finite differences of order 0..3 (a depthwise 1-D temporal conv), and pooled to a log-RMS per
    channel and order; the 384 standardised energies go through a linear read-out (or a small MLP). Fakes in
    the dev data move their mouths less overall yet jitter more frame to frame, which is what the higher orders
    see. 385 trainable parameters with the defaults.
    """

    def __init__(self, dim: int = EMBED_DIM, hidden: int = 0, kernel: int = 5, orders: int = 3,
                 dropout: float = 0.1):
        super().__init__()
        self.register_buffer("filters", difference_filters(kernel, orders))
        n = dim * orders
        self.register_buffer("feat_mean", torch.zeros(n))
        self.register_buffer("feat_std", torch.ones(n))
        self.drop = nn.Dropout(dropout)
        self.read = nn.Linear(n, 1) if hidden == 0 else nn.Sequential(nn.Linear(n, hidden), nn.GELU(),
                                                                       nn.Dropout(dropout), nn.Linear(hidden, 1))

    def energies(self, x: torch.Tensor) -> torch.Tensor:
        b, w, c = x.shape
        x = (x - x.mean(dim=1, keepdim=True)).transpose(1, 2).reshape(b * c, 1, w)
        y = F.conv1d(x, self.filters[:, None, :])  # (B*C, orders, W - kernel + 1)
        return (0.5 * torch.log(y.pow(2).mean(-1) + 1e-4)).reshape(b, -1)

    def set_normalisation(self, windows: np.ndarray) -> None:
        with torch.no_grad():
            e = self.energies(torch.from_numpy(np.asarray(windows, np.float32)))
        self.feat_mean.copy_(e.mean(0))
        self.feat_std.copy_(e.std(0).clamp_min(1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = (self.energies(x) - self.feat_mean) / self.feat_std
        return self.read(self.drop(f)).squeeze(-1)


class ConvHead(nn.Module):
    """(B, W, 128) -> (B,) fake logit: standardise, centre in time, conv k -> dilated conv k (residual),
    mean+max over time, linear. Kept for comparison: on the dev data it learns the source datasets."""

    def __init__(self, dim: int = EMBED_DIM, hidden: int = 64, kernel: int = 5, dropout: float = 0.3):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.drop = nn.Dropout(dropout)
        self.conv1 = nn.Conv1d(dim, hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel, padding=2 * (kernel // 2), dilation=2)
        self.out = nn.Linear(2 * hidden, 1)

    def set_normalisation(self, windows: np.ndarray) -> None:
        flat = np.asarray(windows, np.float64).reshape(-1, self.mean.numel())
        self.mean.copy_(torch.from_numpy(flat.mean(0)).float())
        self.std.copy_(torch.from_numpy(np.maximum(flat.std(0), 1e-3)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.drop(x - x.mean(dim=1, keepdim=True)).transpose(1, 2)
        h = F.gelu(self.conv1(x))
        h = h + F.gelu(self.conv2(self.drop(h)))
        return self.out(self.drop(torch.cat([h.mean(-1), h.amax(-1)], dim=1))).squeeze(-1)


TemporalHead = EnergyHead | ConvHead


def build_head(cfg: HeadConfig) -> nn.Module:
    if cfg.kind == "energy":
        return EnergyHead(hidden=cfg.hidden, kernel=cfg.kernel, orders=cfg.orders, dropout=cfg.dropout)
    if cfg.kind == "conv":
        return ConvHead(hidden=cfg.hidden or 64, kernel=cfg.kernel, dropout=cfg.dropout)
    raise ValueError(f"unknown head kind {cfg.kind!r} (energy or conv)")


def window_starts(n_frames: int, window: int, hop: int) -> np.ndarray:
    """Start frames of the inference windows: every ``hop`` frames, the last one flush with the end."""
    if n_frames < window:
        return np.zeros(0, int)
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return np.asarray(starts, int)


def sequence_windows(emb: np.ndarray, cfg: HeadConfig) -> tuple[np.ndarray, np.ndarray]:
    """(K, window, 128) windows of one (T, 128) sequence, and their start frames."""
    starts = window_starts(len(emb), cfg.window, cfg.hop)
    if len(starts) == 0:
        return np.zeros((0, cfg.window, emb.shape[-1]), np.float32), starts
    return np.stack([emb[s : s + cfg.window] for s in starts]).astype(np.float32), starts


def head_logits(head: TemporalHead, windows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Eval-mode logits (K,) of windows (K, W, 128)."""
    if len(windows) == 0:
        return np.zeros(0)
    head.eval()
    dev = next(head.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(windows[i : i + batch_size], np.float32)).to(dev)
            out.append(head(x).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def video_probabilities(head: TemporalHead, seqs: Sequence[np.ndarray], video_ids: Sequence, cfg: HeadConfig
                        ) -> dict:
    """Per video: mean P(fake) over the windows of all its sequences (what the pipeline reports per track)."""
    wins, owners = [], []
    for emb, vid in zip(seqs, video_ids, strict=True):
        w, _ = sequence_windows(emb, cfg)
        wins.append(w)
        owners += [vid] * len(w)
    if not owners:
        return {}
    probs = 1.0 / (1.0 + np.exp(-head_logits(head, np.concatenate(wins))))
    rows: dict = {}
    for i, vid in enumerate(owners):
        rows.setdefault(vid, []).append(i)
    return {vid: float(probs[idx].mean()) for vid, idx in rows.items()}


def save_head_checkpoint(head: TemporalHead, head_cfg: HeadConfig, path: str | os.PathLike,
                         metadata: dict | None = None) -> None:
    """Head weights + config + JSON-able metadata (training data, validation figures) in one small file."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "head": asdict(head_cfg), "state_dict": state,
                "metadata": metadata or {}}, tmp)
    tmp.replace(path)


def load_head_checkpoint(path: str | os.PathLike) -> tuple[TemporalHead, HeadConfig, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an {CHECKPOINT_FORMAT} checkpoint")
    cfg = HeadConfig(**ckpt["head"])
    head = build_head(cfg)
    head.load_state_dict(ckpt["state_dict"], strict=True)
    return head.eval(), cfg, dict(ckpt.get("metadata") or {})


class LRASDTemporalDetector:
    """P(fake) per 1.6 s window of a face track, from frozen LR-ASD visual embeddings and a trained head."""

    name = "lrasd_temporal"
    modality = "temporal"

    def __init__(self, head: TemporalHead, front, cfg: HeadConfig = HeadConfig(),
                 device: str | torch.device | None = "cpu", weights_info: WeightsInfo | None = None,
                 metadata: dict | None = None):
        self.device = resolve_device(device)
        self.head = head.to(self.device).eval()
        self.front = front  # an LRASDDetector (its visual encoder only is used)
        self.cfg = cfg
        self.metadata = metadata or {}
        self.weights_info = weights_info or WeightsInfo.in_memory(self.name)
        self.weights_infos = tuple(i for i in (self.weights_info, getattr(front, "weights_info", None)) if i)

    @property
    def num_frames(self) -> int:
        """Frames a face must stay visible for one window (the pipeline's applicability check)."""
        return self.cfg.window

    @classmethod
    def load(cls, weights: str | os.PathLike | None = None, device: str | torch.device | None = "cpu",
             front=None, lrasd_weights: str | os.PathLike | None = None) -> LRASDTemporalDetector:
        """``weights``: a head checkpoint (default: the bundled one); ``front``: an already loaded
        ``LRASDDetector`` to share (else it is loaded from ``lrasd_weights`` / the registry)."""
        from models.lrasd import LRASDDetector
        from models.weights import resolve

        path = resolve("lrasd_temporal", weights)
        head, cfg, metadata = load_head_checkpoint(path)
        if front is None:
            front = LRASDDetector.load(lrasd_weights, device=device)
        logger.info("loaded LR-ASD temporal head from %s (window %d frames)", path, cfg.window)
        return cls(head, front, cfg, device=device, weights_info=WeightsInfo.of("lrasd_temporal", path),
                   metadata=metadata)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """(T, 112, 112) uint8 demo crops -> (T, 128) float32 frozen LR-ASD visual embeddings."""
        return embed_faces(self.front, [faces])[0]

    def predict(self, windows: np.ndarray) -> Scores:
        """Embedding windows (N, window, 128) -> per-window Scores."""
        return Scores.from_fake_logits(head_logits(self.head, np.asarray(windows, np.float32)))

    def usable(self, clips: Sequence) -> list:
        """The clips long enough for one window (shorter ones contribute nothing)."""
        return [c for c in clips if len(c) >= self.cfg.window]

    def sequences(self, clips: Sequence) -> list[np.ndarray]:
        """The (T, 128) embedding sequence the head reads of each usable clip (memoised on the clip, so asking
        again after ``predict_clips`` costs nothing): what a head refitted elsewhere must be shown."""
        return [clip_embeddings(self.front, c)[0] for c in self.usable(clips)]

    def predict_clips(self, clips: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense face clips (``pipeline.dense.DenseFaceClip``) -> P(fake) per window, window starts and ends (s).

        Clips shorter than one window contribute nothing. All windows of all clips go through the head as
        one batch; the front-end runs once per clip (batched by clip length).
        """
        usable = self.usable(clips)
        if not usable:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        probs, idx = self.predict_sequences(self.sequences(usable))
        starts, ends = [], []
        for c, i in zip(usable, idx, strict=True):
            t = np.asarray(c.timestamps_s, float)
            starts.append(t[i])
            ends.append(t[i + self.cfg.window - 1] + 1.0 / c.fps)
        return probs, np.concatenate(starts), np.concatenate(ends)

    def predict_sequences(self, embs: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """P(fake) of every window of every (T, 128) sequence, in one batch, and per sequence its windows' start
        frames. The clip score is the mean of the windows: what a trainer scoring kept sequences
        with a refitted head calls too."""
        wins, idx = [], []
        for emb in embs:
            w, starts = sequence_windows(emb, self.cfg)
            wins.append(w)
            idx.append(starts)
        if not wins or not sum(len(w) for w in wins):
            return np.zeros(0), idx
        return self.predict(np.concatenate(wins)).fake_prob, idx


def embed_faces(front, faces_list: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Frozen LR-ASD visual embeddings (T_i, 128) of several crop sequences, equal lengths batched together.

    ``LRASDDetector.embeddings`` needs an audio input of matching length; the encoders are independent, so a
    zero MFCC leaves the visual output untouched. Long sequences are windowed exactly inside it.
    """
    out: list[np.ndarray | None] = [None] * len(faces_list)
    by_len: dict[int, list[int]] = {}
    for i, f in enumerate(faces_list):
        by_len.setdefault(len(f), []).append(i)
    for t, idx in by_len.items():
        if t == 0:
            for i in idx:
                out[i] = np.zeros((0, EMBED_DIM), np.float32)
            continue
        faces = np.stack([faces_list[i] for i in idx])
        _, vis = front.embeddings(np.zeros((len(idx), 4 * t, 13), np.float32), faces)
        for i, v in zip(idx, vis, strict=True):
            out[i] = v.astype(np.float32)
    return out  # type: ignore[return-value]

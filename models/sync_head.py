"""Lip-sync head on FROZEN LR-ASD embeddings (fitted by ``training/train_sync.py``).

Two linear 1-D convs (+-``context`` frames) project the per-frame LR-ASD audio and visual embeddings
(128-d, 25 fps, each z-scored over the analysed window) to ``dim_out`` channels, which are z-scored over
the window again. The mean over frames of the product of visual channel k at frame t and audio channel k
at frame t + d is then the channel-averaged correlation at offset d: the offset curve.

The projections are canonical directions (ridge-regularised CCA of visual and audio embeddings at
offset 0 on the training clips), not an InfoNCE-trained MLP: on the few real training clips the
contrastive head fitted its own clips perfectly and failed on held-out groups, while the closed-form
CCA generalised (see models/checkpoints/sync_head.md). LR-ASD's own speaking score ignores synchrony
(SPEC section 6); its encoders still keep enough timing for this.

The checkpoint (``models/checkpoints/sync_head.pt``, bundled) holds the two conv weights, the config,
the weight of the mouth-motion curve that is added to the head's curve, and the clip-level logistic
calibration (``pipeline.sync.calibration_input``: the combined curve's features, or the head's and the motion
curve's apart).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from models.base import WeightsInfo
from models.weights import resolve

logger = logging.getLogger(__name__)

NAME = "sync_head"
FILENAME = "sync_head.pt"


def window_zscore(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, C) z-scored per channel over time, statistics from the frames where ``mask`` (B, T) is True."""
    w = torch.ones(x.shape[:2], device=x.device) if mask is None else mask.to(x.device, x.dtype)
    w = (w / w.sum(1, keepdim=True).clamp_min(1))[..., None]
    mu = (x * w).sum(1, keepdim=True)
    sd = (((x - mu) ** 2 * w).sum(1, keepdim=True) + 1e-6).sqrt()
    return (x - mu) / sd


class SyncHead(nn.Module):
    def __init__(self, dim_in: int = 128, dim_out: int = 4, context: int = 2, max_offset: int = 15):
        super().__init__()
        self.config = {"dim_in": dim_in, "dim_out": dim_out, "context": context, "max_offset": max_offset}

        def conv() -> nn.Conv1d:
            return nn.Conv1d(dim_in, dim_out, 2 * context + 1, padding=context, padding_mode="replicate", bias=False)

        self.audio = conv()
        self.visual = conv()
        # clip-level logistic on the offset curves' features (pipeline.sync.calibration_input): bias, weights
        self.register_buffer("calibration", torch.tensor([0.0, -10.0, 10.0]))
        # weight of the training-free mouth-motion curve added to the head's curve (0: head alone)
        self.register_buffer("motion_weight", torch.tensor(0.0))

    @property
    def max_offset(self) -> int:
        return int(self.config["max_offset"])

    def project(self, audio: torch.Tensor, visual: torch.Tensor,
                covered: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (B, Ta, D) and (B, Tv, D), z-scored over the window and scaled by 1/sqrt(D), so that the
        mean over frames of their per-frame dot product is the channel-averaged correlation."""
        scale = self.config["dim_out"] ** -0.5
        pa = self.audio(window_zscore(audio, covered).transpose(1, 2)).transpose(1, 2)
        pv = self.visual(window_zscore(visual).transpose(1, 2)).transpose(1, 2)
        return window_zscore(pa, covered) * scale, window_zscore(pv) * scale

    def similarities(self, audio_ext: torch.Tensor, visual: torch.Tensor, max_offset: int,
                     covered: torch.Tensor | None = None) -> torch.Tensor:
        """Match score of visual frame t with audio frame t + d, (B, T, 2m + 1) for d = -m .. m.

        audio_ext (B, T + 2m, D_in) covers frames -m .. T+m of the window, visual (B, T, D_in); ``covered``
        (B, T + 2m) marks the audio frames that exist (the rest is padding and stays out of the statistics).
        """
        t = visual.shape[1]
        if audio_ext.shape[1] != t + 2 * max_offset:
            raise ValueError(f"audio_ext has {audio_ext.shape[1]} frames, expected {t} + 2*{max_offset}")
        pa, pv = self.project(audio_ext, visual, covered)
        windows = pa.unfold(1, t, 1)  # (B, 2m+1, D, T): window k starts at audio frame k (offset k - m)
        return torch.einsum("btd,bkdt->btk", pv, windows)


def load(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> SyncHead:
    """The head from ``path`` (default: the bundled checkpoint), in eval mode."""
    p = Path(resolve(NAME, path))
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    head = SyncHead(**ckpt["config"])
    head.calibration = torch.zeros_like(ckpt["state_dict"]["calibration"])  # 2, 5 or 10 curve features + bias
    head.load_state_dict(ckpt["state_dict"], strict=True)
    head.source_path = p
    logger.info("loaded sync head from %s", p)
    return head.to(device).eval()


class SyncHeadDetector:
    """The lip-sync detector's models: LR-ASD (shared with the speaker slot) and the head on its embeddings.

    ``pipeline.sync.SyncEstimator`` runs the offset search with them; this class is what the registry loads."""

    name = "sync"

    def __init__(self, lrasd, head: SyncHead | None = None, device: str | torch.device = "cpu",
                 weights_info: WeightsInfo | None = None):
        if head is None:
            path = Path(resolve(NAME))
            head = load(path, device=device)
            weights_info = WeightsInfo.of(NAME, path)
        self.lrasd = lrasd
        self.head = head
        self.device = torch.device(device)
        self.weights_info = weights_info or WeightsInfo.in_memory(NAME)

    @property
    def weights_infos(self) -> tuple[WeightsInfo, ...]:
        front = getattr(self.lrasd, "weights_info", None)
        return tuple(i for i in (front, self.weights_info) if i is not None)

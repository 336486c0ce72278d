"""Optional learned fusion: attention over per-second detector tokens across modalities.

The seed plan's "cross-attention fusion layer". Each detector contributes one token per second of its
timeline (its log-odds that second, plus a learned detector embedding and a position encoding) and one
summary token (its clip-level log-odds). A small transformer encoder lets tokens of different modalities
attend to each other (e.g. a suspicious second of audio next to a suspicious second of lip-sync), and a
learned [CLS] token reads out P(fake). Detectors that did not run contribute no tokens.

It is used only when a trained checkpoint exists (``FUSION_CHECKPOINT`` or the bundled
``models/checkpoints/attention_fusion.pt``); train it with ``python -m training fusion``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.report import SLOTS

MAX_SECONDS = 64  # per detector; longer timelines are subsampled evenly
EPS = 1e-4


@dataclass(frozen=True)
class Tokens:
    values: np.ndarray  # (N,) log-odds
    slot: np.ndarray  # (N,) detector index
    kind: np.ndarray  # (N,) 0 = per-second, 1 = clip summary
    position: np.ndarray  # (N,) relative time in [0, 1] (summary tokens: 0)


def _lo(p: float) -> float:
    p = min(max(float(p), EPS), 1 - EPS)
    return math.log(p / (1 - p))


def tokens_from(raw: dict[str, float | None], timelines: dict[str, list[list[float]]], duration: float) -> Tokens:
    """Tokens of one item from its clip scores and per-second timelines (slot -> [[start, end, p], ...])."""
    vals, slots, kinds, pos = [], [], [], []
    dur = max(duration, 1e-3)
    for j, s in enumerate(SLOTS):
        if raw.get(s) is None:
            continue
        vals.append(_lo(raw[s]))
        slots.append(j)
        kinds.append(1)
        pos.append(0.0)
        tl = timelines.get(s) or []
        if len(tl) > MAX_SECONDS:
            tl = [tl[i] for i in np.linspace(0, len(tl) - 1, MAX_SECONDS).round().astype(int)]
        for start, end, p in tl:
            vals.append(_lo(p))
            slots.append(j)
            kinds.append(0)
            pos.append(min(1.0, 0.5 * (start + end) / dur))
    return Tokens(np.array(vals, np.float32), np.array(slots, np.int64), np.array(kinds, np.int64),
                  np.array(pos, np.float32))


class AttentionFusion(nn.Module):
    def __init__(self, d_model: int = 32, heads: int = 4, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.value = nn.Linear(1, d_model)
        self.slot = nn.Embedding(len(SLOTS), d_model)
        self.kind = nn.Embedding(2, d_model)
        self.freqs = nn.Parameter(torch.arange(1, d_model // 2 + 1).float() * math.pi, requires_grad=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1)
        self.config = {"d_model": d_model, "heads": heads, "layers": layers, "dropout": dropout}

    def forward(self, values, slot, kind, position, pad_mask) -> torch.Tensor:
        """(B, N) inputs with ``pad_mask`` True at padding → (B,) logit of fake."""
        angle = position[..., None] * self.freqs
        pos = torch.cat([torch.sin(angle), torch.cos(angle)], -1)
        x = self.value(values[..., None]) + self.slot(slot) + self.kind(kind) + pos
        cls = self.cls.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], 1)
        mask = torch.cat([torch.zeros_like(pad_mask[:, :1]), pad_mask], 1)
        h = self.encoder(x, src_key_padding_mask=mask)
        return self.head(h[:, 0]).squeeze(-1)


def collate(batch: list[Tokens]) -> tuple[torch.Tensor, ...]:
    n = max(1, max(len(t.values) for t in batch))
    b = len(batch)
    vals = torch.zeros(b, n)
    slots = torch.zeros(b, n, dtype=torch.long)
    kinds = torch.zeros(b, n, dtype=torch.long)
    pos = torch.zeros(b, n)
    pad = torch.ones(b, n, dtype=torch.bool)
    for i, t in enumerate(batch):
        k = len(t.values)
        vals[i, :k] = torch.from_numpy(t.values)
        slots[i, :k] = torch.from_numpy(t.slot)
        kinds[i, :k] = torch.from_numpy(t.kind)
        pos[i, :k] = torch.from_numpy(t.position)
        pad[i, :k] = False
    return vals, slots, kinds, pos, pad


@dataclass(frozen=True)
class LearnedFusion:
    """A loaded attention-fusion model with its thresholds."""

    model: AttentionFusion
    thresholds: tuple[float, float]
    metrics: dict
    source: str

    def probability(self, raw: dict[str, float | None], timelines: dict[str, list[list[float]]],
                    duration: float) -> float | None:
        tok = tokens_from(raw, timelines, duration)
        if len(tok.values) == 0:
            return None
        with torch.inference_mode():
            return float(torch.sigmoid(self.model(*collate([tok]))[0]))

    def save(self, path: str | Path) -> None:
        torch.save({"config": self.model.config, "state_dict": self.model.state_dict(),
                    "thresholds": list(self.thresholds), "metrics": self.metrics}, path)

    @classmethod
    def load(cls, path: str | Path) -> LearnedFusion:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = AttentionFusion(**ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
        model.eval()
        th = ckpt.get("thresholds", [0.35, 0.65])
        return cls(model, (float(th[0]), float(th[1])), dict(ckpt.get("metrics", {})), str(path))



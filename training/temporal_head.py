"""Training core of the LR-ASD temporal head (``models.lrasd_temporal``): fit a fresh head on embedding sequences.

``python -m training temporal`` (``--arch lrasd_head``) drives it; the model file keeps only the architecture,
inference and the checkpoint format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from models.lrasd_temporal import HeadConfig, TemporalHead, build_head, sequence_windows, video_probabilities


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 0.0  # decoupled (AdamW) decay
    l2: float = 0.3  # explicit L2 penalty on the weight matrices, added to the mean loss (ridge-like read-out)
    batch_size: int = 32
    windows_per_video: int = 8  # random windows per video and epoch, so long or augmented videos don't dominate
    label_smoothing: float = 0.05
    seed: int = 0
    stop_after: int | None = None  # stop early on the full-length schedule (the refit after epoch selection)


@dataclass
class FitHistory:
    train_loss: list[float] = field(default_factory=list)
    holdout: list[dict] = field(default_factory=list)  # per epoch: video -> P(fake) of the held-out videos


def fit_head(
    seqs: Sequence[np.ndarray],
    labels: Sequence[int],
    video_ids: Sequence,
    head_cfg: HeadConfig = HeadConfig(),
    fit_cfg: FitConfig = FitConfig(),
    holdout: tuple[Sequence[np.ndarray], Sequence] | None = None,
    video_weight: dict | None = None,
) -> tuple[TemporalHead, FitHistory]:
    """Train a fresh head on embedding sequences (T_i, 128) labelled per sequence (1 = fake).

    Several sequences may share a video id (augmented copies, several dense windows): every epoch draws
    ``windows_per_video`` random windows per video, from any of its sequences, and weights the two classes
    equally. ``holdout`` (sequences, video ids) is scored after every epoch for early stopping. ``video_weight``
    (video id -> factor, mean 1 within a class) reweights videos inside their class, e.g. so every source counts
    alike however many clips it has.
    """
    rng = np.random.default_rng(fit_cfg.seed)
    torch.manual_seed(fit_cfg.seed)
    by_video: dict = {}
    for i, (emb, vid) in enumerate(zip(seqs, video_ids, strict=True)):
        if len(emb) >= head_cfg.window:
            by_video.setdefault(vid, []).append(i)
    if not by_video:
        raise ValueError(f"no sequence is at least {head_cfg.window} frames long")
    video_label = {vid: int(labels[idx[0]]) for vid, idx in by_video.items()}
    n_fake = sum(video_label.values())
    n_real = len(video_label) - n_fake
    if n_fake == 0 or n_real == 0:
        raise ValueError(f"training needs real and fake videos (got {n_real} real, {n_fake} fake)")
    class_w = {0: 0.5 * len(video_label) / n_real, 1: 0.5 * len(video_label) / n_fake}

    head = build_head(head_cfg)
    head.set_normalisation(np.concatenate([sequence_windows(seqs[i], head_cfg)[0]
                                           for idx in by_video.values() for i in idx]))
    penalised = [p for n, p in head.named_parameters() if p.ndim > 1]  # weights, not biases
    opt = torch.optim.AdamW(head.parameters(), lr=fit_cfg.lr, weight_decay=fit_cfg.weight_decay)
    steps = fit_cfg.epochs * math.ceil(len(by_video) * fit_cfg.windows_per_video / fit_cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=fit_cfg.lr, total_steps=max(steps, 1), pct_start=0.15)
    history = FitHistory()
    videos = list(by_video)
    for _ in range(min(fit_cfg.epochs, fit_cfg.stop_after or fit_cfg.epochs)):
        xs, ys, ws = [], [], []
        for vid in videos:
            for _ in range(fit_cfg.windows_per_video):
                emb = seqs[by_video[vid][rng.integers(len(by_video[vid]))]]
                s = int(rng.integers(len(emb) - head_cfg.window + 1))
                xs.append(emb[s : s + head_cfg.window])
                ys.append(video_label[vid])
                ws.append(class_w[video_label[vid]] * (video_weight or {}).get(vid, 1.0))
        order = rng.permutation(len(xs))
        x_all = torch.from_numpy(np.stack(xs).astype(np.float32))
        y_all = torch.tensor(ys, dtype=torch.float32)
        w_all = torch.tensor(ws, dtype=torch.float32)
        head.train()
        total = 0.0
        for b in range(0, len(order), fit_cfg.batch_size):
            j = torch.from_numpy(order[b : b + fit_cfg.batch_size])
            target = y_all[j] * (1 - fit_cfg.label_smoothing) + 0.5 * fit_cfg.label_smoothing
            loss = (F.binary_cross_entropy_with_logits(head(x_all[j]), target, reduction="none") * w_all[j]).mean()
            if fit_cfg.l2:
                loss = loss + fit_cfg.l2 * sum(p.pow(2).sum() for p in penalised)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(j)
        history.train_loss.append(total / len(order))
        if holdout is not None:
            history.holdout.append(video_probabilities(head, holdout[0], holdout[1], head_cfg))
    head.eval()
    return head, history

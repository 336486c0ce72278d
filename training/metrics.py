"""Ranking metrics every trainer and evaluation reports (one implementation)."""

from __future__ import annotations

import numpy as np


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None when one class is missing."""
    y, s = np.asarray(y), np.asarray(s, float)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def eer(y: np.ndarray, s: np.ndarray) -> float | None:
    """Equal error rate: where the false-positive and false-negative rates cross."""
    y, s = np.asarray(y), np.asarray(s, float)
    if y.min() == y.max():
        return None
    best = 1.0
    for t in np.unique(np.concatenate([s, [np.inf]])):
        fpr = float(((s >= t) & (y == 0)).sum() / max(1, (y == 0).sum()))
        fnr = float(((s < t) & (y == 1)).sum() / max(1, (y == 1).sum()))
        best = min(best, max(fpr, fnr))
    return best

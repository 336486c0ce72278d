"""``python -m training fusion``: train the optional attention fusion on ``make eval`` outputs.

    python -m training fusion --train-results out/eval/train/results.jsonl \\
        --val-results out/eval/val/results.jsonl --out out/attention_fusion.pt

Inputs are the per-item results of ``make eval`` (clip scores and per-second timelines of every detector)
on the two sides of the group split. It reports validation AUC next to the calibrated logistic fusion
fitted on the same training items, so you can see whether attention earns its place. The pipeline uses
the checkpoint only when ``FUSION_CHECKPOINT`` points at it (or it is installed as
``models/checkpoints/attention_fusion.pt``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.attention_fusion import AttentionFusion, LearnedFusion, Tokens, collate, tokens_from
from training.evaluate import ItemResult, auc

logger = logging.getLogger(__name__)


def train(tokens: list[Tokens], labels: np.ndarray, epochs: int = 60, lr: float = 3e-3, batch_size: int = 32,
          seed: int = 0, weights: np.ndarray | None = None, **model_kw) -> AttentionFusion:
    """Fit on items' tokens with (optionally weighted) binary cross-entropy; returns the model in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = AttentionFusion(**model_kw)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    y = torch.tensor(labels, dtype=torch.float32)
    w = torch.tensor(weights if weights is not None else np.ones(len(labels)), dtype=torch.float32)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(tokens))
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            logits = model(*collate([tokens[i] for i in idx]))
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, y[idx], reduction="none") * w[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def predict(model: AttentionFusion, tokens: list[Tokens], batch_size: int = 64) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for k in range(0, len(tokens), batch_size):
            out.append(torch.sigmoid(model(*collate(tokens[k : k + batch_size]))).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def load_results(path: str | Path) -> list[ItemResult]:
    return [ItemResult(**json.loads(x)) for x in Path(path).read_text().splitlines() if x.strip()]


def item_tokens(r: ItemResult) -> Tokens:
    raw = {s: (v if r.status.get(s) == "ok" else None) for s, v in r.raw.items()}
    tl = r.timeline or {}
    duration = max([end for pts in tl.values() for _, end, _ in pts] or [1.0])
    return tokens_from(raw, tl, duration)


def main(argv: list[str] | None = None) -> int:
    from pipeline.fusion import FusionModel
    from training.calibrate import _modality_weights, fit_fusion, pick_thresholds

    p = argparse.ArgumentParser(prog="python -m training fusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-results", required=True)
    p.add_argument("--val-results", required=True)
    p.add_argument("--out", default="out/attention_fusion.pt")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    tr = [r for r in load_results(args.train_results)]
    va = [r for r in load_results(args.val_results)]
    tok_tr = [item_tokens(r) for r in tr]
    tok_va = [item_tokens(r) for r in va]
    keep_tr = [i for i, t in enumerate(tok_tr) if len(t.values)]
    keep_va = [i for i, t in enumerate(tok_va) if len(t.values)]
    y_tr = np.array([tr[i].y for i in keep_tr])
    y_va = np.array([va[i].y for i in keep_va])
    w_tr = _modality_weights([tr[i] for i in keep_tr])
    model = train([tok_tr[i] for i in keep_tr], y_tr, epochs=args.epochs, seed=args.seed, weights=w_tr)
    p_va = predict(model, [tok_va[i] for i in keep_va])
    p_tr = predict(model, [tok_tr[i] for i in keep_tr])
    thresholds = pick_thresholds(p_tr, y_tr, 0.05, 0.15)

    cal, wts, b = fit_fusion([tr[i] for i in keep_tr])
    logistic = FusionModel(cal, b, wts)
    p_log = np.array([logistic.combine({s: logistic.calibrate(s, v) for s, v in va[i].raw.items()
                                        if va[i].status.get(s) == "ok" and v is not None}) for i in keep_va])
    metrics = {"val_auc_attention": auc(y_va, p_va), "val_auc_logistic": auc(y_va, p_log),
               "train_items": len(keep_tr), "val_items": len(keep_va)}
    LearnedFusion(model, thresholds, metrics, args.out).save(args.out)
    print(json.dumps(metrics))
    logger.info("attention fusion written to %s (use it with FUSION_CHECKPOINT=%s)", args.out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

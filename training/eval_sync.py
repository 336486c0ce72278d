"""Measure the lip-sync estimators on the dev set.

    python -m training.eval_sync --manifest ../shared/data/dev/manifest.tsv [--split val] [--out out/eval_sync.json]

For every real video_av clip of the split: the clip itself, its messenger-like re-encode, copies with the
audio delayed or advanced by 5/10/15 frames (0.2/0.4/0.6 s, shifted exactly on the decoded samples) and a
copy with another clip's audio. For every fake video_av clip: the clip. Both methods ("motion", the
training-free baseline, and "head", the LR-ASD head) run through ``SyncEstimator.analyse_windows`` on the
pipeline's own dense windows (cached by training/train_sync.py). Reported:

  (a) offset recovery: best offset within +-2 frames of the applied shift (0 for the real clip);
  (b) AUC of ``lip_sync_error``, real vs shifted (per shift size) and real vs swapped;
  (c) mean ``lip_sync_error`` of real vs fake clips per manipulation, and the AUC real vs fake.

Not-applicable results are counted and left out of the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import sync
from training.split import read_manifest, select
from training.train_sync import FeatureCache, audio_variants, swap_partners, video_av

logger = logging.getLogger(__name__)

METHODS = ("motion", "head")


@dataclass(frozen=True)
class Outcome:
    clip: str
    label: str  # real | fake
    manipulation: str
    variant: str  # real, msg, shift+5 ..., swap, fake
    shift: int
    method: str
    error: float | None  # None: not applicable
    best_offset: int | None
    reason: str | None


def run(items, cache: FeatureCache, estimators: dict[str, sync.SyncEstimator]) -> list[Outcome]:
    real = video_av(items, "real")
    partners = swap_partners(real)
    out = []
    for it in video_av(items):
        feat = cache.get(it, "orig")
        if it.label == "real":
            partner = cache.get(partners[it.path], "orig") if it.path in partners else None
            variants = audio_variants(it, feat, cache.get(it, "msg"), partner)
        else:
            variants = [("fake", 0, feat, feat.audio)]
        for variant, shift, f, audio in variants:
            for method, est in estimators.items():
                res = est.analyse_windows(list(f.windows), audio, f.main_track_id)
                ok = isinstance(res, sync.SyncResult)
                out.append(Outcome(it.path, it.label, it.manipulation or "none", variant, shift, method,
                                   res.lip_sync_error if ok else None, res.best_offset_frames if ok else None,
                                   None if ok else res.reason))
    return out


def _auc(neg: list[float], pos: list[float]) -> float | None:
    if not neg or not pos:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([0] * len(neg) + [1] * len(pos), neg + pos))


def summarise(outcomes: list[Outcome]) -> dict:
    """Figures per method (see the module doc)."""
    summary: dict = {}
    for method in METHODS:
        rows = [o for o in outcomes if o.method == method]
        if not rows:
            continue
        done = [o for o in rows if o.error is not None]
        by_variant: dict[str, list[Outcome]] = {}
        for o in done:
            by_variant.setdefault(o.variant, []).append(o)
        real_err = [o.error for o in by_variant.get("real", [])]
        s: dict = {"not_applicable": {}, "recovery": {}, "auc_vs_real": {}, "mean_error": {}, "auc_fake": {}}
        for o in rows:
            if o.error is None:
                s["not_applicable"].setdefault(o.variant, []).append(f"{o.clip}: {o.reason}")
        for variant, group in sorted(by_variant.items()):
            s["mean_error"][variant] = float(np.mean([o.error for o in group]))
            if variant.startswith("shift") or variant in ("real", "msg"):
                s["recovery"][variant] = float(np.mean([abs(o.best_offset - o.shift) <= 2 for o in group]))
        shifted = [o for o in done if o.variant.startswith("shift")]
        if shifted:
            s["recovery"]["all shifted"] = float(np.mean([abs(o.best_offset - o.shift) <= 2 for o in shifted]))
        for size in (5, 10, 15):
            s["auc_vs_real"][f"shift +-{size}"] = _auc(real_err, [o.error for o in shifted if abs(o.shift) == size])
        s["auc_vs_real"]["swap"] = _auc(real_err, [o.error for o in by_variant.get("swap", [])])
        s["auc_vs_real"]["msg (re-encoded real; 0.5 = not flagged)"] = _auc(real_err, [
            o.error for o in by_variant.get("msg", [])])
        fakes = by_variant.get("fake", [])
        for manip in sorted({o.manipulation for o in fakes}):
            errs = [o.error for o in fakes if o.manipulation == manip]
            s["mean_error"][f"fake {manip}"] = float(np.mean(errs))
            s["auc_fake"][manip] = _auc(real_err, errs)
        s["auc_fake"]["all fakes"] = _auc(real_err, [o.error for o in fakes])
        s["counts"] = {v: len(g) for v, g in sorted(by_variant.items())}
        summary[method] = s
    return summary


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def report(summary: dict, title: str) -> str:
    lines = [f"## {title}", ""]
    for key, head in (("recovery", "offset recovery (within +-2 frames)"), ("auc_vs_real", "AUC vs real clips"),
                      ("mean_error", "mean lip_sync_error"), ("auc_fake", "AUC real vs fake")):
        rows = sorted({k for s in summary.values() for k in s[key]})
        lines += [f"| {head} | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
        lines += [f"| {r} | " + " | ".join(_fmt(s[key].get(r)) for s in summary.values()) + " |" for r in rows]
        lines.append("")
    counts = {m: s["counts"] for m, s in summary.items()}
    lines.append(f"clips analysed per variant: {json.dumps(counts)}")
    for m, s in summary.items():
        for variant, reasons in s["not_applicable"].items():
            lines.append(f"not applicable ({m}, {variant}): {len(reasons)}: " + "; ".join(reasons[:3]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="val", help="val, train (for reference only: the head was fitted on it)")
    p.add_argument("--head", default=None, help="sync head checkpoint (default: the bundled one)")
    p.add_argument("--out", default=None, help="write outcomes and summary as JSON here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from models.sync_head import load

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    items = select(video_av(read_manifest(args.manifest)), args.split)
    cache = FeatureCache()
    _, lrasd = cache.models()
    estimators = {"motion": sync.SyncEstimator(lrasd, method="motion"),
                  "head": sync.SyncEstimator(lrasd, head=load(args.head), method="head")}
    outcomes = run(items, cache, estimators)
    summary = summarise(outcomes)
    title = f"{args.split} split" + (" (TRAIN: the head was fitted here; reference only)" if args.split == "train"
                                     else "")
    logger.info("\n%s\n(%.0fs)", report(summary, title), time.perf_counter() - t0)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "outcomes": [o.__dict__ for o in outcomes]},
                                             indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Leave-one-source-out (LOSO): the evaluation that predicts how the detector does on generators it never saw.

A source is the second path component of a manifest item (``B_fake_av/sadtalker/...`` → ``sadtalker``). A fold
holds one fake source out *together with the reals tied to it* by the manifest's ``group`` column (the clips
its fakes were made from, the same people), so nothing of that source is on the fitting side.

``folds(items)`` builds the folds; ``per_source(results, items)`` scores each held-out source's fakes against
every real item of the same modality family (video, audio, image) and reports, per source, the AUC of each
detector and of the fused score, how many of its fakes pass as AUTHENTIC, and across sources the mean and the
worst AUC and the share of reals called FAKE.

For the detectors as shipped, nothing is refitted per fold: the table is then the honest starting point, and
``train_share`` says how much of each source the shipped checkpoints were trained on (the committed group
split's train side). Trainers that refit per fold use the same folds.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.report import SLOTS
from training.metrics import auc
from training.split import DEFAULT_SPLIT, ManifestItem, _components, read_split

FUSED = "fused"


def source_of(path: str) -> str:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 else parts[0]


def family_of(modality: str) -> str:
    return "video" if modality in ("video", "video_av") else modality


@dataclass(frozen=True)
class Fold:
    source: str  # the held-out fake source
    held_out: frozenset[str]  # paths: the source's items and every item tied to them by group


def folds(items: Sequence[ManifestItem]) -> list[Fold]:
    """One fold per source that has fakes; its held-out set is closed under group links."""
    comp_of: dict[str, str] = {}
    members: dict[str, list[ManifestItem]] = {}
    for key, comp in _components(list(items)).items():
        members[key] = comp
        for it in comp:
            comp_of[it.path] = key
    by_source: dict[str, list[ManifestItem]] = defaultdict(list)
    for it in items:
        by_source[source_of(it.path)].append(it)
    out = []
    for src in sorted(by_source):
        if not any(it.label == "fake" for it in by_source[src]):
            continue
        held = {it.path for it in by_source[src]}
        for it in by_source[src]:
            held |= {m.path for m in members[comp_of[it.path]]}
        out.append(Fold(src, frozenset(held)))
    return out


@dataclass(frozen=True)
class SourceRow:
    source: str
    family: str
    n_fake: int
    n_real: int  # reals of the family the fakes are scored against
    train_share: float | None  # share of the source's items on the committed split's train side
    auc: dict[str, float | None]  # detector (and "fused") -> AUC of this source's fakes vs the family's reals
    fake_authentic: float | None  # share of this source's fakes the verdict let through as AUTHENTIC
    fake_called_fake: float | None
    # fused AUC against only the reals the fold holds out with the source (the clips it was made from, the same
    # demo page's recordings): no collection or processing difference can stand in for the label there
    fused_auc_own_reals: float | None = None
    n_own_real: int = 0


def _score(r, det: str) -> float | None:
    if det == FUSED:
        return r.fake_probability
    return r.raw.get(det) if r.status.get(det) == "ok" else None


def per_source(results: Sequence, items: Sequence[ManifestItem],
               split_file: str | Path | None = DEFAULT_SPLIT) -> tuple[list[SourceRow], dict]:
    """Per held-out source figures, and a summary (mean/worst fused AUC, reals called FAKE)."""
    by_path: dict[str, list] = defaultdict(list)  # processed copies of an item share its path
    for r in results:
        by_path[r.path].append(r)
    sides = read_split(split_file) if split_file is not None and Path(split_file).is_file() else {}
    reals = defaultdict(list)
    for it in items:
        if it.label == "real":
            reals[family_of(it.modality)].extend(by_path.get(it.path, ()))
    rows = []
    for fold in folds(items):
        fakes = [r for it in items if it.label == "fake" and source_of(it.path) == fold.source
                 for r in by_path.get(it.path, ())]
        if not fakes:
            continue
        fam = family_of(fakes[0].modality)
        negatives = reals[fam]
        aucs = {}
        for det in (*SLOTS, FUSED):
            pos = [s for s in (_score(r, det) for r in fakes) if s is not None]
            neg = [s for s in (_score(r, det) for r in negatives) if s is not None]
            aucs[det] = auc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]) if pos and neg else None
        src_items = [it for it in items if source_of(it.path) == fold.source]
        share = (sum(sides.get(it.path) == "train" for it in src_items) / len(src_items)) if sides else None
        verdicts = [r.verdict for r in fakes]
        own = [r for r in negatives if r.path in fold.held_out]
        pos = [s for s in (_score(r, FUSED) for r in fakes) if s is not None]
        neg = [s for s in (_score(r, FUSED) for r in own) if s is not None]
        own_auc = auc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]) if pos and neg else None
        rows.append(SourceRow(fold.source, fam, len(fakes), len(negatives), share, aucs,
                              verdicts.count("AUTHENTIC") / len(verdicts), verdicts.count("FAKE") / len(verdicts),
                              own_auc, len(own)))
    fused = [r.auc[FUSED] for r in rows if r.auc[FUSED] is not None]
    all_reals = [r for fam in reals.values() for r in fam]
    summary = {
        "sources": len(rows),
        "fused_auc_mean": float(np.mean(fused)) if fused else None,
        "fused_auc_worst": float(np.min(fused)) if fused else None,
        "worst_source": min(rows, key=lambda r: r.auc[FUSED] if r.auc[FUSED] is not None else 2).source
        if fused else None,
        "reals": len(all_reals),
        "real_called_fake": (sum(r.verdict == "FAKE" for r in all_reals) / len(all_reals)) if all_reals else None,
        "real_called_suspicious_or_fake": (sum(r.verdict in ("FAKE", "SUSPICIOUS") for r in all_reals)
                                           / len(all_reals)) if all_reals else None,
        "real_called_fake_by_source": _rate_by_source(all_reals),
    }
    return rows, summary


def _rate_by_source(reals) -> dict[str, dict]:
    by = defaultdict(list)
    for r in reals:
        by[source_of(r.path)].append(r.verdict)
    return {s: {"n": len(v), "fake": v.count("FAKE") / len(v)} for s, v in sorted(by.items())}


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def format_rows(rows: Sequence[SourceRow], summary: dict) -> str:
    dets = (*SLOTS, FUSED)
    head = (f"{'held-out source':<26} {'family':<6} {'fake':>4} {'real':>4} {'train':>5} "
            + " ".join(f"{d[:8]:>8}" for d in dets) + f" {'→AUTH':>6} {'→FAKE':>6} {'own reals':>9} {'fused':>6}")
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r.family, r.source)):
        lines.append(f"{r.source:<26} {r.family:<6} {r.n_fake:>4} {r.n_real:>4} {_f(r.train_share):>5} "
                     + " ".join(f"{_f(r.auc[d]):>8}" for d in dets)
                     + f" {_f(r.fake_authentic):>6} {_f(r.fake_called_fake):>6} {r.n_own_real:>9} "
                     f"{_f(r.fused_auc_own_reals):>6}")
    lines.append("")
    lines.append(f"fused AUC over {summary['sources']} held-out sources: mean {_f(summary['fused_auc_mean'])}, "
                 f"worst {_f(summary['fused_auc_worst'])} ({summary['worst_source']})")
    lines.append(f"reals called FAKE: {_f(summary['real_called_fake'])} of {summary['reals']} "
                 f"(SUSPICIOUS or FAKE: {_f(summary['real_called_suspicious_or_fake'])})")
    worst = sorted(summary["real_called_fake_by_source"].items(), key=lambda kv: -kv[1]["fake"])[:5]
    lines.append("real sources most often called FAKE: "
                 + ", ".join(f"{s} {v['fake']:.2f} (n={v['n']})" for s, v in worst))
    return "\n".join(lines)


def write_csv(rows: Sequence[SourceRow], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "family", "n_fake", "n_real", "train_share", *(f"auc_{d}" for d in (*SLOTS, FUSED)),
                    "fake_authentic", "fake_called_fake", "n_own_real", "auc_fused_own_reals"])
        for r in rows:
            d = asdict(r)
            w.writerow([r.source, r.family, r.n_fake, r.n_real, r.train_share,
                        *(d["auc"][k] for k in (*SLOTS, FUSED)), r.fake_authentic, r.fake_called_fake,
                        r.n_own_real, r.fused_auc_own_reals])

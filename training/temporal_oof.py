"""``python -m training.temporal_oof``: temporal scores for the fusion's fit from heads that never saw their fold.

The temporal head (``models/checkpoints/lrasd_temporal.pt``) learns from dev videos, real and fake, so its scores on
the sources it saw are in-sample and the fusion has had to leave them out. Here the fusion's folds
(``training.evidence_fusion.fusion_folds``: one per source, closed under group links; a synthetic item in the fold of
the real clip it was made from) are packed into a few bins; for each bin a head of one recipe is fitted on every
video outside the bin's folds, and each row of the bin is scored by the runtime's own rule
(``LRASDTemporalDetector.predict_sequences``, the clip score is the mean over windows) on the very embedding
sequences ``make eval`` fed its temporal stage (kept by ``--temporal-features``). Rows are written again with the
temporal score replaced, marked out of fold, under the shipped head's identity, so ``python -m training calibrate``
reads them unchanged:

    python -m training.temporal_oof --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/sync_oof/all/results.jsonl ... --out out/eval/temporal_oof [--ship PATH]

What a head learns from: real videos are real; dev fakes and the synthetic face recipes (``face_blend``,
``face_swap``, ``mouth_swap``, ``gen_upsample``) are fake; the synthetic audio recipes (``av_swap``, ``av_shift``,
``voice_over``, ``voice_resynth``) keep their real clip's frames, so the temporal head never learns from them (it is
still scored on them). ``--variants`` picks the kept copies learned from (``orig``, ``eval-whatsapp``, ...; only
reals have processed copies, so learning from them teaches "re-encoded means real" unless fakes had them too).
``--ship`` fits the chosen recipe on every video and writes the checkpoint (and stops: the registry pins its
sha256, which must move before rows are scored under its identity).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.report import TEMPORAL
from training.evaluate import ItemResult, rescore_parser, sync_variant, write_rescored
from training.split import ManifestItem, read_manifest
from training.synth import FACE_RECIPES
from training.visual_oof import pack_folds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How a head is fitted (``training.temporal_head.FitConfig`` fields and what it learns from)."""

    epochs: int = 13
    l2: float = 0.03
    synthetic: bool = True  # learn from the synthetic face recipes' fakes too
    variants: tuple[str, ...] = ("orig",)
    windows_per_video: int = 8
    balance_sources: bool = False  # every source weighs the same within its class, however many clips it has
    seed: int = 0

    def fit_config(self):
        from training.temporal_head import FitConfig

        return FitConfig(epochs=self.epochs, l2=self.l2, windows_per_video=self.windows_per_video, seed=self.seed)


def temporal_label(it: ManifestItem) -> int | None:
    """1 = its frames were manipulated, 0 = real frames, None = never learned from (a synthetic audio recipe: fake,
    but its frames are its real clip's)."""
    if it.label == "real":
        return 0
    if it.origin and it.manipulation not in FACE_RECIPES:
        return None
    return 1


@dataclass(frozen=True)
class Example:
    path: str
    origin: str  # the real clip a synthetic item was made from ("" otherwise)
    variant: str
    label: int
    seqs: tuple[np.ndarray, ...]


def examples(rows: list[ItemResult], items: dict[str, ManifestItem], cache, recipe: Recipe) -> list[Example]:
    """One example per row (a file under one kept variant) a head may learn from under ``recipe``."""
    out, seen, missing = [], set(), 0
    for r in rows:
        it = items[r.path]
        variant = sync_variant(r.reencode)
        label = temporal_label(it)
        if (label is None or variant not in recipe.variants or (it.origin and not recipe.synthetic)
                or (r.path, variant) in seen or r.status.get(TEMPORAL) != "ok"):
            continue
        seen.add((r.path, variant))
        seqs = cache.get(it.file, variant)
        if not seqs:
            missing += 1
            continue
        out.append(Example(r.path, it.origin, variant, label, tuple(seqs)))
    if missing:
        logger.warning("%d scored video(s) have no kept temporal inputs: not learned from", missing)
    return out


def fit(train: list[Example], head_cfg, recipe: Recipe):
    from training.temporal_head import fit_head

    seqs, labels, vids = [], [], []
    for e in train:
        for s in e.seqs:
            seqs.append(s)
            labels.append(e.label)
            vids.append((e.path, e.variant))
    head, _ = fit_head(seqs, labels, vids, head_cfg, recipe.fit_config(),
                       video_weight=source_weights(train) if recipe.balance_sources else None)
    return head


def source_weights(train: list[Example]) -> dict:
    """(path, variant) -> weight such that, within each class, every source (a synthetic recipe counts as one)
    weighs the same; mean 1 within a class."""
    from training.evidence_fusion import source_of

    key = {(e.path, e.variant): (e.label, source_of(e.path)) for e in train}
    count = Counter(key.values())
    sources = Counter(label for label, _ in count)
    per_class = Counter(e.label for e in train)
    return {v: per_class[k[0]] / (sources[k[0]] * count[k]) for v, k in key.items()}


def score_rows(rows: list[ItemResult], items: dict[str, ManifestItem], train: list[Example], cache, head_cfg,
               recipe: Recipe, fold_of, held, bins: int) -> tuple[dict[int, float | None], Counter, list[dict]]:
    """Row index -> the temporal score of a head fitted without the row's fold, for rows whose temporal stage ran.
    Returns the scores, counts and, per bin, its folds and how many videos (real / fake) it learned from."""
    from models.lrasd_temporal import LRASDTemporalDetector

    todo: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.status.get(TEMPORAL) == "ok":
            todo.setdefault(fold_of[r.path], []).append(i)
    learnable = {e.path for e in train} | {e.origin for e in train if e.origin}
    excluded = {}  # per fold, the clips its rows must not have been learned from (nor anything made from them)
    for fold, idx in todo.items():
        ex = set(held.get(fold, frozenset()))
        ex |= {rows[i].path for i in idx} | {items[rows[i].path].origin for i in idx if items[rows[i].path].origin}
        excluded[fold] = ex & learnable
    out: dict[int, float | None] = {}
    counts: Counter = Counter()
    report = []
    for group in pack_folds(excluded, len(learnable), bins):
        ex = set().union(*(excluded[f] for f in group))
        keep = [e for e in train if e.path not in ex and e.origin not in ex]
        labels = Counter(e.label for e in keep)
        det = LRASDTemporalDetector(fit(keep, head_cfg, recipe), front=None, cfg=head_cfg)
        report.append({"folds": group, "real_learned_from": labels[0], "fake_learned_from": labels[1]})
        for fold in group:
            for i in todo[fold]:
                seqs = cache.get(items[rows[i].path].file, sync_variant(rows[i].reencode))
                probs, _ = det.predict_sequences(seqs or [])
                if not len(probs):
                    out[i] = None
                    counts["no inputs kept"] += 1
                    continue
                out[i] = float(probs.mean())
                counts["scored"] += 1
    return out, counts, report


def ship(path: Path, train: list[Example], head_cfg, recipe: Recipe) -> None:
    from models.lrasd_temporal import save_head_checkpoint

    labels = Counter(e.label for e in train)
    save_head_checkpoint(fit(train, head_cfg, recipe), head_cfg, path, {
        "recipe": asdict(recipe), "inputs": "kept by make eval (--temporal-features)",
        "train_files": sorted({e.path for e in train}), "real_videos": labels[0], "fake_videos": labels[1]})
    logger.info("wrote %s (%d real, %d fake examples)", path, labels[0], labels[1])


def main(argv: list[str] | None = None) -> int:
    import pipeline
    from pipeline.settings import Settings
    from training.calibrate import _read_results
    from training.evaluate import temporal_cache
    from training.evidence_fusion import fusion_folds

    ap = rescore_parser("temporal_oof", __doc__)
    ap.add_argument("--temporal-features", default="out/temporal_cache",
                    help="where `make eval` kept the temporal inputs")
    ap.add_argument("--bins", type=int, default=6, help="heads fitted, each for a group of folds")
    ap.add_argument("--epochs", type=int, default=Recipe.epochs)
    ap.add_argument("--l2", type=float, default=Recipe.l2)
    ap.add_argument("--no-synthetic", action="store_true", help="learn from dev fakes only")
    ap.add_argument("--balance-sources", action="store_true",
                    help="every source weighs the same within its class, however many clips it has")
    ap.add_argument("--head", default=None, metavar="JSON",
                    help='HeadConfig fields instead of the shipped head\'s, e.g. \'{"kind": "conv"}\' (same window)')
    ap.add_argument("--variants", default="orig", help="comma-separated kept copies learned from")
    ap.add_argument("--ship", default=None, help="fit on every video and write the checkpoint here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    recipe = Recipe(epochs=args.epochs, l2=args.l2, synthetic=not args.no_synthetic,
                    variants=tuple(args.variants.split(",")), balance_sources=args.balance_sources)
    p = pipeline.build(Settings(explain=False))
    cache = temporal_cache(p, Path(args.temporal_features))
    if cache is None:
        raise SystemExit("no windowed temporal head on LR-ASD (or no face detector) loads here; set WEIGHTS_DIR")
    head_cfg = p.c.temporal.detector.cfg
    if args.head:
        from dataclasses import replace

        head_cfg = replace(head_cfg, **json.loads(args.head))
        if head_cfg.window != p.c.temporal.detector.cfg.window:
            raise SystemExit("the kept sequences are those at least one shipped window long: keep the window")
    ident = (p.identities[TEMPORAL].name, p.identities[TEMPORAL].sha256)
    items = [it for m in args.manifest for it in read_manifest(m)]
    by_path = {it.path: it for it in items}
    per_file = [[r for r in _read_results(Path(f)) if r.path in by_path] for f in args.results]
    rows = [r for file_rows in per_file for r in file_rows]
    train = examples(rows, by_path, cache, recipe)
    labels = Counter(e.label for e in train)
    logger.info("%d real and %d fake video examples; recipe %s", labels[0], labels[1], recipe)
    if args.ship:  # the registry pins the checkpoint's sha256: the pin moves before any row is scored with it
        from models.weights import sha256_of

        ship(Path(args.ship), train, head_cfg, recipe)
        logger.info("now pin sha256 %s for lrasd_temporal in models/weights.py, then run again without --ship",
                    sha256_of(Path(args.ship)))
        return 0
    fold_of, held = fusion_folds(items)
    scores, total, bins = score_rows(rows, by_path, train, cache, head_cfg, recipe, fold_of, held, args.bins)
    out_root = Path(args.out)
    write_rescored(args.results, per_file, out_root, scores, TEMPORAL, ident, tag_unscored=False)
    (out_root / "summary.json").write_text(json.dumps({"recipe": asdict(recipe), "head": asdict(head_cfg),
                                                       "identity": ident, "bins": bins,
                                                       "counts": dict(total),
                                                       "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    logger.info("temporal rows out of fold: %s (%.0fs)", dict(total), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

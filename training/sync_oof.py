"""``python -m training.sync_oof``: lip-sync scores for the fusion's fit, each from a head that never saw its fold.

The shipped lip-sync head (``models/checkpoints/sync_head.pt``, written by ``python -m training.sync_loso --ship``)
is fitted on every real talking-face clip of the dev set. Its scores on those clips, on their processed copies and
on the synthetic fakes made from them are in-sample: fed to the fusion they would buy lip sync a reliability it
does not have on footage it never saw. So for every fold of the fusion (``training.evidence_fusion.fusion_folds``:
one per source, closed under group links, a synthetic item in the fold of the real clip it was made from) the
head and its calibration are refitted with the shipped recipe (the checkpoint's ``meta.fit``) on the reals outside
the fold, and each of the fold's rows is scored by the runtime's own estimator on the very features ``make eval``
fed its lip-sync stage (kept by ``--sync-features``). The rows are written again, lip-sync score replaced and
marked out of fold, with the shipped head's identity, so ``python -m training calibrate`` reads them unchanged:

    python -m training.sync_oof --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/all/results.jsonl out/eval/synth/results.jsonl ... --out out/eval/sync_oof

A row scored before ``make eval`` kept these inputs has them made again (the same decoding, the same processing).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

from pipeline.report import LIP_SYNC
from training.evaluate import (
    OOF_STATUS_MISSING,  # noqa: F401 (the status a row without kept inputs gets)
    ItemResult,
    mark_out_of_fold,
    rescore_parser,
    sync_variant,
    write_rescored,
)
from training.split import ManifestItem, read_manifest

logger = logging.getLogger(__name__)



def shipped_config():
    """The ``sync_loso.Config`` the shipped head was fitted with (its checkpoint's ``meta.fit``)."""
    from models.sync_head import FILENAME
    from models.weights import resolve
    from training.sync_loso import Config

    blob = torch.load(resolve("sync_head"), map_location="cpu", weights_only=False)
    fit = (blob.get("meta") or {}).get("fit")
    if not fit:
        raise SystemExit(f"{FILENAME} records no fitting recipe (meta.fit): refit it with "
                         "`python -m training.sync_loso --ship models/checkpoints/sync_head.pt`")
    return Config(**fit)


def extract_missing(cache, item: ManifestItem, variant: str, reencode: str | None):
    """Features of a row scored before ``make eval`` kept them: decoded again exactly as the eval did (the file, or
    the same processing of it) and stored, so the next run finds them."""
    import tempfile

    from training.evaluate import _kind
    from training.reencode import process
    from training.train_sync import extract

    face, lrasd = cache.models()
    if reencode is None:
        return cache.get(item, "orig")
    with tempfile.TemporaryDirectory() as tmp:
        feat = extract(process(item.file, tmp, reencode, kind=_kind(item.modality)), face, lrasd)
    cache.put(item, variant, feat)
    return feat


def score_rows(rows: list[ItemResult], items: dict[str, ManifestItem], variants: list, cfg, lrasd, cache,
               fold_of: dict[str, str], held: dict[str, frozenset[str]], extract=extract_missing
               ) -> tuple[dict[int, float | None], Counter]:
    """Row index -> the lip-sync score of a head fitted without the row's fold (None: not applicable), for the rows
    whose lip-sync stage ran. Features ``make eval`` did not keep are made again by ``extract`` (None: the row gets
    no score)."""
    from tqdm import tqdm

    from pipeline import sync
    from training.sync_loso import fit_variant

    todo: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r.status.get(LIP_SYNC) == "ok":
            todo[fold_of[r.path]].append(i)
    out: dict[int, float | None] = {}
    counts: Counter = Counter()
    for fold in tqdm(sorted(todo), desc="lip-sync heads per fold", unit="fold", file=sys.stderr):
        excluded = set(held.get(fold, frozenset()))
        excluded |= {items[rows[i].path].origin or rows[i].path for i in todo[fold]}
        train = [v for v in variants if v.clip not in excluded and v.kind != "fake"]
        head, _ = fit_variant(train, cfg)
        est = sync.SyncEstimator(lrasd, head=head, max_offset=head.max_offset, method="head")
        for i in todo[fold]:
            it = items[rows[i].path]
            variant = sync_variant(rows[i].reencode)
            if cache.has(it, variant):
                feat = cache.get(it, variant)
            elif extract is not None:
                feat = extract(cache, it, variant, rows[i].reencode)
                counts["features made again"] += 1
            else:
                out[i] = None
                counts["no features kept"] += 1
                continue
            res = est.analyse_windows(list(feat.windows), feat.audio, feat.main_track_id)
            if hasattr(res, "lip_sync_error"):
                out[i] = float(res.lip_sync_error)
                counts["scored"] += 1
            else:
                out[i] = None
                counts["not applicable out of fold"] += 1
    return out, counts


def rewrite(r: ItemResult, score: float | None, ident: tuple[str, str]) -> ItemResult:
    return mark_out_of_fold(r, LIP_SYNC, score, ident)


def main(argv: list[str] | None = None) -> int:
    import pipeline
    from pipeline.settings import Settings
    from training.calibrate import _read_results
    from training.evidence_fusion import fusion_folds
    from training.sync_loso import build_variants, fold_of_reals, parse_config
    from training.train_sync import CACHE_DIR, FeatureCache, video_av

    ap = rescore_parser("sync_oof", __doc__)
    ap.add_argument("--sync-features", default=str(CACHE_DIR), help="where `make eval` kept the lip-sync inputs")
    ap.add_argument("--config", default=None,
                    help="dims:motion_weight:calibration[:ridge] instead of the shipped head's recipe (to compare "
                         "recipes on the fusion's own rows; the rows still carry the shipped head's identity)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    p = pipeline.build(Settings(explain=False))
    if not p.c.sync.available or getattr(p.c.sync.detector, "lrasd", None) is None:
        raise SystemExit(f"the lip-sync head is unavailable ({p.c.sync.reason}); set WEIGHTS_DIR")
    ident = (p.identities[LIP_SYNC].name, p.identities[LIP_SYNC].sha256)
    lrasd = p.c.sync.detector.lrasd
    cfg = shipped_config() if not args.config else parse_config(args.config)
    cache = FeatureCache(Path(args.sync_features), face_detector=p.c.face.detector, lrasd=lrasd)

    dev = read_manifest(args.manifest[0])
    items = [it for m in args.manifest for it in read_manifest(m)]
    by_path = {it.path: it for it in items}
    fold_of, held = fusion_folds(items)
    reals = video_av(dev, "real")
    variants = build_variants(reals, cache, lrasd, fold_of_reals(dev), with_tts=False)
    logger.info("%d training variants of %d real clips (%.0fs); recipe %s", len(variants), len(reals),
                time.perf_counter() - t0, cfg.label)

    # every file's rows at once: one head per fold serves the dev set, the synthetic set and every processed copy
    per_file = [[r for r in _read_results(Path(f)) if r.path in by_path] for f in args.results]
    rows = [r for file_rows in per_file for r in file_rows]
    scores, total = score_rows(rows, by_path, variants, cfg, lrasd, cache, fold_of, held)
    out_root = Path(args.out)
    write_rescored(args.results, per_file, out_root, scores, LIP_SYNC, ident)
    (out_root / "summary.json").write_text(json.dumps({"recipe": cfg.__dict__, "identity": ident,
                                                       "counts": dict(total),
                                                       "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    logger.info("lip-sync rows out of fold: %s (%.0fs)", dict(total), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

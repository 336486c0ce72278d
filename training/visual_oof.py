"""``python -m training.visual_oof``: visual scores for the fusion's fit from SBI models that never saw their fold.

The self-blended-image detector (``training.train_sbi``, ``models/checkpoints/mesoinception_sbi.pt``) learns from
real faces only, every dev real among them, so its scores on those reals, their processed copies and the synthetic
fakes made from them are in-sample. Here the fusion's folds (``training.evidence_fusion.fusion_folds``: one per
source, closed under group links) are packed into a few bins; for each bin the shipped recipe (the checkpoint's
``meta.config``) is trained again on the real faces outside every fold of the bin, and each row of the bin is
scored by the runtime's own rule (``pipeline.stages.score_visual_crops``) on the very crops ``make eval`` fed its
visual stage (kept by ``--visual-features``). Rows are written again with the visual score replaced, marked out
of fold, under the SBI detector's identity, so ``python -m training calibrate`` reads them unchanged:

    python -m training.visual_oof --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/sync_oof/all/results.jsonl ... --out out/eval/visual_oof [--ship PATH]

The training faces are the kept crops of the dev reals themselves (at most ``--crops`` per file, evenly spaced), so
the model learns from exactly what it is later shown. ``--ship`` trains the same recipe on every real and writes the
checkpoint (and stops: the registry pins its sha256, which must move before rows are scored under its identity).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipeline.report import VISUAL
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

VARIANT = "mesoinception_sbi"
MODALITIES = ("video_av", "video", "image")


def shipped_config(path: Path | None = None):
    """The ``SBIConfig`` the shipped SBI checkpoint was trained with (its ``meta.config``)."""
    from models.weights import resolve
    from training.train_sbi import SBIConfig

    blob = torch.load(path or resolve(VARIANT), map_location="cpu", weights_only=False)
    cfg = (blob.get("meta") or {}).get("config")
    if not cfg:
        raise SystemExit("the SBI checkpoint records no training recipe (meta.config): retrain it with "
                         "`python -m training.visual_oof --ship models/checkpoints/mesoinception_sbi.pt`")
    return SBIConfig(**cfg)


def real_files(dev: list[ManifestItem], cache, per_file: int, variants: tuple[str, ...] = ("orig",)):
    """``TrainFile``s of the dev reals with a face, from the crops ``make eval`` kept (at most ``per_file`` crops,
    evenly spaced over every track), one per kept variant of each real ("orig", "eval-whatsapp", ...)."""
    out, missing = [], 0
    for it in dev:
        if it.label != "real" or it.modality not in MODALITIES:
            continue
        for variant in variants:
            got = cache.get(it.file, variant)
            if got is not None:
                out.append(_train_file(it, got, per_file))
            elif variant == "orig":
                missing += 1
    if missing:
        logger.warning("%d dev real(s) have no kept visual crops (no face, or not evaluated with "
                       "--visual-features): not learned from", missing)
    return out


def _train_file(it: ManifestItem, got, per_file: int):
    from training.train_visual import FileCrops, TrainFile

    crops, substantial = got
    ids = list(crops)
    stack = np.concatenate([crops[t] for t in ids])
    track_ids = np.concatenate([np.full(len(crops[t]), t) for t in ids])
    pick = np.unique(np.linspace(0, len(stack) - 1, min(per_file, len(stack))).round().astype(int))
    return TrainFile(it, {"orig": FileCrops(stack[pick], track_ids[pick], tuple(substantial))})


def pack_folds(excluded: dict[str, set[str]], n_reals: int, bins: int) -> list[list[str]]:
    """Folds packed into ``bins`` groups, each fold into the group whose excluded reals grow least (a group
    excludes the union of its folds' reals), largest folds first; ties go to the group holding fewest reals out."""
    groups: list[list[str]] = [[] for _ in range(bins)]
    held: list[set[str]] = [set() for _ in range(bins)]
    for fold in sorted(excluded, key=lambda f: (-len(excluded[f]), f)):
        cost = [(len(excluded[fold] - h), len(h | excluded[fold]), b) for b, h in enumerate(held)]
        _, _, best = min(cost)
        groups[best].append(fold)
        held[best] |= excluded[fold]
    for g, h in zip(groups, held, strict=True):
        logger.info("bin of %d fold(s): %d of %d learnable clips held out", len(g), len(h), n_reals)
    return [g for g in groups if g]


def _model_key(files, keep, cfg) -> str:
    """What a bin's model is a function of: the recipe and the exact crops it learned from."""
    import hashlib

    used = sorted({(files[i].item.path, len(files[i].sources["orig"]), int(files[i].sources["orig"].crops.sum()))
                   for i, _ in keep})
    return hashlib.sha256(json.dumps([cfg.__dict__, used, sorted(keep)], default=str).encode()).hexdigest()[:16]


def score_rows(rows: list[ItemResult], items: dict[str, ManifestItem], files, points, cfg, cache, fold_of, held,
               bins: int, aggregation: str, model_dir: Path | None = None, reverse: bool = False
               ) -> tuple[dict[int, float | None], Counter, list[dict]]:
    """Row index -> the visual score of an SBI model trained without the row's fold, for rows whose visual stage
    ran. Returns the scores, counts and, per bin, its folds and how many reals it learned from. With ``model_dir``
    each bin's model is kept there under the identity of its recipe and crops, and found again next time."""
    from tqdm import tqdm

    from models.mesonet import MesoNetDetector
    from pipeline.stages import score_visual_crops
    from training.train_sbi import fit
    from training.train_visual import released_model

    todo: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.status.get(VISUAL) == "ok":
            todo.setdefault(fold_of[r.path], []).append(i)
    learnable = {f.item.path for f in files}
    excluded = {}  # per fold, the reals its rows must not have been learned from
    for fold, idx in todo.items():
        ex = set(held.get(fold, frozenset()))
        ex |= {items[rows[i].path].origin or rows[i].path for i in idx}
        excluded[fold] = ex & learnable
    out: dict[int, float | None] = {}
    counts: Counter = Counter()
    report = []
    packed = pack_folds(excluded, len(learnable), bins)
    for group in tqdm(packed[::-1] if reverse else packed, desc="SBI models per bin", unit="bin",
                      file=sys.stderr):
        ex = set().union(*(excluded[f] for f in group))
        keep = {k: v for k, v in points.items() if files[k[0]].item.path not in ex}
        learned = {files[k[0]].item.path for k in keep}
        stored = model_dir / f"sbi-{_model_key(files, keep, cfg)}.pt" if model_dir is not None else None
        if stored is not None and stored.is_file():
            from models.mesonet import load_checkpoint

            model = load_checkpoint(stored, "mesoinception4")
            counts["bin models reused"] += 1
        else:
            model = fit(released_model(), files, keep, cfg)
            if stored is not None:
                from training.train_visual import save_checkpoint

                tmp = stored.with_suffix(".tmp")  # another process may be reading the folder
                save_checkpoint(model, tmp, {"config": cfg.__dict__, "held_out_folds": group})
                tmp.replace(stored)
        det = MesoNetDetector(model, device="cpu", batch_size=64)
        report.append({"folds": group, "reals_learned_from": len(learned),
                       "reals_held_out": len({f.item.path for f in files} - learned)})
        for fold in group:
            for i in todo[fold]:
                got = cache.get(items[rows[i].path].file, sync_variant(rows[i].reencode))
                if got is None:
                    out[i] = None
                    counts["no inputs kept"] += 1
                    continue
                crops, substantial = got
                out[i] = float(score_visual_crops(det.predict, crops, substantial, aggregation)[0])
                counts["scored"] += 1
    return out, counts, report


def rewrite(r: ItemResult, score: float | None, ident: tuple[str, str]) -> ItemResult:
    return mark_out_of_fold(r, VISUAL, score, ident)


def ship(path: Path, files, points, cfg) -> None:
    from training.train_sbi import fit
    from training.train_visual import released_model, save_checkpoint

    model = fit(released_model(), files, points, cfg)
    save_checkpoint(model, path, {"base": "mesoinception_df", "recipe": "self-blended images (SBI)",
                                  "config": cfg.__dict__, "crops": "kept by make eval (--visual-features)",
                                  "train_files": sorted({f.item.path for f in files})})
    logger.info("wrote %s", path)


def main(argv: list[str] | None = None) -> int:
    import pipeline
    from pipeline.settings import Settings
    from training.calibrate import _read_results
    from training.evaluate import visual_cache
    from training.evidence_fusion import fusion_folds
    from training.train_sbi import crop_landmarks

    ap = rescore_parser("visual_oof", __doc__)
    ap.add_argument("--visual-features", default="out/visual_cache", help="where `make eval` kept the face crops")
    ap.add_argument("--bins", type=int, default=6, help="SBI models trained, each for a group of folds")
    ap.add_argument("--crops", type=int, default=32, help="training crops per real file at most")
    ap.add_argument("--train-variants", default="orig",
                    help="comma-separated kept copies of each real to learn from: orig, eval-whatsapp, ...")
    ap.add_argument("--steps", type=int, default=None, help="instead of the shipped recipe's")
    ap.add_argument("--ship", default=None, help="first train on every real and write the checkpoint here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reverse", action="store_true",
                    help="train the bins last first: a second one-thread process beside a first one shares the work "
                         "(bin models are kept under --out/models and reused)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    cfg = shipped_config()
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    base = pipeline.build(Settings(explain=False))
    cache = visual_cache(base, Path(args.visual_features))
    if cache is None:
        raise SystemExit("no face or visual detector loads here; set WEIGHTS_DIR")
    dev = read_manifest(args.manifest[0])
    items = [it for m in args.manifest for it in read_manifest(m)]
    by_path = {it.path: it for it in items}
    files = real_files(dev, cache, args.crops, tuple(args.train_variants.split(",")))
    points = crop_landmarks(files)
    logger.info("%d real files, %d crops with landmarks (%.0fs); recipe %s", len(files), len(points),
                time.perf_counter() - t0, cfg)
    if args.ship:  # the registry pins the checkpoint's sha256: the pin moves before any row is scored with it
        from models.weights import sha256_of

        ship(Path(args.ship), files, points, cfg)
        logger.info("now pin sha256 %s for mesoinception_sbi in models/weights.py, then run again without --ship",
                    sha256_of(Path(args.ship)))
        return 0
    p = pipeline.build(Settings(explain=False, mesonet_variant=VARIANT))
    if not p.c.visual.available:
        raise SystemExit(f"the SBI detector is unavailable: {p.c.visual.reason}")
    ident = (p.identities[VISUAL].name, p.identities[VISUAL].sha256)
    prep = p._visual_preprocess()
    if (prep.crop, p.c.visual.detector.input_size) != (cache.crop, cache.input_size):
        raise SystemExit(f"the SBI detector wants {prep.crop} {p.c.visual.detector.input_size} px crops, the kept "
                         f"ones are {cache.crop} {cache.input_size} px")
    aggregation = prep.aggregation
    fold_of, held = fusion_folds(items)

    per_file = [[r for r in _read_results(Path(f)) if r.path in by_path] for f in args.results]
    rows = [r for file_rows in per_file for r in file_rows]
    scores, total, bins = score_rows(rows, by_path, files, points, cfg, cache, fold_of, held, args.bins,
                                     aggregation, model_dir=Path(args.out) / "models", reverse=args.reverse)
    out_root = Path(args.out)
    write_rescored(args.results, per_file, out_root, scores, VISUAL, ident, tag_unscored=False)
    (out_root / "summary.json").write_text(json.dumps({"recipe": cfg.__dict__, "identity": ident, "bins": bins,
                                                       "counts": dict(total),
                                                       "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    logger.info("visual rows out of fold: %s (%.0fs)", dict(total), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m training.audio_oof``: audio scores for the fusion's fit from AASIST-ft models that never saw their fold.

AASIST-ft (``models/checkpoints/aasist_ft.pt``) is fine-tuned on dev clips: TTS and vocoder fakes, real speech and
the soundtracks of real videos. On the sources it learned from, its scores are in-sample, so the fusion has had to
leave those rows out and the per-source table reported them as they were. Here the fusion's folds
(``training.evidence_fusion.fusion_folds``) that hold any clip it learned from are packed into a few bins; for each
bin the shipped recipe (the checkpoint's own training config, augmentation and seed) is fitted again on its clips
outside the bin's folds, and each row of the bin is scored by the runtime's rule (the clip score is the mean window
P(fake), ``pipeline.audio.score_audio``) on the very windows ``make eval`` fed its audio stage (kept by
``--audio-features``). A row whose fold holds no clip the checkpoint learned from is already out of fold and keeps
its score. Rows are written again under the shipped detector's identity, marked out of fold, so
``python -m training calibrate`` reads them unchanged:

    python -m training.audio_oof --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/temporal_oof/all/results.jsonl ... --out out/eval/audio_oof

Cost: the frozen part (sinc front-end .. residual block 3, ~95 % of the compute) runs once per window, through
ONNX Runtime, and is cached as float16 per kept file under ``out/audio_front``; a bin's fit and its rows' scores
then run on those features. ``--jobs 2`` runs two one-thread processes side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.report import AUDIO
from training.evaluate import rescore_parser, sync_variant, write_rescored
from training.split import read_manifest
from training.visual_oof import pack_folds

logger = logging.getLogger(__name__)

FRONT_CACHE = Path("out/audio_front")


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs, picklable: which windows a bin learns from and which rows it scores."""

    train_cfg: dict  # training.train_audio.TrainConfig fields (augment as a dict)
    released_sha: str
    train_features: str  # .npy of the training windows' frozen-front features
    train_label: list[int]
    train_strata: list[str]
    train_clip_path: list[str]  # per window
    row_features: dict[int, str]  # row index -> .npy of its kept windows' frozen-front features


def train_config(fields: dict):
    """A TrainConfig from its fields, ``augment`` included (as ``asdict`` or the checkpoint's meta hold them)."""
    from training.train_audio import AugmentConfig, TrainConfig

    fields = dict(fields)
    aug = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.pop("augment").items()}
    return TrainConfig(**fields, augment=AugmentConfig(**aug))


LEARN_FROM = ("checkpoint", "dev", "dev+synth")
VOICE_FAKES = ("tts", "vocoder", "voice_conversion")  # dev fakes whose voice is synthetic
SYNTH_VOICES = ("voice_over", "voice_resynth")  # synthetic recipes whose soundtrack is synthetic speech


def learnable_items(items: list, learn_from: str, meta: dict) -> list:
    """The clips a model of recipe ``learn_from`` learns from (manifest order): ``checkpoint`` = those the shipped
    checkpoint lists; ``dev`` = every dev voice clip (real audio, real videos' soundtracks, TTS, vocoder and voice
    conversion fakes); ``dev+synth`` = also the synthetic ``voice_over`` and ``voice_resynth`` soundtracks."""
    from training.train_audio import is_audio_item

    if learn_from == "checkpoint":
        listed = set(learned_from(meta))
        return [it for it in items if it.path in listed]
    if learn_from not in LEARN_FROM:
        raise ValueError(f"learn_from must be one of {LEARN_FROM}, not {learn_from!r}")
    out = [it for it in items if not it.origin and (
        is_audio_item(it) or (it.modality == "audio" and it.label == "fake" and it.manipulation in VOICE_FAKES))]
    if learn_from == "dev+synth":
        out += [it for it in items if it.origin and it.label == "fake" and it.manipulation in SYNTH_VOICES]
    return out


def learned_from(meta: dict) -> list[str]:
    paths = meta.get("train_paths") or []
    if not paths:
        raise SystemExit("the audio checkpoint does not list the clips it learned from (meta.train_paths)")
    return list(paths)


@dataclass
class TrainingWindows:
    features: Path  # .npy of the frozen-front features, one per window (once computed)
    label: list[int]
    strata: list[str]
    clip_path: list[str]  # per window
    pending: tuple[str, str] | None  # (windows .npy, features .npy) still to run through the front

    def done(self) -> None:
        if self.pending is not None and self.features.exists():
            Path(self.pending[0]).unlink(missing_ok=True)  # the raw windows only fed the front


def training_windows(items: list, cfg, sha: str, front_root: Path) -> TrainingWindows:
    """The recipe's augmented windows of ``items`` (``training.train_audio.build_windows``, cached per clip), with
    where their frozen-front features are (or are to be) cached; keyed by the windows' recipe and clips."""
    from training.train_audio import build_windows

    ws = build_windows(items, cfg.augment, cfg.seed, split_file=None)
    if len(ws.paths) != len(items):
        logger.warning("%d learned-from clip(s) give no window now", len(items) - len(ws.paths))
    key = hashlib.sha1(json.dumps([ws.paths, len(ws), asdict(cfg.augment), cfg.seed]).encode()).hexdigest()[:16]
    feats = front_root / sha[:16] / f"train-{key}.npy"
    pending = None
    if not feats.exists():
        raw = front_root / sha[:16] / f"train-{key}-windows.npy"
        raw.parent.mkdir(parents=True, exist_ok=True)
        np.save(raw, ws.windows)
        pending = (str(raw), str(feats))
    return TrainingWindows(feats, ws.label.tolist(), list(ws.strata), [ws.paths[c] for c in ws.clip], pending)


def plan_refit(rows: list, by_path: dict, fold_of: dict[str, str], held: dict[str, frozenset[str]],
               learnable: set[str]) -> tuple[dict[str, list[int]], dict[str, set[str]]]:
    """(fold -> indices of its rows the audio stage scored, fold -> the learned-from clips it must not have seen,
    for folds holding any): a fold's rows, the clips it holds out and the real clips its synthetic rows were made
    from, as far as the checkpoint learned from them."""
    todo: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.status.get(AUDIO) == "ok":
            todo.setdefault(fold_of[r.path], []).append(i)
    refit: dict[str, set[str]] = {}
    for fold, idx in todo.items():
        ex = set(held.get(fold, frozenset()))
        ex |= {rows[i].path for i in idx} | {by_path[rows[i].path].origin for i in idx if by_path[rows[i].path].origin}
        if ex & learnable:
            refit[fold] = ex & learnable
    return todo, refit


def row_front_path(root: Path, sha: str, kept: Path) -> Path:
    """Where the frozen-front features of one kept-windows file go (keyed like the file: by content)."""
    return root / sha[:16] / f"{kept.stem}.npy"


def _front_features_job(args: tuple) -> int:
    """Worker: frozen-front features of windows, written to .npy files (skipped where present)."""
    jobs, sha, threads = args
    from models.aasist import AASISTDetector
    from training.train_audio import fast_front

    torch.set_num_threads(threads)
    det = AASISTDetector.load(variant="aasist", device="cpu")
    run = fast_front(det.model, sha, threads=threads)
    done = 0
    for src, dest in jobs:
        dest = Path(dest)
        if dest.exists():
            continue
        windows = np.load(src) if str(src).endswith(".npy") else _kept_windows(src)
        parts = []
        with torch.inference_mode():
            for i in range(0, len(windows), 2):
                parts.append(run(torch.from_numpy(np.ascontiguousarray(windows[i:i + 2], np.float32)))
                             .numpy().astype(np.float16))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp.npy")
        np.save(tmp, np.concatenate(parts) if parts else np.zeros((0,), np.float16))
        tmp.replace(dest)
        done += 1
    return done


def _kept_windows(npz: str) -> np.ndarray:
    with np.load(npz) as z:
        return z["windows"]


def score_rows(model, plan: Plan, rows: list[int]) -> dict[int, float | None]:
    """Row index -> mean window P(fake) of ``model`` on the row's cached frozen-front features."""
    from training.train_audio import clip_scores

    out: dict[int, float | None] = {}
    for i in rows:
        f = np.load(plan.row_features[i])
        out[i] = clip_scores(model, f, np.zeros(len(f), np.int64))[0] if len(f) else None
    return out


def _bin_job(args: tuple) -> tuple[int, dict[int, float | None], dict]:
    """Worker: fit bin ``k``'s model on the windows of clips outside it, then score the bin's rows."""
    k, plan, excluded, rows, threads = args
    from training.train_audio import fit, released_model

    torch.set_num_threads(threads)
    cfg = train_config(plan.train_cfg)
    feats = np.load(plan.train_features, mmap_mode="r")
    keep = np.array([p not in excluded for p in plan.train_clip_path])
    idx = np.flatnonzero(keep)
    label = np.asarray(plan.train_label)[idx]
    model = released_model(cfg.variant)
    t0 = time.perf_counter()
    fit(model, np.asarray(feats[idx]), label, [plan.train_strata[i] for i in idx], cfg)
    fit_s = time.perf_counter() - t0
    clips = {p for p, kept in zip(plan.train_clip_path, keep, strict=True) if kept}
    return k, score_rows(model, plan, rows), {
        "clips_learned_from": len(clips), "windows_learned_from": int(keep.sum()), "fake_windows": int(label.sum()),
        "rows": len(rows), "fit_seconds": round(fit_s, 1)}


def ship(path: Path, train: TrainingWindows, cfg, learn_from: str, sha: str, jobs: int) -> int:
    """Fit the recipe on every learnable clip and write the checkpoint with the meta a later run reads back."""
    from models.weights import sha256_of
    from training.train_audio import fit, released_model, save_checkpoint

    if train.pending is not None:
        _front_features_job(([train.pending], sha, max(jobs, 1)))
        train.done()
    torch.set_num_threads(max(jobs, 1))
    model = released_model(cfg.variant)
    logs = fit(model, np.asarray(np.load(train.features, mmap_mode="r")), np.asarray(train.label), train.strata, cfg)
    first = dict(zip(train.clip_path[::-1], train.strata[::-1], strict=True))  # clip -> stratum
    aug = asdict(cfg.augment)
    save_checkpoint(model, path, {
        "base": cfg.variant, "frozen": "sinc front-end, first_bn, encoder.0-3", "learn_from": learn_from,
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "augment"}, "augment": aug,
        "clips": dict(sorted(Counter(first.values()).items())), "windows": dict(Counter(train.strata)),
        "epochs": logs, "train_paths": list(dict.fromkeys(train.clip_path))})
    logger.info("wrote %s: now pin sha256 %s for aasist_ft in models/weights.py, then run again without --ship",
                path, sha256_of(path))
    return 0


def _pool(jobs: int):
    import multiprocessing as mp

    return mp.get_context("spawn").Pool(jobs) if jobs > 1 else None


def _map(pool, fn, tasks):
    return pool.imap_unordered(fn, tasks) if pool is not None else map(fn, tasks)


def main(argv: list[str] | None = None) -> int:
    import pipeline
    from models.aasist import AASISTDetector
    from models.weights import sha256_of
    from pipeline.settings import Settings
    from training.calibrate import _read_results
    from training.evaluate import audio_cache
    from training.evidence_fusion import CHECKPOINTS, FITTED_ON_DEV, fusion_folds
    ap = rescore_parser("audio_oof", __doc__)
    ap.add_argument("--audio-features", default="out/audio_inputs", help="where `make eval` kept the windows")
    ap.add_argument("--front-cache", default=str(FRONT_CACHE))
    ap.add_argument("--bins", type=int, default=6, help="models fitted, each for a group of folds")
    ap.add_argument("--jobs", type=int, default=2, help="one-thread processes side by side")
    ap.add_argument("--learn-from", choices=LEARN_FROM, default="checkpoint",
                    help="checkpoint: the shipped checkpoint's clips (its scores made out of fold); dev, dev+synth: "
                         "another recipe, judged the same way (rows written under the shipped identity)")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="instead of one pass over the windows")
    ap.add_argument("--ship", default=None, help="fit the recipe on every learnable clip, write the checkpoint here "
                                                 "and stop (the registry pins its sha256)")
    ap.add_argument("--features-only", action="store_true",
                    help="stop once every frozen-front feature is cached (e.g. while other runs are still scoring)")
    ap.add_argument("--check", type=int, default=20,
                    help="rows already out of fold rescored by the shipped model, to show the cached path agrees")
    ap.add_argument("--rescore-untouched", action="store_true",
                    help="score every row of the folds it never learned from with the shipped checkpoint too (the "
                         "rows came from another audio detector, e.g. AUDIO_DETECTOR=whisper_head)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()

    from models.audio_by_kind import member_for
    from models.registry import identity

    p = pipeline.build(Settings(explain=False))
    cache = audio_cache(p, Path(args.audio_features))
    # AASIST-ft itself, or audio_by_kind's member for videos (the rows it scores at runtime are the ones refitted)
    det = member_for(p.c.audio.detector, "video") if p.c.audio.available else None
    if cache is None or det is None or not isinstance(det, AASISTDetector):
        raise SystemExit(f"no AASIST audio detector loads here ({p.c.audio.reason}); set WEIGHTS_DIR")
    ident = (p.identities[AUDIO].name, p.identities[AUDIO].sha256)  # what the rows are written under
    variant = "aasist:" + det.weights_info.name if ":" not in det.weights_info.name else det.weights_info.name
    own = identity(variant, det)
    if own.name not in FITTED_ON_DEV:
        raise SystemExit(f"the audio detector {own.name} was not fitted on dev clips: its scores are out of fold")
    ckpt = CHECKPOINTS / FITTED_ON_DEV[own.name]
    if sha256_of(ckpt) != own.sha256:
        raise SystemExit(f"{ckpt} is not the checkpoint the pipeline loaded ({own.sha256[:12]})")
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    meta = blob.get("meta") or {}
    # the shipped checkpoint's recipe exactly (``training.train_audio.train`` wrote it into the meta)
    cfg = train_config({**meta["train_config"], "augment": meta["augment"]})
    if args.steps_per_epoch:
        from dataclasses import replace

        cfg = replace(cfg, steps_per_epoch=args.steps_per_epoch)
    released = AASISTDetector.load(variant=cfg.variant, device="cpu")
    sha = released.weights_info.sha256

    items = [it for m in args.manifest for it in read_manifest(m)]
    by_path = {it.path: it for it in items}
    if args.learn_from == "checkpoint":
        missing = sorted(set(learned_from(meta)) - by_path.keys())
        if missing:
            raise SystemExit(f"{len(missing)} clip(s) the checkpoint learned from are not in the manifests, e.g. "
                             f"{missing[0]}: pass the manifest it was trained from")
    learn_items = learnable_items(items, args.learn_from, meta)
    learnable = {it.path for it in learn_items}
    front_root = Path(args.front_cache)
    train = training_windows(learn_items, cfg, sha, front_root)
    if args.ship:
        return ship(Path(args.ship), train, cfg, args.learn_from, sha, args.jobs)
    per_file = [[r for r in _read_results(Path(f)) if r.path in by_path] for f in args.results]
    rows = [r for file_rows in per_file for r in file_rows]
    fold_of, held = fusion_folds(items)

    todo, refit = plan_refit(rows, by_path, fold_of, held, learnable)
    # only the rows this detector scores at runtime (audio_by_kind: the videos'; the other member refits its own)
    todo = {f: kept for f, idx in todo.items()
            if (kept := [i for i in idx if member_for(p.c.audio.detector, rows[i].modality) is det])}
    refit = {f: ex for f, ex in refit.items() if f in todo}
    untouched = [f for f in todo if f not in refit]
    logger.info("%d fold(s) with audio rows: %d hold clips AASIST-ft learned from (refitted), %d do not "
                "(their %d rows are already out of fold)", len(todo), len(refit), len(untouched),
                sum(len(todo[f]) for f in untouched))

    # the shipped checkpoint IS its recipe fitted on every clip: rows of folds it never learned from keep their
    # scores (a sample is checked); another recipe's all-clips model scores them
    keep_untouched = args.learn_from == "checkpoint"
    counts: Counter = Counter()
    rng = np.random.default_rng(0)
    untouched_rows = [i for f in untouched for i in todo[f]]
    if keep_untouched and not args.rescore_untouched:
        check = sorted(rng.choice(untouched_rows, size=min(args.check, len(untouched_rows)), replace=False).tolist()
                       ) if untouched_rows else []
    else:
        check = untouched_rows
    row_feats: dict[int, str] = {}
    jobs: list[tuple[str, str]] = []
    if train.pending is not None:
        jobs.append(train.pending)
    for i in [i for f in refit for i in todo[f]] + check:
        it, variant = by_path[rows[i].path], sync_variant(rows[i].reencode)
        src = cache.path_for(it.file, variant)
        if not src.is_file():
            counts["no inputs kept"] += 1
            continue
        dest = row_front_path(front_root, sha, src)
        row_feats[i] = str(dest)
        if not dest.exists():
            jobs.append((str(src), str(dest)))
    jobs = list(dict.fromkeys(jobs))
    logger.info("frozen-front features: %d file(s) to compute (%d cached)", len(jobs), len(row_feats) + 1 - len(jobs))
    pool = _pool(args.jobs)
    try:
        if jobs:
            from tqdm import tqdm

            # the training set first and alone in its share: it is the largest file
            shares = [jobs[k::args.jobs] for k in range(max(args.jobs, 1))]
            tasks = [(chunk[j:j + 20], sha, 1) for chunk in shares for j in range(0, len(chunk), 20)]
            bar = tqdm(total=len(tasks), desc="frozen front", unit="batch", file=sys.stderr)
            for _ in _map(pool, _front_features_job, tasks):
                bar.update()
            bar.close()
        train.done()
        if args.features_only:
            logger.info("frozen-front features cached (%.0fs)", time.perf_counter() - t0)
            return 0
        plan = Plan(train_cfg=asdict(cfg), released_sha=sha, train_features=str(train.features),
                    train_label=train.label, train_strata=train.strata, train_clip_path=train.clip_path,
                    row_features=row_feats)
        groups = pack_folds(refit, len(learnable), args.bins)
        tasks = [(k, plan, set().union(*(refit[f] for f in g)), [i for f in g for i in todo[f] if i in row_feats], 1)
                 for k, g in enumerate(groups)]
        if not keep_untouched and untouched_rows:
            groups.append(sorted(untouched))
            tasks.append((len(tasks), plan, set(), [i for i in untouched_rows if i in row_feats], 1))
        scores: dict[int, float | None] = {}
        report: list[dict] = [{} for _ in groups]
        for k, got, info in _map(pool, _bin_job, tasks):
            scores.update(got)
            report[k] = {"folds": groups[k], **info}
            logger.info("bin %d of %d: %s", k + 1, len(groups), info)
        if keep_untouched and check:  # the shipped model through the same cached path, on rows already out of fold
            torch.set_num_threads(1)
            shipped = score_rows(det.model, plan, [i for i in check if i in row_feats])
            if args.rescore_untouched:
                scores.update(shipped)
            diff = [] if args.rescore_untouched else \
                [abs(v - rows[i].raw[AUDIO]) for i, v in shipped.items() if v is not None]
            counts["check_rows"] = len(diff)
            counts["check_max_abs_diff"] = float(max(diff)) if diff else float("nan")
            logger.info("cached path vs stored scores, shipped model, %d rows: max |dP| %.2g", len(diff),
                        counts["check_max_abs_diff"])
    finally:
        if pool is not None:
            pool.close()
    counts["no windows"] = sum(v is None for v in scores.values())
    counts["rescored"] = sum(v is not None for v in scores.values())
    out_root = Path(args.out)
    write_rescored(args.results, per_file, out_root, scores, AUDIO, ident, tag_unscored=False)
    (out_root / "summary.json").write_text(json.dumps({
        "identity": ident, "learn_from": args.learn_from, "train_config": asdict(cfg),
        "refitted_folds": sorted(refit),
        "untouched_folds": sorted(untouched), "bins": report,
        "counts": dict(counts), "seconds": round(time.perf_counter() - t0, 1)}, indent=1, default=str))
    logger.info("audio rows out of fold: %s (%.0fs)", dict(counts), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m training temporal --manifest M``: train the temporal detector on face-track clips.

    --arch lrasd_head (default) a small temporal head over FROZEN LR-ASD visual embeddings of the pipeline's
                      25 fps demo face crops (``models.lrasd_temporal``): the embedded temporal detector. Writes
                      ``models/checkpoints/lrasd_temporal.pt`` (head + config + metadata only).
    --arch videomae   fine-tune a VideoMAE classifier head (optionally the backbone) on 16-frame aligned
                      face clips; ``--backbone`` is a hub id/dir (production: MCG-NJU/videomae-base) or a
                      named tiny config (videomae_unittest, for tests). Writes a save_pretrained directory
                      that ``VIDEOMAE_CHECKPOINT=<dir>`` makes the pipeline use. Giving ``--backbone`` without
                      ``--arch`` selects this arch.

Clips come from the pipeline's own face code (``pipeline.features``), on the TRAIN side of the committed
group split; the validation AUC (per video: mean window/chunk score) is reported and stored with the checkpoint.
Manifests not covered by the committed split (e.g. a test's) are split by group on the fly.

lrasd_head data: every train video as-is plus its ``training.reencode`` copies (``whatsapp``, ``whatsapp_low``),
each re-run through decode → faces → dense windows; per source one clean and ``--aug-copies`` augmented crop
sequences (flip, resize down/up, blur, brightness/contrast, noise, JPEG, frame-rate jitter). Crops and frozen
embeddings are cached under ``out/lrasd_temporal`` (gitignored). The number of epochs is chosen by group
k-fold on the TRAIN groups (mean held-out per-video AUC), as is the read-out's L2 penalty; then the head is
refit on all of them.
Validation items are refused by the trainer.

The bundled head is no longer this recipe's: it comes from ``python -m training.temporal_oof --ship`` (every dev
video and the synthetic face fakes, the recipe chosen under LOSO; ``models/checkpoints/lrasd_temporal.md``). This
train-side recipe stays for comparison and for the VideoMAE path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from models.weights import WeightsNotFoundError
from training.split import DEFAULT_SPLIT, ManifestItem, read_manifest, require_train_only, select

logger = logging.getLogger(__name__)


def split_items(items: list[ManifestItem], split_file: Path) -> tuple[list[ManifestItem], list[ManifestItem]]:
    """Train/val by the committed split (a manifest it does not cover is a clear error, never a silent re-split)."""
    return select(items, "train", split_file), select(items, "val", split_file)


def collect_chunks(items: list[ManifestItem], face_detector, settings, n_frames: int, size: int,
                   per_video: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunks, labels, video index) over the items; videos without a face are skipped and logged."""
    from tqdm import tqdm

    from pipeline.stages import clip_chunks
    from training.features import dense_face_clips

    xs, ys, vid = [], [], []
    for i, it in enumerate(tqdm(items, desc="clips", unit="video", file=sys.stderr)):
        try:
            clips = dense_face_clips(it.file, face_detector, settings)
        except WeightsNotFoundError:
            raise  # a missing model is not a bad file: stop with its message
        except Exception as exc:  # one unreadable file must not stop a training run
            logger.warning("skipping %s: %s", it.path, exc)
            continue
        chunks, _, _ = clip_chunks(clips, n_frames, size, 0.3, max_chunks=per_video)
        if len(chunks) == 0:
            logger.warning("no face clip in %s", it.path)
            continue
        xs.append(chunks)
        ys += [it.is_fake] * len(chunks)
        vid += [i] * len(chunks)
    if not xs:
        return np.zeros((0, n_frames, size, size, 3), np.uint8), np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(xs), np.asarray(ys), np.asarray(vid)


def per_video_auc(scores: np.ndarray, labels: np.ndarray, vid: np.ndarray) -> float | None:
    from training.evaluate import auc

    ids = np.unique(vid)
    if len(ids) == 0:
        return None
    s = np.array([scores[vid == i].mean() for i in ids])
    y = np.array([labels[vid == i][0] for i in ids])
    return auc(y, s)


def train_videomae(args: argparse.Namespace) -> int:
    from models.base import resolve_device
    from models.retinaface import RetinaFaceDetector
    from models.videomae import (
        VideoMAEDetector,
        build_videomae_classifier,
        save_videomae_checkpoint,
    )
    from pipeline.settings import get_settings
    from training.videomae_finetune import finetune_videomae

    settings = get_settings()
    device = str(resolve_device(args.device or settings.device))
    items = [it for it in read_manifest(args.manifest) if it.modality in ("video", "video_av")]
    train, val = split_items(items, Path(args.split_file))
    require_train_only(train, args.split_file)
    logger.info("%d train / %d val videos", len(train), len(val))
    model = build_videomae_classifier(args.backbone, seed=args.seed)
    n, size = int(model.config.num_frames), int(model.config.image_size)
    face = RetinaFaceDetector.load(device=device)
    x_tr, y_tr, _ = collect_chunks(train, face, settings, n, size, args.clips_per_video)
    x_va, y_va, v_va = collect_chunks(val, face, settings, n, size, args.clips_per_video)
    if len(np.unique(y_tr)) < 2:
        logger.error("training needs real and fake clips; got labels %s", np.unique(y_tr).tolist())
        return 1
    logger.info("training on %d clips (%d fake), validating on %d", len(y_tr), int(y_tr.sum()), len(y_va))
    history = finetune_videomae(model, x_tr, y_tr, x_va if len(y_va) else None, y_va if len(y_va) else None,
                                epochs=args.epochs, lr=args.lr, train_backbone=args.train_backbone,
                                batch_size=args.batch_size, device=device, seed=args.seed)
    out = save_videomae_checkpoint(model, args.out)
    det = VideoMAEDetector.load(str(out), device=device)
    video_auc = per_video_auc(det.predict(x_va).fake_prob, y_va, v_va) if len(y_va) else None
    summary = {
        "arch": "videomae", "backbone": args.backbone, "epochs": args.epochs, "train_backbone": args.train_backbone,
        "train_clips": len(y_tr), "val_clips": len(y_va), "val_clip_auc": history.get("val_auc"),
        "val_video_auc": video_auc, "train_loss": history.get("train_loss"),
    }
    (Path(out) / "training_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    logger.info("checkpoint written to %s (use it with VIDEOMAE_CHECKPOINT=%s)", out, out)
    return 0


# ----------------------------------------------------------------------------------------------
# --arch lrasd_head
# ----------------------------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parent.parent
LRASD_CACHE = REPO_ROOT / "out" / "lrasd_temporal"
LRASD_OUT = REPO_ROOT / "models" / "checkpoints" / "lrasd_temporal.pt"
TRAIN_SOURCES = ("orig", "whatsapp", "whatsapp_low")  # the file as-is, then training.reencode profiles
EVAL_SOURCES = ("orig", "whatsapp")  # what the pipeline meets: uploads as-is and messenger forwards
AUG_VERSION = 1  # part of the cache key of augmented embeddings: bump it when augment_faces changes


@dataclass(frozen=True)
class TrackSequence:
    """Frozen LR-ASD embeddings (T, 128) of one dense window of a video's main face track, under one source
    (the file or a re-encode of it) and one augmentation (0 = clean crops)."""

    path: str
    label: int
    group: str
    manipulation: str
    source: str
    aug: int
    emb: np.ndarray

    @property
    def video(self) -> tuple[str, str]:
        """What one per-video score is about: a file under one source."""
        return (self.path, self.source)


def augment_faces(faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random in-the-wild degradations of a (T, 112, 112) uint8 crop sequence, constant over the clip
    (except noise and JPEG, which vary per frame as they do in a real stream)."""
    import cv2

    x = faces.astype(np.float32)
    t, h, w = x.shape
    if rng.random() < 0.25:  # a 15-24 fps source resampled to 25 fps: the duplicated frames the pipeline sees
        f = float(rng.choice([15.0, 20.0, 24.0]))
        x = x[np.clip(np.round(np.round(np.arange(t) * f / 25.0) * 25.0 / f).astype(int), 0, t - 1)]
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    if rng.random() < 0.5:  # a low-resolution face
        side = max(16, round(h * rng.uniform(0.3, 0.7)))
        x = np.stack([cv2.resize(cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA), (w, h),
                                 interpolation=cv2.INTER_LINEAR) for f in x])
    if rng.random() < 0.2:
        sigma = rng.uniform(0.5, 1.5)
        x = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in x])
    if rng.random() < 0.7:
        x = x * rng.uniform(0.7, 1.3) + rng.uniform(-30.0, 30.0)
    if rng.random() < 0.4:
        x = x + rng.normal(0.0, rng.uniform(2.0, 8.0), x.shape)
    out = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        q = int(rng.integers(25, 61))
        out = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_GRAYSCALE)
                        for f in out])
    return np.ascontiguousarray(out)


class SequenceExtractor:
    """Crops and embeddings per (item, source, augmentation), cached; the models load only on a cache miss."""

    def __init__(self, settings, cache_dir: str | Path = LRASD_CACHE, device: str = "cpu", front=None,
                 face_detector=None):
        self.settings = settings
        self.cache_dir = Path(cache_dir)
        self.device = device
        self._front = front
        self._face = face_detector
        s = settings
        # everything that changes which frames and boxes the pipeline's dense path produces
        self.params = (s.dense_window_s, s.max_dense_windows, s.dense_fps, s.sample_fps, s.max_sampled_frames,
                       s.face_threshold, s.face_detect_side, s.face_min_size, s.dense_detect_side, s.max_decode_side)

    @property
    def front(self):
        if self._front is None:
            from models.lrasd import LRASDDetector

            self._front = LRASDDetector.load(device=self.device)
        return self._front

    @property
    def face(self):
        if self._face is None:
            from models.retinaface import RetinaFaceDetector

            variant = self.settings.face_detector.removeprefix("retinaface_")
            self._face = RetinaFaceDetector.load(device=self.device, variant=variant)
        return self._face

    def _file(self, item: ManifestItem, source: str, kind: str, *extra) -> Path:
        key = hashlib.sha1(repr((item.path, source, self.params, *extra)).encode()).hexdigest()[:16]
        return self.cache_dir / kind / f"{Path(item.path).stem[:40]}-{source}-{key}.npz"

    def crops(self, item: ManifestItem, source: str) -> list[np.ndarray]:
        """Demo crops (T, 112, 112) per dense window of the main track, exactly as the pipeline makes them,
        of the file itself (``orig``) or of its ``training.reencode`` copy (``source`` = profile name)."""
        from models.lrasd import faces_from_track
        from training.features import dense_face_clips
        from training.reencode import reencode

        path = self._file(item, source, "crops")
        if path.is_file():
            with np.load(path) as z:
                return [z[f"{i}_faces"] for i in range(int(z["n"]))]
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            src = item.file if source == "orig" else reencode(item.file, tmp, source, kind="video")
            clips = dense_face_clips(src, self.face, self.settings, cache_dir=None)
        crops = [faces_from_track(c.frames, c.boxes, rgb=True) for c in clips]
        _save(path, {"n": np.array(len(crops))} | {f"{i}_faces": f for i, f in enumerate(crops)}, compress=True)
        logger.info("crops of %s (%s): %d window(s) in %.1fs", item.path, source, len(crops),
                    time.perf_counter() - t0)
        return crops

    def sequences(self, item: ManifestItem, source: str, aug_copies: int = 0) -> list[TrackSequence]:
        out = []
        crops = None
        for aug in range(aug_copies + 1):
            path = self._file(item, source, "emb", aug, AUG_VERSION if aug else 0)
            if path.is_file():
                with np.load(path) as z:
                    embs = [z[f"{i}_emb"] for i in range(int(z["n"]))]
            else:
                from models.lrasd_temporal import embed_faces

                crops = self.crops(item, source) if crops is None else crops
                seed = int(hashlib.sha1(f"{item.path}|{source}|{aug}".encode()).hexdigest()[:8], 16)
                rng = np.random.default_rng(seed)
                embs = embed_faces(self.front, [augment_faces(f, rng) if aug else f for f in crops])
                _save(path, {"n": np.array(len(embs))} | {f"{i}_emb": e for i, e in enumerate(embs)})
            out += [TrackSequence(item.path, item.is_fake, item.group, item.manipulation, source, aug, e)
                    for e in embs]
        return out


def _save(path: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    (np.savez_compressed if compress else np.savez)(tmp, **arrays)
    tmp.replace(path)


def collect_sequences(items: list[ManifestItem], sources: Iterable[str], aug_copies: int,
                      extractor: SequenceExtractor) -> list[TrackSequence]:
    """Source-major, so a run stopped early still has every file as-is; unreadable files are skipped."""
    from tqdm import tqdm

    out: list[TrackSequence] = []
    for source in sources:
        for it in tqdm(items, desc=f"lrasd {source}", unit="video", file=sys.stderr):
            try:
                seqs = extractor.sequences(it, source, aug_copies)
            except WeightsNotFoundError:
                raise  # a missing model is not a bad file: stop with its message
            except Exception as exc:  # one unreadable file must not stop a training run
                logger.warning("skipping %s (%s): %s", it.path, source, exc)
                continue
            if not seqs:
                logger.warning("no face window in %s (%s)", it.path, source)
            out += seqs
    return out


def group_folds(seqs: list[TrackSequence], k: int) -> list[set[str]]:
    """Paths per fold; linked groups (``a|b``) stay together. Greedy: largest components first, each into
    the fold with the fewest files of its majority class."""
    from training.split import _components

    items = list({s.path: ManifestItem(s.path, "fake" if s.label else "real", "video", s.manipulation, s.group,
                                       None, Path(".")) for s in seqs}.values())
    comps = sorted(_components(items).values(),
                   key=lambda m: (-len(m), hashlib.sha1(m[0].path.encode()).hexdigest()))
    folds: list[set[str]] = [set() for _ in range(max(2, k))]
    counts = np.zeros((len(folds), 2))
    for members in comps:
        n_fake = sum(it.is_fake for it in members)
        cls = int(n_fake * 2 >= len(members))
        j = int(np.argmin(counts[:, cls] * 1000 + counts.sum(1)))
        folds[j] |= {it.path for it in members}
        counts[j] += (len(members) - n_fake, n_fake)
    return [f for f in folds if f]


def video_metrics(probs: dict, seqs: list[TrackSequence]) -> dict:
    """Per-video AUC, mean P(fake) by class, and AUC of each manipulation's fakes against all the reals."""
    from training.evaluate import auc

    info = {s.video: s for s in seqs}
    vids = [v for v in probs if v in info]
    y = np.array([info[v].label for v in vids])
    p = np.array([probs[v] for v in vids])
    out = {"n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), "auc": auc(y, p),
           "mean_p_real": float(p[y == 0].mean()) if (y == 0).any() else None,
           "mean_p_fake": float(p[y == 1].mean()) if (y == 1).any() else None, "by_manipulation": {}}
    for m in sorted({info[v].manipulation for v in vids if info[v].label}):
        keep = np.array([info[v].label == 0 or info[v].manipulation == m for v in vids])
        out["by_manipulation"][m] = {"n_fake": int((y[keep] == 1).sum()), "auc": auc(y[keep], p[keep]),
                                     "mean_p_fake": float(p[keep & (y == 1)].mean())}
    return out


def evaluate_head(head, head_cfg, seqs: list[TrackSequence]) -> dict:
    """Metrics per source on the clean sequences, scored as the pipeline scores a track (mean over windows)."""
    from models.lrasd_temporal import video_probabilities

    out = {}
    for source in dict.fromkeys(s.source for s in seqs):
        sub = [s for s in seqs if s.source == source and s.aug == 0]
        probs = video_probabilities(head, [s.emb for s in sub], [s.video for s in sub], head_cfg)
        out[source] = video_metrics(probs, sub) | {"videos": {v[0]: round(p, 4) for v, p in probs.items()}}
    return out


L2_GRID = (0.03, 0.1, 0.3, 1.0)  # read-out penalties the group CV chooses from


def fit_temporal_head(train: list[TrackSequence], out: str | Path, head_cfg=None, fit_cfg=None, *, folds: int = 4,
                      l2_grid: Iterable[float] = L2_GRID, holdout_sources: Iterable[str] = EVAL_SOURCES,
                      split_file: str | Path = DEFAULT_SPLIT, val: list[TrackSequence] | None = None,
                      metadata: dict | None = None) -> dict:
    """Early stopping and the L2 penalty from group k-fold over ``train``; refit on all of ``train``; score ``val``;
    write the checkpoint. Returns the summary stored in the checkpoint's metadata.

    Criterion: the mean over folds of the per-video AUC of the held-out groups' clean ``holdout_sources``
    sequences, per (penalty, epoch), smoothed over 3 epochs. Per-fold rather than pooled, because with a few
    single-class groups per fold (all EDTalk fakes, all GRID reals) pooling mostly measures how each fold's
    model is calibrated. Ties go to the stronger penalty and the earlier epoch. The refit runs the same
    schedule, stopped at the chosen epoch.
    """
    from models.lrasd_temporal import HeadConfig
    from training.temporal_head import FitConfig

    head_cfg = head_cfg or HeadConfig()
    fit_cfg = fit_cfg or FitConfig()
    require_train_only([s.path for s in train], split_file)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny head gains nothing from intra-op threads, and loses a lot on a busy CPU
    try:
        return _fit_temporal_head(train, Path(out), head_cfg, fit_cfg, folds, tuple(sorted(l2_grid, reverse=True)),
                                  tuple(holdout_sources), val, metadata)
    finally:
        torch.set_num_threads(threads)


def _fit_temporal_head(train, out, head_cfg, fit_cfg, folds, l2_grid, holdout_sources, val, metadata) -> dict:
    from models.lrasd_temporal import save_head_checkpoint
    from training.evaluate import auc
    from training.temporal_head import fit_head

    t0 = time.perf_counter()
    labels = {s.video: s.label for s in train}
    fold_sets = group_folds(train, folds)
    # fold_auc[l2][fold][epoch]: per-video AUC of that fold's held-out videos
    fold_auc: dict[float, list[list[float]]] = {}
    for l2 in l2_grid:
        cfg = replace(fit_cfg, l2=l2)
        fold_auc[l2] = []
        for k, held in enumerate(fold_sets):
            tr = [s for s in train if s.path not in held]
            ho = [s for s in train if s.path in held and s.aug == 0 and s.source in holdout_sources]
            if len({s.label for s in tr}) < 2 or len({s.label for s in ho}) < 2:
                logger.info("fold %d skipped (needs both classes on both sides)", k)
                continue
            _, hist = fit_head([s.emb for s in tr], [s.label for s in tr], [s.path for s in tr], head_cfg, cfg,
                               holdout=([s.emb for s in ho], [s.video for s in ho]))
            fold_auc[l2].append([auc(np.array([labels[v] for v in p]), np.array(list(p.values())))
                                 for p in hist.holdout])
            logger.info("l2 %g fold %d: %d held-out videos, AUC by epoch %s", l2, k, len(hist.holdout[-1]),
                        " ".join(f"{a:.2f}" for a in fold_auc[l2][-1][::5]))
    best_l2, best_epoch, best_score, curves = fit_cfg.l2, fit_cfg.epochs, None, {}
    for l2, per_fold in fold_auc.items():
        if not per_fold:
            continue
        mean = np.mean(np.array(per_fold, float), axis=0)
        smooth = np.convolve(np.pad(mean, 1, mode="edge"), np.ones(3) / 3, mode="valid")  # epoch-to-epoch noise
        curves[l2] = [round(float(x), 4) for x in mean]
        e = int(np.argmax(smooth))
        if best_score is None or smooth[e] > best_score + 1e-9:  # grid is strongest-first: ties keep it
            best_l2, best_epoch, best_score = l2, e + 1, float(smooth[e])
    logger.info("group CV (%d folds) chose l2 %g, %d epochs (mean held-out AUC %s)", len(fold_sets), best_l2,
                best_epoch, None if best_score is None else round(best_score, 3))
    final_cfg = replace(fit_cfg, l2=best_l2, stop_after=best_epoch)
    head, _ = fit_head([s.emb for s in train], [s.label for s in train], [s.path for s in train], head_cfg, final_cfg)
    train_seconds = time.perf_counter() - t0
    summary = {
        "arch": "lrasd_head", "head": asdict(head_cfg), "fit": asdict(final_cfg), "epochs_run": best_epoch,
        "l2": best_l2, "cv_folds": len(fold_sets), "cv_mean_fold_auc": best_score,
        "cv_curves": {str(k): v for k, v in curves.items()},
        "train_videos": len({s.path for s in train}), "train_fake_videos": len({s.path for s in train if s.label}),
        "train_sequences": len(train), "sources": sorted({s.source for s in train}),
        "aug_copies": max((s.aug for s in train), default=0), "train_seconds": round(train_seconds, 1),
        "train_files": sorted({s.path for s in train}), **(metadata or {}),
    }
    if val:
        check = evaluate_head(head, head_cfg, val)
        summary["val"] = check
        summary["val_video_auc"] = check.get("orig", {}).get("auc")
        summary["val_video_auc_whatsapp"] = check.get("whatsapp", {}).get("auc")
    save_head_checkpoint(head, head_cfg, out, summary)
    return summary


def train_lrasd_head(args: argparse.Namespace) -> int:
    from models.base import resolve_device
    from models.lrasd_temporal import HeadConfig
    from pipeline.settings import get_settings
    from training.temporal_head import FitConfig

    settings = get_settings()
    device = str(resolve_device(args.device or settings.device))
    items = [it for it in read_manifest(args.manifest) if it.modality in ("video", "video_av")]
    train, val = split_items(items, Path(args.split_file))
    require_train_only([it.path for it in train], args.split_file)
    logger.info("%d train / %d val videos", len(train), len(val))
    extractor = SequenceExtractor(settings, args.cache_dir, device)
    t0 = time.perf_counter()
    sources = tuple(args.sources.split(","))
    tr = collect_sequences(train, sources, args.aug_copies, extractor)
    va = collect_sequences(val, [s for s in EVAL_SOURCES if s in sources or s == "orig"], 0, extractor)
    extract_seconds = time.perf_counter() - t0
    logger.info("features ready in %.0fs: %d train / %d val sequences", extract_seconds, len(tr), len(va))
    if args.extract_only:
        return 0
    if len({s.label for s in tr}) < 2:
        logger.error("training needs real and fake clips; got labels %s", sorted({s.label for s in tr}))
        return 1
    head_cfg = HeadConfig(window=args.window, hop=args.hop, kind=args.head)
    fit_cfg = FitConfig(epochs=args.epochs or FitConfig.epochs, lr=args.lr or FitConfig.lr,
                        batch_size=args.batch_size or FitConfig.batch_size, seed=args.seed)
    out = Path(args.out or LRASD_OUT)
    summary = fit_temporal_head(tr, out, head_cfg, fit_cfg, folds=args.folds, split_file=args.split_file, val=va,
                                metadata={"extract_seconds": round(extract_seconds, 1),
                                          "manifest": Path(args.manifest).name})
    brief = {k: v for k, v in summary.items() if k not in ("train_files", "cv_curves", "val")}
    brief["val"] = {src: {k: v for k, v in m.items() if k != "videos"} for src, m in summary.get("val", {}).items()}
    print(json.dumps(brief))
    logger.info("checkpoint written to %s (%.0f kB)", out, out.stat().st_size / 1024)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training temporal", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--arch", choices=["lrasd_head", "videomae"], default=None,
                   help="lrasd_head (default) or videomae (the default when --backbone is given)")
    p.add_argument("--backbone", default=None, help="videomae: hub id, local dir, or named tiny config")
    p.add_argument("--out", default=None, help=f"default {LRASD_OUT.relative_to(REPO_ROOT)} (lrasd_head) or "
                                               "out/videomae_temporal (videomae)")
    p.add_argument("--epochs", type=int, default=None, help="videomae: 5; lrasd_head: the most epochs CV may pick (30)")
    p.add_argument("--lr", type=float, default=None, help="videomae 1e-3, lrasd_head 3e-3")
    p.add_argument("--batch-size", type=int, default=None, help="videomae 4, lrasd_head 32")
    p.add_argument("--train-backbone", action="store_true", help="videomae: also fine-tune the backbone (GPU advised)")
    p.add_argument("--clips-per-video", type=int, default=4, help="videomae")
    p.add_argument("--sources", default=",".join(TRAIN_SOURCES), help="lrasd_head: orig and training.reencode profiles")
    p.add_argument("--aug-copies", type=int, default=1, help="lrasd_head: augmented crop sequences per source")
    p.add_argument("--head", choices=["energy", "conv"], default="energy", help="lrasd_head: head kind")
    p.add_argument("--window", type=int, default=40, help="lrasd_head: frames per window (25 fps)")
    p.add_argument("--hop", type=int, default=20, help="lrasd_head: frames between windows at inference")
    p.add_argument("--folds", type=int, default=4, help="lrasd_head: group folds that choose the epochs")
    p.add_argument("--cache-dir", default=str(LRASD_CACHE), help="lrasd_head: crop/embedding cache")
    p.add_argument("--extract-only", action="store_true", help="lrasd_head: fill the cache, don't train")
    p.add_argument("--split-file", default=str(DEFAULT_SPLIT))
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args.arch = args.arch or ("videomae" if args.backbone else "lrasd_head")
    if args.arch == "lrasd_head":
        return train_lrasd_head(args)
    args.backbone = args.backbone or "videomae_unittest"
    args.out = args.out or "out/videomae_temporal"
    args.epochs = args.epochs or 5
    args.lr = args.lr or 1e-3
    args.batch_size = args.batch_size or 4
    return train_videomae(args)


if __name__ == "__main__":
    sys.exit(main())

"""Fit the lip-sync head (models/sync_head.py) on frozen LR-ASD embeddings of REAL dev clips (train split).

    python -m training.train_sync --manifest ../shared/data/dev/manifest.tsv [--out models/checkpoints/sync_head.pt]

Data: every real video_av clip of the train split, as decoded by the pipeline (2 fps face tracks, 25 fps
dense windows of the tracks, LR-ASD choosing the speaking track) plus a messenger-like re-encode of it (480p
H.264 ~1 Mbit/s, AAC 32 kbit/s or Opus 48 kbit/s), so compression alone does not read as a mismatch. The
LR-ASD features are computed once and cached under ``out/sync_cache`` (gitignored).

Fit: ridge-regularised CCA between the window-z-scored visual and audio embeddings (+-2 frames of context)
at offset 0, i.e. the linear codes of lips and sound that agree most when in sync. An InfoNCE-trained head
(offsets -15..+15 and swapped audio as negatives) was tried first: it fitted its own clips perfectly but
recovered the offset of held-out groups worse than the training-free baseline (models/checkpoints/sync_head.md).

Selection and calibration: group 3-fold cross-validation inside the train split chooses the number of
codes and the weight of the motion-baseline curve added to the head's; the clip-level logistic is fitted
on the out-of-fold curves of real clips (original and re-encoded) against copies with the audio shifted by
+-5/10/15 frames or swapped with another clip's. The final head is then refitted on all train clips.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import media, sync
from training.split import ManifestItem, read_manifest, require_train_only, select

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / "out" / "sync_cache"
DEFAULT_OUT = REPO_ROOT / "models" / "checkpoints" / "sync_head.pt"
CACHE_VERSION = 2  # 2: visual embeddings with edge-replicated faces


# ----------------------------------------------------------------------------------------------
# Feature extraction (shared with training/eval_sync.py)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipFeatures:
    """One media file as the sync estimator sees it: its audio and the dense windows of its face tracks."""

    audio: media.AudioTrack | None
    windows: tuple[sync.TrackWindow, ...]
    main_track_id: int | None


def dense_clips(source: media.MediaSource, face_detector, settings=None):
    """(info, audio, dense clips, main track id) exactly as the pipeline produces them for its sync stage."""
    from pipeline.settings import get_settings
    from pipeline.stages import decode_and_track, dense_windows

    s = settings or get_settings()
    tracked = decode_and_track(source, face_detector, s)
    info, audio, analysis = tracked.decoded.info, tracked.decoded.audio, tracked.analysis
    if analysis is None or not analysis.tracks:
        return info, audio, [], None
    return info, audio, dense_windows(source, info, analysis, face_detector, s, for_sync=True), analysis.main_track_id


def extract(source: media.MediaSource, face_detector, lrasd) -> ClipFeatures:
    _, audio, clips, main_id = dense_clips(source, face_detector)
    return ClipFeatures(audio, tuple(sync.prepare_window(clip, lrasd=lrasd) for clip in clips), main_id)


def save_features(feat: ClipFeatures, path: Path) -> None:
    arrays: dict[str, np.ndarray] = {"main": np.array(-1 if feat.main_track_id is None else feat.main_track_id),
                                     "version": np.array(CACHE_VERSION)}
    if feat.audio is not None:
        arrays |= {"audio": feat.audio.samples, "sr": np.array(feat.audio.sample_rate),
                   "audio_offset": np.array(feat.audio.source_offset_s)}
    for i, w in enumerate(feat.windows):
        arrays |= {f"w{i}_tid": np.array(w.track_id), f"w{i}_ts": w.timestamps_s, f"w{i}_det": w.detected,
                   f"w{i}_mouth": w.mouth}
        # the crops only matter while their embeddings are not made yet (~2.5 MB a window)
        arrays |= {f"w{i}_vis": w.visual} if w.visual is not None else {f"w{i}_faces": w.faces}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_features(path: Path) -> ClipFeatures | None:
    """The cached features, or None when they were cached by an older version of the extraction."""
    with np.load(path) as z:
        if (int(z["version"]) if "version" in z else 1) != CACHE_VERSION:
            return None
        audio = None
        if "audio" in z:
            audio = media.AudioTrack(z["audio"], int(z["sr"]), float(z["audio_offset"]))
        windows = []
        i = 0
        while f"w{i}_tid" in z:
            windows.append(sync.TrackWindow(int(z[f"w{i}_tid"]), z[f"w{i}_ts"], z[f"w{i}_det"], z[f"w{i}_mouth"],
                                            _optional(z, f"w{i}_faces"), _optional(z, f"w{i}_vis")))
            i += 1
        main = int(z["main"])
    return ClipFeatures(audio, tuple(windows), None if main < 0 else main)


def _optional(z, key: str) -> np.ndarray | None:
    """The array, or None where it was left out (or saved as None, which only loads with pickling)."""
    if key not in z.files:
        return None
    try:
        return z[key]
    except ValueError:
        return None


def messenger_copy(src: Path, dst: Path, variant: int) -> Path:
    """A messenger-like re-encode: <=480p H.264 at ~1 Mbit/s, and AAC 32 kbit/s or Opus 48 kbit/s
    (alternating by ``variant``), as chat apps do before forwarding a video."""
    audio = ["-c:a", "aac", "-b:a", "32k"] if variant % 2 == 0 else ["-c:a", "libopus", "-b:a", "48k"]
    cmd = ["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-i", str(src),
           "-vf", "scale=-2:'min(480,ih)'", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1M",
           "-maxrate", "1.2M", "-bufsize", "2M", "-pix_fmt", "yuv420p", "-r", "25", *audio, "-ac", "1", str(dst)]
    subprocess.run(cmd, check=True)
    return dst


class FeatureCache:
    """Features per (file, variant) under ``root``; variant "orig" is the file itself, "msg" its re-encode.

    An entry is keyed by the file's bytes (sha256), the variant and the extractor's identity: the face detector's
    and LR-ASD's weights and the analysis settings. A replaced clip, new weights or another setting is a miss,
    never a stale hit."""

    def __init__(self, root: Path = CACHE_DIR, face_detector=None, lrasd=None):
        self.root = Path(root)
        self._face = face_detector
        self._lrasd = lrasd
        self._extractor: str | None = None
        self._digests: dict[str, str] = {}

    def extractor_id(self) -> str:
        """Identity of what makes the features: both models' weights sha256 and the analysis settings."""
        if self._extractor is None:
            import json

            from models.weights import resolve, sha256_of
            from pipeline.core import ANALYSIS_SETTINGS
            from pipeline.settings import get_settings

            def weights(model, name: str) -> str:
                info = getattr(model, "weights_info", None)
                if info is not None and getattr(info, "sha256", ""):
                    return info.sha256
                return sha256_of(resolve(name)) if model is None else type(model).__name__

            settings = get_settings().model_dump(include=ANALYSIS_SETTINGS, mode="json")
            self._extractor = hashlib.sha256(json.dumps(
                [CACHE_VERSION, weights(self._face, "retinaface_mnet025"), weights(self._lrasd, "lrasd"), settings],
                sort_keys=True).encode()).hexdigest()[:16]
        return self._extractor

    def models(self):
        if self._face is None:
            from models.retinaface import RetinaFaceDetector

            self._face = RetinaFaceDetector.load(device="cpu")
        if self._lrasd is None:
            from models.lrasd import LRASDDetector

            self._lrasd = LRASDDetector.load(device="cpu")
        return self._face, self._lrasd

    def path_for(self, item: ManifestItem, variant: str) -> Path:
        if item.path not in self._digests:
            from models.weights import sha256_of

            self._digests[item.path] = sha256_of(item.file)
        key = hashlib.sha256(f"{self._digests[item.path]}|{variant}|{self.extractor_id()}".encode()).hexdigest()[:16]
        return self.root / f"{Path(item.path).stem[:40]}-{variant}-{key}.npz"

    def put(self, item: ManifestItem, variant: str, feat: ClipFeatures) -> Path:
        """Store features made elsewhere (``make eval`` keeps what its lip-sync stage was fed)."""
        path = self.path_for(item, variant)
        save_features(feat, path)
        return path

    def has(self, item: ManifestItem, variant: str) -> bool:
        return self.path_for(item, variant).is_file()

    def get(self, item: ManifestItem, variant: str = "orig") -> ClipFeatures:
        path = self.path_for(item, variant)
        cached = load_features(path) if path.is_file() else None
        if cached is not None:
            return cached
        face, lrasd = self.models()
        t0 = time.perf_counter()
        if variant == "orig":
            feat = extract(item.file, face, lrasd)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                n = int(hashlib.sha1(item.path.encode()).hexdigest(), 16)
                copy = messenger_copy(item.file, Path(tmp) / "msg.mp4", n)
                feat = extract(copy, face, lrasd)
        save_features(feat, path)
        logger.info("features of %s (%s): %d windows in %.1fs", item.path, variant, len(feat.windows),
                    time.perf_counter() - t0)
        return feat


def video_av(items: list[ManifestItem], label: str | None = None) -> list[ManifestItem]:
    return [it for it in items if it.modality == "video_av" and (label is None or it.label == label)]


# ----------------------------------------------------------------------------------------------
# Audio variants for negatives, calibration and evaluation
# ----------------------------------------------------------------------------------------------
def shifted(audio: media.AudioTrack, frames: int) -> media.AudioTrack:
    """The audio delayed by ``frames`` video frames (negative: advanced), exact to the sample."""
    n = int(round(frames * audio.sample_rate / sync.FPS))
    if n >= 0:
        samples = np.concatenate([np.zeros(n, np.float32), audio.samples])
    else:
        samples = audio.samples[-n:]
    return media.AudioTrack(samples, audio.sample_rate, audio.source_offset_s + n / audio.sample_rate)


def swapped(audio: media.AudioTrack, other: media.AudioTrack) -> media.AudioTrack:
    """``other``'s audio in place of ``audio`` (repeated if shorter), as a dub with another recording."""
    reps = int(np.ceil(audio.samples.size / max(other.samples.size, 1)))
    samples = np.tile(other.samples, max(reps, 1))[: audio.samples.size]
    return media.AudioTrack(samples.astype(np.float32), audio.sample_rate, 0.0)


def swap_partners(items: list[ManifestItem]) -> dict[str, ManifestItem]:
    """Each item's partner for the swapped-audio copy: the next item (cyclically) of another group."""
    out = {}
    for i, it in enumerate(items):
        for k in range(1, len(items)):
            other = items[(i + k) % len(items)]
            if other.group != it.group or k == len(items) - 1:
                out[it.path] = other
                break
    return out


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainWindow:
    clip: str  # manifest path | variant
    group: str
    audio: np.ndarray  # (T + 2m, 128) LR-ASD audio embeddings for frames -m .. T+m
    visual: np.ndarray  # (T, 128)
    covered: np.ndarray  # (T + 2m,) bool


def training_windows(items: list[ManifestItem], cache: FeatureCache, lrasd, variants=("orig", "msg"),
                     max_offset: int = 15) -> list[TrainWindow]:
    """The speaking track's windows of each clip (chosen by LR-ASD as at inference)."""
    from models.sync_head import SyncHead

    est = sync.SyncEstimator(lrasd, head=SyncHead(max_offset=max_offset), max_offset=max_offset, method="head")
    out = []
    for it in items:
        for variant in variants:
            feat = cache.get(it, variant)
            if feat.audio is None:
                continue
            by_track, reasons = est.prepare(list(feat.windows), feat.audio)
            chosen = est.select_speaker(by_track, feat.main_track_id, reasons) if by_track else None
            if not isinstance(chosen, tuple):
                logger.warning("skipping %s (%s): %s", it.path, variant,
                               getattr(chosen, "reason", None) or "; ".join(reasons.values()))
                continue
            for p in by_track[chosen[0]]:
                out.append(TrainWindow(f"{it.path}|{variant}", it.group, p.audio_emb, p.window.visual, p.covered))
    return out


@dataclass(frozen=True)
class FitConfig:
    dim_out: int = 4  # canonical directions kept
    context: int = 2  # +- frames seen by each projection
    ridge: float = 0.5  # added to the (unit-variance) covariance diagonals
    motion_weight: float = 0.0  # weight of the mouth-motion curve added to the head's


def _with_context(x: np.ndarray, context: int) -> np.ndarray:
    """(T, C) -> (T, (2c+1) C): frames t-c .. t+c side by side, edges repeated (the conv's replicate padding)."""
    xp = np.concatenate([np.repeat(x[:1], context, 0), x, np.repeat(x[-1:], context, 0)])
    return np.concatenate([xp[k : k + len(x)] for k in range(2 * context + 1)], axis=1)


def _zscore(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    ref = x if mask is None else x[mask]
    return (x - ref.mean(0)) / np.sqrt(ref.var(0) + 1e-6)


def fit_head(wins: list[TrainWindow], cfg: FitConfig, max_offset: int = 15):
    """Ridge-regularised CCA of visual and audio embeddings at offset 0, as the head's two conv weights."""
    from models.sync_head import SyncHead

    m, c = max_offset, cfg.context
    vis, aud = [], []
    for w in wins:
        t = len(w.visual)
        vis.append(_with_context(_zscore(w.visual), c))
        aud.append(_with_context(_zscore(w.audio, w.covered), c)[m : m + t])
    v = np.concatenate(vis).astype(np.float64)
    a = np.concatenate(aud).astype(np.float64)
    n = len(v)
    cvv = v.T @ v / n + cfg.ridge * np.eye(v.shape[1])
    caa = a.T @ a / n + cfg.ridge * np.eye(a.shape[1])
    cva = v.T @ a / n

    def inv_sqrt(mat: np.ndarray) -> np.ndarray:
        e, u = np.linalg.eigh(mat)
        return (u / np.sqrt(e)) @ u.T

    wv, wa = inv_sqrt(cvv), inv_sqrt(caa)
    u, corr, vt = np.linalg.svd(wv @ cva @ wa)
    pv, pa = wv @ u[:, : cfg.dim_out], wa @ vt.T[:, : cfg.dim_out]
    logger.info("CCA on %d frames: canonical correlations %s", n, np.round(corr[: cfg.dim_out], 3))
    head = SyncHead(dim_in=v.shape[1] // (2 * c + 1), dim_out=cfg.dim_out, context=c, max_offset=m)

    def conv_weight(p: np.ndarray) -> torch.Tensor:
        # stacked index k * C + ch (frame t - c + k)  ->  Conv1d weight [out, ch, k]
        k = 2 * c + 1
        return torch.from_numpy(p.T.reshape(cfg.dim_out, k, -1).transpose(0, 2, 1).copy()).float()

    with torch.no_grad():
        head.visual.weight.copy_(conv_weight(pv))
        head.audio.weight.copy_(conv_weight(pa))
        head.motion_weight.fill_(cfg.motion_weight)
    return head.eval()


# ----------------------------------------------------------------------------------------------
# Offset curves of real clips and their shifted / swapped copies (cross-validation, calibration)
# ----------------------------------------------------------------------------------------------
SHIFTS = (-15, -10, -5, 5, 10, 15)


@dataclass(frozen=True)
class CurveRow:
    clip: str
    variant: str  # "real", "msg", "shift+5", ..., "swap"
    shift: int  # applied audio delay in frames (0 for real, msg and swap)
    head: np.ndarray  # head offset curve (2m+1,)
    motion: np.ndarray  # motion-baseline offset curve

    @property
    def mismatched(self) -> bool:
        return self.variant not in ("real", "msg")


def audio_variants(item: ManifestItem, feat: ClipFeatures, msg: ClipFeatures | None,
                   partner: ClipFeatures | None, shifts=SHIFTS):
    """(variant, applied shift, features, audio) for a real clip: itself, its re-encode, shifted, swapped."""
    out = [("real", 0, feat, feat.audio)]
    if msg is not None and msg.audio is not None:
        out.append(("msg", 0, msg, msg.audio))
    out += [(f"shift{k:+d}", k, feat, shifted(feat.audio, k)) for k in shifts]
    if partner is not None and partner.audio is not None:
        out.append(("swap", 0, feat, swapped(feat.audio, partner.audio)))
    return out


def clip_curves(est: sync.SyncEstimator, feat: ClipFeatures, audio: media.AudioTrack):
    """(head curve, motion curve) of the speaking track, or None when the clip is not analysable.

    Both curves are linear in the per-frame scores, so head + w * motion is the combined curve exactly."""
    by_track, reasons = est.prepare(list(feat.windows), audio)
    chosen = est.select_speaker(by_track, feat.main_track_id, reasons) if by_track else None
    if not isinstance(chosen, tuple):
        return None
    prepared = by_track[chosen[0]]
    valid = [np.lib.stride_tricks.sliding_window_view(p.covered, len(p.window)).T for p in prepared]
    return (sync.pool_curve([est.head_scores(p) for p in prepared], valid),
            sync.pool_curve([est.motion_scores(p) for p in prepared], valid))


def curve_rows(items: list[ManifestItem], cache: FeatureCache, lrasd, head, partners) -> list[CurveRow]:
    est = sync.SyncEstimator(lrasd, head=head, method="head", max_offset=head.max_offset)
    rows = []
    for it in items:
        feat = cache.get(it, "orig")
        msg = cache.get(it, "msg")
        partner = cache.get(partners[it.path], "orig") if it.path in partners else None
        for variant, k, f, audio in audio_variants(it, feat, msg, partner):
            got = clip_curves(est, f, audio)
            if got is not None:
                rows.append(CurveRow(it.path, variant, k, got[0], got[1]))
    return rows


def combined(rows: list[CurveRow], motion_weight: float, motion_only: bool = False) -> list[np.ndarray]:
    return [r.motion if motion_only else r.head + motion_weight * r.motion for r in rows]


def recovery(rows: list[CurveRow], curves: list[np.ndarray], max_offset: int = 15, tol: int = 2) -> float:
    """Share of real and shifted rows whose best offset is within ``tol`` frames of the applied shift."""
    hits = [abs(sync.curve_summary(c, max_offset)[0] - r.shift) <= tol
            for r, c in zip(rows, curves, strict=True) if r.variant != "swap"]
    return float(np.mean(hits)) if hits else float("nan")


def fit_calibration(rows: list[CurveRow], curves: list[np.ndarray], max_offset: int = 15) -> np.ndarray:
    """Logistic (bias, w_near, w_margin) separating real/re-encoded from shifted/swapped audio."""
    from sklearn.linear_model import LogisticRegression

    x = np.array([sync.curve_summary(c, max_offset)[2:] for c in curves])
    y = np.array([r.mismatched for r in rows], int)
    lr = LogisticRegression(C=10.0, class_weight="balanced").fit(x, y)
    return np.array([lr.intercept_[0], *lr.coef_[0]])


def auc_mismatch(rows: list[CurveRow], curves: list[np.ndarray], calibration, max_offset: int = 15) -> float:
    from sklearn.metrics import roc_auc_score

    err = [sync.calibrated_error(c, max_offset, calibration) for c in curves]
    return float(roc_auc_score([r.mismatched for r in rows], err))


def cv_folds(items: list[ManifestItem], k: int = 3) -> list[list[ManifestItem]]:
    """Group-disjoint folds: whole groups (linked groups stay together, as in training/split.py)."""
    from training.split import _components

    comps = sorted(_components(items).values(), key=lambda c: (-len(c), c[0].path))
    folds: list[list[ManifestItem]] = [[] for _ in range(k)]
    for comp in comps:  # largest first into the smallest fold
        min(folds, key=len).extend(comp)
    return folds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--extract-only", action="store_true", help="fill the feature cache and stop")
    p.add_argument("--split", default="train", help="split to extract with --extract-only ('all' for every clip)")
    p.add_argument("--dims", default="2,4,8", help="canonical directions to try (cross-validated)")
    p.add_argument("--motion-weights", default="0,0.5,1", help="motion-curve weights to try (cross-validated)")
    p.add_argument("--ridge", type=float, default=FitConfig.ridge)
    p.add_argument("--context", type=int, default=FitConfig.context)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    items = video_av(read_manifest(args.manifest))
    cache = FeatureCache()
    if args.extract_only:
        for it in items if args.split == "all" else select(items, args.split):
            cache.get(it, "orig")
            if it.label == "real":
                cache.get(it, "msg")
        return 0
    t0 = time.perf_counter()
    train = video_av(select(items, "train"), "real")
    require_train_only(train)
    _, lrasd = cache.models()
    wins = training_windows(train, cache, lrasd)
    partners = swap_partners(train)
    folds = cv_folds(train)
    logger.info("%d real train clips, %d windows, %d folds of %s clips", len(train), len(wins), len(folds),
                [len(f) for f in folds])

    # group cross-validation: out-of-fold curves for every candidate, then pick, calibrate and refit on all
    dims = [int(x) for x in args.dims.split(",")]
    weights = [float(x) for x in args.motion_weights.split(",")]
    oof: dict[int, list[CurveRow]] = {d: [] for d in dims}
    for k, fold in enumerate(folds):
        held = {it.path for it in fold}
        fold_wins = [w for w in wins if w.clip.split("|")[0] not in held]
        for d in dims:
            head = fit_head(fold_wins, FitConfig(d, args.context, args.ridge))
            oof[d] += curve_rows(fold, cache, lrasd, head, partners)
        logger.info("fold %d done (%.0fs)", k, time.perf_counter() - t0)
    results = []
    for d in dims:
        rows = oof[d]
        for wgt in weights:
            curves = combined(rows, wgt)
            cal = fit_calibration(rows, curves)
            results.append((recovery(rows, curves), auc_mismatch(rows, curves, cal), d, wgt, cal))
            logger.info("dims %d motion weight %.1f: out-of-fold offset recovery %.3f, AUC real vs mismatched %.3f",
                        d, wgt, results[-1][0], results[-1][1])
    rows = oof[dims[0]]
    motion_curves = combined(rows, 0.0, motion_only=True)
    motion_cal = fit_calibration(rows, motion_curves)
    logger.info("motion baseline on train: offset recovery %.3f, AUC %.3f, calibration %s",
                recovery(rows, motion_curves), auc_mismatch(rows, motion_curves, motion_cal),
                np.round(motion_cal, 3).tolist())
    rec, auc, d, wgt, cal = max(results, key=lambda r: (round(r[0], 2), r[1]))
    cfg = FitConfig(d, args.context, args.ridge, wgt)
    head = fit_head(wins, cfg)
    with torch.no_grad():
        head.calibration.copy_(torch.from_numpy(cal).float())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": head.config, "state_dict": head.state_dict(),
                "meta": {"train_clips": len(train), "train_windows": len(wins), "fit": cfg.__dict__,
                         "oof_offset_recovery": rec, "oof_auc": auc}}, out)
    logger.info("chose dims %d, motion weight %.1f (out-of-fold recovery %.3f, AUC %.3f); calibration %s",
                d, wgt, rec, auc, np.round(cal, 3).tolist())
    logger.info("saved %s (%.1f KB) in %.0fs", out, out.stat().st_size / 1024, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

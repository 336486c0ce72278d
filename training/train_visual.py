"""``python -m training visual --manifest M``: fine-tune MesoInception4 on the pipeline's aligned face crops.

Starts from the released DF weights (DariusAf/MesoNet) and trains real vs fake on the TRAIN side of the committed
group split only (video_av and video clips, plus still images unless ``--no-images``); validation items are refused.

Crops come from the inference path itself: RetinaFace on sampled frames → tracks → ``track_crops(frames, track, 256,
visual_crop_margin)``. Frames are sampled evenly across each clip (``--frames``, default 32), from the file as-is and
from two messenger-like re-encodes (``training.reencode`` profiles ``whatsapp`` and ``whatsapp_low``), then cached
under ``out/visual_cache`` (gitignored). Only face crops, never full frames: fake demos carry watermarks and insets.
Real files contribute every substantial track (the ones the pipeline scores); fakes only their main track, because a
second face in a fake (an inset of the driving video, an untouched bystander) is often real.

Training: class-balanced crop sampling (every file weighs the same within its class, images ``--image-weight``),
per-crop augmentation (colour jitter, blur, resize down/up, JPEG, flip), block 1 frozen, BatchNorm statistics frozen,
small LR, early stopping on held-out TRAIN groups scored like the pipeline (per-track mean P(fake), max over tracks)
on the original and the WhatsApp re-encode. The chosen number of epochs is then refit on every train group.

    python -m training visual --manifest ../shared/data/dev/manifest.tsv \
        [--out models/checkpoints/mesoinception_ft.pt] [--extract-only]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from models import registry
from models.mesonet import INPUT_SIZE, MesoNetDetector, load_checkpoint
from models.weights import WeightsNotFoundError
from pipeline import media, stages
from pipeline.aggregate import aggregate
from pipeline.faces import FaceAnalysis, FaceTrack
from training.metrics import auc
from training.split import (
    DEFAULT_SPLIT,
    ManifestItem,
    make_split,
    read_manifest,
    require_train_only,
    select,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / "out" / "visual_cache"
DEFAULT_OUT = REPO_ROOT / "models" / "checkpoints" / "mesoinception_ft.pt"
MODALITIES = ("video_av", "video", "image")
SOURCES = ("orig", "whatsapp", "whatsapp_low")  # the file as-is, then training.reencode profiles
HOLDOUT_SOURCES = ("orig", "whatsapp")  # what the pipeline meets: uploads as-is and messenger forwards
MAX_SAMPLE_FPS = 8.0  # short clips (3 s GRID) get more frames than the pipeline's 2 fps, long ones are spread thin


# ----------------------------------------------------------------------------------------------
# Crops, exactly as the pipeline's visual stage makes them
# ----------------------------------------------------------------------------------------------
def visual_crops(frames: np.ndarray, track: FaceTrack, settings) -> np.ndarray:
    """What the pipeline's visual stage feeds MesoNet (its registry preprocessing: aligned crops, input size)."""
    prep = registry.spec("mesonet").preprocess
    return stages.visual_crops(frames, track, prep.crop, int(prep.input_size), settings.visual_crop_margin)


@dataclass(frozen=True)
class FileCrops:
    """Face crops of one media file: (N,256,256,3) RGB uint8 and the track of each; tracks[0] is the main one."""

    crops: np.ndarray
    track_ids: np.ndarray
    tracks: tuple[int, ...]

    @classmethod
    def empty(cls) -> FileCrops:
        return cls(np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8), np.zeros(0, np.int64), ())

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    def of_track(self, track_id: int) -> np.ndarray:
        return self.crops[self.track_ids == track_id]

    def pool(self, fake: bool) -> np.ndarray:
        """Indices of the crops a file of this label trains on: fakes only their main track."""
        if not self.tracks:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.track_ids == self.tracks[0]) if fake else np.arange(len(self))


def sample_faces(source: media.MediaSource, face_detector, settings, frames: int = 32
                 ) -> tuple[media.SampledFrames, FaceAnalysis]:
    """Up to ``frames`` frames spread over the clip, with faces detected and tracked by the pipeline's code."""
    tracked = stages.decode_and_track(source, face_detector, settings, with_audio=False, sample_fps=MAX_SAMPLE_FPS,
                                      max_frames=frames)
    return tracked.decoded.sampled, tracked.analysis


def file_crops(frames: np.ndarray, analysis: FaceAnalysis, settings, max_tracks: int = 4) -> FileCrops:
    """The pipeline's crops of the main track and of up to ``max_tracks - 1`` other substantial tracks."""
    main = analysis.main_track
    if main is None:
        return FileCrops.empty()
    others = sorted((t for t in stages.substantial_tracks(analysis) if t.track_id != main.track_id),
                    key=lambda t: -len(t) * t.mean_size)
    keep = [main, *others[: max_tracks - 1]]
    crops = [visual_crops(frames, t, settings) for t in keep]
    ids = np.concatenate([np.full(len(c), i, np.int64) for i, c in enumerate(crops)])
    return FileCrops(np.concatenate(crops), ids, tuple(range(len(keep))))


def extract_crops(source: media.MediaSource, face_detector, settings, frames: int = 32) -> FileCrops:
    sampled, analysis = sample_faces(source, face_detector, settings, frames)
    return file_crops(sampled.frames, analysis, settings)


class CropCache:
    """``FileCrops`` per (manifest item, source encoding) under ``root``; re-encodes go through a temp dir."""

    def __init__(self, root: Path = CACHE_DIR, settings=None, face_detector=None, frames: int = 32):
        from pipeline.settings import get_settings

        self.root = Path(root)
        self.settings = settings or get_settings()
        self.frames = frames
        self._face = face_detector

    def _detector(self):
        if self._face is None:
            from models.retinaface import RetinaFaceDetector

            self._face = RetinaFaceDetector.load(device="cpu", variant=self.settings.face_detector)
        return self._face

    def path_for(self, item: ManifestItem, source: str) -> Path:
        # margin, frame count and face detector shape the crops: a change must not reuse stale ones
        s = self.settings
        key = f"{item.path}|{source}|{self.frames}|{s.visual_crop_margin}|{s.face_detector}|{s.face_threshold}"
        return self.root / f"{Path(item.path).stem[:40]}-{source}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"

    def get(self, item: ManifestItem, source: str = "orig") -> FileCrops:
        path = self.path_for(item, source)
        if path.is_file():
            with np.load(path) as z:
                return FileCrops(z["crops"], z["track_ids"], tuple(int(t) for t in z["tracks"]))
        t0 = time.perf_counter()
        if source == "orig":
            fc = extract_crops(item.file, self._detector(), self.settings, self.frames)
        else:
            from training.reencode import reencode

            with tempfile.TemporaryDirectory() as tmp:
                kind = "image" if item.modality == "image" else "video"
                fc = extract_crops(reencode(item.file, tmp, source, kind=kind), self._detector(), self.settings,
                                   self.frames)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp_path, crops=fc.crops, track_ids=fc.track_ids, tracks=np.array(fc.tracks, np.int64))
        tmp_path.replace(path)
        logger.info("crops of %s (%s): %d in %d track(s), %.1fs", item.path, source, len(fc), len(fc.tracks),
                    time.perf_counter() - t0)
        return fc


@dataclass(frozen=True)
class TrainFile:
    """One manifest item with its crops per source encoding."""

    item: ManifestItem
    sources: dict[str, FileCrops]

    @property
    def fake(self) -> bool:
        return self.item.label == "fake"


def load_files(items: list[ManifestItem], cache: CropCache, sources: tuple[str, ...] = SOURCES) -> list[TrainFile]:
    out = []
    for i, it in enumerate(items):
        try:
            files = {s: cache.get(it, s) for s in sources}
        except WeightsNotFoundError:
            raise  # a missing model is not a bad file: stop with its message
        except Exception as exc:  # one unreadable file must not stop a training run
            logger.warning("skipping %s: %s", it.path, exc)
            continue
        if len(files["orig"]) == 0:
            logger.warning("no face in %s: skipped", it.path)
            continue
        out.append(TrainFile(it, files))
        if (i + 1) % 10 == 0:
            logger.info("crops: %d/%d files", i + 1, len(items))
    return out


# ----------------------------------------------------------------------------------------------
# Augmentation (per crop, uint8 RGB in and out)
# ----------------------------------------------------------------------------------------------
def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter, blur, resize down/up and JPEG (in the order a re-upload applies them), then a flip."""
    out = crop
    if rng.random() < 0.5:
        f = out.astype(np.float32)
        grey = f.mean(axis=2, keepdims=True)
        f = grey + (f - grey) * rng.uniform(0.7, 1.3)  # saturation
        f = (f - f.mean()) * rng.uniform(0.8, 1.2) + f.mean() + rng.uniform(-20, 20)  # contrast, brightness
        out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        side = int(INPUT_SIZE * rng.uniform(0.35, 0.8))
        small = cv2.resize(out, (side, side), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    if rng.random() < 0.25:
        # Aligned crops of faces that fill the frame get black out-of-frame bands; in the train data those are
        # mostly real (224 px VoxCeleb crops), so put bands on both classes at random rather than let them mean "real".
        out = out.copy()
        band = int(INPUT_SIZE * rng.uniform(0.03, 0.2))
        edge = int(rng.integers(4))
        view = out if edge < 2 else out.transpose(1, 0, 2)
        if edge % 2 == 0:
            view[:band] = 0
        else:
            view[-band:] = 0
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # upper bound; early stopping picks the epoch
    patience: int = 5
    crops_per_class: int = 320  # crops of each class drawn per epoch
    batch_size: int = 32
    lr: float = 3e-4  # 1e-4 reached the same holdout figures in 3x the epochs
    weight_decay: float = 1e-3
    freeze_blocks: int = 1  # 0-4 backbone blocks kept at the released weights
    label_smoothing: float = 0.1
    image_weight: float = 0.5  # a still image counts this much of a clip in class balancing
    seed: int = 0


@dataclass
class FitResult:
    model: nn.Module
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


BLOCKS = (("inc1", "bn1"), ("inc2", "bn2"), ("conv3", "bn3"), ("conv4", "bn4"))


def freeze(model: nn.Module, blocks: int) -> None:
    for name, p in model.named_parameters():
        frozen = any(name.startswith(f"{m}.") for blk in BLOCKS[:blocks] for m in blk)
        p.requires_grad_(not frozen)


def train_mode(model: nn.Module) -> None:
    """Dropout on, BatchNorm on its running statistics: batches of 32 mixed crops are too few and too varied
    to re-estimate them, and batch statistics in training against running ones at inference would diverge."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """As ``MesoNetDetector`` feeds the network: [0,1] RGB, NCHW view of NHWC memory (channels_last)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def _weights(files: list[TrainFile], image_weight: float) -> np.ndarray:
    w = np.array([image_weight if f.item.modality == "image" else 1.0 for f in files])
    return w / w.sum()


def draw_epoch(files: list[TrainFile], cfg: TrainConfig, rng: np.random.Generator) -> list[tuple[int, str, int]]:
    """(file, source, crop) triples: ``crops_per_class`` per class, files drawn by weight, a random encoding each."""
    out: list[tuple[int, str, int]] = []
    for fake in (False, True):
        idx = [i for i, f in enumerate(files) if f.fake == fake]
        if not idx:
            raise ValueError(f"no {'fake' if fake else 'real'} training file: cannot balance the classes")
        p = _weights([files[i] for i in idx], cfg.image_weight)
        for i in rng.choice(idx, size=cfg.crops_per_class, p=p):
            f = files[i]
            usable = [s for s in f.sources if len(f.sources[s].pool(fake))]
            src = usable[int(rng.integers(len(usable)))]
            pool = f.sources[src].pool(fake)
            out.append((int(i), src, int(pool[int(rng.integers(len(pool)))])))
    rng.shuffle(out)
    return out


def clip_scores(model: nn.Module, files: list[TrainFile], source: str,
                method: str = "mean") -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, clip P(fake), mean crop BCE) the pipeline's way: per-track aggregate, max over the tracks."""
    det = MesoNetDetector(model, device="cpu", batch_size=64)
    ys, ss, losses = [], [], []
    for f in files:
        fc = f.sources.get(source)
        if fc is None or len(fc) == 0:
            continue
        probs = det.predict(fc.crops).fake_prob
        ss.append(max(aggregate(probs[fc.track_ids == t], method) for t in fc.tracks))
        ys.append(int(f.fake))
        p = np.clip(probs, 1e-6, 1 - 1e-6)
        losses.append(float(-np.mean(np.log(p) if f.fake else np.log(1 - p))))
    return np.array(ys), np.array(ss), float(np.mean(losses)) if losses else float("nan")


def evaluate_files(model: nn.Module, files: list[TrainFile], sources: tuple[str, ...] = HOLDOUT_SOURCES
                   ) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in sources:
        y, p, loss = clip_scores(model, files, s)
        out[f"auc_{s}"] = auc(y, p) if len(y) else float("nan")
        out[f"loss_{s}"] = loss
    aucs = [out[f"auc_{s}"] for s in sources if out[f"auc_{s}"] is not None]
    out["auc"] = float(np.mean(aucs)) if aucs else float("nan")
    out["loss"] = float(np.mean([out[f"loss_{s}"] for s in sources]))
    return out


def fit(model: nn.Module, train: list[TrainFile], holdout: list[TrainFile], cfg: TrainConfig,
        split_file: str | Path = DEFAULT_SPLIT, epochs: int | None = None) -> FitResult:
    """Fine-tune ``model`` in place. With ``holdout``: keep the best epoch by clip AUC (then crop loss) and stop
    after ``cfg.patience`` epochs without improvement; without: train ``epochs`` (default ``cfg.epochs``)."""
    require_train_only([f.item for f in [*train, *holdout]], split_file)
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    freeze(model, cfg.freeze_blocks)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    n_epochs = epochs or cfg.epochs
    history: list[dict[str, float]] = []
    best_key, best_epoch, best_state, stale = None, 0, copy.deepcopy(model.state_dict()), 0
    if holdout:
        start = evaluate_files(model, holdout)
        history.append({"epoch": 0, **start})
        best_key = _key(start)
        logger.info("epoch 0 (released): holdout %s", _fmt(start))
    for epoch in range(1, n_epochs + 1):
        train_mode(model)
        draws = draw_epoch(train, cfg, rng)
        total, n = 0.0, 0
        for b in range(0, len(draws), cfg.batch_size):
            batch = draws[b : b + cfg.batch_size]
            x = np.stack([augment(train[i].sources[s].crops[k], rng) for i, s, k in batch])
            # the network's output is the REAL logit; smoothed targets keep it from saturating on 60 files
            real = torch.tensor([0.0 if train[i].fake else 1.0 for i, _, _ in batch])
            target = real * (1 - cfg.label_smoothing) + cfg.label_smoothing / 2
            loss = loss_fn(model(to_tensor(x)), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            n += len(batch)
        row = {"epoch": epoch, "train_loss": total / max(n, 1)}
        if holdout:
            row |= evaluate_files(model, holdout)
            key = _key(row)
            if key > best_key:
                best_key, best_epoch, best_state, stale = key, epoch, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        else:
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
        history.append(row)
        logger.info("epoch %d: %s (%.0fs)", epoch, _fmt(row), time.perf_counter() - t0)
        if holdout and stale >= cfg.patience:
            logger.info("no holdout improvement for %d epochs: stopping", cfg.patience)
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model, best_epoch, history, time.perf_counter() - t0)


def _key(row: dict[str, float]) -> tuple[float, float]:
    """Holdout clip AUC first (it is what the pipeline is judged on), crop loss to break its frequent ties."""
    a = row["auc"]
    return (round(a, 4) if np.isfinite(a) else -1.0, -row["loss"])


def _fmt(row: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in row.items() if k != "epoch" and v is not None)


def holdout_split(files: list[TrainFile], fraction: float = 0.3, seed: str = "visual-holdout"
                  ) -> tuple[list[TrainFile], list[TrainFile]]:
    """Whole TRAIN groups held out for early stopping, stratified like the committed split."""
    sides = make_split([f.item for f in files], val_fraction=fraction, seed=seed)
    return ([f for f in files if sides[f.item.path] == "train"], [f for f in files if sides[f.item.path] == "val"])


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict) -> Path:
    """``{"arch", "state_dict", "meta"}``, which ``models.mesonet.load_checkpoint`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"arch": model.arch, "state_dict": state, "meta": meta}, path)
    return path


def released_model() -> nn.Module:
    from models.weights import resolve

    return load_checkpoint(resolve("mesoinception_df"), "mesoinception4")


def train(items: list[ManifestItem], cache: CropCache, cfg: TrainConfig, out: str | Path = DEFAULT_OUT,
          refit: bool = True, fixed_epochs: int | None = None,
          split_file: str | Path = DEFAULT_SPLIT) -> tuple[FitResult, dict]:
    """Select the epoch count on held-out train groups, then (``refit``) train that long on every train file.
    ``fixed_epochs`` skips the selection run (use the count an earlier selection run logged)."""
    require_train_only(items, split_file)
    t0 = time.perf_counter()
    files = load_files(items, cache)
    t_crops = time.perf_counter() - t0
    fit_files, hold = holdout_split(files)
    logger.info("files: %d fit (%s), %d holdout (%s)", len(fit_files), _labels(fit_files), len(hold), _labels(hold))
    meta: dict = {
        "base": "mesoinception_df",
        "config": asdict(cfg),
        "files": {"fit": len(fit_files), "holdout": len(hold), "all": len(files)},
        "holdout_files": [f.item.path for f in hold],
        "groups": len({f.item.group for f in files}),
        "labels": dict(Counter(f.item.label for f in files)),
        "crops": {s: int(sum(len(f.sources[s]) for f in files)) for s in SOURCES},
        "seconds": {"crops": round(t_crops, 1)},
    }
    final, trained_on = None, "fit files (holdout groups excluded)"
    if fixed_epochs is None:
        final = fit(released_model(), fit_files, hold, cfg, split_file)
        epochs = final.best_epoch
        meta |= {"best_epoch": epochs, "holdout_history": final.history}
        meta["seconds"]["select"] = round(final.seconds, 1)
        logger.info("best epoch %d of %d run (%.0fs)", epochs, len(final.history) - 1, final.seconds)
        if epochs == 0:
            logger.warning("fine-tuning never beat the released weights on the holdout; saving them unchanged")
    else:
        epochs = fixed_epochs
    if epochs == 0:
        final, trained_on = FitResult(released_model(), 0), "nothing (released weights)"
    elif final is None or refit:
        final, trained_on = fit(released_model(), files, [], cfg, split_file, epochs=epochs), "all train files"
        meta["seconds"]["refit"] = round(final.seconds, 1)
        logger.info("trained on all %d train files for %d epochs (%.0fs)", len(files), epochs, final.seconds)
    meta |= {"epochs": epochs, "trained_on": trained_on}
    save_checkpoint(final.model, out, meta)
    logger.info("wrote %s", out)
    return final, meta


def _labels(files: list[TrainFile]) -> str:
    c = Counter(f.item.label for f in files)
    return f"{c['real']} real / {c['fake']} fake"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training visual", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--frames", type=int, default=32, help="frames sampled per clip (evenly over its length)")
    p.add_argument("--no-images", action="store_true", help="train on clips only")
    p.add_argument("--no-refit", action="store_true", help="keep the early-stopped model (trained without holdout)")
    p.add_argument("--fixed-epochs", type=int, default=None,
                   help="skip the holdout selection: train this many epochs on every train file")
    p.add_argument("--extract-only", action="store_true", help="fill the crop cache and stop")
    p.add_argument("--threads", type=int, default=2)
    d = TrainConfig()
    for name in ("epochs", "patience", "crops_per_class", "batch_size", "freeze_blocks", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("lr", "weight_decay", "label_smoothing", "image_weight"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    modalities = MODALITIES[:2] if args.no_images else MODALITIES
    items = [it for it in select(read_manifest(args.manifest), "train") if it.modality in modalities]
    cache = CropCache(frames=args.frames)
    if args.extract_only:
        load_files(items, cache)
        return 0
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(d)})
    t0 = time.perf_counter()
    _, meta = train(items, cache, cfg, args.out, refit=not args.no_refit, fixed_epochs=args.fixed_epochs)
    logger.info("done in %.0fs: %s", time.perf_counter() - t0, meta["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m training.train_sbi``: MesoInception4 taught on self-blended faces of real crops only (SBI).

Self-blended images (Shiohara & Yamasaki, CVPR 2022): a real face blended with a colour-, sharpness- and
scale-jittered copy of itself through its landmark hull. The blend seam and the colour/frequency mismatch inside it
are what face swaps and paste-back talking heads leave, without any generator's fingerprint, so the detector is
taught no generator at all and every dev fake is new to it.

Data: the crops the pipeline's visual stage feeds MesoNet (``training.train_visual.CropCache``: RetinaFace on up to
32 frames, face tracks, 256 px aligned crops) of every real video and image of the dev set; MediaPipe Face Mesh finds
the 468 landmarks of each crop once (``training.synth_faces``) and each training step blends fresh copies
(``synth_faces.self_blend`` with new ``BlendParams``), then both the real crop and its blend go through the
re-upload augmentation of ``train_visual.augment``. Start: the released MesoInception4 DF weights, block 1 and the
BatchNorm statistics frozen.

Judged out of fold: the dev set's group components (reals with the fakes made from them, synthetic items with their
real clip) are dealt into ``--folds`` folds; each fold's files are scored by a model that never saw that fold's
reals, the pipeline's way (per-track mean P(fake), max over tracks). Per source: the AUC of its fakes against every
real of its family, for this model and for the released weights on the same crops.

    python -m training.train_sbi --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        [--steps 400] [--ship models/checkpoints/mesoinception_sbi.pt]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.protocol import family_of, source_of
from training.split import ManifestItem, _components, read_manifest
from training.train_visual import (
    CropCache,
    TrainFile,
    augment,
    clip_scores,
    freeze,
    load_files,
    released_model,
    save_checkpoint,
    to_tensor,
    train_mode,
)

logger = logging.getLogger(__name__)

MODALITIES = ("video_av", "video", "image")
FACE_BOX = np.array([48.0, 40.0, 208.0, 232.0])  # where the face lies in the pipeline's 256 px aligned crop
MIN_PRESENCE = 0.5


@dataclass(frozen=True)
class SBIConfig:
    steps: int = 400
    pairs: int = 16  # real crops per step, each with its self-blend: batches of 32
    lr: float = 2e-4
    weight_decay: float = 1e-3
    freeze_blocks: int = 1
    label_smoothing: float = 0.1
    augment: bool = True  # the re-upload augmentation of train_visual on both crops
    train_bn: bool = False  # re-estimate BatchNorm statistics (batches are 32 crops of one task)
    seed: int = 0


def crop_landmarks(files: list[TrainFile], mesh=None) -> dict[tuple[int, int], np.ndarray]:
    """(file, crop) -> 468 landmarks of the face in the crop, for the crops where Face Mesh sees one."""
    from training.synth_faces import FaceMesh

    mesh = mesh or FaceMesh()
    out = {}
    for i, f in enumerate(files):
        for k, crop in enumerate(f.sources["orig"].crops):
            pts, presence = mesh(crop, FACE_BOX)
            if presence >= MIN_PRESENCE:
                out[(i, k)] = pts
    return out


def blended(crop: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from training.synth_faces import BlendParams, self_blend

    return self_blend(crop, points, BlendParams.draw(rng))[0]


def fit(model: nn.Module, files: list[TrainFile], points: dict[tuple[int, int], np.ndarray], cfg: SBIConfig
        ) -> nn.Module:
    """Fine-tune ``model`` in place on (real crop, its self-blend) pairs of ``files``' reals."""
    keys = [k for k in points if not files[k[0]].fake]
    if not keys:
        raise ValueError("no real crop with landmarks to blend")
    # every file weighs the same, however many crops it has
    per_file = defaultdict(list)
    for k in keys:
        per_file[k[0]].append(k)
    file_ids = sorted(per_file)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    freeze(model, cfg.freeze_blocks)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    t0 = time.perf_counter()
    running = []
    for step in range(1, cfg.steps + 1):
        train_mode(model)
        if cfg.train_bn:
            model.train()
        x, real = [], []
        for fi in rng.choice(file_ids, size=cfg.pairs):
            i, k = per_file[fi][int(rng.integers(len(per_file[fi])))]
            crop = files[i].sources["orig"].crops[k]
            pair = [crop, blended(crop, points[(i, k)], rng)]
            x += [augment(c, rng) for c in pair] if cfg.augment else pair
            real += [1.0, 0.0]
        target = torch.tensor(real) * (1 - cfg.label_smoothing) + cfg.label_smoothing / 2
        loss = loss_fn(model(to_tensor(np.stack(x))), target)  # the network's output is the REAL logit
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append(loss.item())
        if step % 50 == 0:
            logger.info("step %d/%d: loss %.3f (%.0fs)", step, cfg.steps, float(np.mean(running[-50:])),
                        time.perf_counter() - t0)
    model.eval()
    return model


def blend_auc(model: nn.Module, files: list[TrainFile], points: dict[tuple[int, int], np.ndarray],
              keys: list[tuple[int, int]], seed: int = 1) -> float | None:
    """Crop-level AUC of fresh self-blends against their own real crops: can the model see a blend at all?"""
    from models.mesonet import MesoNetDetector
    from training.metrics import auc

    if not keys:
        return None
    rng = np.random.default_rng(seed)
    crops = np.stack([files[i].sources["orig"].crops[k] for i, k in keys])
    blends = np.stack([blended(c, points[key], rng) for c, key in zip(crops, keys, strict=True)])
    det = MesoNetDetector(model, device="cpu", batch_size=64)
    p = np.r_[det.predict(blends).fake_prob, det.predict(crops).fake_prob]
    return float(auc(np.r_[np.ones(len(keys)), np.zeros(len(keys))], p))


def fold_of_files(files: list[TrainFile], k: int) -> np.ndarray:
    """Fold per file: whole group components (a real clip, the fakes made from it, the same people) together."""
    comp = {}
    for key, members in _components([f.item for f in files]).items():
        for it in members:
            comp[it.path] = key
    return np.array([int(hashlib.sha1(comp[f.item.path].encode()).hexdigest(), 16) % k for f in files])


def scores_of(model: nn.Module, files: list[TrainFile]) -> np.ndarray:
    out = np.full(len(files), np.nan)
    for i, f in enumerate(files):
        _, s, _ = clip_scores(model, [f], "orig")
        if len(s):
            out[i] = s[0]
    return out


def per_source(files: list[TrainFile], scores: dict[str, np.ndarray]) -> list[dict]:
    """Per fake source: AUC of its fakes against every real of its family, for each scorer."""
    from training.metrics import auc

    fam = np.array([family_of(f.item.modality) for f in files])
    fake = np.array([f.fake for f in files])
    src = np.array([source_of(f.item.path) for f in files])
    rows = []
    for s in sorted(set(src[fake])):
        m = fake & (src == s)
        family = fam[m][0]
        reals = ~fake & (fam == family)
        row = {"source": str(s), "family": str(family), "fakes": int(m.sum()), "reals": int(reals.sum()),
               "synthetic": bool(files[int(np.flatnonzero(m)[0])].item.origin)}
        for name, sc in scores.items():
            ok = ~np.isnan(sc)
            y = np.r_[np.ones((m & ok).sum()), np.zeros((reals & ok).sum())]
            row[name] = auc(y, np.r_[sc[m & ok], sc[reals & ok]]) if (m & ok).any() and (reals & ok).any() else None
        rows.append(row)
    return rows


def format_rows(rows: list[dict], names: list[str]) -> str:
    head = f"{'held-out source':<24} {'family':<6} {'fakes':>5} {'reals':>5} " + " ".join(f"{n:>12}" for n in names)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['source']:<24} {r['family']:<6} {r['fakes']:>5} {r['reals']:>5} " + " ".join(
            f"{'—' if r[n] is None else format(r[n], '.3f'):>12}" for n in names))
    for label, pick in (("dev video sources", lambda r: r["family"] == "video" and not r["synthetic"]),
                        ("synthetic face recipes", lambda r: r["synthetic"]),
                        ("image sources", lambda r: r["family"] == "image")):
        sel = [r for r in rows if pick(r)]
        if sel:
            lines.append(f"{'mean, ' + label:<42} " + " ".join(
                f"{np.mean([r[n] for r in sel if r[n] is not None]):>12.3f}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train_sbi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", nargs="+", required=True, help="the dev manifest, then synthetic ones (face recipes)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=SBIConfig.steps)
    ap.add_argument("--lr", type=float, default=SBIConfig.lr)
    ap.add_argument("--no-augment", action="store_true", help="train on clean crops and blends")
    ap.add_argument("--train-bn", action="store_true", help="re-estimate BatchNorm statistics while training")
    ap.add_argument("--report", default="out/eval/sbi", help="folder for per_source.txt / summary.json")
    ap.add_argument("--ship", default=None, help="also train on every real and write the checkpoint here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = SBIConfig(steps=args.steps, lr=args.lr, augment=not args.no_augment, train_bn=args.train_bn)

    items: list[ManifestItem] = []
    for m in args.manifest:
        items += [it for it in read_manifest(m) if it.modality in MODALITIES
                  and (not it.origin or it.manipulation.startswith(("face_", "mouth_", "gen_")))]
    files = load_files(items, CropCache(), sources=("orig",))
    points = crop_landmarks(files)
    logger.info("%d files with faces (%d real), %d real crops with landmarks (%.0fs)", len(files),
                sum(not f.fake for f in files), sum(not files[i].fake for i, _ in points), time.perf_counter() - t0)
    if args.folds < 2:  # --folds 0: only the checkpoint (the figures come from an earlier run of the same recipe)
        return ship(args.ship, files, points, cfg, []) if args.ship else 0
    fold = fold_of_files(files, args.folds)
    sbi = np.full(len(files), np.nan)
    blend_aucs: list[float | None] = []
    for k in range(args.folds):
        # only the other folds' real crops are blended and learned from
        model = fit(released_model(), files, {key: v for key, v in points.items() if fold[key[0]] != k}, cfg)
        held = np.flatnonzero(fold == k)
        sbi[held] = scores_of(model, [files[i] for i in held])
        sample = sorted(key for key in points if fold[key[0]] == k and not files[key[0]].fake)[::5]
        blend_aucs.append(blend_auc(model, files, points, sample))
        logger.info("fold %d: %d files scored; held-out blends vs their crops AUC %s (%.0fs)", k, len(held),
                    blend_aucs[-1], time.perf_counter() - t0)
    released = scores_of(released_model(), files)
    names = ["released DF", "SBI (fold)"]
    rows = per_source(files, {names[0]: released, names[1]: sbi})
    text = format_rows(rows, names)
    print(text)
    out = Path(args.report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "per_source.txt").write_text(text + "\n")
    logger.info("held-out self-blends vs their own crops, per fold: %s", blend_aucs)
    (out / "summary.json").write_text(json.dumps({"config": asdict(cfg), "folds": args.folds, "rows": rows,
                                                  "blend_auc": blend_aucs,
                                                  "files": len(files), "seconds": round(time.perf_counter() - t0)},
                                                 indent=1))
    if args.ship:
        ship(args.ship, files, points, cfg, rows)
    logger.info("done in %.0fs", time.perf_counter() - t0)
    return 0


def ship(path: str, files: list[TrainFile], points: dict[tuple[int, int], np.ndarray], cfg: SBIConfig,
         rows: list[dict]) -> int:
    """Fit on every real's crops and write the checkpoint ``models.mesonet.load_checkpoint`` reads."""
    model = fit(released_model(), files, points, cfg)
    save_checkpoint(model, path, {"base": "mesoinception_df", "recipe": "self-blended images (SBI)",
                                  "config": asdict(cfg), "train_files": [f.item.path for f in files if not f.fake],
                                  "loso": rows})
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

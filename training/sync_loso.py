"""``python -m training.sync_loso``: the lip-sync head refitted and judged leave-one-source-out.

Every real ``video_av`` clip of the dev set belongs to one fold: the fake source whose LOSO fold holds it
(``training.protocol.folds``: the reals a generator was fed, the same people), else its own real collection.
For each fold the head (ridge CCA of frozen LR-ASD embeddings, ``training.train_sync.fit_head``) and its
clip-level calibration are fitted on the other folds' reals only, the calibration on curves that are
themselves out of fold (3 inner group folds). The fold's reals are then scored as they are, re-encoded,
and after each audio manipulation the synthetic recipes make (``training.synth``), done here on the cached
audio so one decode serves every variant:

* ``shift±k``: audio delayed / advanced by k video frames (k = 3 … 20, 0.12–0.8 s);
* ``swap``: the speech of a clip of another fold;
* ``splice``: 1.5–4 s of the window replaced by another fold's speech (the rest untouched);
* ``tts``: an offline TTS voice-over (espeak-ng, flite, festival) starting when the speaker does.

The dev set's own lip-sync fakes are scored by the head of their fold. Every AUC below compares a
held-out manipulation with held-out reals (as-is and re-encoded), so nothing is scored by a model that saw
its clip. ``--ship`` refits the chosen variant on every real and writes the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline import media, sync
from training import train_sync as ts
from training.protocol import folds as loso_folds
from training.protocol import source_of
from training.split import DEFAULT_SPLIT, ManifestItem, _components, read_manifest, read_split

logger = logging.getLogger(__name__)

SHIFT_FRAMES = (-20, -12, -8, -5, -3, 3, 5, 8, 12, 20)
FIT_SHIFTS = (-15, -10, -5, 5, 10, 15)  # the negatives the calibration sees (as train_sync does)
LARGE_SHIFT = 8  # frames: 0.32 s, the "av_shift >= 0.3 s"


@dataclass(frozen=True)
class Variant:
    """One (clip, manipulation) pair: the chosen speaker's prepared windows, independent of any head."""

    clip: str
    fold: str
    kind: str  # real | msg | shift | swap | splice | tts | fake
    shift: int
    prepared: tuple[sync.PreparedWindow, ...]
    motion: np.ndarray  # motion-baseline offset curve (head-independent)
    valid: tuple[np.ndarray, ...] = field(repr=False, default=())

    @property
    def mismatched(self) -> bool:
        return self.kind not in ("real", "msg")


def held_out_sets(items: list[ManifestItem]) -> dict[str, frozenset[str]]:
    """source -> the paths its fold holds out: the source's items and everything tied to them by ``group``
    (as ``training.protocol.folds``, and also for a real collection no fake was made from)."""
    comp_of: dict[str, list[ManifestItem]] = {}
    for comp in _components(list(items)).values():
        for it in comp:
            comp_of[it.path] = comp
    by_source: dict[str, set[str]] = defaultdict(set)
    for it in items:
        by_source[source_of(it.path)] |= {m.path for m in comp_of[it.path]}
    return {s: frozenset(p) for s, p in by_source.items()}


def fold_of_reals(items: list[ManifestItem]) -> dict[str, str]:
    """path -> the fold that scores it: a fake its own source's; a real the fake source's fold that holds it
    out (the generator it fed), else its own collection's."""
    fake_sources = {source_of(it.path) for it in items if it.label == "fake"}
    held = {f.source: f.held_out for f in loso_folds(items)}
    out = {}
    for it in items:
        src = source_of(it.path)
        if it.label == "fake" or src in fake_sources:
            out[it.path] = src
        else:
            out[it.path] = next((s for s in sorted(held) if it.path in held[s]), src)
    return out


def spliced(audio: media.AudioTrack, other: media.AudioTrack, rng: np.random.Generator) -> media.AudioTrack:
    """1.5–4 s of ``audio`` replaced by ``other``'s speech: a partial dub."""
    x = sync._resampled(audio)
    y = sync._resampled(other)
    n = int(rng.uniform(1.5, 4.0) * sync.SAMPLE_RATE)
    n = min(n, max(len(x) // 2, 1))
    a = int(rng.integers(0, max(len(x) - n, 1)))
    b = int(rng.integers(0, max(len(y) - n, 1)))
    out = x.copy()
    piece = np.resize(y[b : b + n], n)
    out[a : a + n] = piece
    return media.AudioTrack(out, sync.SAMPLE_RATE, audio.source_offset_s)


def voice_over(audio: media.AudioTrack, rng: np.random.Generator) -> media.AudioTrack:
    """An offline TTS voice-over as long as ``audio``, starting when the speaker starts (training.synth)."""
    from training import synth

    x = sync._resampled(audio)
    engines = [e for e in synth.TTS_ENGINES if synth.tts_available(e)]
    engine = str(rng.choice(engines))
    speech = np.zeros(0, np.float32)
    while len(speech) < len(x):
        s, _ = synth.tts(str(rng.choice(synth.SENTENCES)), engine, rng)
        speech = np.concatenate([speech, s, np.zeros(int(0.3 * synth.SR), np.float32)])
    k = int(synth.speech_onset_s(x) * synth.SR)
    out = synth.fit_length(np.concatenate([np.zeros(k, np.float32), speech]), len(x))
    return media.AudioTrack(out.astype(np.float32), sync.SAMPLE_RATE, audio.source_offset_s)


def prepare_variant(est: sync.SyncEstimator, clip: str, fold: str, kind: str, shift: int,
                    feat: ts.ClipFeatures, audio: media.AudioTrack) -> Variant | None:
    by_track, reasons = est.prepare(list(feat.windows), audio)
    chosen = est.select_speaker(by_track, feat.main_track_id, reasons) if by_track else None
    if not isinstance(chosen, tuple):
        return None
    prepared = tuple(by_track[chosen[0]])
    valid = tuple(np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(p.covered, len(p.window)).T)
                  for p in prepared)
    motion = sync.pool_curve([est.motion_scores(p) for p in prepared], list(valid))
    return Variant(clip, fold, kind, shift, prepared, motion, valid)


def build_variants(items: list[ManifestItem], cache: ts.FeatureCache, lrasd, fold_of: dict[str, str],
                   seed: int = 0, with_tts: bool = True, not_applicable: Counter | None = None) -> list[Variant]:
    """Every real's variants and every fake as-is, prepared once (LR-ASD audio embeddings per variant).
    ``not_applicable`` counts, per kind, the variants the estimator would not score (no speaking face: LR-ASD
    hears nobody on screen speaking, as at inference)."""
    from tqdm import tqdm

    from models.sync_head import SyncHead

    est = sync.SyncEstimator(lrasd, head=SyncHead(), method="head")
    reals = [it for it in items if it.label == "real"]
    feats = {it.path: cache.get(it, "orig") for it in items}
    out: list[Variant] = []
    for i, it in enumerate(tqdm(items, desc="variants", unit="clip")):
        feat, fold = feats[it.path], fold_of[it.path]
        if feat.audio is None:
            continue
        rng = np.random.default_rng([seed, i])
        if it.label == "fake":
            todo = [("fake", 0, feat, feat.audio)]
        else:
            others = [o for o in reals if fold_of[o.path] != fold and feats[o.path].audio is not None]
            other = feats[others[int(rng.integers(len(others)))].path]
            msg = cache.get(it, "msg")
            todo = [("real", 0, feat, feat.audio)]
            if msg.audio is not None:
                todo.append(("msg", 0, msg, msg.audio))
            todo += [("shift", k, feat, ts.shifted(feat.audio, k)) for k in sorted({*SHIFT_FRAMES, *FIT_SHIFTS})]
            todo += [("swap", 0, feat, ts.swapped(feat.audio, other.audio)),
                     ("splice", 0, feat, spliced(feat.audio, other.audio, rng))]
            if with_tts:
                todo.append(("tts", 0, feat, voice_over(feat.audio, rng)))
        for kind, k, f, audio in todo:
            v = prepare_variant(est, it.path, fold, kind, k, f, audio)
            if v is not None:
                out.append(v)
            elif not_applicable is not None:
                not_applicable[kind] += 1
    return out


# ----------------------------------------------------------------------------------------------
# Heads, curves and calibration for one configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    dims: int = 4
    motion_weight: float = 2.0
    features: str = "near_margin"  # calibration features: a key of pipeline.sync.FEATURE_SETS
    ridge: float = 0.5

    @property
    def label(self) -> str:
        return f"dims {self.dims}, motion {self.motion_weight:g}, ridge {self.ridge:g}, calibration {self.features}"


def parse_config(spec: str) -> Config:
    """``dims:motion_weight:calibration[:ridge]``, e.g. ``8:1:full``."""
    d, w, feats, *rest = spec.split(":")
    if feats not in sync.FEATURE_SETS:
        raise ValueError(f"unknown calibration feature set {feats!r} in {spec!r}; "
                         f"choose one of {sorted(sync.FEATURE_SETS)}")
    return Config(int(d), float(w), feats, float(rest[0]) if rest else 0.5)


def head_curve(head, v: Variant) -> np.ndarray:
    est = sync.SyncEstimator(None, head=head, max_offset=head.max_offset, method="motion")  # head_scores only
    return sync.pool_curve([est.head_scores(p) for p in v.prepared], list(v.valid))


def curve_parts(head, variants: list[Variant]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(head curve, motion curve) of each variant: the runtime combines them by the checkpoint's motion weight."""
    return [(head_curve(head, v), v.motion) for v in variants]


def windows_of(variants: list[Variant]) -> list[ts.TrainWindow]:
    """Training windows for the CCA: real and re-encoded clips at offset 0."""
    return [ts.TrainWindow(f"{v.clip}|{v.kind}", v.fold, p.audio_emb, p.window.visual, p.covered)
            for v in variants if v.kind in ("real", "msg") for p in v.prepared]


def calibration_features(parts: tuple[np.ndarray, np.ndarray], features: str, motion_weight: float,
                         max_offset: int = 15) -> np.ndarray:
    """What the runtime's calibration reads (``pipeline.sync.calibration_input``) from one variant's curves."""
    h, mo = parts
    curve = sync.combined_curve(h, mo, motion_weight)
    return sync.calibration_input(curve, max_offset, sync.FEATURE_SETS[features], parts)


def fit_calibration(x: np.ndarray, y: np.ndarray, features: str) -> np.ndarray:
    """(bias, weights...) of a balanced logistic on the features ``x``. The dual set's ten features live on
    scales 100x apart (a peak-to-sidelobe ratio, a curve's spread): they are standardised for the fit, so that
    the penalty weighs them alike, and the scaling is folded back into the weights; the older sets keep the
    raw fit their recorded recipes were judged with."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = np.zeros(x.shape[1]), np.ones(x.shape[1])
    if features == "dual":
        mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    lr = LogisticRegression(C=10.0, class_weight="balanced", max_iter=1000).fit((x - mu) / sd, y)
    w = lr.coef_[0] / sd
    return np.array([lr.intercept_[0] - float(w @ mu), *w])


def fit_variant(train: list[Variant], cfg: Config, inner_folds: int = 3) -> tuple[object, np.ndarray]:
    """Head on ``train``'s reals, calibration on out-of-fold curves of ``train``'s calibration variants."""
    fit_rows = [v for v in train if v.kind in ("real", "msg", "swap") or (v.kind == "shift" and v.shift in FIT_SHIFTS)]
    fold_keys = sorted({v.fold for v in train})
    inner = [fold_keys[k::inner_folds] for k in range(inner_folds)]
    x: list[np.ndarray] = []
    rows: list[Variant] = []
    for keys in inner:
        held = set(keys)
        head = ts.fit_head(windows_of([v for v in train if v.fold not in held]),
                           ts.FitConfig(cfg.dims, 2, cfg.ridge, cfg.motion_weight))
        part = [v for v in fit_rows if v.fold in held]
        x += [calibration_features(c, cfg.features, cfg.motion_weight) for c in curve_parts(head, part)]
        rows += part
    cal = fit_calibration(np.array(x), np.array([v.mismatched for v in rows], int), cfg.features)
    head = ts.fit_head(windows_of(train), ts.FitConfig(cfg.dims, 2, cfg.ridge, cfg.motion_weight))
    with torch.no_grad():
        head.calibration = torch.from_numpy(cal).float()
    return head, cal


def errors(head, cal: np.ndarray, variants: list[Variant], motion_weight: float) -> np.ndarray:
    return np.array([sync.calibrated_error(sync.combined_curve(h, mo, motion_weight), head.max_offset, cal,
                                           (h, mo))
                     for h, mo in curve_parts(head, variants)])


def loso_scores(variants: list[Variant], cfg: Config, held_out: dict[str, frozenset[str]] | None = None
                ) -> np.ndarray:
    """Every variant scored by a head and calibration fitted without its fold (``held_out``: the paths each fold
    holds out, closed under group links; by default the fold's own clips)."""
    scores = np.full(len(variants), np.nan)
    for fold in sorted({v.fold for v in variants}):
        idx = [i for i, v in enumerate(variants) if v.fold == fold]
        excluded = (held_out or {}).get(fold, frozenset()) | {variants[i].clip for i in idx}
        train = [v for v in variants if v.clip not in excluded and v.kind != "fake"]
        head, cal = fit_variant(train, cfg)
        scores[idx] = errors(head, cal, [variants[i] for i in idx], cfg.motion_weight)
    return scores


def shipped_scores(variants: list[Variant]) -> np.ndarray:
    from models.sync_head import load

    head = load()
    return errors(head, head.calibration.numpy(), variants, float(head.motion_weight))


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
RECIPES = {
    "shift ≥ 0.3 s": lambda v: v.kind == "shift" and abs(v.shift) >= LARGE_SHIFT and v.shift in SHIFT_FRAMES,
    "shift 0.12–0.2 s": lambda v: v.kind == "shift" and abs(v.shift) < LARGE_SHIFT and v.shift in SHIFT_FRAMES,
    "swap": lambda v: v.kind == "swap",
    "splice 1.5–4 s": lambda v: v.kind == "splice",
    "tts voice-over": lambda v: v.kind == "tts",
    "dev lip-sync fakes": lambda v: v.kind == "fake",
}


def _auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    from training.metrics import auc

    if not len(pos) or not len(neg):
        return None
    return float(auc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def summarise(variants: list[Variant], scores: np.ndarray) -> dict:
    reals = np.array([v.kind in ("real", "msg") for v in variants])
    out = {"recipes": {}, "per_fold": {}}
    for name, pick in RECIPES.items():
        m = np.array([pick(v) for v in variants])
        out["recipes"][name] = {"n": int(m.sum()), "auc": _auc(scores[m], scores[reals])}
    for fold in sorted({v.fold for v in variants}):
        fm = np.array([v.fold == fold for v in variants])
        fakes = fm & np.array([v.kind == "fake" for v in variants])
        manip = fm & ~reals & ~np.array([v.kind == "fake" for v in variants])
        out["per_fold"][fold] = {
            "reals": int((fm & reals).sum()),
            "manipulated_auc": _auc(scores[manip], scores[fm & reals]),
            "dev_fakes": int(fakes.sum()),
            "dev_fakes_auc_vs_all_reals": _auc(scores[fakes], scores[reals]),
        }
    synth = [r["auc"] for k, r in out["recipes"].items() if k != "dev lip-sync fakes" and r["auc"] is not None]
    out["mean_recipe_auc"] = float(np.mean(synth)) if synth else None
    return out


def format_summary(results: dict[str, dict]) -> str:
    names = list(results)
    lines = [f"{'recipe (held-out reals vs their copies)':<40}" + "".join(f"{n[:28]:>30}" for n in names)]
    for recipe in RECIPES:
        n = results[names[0]]["recipes"][recipe]["n"]
        lines.append(f"{recipe + f' (n={n})':<40}" + "".join(
            f"{_fmt(results[k]['recipes'][recipe]['auc']):>30}" for k in names))
    lines.append(f"{'mean over synthetic recipes':<40}" + "".join(f"{_fmt(results[k]['mean_recipe_auc']):>30}"
                                                                  for k in names))
    return "\n".join(lines)


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default="../shared/data/dev/manifest.tsv")
    p.add_argument("--report", default="out/eval/sync_loso", help="folder for summary.json and summary.txt")
    p.add_argument("--configs", default="4:2:near_margin,4:2:full,8:2:full,4:1:full,4:2:full:2",
                   help="dims:motion_weight:calibration[:ridge] candidates, compared under LOSO")
    p.add_argument("--ship", default=None, help="write the winning configuration, refitted on every real, here")
    p.add_argument("--no-tts", action="store_true", help="skip the TTS voice-over variants")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    all_items = read_manifest(args.manifest)
    fold_of = fold_of_reals(all_items)
    held = held_out_sets(all_items)
    items = ts.video_av(all_items)
    cache = ts.FeatureCache()
    _, lrasd = cache.models()
    skipped: Counter = Counter()
    variants = build_variants(items, cache, lrasd, fold_of, with_tts=not args.no_tts, not_applicable=skipped)
    logger.info("not applicable (no on-screen speaker), per kind: %s", dict(skipped))
    logger.info("%d variants of %d clips in %d folds (%.0fs)", len(variants), len({v.clip for v in variants}),
                len({v.fold for v in variants}), time.perf_counter() - t0)
    shipped = "shipped head (28 train-split reals)"
    all_scores = {shipped: shipped_scores(variants)}
    results: dict[str, dict] = {shipped: summarise(variants, all_scores[shipped])}
    configs = {}
    for spec in args.configs.split(","):
        cfg = parse_config(spec)
        configs[cfg.label] = cfg
        all_scores[cfg.label] = loso_scores(variants, cfg, held)
        results[cfg.label] = summarise(variants, all_scores[cfg.label])
        logger.info("%s: mean recipe AUC %s (%.0fs)", cfg.label, _fmt(results[cfg.label]["mean_recipe_auc"]),
                    time.perf_counter() - t0)
    text = format_summary(results)
    # the shipped head was fitted on the train-side reals: the fair comparison is on the clips it never saw
    sides = read_split(DEFAULT_SPLIT)
    unseen = [i for i, v in enumerate(variants) if v.kind == "fake" or sides.get(v.clip) != "train"]
    fair = {k: summarise([variants[i] for i in unseen], sc[unseen]) for k, sc in all_scores.items()}
    text += (f"\n\nOnly the {len({variants[i].clip for i in unseen if variants[i].kind != 'fake'})} reals the shipped "
             "head never saw (validation side of the committed split), and the dev fakes:\n" + format_summary(fair))
    print(text)
    out = Path(args.report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"not_applicable": dict(skipped), **results}, indent=1))
    (out / "summary.txt").write_text(text + "\n")
    if args.ship:
        best = max(configs, key=lambda k: results[k]["mean_recipe_auc"] or 0)
        cfg = configs[best]
        head, _ = fit_variant([v for v in variants if v.kind != "fake"], cfg)
        reals = sorted({v.clip for v in variants if v.kind in ("real", "msg")})
        torch.save({"config": head.config, "state_dict": head.state_dict(),
                    "meta": {"train_clips": len(reals), "train_files": reals, "fit": cfg.__dict__,
                             "loso": results[best]}}, args.ship)
        logger.info("shipped %s to %s", best, args.ship)
    logger.info("done in %.0fs", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

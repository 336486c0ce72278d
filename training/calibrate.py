"""Fit the fusion: per-detector calibration, the logistic combination and the verdict thresholds.

    python -m training.calibrate --manifest ../shared/data/dev/manifest.tsv [--split val] [--out FILE]

It scans the manifest with the current detectors (re-using ``make eval``'s cached results), then:
  * calibrates each detector by Platt scaling of its log-odds (isotonic with ``--method isotonic``);
  * fits a logistic regression over the calibrated log-odds of the detectors that ran (0 = did not run),
    on rows where detectors are also randomly hidden, so the weights hold when some are missing; items are
    weighted so each modality (video, audio, image) counts equally, whatever its number of files;
  * picks thresholds: FAKE at the lowest P(fake) whose false-positive rate on real items is at most
    ``--max-fpr``; AUTHENTIC below the highest P(fake) that lets at most ``--max-miss`` of fakes through;
    both on the cross-validated scores and on the final model's own scores, keeping the stricter;
  * reports figures from grouped cross-validation (never the same group in the fitting and scoring folds),
    so the numbers in the JSON are out-of-sample.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from pipeline.fusion import DEFAULT_CALIBRATION, EPS, Calibrator, FusionModel, logit
from pipeline.report import SLOTS
from training.evaluate import ItemResult, auc, eer, run_items
from training.split import _components, read_manifest, select

logger = logging.getLogger(__name__)


def _raw(r: ItemResult, slot: str) -> float | None:
    return r.raw.get(slot) if r.status.get(slot) == "ok" else None


def _fused(model: FusionModel, r: ItemResult) -> float:
    """The model's P(fake) for one item from the detectors that ran on it (NaN when none did)."""
    ran = {s: v for s in SLOTS if (v := _raw(r, s)) is not None}
    return model.combine({s: model.calibrate(s, v) for s, v in ran.items()}) if ran else np.nan


def _read_results(path: Path) -> list[ItemResult]:
    return [ItemResult(**json.loads(x)) for x in path.read_text().splitlines() if x.strip()]


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str = "platt") -> Calibrator:
    """Platt: logistic regression of y on logit(raw). Identity when a class is missing or data is tiny."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if len(y) < 6 or y.min() == y.max() or min(y.sum(), len(y) - y.sum()) < 3:
        return Calibrator("identity")
    if method == "isotonic":
        iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip").fit(raw, y)
        xs = np.unique(raw)
        return Calibrator("isotonic", xs=tuple(map(float, xs)), ys=tuple(map(float, iso.predict(xs))))
    lr = LogisticRegression(C=1.0).fit(np.asarray(logit(raw)).reshape(-1, 1), y)
    if lr.coef_[0, 0] <= 0:
        # scores run against the labels here (e.g. lip-sync on fakes that are perfectly in sync): don't flip a
        # detector's meaning to fit this data; identity leaves it to the fusion, which drops non-positive weights
        logger.warning("calibration slope %.3f <= 0: keeping the raw score", lr.coef_[0, 0])
        return Calibrator("identity")
    return Calibrator("platt", float(lr.coef_[0, 0]), float(lr.intercept_[0]))


def _features(results: list[ItemResult], calibrators: dict[str, Calibrator]) -> np.ndarray:
    x = np.zeros((len(results), len(SLOTS)))
    for i, r in enumerate(results):
        for j, s in enumerate(SLOTS):
            v = _raw(r, s)
            if v is not None:
                x[i, j] = float(logit(calibrators[s](v) if s in calibrators else v))
    return x


def _modality_weights(results: list[ItemResult]) -> np.ndarray:
    fam = np.array(["video" if r.modality.startswith("video") else r.modality for r in results])
    w = np.zeros(len(results))
    for f in np.unique(fam):
        w[fam == f] = 1.0 / (fam == f).sum()
    return w * len(results) / w.sum()


def fit_fusion(results: list[ItemResult], method: str = "platt", seed: int = 0, drop_copies: int = 3):
    """Calibrators + logistic weights fitted on ``results``."""
    from sklearn.linear_model import LogisticRegression

    y = np.array([r.y for r in results])
    calibrators: dict[str, Calibrator] = {}
    for s in SLOTS:
        idx = [i for i, r in enumerate(results) if _raw(r, s) is not None]
        if idx:
            calibrators[s] = fit_calibrator(np.array([_raw(results[i], s) for i in idx]), y[idx], method)
    x = _features(results, calibrators)
    w = _modality_weights(results)
    rng = np.random.default_rng(seed)
    xs, ys, ws = [x], [y], [w]
    for _ in range(drop_copies):  # the same items with detectors hidden at random
        mask = rng.random(x.shape) < 0.3
        xs.append(np.where(mask, 0.0, x))
        ys.append(y)
        ws.append(w)
    xa, ya, wa = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    active = [j for j in range(len(SLOTS)) if np.any(x[:, j] != 0)]
    weights = np.zeros(len(SLOTS))
    intercept = 0.0
    if active and ya.min() != ya.max():
        for _ in range(len(active)):
            lr = LogisticRegression(C=1.0).fit(xa[:, active], ya, sample_weight=wa)
            coef = lr.coef_[0]
            if (coef >= 0).all():
                break
            # a negative weight would flip a calibrated detector: drop it rather than trust it upside down
            active = [a for a, c in zip(active, coef, strict=True) if c > 0]
            if not active:
                break
        if active:
            weights[active] = lr.coef_[0]
            intercept = float(lr.intercept_[0])
    return calibrators, {s: float(weights[j]) for j, s in enumerate(SLOTS)}, intercept


def _groups(results: list[ItemResult], root: Path) -> np.ndarray:
    from training.split import ManifestItem

    items = [ManifestItem(r.path, r.label, r.modality, r.manipulation, r.group, None, root) for r in results]
    comp_of = {}
    for key, members in _components(items).items():
        for it in members:
            comp_of[it.path] = key
    return np.array([comp_of[r.path] for r in results])


def cross_validated(results: list[ItemResult], groups: np.ndarray, method: str, folds: int = 5) -> np.ndarray:
    """Out-of-fold fused P(fake) per item (NaN where no detector ran)."""
    from sklearn.model_selection import GroupKFold

    out = np.full(len(results), np.nan)
    n_groups = len(np.unique(groups))
    for train_idx, test_idx in GroupKFold(n_splits=min(folds, n_groups)).split(results, groups=groups):
        cal, wts, b = fit_fusion([results[i] for i in train_idx], method)
        m = FusionModel(cal, b, wts)
        for i in test_idx:
            out[i] = _fused(m, results[i])
    return out


def pick_thresholds(p: np.ndarray, y: np.ndarray, max_fpr: float, max_miss: float) -> tuple[float, float]:
    ok = ~np.isnan(p)
    p, y = p[ok], y[ok]
    real, fake = np.sort(p[y == 0]), np.sort(p[y == 1])
    # FAKE: the lowest threshold that calls at most max_fpr of real items FAKE (never below 0.5)
    k = int(np.floor(max_fpr * len(real)))
    hi = float(real[len(real) - 1 - k] + 1e-6) if len(real) > k else 0.5
    hi = max(0.5, min(0.99, hi))
    # AUTHENTIC: the highest threshold that lets at most max_miss of fakes through (never above 0.5)
    m = int(np.floor(max_miss * len(fake)))
    lo = float(fake[m]) if len(fake) > m else 0.5
    lo = min(0.5, max(0.01, lo))
    return lo, max(hi, lo)


def stricter_thresholds(*pairs: tuple[float, float]) -> tuple[float, float]:
    """The narrowest AUTHENTIC and FAKE bands of several (lo, hi) picks: the out-of-fold scores of the CV models
    and the in-sample scores of the final model are spread differently, and the budgets must hold for both."""
    lo = min(p[0] for p in pairs)
    return lo, max(max(p[1] for p in pairs), lo)


def evaluate_fused(p: np.ndarray, y: np.ndarray, thresholds: tuple[float, float], modality: np.ndarray) -> dict:
    ok = ~np.isnan(p)
    lo, hi = thresholds
    out = {"n": int(ok.sum()), "auc": auc(y[ok], p[ok]), "eer": eer(y[ok], p[ok])}
    real, fake = ok & (y == 0), ok & (y == 1)
    out["fpr_fake_on_real"] = float((p[real] >= hi).mean()) if real.any() else None
    out["authentic_on_real"] = float((p[real] < lo).mean()) if real.any() else None
    out["fake_called_fake"] = float((p[fake] >= hi).mean()) if fake.any() else None
    out["fake_called_authentic"] = float((p[fake] < lo).mean()) if fake.any() else None
    for fam in ("video", "audio", "image"):
        m = ok & np.array([(mod.startswith("video") if fam == "video" else mod == fam) for mod in modality])
        if m.any() and len(np.unique(y[m])) == 2:
            out[f"auc_{fam}"] = auc(y[m], p[m])
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def detector_identities(results: list[ItemResult]) -> dict[str, tuple[str, str]]:
    """slot -> (model name, weights sha256) of the detectors that produced ``results``; one model per slot."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for r in results:
        for slot, (name, sha) in (r.detectors or {}).items():
            seen.setdefault(slot, set()).add((name, sha))
    mixed = {s: v for s, v in seen.items() if len(v) > 1}
    if mixed:
        raise ValueError(f"the results mix detectors in one slot ({mixed}); calibrate each deployment's own results")
    if not seen:  # results written before eval recorded identities: the detectors this deployment loads now
        import pipeline

        logger.warning("results carry no detector identities; using the detectors this deployment loads")
        return {s: (i.name, i.sha256) for s, i in pipeline.build().identities.items() if s in SLOTS}
    return {s: next(iter(v)) for s, v in seen.items()}


def keyed_by_detector(model: FusionModel, identities: dict[str, tuple[str, str]], existing: Path) -> FusionModel:
    """The slot-keyed calibrators fitted here, re-keyed by the identity of the detector that produced each slot's
    scores, next to the entries an existing file holds for other detectors (e.g. the embedded models' beside B7)."""
    from dataclasses import replace

    merged: dict[str, Calibrator] = {}
    if existing.is_file():
        try:
            merged = dict(FusionModel.from_dict(json.loads(existing.read_text())).calibrators)
        except (KeyError, ValueError, TypeError) as exc:
            logger.warning("existing calibration %s not merged: %s", existing, exc)
    for slot, cal in model.calibrators.items():
        if slot not in identities:
            continue
        name, sha = identities[slot]
        merged[name] = replace(cal, slot=slot, sha256=sha)
    return replace(model, calibrators=merged)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", choices=["train", "val", "all"], default="all")
    p.add_argument("--results", nargs="+", default=None,
                   help="results.jsonl of earlier `make eval` runs, e.g. as-is and --reencode whatsapp")
    p.add_argument("--out", default=str(DEFAULT_CALIBRATION))
    p.add_argument("--method", choices=["platt", "isotonic"], default="platt")
    p.add_argument("--max-fpr", type=float, default=0.05, help="largest share of real items called FAKE")
    p.add_argument("--max-miss", type=float, default=0.15, help="largest share of fakes called AUTHENTIC")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    items = read_manifest(args.manifest)
    items = select(items, None if args.split == "all" else args.split)
    if args.results:
        # several runs (raw, re-encoded) of the same items share their group, so CV keeps copies together
        wanted = {it.path for it in items}
        results = [r for f in args.results for r in _read_results(Path(f)) if r.path in wanted]
    else:
        results = run_items(items, Path(f"out/eval/{args.split}"), None)
    if not results:
        logger.error("no results to calibrate on")
        return 1
    y = np.array([r.y for r in results])
    groups = _groups(results, Path(args.manifest).parent)
    oof = cross_validated(results, groups, args.method)
    modality = np.array([r.modality for r in results])
    metrics = {"per_detector_raw_auc": {}}
    for s in SLOTS:
        idx = [i for i, r in enumerate(results) if _raw(r, s) is not None]
        if idx:
            metrics["per_detector_raw_auc"][s] = {
                "n": len(idx), "auc": auc(y[idx], np.array([_raw(results[i], s) for i in idx]))}
    calibrators, weights, intercept = fit_fusion(results, args.method)
    model = FusionModel(calibrators, intercept, weights)
    fused_all = np.array([_fused(model, r) for r in results])
    thresholds = stricter_thresholds(pick_thresholds(oof, y, args.max_fpr, args.max_miss),
                                     pick_thresholds(fused_all, y, args.max_fpr, args.max_miss))
    metrics["cross_validated"] = evaluate_fused(oof, y, thresholds, modality)
    metrics["in_sample"] = evaluate_fused(fused_all, y, thresholds, modality)
    model = FusionModel(calibrators, intercept, weights, thresholds=thresholds, metrics=metrics,
                        fitted_on=f"{Path(args.manifest).parent.name}/{Path(args.manifest).name} "
                                  f"split={args.split} ({len(results)} items, {int(y.sum())} fake; "
                                  f"copies: {', '.join(sorted({r.reencode or 'as-is' for r in results}))})")
    model = keyed_by_detector(model, detector_identities(results), Path(args.out))
    model.save(args.out)
    print(json.dumps({"weights": weights, "intercept": intercept, "thresholds": thresholds, "metrics": metrics},
                     indent=2))
    logger.info("calibration written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

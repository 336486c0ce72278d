"""Fit the evidence (noisy-OR) fusion under leave-one-source-out, and pick its thresholds with a false-FAKE budget.

    python -m training calibrate --results out/eval/all/results.jsonl out/eval/synth/results.jsonl \\
        --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv [--out pipeline/calibration.json]

Inputs are ``make eval`` results (per item, every detector's raw score): the dev set, optionally processed copies
of its reals (``--reencode``) and scored synthetic sets (``python -m training.synth`` writes a manifest that
``make eval`` reads). Nothing is re-run: a fit takes well under a second, so every fold is refitted.

The model (see ``pipeline.fusion``): per detector a Platt calibrator (a, b) and a reliability r, and a leak,
fitted jointly by weighted maximum likelihood of P(fake) = 1 - (1 - leak) prod_d (1 - r_d sigmoid(a_d z_d + b_d)).
A fake that one detector explains costs the others nothing, so a detector is judged on the fakes it can see and on
the reals it must not flag, which is what lets lip sync count for dubbing although talking heads are in sync.

Protocol:
  * folds: one per source (a real source too), closed under the manifest's group links; a synthetic item belongs
    to the fold of the real clip it was made from. Each item is scored by the model fitted without its fold;
  * a detector fitted on dev items (the temporal head, AASIST-ft, the sync head) has its scores on every source it
    saw in training (the file list in its checkpoint) left out of every fit, and on synthetic items made from
    those sources' reals: they are in-sample for it and would buy it a reliability it does not have on generators
    it never saw. Its reliability is measured on the sources added after it was trained and on synthetic fakes;
  * thresholds: FAKE at the lowest P(fake) that calls at most ``--max-fake-on-real`` of the out-of-fold real
    scores (originals and processed copies) FAKE; AUTHENTIC below the P(fake) that leaves at most
    ``--max-flagged-real`` of reals SUSPICIOUS or worse. Per-fold verdicts use thresholds picked without the fold.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.fusion import (
    DEFAULT_CALIBRATION,
    Calibrator,
    FusionModel,
    decide,
    logit,
    narrowed_authentic,
)
from pipeline.report import LIP_SYNC, SLOTS
from training.evaluate import ItemResult, applicable_for
from training.metrics import auc
from training.protocol import family_of, source_of
from training.split import DEFAULT_SPLIT, ManifestItem, _components, read_manifest, read_split

logger = logging.getLogger(__name__)

# detectors whose weights were fitted on dev items, and their checkpoints (whose metadata lists the files)
FITTED_ON_DEV = {"lrasd_temporal": "lrasd_temporal.pt", "aasist:aasist_ft": "aasist_ft.pt",
                 "sync:lrasd-head": "sync_head.pt", "mesonet:mesoinception_ft": "mesoinception_ft.pt",
                 "mesonet:mesoinception_sbi": "mesoinception_sbi.pt", "whisper_head": "whisper_head.pt",
                 "audio_by_kind": ("whisper_head.pt", "aasist_ft.pt")}
CHECKPOINTS = Path(__file__).resolve().parent.parent / "models" / "checkpoints"
# total weight per (family, label, synthetic?) group in the likelihood: each family's reals and fakes count alike,
# whatever their number of files, and synthetic fakes never outweigh real generators' fakes
GROUP_MASS = {("video", 0, False): 1.0, ("video", 1, False): 0.5, ("video", 1, True): 0.5,
              ("audio", 0, False): 1.0, ("audio", 1, False): 1.0,
              ("image", 0, False): 0.5, ("image", 1, False): 0.5}
@dataclass(frozen=True)
class Params:
    a: np.ndarray  # (S,) calibration slope on the raw log-odds (>= 0: a detector is never read upside down)
    b: np.ndarray  # (S,) calibration intercept
    r: np.ndarray  # (S,) reliability in [0, 1]
    leak: float
    # (S,) raw log-odds on a typical real video, counted where the detector could not run on a video (nan: none)
    typical: np.ndarray | None = None

    def predict(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """P(fake) per row of raw log-odds ``x`` where mask ``m`` says the detector ran."""
        q = 1.0 / (1.0 + np.exp(-(self.a * x + self.b))) * m
        p = 1.0 - (1.0 - self.leak) * np.prod(1.0 - self.r * q, axis=1)
        return np.where(np.asarray(m).any(1), p, np.nan)  # nothing ran: NOT_APPLICABLE, never a score


@dataclass
class Table:
    results: list[ItemResult]
    x: np.ndarray  # (n, S) raw log-odds (0 where the detector did not run)
    ran: np.ndarray  # (n, S) bool
    fit_ok: np.ndarray  # (n, S) bool: usable for fitting (ran, and not in-sample for a detector fitted on the item)
    y: np.ndarray
    family: np.ndarray
    synthetic: np.ndarray
    fold: np.ndarray  # fold name per row
    held: dict[str, frozenset[str]]  # fold -> paths held out with it
    identities: dict[str, tuple[str, str]]  # slot -> (model name, sha256)

    @property
    def weights(self) -> np.ndarray:
        w = np.zeros(len(self.y))
        keys = list(zip(self.family, self.y, self.synthetic, strict=True))
        count: dict = defaultdict(int)
        for k in keys:
            count[k] += 1
        for i, k in enumerate(keys):
            w[i] = GROUP_MASS.get(k, 0.5) / count[k]
        return w * len(w) / max(w.sum(), 1e-9)

    def subset(self, rows: np.ndarray) -> Table:
        """The table of ``rows`` only (their weights are recomputed over them: as if the others were never scored)."""
        idx = np.flatnonzero(rows)
        return replace(self, results=[self.results[i] for i in idx], x=self.x[idx], ran=self.ran[idx],
                       fit_ok=self.fit_ok[idx], y=self.y[idx], family=self.family[idx],
                       synthetic=self.synthetic[idx], fold=self.fold[idx])


def trained_sources(name: str, sides: dict[str, str]) -> frozenset[str]:
    """The sources (generators and real collections) a dev-fitted detector saw in training: from the file list its
    checkpoint records, else every source with items on the train side of the split."""
    import ast

    import torch

    paths: list[str] = []
    files = FITTED_ON_DEV[name]
    for file in (files,) if isinstance(files, str) else files:  # a detector of several fitted members: all of them
        ckpt = CHECKPOINTS / file
        if ckpt.is_file():
            blob = torch.load(ckpt, map_location="cpu", weights_only=False)
            meta = blob.get("metadata") or blob.get("meta") or {}
            listed = meta.get("train_files") or meta.get("train_paths") or []
            paths += ast.literal_eval(listed) if isinstance(listed, str) else list(listed)
    if not paths:
        paths = [p for p, side in sides.items() if side == "train"]
    return frozenset(source_of(p) for p in paths)


def _ran(r: ItemResult, s: str) -> bool:
    v = r.raw.get(s)
    return r.status.get(s) == "ok" and v is not None and math.isfinite(v)


def fusion_folds(items: list[ManifestItem]) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """(path -> fold, fold -> the paths it holds out): one fold per source, real sources too, closed under the
    manifest's group links; a synthetic item belongs to the fold of the real clip it was made from."""
    comp_of: dict[str, str] = {}
    members: dict[str, list[ManifestItem]] = {}
    for key, comp in _components(items).items():
        members[key] = comp
        for it in comp:
            comp_of[it.path] = key
    by_source: dict[str, list[ManifestItem]] = defaultdict(list)
    for it in items:
        if not it.origin:
            by_source[source_of(it.path)].append(it)
    held = {src: frozenset(m.path for it in its for m in members[comp_of[it.path]]) for src, its in by_source.items()}
    return {it.path: source_of(it.origin if it.origin else it.path) for it in items}, held


def build_table(results: list[ItemResult], items: list[ManifestItem], split_file: Path = DEFAULT_SPLIT) -> Table:
    by_path = {it.path: it for it in items}
    results = [r for r in results if r.path in by_path]
    sides = read_split(split_file) if Path(split_file).is_file() else {}
    fold_of, held = fusion_folds(items)

    identities: dict[str, tuple[str, str]] = {}
    for r in results:
        for s, (name, sha) in (r.detectors or {}).items():
            identities.setdefault(s, (name, sha))
    seen = {s: trained_sources(name, sides) for s, (name, _) in identities.items() if name in FITTED_ON_DEV}
    n, S = len(results), len(SLOTS)
    x, ran, ok = np.zeros((n, S)), np.zeros((n, S), bool), np.zeros((n, S), bool)
    for i, r in enumerate(results):
        it = by_path[r.path]
        # a synthetic item is new to every detector as a fake, but its frames and voice are its real clip's
        src = source_of(it.origin or it.path)
        for j, s in enumerate(SLOTS):
            if _ran(r, s):
                x[i, j] = float(logit(r.raw[s]))
                ran[i, j] = True
                # a score from a model refitted without this row's fold (training.sync_oof) is never in-sample
                ok[i, j] = s in (r.oof_slots or ()) or src not in seen.get(s, ())
    return Table(results, x, ran, ok, np.array([r.y for r in results]),
                 np.array([family_of(r.modality) for r in results]),
                 np.array([bool(by_path[r.path].origin) for r in results]),
                 np.array([fold_of[r.path] for r in results]), held, identities)


def fit(x: np.ndarray, m: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-2, iters: int = 200) -> Params:
    """Weighted maximum likelihood of the noisy-OR, with a mild pull towards slope 1, intercept 0, r = 0.88."""
    import torch

    S = x.shape[1]
    X, M = torch.tensor(x, dtype=torch.float64), torch.tensor(m, dtype=torch.float64)
    Y, W = torch.tensor(y, dtype=torch.float64), torch.tensor(w / max(w.sum(), 1e-9), dtype=torch.float64)
    alpha0, rho0 = math.log(math.e - 1.0), 2.0
    alpha = torch.full((S,), alpha0, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(S, dtype=torch.float64, requires_grad=True)
    rho = torch.full((S,), rho0, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([alpha, b, rho, lam], max_iter=iters, line_search_fn="strong_wolfe")

    def loss_fn():
        opt.zero_grad()
        q = torch.sigmoid(torch.nn.functional.softplus(alpha) * X + b) * M
        log_keep = torch.nn.functional.logsigmoid(-lam) + torch.log1p(
            -(torch.sigmoid(rho) * q).clamp(max=1 - 1e-9)).sum(1)
        log_fake = torch.log(-torch.expm1(log_keep).clamp(max=-1e-12))
        nll = -(W * (Y * log_fake + (1 - Y) * log_keep)).sum()
        loss = nll + l2 * (((alpha - alpha0) ** 2).sum() + (b ** 2).sum() / 4 + ((rho - rho0) ** 2).sum() / 4)
        loss.backward()
        return loss

    opt.step(loss_fn)
    with torch.no_grad():
        return Params(torch.nn.functional.softplus(alpha).numpy().copy(), b.numpy().copy(),
                      torch.sigmoid(rho).numpy().copy(), float(torch.sigmoid(lam)))


OBJECTIVES = ("likelihood", "balanced", "rank")
# chosen under LOSO (README "Measured quality"): every fake source weighing alike beat per-file weights
DEFAULT_OBJECTIVE = "balanced"


def source_weights(t: Table) -> np.ndarray:
    """Per row, its weight in the balanced and ranking objectives: within each kind, every fake source's items
    together weigh alike (the mean over held-out sources is what the protocol reports), dev generators and synthetic
    recipes each with their ``GROUP_MASS``; each kind's reals weigh alike."""
    from training.protocol import source_of

    src = np.array([source_of(r.path) for r in t.results])
    w = np.zeros(len(t.y))
    for fam in np.unique(t.family):
        real = (t.family == fam) & (t.y == 0)
        if real.any():
            w[real] = GROUP_MASS.get((str(fam), 0, False), 0.5) / real.sum()
        for synth in (False, True):
            fake = (t.family == fam) & (t.y == 1) & (t.synthetic == synth)
            sources = np.unique(src[fake])
            for s in sources:
                rows = fake & (src == s)
                w[rows] = GROUP_MASS.get((str(fam), 1, synth), 0.5) / len(sources) / rows.sum()
    return w


def fit_rank(x: np.ndarray, m: np.ndarray, y: np.ndarray, w: np.ndarray, family: np.ndarray, start: Params,
             l2: float = 1e-2, iters: int = 200) -> Params:
    """The noisy-OR's calibrators and reliabilities fitted to rank every fake above every real of its kind (a
    pairwise logistic loss on the fused log-odds, ``w`` from ``source_weights``: the AUC per held-out source is what
    the protocol judges), from ``start`` (the likelihood fit) and with its prior. Ranking does not see the leak,
    so the leak is then fitted alone by likelihood, the rest held."""
    import torch

    X, M = torch.tensor(x, dtype=torch.float64), torch.tensor(m, dtype=torch.float64)
    alpha0, rho0 = math.log(math.e - 1.0), 2.0
    inv_softplus = lambda v: v + np.log(-np.expm1(-v))  # noqa: E731
    alpha = torch.tensor(inv_softplus(np.maximum(start.a, 1e-6)), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(start.b, dtype=torch.float64, requires_grad=True)
    r0 = np.clip(start.r, 1e-6, 1 - 1e-6)
    rho = torch.tensor(np.log(r0) - np.log1p(-r0), dtype=torch.float64, requires_grad=True)
    pairs = []
    for fam in np.unique(family):
        if not (m[family == fam].sum(1) > 1).any():
            continue  # one detector per file (audio files, images): no weighing to learn, its ranking is fixed
        f, r = np.flatnonzero((family == fam) & (y == 1)), np.flatnonzero((family == fam) & (y == 0))
        if len(f) and len(r):
            pw = np.outer(w[f], w[r])  # each kind's pairs weigh what its fakes and reals weigh
            pw *= (w[f].sum() + w[r].sum()) / 2 / pw.sum()
            pairs.append((torch.tensor(f), torch.tensor(r), torch.tensor(pw)))
    if not pairs:
        return start

    def log_keep():
        q = torch.sigmoid(torch.nn.functional.softplus(alpha) * X + b) * M
        return torch.log1p(-(torch.sigmoid(rho) * q).clamp(max=1 - 1e-9)).sum(1)

    opt = torch.optim.LBFGS([alpha, b, rho], max_iter=iters, line_search_fn="strong_wolfe")

    def loss_fn():
        opt.zero_grad()
        lk = log_keep()
        z = torch.log(-torch.expm1(lk).clamp(max=-1e-12)) - lk  # logit of 1 - keep: the fused log-odds, leak aside
        loss = sum((pw * torch.nn.functional.softplus(z[r][None, :] - z[f][:, None])).sum() for f, r, pw in pairs)
        loss = loss + l2 * (((alpha - alpha0) ** 2).sum() + (b ** 2).sum() / 4 + ((rho - rho0) ** 2).sum() / 4)
        loss.backward()
        return loss

    opt.step(loss_fn)
    with torch.no_grad():
        lk = log_keep()
    Y, W = torch.tensor(y, dtype=torch.float64), torch.tensor(w / max(w.sum(), 1e-9), dtype=torch.float64)
    leak0 = min(max(start.leak, 1e-9), 1 - 1e-9)
    lam = torch.tensor(math.log(leak0 / (1 - leak0)), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([lam], max_iter=50, line_search_fn="strong_wolfe")

    def leak_loss():
        opt.zero_grad()
        keep = torch.nn.functional.logsigmoid(-lam) + lk
        loss = -(W * (Y * torch.log(-torch.expm1(keep).clamp(max=-1e-12)) + (1 - Y) * keep)).sum()
        loss.backward()
        return loss

    opt.step(leak_loss)
    with torch.no_grad():
        return Params(torch.nn.functional.softplus(alpha).numpy().copy(), b.numpy().copy(),
                      torch.sigmoid(rho).numpy().copy(), float(torch.sigmoid(lam)))


def typical_real(t: Table, rows: np.ndarray) -> np.ndarray:
    """Per detector, the median raw log-odds over ``rows``' real videos it scored (nan where it scored none): what it
    reads on a typical real video, counted for a video it could not run on (``with_typical``)."""
    out = np.full(t.x.shape[1], np.nan)
    for j in range(t.x.shape[1]):
        ref = rows & (t.family == "video") & (t.y == 0) & t.fit_ok[:, j]
        if ref.any():
            out[j] = float(np.median(t.x[ref, j]))
    return out


def with_typical(t: Table, typical: np.ndarray) -> Table:
    """``t`` with each video's detectors that did not run on it (no soundtrack, no speech, no face) reading ``typical``,
    so a silent fake meets the false alarms a soundtrack raises on every real video (FF++: visual and temporal 0.66
    alone, 0.25 fused). It lifts silent reals as much, and lost under LOSO (0.594 against 0.628): a report variant.
    A row nothing scored stays NOT_APPLICABLE."""
    fill = ((t.family == "video") & t.ran.any(1))[:, None] & ~t.ran & ~np.isnan(typical)[None, :]
    x = np.where(fill, np.nan_to_num(typical)[None, :], t.x)
    return replace(t, x=x, ran=t.ran | fill, fit_ok=t.fit_ok | fill)


def fit_table(t: Table, rows: np.ndarray | None = None, typical: bool = False,
              objective: str = DEFAULT_OBJECTIVE) -> Params:
    """The noisy-OR fitted on ``rows`` (all by default); with ``typical``, missing video detectors read as on a
    typical real video of those rows (a structure that lost under LOSO: ``training.fusion_variants``);
    ``objective``: ``balanced``, the likelihood with every fake source weighing alike (``source_weights``); ``rank``,
    refitted from the likelihood fit to rank fakes above reals (``fit_rank``)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} ({', '.join(OBJECTIVES)})")
    rows = np.ones(len(t.y), bool) if rows is None else rows
    rows = rows & t.fit_ok.any(1)  # a row no usable detector scored says nothing about any of them
    med = typical_real(t, rows) if typical else None
    tt = with_typical(t, med) if typical else t
    by_source = source_weights(tt.subset(rows)) if objective != "likelihood" else None
    params = fit(tt.x[rows], tt.fit_ok[rows], tt.y[rows], by_source if objective == "balanced" else tt.weights[rows])
    if objective == "rank":
        params = fit_rank(tt.x[rows], tt.fit_ok[rows], tt.y[rows], by_source, tt.family[rows], params)
    return replace(params, typical=med)


def predict_table(params: Params, t: Table, rows: np.ndarray) -> np.ndarray:
    """P(fake) of ``rows`` by ``params``, missing video detectors read as its typical real video."""
    tt = with_typical(t, params.typical) if params.typical is not None else t
    return params.predict(tt.x[rows], tt.ran[rows])


def coverage(p: Params, t: Table) -> np.ndarray:
    """Per row: the share of the reliability its input calls for that actually ran (narrows AUTHENTIC). A slot no row
    of the table ran gets no calibrator, so, as at runtime (``pipeline.fusion.fuse``), it is not called for."""
    want = np.array([[s in applicable_for(r.modality) for s in SLOTS] for r in t.results]) & t.ran.any(0)[None, :]
    total = (want * p.r).sum(1)
    return np.where(total > 0, (t.ran * want * p.r).sum(1) / np.maximum(total, 1e-9), 1.0)


def out_of_fold(t: Table, typical: bool = False, objective: str = DEFAULT_OBJECTIVE
                ) -> tuple[np.ndarray, dict[str, Params]]:
    """P(fake) per row, each from the model fitted without the row's fold (``typical``, ``objective``: see
    ``fit_table``)."""
    from tqdm import tqdm

    p = np.full(len(t.y), np.nan)
    models = {}
    for fold in tqdm(sorted(set(t.fold)), desc="LOSO folds", unit="fold"):
        rows = t.fold == fold
        train = np.array([r.path not in t.held.get(fold, ()) for r in t.results]) & ~rows
        models[fold] = fit_table(t, train, typical, objective)
        p[rows] = predict_table(models[fold], t, rows)
    return p, models


def pick_thresholds(p: np.ndarray, y: np.ndarray, max_fake_on_real: float, max_flagged_real: float
                    ) -> tuple[float, float]:
    real = np.sort(p[(y == 0) & ~np.isnan(p)])
    if not len(real):
        return 0.35, 0.65
    k = int(np.floor(max_fake_on_real * len(real)))
    hi = float(np.clip(real[len(real) - 1 - k] + 1e-6, 0.5, 0.99))
    k = int(np.floor(max_flagged_real * len(real)))
    lo = float(np.clip(real[len(real) - 1 - k] + 1e-6, 0.01, hi))
    return lo, hi


MIN_AUC_FOR_FAKE = 0.6  # a kind whose held-out AUC is below this never gets a FAKE verdict (SUSPICIOUS at most)


def kind_thresholds(p: np.ndarray, y: np.ndarray, kind: np.ndarray, max_fake_on_real: float,
                    max_flagged_real: float) -> dict[str, tuple[float, float]]:
    """Thresholds per media kind: the reals of each kind (video, audio, image) spend the budget on their own, so the
    many audio reals cannot buy the few video reals a looser FAKE line. A kind the fusion cannot tell apart out of
    fold (AUC below ``MIN_AUC_FOR_FAKE``, or no fakes to tell) is never called FAKE: a chance-level score must not
    accuse anyone."""
    out = {}
    for k in np.unique(kind):
        m = (kind == k) & ~np.isnan(p)
        if not (y[m] == 0).any():
            continue
        lo, hi = pick_thresholds(p[m], y[m], max_fake_on_real, max_flagged_real)
        out[str(k)] = (lo, hi) if separable(p[m], y[m]) else (lo, 1.0)
    return out


def separable(p: np.ndarray, y: np.ndarray) -> bool:
    """Whether out-of-fold scores tell this kind's fakes from its reals at all (at least 5 fakes, AUC at least
    ``MIN_AUC_FOR_FAKE``)."""
    return len(set(y)) == 2 and (y == 1).sum() >= 5 and auc(y, p) >= MIN_AUC_FOR_FAKE


def verdicts(p: np.ndarray, cov: np.ndarray, kind: np.ndarray, thresholds: dict[str, tuple[float, float]]
             ) -> list[str]:
    return ["NOT_APPLICABLE" if np.isnan(pi) else
            decide(pi, narrowed_authentic(thresholds.get(str(k), (0.35, 0.65)), ci)).value
            for pi, ci, k in zip(p, cov, kind, strict=True)]


def fold_verdicts(t: Table, p: np.ndarray, models: dict[str, Params], max_fake_on_real: float,
                  max_flagged_real: float, unseen: np.ndarray | None = None) -> list[str]:
    """Each row's verdict with thresholds picked on the other folds' reals (never on ``unseen`` rows), AUTHENTIC
    narrowed by the detectors its fold's model calls for that did not run."""
    out = ["" for _ in p]
    seen = np.ones(len(p), bool) if unseen is None else ~unseen
    for fold in set(t.fold):
        rows = t.fold == fold
        pick = ~rows & seen
        th = kind_thresholds(p[pick], t.y[pick], t.family[pick], max_fake_on_real, max_flagged_real)
        cov = coverage(models[fold], t)
        for i, v in zip(np.flatnonzero(rows), verdicts(p[rows], cov[rows], t.family[rows], th), strict=True):
            out[i] = v
    return out


HELD_OUT_BUDGET = 0.02  # the hard false-FAKE budget: held-out reals of a kind called FAKE at most this often


def gate(verdict: list[str], t: Table, budget: float = HELD_OUT_BUDGET, seen: np.ndarray | None = None,
         also: set[str] = frozenset()) -> tuple[list[str], set[str]]:
    """The fold verdicts with FAKE withdrawn (SUSPICIOUS instead, as a kind with no FAKE line reads) from every kind
    whose held-out reals were called FAKE more often than ``budget``, and those kinds. Thresholds picked on the other
    folds' reals hold on a new source only if the kind's scores do not shift from source to source; where the
    held-out rate says they do (one real collection read as synthetic by the voice detector), no FAKE line is
    trusted. ``also``: kinds withdrawn whatever their rate."""
    v = np.array(verdict, dtype=object)
    seen = np.ones(len(v), bool) if seen is None else seen
    over = set(also)
    for k in np.unique(t.family):
        real = seen & (t.family == k) & (t.y == 0) & (v != "NOT_APPLICABLE")
        if real.any() and (v[real] == "FAKE").mean() > budget:
            over.add(str(k))
    gated = [("SUSPICIOUS" if x == "FAKE" and str(k) in over else x) for x, k in zip(verdict, t.family, strict=True)]
    return gated, over


def fit_output(p: np.ndarray, y: np.ndarray, w: np.ndarray, kind: np.ndarray | None = None,
               exclude: set[str] = frozenset()) -> Calibrator:
    """Platt map of the noisy-OR output to P(fake), fitted on out-of-fold scores with the table's weights, on the
    kinds the fusion can tell apart (``separable``) and trusts with a FAKE line (not in ``exclude``): a kind at chance
    (images: 3 fakes, AUC 0.54, weighing as much as their 165 reals) says nothing about how raw scores map to
    P(fake), and its few fakes flattened the map (so did the audio files, at 0.62, to a slope of 0.28)."""
    from sklearn.linear_model import LogisticRegression

    ok = ~np.isnan(p)
    if kind is not None:
        told = [k for k in np.unique(kind[ok]) if str(k) not in exclude
                and separable(p[ok & (kind == k)], y[ok & (kind == k)])]
        if told:
            ok &= np.isin(kind, told)
    lr = LogisticRegression(C=10.0).fit(np.asarray(logit(p[ok])).reshape(-1, 1), y[ok], sample_weight=w[ok])
    return Calibrator("platt", float(max(lr.coef_[0, 0], 1e-3)), float(lr.intercept_[0]))


def judged_out_of_fold(t: Table, raw: np.ndarray, models: dict[str, Params], max_fake_on_real: float,
                       max_flagged_real: float, budget: float = HELD_OUT_BUDGET, unseen: np.ndarray | None = None
                       ) -> tuple[Calibrator, np.ndarray, list[str], set[str]]:
    """(output map, P(fake), verdict per row, kinds never called FAKE) from the out-of-fold noisy-OR outputs ``raw``:
    the map is fitted on the rows not ``unseen``, each fold's verdicts use thresholds picked on the other folds, and
    ``gate`` withdraws FAKE from kinds whose held-out reals break ``budget``; such a kind leaves the map's fit too,
    so the fit is redone until both agree."""
    seen = np.ones(len(raw), bool) if unseen is None else ~unseen
    fit_on = t.subset(seen)
    never: set[str] = set()
    for _ in range(3):
        output = fit_output(raw[seen], fit_on.y, fit_on.weights, fit_on.family, exclude=never)
        p = np.array([np.nan if np.isnan(x) else output(x) for x in raw])
        verdict, over = gate(fold_verdicts(t, p, models, max_fake_on_real, max_flagged_real, unseen=unseen), t,
                             budget, seen, also=never)
        if over == never:
            break
        never = over
    return output, p, verdict, never


def to_model(params: Params, t: Table, thresholds: dict[str, tuple[float, float]], metrics: dict, fitted_on: str,
             output: Calibrator | None = None) -> FusionModel:
    cals = {}
    for j, s in enumerate(SLOTS):
        if s not in t.identities or not t.fit_ok[:, j].any():
            continue
        name, sha = t.identities[s]
        cals[name] = Calibrator("platt", float(params.a[j]), float(params.b[j]), slot=s, sha256=sha,
                                reliability=float(params.r[j]))
    default = thresholds.get("video") or next(iter(thresholds.values()))
    return FusionModel(cals, 0.0, {s: 0.0 for s in SLOTS}, thresholds=default, metrics=metrics,
                       fitted_on=fitted_on, combiner="noisy-or", leak=params.leak, kind_thresholds=dict(thresholds),
                       output=output)


def logistic_out_of_fold(t: Table) -> np.ndarray:
    """The earlier calibrated-logistic fusion, refitted per fold on the same rows: the comparison that lost."""
    from training.calibrate import _fused, fit_fusion

    p = np.full(len(t.y), np.nan)
    for fold in sorted(set(t.fold)):
        rows = t.fold == fold
        train = [i for i, r in enumerate(t.results) if r.path not in t.held.get(fold, ()) and not rows[i]]
        masked = [_masked(t, i) for i in train]
        cal, wts, b = fit_fusion(masked)
        m = FusionModel(cal, b, wts)
        for i in np.flatnonzero(rows):
            p[i] = _fused(m, t.results[i])
    return p


def _masked(t: Table, i: int) -> ItemResult:
    r = t.results[i]
    return replace(r, status={s: (st if t.fit_ok[i, j] or st != "ok" else "in_sample")
                              for j, s in enumerate(SLOTS) for st in [r.status.get(s, "")]})


def report(t: Table, p: np.ndarray, row_verdicts: list[str], items: list[ManifestItem]) -> tuple[list, dict]:
    from training.protocol import per_source

    scored = [replace(r, fake_probability=None if np.isnan(pi) else float(pi), verdict=v)
              for r, pi, v in zip(t.results, p, row_verdicts, strict=True)]
    return per_source(scored, items)


def target_subsets(t: Table, p: np.ndarray, subsets: dict[str, str]) -> dict[str, dict]:
    """Per part of a recipe an issue target names (``training.synth.target_subset``): its fakes' fused AUC against
    every real of their kind, and lip sync's alone against the reals it ran on (its raw scores, out of fold)."""
    j = SLOTS.index(LIP_SYNC)
    label = np.array([subsets.get(r.path, "") for r in t.results])
    out = {}
    for name in sorted(set(label) - {""}):
        fake = (label == name) & (t.y == 1) & ~np.isnan(p)
        real = (t.family == str(t.family[fake][0])) & (t.y == 0) & ~np.isnan(p) if fake.any() else fake
        if not fake.any() or not real.any():
            continue
        lf, lr = fake & t.ran[:, j], real & t.ran[:, j]
        out[name] = {"fakes": int(fake.sum()), "fused_auc": float(auc(t.y[fake | real], p[fake | real])),
                     "lip_sync_ran": int(lf.sum()),
                     "lip_sync_auc": float(auc(t.y[lf | lr], t.x[lf | lr, j])) if lf.any() and lr.any() else None}
    return out


def main(argv: list[str] | None = None) -> int:
    from training.calibrate import _read_results
    from training.protocol import format_rows, write_csv
    from training.synth import target_subsets as carded

    ap = argparse.ArgumentParser(prog="python -m training calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", nargs="+", required=True, help="results.jsonl files of `make eval` runs")
    ap.add_argument("--manifest", nargs="+", required=True, help="the manifests those items come from")
    ap.add_argument("--out", default=str(DEFAULT_CALIBRATION), help="calibration file to write ('' = none)")
    ap.add_argument("--report", default="out/eval/loso", help="folder for the per-source table")
    ap.add_argument("--max-fake-on-real", type=float, default=0.01,
                    help="false-FAKE budget on the pooled out-of-fold reals of each kind (1 %% keeps "
                         "held-out folds near 2 %%)")
    ap.add_argument("--max-flagged-real", type=float, default=0.15)
    ap.add_argument("--held-out-budget", type=float, default=HELD_OUT_BUDGET,
                    help="a kind whose held-out reals are called FAKE more often than this is never called FAKE")
    ap.add_argument("--objective", choices=OBJECTIVES, default=DEFAULT_OBJECTIVE,
                    help="what the noisy-OR's calibrators and reliabilities are fitted for (see fit_rank)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    items = [it for m in args.manifest for it in read_manifest(m)]
    results = [r for f in args.results for r in _read_results(Path(f))]
    t = build_table(results, items)
    logger.info("%d scored rows (%d real, %d fake, %d synthetic) in %d folds", len(t.y), (t.y == 0).sum(),
                t.y.sum(), t.synthetic.sum(), len(set(t.fold)))
    raw_p, models = out_of_fold(t, objective=args.objective)
    # P(fake) as a probability on a benchmark where each kind's reals and fakes weigh alike (monotone: the AUCs and,
    # since thresholds are picked on this scale, the verdicts are those of the raw noisy-OR output); the false-FAKE
    # budget is spent on reals; per fold, thresholds are picked on the other folds' reals
    output, p, fold_v, never_fake = judged_out_of_fold(t, raw_p, models, args.max_fake_on_real,
                                                       args.max_flagged_real, args.held_out_budget)
    if never_fake:
        logger.info("never called FAKE (held-out reals called FAKE over %.0f %%): %s", 100 * args.held_out_budget,
                    ", ".join(sorted(never_fake)))
    rows, summary = report(t, p, fold_v, items)
    parts = target_subsets(t, p, {k: v for m in args.manifest for k, v in carded(Path(m).parent).items()})
    p_log = logistic_out_of_fold(t)
    rows_log, summary_log = report(t, p_log, fold_v, items)
    log_auc = {r.source: r.auc["fused"] for r in rows_log}
    out = Path(args.report)
    out.mkdir(parents=True, exist_ok=True)
    text = format_rows(rows, summary)
    (out / "per_source.txt").write_text(text + "\n")
    write_csv(rows, out / "per_source.csv")
    print(text)
    print(f"\nlogistic fusion refitted per fold instead: mean {summary_log['fused_auc_mean']:.3f}, "
          f"worst {summary_log['fused_auc_worst']:.3f} ({summary_log['worst_source']})")
    for name, v in parts.items():
        print(f"{name}: {v['fakes']} fakes, fused AUC {v['fused_auc']:.3f}; lip sync alone {_f(v['lip_sync_auc'])} "
              f"(ran on {v['lip_sync_ran']})")

    final = fit_table(t, objective=args.objective)
    thresholds = kind_thresholds(p, t.y, t.family, args.max_fake_on_real, args.max_flagged_real)
    thresholds |= {k: (thresholds[k][0], 1.0) for k in never_fake if k in thresholds}
    scored = ~np.isnan(p)
    verdict = np.array(fold_v)
    by_kind = {}
    for k in sorted(set(t.family)):
        m = (t.family == k) & scored
        real, fake = m & (t.y == 0), m & (t.y == 1)
        by_kind[str(k)] = {
            "auc": auc(t.y[m], p[m]) if len(set(t.y[m])) == 2 else None,
            "reals": int(real.sum()), "fakes": int(fake.sum()),
            "real_called_fake": float((verdict[real] == "FAKE").mean()) if real.any() else None,
            "real_suspicious_or_fake": float(np.isin(verdict[real], ["FAKE", "SUSPICIOUS"]).mean())
            if real.any() else None,
            "real_called_authentic": float((verdict[real] == "AUTHENTIC").mean()) if real.any() else None,
            "fake_called_fake": float((verdict[fake] == "FAKE").mean()) if fake.any() else None,
            "fake_called_authentic": float((verdict[fake] == "AUTHENTIC").mean()) if fake.any() else None,
            "thresholds": thresholds.get(str(k)),
        }
    copies = defaultdict(list)
    for i, r in enumerate(t.results):
        if r.y == 0 and scored[i]:
            copies[r.reencode or "as-is"].append(verdict[i] == "FAKE")
    metrics = {
        "protocol": "leave-one-source-out, every score out of fold; verdicts with thresholds picked without the fold",
        "objective": args.objective,
        "never_fake_kinds": sorted(never_fake),
        "loso": {k: v for k, v in summary.items() if k != "real_called_fake_by_source"},
        "loso_logistic_refit": {k: summary_log[k] for k in ("fused_auc_mean", "fused_auc_worst", "worst_source")},
        "by_kind": by_kind,
        "real_called_fake_by_processing": {k: {"n": len(v), "fake": float(np.mean(v))} for k, v in copies.items()},
        "reliability": {s: float(final.r[j]) for j, s in enumerate(SLOTS)},
        "target_subsets": parts,
        "per_source": {r.source: {"auc": r.auc["fused"], "auc_logistic_refit": log_auc.get(r.source),
                                  "fake_authentic": r.fake_authentic, "fake_called_fake": r.fake_called_fake}
                       for r in rows},
    }
    (out / "summary.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for k, v in by_kind.items():
        print(f"{k}: AUC {_f(v['auc'])}, {v['reals']} reals called FAKE {_f(v['real_called_fake'])} (SUSPICIOUS or "
              f"FAKE {_f(v['real_suspicious_or_fake'])}), {v['fakes']} fakes called FAKE {_f(v['fake_called_fake'])}"
              f" / AUTHENTIC {_f(v['fake_called_authentic'])}; thresholds {v['thresholds']}")
    print("reals called FAKE per processing: " + ", ".join(
        f"{k} {v['fake']:.3f} (n={v['n']})" for k, v in sorted(metrics["real_called_fake_by_processing"].items())))
    print("reliability " + ", ".join(f"{s} {final.r[j]:.2f}" for j, s in enumerate(SLOTS)) + f", leak {final.leak:.3f}")
    if args.out:
        copies = sorted({r.reencode or "as-is" for r in t.results})
        model = to_model(final, t, thresholds, metrics,
                         f"{len(t.y)} scored items ({int(t.y.sum())} fake, {int(t.synthetic.sum())} synthetic; "
                         f"copies: {', '.join(copies)}), leave-one-source-out", output)
        model = _merged(model, Path(args.out))
        model.save(args.out)
        logger.info("calibration written to %s", args.out)
    return 0


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _merged(model: FusionModel, existing: Path) -> FusionModel:
    """Keep an existing file's calibrators for detectors not scored here (e.g. the production B7's)."""
    if not existing.is_file():
        return model
    try:
        old = FusionModel.from_dict(json.loads(existing.read_text()))
    except (KeyError, ValueError, TypeError):
        return model
    keep = {k: v for k, v in old.calibrators.items() if k not in model.calibrators and old.combiner == model.combiner}
    return replace(model, calibrators=keep | dict(model.calibrators))


if __name__ == "__main__":
    sys.exit(main())

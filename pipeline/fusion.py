"""Late fusion of detector scores into one P(fake) and a verdict.

Evidence fusion (``combiner: noisy-or``, the shipped calibration): each detector's raw score becomes, through its
own calibrator, the probability that the manipulation it looks for is present; its learned *reliability* caps how
far it alone can move the verdict. The fused P(fake) is a noisy-OR,

    P(fake) = 1 - (1 - leak) * prod_d (1 - reliability_d * p_d),

so one confident, reliable detector is enough (dubbed audio needs no help from the face detector), a detector that
sees nothing of a manipulation it is blind to (lip sync on an in-sync talking head) does not vote AUTHENTIC, and
detectors that cannot run on this input narrow the AUTHENTIC band instead of counting as evidence of authenticity.
Each detector's contribution (``Fusion.evidence``) says which evidence drove the verdict.

Calibrated logistic fusion (``combiner: logistic``, the earlier files):
  1. each detector's raw score is calibrated (Platt scaling on its log-odds, or isotonic) by the calibrator
     fitted for THAT detector: calibrators are keyed by detector identity (registry model name + sha256 of its
     weights), never by slot, so a production model never borrows the embedded model's calibration.
     A detector with no calibration of its own is fused with its raw log-odds at half strength
     (``UNCALIBRATED_SHRINK``: its evidence counts, but a raw score from an unmeasured model cannot push the
     verdict as far as a calibrated one), and the report's fusion note names it;
  2. a logistic model combines the calibrated log-odds of the detectors that ran. A detector that did
     not run contributes log-odds 0 ("no evidence"): it drops out without re-weighting the others, so a
     single weak detector never decides alone. The model is fitted with detectors randomly missing,
     so its intercept and weights hold up when they are;
  3. thresholds split P(fake) into AUTHENTIC / SUSPICIOUS / FAKE; low face quality widens the
     SUSPICIOUS band (we abstain rather than guess on a blurry, tiny face).

Fallback (no calibration file): the seed's fixed weights 0.30 visual / 0.25 temporal / 0.25 audio /
0.20 lip-sync over raw scores, a missing detector counting as 0.5 (neutral), again so that the
remaining ones are not re-normalised into a verdict. The report says which method ran.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.report import SLOTS, Fusion, Verdict

logger = logging.getLogger(__name__)

DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "calibration.json"
# the seed had four detectors; the mouth-blur measure came later and only counts through a fitted calibration
SEED_WEIGHTS = {"visual": 0.30, "temporal": 0.25, "audio": 0.25, "lip_sync": 0.20, "mouth": 0.0, "voice_change": 0.0}
SEED_THRESHOLDS = (0.35, 0.65)
EPS = 1e-6
UNCALIBRATED_SHRINK = 0.5
UNCALIBRATED_RELIABILITY = 0.5  # noisy-OR: an unmeasured detector alone can take P(fake) to 0.5 at most
COMBINERS = ("logistic", "noisy-or")
CALIBRATION_VERSION = 2  # 2: calibrators keyed by detector identity (1 keyed them by slot)


def logit(p: float | np.ndarray) -> float | np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: float | np.ndarray) -> float | np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


@dataclass(frozen=True)
class Calibrator:
    """Maps a detector's raw P(fake) to a calibrated P(fake)."""

    method: str  # "platt" | "isotonic" | "identity"
    a: float = 1.0
    b: float = 0.0
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()
    slot: str = ""  # the slot its detector filled when it was fitted
    sha256: str = ""  # digest of the detector's weights it was fitted for ("" = any weights of that name)
    reliability: float = 1.0  # noisy-OR: the largest P(fake) this detector's evidence can reach on its own

    def fits(self, sha256: str) -> bool:
        """Fitted for these weights? (Different weights under the same name are a different model.)"""
        return not self.sha256 or not sha256 or self.sha256 == sha256

    def __call__(self, raw: float) -> float:
        if self.method == "platt":
            return float(sigmoid(self.a * logit(raw) + self.b))
        if self.method == "isotonic":
            return float(np.clip(np.interp(raw, self.xs, self.ys), EPS, 1 - EPS))
        return float(raw)

    def to_dict(self) -> dict:
        d = {"method": self.method} | ({"slot": self.slot} if self.slot else {}) | (
            {"sha256": self.sha256} if self.sha256 else {}) | (
            {"reliability": self.reliability} if self.reliability != 1.0 else {})
        if self.method == "platt":
            d |= {"a": self.a, "b": self.b}
        elif self.method == "isotonic":
            d |= {"xs": list(self.xs), "ys": list(self.ys)}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        return cls(d["method"], float(d.get("a", 1.0)), float(d.get("b", 0.0)),
                   tuple(map(float, d.get("xs", ()))), tuple(map(float, d.get("ys", ()))),
                   str(d.get("slot", "")), str(d.get("sha256", "")), float(d.get("reliability", 1.0)))


@dataclass(frozen=True)
class FusionModel:
    calibrators: dict[str, Calibrator]  # detector model name (e.g. "mesonet:mesoinception_df") -> its calibrator
    intercept: float
    weights: dict[str, float]  # slot -> weight on calibrated log-odds
    thresholds: tuple[float, float] = SEED_THRESHOLDS  # (authentic below, fake above)
    quality_widen: float = 0.15  # band widening at face quality 0 (linear in 1 - quality)
    metrics: dict = field(default_factory=dict)
    fitted_on: str = ""
    source: str = ""
    combiner: str = "logistic"  # "logistic" (weights + intercept) | "noisy-or" (calibrator reliabilities + leak)
    leak: float = 0.0  # noisy-OR: P(fake) when no detector sees anything
    # per media kind ("video", "audio", "image"): reals of each kind spend the false-FAKE budget on their own
    kind_thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)
    # noisy-OR: a monotone map of its output to a probability (the leak keeps the raw output above ~0.3 even for a
    # clean clip); verdicts do not change, since the thresholds are stored on the mapped scale
    output: Calibrator | None = None

    def mapped(self, p: float) -> float:
        return self.output(p) if self.output is not None else float(p)

    def thresholds_for(self, kind: str | None) -> tuple[float, float]:
        return self.kind_thresholds.get(kind or "", self.thresholds)

    def measured(self, kind: str | None) -> dict[str, float]:
        """This fusion's held-out (leave-one-source-out) verdict rates on media of ``kind``, when it was measured."""
        rates = (self.metrics.get("by_kind") or {}).get(kind or "video") or {}
        keys = ("real_called_fake", "real_called_authentic", "fake_called_fake", "fake_called_authentic")
        return {k: float(rates[k]) for k in keys if isinstance(rates.get(k), int | float)}

    # -- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "version": CALIBRATION_VERSION,
            "fitted_on": self.fitted_on,
            "calibrators": {k: c.to_dict() for k, c in self.calibrators.items()},
            "fusion": {"combiner": self.combiner, "intercept": self.intercept, "weights": self.weights,
                       "leak": self.leak} | ({"output": self.output.to_dict()} if self.output else {}),
            "thresholds": {"authentic_below": self.thresholds[0], "fake_above": self.thresholds[1]} | (
                {"by_kind": {k: {"authentic_below": lo, "fake_above": hi}
                             for k, (lo, hi) in self.kind_thresholds.items()}} if self.kind_thresholds else {}),
            "quality_widen": self.quality_widen,
            "metrics": self.metrics,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> FusionModel:
        if int(d.get("version", 1)) < CALIBRATION_VERSION:
            raise ValueError("calibrators keyed by slot (version 1) could belong to any model in that slot; "
                             "re-fit with `make calibrate`")
        th = d.get("thresholds", {})
        combiner = d["fusion"].get("combiner", "logistic")
        if combiner not in COMBINERS:
            raise ValueError(f"unknown combiner {combiner!r} (choose one of {', '.join(COMBINERS)})")
        return cls(
            calibrators={k: Calibrator.from_dict(v) for k, v in d.get("calibrators", {}).items()},
            intercept=float(d["fusion"]["intercept"]),
            weights={k: float(v) for k, v in d["fusion"]["weights"].items()},
            thresholds=(float(th.get("authentic_below", SEED_THRESHOLDS[0])),
                        float(th.get("fake_above", SEED_THRESHOLDS[1]))),
            quality_widen=float(d.get("quality_widen", 0.15)),
            metrics=d.get("metrics", {}),
            fitted_on=d.get("fitted_on", ""),
            source=source,
            combiner=combiner,
            leak=float(d["fusion"].get("leak", 0.0)),
            kind_thresholds={k: (float(v["authentic_below"]), float(v["fake_above"]))
                             for k, v in th.get("by_kind", {}).items()},
            output=Calibrator.from_dict(d["fusion"]["output"]) if d["fusion"].get("output") else None,
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> FusionModel | None:
        """The fitted model, or ``None`` when no calibration file exists (the seed fallback applies)."""
        p = Path(path) if path else DEFAULT_CALIBRATION
        if not p.is_file():
            return None
        try:
            return cls.from_dict(json.loads(p.read_text()), source=str(p))
        except (KeyError, ValueError, TypeError) as exc:
            logger.error("calibration file %s is unreadable (%s); using the seed's fixed weights", p, exc)
            return None

    # -- inference --------------------------------------------------------------------------------
    def calibrate(self, key: str, raw: float) -> float:
        cal = self.calibrators.get(key)
        return cal(raw) if cal else float(raw)

    def calibrator_for(self, name: str, sha256: str = "") -> Calibrator | None:
        """The calibrator fitted for this detector (model name and weights), or None: never another model's."""
        cal = self.calibrators.get(name)
        return cal if cal is not None and cal.fits(sha256) else None

    def unfitted_slots(self, slots) -> tuple[str, ...]:
        """Which of ``slots`` no calibrator of this file belongs to (none when the file names no slots)."""
        fitted = {c.slot for c in self.calibrators.values() if c.slot}
        return tuple(s for s in slots if fitted and s not in fitted)

    def combine(self, calibrated: dict[str, float], reliability: dict[str, float] | None = None) -> float:
        if self.combiner == "noisy-or":
            return self.mapped(noisy_or({s: (reliability or {}).get(s, 1.0) * p for s, p in calibrated.items()},
                                        self.leak))
        z = self.intercept + sum(self.weights.get(s, 0.0) * float(logit(p)) for s, p in calibrated.items())
        return float(sigmoid(z))


def applicable(kind: str, has_video: bool, has_audio: bool) -> tuple[str, ...]:
    """The detector slots a file of this kind with these streams calls for (an image has no motion to check).
    Voice change is not among them: it counts where it runs, and a clip with too little speech to compare voices
    is not missing evidence (called for, it narrowed AUTHENTIC on short clips: reals SUSPICIOUS or worse 18 % ->
    24 % under leave-one-source-out, December 8)."""
    if kind == "image":
        return ("visual",)
    slots = ("visual", "temporal") if has_video else ()
    slots += ("audio",) if has_audio else ()
    return slots + (("lip_sync",) if has_video and has_audio else ()) + (("mouth",) if has_video else ())


def noisy_or(evidence: dict[str, float], leak: float = 0.0) -> float:
    """P(fake) when each detector's evidence is an independent cause of "fake" (and ``leak`` the rest)."""
    keep = 1.0 - float(leak)
    for e in evidence.values():
        keep *= 1.0 - float(np.clip(e, 0.0, 1.0))
    return float(1.0 - keep)


def narrowed_authentic(thresholds: tuple[float, float], coverage: float) -> tuple[float, float]:
    """Detectors this input needed but that could not run narrow the AUTHENTIC band in proportion to the reliability
    they carry: missing evidence is never evidence of authenticity (it widens SUSPICIOUS instead)."""
    lo, hi = thresholds
    return lo * float(np.clip(coverage, 0.0, 1.0)), hi


def widened(thresholds: tuple[float, float], face_quality: float | None, widen: float) -> tuple[float, float]:
    """Low face quality pushes both thresholds outwards (more SUSPICIOUS, fewer hard calls)."""
    lo, hi = thresholds
    if face_quality is None:
        return lo, hi
    d = widen * (1.0 - float(np.clip(face_quality, 0.0, 1.0)))
    return max(0.0, lo - d), min(1.0, hi + d)


def decide(p: float, thresholds: tuple[float, float]) -> Verdict:
    lo, hi = thresholds
    if p >= hi:
        return Verdict.FAKE
    if p < lo:
        return Verdict.AUTHENTIC
    return Verdict.SUSPICIOUS


def uncalibrated(raw: float) -> float:
    """The documented fallback for a detector without a calibration of its own: raw log-odds at half strength."""
    return float(sigmoid(UNCALIBRATED_SHRINK * logit(raw)))


def fuse(
    raw: dict[str, float],
    model: FusionModel | None,
    face_quality: float | None = None,
    detectors: dict[str, tuple[str, str]] | None = None,
    applicable: tuple[str, ...] | None = None,
    kind: str | None = None,
) -> tuple[Fusion, dict[str, float], Verdict | None]:
    """Fuse the raw P(fake) of the detectors that ran.

    ``detectors``: slot -> (model name, weights sha256) of the detector that produced each score; its calibrator
    is looked up by that identity (a slot without one is uncalibrated). Returns the ``Fusion`` summary, the
    calibrated score per slot, and the verdict (``None`` when no detector ran: the caller reports NOT_APPLICABLE,
    never AUTHENTIC). ``applicable``: the slots this input calls for (e.g. all five for a talking-face video with
    sound); under the noisy-OR, those that did not run narrow the AUTHENTIC band. ``kind``: the media kind
    ("video" | "audio" | "image"), whose own thresholds apply when the calibration has them.
    A slot the calibration file was never fitted with (a detector added after it, e.g. ``mouth`` in a fusion of
    four) is shown but not counted: neither its weight nor the thresholds it would shift were ever measured.
    """
    ran = {s: float(v) for s, v in raw.items() if v is not None and math.isfinite(v)}
    detectors = detectors or {}
    unfitted = model.unfitted_slots(ran) if model is not None else ()
    if unfitted:
        ran = {s: v for s, v in ran.items() if s not in unfitted}
        applicable = tuple(s for s in applicable if s not in unfitted) if applicable is not None else None
    if model is not None and model.combiner == "noisy-or":
        fusion, calibrated, verdict = _fuse_noisy_or(ran, model, face_quality, detectors, applicable, kind)
        if unfitted:
            note = "; ".join(filter(None, [fusion.note, "not in this calibration's fit, shown but not counted: "
                                           + ", ".join(unfitted)]))
            fusion = replace(fusion, note=note)
        return fusion, calibrated, verdict
    if model is not None:
        calibrated, _, missing = _calibrate_all(ran, model, detectors)
        total = sum(abs(model.weights.get(s, 0.0)) for s in SLOTS) or 1.0
        weights = tuple((s, model.weights.get(s, 0.0)) for s in SLOTS)
        thresholds = widened(model.thresholds_for(kind), face_quality, model.quality_widen)
        method = "calibrated-logistic"
        notes = [f"calibration fitted on {model.fitted_on}"] if model.fitted_on else []
        if missing:
            notes.append(f"uncalibrated, fused at half strength: {', '.join(missing)}")
        note = "; ".join(notes) or None
        p = model.combine(calibrated) if ran else None
        coverage = sum(abs(model.weights.get(s, 0.0)) for s in ran) / total
    else:
        calibrated = {}
        weights = tuple((s, SEED_WEIGHTS[s]) for s in SLOTS)
        thresholds = widened(SEED_THRESHOLDS, face_quality, 0.15)
        method = "seed-fixed-weights"
        note = "no calibration file: the seed's fixed weights are used (scores are not calibrated)"
        weighed = [s for s in ran if SEED_WEIGHTS[s]]  # a later detector has no seed weight: it cannot decide alone
        p = sum(SEED_WEIGHTS[s] * ran.get(s, 0.5) for s in SLOTS) if weighed else None
        coverage = sum(SEED_WEIGHTS[s] for s in ran)
    if p is None:
        return Fusion(method, None, 0.0, thresholds, weights, note, tuple(missing if model else ())), calibrated, None
    confidence = float(abs(p - 0.5) * 2.0 * coverage)
    fusion = Fusion(method, float(p), confidence, thresholds, weights, note, tuple(missing if model else ()))
    return fusion, calibrated, decide(p, thresholds)


def calibrate_values(values: list[float], model: FusionModel | None, detector: tuple[str, str]) -> list[float] | None:
    """Per-second scores of one detector through the same calibrator as its clip score (``_calibrate_all``), so a
    timeline is on the scale of its bar; None without a fitted fusion (the seed weights calibrate nothing)."""
    if model is None:
        return None
    cal = model.calibrator_for(*detector)
    return [float(cal(v)) if cal is not None else uncalibrated(v) for v in values]


def _calibrate_all(ran: dict[str, float], model: FusionModel, detectors: dict[str, tuple[str, str]]
                   ) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Each slot's score through the calibrator of the detector that produced it: (calibrated, reliability,
    "slot (model)" of those without one, which get the documented fallbacks)."""
    calibrated, reliability, missing = {}, {}, []
    for s, v in ran.items():
        name, sha = detectors.get(s, (s, ""))
        cal = model.calibrator_for(name, sha)
        if cal is None:
            missing.append(f"{s} ({name})")
        calibrated[s] = cal(v) if cal is not None else uncalibrated(v)
        reliability[s] = cal.reliability if cal is not None else UNCALIBRATED_RELIABILITY
    return calibrated, reliability, missing


def _fuse_noisy_or(ran: dict[str, float], model: FusionModel, face_quality: float | None,
                   detectors: dict[str, tuple[str, str]], applicable: tuple[str, ...] | None,
                   kind: str | None = None) -> tuple[Fusion, dict[str, float], Verdict | None]:
    calibrated, reliability, missing = _calibrate_all(ran, model, detectors)
    evidence = tuple(sorted(((s, reliability[s] * calibrated[s]) for s in ran), key=lambda kv: -kv[1]))
    weights = tuple((s, reliability.get(s, 0.0)) for s in SLOTS)
    notes = [f"calibration fitted on {model.fitted_on}"] if model.fitted_on else []
    if missing:
        notes.append(f"uncalibrated, counted at reliability {UNCALIBRATED_RELIABILITY}: {', '.join(missing)}")
    # the reliability an input like this one calls for, against what ran (a slot not run has the mean reliability of
    # the calibrated detectors: its own detector is unknown when it never loaded)
    known = [c.reliability for c in model.calibrators.values()] or [UNCALIBRATED_RELIABILITY]
    wanted = tuple(applicable) if applicable is not None else tuple(ran)
    total = sum(reliability.get(s, float(np.mean(known))) for s in wanted)
    coverage = (sum(reliability[s] for s in ran if s in wanted) / total) if total > 0 else 1.0
    not_run = [s for s in wanted if s not in ran]
    thresholds = widened(narrowed_authentic(model.thresholds_for(kind), coverage), face_quality, model.quality_widen)
    if not_run and ran:
        notes.append(f"not run on this input, so AUTHENTIC needs stronger evidence: {', '.join(not_run)}")
    note = "; ".join(notes) or None
    if not ran:
        return (Fusion("evidence-noisy-or", None, 0.0, thresholds, weights, note, tuple(missing)), calibrated, None)
    p = model.mapped(noisy_or(dict(evidence), model.leak))
    verdict = decide(p, thresholds)
    measured = model.measured(kind)
    confidence = min(float(abs(p - 0.5) * 2.0 * coverage), verdict_precision(verdict, measured))
    fusion = Fusion("evidence-noisy-or", p, confidence, thresholds, weights, note, tuple(missing), evidence,
                    tuple(sorted(measured.items())))
    return fusion, calibrated, verdict


def verdict_precision(verdict: Verdict, measured: dict[str, float]) -> float:
    """How often this kind of verdict was right on the held-out benchmark (reals and fakes weighted alike): the
    most confidence it can honestly carry. 1.0 when nothing was measured; 0.5 for SUSPICIOUS (an abstention)."""
    if verdict is Verdict.SUSPICIOUS:
        return 0.5
    if not measured:
        return 1.0
    if verdict is Verdict.FAKE:
        right, wrong = measured.get("fake_called_fake"), measured.get("real_called_fake")
    else:
        right, wrong = measured.get("real_called_authentic"), measured.get("fake_called_authentic")
    if right is None or wrong is None or right + wrong <= 0:
        return 1.0
    return float(right / (right + wrong))

"""The report: frozen, typed results of one analysis, and the ONE place their JSON/DB shape is made.

Score orientation (documented for the customer's UI, see README "Report schema"):
  * ``visual_artifacts``, ``audio_synthesis``, ``lip_sync_error``, ``mouth_blur`` and ``final_weighted_score`` are
    probabilities of FAKE / mismatch in [0, 1] (higher = more suspicious);
  * ``temporal_consistency`` is 1 − the temporal detector's P(fake) (higher = more consistent = more real);
  * ``face_quality`` is in [0, 1] (higher = a better face to judge);
  * a detector that did not run is ``null``, never a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeline.labels import BY_SLOT, FINDING_MIN_EVIDENCE, OVERALL
from pipeline.provenance import ContentCredentials

SCHEMA_VERSION = "1.0"


class Verdict(StrEnum):
    AUTHENTIC = "AUTHENTIC"
    SUSPICIOUS = "SUSPICIOUS"
    FAKE = "FAKE"
    NOT_APPLICABLE = "NOT_APPLICABLE"
    FAILED = "FAILED"


class Status(StrEnum):
    OK = "ok"  # ran and produced a score
    UNAVAILABLE = "unavailable"  # weights/checkpoint absent: the detector cannot run on this deployment
    NOT_APPLICABLE = "not_applicable"  # nothing for it to look at (no face, no speech, too short)
    FAILED = "failed"  # it crashed; the reason says how


# Detector slots of the report, in display order, with the seed's key names and labels.
VISUAL, TEMPORAL, AUDIO, LIP_SYNC, MOUTH, VOICE_CHANGE = (
    "visual", "temporal", "audio", "lip_sync", "mouth", "voice_change")
SLOTS = (VISUAL, TEMPORAL, AUDIO, LIP_SYNC, MOUTH, VOICE_CHANGE)
SEED_SLOTS = (VISUAL, TEMPORAL, AUDIO, LIP_SYNC)  # the seed's four, whose keys come first in the stored JSON
SEED_KEYS = {
    VISUAL: "visual_artifacts",
    TEMPORAL: "temporal_consistency",
    AUDIO: "audio_synthesis",
    LIP_SYNC: "lip_sync_error",
    MOUTH: "mouth_blur",  # not a seed key: the fifth detector came later, stored the same way (P(fake))
    VOICE_CHANGE: "voice_change",  # the sixth, likewise
}
LABELS = {slot: BY_SLOT[slot].label for slot in SLOTS}  # worded in labels.json, like every label a person reads


def _r(x: float | None, nd: int = 4) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), nd)


@dataclass(frozen=True)
class TimelinePoint:
    start_s: float
    end_s: float
    score: float  # P(fake) of that second (mean of the items overlapping it)


@dataclass(frozen=True)
class DetectorResult:
    slot: str  # one of SLOTS
    model: str  # e.g. "mesonet:mesoinception_df"
    status: Status
    reason: str | None = None
    score: float | None = None  # raw detector P(fake) for the whole clip
    calibrated: float | None = None  # after the fitted calibration (None without a calibration file)
    timeline: tuple[TimelinePoint, ...] = ()
    extras: tuple[tuple[str, float | int | str | None], ...] = ()  # small typed facts (best offset, windows...)
    # the timeline through the detector's calibrator: the scale of its bar (empty without a calibration)
    calibrated_timeline: tuple[TimelinePoint, ...] = ()

    @property
    def shown_timeline(self) -> tuple[TimelinePoint, ...]:
        """What a person is shown per second: calibrated where a calibration exists, raw otherwise."""
        return self.calibrated_timeline or self.timeline

    @property
    def ran(self) -> bool:
        return self.status is Status.OK and self.score is not None

    def extra(self, key: str, default=None):
        return dict(self.extras).get(key, default)


@dataclass(frozen=True)
class TrackResult:
    track_id: int
    is_main: bool
    is_speaker: bool | None  # None: not measured (no audio or no active-speaker model)
    frames: int
    start_s: float
    end_s: float
    mean_face_size_px: float  # in original video pixels
    quality: float
    visual_score: float | None  # aggregated P(fake) of this face
    frame_times_s: tuple[float, ...] = ()
    frame_scores: tuple[float, ...] = ()
    box: tuple[float, float, float, float] | None = None  # a representative box, original pixels
    thumbnail_jpeg_b64: str | None = None


@dataclass(frozen=True)
class ModelUsed:
    slot: str
    name: str
    file: str
    sha256: str


@dataclass(frozen=True)
class MediaSummary:
    kind: str  # video | image | audio
    duration_s: float
    width: int
    height: int
    fps: float
    has_audio: bool
    has_video: bool
    rotation: int
    container: str
    video_codec: str | None
    audio_codec: str | None
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Fusion:
    method: str  # "evidence-noisy-or" | "calibrated-logistic" | "seed-fixed-weights" | "attention"
    fake_probability: float | None
    confidence: float
    thresholds: tuple[float, float]  # (authentic below, fake above) after face-quality widening
    weights: tuple[tuple[str, float], ...]  # slot -> weight used
    note: str | None = None
    uncalibrated: tuple[str, ...] = ()  # "slot (model)" of detectors fused without a calibration of their own
    # noisy-OR: slot -> the P(fake) its evidence alone supports (reliability × calibrated score), strongest first
    evidence: tuple[tuple[str, float], ...] = ()
    # the fusion's verdict rates measured on held-out sources for this kind of media ("real_called_fake", ...)
    measured: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Figure:
    """One picture of the evidence (PNG), shown in the HTML report and the web page and stored as a file."""

    name: str  # file stem: "timeline", "face_heatmap", "lip_sync", "voice", "summary"
    title: str
    caption: str
    png: bytes = field(repr=False)


@dataclass(frozen=True)
class Report:
    verdict: Verdict
    reason: str | None
    fusion: Fusion
    detectors: tuple[DetectorResult, ...]
    tracks: tuple[TrackResult, ...]
    face_quality: float | None
    media: MediaSummary | None
    models_used: tuple[ModelUsed, ...]
    device: str
    stage_seconds: tuple[tuple[str, float], ...]
    frames_analyzed: int
    source_name: str | None = None
    created_at: str | None = None
    warnings: tuple[str, ...] = field(default=())
    # detectors this input needed that this deployment could not load ("faces: weights file ... not found"):
    # the verdict rests on less evidence than a full run and says so (PARTIAL) wherever it is shown
    missing: tuple[str, ...] = field(default=())
    credentials: ContentCredentials | None = None  # the file's C2PA manifest, as read (None: not looked at)
    figures: tuple[Figure, ...] = field(default=())  # pictures of the evidence (stored beside the row, not in it)

    @property
    def declared_ai(self) -> bool:
        """A valid Content Credentials manifest declares the file AI-generated (decisive for the verdict)."""
        return self.credentials is not None and self.credentials.decisive

    def figure(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    @property
    def findings(self) -> tuple[str, ...]:
        """The one to three findings, in plain words, that drove the verdict (shown before any number), and last a
        note when the fused score sits at a verdict line."""
        return findings(self)

    # -- convenience ----------------------------------------------------------------------------
    @property
    def fake_probability(self) -> float | None:
        return self.fusion.fake_probability

    @property
    def confidence(self) -> float:
        return self.fusion.confidence

    def detector(self, slot: str) -> DetectorResult | None:
        return next((d for d in self.detectors if d.slot == slot), None)

    @property
    def processing_seconds(self) -> float:
        return float(sum(s for _, s in self.stage_seconds))

    # -- the JSON/DB shape (only here) ------------------------------------------------------------
    def detector_scores(self) -> dict[str, Any]:
        """The seed's keys, then the later detectors' (``mouth_blur``), then extras. Missing detectors are ``None``,
        never a number."""
        def stored(slot: str) -> float | None:
            d = self.detector(slot)
            if d is None or not d.ran:
                return None
            p = d.calibrated if d.calibrated is not None else d.score
            return _r((1.0 - p) if slot == TEMPORAL else p)

        out: dict[str, Any] = {"face_quality": _r(self.face_quality)}
        for slot in SEED_SLOTS:
            out[SEED_KEYS[slot]] = stored(slot)
        out["final_weighted_score"] = _r(self.fusion.fake_probability)
        for slot in SLOTS:  # detectors added after the seed: their keys follow the seed's, in the same orientation
            if slot not in SEED_SLOTS:
                out[SEED_KEYS[slot]] = stored(slot)
        # extras under new keys
        out["fake_probability"] = _r(self.fusion.fake_probability)
        out["verdict"] = self.verdict.value
        if self.partial:
            out["partial"] = True
            out["missing_detectors"] = list(self.missing)
        out["confidence"] = _r(self.fusion.confidence)
        out["findings"] = list(self.findings)
        if self.fusion.measured and not self.declared_ai:  # the detectors' error rates do not qualify a declaration
            out["benchmark"] = {"sentence": benchmark_sentence(self), **{k: _r(v) for k, v in self.fusion.measured}}
        if self.credentials is not None:
            out["content_credentials"] = self.credentials.as_dict()
            out["declared_ai"] = self.declared_ai
        if self.figures:  # the pictures themselves live in file storage, named by these
            out["figures"] = [{"name": f.name, "title": f.title, "caption": f.caption} for f in self.figures]
        out["raw_scores"] = {SEED_KEYS[d.slot]: _r(d.score) for d in self.detectors}
        out["detectors"] = {
            d.slot: {
                "key": SEED_KEYS[d.slot],
                "label": LABELS[d.slot],
                "model": d.model,
                "status": d.status.value,
                "reason": d.reason,
                "score": _r(d.score),
                "calibrated": _r(d.calibrated),
                "timeline": [[_r(p.start_s, 2), _r(p.end_s, 2), _r(p.score)] for p in d.timeline],
                **({"timeline_calibrated": [[_r(p.start_s, 2), _r(p.end_s, 2), _r(p.score)]
                                            for p in d.calibrated_timeline]} if d.calibrated_timeline else {}),
                **{k: (_r(v) if isinstance(v, float) else v) for k, v in d.extras},
            }
            for d in self.detectors
        }
        out["tracks"] = [
            {
                "track_id": t.track_id,
                "is_main": t.is_main,
                "is_speaker": t.is_speaker,
                "frames": t.frames,
                "start_s": _r(t.start_s, 2),
                "end_s": _r(t.end_s, 2),
                "mean_face_size_px": _r(t.mean_face_size_px, 1),
                "quality": _r(t.quality, 3),
                "visual_score": _r(t.visual_score),
                "frame_times_s": [_r(x, 2) for x in t.frame_times_s],
                "frame_scores": [_r(x) for x in t.frame_scores],
                "box": [_r(x, 1) for x in t.box] if t.box else None,
                "thumbnail_jpeg_b64": t.thumbnail_jpeg_b64,
            }
            for t in self.tracks
        ]
        out["fusion"] = {
            "method": self.fusion.method,
            "thresholds": {
                "authentic_below": _r(self.fusion.thresholds[0]),
                "fake_above": _r(self.fusion.thresholds[1]),
            },
            "weights": {k: _r(v) for k, v in self.fusion.weights},
            "note": self.fusion.note,
        }
        if self.fusion.uncalibrated:
            out["fusion"]["uncalibrated"] = list(self.fusion.uncalibrated)
        if self.fusion.evidence:
            out["fusion"]["evidence"] = {k: _r(v) for k, v in self.fusion.evidence}
        out["schema_version"] = SCHEMA_VERSION
        return out

    def model_metadata(self) -> dict[str, Any]:
        m = self.media
        return {
            "models_used": [
                {"slot": u.slot, "name": u.name, "file": u.file, "sha256": u.sha256} for u in self.models_used
            ],
            "processing_time_seconds": _r(self.processing_seconds, 3),
            "stage_seconds": {k: _r(v, 3) for k, v in self.stage_seconds},
            "frames_analyzed": self.frames_analyzed,
            "video_duration_seconds": _r(m.duration_s, 3) if m else None,
            "device": self.device,
            "fusion_method": self.fusion.method,
            "media": None if m is None else {
                "kind": m.kind, "width": m.width, "height": m.height, "fps": _r(m.fps, 3), "has_audio": m.has_audio,
                "has_video": m.has_video, "rotation": m.rotation, "container": m.container,
                "video_codec": m.video_codec, "audio_codec": m.audio_codec, "size_bytes": m.size_bytes,
                "sha256": m.sha256,
            },
            "source_name": self.source_name,
            "warnings": list(self.warnings),
            "schema_version": SCHEMA_VERSION,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "fake_probability": _r(self.fusion.fake_probability),
            "confidence": _r(self.fusion.confidence),
            "created_at": self.created_at,
            "detector_scores": self.detector_scores(),
            "model_metadata": self.model_metadata(),
        }


# ----------------------------------------------------------------------------------------------
# findings: the evidence behind a verdict, in plain words (the only place they are worded)
# ----------------------------------------------------------------------------------------------
CANNOT_RUN = {
    AUDIO: "the voice checks could not run",
    LIP_SYNC: "lips and voice could not be compared",
    VISUAL: "the face checks could not run",
    TEMPORAL: "the face-motion check could not run",
    MOUTH: "the mouth-detail check could not run",
    VOICE_CHANGE: "the voice-consistency check could not run",
}


def _span(d: DetectorResult, duration: float | None) -> str:
    """Where in the clip a detector's evidence sits: the contiguous seconds around its peak at or above its own
    clip-level score (and 0.5), or "throughout" when that covers nearly all of it."""
    pts = [p for p in d.timeline if p.score is not None]
    if not pts or d.score is None:
        return ""
    level = max(0.5, float(d.score))
    k = max(range(len(pts)), key=lambda i: pts[i].score)
    if pts[k].score < level:
        return ""
    a = b = k
    while a > 0 and pts[a - 1].score >= level:
        a -= 1
    while b < len(pts) - 1 and pts[b + 1].score >= level:
        b += 1
    start, end = pts[a].start_s, pts[b].end_s
    total = duration or (pts[-1].end_s - pts[0].start_s)
    if total and (end - start) >= 0.9 * total:
        return " throughout the clip"
    return f" from {start:.0f} s to {end:.0f} s"


def _sentence(slot: str, d: DetectorResult, report: Report) -> str:
    """A detector's finding in words; "some" when its own calibrated score is below even odds (its evidence
    counted, but the bar a person sees still leans authentic: the words must not claim more than the bar)."""
    duration = report.media.duration_s if report.media else None
    strong = leans_fake(d)
    if slot == LIP_SYNC:
        off = d.extra("offset_s")
        apart = f" (they are {abs(off):.1f} s apart)" if isinstance(off, int | float) and abs(off) >= 0.1 else ""
        verb = "do not match" if strong else "partly mismatch"
        return f"lips and voice {verb}" + apart + _span(d, duration)
    if slot == AUDIO:
        return ("the voice has the marks of synthetic speech" if strong
                else "the voice shows some marks of synthetic speech") + _span(d, duration)
    if slot == VOICE_CHANGE:
        start, end = d.extra("changed_from_s"), d.extra("changed_to_s")
        when = f" from {start:.1f} s to {end:.1f} s" if isinstance(start, int | float) and isinstance(
            end, int | float) else ""
        return ("another voice speaks" if strong else "the voice changes somewhat") + when
    some = "" if strong else "some "
    if slot == MOUTH:
        return ("the mouth is blurred the way lip-sync generators repaint it" if strong
                else "the mouth is softer than the rest of a camera image usually leaves it")
    if slot == VISUAL:
        main = next((t for t in report.tracks if t.is_main), None)
        if main is not None and main.frame_scores:
            n = sum(v >= 0.5 for v in main.frame_scores)
            if n:
                return f"the face shows {some}forgery traces in {n} of {len(main.frame_scores)} sampled frames"
        return f"the face shows {some}forgery traces"
    return ("the face moves the way generated video does" if strong
            else "the face partly moves the way generated video does") + _span(d, duration)


def _and_join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _not_run_lines(report: Report) -> list[str]:
    """Why the checks that did not run did not, one line each, except that the checks a missing face stopped share
    one line (three lines about one missing face would push every other finding out)."""
    lines = [(d, w) for d in report.detectors if (w := _why_not_run(d))]
    faceless = [d for d, w in lines if w.startswith(NO_FACE)]
    if len(faceless) < 2:
        return [w for _, w in lines]
    merged = f"{NO_FACE}the {_and_join([LABELS[d.slot].lower() for d in faceless])} checks could not run"
    out = [w for d, w in lines if d not in faceless]
    out.insert(next(i for i, (d, _) in enumerate(lines) if d in faceless), merged)
    return out


NO_FACE = "no usable face, so "


def _why_not_run(d: DetectorResult) -> str | None:
    reason = (d.reason or "").lower()
    if d.status is Status.NOT_APPLICABLE:
        if "no video stream" in reason or "still image" in reason:
            return None  # what the file is (a voice note, a photo), not something the checks missed
        if d.slot in (AUDIO, LIP_SYNC) and "speech" in reason:
            return f"no speech, so {CANNOT_RUN[d.slot]}"
        if d.slot in (AUDIO, LIP_SYNC) and "audio" in reason:
            return f"no sound, so {CANNOT_RUN[d.slot]}"
        if "face" in reason:  # the mouth is part of the face checks: their line says it once
            return None if d.slot == MOUTH else f"{NO_FACE}{CANNOT_RUN[d.slot]}"
        return None  # e.g. an image has no motion: nothing a reader needs to be told
    if d.status in (Status.UNAVAILABLE, Status.FAILED):
        return f"{CANNOT_RUN[d.slot]} on this installation ({d.status.value})"
    return None


# within this much P(fake) of a verdict line the call could as well have gone the other way: the reader is told
BORDERLINE = 0.02


def borderline_sentence(report: Report) -> str | None:
    """Says so when the fused score sits within ``BORDERLINE`` of the line between two verdicts, on the scale the
    reader sees (the fused bar, higher = more authentic)."""
    p = report.fake_probability
    if p is None or report.declared_ai or report.verdict not in (Verdict.AUTHENTIC, Verdict.SUSPICIOUS, Verdict.FAKE):
        return None
    lo, hi = report.fusion.thresholds
    for line, below, above in ((lo, Verdict.AUTHENTIC, Verdict.SUSPICIOUS), (hi, Verdict.SUSPICIOUS, Verdict.FAKE)):
        if report.verdict in (below, above) and math.isfinite(line) and abs(p - line) <= BORDERLINE:
            other = above if report.verdict is below else below
            return (f"a borderline call: {OVERALL.label} {OVERALL.shown(p):.0%} is within "
                    f"{BORDERLINE * 100:.0f} points of where it would read {other.value} "
                    f"({OVERALL.shown(line):.0%}), so weigh the evidence yourself")
    return None


def findings(report: Report) -> tuple[str, ...]:
    if report.verdict in (Verdict.NOT_APPLICABLE, Verdict.FAILED):
        return (report.reason,) if report.reason else ()
    said = report.credentials.sentence() if report.credentials is not None else None
    if report.declared_ai:  # the file says what it is: that comes before anything a detector measured
        return (said, *_detector_findings(report))[:3]
    found = _detector_findings(report)
    found = (*found[:2], said) if said else found
    near = borderline_sentence(report)
    return (*found, near) if near else found


def leans_fake(d: DetectorResult) -> bool:
    """The detector's own calibrated judgement is on the FAKE side: only then is its finding worded without
    "some" (a detector at 34 % shows "some marks of synthetic speech", not "the marks")."""
    p = d.calibrated if d.calibrated is not None else d.score
    return d.ran and p is not None and p >= 0.5


def _driving(report: Report, evidence, by_slot) -> list[str]:
    """Up to three detectors that drove a FAKE/SUSPICIOUS verdict: evidence at least FINDING_MIN_EVIDENCE and
    half the strongest."""
    if not evidence:
        return []
    top = evidence[0][1]
    return [slot for slot, e in evidence[:3] if slot in by_slot and e >= max(FINDING_MIN_EVIDENCE, 0.5 * top)]


def _detector_findings(report: Report) -> tuple[str, ...]:
    by_slot = {d.slot: d for d in report.detectors}
    weights = dict(report.fusion.weights)  # a detector the fusion gives no weight is never a finding
    evidence = list(report.fusion.evidence) or sorted(
        ((d.slot, d.calibrated if d.calibrated is not None else d.score) for d in report.detectors
         if d.ran and weights.get(d.slot, 1.0) != 0),
        key=lambda kv: -kv[1])
    out: list[str] = []
    if report.declared_ai:  # what the detectors found on their own, beside the declaration that decided
        out += [_sentence(slot, by_slot[slot], report) for slot in _driving(report, evidence, by_slot)]
        if not out:
            out.append("the checks themselves found no clear sign of manipulation: the declaration decides")
    elif report.verdict in (Verdict.FAKE, Verdict.SUSPICIOUS) and evidence:
        out += [_sentence(slot, by_slot[slot], report) for slot in _driving(report, evidence, by_slot)]
        if not out:
            out.append("no single check is confident, but together they are not clean enough to call it authentic")
    elif report.verdict is Verdict.AUTHENTIC:
        weak = [slot for slot, e in evidence if e >= FINDING_MIN_EVIDENCE and slot in by_slot]
        clean = [LABELS[d.slot].lower() for d in report.detectors if d.ran and d.slot not in weak]
        if clean and not weak:
            out.append(f"none of the checks that ran ({', '.join(clean)}) found a sign of manipulation")
        elif clean:
            names = _and_join(clean)
            out.append(f"the {names} check{'s' if len(clean) > 1 else ''} found no sign of manipulation")
        out += [f"{_sentence(slot, by_slot[slot], report)}, but not strongly enough to doubt the clip"
                for slot in weak[:1]]
    out += _not_run_lines(report)
    return tuple(dict.fromkeys(out))[:3]


def benchmark_sentence(report: Report) -> str | None:
    """What the measured error rates of this system say, in words (no confidence figure claims more)."""
    m = dict(report.fusion.measured)
    if not m:
        return None
    kind = {"audio": "recordings", "image": "images"}.get(report.media.kind if report.media else "", "videos")
    parts = []
    if "real_called_fake" in m:
        parts.append(f"{m['real_called_fake']:.0%} of real {kind} were wrongly called FAKE")
    if "fake_called_authentic" in m:
        parts.append(f"{m['fake_called_authentic']:.0%} of fake {kind} passed as AUTHENTIC")
    if not parts:
        return None
    return ("On our benchmark of sources this system was not tuned on (leave-one-source-out), "
            + " and ".join(parts) + ".")

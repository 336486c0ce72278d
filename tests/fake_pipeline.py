"""Test double of the pipeline (same interface, instant, INVENTED scores), and a server factory that runs the
deployed app around it: `uvicorn fake_pipeline:create_app --factory --app-dir tests` (FAKE_PIPELINE_DELAY_S
sets how long each run takes). It lives in tests/ so no deployment can switch it on.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path


class FakePipeline:
    """Same interface as the real pipeline, instant and deterministic; INVENTS its scores.

    It probes the media for real (bad media gives a FAILED report like the real pipeline), reports
    progress through a few stages taking ``delay_s`` in total, and derives scores from the bytes'
    sha256 so different clips get different (but repeatable) results. For tests of the service only.
    """

    STAGES = ("decode", "faces", "visual", "temporal", "audio", "lip_sync", "fusion")

    def __init__(self, settings=None, delay_s: float = 0.0, figures: bool = False):
        self.settings = settings
        self.delay_s = delay_s
        self.figures = figures  # draw the real evidence figures of the invented report (pipeline.explain)
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def loaded_detectors(self) -> list[str]:
        return ["fake:visual", "fake:temporal", "fake:audio", "fake:lip_sync"]

    def run(self, source, progress=None, source_name: str | None = None, capture: dict | None = None):
        from pipeline import media
        from pipeline.report import (
            SLOTS,
            DetectorResult,
            Fusion,
            MediaSummary,
            ModelUsed,
            Report,
            Status,
            Verdict,
        )

        with self._lock:
            self.calls += 1
        data = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        name = source_name or (None if isinstance(source, bytes | bytearray) else Path(source).name)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        stage_s = []
        try:
            t0 = time.perf_counter()
            info = media.probe(source, media.Limits.from_settings(self.settings))
            stage_s.append(("decode", time.perf_counter() - t0))
        except media.MediaError as exc:
            return Report(
                verdict=Verdict.FAILED, reason=exc.message,
                fusion=Fusion("seed-fixed-weights", None, 0.0, (0.3, 0.7), ()),
                detectors=(), tracks=(), face_quality=None, media=None, models_used=(), device="cpu",
                stage_seconds=tuple(stage_s), frames_analyzed=0, source_name=name, created_at=created,
            )
        per_stage = self.delay_s / len(self.STAGES)
        for stage in self.STAGES:
            t0 = time.perf_counter()
            if progress:
                progress(stage, 0.0)
            time.sleep(per_stage)
            if progress:
                progress(stage, 1.0)
            stage_s.append((stage, time.perf_counter() - t0))
        scores = [int(sha[8 * i: 8 * i + 8], 16) / 0xFFFFFFFF for i in range(len(SLOTS))]
        fused = sum(scores) / len(scores)
        verdict = Verdict.FAKE if fused > 0.7 else Verdict.AUTHENTIC if fused < 0.3 else Verdict.SUSPICIOUS
        dets = tuple(
            DetectorResult(slot=slot, model=f"fake:{slot}", status=Status.OK, score=round(s, 6))
            for slot, s in zip(SLOTS, scores, strict=True)
        )
        report = Report(
            verdict=verdict, reason=None,
            fusion=Fusion("seed-fixed-weights", round(fused, 6), round(abs(fused - 0.5) * 2, 6), (0.3, 0.7),
                          tuple((s, 0.25) for s in SLOTS), note="FAKE PIPELINE (test only)"),
            detectors=dets, tracks=(), face_quality=0.9,
            media=MediaSummary(
                kind=info.kind, duration_s=info.duration_s, width=info.width, height=info.height, fps=info.fps,
                has_audio=info.has_audio, has_video=info.has_video, rotation=info.rotation,
                container=info.container, video_codec=info.video_codec, audio_codec=info.audio_codec,
                size_bytes=info.size_bytes, sha256=sha,
            ),
            models_used=tuple(ModelUsed(slot, f"fake:{slot}", "none", "0" * 64) for slot in SLOTS),
            device="cpu", stage_seconds=tuple(stage_s), frames_analyzed=0, source_name=name, created_at=created,
        )
        if self.figures:
            import dataclasses

            from pipeline import explain

            report = dataclasses.replace(report, figures=explain.draw(report, explain.Evidence()))
        return report


def create_app():
    """The deployed HTTP app (web.server.create_app) with this fake instead of the models."""
    from web.server import create_app as create_server

    return create_server(pipeline=FakePipeline(delay_s=float(os.environ.get("FAKE_PIPELINE_DELAY_S", "0"))))

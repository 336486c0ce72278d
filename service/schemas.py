"""Request/response models of the HTTP API (they make the OpenAPI schema, with examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
TaskState = Literal["pending", "processing", "completed", "failed"]

EXAMPLE_REPORT: dict[str, Any] = {
    "verdict": "FAKE",
    "reason": None,
    "fake_probability": 0.87,
    "confidence": 0.74,
    "created_at": "2026-11-24T10:15:02Z",
    "detector_scores": {
        "face_quality": 0.81,
        "visual_artifacts": 0.91,
        "temporal_consistency": 0.22,
        "audio_synthesis": 0.64,
        "lip_sync_error": 0.71,
        "mouth_blur": 0.58,
        "voice_change": 0.12,
        "final_weighted_score": 0.87,
        "verdict": "FAKE",
        "confidence": 0.74,
        "schema_version": "1.0",
    },
    "model_metadata": {
        "processing_time_seconds": 18.2,
        "frames_analyzed": 24,
        "video_duration_seconds": 12.0,
        "device": "cuda",
        "fusion_method": "evidence-noisy-or",
        "schema_version": "1.0",
    },
}


class ServiceError(Exception):
    """An error the API answers with ``{"error": {"code", "message"}}`` and ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable error code")
    message: str = Field(description="what went wrong and what to do about it")


class ErrorResponse(BaseModel):
    error: ErrorBody

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"error": {"code": "forbidden_address", "message": "refusing to connect"}}]}
    )


def error_example(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class DetectVideoRequest(BaseModel):
    video_url: str = Field(description="public http(s) URL of the video (WhatsApp media URL, CDN link...)")
    callback_url: str | None = Field(
        None, description="optional https URL that receives the signed final status (see X-Signature)"
    )
    task_id: str | None = Field(
        None, pattern=TASK_ID_PATTERN,
        description="optional client-chosen id (idempotency key): re-sending it returns the existing task",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "video_url": "https://media.example.org/clips/speech.mp4",
                    "callback_url": "https://factcheck.example.org/hooks/deepfake",
                    "task_id": "whatsapp-msg-4711",
                }
            ]
        }
    )


class CallbackState(BaseModel):
    url: str
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


class TaskAccepted(BaseModel):
    task_id: str
    status: TaskState
    cached: bool = Field(False, description="true: identical bytes were analysed before; the result is ready")
    status_url: str = Field(description="poll this for progress and the report")
    report: dict[str, Any] | None = Field(None, description="Report.to_dict(), only for a cached result")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"task_id": "6f1c2e0a-8d5b-4a4e-9a57-1f0f3c9b2d11", "status": "pending", "cached": False,
                 "status_url": "/status/6f1c2e0a-8d5b-4a4e-9a57-1f0f3c9b2d11", "report": None}
            ]
        }
    )


class TaskStatus(BaseModel):
    task_id: str
    status: TaskState
    stage: str | None = Field(None, description="current pipeline stage while processing")
    progress: float | None = Field(None, description="0..1 within the current stage")
    detection_result: str | None = Field(
        None, description="pending, processing, authentic, suspicious, fake, not_applicable or failed"
    )
    confidence_score: float | None = Field(None, description="0-100")
    reason: str | None = Field(None, description="why it failed / why no verdict")
    error_code: str | None = None
    report: dict[str, Any] | None = Field(None, description="Report.to_dict() once completed (or failed with one)")
    attempts: int = 0
    cached: bool = False
    cached_from: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    callback: CallbackState | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"task_id": "6f1c2e0a-8d5b-4a4e-9a57-1f0f3c9b2d11", "status": "processing", "stage": "faces",
                 "progress": 0.4, "detection_result": "processing", "attempts": 1},
                {"task_id": "6f1c2e0a-8d5b-4a4e-9a57-1f0f3c9b2d11", "status": "completed",
                 "detection_result": "fake", "confidence_score": 74.0, "report": EXAMPLE_REPORT, "attempts": 1},
                {"task_id": "0b9d7c55-0f3e-4c8e-8f0e-5a1d2b3c4d5e", "status": "failed",
                 "detection_result": "failed", "reason": "the file is not a video, audio or image file",
                 "error_code": "analysis_failed", "attempts": 1},
            ]
        }
    )


class PipelineHealth(BaseModel):
    state: Literal["loading", "ready", "failed", "remote"]
    detectors: list[str] | dict[str, Any] | None = None
    error: str | None = None


class Health(BaseModel):
    """Anonymous callers get ``status``, ``pipeline.state`` and ``database.ok``; an API key sees the rest."""

    status: Literal["ok", "loading", "degraded"]
    pipeline: PipelineHealth
    database: dict[str, Any]
    queue: dict[str, int] | None = None
    auth: dict[str, Any] | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "pipeline": {"state": "ready", "detectors": ["visual", "temporal", "audio",
                                                                              "lip_sync", "mouth", "voice_change"]},
                 "database": {"backend": "sqlite", "ok": True}, "queue": {"pending": 0, "processing": 1},
                 "auth": {"api_keys": 2, "daily_limit_per_key": 50}}
            ]
        }
    )

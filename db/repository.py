"""The job/result store behind the API: one interface, three backends.

The store is Supabase's ``detection_history`` table (see ``supabase/migrations``): each row is one
request. A row starts ``pending`` (the persisted queue), is claimed atomically (``processing``, attempts
+1, heartbeats in ``updated_at``) and ends ``completed`` or ``failed``. The row is written the same way
by every backend:

* ``detection_result`` keeps the seed's vocabulary: pending, processing, authentic, suspicious, fake,
  not_applicable, failed;
* ``confidence_score`` is 0-100 with 2 decimals (``Report.confidence`` × 100);
* ``detector_scores`` = ``Report.detector_scores()``, ``model_metadata`` = ``Report.model_metadata()``,
  ``report_summary`` = the remaining top-level keys of ``Report.to_dict()``, so
  ``JobRow.report_dict()`` gives back exactly ``Report.to_dict()``.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

PENDING, PROCESSING, COMPLETED, FAILED = "pending", "processing", "completed", "failed"
FINAL_STATUSES = frozenset({COMPLETED, FAILED})
# Report.verdict -> detection_result (the seed's vocabulary, lower case)
RESULT_OF_VERDICT = {
    "AUTHENTIC": "authentic",
    "SUSPICIOUS": "suspicious",
    "FAKE": "fake",
    "NOT_APPLICABLE": "not_applicable",
    "FAILED": "failed",
}
REPORT_COLUMNS = ("detector_scores", "model_metadata")


class RepositoryError(Exception):
    """A backend failed in a way the caller cannot fix (connection, schema)."""


class RateLimitExceeded(Exception):
    """The API key already used its daily quota; nothing was written."""

    def __init__(self, limit: int, used: int | None = None):
        super().__init__(f"daily limit of {limit} videos reached")
        self.limit = limit
        self.used = used


class DuplicateTaskError(Exception):
    """A row with this task_id exists already."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc_midnight(now: datetime | None = None) -> datetime:
    now = (now or utcnow()).astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_utc_midnight(now: datetime | None = None) -> int:
    now = (now or utcnow()).astimezone(UTC)
    return max(1, math.ceil((utc_midnight(now) + timedelta(days=1) - now).total_seconds()))


def api_key_id(key: str) -> str:
    """What the database stores instead of an API key: a sha256 prefix (enough to count, useless to steal)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def iso(dt: datetime | None) -> str | None:
    """UTC ISO-8601 with microseconds: one fixed format, so strings compare like the times they hold."""
    return None if dt is None else dt.astimezone(UTC).isoformat(timespec="microseconds")


def parse_dt(v: Any) -> datetime | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    s = str(v).replace("Z", "+00:00").replace(" ", "T", 1)
    dt = datetime.fromisoformat(s)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _json(v: Any) -> dict:
    if v is None or v == "":
        return {}
    if isinstance(v, str | bytes):
        return json.loads(v)
    return dict(v)


@dataclass(frozen=True)
class NewJob:
    """A row to insert: a queued job, or (``status=completed``) a copy of a cached result."""

    task_id: str
    status: str = PENDING
    user_id: str | None = None
    file_url: str | None = None
    file_type: str | None = None
    source_url: str | None = None
    source_name: str | None = None
    storage_path: str | None = None
    content_sha256: str | None = None
    api_key_id: str | None = None
    callback_url: str | None = None
    cached_from: str | None = None
    detection_result: str | None = None
    confidence_score: float | None = None
    detector_scores: dict = field(default_factory=dict)
    model_metadata: dict = field(default_factory=dict)
    report_summary: dict = field(default_factory=dict)
    reason: str | None = None
    error_code: str | None = None
    completed_at: datetime | None = None

    def columns(self) -> dict[str, Any]:
        row = asdict(self)
        row["detection_result"] = self.detection_result or self.status
        return row

    @classmethod
    def cached_copy(cls, original: JobRow, **kw) -> NewJob:
        """A new request answered from ``original``'s completed result (same bytes, same analysis)."""
        kw.setdefault("file_type", original.file_type)
        return cls(
            status=COMPLETED,
            cached_from=original.cached_from or original.task_id,  # always the run that computed it
            detection_result=original.detection_result,
            confidence_score=original.confidence_score,
            detector_scores=original.detector_scores,
            model_metadata=original.model_metadata,
            report_summary=original.report_summary,
            reason=original.reason,
            completed_at=utcnow(),
            **kw,
        )


@dataclass(frozen=True)
class JobRow:
    """One ``detection_history`` row as every backend returns it."""

    id: str
    task_id: str | None
    status: str
    detection_result: str | None = None
    confidence_score: float | None = None
    detector_scores: dict = field(default_factory=dict)
    model_metadata: dict = field(default_factory=dict)
    report_summary: dict = field(default_factory=dict)
    user_id: str | None = None
    file_url: str | None = None
    file_type: str | None = None
    stage: str | None = None
    progress: float | None = None
    reason: str | None = None
    error_code: str | None = None
    source_url: str | None = None
    source_name: str | None = None
    storage_path: str | None = None
    content_sha256: str | None = None
    api_key_id: str | None = None
    callback_url: str | None = None
    callback_attempts: int = 0
    callback_last_status: int | None = None
    callback_last_error: str | None = None
    callback_delivered_at: datetime | None = None
    attempts: int = 0
    cached_from: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def report_dict(self) -> dict[str, Any] | None:
        """``Report.to_dict()`` of this row's result, or None while there is none."""
        if not self.report_summary and not self.detector_scores:
            return None
        return {**self.report_summary, "detector_scores": self.detector_scores, "model_metadata": self.model_metadata}

    @classmethod
    def from_mapping(cls, m: dict[str, Any]) -> JobRow:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in m.items() if k in names}
        for k in ("id", "user_id"):
            if kw.get(k) is not None:
                kw[k] = str(kw[k])
        for k in ("detector_scores", "model_metadata", "report_summary"):
            kw[k] = _json(kw.get(k))
        if isinstance(kw.get("confidence_score"), Decimal | str | int):
            kw["confidence_score"] = float(kw["confidence_score"])
        for k in ("callback_attempts", "attempts"):
            kw[k] = int(kw.get(k) or 0)
        for k in ("created_at", "started_at", "completed_at", "updated_at", "callback_delivered_at"):
            kw[k] = parse_dt(kw.get(k))
        kw["status"] = kw.get("status") or COMPLETED  # rows written before the migration are finished results
        return cls(**kw)


def result_columns(report) -> dict[str, Any]:
    """The columns a finished ``pipeline.report.Report`` fills (the same for every backend)."""
    d = report.to_dict()
    verdict = report.verdict.value if hasattr(report.verdict, "value") else str(report.verdict)
    failed = verdict == "FAILED"
    return {
        "status": FAILED if failed else COMPLETED,
        "detection_result": RESULT_OF_VERDICT.get(verdict, verdict.lower()),
        "confidence_score": round(float(report.confidence) * 100.0, 2) if report.confidence is not None else None,
        "detector_scores": report.detector_scores(),
        "model_metadata": report.model_metadata(),
        "report_summary": {k: v for k, v in d.items() if k not in REPORT_COLUMNS},
        "reason": report.reason,
        "error_code": "analysis_failed" if failed else None,
        "stage": None,
        "progress": 1.0,
    }


def failure_columns(reason: str, code: str) -> dict[str, Any]:
    return {"status": FAILED, "detection_result": FAILED, "reason": reason, "error_code": code, "stage": None}


class Repository(ABC):
    """What the service needs from the database. Every method is safe to call from many threads."""

    backend: str = "?"

    @abstractmethod
    def create_job(self, job: NewJob, daily_limit: int = 0) -> JobRow:
        """Insert ``job``. With ``daily_limit`` > 0 and an ``api_key_id``, the count of that key's rows since
        UTC midnight and the insert are atomic: raises ``RateLimitExceeded`` (nothing written) at the limit.
        Raises ``DuplicateTaskError`` if the task_id exists."""

    @abstractmethod
    def get(self, task_id: str) -> JobRow | None: ...

    @abstractmethod
    def claim(self, task_id: str | None = None) -> JobRow | None:
        """Atomically move the oldest pending job (or ``task_id`` if pending) to processing, attempts + 1."""

    @abstractmethod
    def heartbeat(self, task_id: str, attempt: int, stage: str | None = None, progress: float | None = None) -> bool:
        """Refresh updated_at (and the stage) of a job we run; False when it is no longer ours."""

    @abstractmethod
    def complete(self, task_id: str, attempt: int, report) -> JobRow | None:
        """Write the report of attempt ``attempt``; None (nothing written) when that attempt lost the job."""

    @abstractmethod
    def fail(self, task_id: str, reason: str, code: str, attempt: int | None = None) -> JobRow | None:
        """Mark failed (only attempt ``attempt``'s processing row when given, else any unfinished row)."""

    @abstractmethod
    def find_completed_by_sha256(self, sha256: str, api_key_id: str | None = None) -> JobRow | None:
        """The newest completed row for these bytes submitted under ``api_key_id`` (None: rows without a key)."""

    @abstractmethod
    def count_today(self, api_key_id: str, now: datetime | None = None) -> int: ...

    @abstractmethod
    def update_columns(self, task_id: str, values: dict[str, Any]) -> None:
        """Set these columns of one row (and ``updated_at``); the backend's only write primitive used here."""

    def record_callback_attempt(
        self, task_id: str, attempt: int, status_code: int | None, error: str | None, delivered: bool
    ) -> None:
        """One callback delivery attempt; a delivered one is stamped in UTC (every backend, the same columns)."""
        values: dict[str, Any] = {
            "callback_attempts": attempt,
            "callback_last_status": status_code,
            "callback_last_error": error,
        }
        if delivered:
            values["callback_delivered_at"] = utcnow()
        self.update_columns(task_id, values)

    @abstractmethod
    def requeue_stale(self, stale_after_s: float, max_attempts: int) -> list[JobRow]:
        """Processing jobs without heartbeat for ``stale_after_s``: back to pending, or failed with a reason
        after ``max_attempts``. Returns the rows changed."""

    @abstractmethod
    def undelivered_callbacks(self, max_attempts: int) -> list[JobRow]: ...

    @abstractmethod
    def queue_counts(self) -> dict[str, int]:
        """Rows per unfinished status (pending, processing)."""

    @abstractmethod
    def list_jobs(self, limit: int = 50, before: datetime | None = None, api_key_id: str | None = None) -> list[JobRow]:
        """The history list: newest first by created_at, at most ``limit`` rows; ``before`` pages on (rows created
        earlier); ``api_key_id`` keeps one key's rows (None: every row)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

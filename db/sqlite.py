"""Embedded backend: stdlib sqlite3, WAL, one connection per repository guarded by a lock.

The schema mirrors the Postgres migration column for column (JSON as text, times as UTC ISO strings
that sort like the times they hold). Cross-process safety (a restarted server, the test process
reading the file) comes from SQLite's own locking: writers take ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from db.repository import (
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    DuplicateTaskError,
    JobRow,
    NewJob,
    RateLimitExceeded,
    Repository,
    failure_columns,
    iso,
    result_columns,
    utc_midnight,
    utcnow,
)

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS detection_history (
    id TEXT PRIMARY KEY,
    user_id TEXT,
    file_url TEXT,
    file_type TEXT,
    detection_result TEXT,
    confidence_score REAL,
    created_at TEXT NOT NULL,
    detector_scores TEXT NOT NULL DEFAULT '{}',
    model_metadata TEXT NOT NULL DEFAULT '{}',
    report_summary TEXT NOT NULL DEFAULT '{}',
    task_id TEXT UNIQUE,
    status TEXT NOT NULL DEFAULT 'completed' CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    stage TEXT,
    progress REAL,
    reason TEXT,
    error_code TEXT,
    source_url TEXT,
    source_name TEXT,
    storage_path TEXT,
    content_sha256 TEXT,
    api_key_id TEXT,
    callback_url TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_last_status INTEGER,
    callback_last_error TEXT,
    callback_delivered_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cached_from TEXT,
    started_at TEXT,
    completed_at TEXT,
    updated_at TEXT
);
CREATE INDEX IF NOT EXISTS detection_history_queue_idx ON detection_history (status, created_at);
CREATE INDEX IF NOT EXISTS detection_history_sha256_idx ON detection_history (content_sha256, status);
CREATE INDEX IF NOT EXISTS detection_history_quota_idx ON detection_history (api_key_id, created_at);
"""
JSON_COLUMNS = ("detector_scores", "model_metadata", "report_summary")


def _encode(v: Any) -> Any:
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    return v


class SqliteRepository(Repository):
    backend = "sqlite"

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.executescript(SCHEMA)

    # -- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _tx(self):
        """A write transaction (``BEGIN IMMEDIATE``: other writers, in any process, wait)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _one(self, sql: str, args: tuple = ()) -> JobRow | None:
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return None if row is None else JobRow.from_mapping(dict(row))

    def _update(self, conn, task_id: str, values: dict[str, Any], where: str = "", args: tuple = ()) -> JobRow | None:
        values = {**values, "updated_at": utcnow()}
        sets = ", ".join(f"{k} = ?" for k in values)
        cur = conn.execute(
            f"UPDATE detection_history SET {sets} WHERE task_id = ? {where}",
            (*(_encode(v) for v in values.values()), task_id, *args),
        )
        if cur.rowcount == 0:
            return None
        row = conn.execute("SELECT * FROM detection_history WHERE task_id = ?", (task_id,)).fetchone()
        return JobRow.from_mapping(dict(row))

    # -- Repository -----------------------------------------------------------------------------
    def create_job(self, job: NewJob, daily_limit: int = 0) -> JobRow:
        now = utcnow()
        row = {"id": str(uuid.uuid4()), **job.columns(), "created_at": now, "updated_at": now}
        with self._tx() as conn:
            if daily_limit > 0 and job.api_key_id:
                used = conn.execute(
                    "SELECT count(*) FROM detection_history WHERE api_key_id = ? AND created_at >= ?",
                    (job.api_key_id, iso(utc_midnight(now))),
                ).fetchone()[0]
                if used >= daily_limit:
                    raise RateLimitExceeded(daily_limit, used)
            cols = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            try:
                conn.execute(
                    f"INSERT INTO detection_history ({cols}) VALUES ({marks})", tuple(_encode(v) for v in row.values())
                )
            except sqlite3.IntegrityError as exc:
                if "task_id" in str(exc):
                    raise DuplicateTaskError(job.task_id) from exc
                raise
            out = conn.execute("SELECT * FROM detection_history WHERE id = ?", (row["id"],)).fetchone()
        return JobRow.from_mapping(dict(out))

    def get(self, task_id: str) -> JobRow | None:
        return self._one("SELECT * FROM detection_history WHERE task_id = ?", (task_id,))

    def claim(self, task_id: str | None = None) -> JobRow | None:
        with self._tx() as conn:
            if task_id is None:
                found = conn.execute(
                    "SELECT task_id FROM detection_history WHERE status = ? ORDER BY created_at, id LIMIT 1",
                    (PENDING,),
                ).fetchone()
            else:
                found = conn.execute(
                    "SELECT task_id FROM detection_history WHERE status = ? AND task_id = ?", (PENDING, task_id)
                ).fetchone()
            if found is None:
                return None
            now = utcnow()
            conn.execute(
                "UPDATE detection_history SET status = ?, detection_result = ?, attempts = attempts + 1, "
                "stage = 'queued', progress = 0, started_at = ?, updated_at = ? WHERE task_id = ? AND status = ?",
                (PROCESSING, PROCESSING, iso(now), iso(now), found["task_id"], PENDING),
            )
            row = conn.execute("SELECT * FROM detection_history WHERE task_id = ?", (found["task_id"],)).fetchone()
        return JobRow.from_mapping(dict(row))

    def heartbeat(self, task_id: str, attempt: int, stage: str | None = None, progress: float | None = None) -> bool:
        values: dict[str, Any] = {}
        if stage is not None:
            values["stage"] = stage
        if progress is not None:
            values["progress"] = float(progress)
        with self._tx() as conn:
            return (
                self._update(conn, task_id, values, "AND status = ? AND attempts = ?", (PROCESSING, attempt))
                is not None
            )

    def complete(self, task_id: str, attempt: int, report) -> JobRow | None:
        values = {**result_columns(report), "completed_at": utcnow()}
        with self._tx() as conn:
            return self._update(conn, task_id, values, "AND status = ? AND attempts = ?", (PROCESSING, attempt))

    def fail(self, task_id: str, reason: str, code: str, attempt: int | None = None) -> JobRow | None:
        values = {**failure_columns(reason, code), "completed_at": utcnow()}
        with self._tx() as conn:
            if attempt is None:
                return self._update(conn, task_id, values, "AND status IN (?, ?)", (PENDING, PROCESSING))
            return self._update(conn, task_id, values, "AND status = ? AND attempts = ?", (PROCESSING, attempt))

    def find_completed_by_sha256(self, sha256: str, api_key_id: str | None = None) -> JobRow | None:
        return self._one(
            "SELECT * FROM detection_history WHERE content_sha256 = ? AND status = ? AND api_key_id IS ? "
            "ORDER BY completed_at DESC LIMIT 1",
            (sha256, COMPLETED, api_key_id),
        )

    def count_today(self, api_key_id: str, now: datetime | None = None) -> int:
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT count(*) FROM detection_history WHERE api_key_id = ? AND created_at >= ?",
                    (api_key_id, iso(utc_midnight(now))),
                ).fetchone()[0]
            )

    def update_columns(self, task_id: str, values: dict[str, Any]) -> None:
        with self._tx() as conn:
            self._update(conn, task_id, values)

    def requeue_stale(self, stale_after_s: float, max_attempts: int) -> list[JobRow]:
        now = utcnow()
        cutoff = iso(now - timedelta(seconds=stale_after_s))
        changed = []
        with self._tx() as conn:
            stale = conn.execute(
                "SELECT task_id, attempts FROM detection_history WHERE status = ? AND updated_at < ?",
                (PROCESSING, cutoff),
            ).fetchall()
            for r in stale:
                if r["attempts"] >= max_attempts:
                    values = {
                        **failure_columns(
                            f"gave up after {r['attempts']} attempts: the worker stopped (crash, restart or timeout) "
                            "before finishing",
                            "worker_lost",
                        ),
                        "completed_at": now,
                        "progress": None,
                    }
                else:
                    values = {"status": PENDING, "detection_result": PENDING, "stage": None, "progress": None,
                              "completed_at": None}
                row = self._update(conn, r["task_id"], values, "AND status = ?", (PROCESSING,))
                if row is not None:
                    changed.append(row)
        return changed

    def undelivered_callbacks(self, max_attempts: int) -> list[JobRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM detection_history WHERE status IN (?, ?) AND callback_url IS NOT NULL "
                "AND callback_delivered_at IS NULL AND callback_attempts < ? ORDER BY created_at",
                (COMPLETED, FAILED, max_attempts),
            ).fetchall()
        return [JobRow.from_mapping(dict(r)) for r in rows]

    def queue_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT status, count(*) FROM detection_history WHERE status IN (?, ?) GROUP BY status",
                (PENDING, PROCESSING),
            ).fetchall()
        out = {PENDING: 0, PROCESSING: 0}
        out.update({r[0]: int(r[1]) for r in rows})
        return out

    def list_jobs(self, limit: int = 50, before: datetime | None = None, api_key_id: str | None = None) -> list[JobRow]:
        where, args = [], []
        if before is not None:
            where.append("created_at < ?")
            args.append(iso(before))
        if api_key_id is not None:
            where.append("api_key_id = ?")
            args.append(api_key_id)
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM detection_history {cond} ORDER BY created_at DESC, id DESC LIMIT ?",
                (*args, max(0, int(limit))),
            ).fetchall()
        return [JobRow.from_mapping(dict(r)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

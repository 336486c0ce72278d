"""Direct PostgreSQL backend (psycopg 3): self-hosting, or Supabase's database over its connection string.

Atomic queue operations are the SQL functions of the migration (``detection_enqueue`` serialises the
quota count and the insert per key, ``detection_claim`` uses ``FOR UPDATE SKIP LOCKED``,
``detection_requeue_stale``); the Supabase backend calls the very same functions through PostgREST.
Connections are per thread (autocommit) and reopened when broken.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

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
    RepositoryError,
    failure_columns,
    iso,
    result_columns,
    utc_midnight,
)

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def apply_migrations(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Run every migration file in name order (each is idempotent). Returns the names applied."""
    done = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for path in migration_files(directory):
            conn.execute(path.read_text())
            done.append(path.name)
    return done


def _param(v: Any) -> Any:
    return Jsonb(v) if isinstance(v, dict | list) else v


def _jsonable(v: Any) -> Any:
    return iso(v) if isinstance(v, datetime) else v


class PostgresRepository(Repository):
    backend = "postgres"

    def __init__(self, conninfo: str, migrate: bool = True):
        self.conninfo = conninfo
        self._local = threading.local()
        self._all: list[psycopg.Connection] = []
        self._all_lock = threading.Lock()
        if migrate:
            try:
                apply_migrations(conninfo)
            except errors.InsufficientPrivilege as exc:  # a restricted role: the schema must already be there
                logger.warning("could not apply migrations (%s); assuming the schema is up to date", exc)

    # -- plumbing -------------------------------------------------------------------------------
    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row)
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _rows(self, query, args: tuple | dict = ()) -> list[JobRow]:
        try:
            return [JobRow.from_mapping(r) for r in self._conn().execute(query, args).fetchall()]
        except psycopg.OperationalError as exc:
            raise RepositoryError(f"postgres: {exc}") from exc

    def _first(self, query, args: tuple | dict = ()) -> JobRow | None:
        rows = self._rows(query, args)
        return rows[0] if rows else None

    def _update(self, task_id: str, values: dict[str, Any], where: str = "", args: tuple = ()) -> JobRow | None:
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in values
        )
        query = sql.SQL("UPDATE public.detection_history SET {}, updated_at = now() WHERE task_id = %s {} RETURNING *")
        return self._first(
            query.format(sets, sql.SQL(where)), (*(_param(v) for v in values.values()), task_id, *args)
        )

    # -- Repository -----------------------------------------------------------------------------
    def create_job(self, job: NewJob, daily_limit: int = 0) -> JobRow:
        row = {k: _jsonable(v) for k, v in job.columns().items()}
        try:
            out = self._first(
                "SELECT * FROM public.detection_enqueue(%s, %s)", (Jsonb(row), int(daily_limit or 0))
            )
        except errors.UniqueViolation as exc:
            raise DuplicateTaskError(job.task_id) from exc
        if out is None:
            raise RateLimitExceeded(daily_limit)
        return out

    def get(self, task_id: str) -> JobRow | None:
        return self._first("SELECT * FROM public.detection_history WHERE task_id = %s", (task_id,))

    def claim(self, task_id: str | None = None) -> JobRow | None:
        return self._first("SELECT * FROM public.detection_claim(%s)", (task_id,))

    def heartbeat(self, task_id: str, attempt: int, stage: str | None = None, progress: float | None = None) -> bool:
        values: dict[str, Any] = {}
        if stage is not None:
            values["stage"] = stage
        if progress is not None:
            values["progress"] = float(progress)
        values = values or {"attempts": attempt}
        return self._update(task_id, values, "AND status = %s AND attempts = %s", (PROCESSING, attempt)) is not None

    def complete(self, task_id: str, attempt: int, report) -> JobRow | None:
        values = {**result_columns(report), "completed_at": datetime.now().astimezone()}
        return self._update(task_id, values, "AND status = %s AND attempts = %s", (PROCESSING, attempt))

    def fail(self, task_id: str, reason: str, code: str, attempt: int | None = None) -> JobRow | None:
        values = {**failure_columns(reason, code), "completed_at": datetime.now().astimezone()}
        if attempt is None:
            return self._update(task_id, values, "AND status IN (%s, %s)", (PENDING, PROCESSING))
        return self._update(task_id, values, "AND status = %s AND attempts = %s", (PROCESSING, attempt))

    def find_completed_by_sha256(self, sha256: str, api_key_id: str | None = None) -> JobRow | None:
        return self._first(
            "SELECT * FROM public.detection_history WHERE content_sha256 = %s AND status = %s "
            "AND api_key_id IS NOT DISTINCT FROM %s ORDER BY completed_at DESC NULLS LAST LIMIT 1",
            (sha256, COMPLETED, api_key_id),
        )

    def count_today(self, api_key_id: str, now: datetime | None = None) -> int:
        row = self._conn().execute(
            "SELECT count(*) AS n FROM public.detection_history WHERE api_key_id = %s AND created_at >= %s",
            (api_key_id, utc_midnight(now)),
        ).fetchone()
        return int(row["n"])

    def update_columns(self, task_id: str, values: dict[str, Any]) -> None:
        self._update(task_id, values)

    def requeue_stale(self, stale_after_s: float, max_attempts: int) -> list[JobRow]:
        return self._rows(
            "SELECT * FROM public.detection_requeue_stale(%s, %s)", (float(stale_after_s), int(max_attempts))
        )

    def undelivered_callbacks(self, max_attempts: int) -> list[JobRow]:
        return self._rows(
            "SELECT * FROM public.detection_history WHERE status IN (%s, %s) AND callback_url IS NOT NULL "
            "AND callback_delivered_at IS NULL AND callback_attempts < %s ORDER BY created_at",
            (COMPLETED, FAILED, max_attempts),
        )

    def queue_counts(self) -> dict[str, int]:
        rows = self._conn().execute(
            "SELECT status, count(*) AS n FROM public.detection_history WHERE status IN (%s, %s) GROUP BY status",
            (PENDING, PROCESSING),
        ).fetchall()
        out = {PENDING: 0, PROCESSING: 0}
        out.update({r["status"]: int(r["n"]) for r in rows})
        return out

    def list_jobs(self, limit: int = 50, before: datetime | None = None, api_key_id: str | None = None) -> list[JobRow]:
        # NULL parameters switch a filter off; seed rows may lack created_at and sort last
        return self._rows(
            "SELECT * FROM public.detection_history WHERE (%(before)s::timestamptz IS NULL OR created_at < %(before)s) "
            "AND (%(key)s::text IS NULL OR api_key_id = %(key)s) ORDER BY created_at DESC NULLS LAST, id DESC "
            "LIMIT %(limit)s",
            {"before": before, "key": api_key_id, "limit": max(0, int(limit))},
        )

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except Exception:  # already gone
                    pass
            self._all.clear()

"""Supabase backend: the official ``supabase`` client (PostgREST) with the service-role key.

Plain reads and updates go to ``/rest/v1/detection_history``; the operations that must be atomic
(quota + insert, claim, requeue) call the migration's SQL functions through ``/rest/v1/rpc/<name>``,
the same functions the direct-Postgres backend runs. The service-role key bypasses RLS, so this
module only ever runs server side (Modal secret / server env), never in a browser.
"""

from __future__ import annotations

import logging
from datetime import datetime
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
    RepositoryError,
    failure_columns,
    iso,
    result_columns,
    utc_midnight,
    utcnow,
)

logger = logging.getLogger(__name__)
TABLE = "detection_history"


def _jsonable(v: Any) -> Any:
    return iso(v) if isinstance(v, datetime) else v


class SupabaseRepository(Repository):
    backend = "supabase"

    def __init__(self, url: str, service_key: str, timeout_s: float = 15.0, client=None):
        if client is None:
            import httpx

            from supabase import ClientOptions, create_client

            http = httpx.Client(timeout=httpx.Timeout(timeout_s))
            client = create_client(url, service_key, ClientOptions(httpx_client=http, auto_refresh_token=False))
        self.client = client
        self._rest = client.postgrest  # built once here (lazily built properties are not thread-safe)

    # -- plumbing -------------------------------------------------------------------------------
    def _table(self):
        return self._rest.from_(TABLE)

    @staticmethod
    def _run(builder) -> Any:
        from postgrest.exceptions import APIError

        try:
            return builder.execute()
        except APIError as exc:
            if getattr(exc, "code", None) == "23505":
                raise DuplicateTaskError(str(exc)) from exc
            raise RepositoryError(f"supabase: {exc}") from exc

    def _rows(self, builder) -> list[JobRow]:
        data = self._run(builder).data or []
        if isinstance(data, dict):
            data = [data]
        return [JobRow.from_mapping(r) for r in data]

    def _first(self, builder) -> JobRow | None:
        rows = self._rows(builder)
        return rows[0] if rows else None

    def _update(self, task_id: str, values: dict[str, Any]):
        return self._table().update({k: _jsonable(v) for k, v in values.items()}).eq("task_id", task_id)

    # -- Repository -----------------------------------------------------------------------------
    def create_job(self, job: NewJob, daily_limit: int = 0) -> JobRow:
        row = {k: _jsonable(v) for k, v in job.columns().items()}
        out = self._first(self._rest.rpc("detection_enqueue", {"p_row": row, "p_daily_limit": int(daily_limit or 0)}))
        if out is None:
            raise RateLimitExceeded(daily_limit)
        return out

    def get(self, task_id: str) -> JobRow | None:
        return self._first(self._table().select("*").eq("task_id", task_id).limit(1))

    def claim(self, task_id: str | None = None) -> JobRow | None:
        return self._first(self._rest.rpc("detection_claim", {"p_task_id": task_id}))

    def heartbeat(self, task_id: str, attempt: int, stage: str | None = None, progress: float | None = None) -> bool:
        values: dict[str, Any] = {"attempts": attempt}  # a no-op write: the trigger refreshes updated_at
        if stage is not None:
            values["stage"] = stage
        if progress is not None:
            values["progress"] = float(progress)
        q = self._update(task_id, values).eq("status", PROCESSING).eq("attempts", attempt)
        return self._first(q) is not None

    def complete(self, task_id: str, attempt: int, report) -> JobRow | None:
        values = {**result_columns(report), "completed_at": utcnow()}
        return self._first(self._update(task_id, values).eq("status", PROCESSING).eq("attempts", attempt))

    def fail(self, task_id: str, reason: str, code: str, attempt: int | None = None) -> JobRow | None:
        q = self._update(task_id, {**failure_columns(reason, code), "completed_at": utcnow()})
        if attempt is None:
            q = q.in_("status", [PENDING, PROCESSING])
        else:
            q = q.eq("status", PROCESSING).eq("attempts", attempt)
        return self._first(q)

    def find_completed_by_sha256(self, sha256: str, api_key_id: str | None = None) -> JobRow | None:
        q = self._table().select("*").eq("content_sha256", sha256).eq("status", COMPLETED)
        q = q.eq("api_key_id", api_key_id) if api_key_id is not None else q.is_("api_key_id", "null")
        q = q.order("completed_at", desc=True).limit(1)
        return self._first(q)

    def count_today(self, api_key_id: str, now: datetime | None = None) -> int:
        from postgrest import CountMethod

        q = (
            self._table().select("id", count=CountMethod.exact).eq("api_key_id", api_key_id)
            .gte("created_at", iso(utc_midnight(now))).limit(1)
        )
        return int(self._run(q).count or 0)

    def update_columns(self, task_id: str, values: dict[str, Any]) -> None:
        self._run(self._update(task_id, values))

    def requeue_stale(self, stale_after_s: float, max_attempts: int) -> list[JobRow]:
        return self._rows(
            self._rest.rpc(
                "detection_requeue_stale",
                {"p_stale_after_s": float(stale_after_s), "p_max_attempts": int(max_attempts)},
            )
        )

    def undelivered_callbacks(self, max_attempts: int) -> list[JobRow]:
        q = (
            self._table().select("*").in_("status", [COMPLETED, FAILED]).not_.is_("callback_url", "null")
            .is_("callback_delivered_at", "null").lt("callback_attempts", max_attempts).order("created_at")
        )
        return self._rows(q)

    def list_jobs(self, limit: int = 50, before: datetime | None = None, api_key_id: str | None = None) -> list[JobRow]:
        q = self._table().select("*")
        if before is not None:
            q = q.lt("created_at", iso(before))
        if api_key_id is not None:
            q = q.eq("api_key_id", api_key_id)
        return self._rows(q.order("created_at", desc=True, nullsfirst=False).order("id", desc=True)
                          .limit(max(0, int(limit))))

    def queue_counts(self) -> dict[str, int]:
        from postgrest import CountMethod

        out = {}
        for status in (PENDING, PROCESSING):
            q = self._table().select("id", count=CountMethod.exact).eq("status", status).limit(1)
            out[status] = int(self._run(q).count or 0)
        return out

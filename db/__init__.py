"""Job/result storage: ``connect(settings)`` picks the backend.

* Supabase when ``SUPABASE_URL`` and ``SUPABASE_SERVICE_KEY`` are set (production on Modal);
* direct PostgreSQL when ``DATABASE_URL`` is ``postgresql://...`` (self-hosting; migrations applied);
* embedded SQLite otherwise (``DATABASE_URL=sqlite:///path``, the ``make serve`` default).
"""

from __future__ import annotations

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
)

__all__ = [
    "COMPLETED",
    "FAILED",
    "PENDING",
    "PROCESSING",
    "DuplicateTaskError",
    "JobRow",
    "NewJob",
    "RateLimitExceeded",
    "Repository",
    "RepositoryError",
    "connect",
    "sqlite_path",
]


def sqlite_path(url: str) -> str:
    """``sqlite:///relative.db`` -> ``relative.db``, ``sqlite:////abs.db`` -> ``/abs.db``, ``sqlite://`` -> memory."""
    rest = url[len("sqlite://"):]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


def connect(settings) -> Repository:
    if settings.supabase_url and settings.supabase_service_key:
        from db.supabase import SupabaseRepository

        return SupabaseRepository(settings.supabase_url, settings.supabase_service_key)
    url = settings.database_url
    if url.startswith(("postgresql://", "postgres://")):
        from db.postgres import PostgresRepository

        return PostgresRepository(url)
    if url.startswith("sqlite:"):
        from db.sqlite import SqliteRepository

        return SqliteRepository(sqlite_path(url))
    raise ValueError(f"unsupported DATABASE_URL {url!r}: use sqlite:///path or postgresql://...")

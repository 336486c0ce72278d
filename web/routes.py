"""The result pages, served by the service app: the static UI at ``/`` and the JSON it reads.

    GET /                    the single-page UI (web/static/index.html; hash routes #/ and #/d/<task_id>)
    GET /static/...          its script and style sheet
    GET /labels.json         labels, orientation, colours and words of every bar (pipeline/labels.json)
    GET /history             rows of the caller's API key, newest first (?limit=, ?before= to page on)
    GET /history/{task_id}   one row with its detector_scores and model_metadata columns as stored
    GET /history/{task_id}/figures/{name}.png   one of its evidence figures (file storage, not the row)

Both JSON endpoints take the same bearer API keys as the API; a key listed in ``WEB_ADMIN_KEYS`` sees
every row (API uploads of all keys, WhatsApp requests with the number masked). Uploads go through the
API's own ``POST /detect``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from db.repository import JobRow, Repository, api_key_id, parse_dt
from pipeline.labels import LABELS_FILE
from service.figures import figure_store
from service.jobs import public_task_id, stored_task_id
from service.schemas import ServiceError
from service.security import ApiKey
from whatsapp.webhook import parse_origin

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_PAGE = 200


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def mask_number(wa_id: str) -> str:
    return f"+{wa_id[:2]}…{wa_id[-3:]}" if len(wa_id) > 6 else "+…"


def source_of(row: JobRow) -> dict[str, Any]:
    """Where the row came from, fit to show: API upload/URL, or WhatsApp with the number masked."""
    origin = parse_origin(row.source_url)
    if origin is not None:
        return {"channel": "whatsapp", "label": f"WhatsApp {mask_number(origin[0])}"}
    if row.source_url:
        return {"channel": "url", "label": row.source_url}
    return {"channel": "upload" if row.task_id else "seed", "label": row.source_name or row.file_url or ""}


def summary(row: JobRow, viewer: str | None = None) -> dict[str, Any]:
    """One history item; ``viewer`` (an API key id) sees its own tasks by the ids it chose, an admin sees other
    keys' tasks by their stored (scoped) ids, which is what ``/history/{task_id}`` then accepts."""
    ds = row.detector_scores or {}
    return {
        "id": row.id,
        "task_id": public_task_id(row.task_id) if row.api_key_id == viewer else row.task_id,
        "status": row.status,
        "stage": row.stage,
        "progress": row.progress,
        "detection_result": row.detection_result,
        "confidence_score": row.confidence_score,
        "verdict": ds.get("verdict"),
        "final_weighted_score": ds.get("final_weighted_score"),
        "has_detector_scores": bool(ds),
        "file_type": row.file_type,
        "source_name": row.source_name,
        "source": source_of(row),
        "reason": row.reason,
        "error_code": row.error_code,
        "cached": row.cached_from is not None,
        "created_at": _iso(row.created_at),
        "completed_at": _iso(row.completed_at),
    }


def detail(row: JobRow, viewer: str | None = None) -> dict[str, Any]:
    return {**summary(row, viewer), "detector_scores": row.detector_scores or {},
            "model_metadata": row.model_metadata or {}, "report_summary": row.report_summary or {}}


def create_router(settings, repo: Repository) -> APIRouter:
    router = APIRouter(tags=["web"])
    admins = {api_key_id(k.partition(":")[0].strip()) for k in settings.web_admin_keys if k.strip()}

    def caller(request: Request) -> ApiKey:
        key = request.app.state.api_keys.authenticate(request.headers.get("authorization"))
        if key is None:
            raise ServiceError(401, "unauthorized", "send Authorization: Bearer <API key>",
                               {"WWW-Authenticate": "Bearer"})
        return key

    @router.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @router.get("/labels.json", include_in_schema=False)
    def labels():
        return FileResponse(LABELS_FILE, media_type="application/json", headers={"Cache-Control": "no-cache"})

    @router.get("/history", summary="History of detections (newest first)")
    def history(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        before: Annotated[str | None, Query(description="created_at of the last row of the previous page")] = None,
    ):
        key = caller(request)
        try:
            cursor = parse_dt(before)
        except ValueError as exc:
            raise ServiceError(422, "invalid_request", f"before: not an ISO date-time: {before!r}") from exc
        rows = repo.list_jobs(limit=limit, before=cursor, api_key_id=None if key.key_id in admins else key.key_id)
        next_before = _iso(rows[-1].created_at) if len(rows) == limit and rows[-1].created_at else None
        return {"items": [summary(r, key.key_id) for r in rows], "next_before": next_before,
                "admin": key.key_id in admins}

    @router.get("/history/{task_id}", summary="One detection with its stored scores")
    def history_item(task_id: str, request: Request):
        key = caller(request)
        row = repo.get(stored_task_id(task_id, key)) or repo.get(task_id)
        if row is None or (key.key_id not in admins and row.api_key_id != key.key_id):
            raise ServiceError(404, "not_found", f"no detection {task_id!r}")
        return detail(row, key.key_id)

    figures = figure_store(settings, repo)

    @router.get("/history/{task_id}/figures/{name}.png", summary="One evidence figure of a detection (PNG)")
    def history_figure(task_id: str, name: str, request: Request):
        key = caller(request)
        row = repo.get(stored_task_id(task_id, key)) or repo.get(task_id)
        if row is None or (key.key_id not in admins and row.api_key_id != key.key_id):
            raise ServiceError(404, "not_found", f"no detection {task_id!r}")
        png = figures.get(row.task_id, name) or (figures.get(row.cached_from, name) if row.cached_from else None)
        if png is None:
            raise ServiceError(404, "not_found", f"detection {task_id!r} has no figure {name!r}")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return router


def mount(app: FastAPI, settings, repo: Repository) -> None:
    """Serve the UI and its JSON from ``app`` (the routes at / and /history, the assets at /static)."""
    app.include_router(create_router(settings, repo))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")

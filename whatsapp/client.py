"""The seed's flow, for the customer's existing WhatsApp bot (its own webhook, its own rows).

    1. the bot stores the incoming file somewhere reachable (Supabase Storage...) and creates its
       ``detection_history`` row, ``record_id``, as pending (what the seed did);
    2. ``request_video_detection(file_url, record_id, callback_url)`` -> ``POST /detect_video`` with
       ``task_id = record_id`` (idempotent: a retried call returns the same task, never a second analysis);
    3. the service downloads the file, analyses it and POSTs the signed final status to ``callback_url``;
    4. the bot's callback endpoint passes the raw body and headers to ``CallbackHandler.handle``: the
       signature is checked (``CALLBACK_SECRET``), the row gets the seed's columns (``update_row``) and
       the user gets the verdict text the built-in webhook sends (``notify``).

``supabase_row_updater`` and ``graph_notifier`` are ready-made ``update_row`` / ``notify`` functions.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from service.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from whatsapp import messages
from whatsapp.graph import GraphClient

logger = logging.getLogger(__name__)

UpdateRow = Callable[[str, dict[str, Any]], None]
Notify = Callable[[str, str], None]
SEEN_MAX = 10_000


class DetectionClient:
    """HTTP client of the detection API (bearer API key)."""

    def __init__(self, api_url: str, api_key: str, timeout_s: float = 60.0, http: httpx.Client | None = None):
        self.api_url = api_url.rstrip("/")
        self._http = http or httpx.Client(timeout=httpx.Timeout(timeout_s))
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def request_video_detection(self, file_url: str, record_id: str, callback_url: str | None = None) -> dict:
        """Queue ``file_url`` as task ``record_id``; the result is POSTed to ``callback_url``. Returns the API's
        answer (``task_id``, ``status``, and the report at once when the same bytes were analysed before).
        Raises ``httpx.HTTPStatusError`` on refusal (its JSON body says why: ``error.code``/``message``)."""
        body: dict[str, Any] = {"video_url": file_url, "task_id": record_id}
        if callback_url:
            body["callback_url"] = callback_url
        resp = self._http.post(f"{self.api_url}/detect_video", json=body, headers=self._headers)
        resp.raise_for_status()
        return resp.json()

    def status(self, record_id: str) -> dict:
        resp = self._http.get(f"{self.api_url}/status/{record_id}", headers=self._headers)
        resp.raise_for_status()
        return resp.json()

    def close(self) -> None:
        self._http.close()


def request_video_detection(file_url: str, record_id: str, callback_url: str | None = None, *,
                            api_url: str | None = None, api_key: str | None = None) -> dict:
    """The seed's function: ``DETECTOR_API_URL`` and ``DETECTOR_API_KEY`` come from the environment."""
    url = api_url or os.environ.get("DETECTOR_API_URL")
    key = api_key or os.environ.get("DETECTOR_API_KEY")
    if not url or not key:
        raise RuntimeError("set DETECTOR_API_URL and DETECTOR_API_KEY (or pass api_url= and api_key=)")
    client = DetectionClient(url, key)
    try:
        return client.request_video_detection(file_url, record_id, callback_url)
    finally:
        client.close()


def row_columns(payload: dict[str, Any], full: bool = False) -> dict[str, Any]:
    """The seed's columns for a final status payload (``detection_result`` in the seed's vocabulary,
    ``confidence_score`` 0-100, ``detector_scores``, ``model_metadata``); ``full`` adds the migration's
    ``status``/``reason``/``error_code``/``completed_at`` for tables that have them."""
    report = payload.get("report") or {}
    cols: dict[str, Any] = {
        "detection_result": payload.get("detection_result") or payload.get("status"),
        "confidence_score": payload.get("confidence_score"),
        "detector_scores": report.get("detector_scores") or {},
        "model_metadata": report.get("model_metadata") or {},
    }
    if full:
        cols.update(status=payload.get("status"), reason=payload.get("reason"), error_code=payload.get("error_code"),
                    completed_at=payload.get("completed_at"))
    return cols


def _header(headers: Mapping[str, str], name: str) -> str | None:
    if name in headers:
        return headers[name]
    low = name.lower()
    return next((v for k, v in headers.items() if k.lower() == low), None)


class CallbackHandler:
    """Verifies and applies the service's result callback. Framework-free: pass the RAW body bytes and the
    request headers; answer the returned status code (non-2xx makes the service retry later)."""

    def __init__(self, secret: str, update_row: UpdateRow | None = None, notify: Notify | None = None,
                 tolerance_s: float = 300.0, full_columns: bool = False):
        if not secret:
            raise ValueError("the callback secret (the service's CALLBACK_SECRET) is required")
        self.secret = secret
        self.update_row = update_row
        self.notify = notify
        self.tolerance_s = tolerance_s
        self.full_columns = full_columns
        self._notified: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        if not verify_signature(self.secret, _header(headers, TIMESTAMP_HEADER), body,
                                _header(headers, SIGNATURE_HEADER), tolerance_s=self.tolerance_s):
            logger.warning("detection callback with a missing, wrong or stale signature refused")
            return 401, {"error": "bad signature"}
        try:
            payload = json.loads(body)
            record_id = str(payload["task_id"])
            status = payload["status"]
        except (ValueError, KeyError, TypeError):
            return 400, {"error": "not a detection status"}
        if status not in ("completed", "failed"):
            return 200, {"record_id": record_id, "ignored": status}
        if self.update_row is not None:
            try:
                self.update_row(record_id, row_columns(payload, self.full_columns))
            except Exception:  # 5xx: the service retries the delivery
                logger.exception("updating row %s failed", record_id)
                return 503, {"error": "could not update the row"}
        if self.notify is not None:
            with self._lock:
                first = record_id not in self._notified  # deliveries can repeat: tell the user once
            if first:
                try:
                    self.notify(record_id, messages.status_text(payload))
                except Exception:
                    logger.exception("notifying the user of %s failed", record_id)
                    return 503, {"error": "could not notify the user"}
                with self._lock:
                    self._notified[record_id] = None
                    while len(self._notified) > SEEN_MAX:
                        self._notified.popitem(last=False)
        return 200, {"record_id": record_id, "status": status}


def supabase_row_updater(client, table: str = "detection_history", key_column: str = "id") -> UpdateRow:
    """``update_row`` for a supabase-py client: ``UPDATE table SET ... WHERE key_column = record_id``."""

    def update(record_id: str, columns: dict[str, Any]) -> None:
        client.table(table).update(columns).eq(key_column, record_id).execute()

    return update


def graph_notifier(graph: GraphClient, recipient_of: Callable[[str], str | tuple[str, str | None] | None]) -> Notify:
    """``notify`` through the Graph API: ``recipient_of(record_id)`` gives the user's WhatsApp number (and
    optionally the message id to quote), e.g. from the bot's own row."""

    def notify(record_id: str, text: str) -> None:
        who = recipient_of(record_id)
        if who is None:
            logger.warning("no WhatsApp recipient for record %s; verdict not sent", record_id)
            return
        to, quote = (who, None) if isinstance(who, str) else who
        graph.send_text(to, text, reply_to=quote)

    return notify

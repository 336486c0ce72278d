"""Signed result callbacks (webhooks).

When a request carries ``callback_url``, the final status (the same JSON ``GET /status/{task_id}``
returns) is POSTed there once the job is completed or failed, with two headers:

* ``X-Signature-Timestamp``: Unix time in seconds when it was signed;
* ``X-Signature``: ``sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>`` where ``body`` is the
  exact raw request body (UTF-8 JSON bytes) and ``secret`` is the shared ``CALLBACK_SECRET``.

How a receiver verifies (any language; in Python just call ``verify_signature``):

1. read the RAW body bytes (do not re-serialise parsed JSON: whitespace/order would change);
2. recompute ``hmac_sha256(secret, timestamp + "." + body)`` as lowercase hex and compare it with the
   header after ``sha256=`` using a constant-time comparison;
3. refuse timestamps older/newer than a tolerance (5 minutes) so a captured request cannot be replayed;
4. deduplicate on ``task_id``: a delivery can arrive more than once (retries after timeouts).

Delivery is retried with exponential backoff (``callback_backoff_s`` × 2^n) on network errors, 5xx,
408 and 429, up to ``callback_max_attempts``; every attempt is recorded in the row
(``callback_attempts``, ``callback_last_status``, ``callback_last_error``, ``callback_delivered_at``).
Callback URLs pass the same SSRF policy as downloads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from service.security import SecurityError, UrlPolicy, post_pinned

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
RETRY_STATUSES = frozenset({408, 425, 429})


def canonical_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``."""
    body_bytes = body.encode() if isinstance(body, str) else bytes(body)
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body_bytes, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str,
    timestamp: str | int | None,
    body: bytes | str,
    signature: str | None,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when ``signature`` (the ``X-Signature`` header) signs ``body`` at ``timestamp`` with ``secret``
    and the timestamp is within ``tolerance_s`` of now. Constant-time comparison."""
    if not secret or timestamp is None or not signature:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


def signed_headers(secret: str, body: bytes, task_id: str | None = None, now: float | None = None) -> dict[str, str]:
    ts = int(time.time() if now is None else now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "deepfake-detector-callback/1.0",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(secret, ts, body),
    }
    if task_id:
        headers["X-Task-Id"] = task_id
    return headers


def deliver(
    url: str,
    payload: dict[str, Any],
    secret: str,
    policy: UrlPolicy,
    *,
    max_attempts: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 10.0,
    record: Callable[[int, int | None, str | None, bool], None] | None = None,
    first_attempt: int = 1,
    sleep: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
) -> bool:
    """POST ``payload`` signed; retry with exponential backoff. ``record(attempt, status, error, delivered)``
    is called after every attempt. Returns True once a 2xx answer was received. Setting ``stop`` (server
    shutdown) ends the backoff wait and the loop; undelivered callbacks are retried after the restart."""
    if sleep is None:
        sleep = stop.wait if stop is not None else time.sleep
    body = canonical_body(payload)
    task_id = payload.get("task_id")
    for attempt in range(first_attempt, max_attempts + 1):
        status: int | None = None
        error: str | None = None
        try:
            # signed per attempt: the timestamp is fresh for the receiver's replay window
            status = post_pinned(url, body, signed_headers(secret, body, task_id), policy, timeout_s)
            ok = 200 <= status < 300
            if not ok:
                error = f"HTTP {status}"
        except SecurityError as exc:  # the URL became forbidden (DNS changed): retrying will not help
            ok, error = False, exc.message
            logger.warning("callback for %s refused: %s", task_id, error)
            if record:
                record(attempt, None, error, False)
            return False
        except Exception as exc:  # network errors: retried
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if record:
            try:
                record(attempt, status, error, ok)
            except Exception:
                logger.exception("could not record callback attempt for %s", task_id)
        if ok:
            logger.info("callback for %s delivered (HTTP %s, attempt %d)", task_id, status, attempt)
            return True
        retryable = status is None or status >= 500 or status in RETRY_STATUSES
        logger.warning("callback for %s attempt %d failed: %s", task_id, attempt, error)
        if not retryable or attempt >= max_attempts:
            return False
        sleep(backoff_s * (2 ** (attempt - first_attempt)))
        if stop is not None and stop.is_set():
            return False
    return False

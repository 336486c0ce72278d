"""Graph API client for the WhatsApp Cloud API: media id -> URL -> bytes, and text replies.

* ``GET {graph}/{media-id}`` answers ``{url, mime_type, file_size, sha256}``; the URL is short-lived
  (minutes) and needs the same bearer token;
* the bytes are streamed to disk with the size cap enforced on ``file_size``, ``Content-Length`` and
  the bytes actually received; the download goes through the service's SSRF policy (``UrlPolicy``),
  address-pinned, with the configured Graph host itself as the only non-public endpoint allowed;
* ``POST {graph}/{phone-number-id}/messages`` sends a text, quoting the user's message when given.

API calls are retried on network errors, 429 and 5xx (Meta's transient answers).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from service.security import SecurityError, TooLarge, UrlPolicy, download, resolve_host

logger = logging.getLogger(__name__)

MAX_TEXT = 4096  # WhatsApp's limit on a text message body
MAX_CAPTION = 1024  # and on a media caption
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 3


class GraphError(Exception):
    """A Graph API call or media download failed; ``message`` says how (for logs, not for users)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class MediaTooLarge(GraphError):
    def __init__(self, size: int | None, limit: int):
        what = f"{size / 1e6:.1f} MB" if size is not None else "larger than the limit"
        super().__init__(f"media is {what}; the limit is {limit / 1e6:.0f} MB", 413)
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class MediaInfo:
    media_id: str
    url: str
    mime_type: str | None
    file_size: int | None
    sha256: str | None


@dataclass(frozen=True)
class MediaFile:
    path: Path
    size: int
    sha256: str
    mime_type: str | None


def graph_endpoints(base_url: str) -> frozenset[tuple[str, int]]:
    """The (address, port) pairs of the configured Graph host: trusted configuration, so its media URLs
    pass the SSRF policy even when it is a loopback fake or an on-prem proxy."""
    parts = urlsplit(base_url)
    if not parts.hostname:
        return frozenset()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        return frozenset((addr, port) for addr in resolve_host(parts.hostname, port))
    except OSError as exc:  # no DNS at startup: media URLs then have to be public addresses
        logger.warning("cannot resolve the Graph host %s: %s", parts.hostname, exc)
        return frozenset()


def _error_text(status: int, body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        err = json.loads(text).get("error") or {}
        return f"HTTP {status}: {err.get('message') or text[:200]}"
    except (ValueError, AttributeError):
        return f"HTTP {status}: {text[:200]}"


def _graph_message(resp: httpx.Response) -> str:
    return _error_text(resp.status_code, resp.content)


class GraphClient:
    def __init__(
        self,
        base_url: str,
        access_token: str,
        phone_number_id: str | None = None,
        timeout_s: float = 30.0,
        download_policy: UrlPolicy | None = None,
        retries: int = 2,
        backoff_s: float = 0.5,
    ):
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.timeout_s = timeout_s
        self.download_policy = download_policy or UrlPolicy(allowed_endpoints=graph_endpoints(self.base_url))
        self.retries = retries
        self.backoff_s = backoff_s
        # trust_env=False: the configured URL is called as it is, never through an environment proxy
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s), trust_env=False, follow_redirects=False)

    @classmethod
    def from_settings(cls, settings) -> GraphClient:
        return cls(
            settings.whatsapp_graph_url, settings.whatsapp_access_token or "", settings.whatsapp_phone_number_id,
            timeout_s=settings.whatsapp_timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def _call(self, method: str, path: str, **kw) -> dict[str, Any]:
        url = f"{self.base_url}/{path.lstrip('/')}"
        last = ""
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, url, headers=self._auth, **kw)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                status = None
            else:
                if resp.status_code < 300:
                    try:
                        return resp.json()
                    except ValueError as exc:
                        raise GraphError(f"{method} {path}: not JSON: {resp.text[:200]}", resp.status_code) from exc
                last, status = _graph_message(resp), resp.status_code
                if status not in RETRY_STATUSES:
                    raise GraphError(f"{method} {path}: {last}", status)
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise GraphError(f"{method} {path}: {last}", status)

    # -- media ------------------------------------------------------------------------------------
    def media_info(self, media_id: str) -> MediaInfo:
        params = {"phone_number_id": self.phone_number_id} if self.phone_number_id else None
        data = self._call("GET", media_id, params=params)
        if not data.get("url"):
            raise GraphError(f"media {media_id}: the Graph API answered without a URL")
        size = data.get("file_size")
        return MediaInfo(media_id, data["url"], data.get("mime_type"), int(size) if size is not None else None,
                         data.get("sha256"))

    def download(self, info: MediaInfo, dest_dir: Path, max_bytes: int, total_timeout_s: float = 120.0) -> MediaFile:
        """Stream the media into a new file under ``dest_dir`` (``service.security.download``: SSRF checks,
        address pinning, size cap). Raises MediaTooLarge / GraphError."""
        if info.file_size is not None and info.file_size > max_bytes:
            raise MediaTooLarge(info.file_size, max_bytes)
        first_host = urlsplit(info.url).hostname

        def headers(target) -> dict[str, str]:  # the token never leaves the host Meta pointed us at
            return {"User-Agent": "deepfake-detector-whatsapp/1.0", **(self._auth if target.host == first_host else {})}

        try:
            d = download(info.url, dest_dir, self.download_policy, max_bytes, timeout_s=self.timeout_s,
                         total_timeout_s=total_timeout_s, max_redirects=MAX_REDIRECTS, headers=headers, prefix="wa")
        except TooLarge as exc:  # Meta's file_size or Content-Length may be absent or wrong
            raise MediaTooLarge(exc.size, max_bytes) from exc
        except SecurityError as exc:
            status = getattr(exc, "http_status", None)
            detail = _error_text(status, getattr(exc, "body", b"")) if status else exc.message
            raise GraphError(f"media download: {detail}", status) from exc
        return MediaFile(d.path, d.size, d.sha256, d.content_type or info.mime_type)

    # -- messages ---------------------------------------------------------------------------------
    def send_image(self, to: str, png: bytes, caption: str | None = None, reply_to: str | None = None) -> str | None:
        """Upload ``png`` to the Graph media endpoint and send it to ``to`` as an image message."""
        if not self.phone_number_id:
            raise GraphError("WHATSAPP_PHONE_NUMBER_ID is not configured")
        media = self._call("POST", f"{self.phone_number_id}/media",
                           files={"file": ("evidence.png", png, "image/png")},
                           data={"messaging_product": "whatsapp", "type": "image/png"})
        if not media.get("id"):
            raise GraphError("the media upload answered without an id")
        image: dict[str, Any] = {"id": media["id"]}
        if caption:
            image["caption"] = caption[:MAX_CAPTION]
        payload: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
                                   "type": "image", "image": image}
        if reply_to:
            payload["context"] = {"message_id": reply_to}
        data = self._call("POST", f"{self.phone_number_id}/messages", json=payload)
        ids = [m.get("id") for m in data.get("messages") or []]
        return ids[0] if ids else None

    def send_text(self, to: str, body: str, reply_to: str | None = None) -> str | None:
        """Send ``body`` to the WhatsApp user ``to``; returns the new message's id."""
        if not self.phone_number_id:
            raise GraphError("WHATSAPP_PHONE_NUMBER_ID is not configured")
        if len(body) > MAX_TEXT:
            body = body[: MAX_TEXT - 1] + "…"
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": False, "body": body},
        }
        if reply_to:
            payload["context"] = {"message_id": reply_to}
        data = self._call("POST", f"{self.phone_number_id}/messages", json=payload)
        ids = [m.get("id") for m in data.get("messages") or []]
        return ids[0] if ids else None

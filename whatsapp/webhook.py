"""WhatsApp Cloud API webhook, mounted in the service app.

    GET  /whatsapp/webhook       Meta's verification: hub.mode=subscribe, hub.verify_token, hub.challenge
    POST /whatsapp/webhook       events, signed: X-Hub-Signature-256 = sha256=HMAC-SHA256(app secret, raw body)
    POST /whatsapp/job-callback  the service's signed result callback (X-Signature): sends the verdict

An event is verified, answered 200 at once (Meta retries slow answers) and handled in the background:

* video, image, audio / voice note, or one of those sent as a document: the media is fetched through the
  Graph API (size-capped), the user is told the analysis started, and the file is queued like an API
  upload (``JobService.submit``: a ``detection_history`` row, pending -> processing -> completed). The
  row's ``callback_url`` is this app's ``/whatsapp/job-callback``: the result comes back through the
  service's persisted, retried, signed callback, so it also arrives when the job ran in another
  container (Modal) or finished after a restart;
* text gets the help text; other message types a short "cannot check this" reply; nothing is silent.

Deduplication (Meta re-delivers events): the row's task_id is ``wa:<message id>``, unique in the
database, so a re-delivered media message (also after a restart) is recognised and ignored; refused
media (too large, not downloadable, not analysable) gets a ``failed`` row for the same reason. Texts and
unsupported types create no row and are deduplicated in memory.

Quota: each WhatsApp number counts as its own key (``api_key_id`` = hash of ``whatsapp:<number>``),
``WHATSAPP_DAILY_LIMIT_PER_USER`` analyses per UTC day, checked atomically with the insert.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import mimetypes
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from db.repository import FAILED, DuplicateTaskError, NewJob, Repository, api_key_id, seconds_to_utc_midnight, utcnow
from service.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from service.jobs import JobService, StoredMedia
from service.schemas import TASK_ID_PATTERN, ServiceError, error_example
from service.security import ApiKey
from whatsapp import messages
from whatsapp.graph import GraphClient, GraphError, MediaTooLarge

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/whatsapp/webhook"
CALLBACK_PATH = "/whatsapp/job-callback"
WEBHOOK_BODY_LIMIT = 1 << 20  # Meta's event batches are a few KB
CALLBACK_BODY_LIMIT = 32 << 20  # a status with its report (face thumbnails, timelines)
SIGNATURE = "X-Hub-Signature-256"
ORIGIN_SCHEME = "whatsapp"
MEDIA_TYPES = {"video": "video", "image": "image", "audio": "audio"}  # message type -> kind analysed
IGNORED_TYPES = {"reaction", "system", "request_welcome"}  # not a request from the user: no reply
TEXT_TYPES = {"text", "button", "interactive"}
TYPE_WORDS = {"sticker": "stickers", "location": "locations", "contacts": "contact cards", "order": "orders"}
EXTENSIONS = {"video/3gpp": ".3gp", "audio/ogg": ".ogg", "audio/amr": ".amr", "audio/opus": ".opus"}
SEEN_MAX = 10_000


# ----------------------------------------------------------------------------------------------
# Small pure helpers
# ----------------------------------------------------------------------------------------------
def hub_signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(app_secret: str | None, body: bytes, header: str | None) -> bool:
    """Constant-time check of ``X-Hub-Signature-256`` against the raw body."""
    if not app_secret or not header:
        return False
    return hmac.compare_digest(hub_signature(app_secret, body).encode(), header.strip().encode())


def task_id_for(message_id: str) -> str:
    """The row's task_id: ``wa:<message id>`` (unique: the persisted dedupe key), hashed if it does not fit."""
    tid = f"wa:{message_id}"
    if re.fullmatch(TASK_ID_PATTERN, tid):
        return tid
    return "wa:" + hashlib.sha256(message_id.encode()).hexdigest()[:40]


def origin_url(wa_id: str, message_id: str) -> str:
    """Where a row came from (its ``source_url``): the number to answer and the message to quote."""
    return f"{ORIGIN_SCHEME}://{quote(wa_id, safe='')}/{quote(message_id, safe='')}"


def parse_origin(url: str | None) -> tuple[str, str] | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != ORIGIN_SCHEME or not parts.netloc:
        return None
    return unquote(parts.netloc), unquote(parts.path.lstrip("/"))


def user_key(wa_id: str) -> ApiKey:
    """A WhatsApp number as a key: its rows are counted for the daily limit like an API key's."""
    return ApiKey(api_key_id(f"whatsapp:{wa_id}"), None)


@dataclass(frozen=True)
class MediaRequest:
    kind: str  # video | image | audio
    media_id: str
    mime_type: str | None
    source_name: str


def media_request(msg: dict[str, Any]) -> MediaRequest | str | None:
    """The media to analyse in ``msg``; a phrase naming what cannot be checked; None for no media at all."""
    mtype = msg.get("type")
    if mtype in MEDIA_TYPES or mtype == "document":
        media = msg.get(mtype) or {}
        mime = (media.get("mime_type") or "").split(";")[0].strip().lower() or None
        if mtype == "document":
            major = (mime or "").split("/")[0]
            if major not in MEDIA_TYPES:
                return f"this document ({mime or 'unknown type'})"
            kind = MEDIA_TYPES[major]
        else:
            kind = MEDIA_TYPES[mtype]
        if not media.get("id"):
            return "this message (it has no file attached)"
        name = media.get("filename")
        if not name:
            ext = EXTENSIONS.get(mime or "") or (mimetypes.guess_extension(mime) if mime else None) or ""
            name = f"whatsapp-{kind}{ext}"
        return MediaRequest(kind, str(media["id"]), mime, name)
    return None


# ----------------------------------------------------------------------------------------------
# The bot
# ----------------------------------------------------------------------------------------------
class WhatsAppBot:
    """Handles verified events and result callbacks. ``service``: the app's JobService (its repository,
    pipelines, policies and dispatcher are shared; the per-key quota becomes the per-user limit)."""

    def __init__(self, settings, service: JobService, graph: GraphClient | None = None):
        self.settings = settings
        self.repo: Repository = service.repo
        self.main = service
        wa_settings = settings.model_copy(update={"daily_limit_per_key": settings.whatsapp_daily_limit_per_user})
        # inline callbacks: a cached result is delivered inside submit(), i.e. after the "analysing" reply
        self.service = JobService(wa_settings, service.repo, service.pipelines, url_policy=service.url_policy,
                                  callback_policy=service.callback_policy, inline_callbacks=True)
        if graph is None and settings.whatsapp_access_token:
            graph = GraphClient.from_settings(settings)
        self.graph = graph
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._notified: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def daily_limit(self) -> int:
        return self.settings.whatsapp_daily_limit_per_user

    @property
    def max_bytes(self) -> int:
        return min(self.settings.whatsapp_max_media_bytes, self.settings.max_file_bytes)

    @staticmethod
    def _first_time(seen: OrderedDict[str, None], key: str, lock: threading.Lock) -> bool:
        with lock:
            if key in seen:
                return False
            seen[key] = None
            while len(seen) > SEEN_MAX:
                seen.popitem(last=False)
            return True

    def reply(self, to: str, text: str, reply_to: str | None = None) -> bool:
        if self.graph is None:
            logger.error("cannot reply to a WhatsApp message: WHATSAPP_ACCESS_TOKEN is not configured")
            return False
        try:
            self.graph.send_text(to, text, reply_to=reply_to)
            return True
        except GraphError as exc:
            logger.error("WhatsApp reply to %s failed: %s", _mask(to), exc.message)
            return False

    # -- events -------------------------------------------------------------------------------------
    def handle_event(self, event: dict[str, Any], callback_url: str) -> None:
        if event.get("object") != "whatsapp_business_account":
            logger.info("ignoring webhook object %r", event.get("object"))
            return
        ours = self.settings.whatsapp_phone_number_id
        for entry in event.get("entry") or []:
            for change in entry.get("changes") or []:
                value = change.get("value") or {}
                if change.get("field") != "messages" or not value.get("messages"):
                    continue  # delivery/read statuses, template updates...
                number = (value.get("metadata") or {}).get("phone_number_id")
                if ours and number and str(number) != str(ours):
                    logger.warning("ignoring messages to another business number (%s)", number)
                    continue
                for msg in value["messages"]:
                    try:
                        self.handle_message(msg, callback_url)
                    except Exception:  # one bad message must not drop the rest of the batch
                        logger.exception("WhatsApp message %s could not be handled", msg.get("id"))
                        if msg.get("from"):
                            self.reply(msg["from"], messages.unavailable_text(), msg.get("id"))

    def handle_message(self, msg: dict[str, Any], callback_url: str) -> None:
        mid, wa_id, mtype = msg.get("id"), msg.get("from"), msg.get("type")
        if not mid or not wa_id:
            return
        if not self._first_time(self._seen, mid, self._lock):
            logger.info("WhatsApp message %s delivered again; ignored", mid)
            return
        if mtype in IGNORED_TYPES:
            return
        if mtype in TEXT_TYPES:
            self.reply(wa_id, messages.help_text(self.daily_limit), mid)
            return
        req = media_request(msg)
        if not isinstance(req, MediaRequest):
            what = req or TYPE_WORDS.get(mtype or "") or "this kind of message"
            logger.info("WhatsApp message %s: unsupported %s", mid, mtype)
            self.reply(wa_id, messages.unsupported_text(what), mid)
            return
        self.analyse(wa_id, mid, req, callback_url)

    def analyse(self, wa_id: str, mid: str, req: MediaRequest, callback_url: str) -> None:
        task_id = task_id_for(mid)
        if self.repo.get(task_id) is not None:  # re-delivered after a restart
            logger.info("WhatsApp message %s already has task %s; ignored", mid, task_id)
            return
        key = user_key(wa_id)
        if self.daily_limit > 0 and self.repo.count_today(key.key_id) >= self.daily_limit:
            self.reply(wa_id, messages.limit_reached_text(self.daily_limit, seconds_to_utc_midnight()), mid)
            return
        try:
            self.service.check_callback(callback_url)
        except ServiceError as exc:  # misconfiguration: say so in the log, apologise to the user
            logger.error("WhatsApp results cannot be delivered to %s: %s", callback_url, exc.message)
            self.reply(wa_id, messages.unavailable_text(), mid)
            return
        if self.graph is None:
            logger.error("WhatsApp media cannot be fetched: WHATSAPP_ACCESS_TOKEN is not configured")
            return
        origin = origin_url(wa_id, mid)
        try:
            info = self.graph.media_info(req.media_id)
            if info.file_size is not None and info.file_size > self.max_bytes:
                raise MediaTooLarge(info.file_size, self.max_bytes)
        except GraphError as exc:
            self._refuse(wa_id, mid, req, origin, exc)
            return
        self.reply(wa_id, messages.analysing_text(req.kind), mid)
        try:
            media = self.graph.download(info, self.service.uploads_dir, self.max_bytes,
                                        total_timeout_s=self.settings.download_total_timeout_s)
        except GraphError as exc:
            self._refuse(wa_id, mid, req, origin, exc)
            return
        stored = StoredMedia(media.path, media.size, media.sha256, req.source_name, source_url=origin)
        self.service.dispatcher = self.main.dispatcher
        try:
            row, cached = self.service.submit(stored, key, callback_url, task_id)
        except ServiceError as exc:
            if exc.code == "task_id_taken":  # a concurrent delivery of the same message won
                return
            if exc.code == "rate_limited":
                self.reply(wa_id, messages.limit_reached_text(self.daily_limit, seconds_to_utc_midnight()), mid)
                return
            self._record_failure(task_id, req, origin, exc.message, exc.code)
            self.reply(wa_id, messages.analysis_failed_text(exc.message), mid)
            return
        logger.info("WhatsApp message %s -> task %s (%s%s)", mid, row.task_id, req.kind, ", cached" if cached else "")

    def _refuse(self, wa_id: str, mid: str, req: MediaRequest, origin: str, exc: GraphError) -> None:
        too_large = isinstance(exc, MediaTooLarge)
        logger.warning("WhatsApp media %s refused: %s", req.media_id, exc.message)
        if not self._record_failure(task_id_for(mid), req, origin, exc.message,
                                    "file_too_large" if too_large else "download_failed"):
            return
        text = messages.too_large_text(exc.size, exc.limit) if too_large else messages.download_failed_text()
        self.reply(wa_id, text, mid)

    def _record_failure(self, task_id: str, req: MediaRequest, origin: str, reason: str, code: str) -> bool:
        """A failed row: the refusal is visible in the history and a re-delivery is recognised. False when
        the row exists already (another delivery of the message handled it)."""
        try:
            self.repo.create_job(NewJob(
                task_id=task_id, status=FAILED, file_type=req.kind, source_url=origin, source_name=req.source_name,
                reason=reason, error_code=code, completed_at=utcnow(),
            ))
        except DuplicateTaskError:
            return False
        except Exception:  # the reply matters more than the record
            logger.exception("could not record the refused WhatsApp media %s", task_id)
        return True

    # -- results ----------------------------------------------------------------------------------
    def notify_result(self, task_id: str) -> int:
        """Send the verdict of a finished WhatsApp task. Returns an HTTP status for the callback sender:
        200 sent (or sent before), 404 not a WhatsApp task, 409 not finished, 502 Graph failed (retried)."""
        row = self.repo.get(task_id)
        origin = parse_origin(row.source_url if row else None)
        if row is None or origin is None:
            return 404
        if not row.is_final:
            return 409
        if task_id in self._notified:
            return 200
        wa_id, mid = origin
        text = messages.status_text({"status": row.status, "reason": row.reason, "report": row.report_dict()})
        if self.graph is None:
            logger.error("cannot send the verdict of %s: WHATSAPP_ACCESS_TOKEN is not configured", task_id)
            return 502
        try:
            self.graph.send_text(wa_id, text, reply_to=mid)
        except GraphError as exc:
            logger.error("verdict of %s not sent: %s", task_id, exc.message)
            return 502
        self._first_time(self._notified, task_id, self._lock)
        self._send_summary_image(row, wa_id, mid)
        logger.info("verdict of %s sent to %s", task_id, _mask(wa_id))
        return 200


    def _send_summary_image(self, row, wa_id: str, mid: str) -> None:
        """The evidence in one picture after the verdict text (when the analysis drew one); the verdict has been
        delivered already, so a failure here is logged, not retried."""
        if row.status != "completed":
            return
        png = self.service.figure(row, "summary")
        if png is None:
            return
        try:
            self.graph.send_image(wa_id, png, caption=messages.SUMMARY_CAPTION, reply_to=mid)
        except GraphError as exc:
            logger.error("evidence picture of %s not sent: %s", row.task_id, exc.message)


def _mask(wa_id: str) -> str:
    return wa_id[:3] + "…" + wa_id[-2:] if len(wa_id) > 6 else "…"


# ----------------------------------------------------------------------------------------------
# Router
# ----------------------------------------------------------------------------------------------
def create_router(settings, service: JobService, graph: GraphClient | None = None) -> APIRouter:
    bot = WhatsAppBot(settings, service, graph)
    router = APIRouter(tags=["whatsapp"])
    router.bot = bot  # type: ignore[attr-defined]  # tests and app.state reach the bot through the router

    if not settings.whatsapp_app_secret:
        logger.info("WHATSAPP_APP_SECRET not set: WhatsApp webhook events are refused (401)")

    @router.get(WEBHOOK_PATH, response_class=PlainTextResponse, summary="Meta's webhook verification")
    def verify(
        mode: str | None = Query(None, alias="hub.mode"),
        token: str | None = Query(None, alias="hub.verify_token"),
        challenge: str | None = Query(None, alias="hub.challenge"),
    ):
        expected = settings.whatsapp_verify_token
        if mode == "subscribe" and expected and token and challenge is not None and \
                hmac.compare_digest(token.encode(), expected.encode()):
            return PlainTextResponse(challenge)
        logger.warning("WhatsApp webhook verification refused (mode=%r)", mode)
        return PlainTextResponse("verification failed", status_code=403)

    @router.post(WEBHOOK_PATH, summary="WhatsApp events (signed by Meta)")
    async def receive(request: Request, background: BackgroundTasks):
        body = await request.body()
        if not signature_ok(settings.whatsapp_app_secret, body, request.headers.get(SIGNATURE)):
            logger.warning("WhatsApp webhook with a missing or wrong %s refused", SIGNATURE)
            return JSONResponse(error_example("bad_signature", f"missing or wrong {SIGNATURE}"), status_code=401)
        try:
            event = json.loads(body)
        except ValueError:
            return JSONResponse(error_example("invalid_request", "the body is not JSON"), status_code=400)
        callback_url = settings.whatsapp_callback_url or str(request.url_for("whatsapp_job_callback"))
        background.add_task(bot.handle_event, event, callback_url)
        return {"status": "received"}

    @router.post(CALLBACK_PATH, name="whatsapp_job_callback", summary="Result callback: sends the verdict")
    async def job_callback(request: Request):
        body = await request.body()
        if not verify_signature(settings.callback_secret or "", request.headers.get(TIMESTAMP_HEADER), body,
                                request.headers.get(SIGNATURE_HEADER)):
            return JSONResponse(error_example("bad_signature", f"missing or wrong {SIGNATURE_HEADER}"),
                                status_code=401)
        try:
            task_id = str(json.loads(body)["task_id"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse(error_example("invalid_request", "no task_id in the body"), status_code=400)
        status = await run_in_threadpool(bot.notify_result, task_id)
        return JSONResponse({"task_id": task_id, "status": status}, status_code=status)

    return router

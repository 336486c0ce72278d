"""The detection API (jobs, status, health). ``web.server.create_app`` mounts the WhatsApp webhook and the result
pages on it: that composed app is what Modal (``@modal.asgi_app``) and ``make serve`` run.

    POST /detect_video  JSON {video_url, callback_url?, task_id?}  -> 202 {task_id, status}
    POST /detect        multipart file (+ callback_url, task_id)   -> 202 {task_id, status}
    GET  /status/{id}   pending | processing (+stage) | completed (+report) | failed (+reason)
    GET  /health        public: pipeline state and detectors, database backend, queue

Identical bytes that were analysed before answer 200 with ``status: completed`` and the report
(a new task_id that copies the result). Errors are ``{"error": {"code", "message"}}``.
``create_app()`` with no arguments (the uvicorn factory) reads ``Settings`` from the environment;
everything is injectable for tests and for app.py.
"""

import json
import logging
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from db.repository import Repository
from service.jobs import (
    Dispatcher,
    JobService,
    PipelineHolder,
    SpawnDispatcher,
    WorkerPool,
    describe_detectors,
    load_pipeline,
    public_task_id,
    status_payload,
    stored_task_id,
)
from service.schemas import (
    TASK_ID_PATTERN,
    DetectVideoRequest,
    ErrorResponse,
    Health,
    ServiceError,
    TaskAccepted,
    TaskStatus,
    error_example,
)
from service.security import ApiKey, ApiKeys, UrlPolicy

logger = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 1 << 20  # form fields and boundaries around the file
JSON_LIMIT = 64 * 1024  # /detect_video bodies are a few hundred bytes


def _err(description: str, code: str, message: str, headers: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": ErrorResponse,
        "description": description,
        "content": {"application/json": {"example": error_example(code, message)}},
    }
    if headers:
        out["headers"] = headers
    return out


ACCEPTED_EXAMPLE = {"task_id": "6f1c2e0a-8d5b-4a4e-9a57-1f0f3c9b2d11", "status": "pending", "cached": False,
                    "status_url": "/status/6f1c2e0a-8d5b-4a4e-9a57-1f0f3c9b2d11", "report": None}
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": TaskAccepted, "description": "identical bytes were analysed before (or the same task_id was "
          "sent again): the task is returned as it is, usually completed with its report"},
    202: {"model": TaskAccepted, "description": "accepted and queued; poll status_url",
          "content": {"application/json": {"example": ACCEPTED_EXAMPLE}}},
    400: _err("the URL or callback_url was refused (scheme, private/loopback/metadata address...)",
              "forbidden_address", "refusing to connect to 169.254.169.254: 169.254.169.254 is a cloud metadata "
              "address. Only public internet addresses are allowed."),
    401: _err("missing or unknown API key", "unauthorized", "send Authorization: Bearer <API key>",
              {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}),
    409: _err("this key is submitting the same task_id concurrently", "task_id_taken", "task_id 'x' is already used"),
    413: _err("the file is larger than the server's limit", "file_too_large",
              "the upload is larger than the limit of 500 MB"),
    422: _err("the media cannot be analysed (too long, not a video, truncated...) or the download failed",
              "too_long", "<uploaded bytes> lasts 912 s; the limit is 600 s. Cut the part you want checked and "
              "upload that."),
    429: _err("this API key used its daily quota", "rate_limited",
              "this API key has used its 50 videos for today (UTC); try again in 3600 s",
              {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds until UTC midnight"}}),
}


class BodySizeLimit:
    """ASGI middleware: refuse POST bodies above ``limits[path]`` bytes with 413, by Content-Length before
    reading anything and by counting while receiving (chunked uploads without a length)."""

    def __init__(self, app, limits: dict[str, int]):
        self.app = app
        self.limits = limits

    @staticmethod
    async def _send_413(send, limit: int) -> None:
        body = json.dumps(error_example(
            "file_too_large", f"the request is larger than the limit of {limit / 1e6:.1f} MB"
        )).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        limit = self.limits.get(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode()
        if declared.isdigit() and int(declared) > limit:
            return await self._send_413(send, limit)
        state = {"received": 0, "too_large": False, "replaced": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["too_large"] = True
                    raise ServiceError(413, "file_too_large", "request body too large")
            return message

        async def guarded_send(message):
            if state["too_large"]:  # whatever the app answers to the aborted body, the client gets a 413
                if not state["replaced"]:
                    state["replaced"] = True
                    await self._send_413(send, limit)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ServiceError:
            if not state["replaced"]:
                state["replaced"] = True
                await self._send_413(send, limit)


bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer <key>")


def authenticate(request: Request, _creds=Depends(bearer)) -> ApiKey:
    """Bearer API key from Settings ``api_keys`` (401 otherwise)."""
    keys: ApiKeys = request.app.state.api_keys
    key = keys.authenticate(request.headers.get("authorization"))
    if key is None:
        msg = "send Authorization: Bearer <API key>" if len(keys) else \
            "no API keys are configured on this server (set API_KEYS)"
        raise ServiceError(401, "unauthorized", msg, {"WWW-Authenticate": "Bearer"})
    return key


Key = Annotated[ApiKey, Depends(authenticate)]


def scoped(task_id: str | None, key: ApiKey) -> str | None:
    """A client's own task id, in its key's scope (ids never collide or leak across keys)."""
    return stored_task_id(task_id, key) if task_id else None


def create_app(
    settings=None,
    pipeline=None,
    repo: Repository | None = None,
    dispatcher: Dispatcher | None = None,
    url_policy: UrlPolicy | None = None,
    callback_policy: UrlPolicy | None = None,
    spawn=None,
) -> FastAPI:
    """Build the API. ``pipeline``: an already loaded pipeline (else loaded once in the background);
    ``repo``: the store (else ``db.connect(settings)``); ``spawn``: Modal's ``analyze.spawn`` (else a
    local worker pool); policies: SSRF rules for downloads / callbacks (else from Settings)."""
    if settings is None:
        from pipeline.settings import get_settings

        settings = get_settings()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if repo is None:
        import db

        repo = db.connect(settings)
    holder = PipelineHolder(pipeline, loader=None if pipeline is not None else (lambda: load_pipeline(settings)))
    service = JobService(settings, repo, holder, url_policy=url_policy, callback_policy=callback_policy)
    if dispatcher is None:
        dispatcher = SpawnDispatcher(service, spawn) if spawn is not None else WorkerPool(service)
    service.dispatcher = dispatcher
    keys = ApiKeys(settings.api_keys)
    app_keys = keys
    if not len(keys):
        logger.warning("no API_KEYS configured: every protected endpoint answers 401")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if isinstance(dispatcher, WorkerPool):
            holder.start()
        await run_in_threadpool(dispatcher.start)
        yield
        await run_in_threadpool(dispatcher.stop)
        service.close()

    app = FastAPI(
        title="Deepfake detector API",
        version="1.0",
        description=__doc__,
        lifespan=lifespan,
        responses={500: _err("unexpected server error", "internal_error", "internal error")},
    )
    app.state.settings = settings
    app.state.service = service
    app.state.repo = repo
    app.state.pipelines = holder
    app.state.dispatcher = dispatcher
    app.state.api_keys = app_keys
    # integrations mounted later (WhatsApp) add their paths to this same dict
    app.state.body_limits = {"/detect": settings.max_file_bytes + MULTIPART_OVERHEAD, "/detect_video": JSON_LIMIT}
    app.add_middleware(BodySizeLimit, limits=app.state.body_limits)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        return JSONResponse(error_example(exc.code, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        # unknown routes, wrong methods...: the same envelope as every other error, never {"detail": ...}
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed here"}.get(
            exc.status_code, str(exc.detail))
        return JSONResponse(error_example(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_example("internal_error", "internal error; it was logged"), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        body = error_example("invalid_request", f"{where}: {first.get('msg', 'invalid request')}")
        body["error"]["details"] = json.loads(json.dumps(errors, default=str))
        return JSONResponse(body, status_code=422)

    def accepted(row, response: Response, cached: bool, fresh: bool) -> dict[str, Any]:
        response.status_code = 202 if fresh and not cached else 200
        tid = public_task_id(row.task_id)
        return {"task_id": tid, "status": row.status, "cached": cached,
                "status_url": f"/status/{tid}", "report": row.report_dict() if row.is_final else None}

    @app.post("/detect_video", status_code=202, response_model=TaskAccepted, responses=SUBMIT_RESPONSES,
              summary="Analyse a video from a URL (async)")
    def detect_video(body: DetectVideoRequest, response: Response, key: Key):
        """Downloads ``video_url`` (SSRF-checked, size-capped), probes it, queues it. Answers 202 with a
        ``task_id`` to poll, or 200 when the same bytes were analysed before."""
        existing = service.existing_task(body.task_id, key)
        if existing is not None:
            return accepted(existing, response, cached=existing.cached_from is not None, fresh=False)
        service.check_quota(key)
        service.check_callback(body.callback_url)
        media = service.store_url(body.video_url)
        row, cached = service.submit(media, key, body.callback_url, scoped(body.task_id, key))
        return accepted(row, response, cached, fresh=True)

    @app.post("/detect", status_code=202, response_model=TaskAccepted, responses=SUBMIT_RESPONSES,
              summary="Analyse an uploaded video (async)")
    def detect(
        response: Response,
        key: Key,
        file: Annotated[UploadFile, File(description="the video (mp4, mov, webm, 3gp...), image or audio")],
        callback_url: Annotated[str | None, Form(description="optional signed-callback URL")] = None,
        task_id: Annotated[str | None, Form(pattern=TASK_ID_PATTERN, description="optional idempotency key")] = None,
    ):
        """Stores the upload (before answering), probes it (duration/size caps), queues it."""
        existing = service.existing_task(task_id, key)
        if existing is not None:
            return accepted(existing, response, cached=existing.cached_from is not None, fresh=False)
        service.check_quota(key)
        service.check_callback(callback_url)
        media = service.store_stream(file.file, file.filename)
        row, cached = service.submit(media, key, callback_url, scoped(task_id, key))
        return accepted(row, response, cached, fresh=True)

    @app.get("/status/{task_id}", response_model=TaskStatus, response_model_exclude_none=False,
             responses={401: SUBMIT_RESPONSES[401],
                        404: _err("no such task (for this API key)", "not_found", "no task 'x'")},
             summary="Progress and result of a task")
    def status(task_id: str, key: Key):
        row = service.find_task(task_id, key)  # other keys' tasks do not exist for this key
        if row is None:
            raise ServiceError(404, "not_found", f"no task {task_id!r}")
        return status_payload(row)

    @app.get("/health", response_model=Health, summary="Liveness, loaded detectors, database (public)")
    def health(request: Request):
        """Liveness for anyone; the detector set, queue, key count and load errors only for a valid API key
        (an anonymous caller learns nothing about the deployment)."""
        try:
            queue = repo.queue_counts()
            db_ok = True
        except Exception as exc:
            logger.warning("health: database check failed: %s", exc)
            queue, db_ok = None, False
        if isinstance(dispatcher, WorkerPool) or holder.pipeline is not None:
            pstate = holder.state
        else:
            pstate = "remote"
        detectors = describe_detectors(holder.pipeline) if holder.pipeline is not None else None
        overall = "ok" if db_ok and pstate in ("ready", "remote") else ("loading" if pstate == "loading" and db_ok
                                                                         else "degraded")
        public = {"status": overall, "pipeline": {"state": pstate}, "database": {"ok": db_ok}}
        if keys.authenticate(request.headers.get("authorization")) is None:
            return public
        return {
            "status": overall,
            "pipeline": {"state": pstate, "detectors": detectors, "error": holder.error},
            "database": {"backend": repo.backend, "ok": db_ok},
            "queue": queue,
            "auth": {"api_keys": len(keys), "daily_limit_per_key": settings.daily_limit_per_key},
        }

    return app

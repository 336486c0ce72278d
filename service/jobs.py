"""Jobs: intake (persist the bytes, probe, dedupe, quota, queue row), processing and dispatch.

The queue is the database: a request becomes a ``pending`` row before the API answers 202, with its
bytes already on disk under ``uploads_dir``. Workers claim rows atomically, heartbeat while the
pipeline runs, and write the report. A worker that dies leaves a ``processing`` row whose heartbeat
stops; the sweeper puts it back to ``pending`` (or fails it with a reason after ``job_max_attempts``),
so a restart loses nothing and nothing stays ``processing``.

Dispatch:
* ``WorkerPool`` (local / ``make serve``): N threads in this process share the one loaded pipeline;
  N = ``workers`` (default 1: runs are serialised on a 2-core CPU).
* ``SpawnDispatcher`` (Modal): ``Detector.analyze.spawn(task_id)`` per job; its sweeper respawns.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from db.repository import (
    FAILED,
    DuplicateTaskError,
    JobRow,
    NewJob,
    RateLimitExceeded,
    Repository,
    seconds_to_utc_midnight,
)
from service import callbacks
from service.figures import figure_store
from service.schemas import ServiceError
from service.security import ApiKey, SecurityError, TooLarge, UrlPolicy, download, write_stream

logger = logging.getLogger(__name__)

STAGE_WRITE_INTERVAL_S = 1.0


# ----------------------------------------------------------------------------------------------
# Pipeline loading
# ----------------------------------------------------------------------------------------------
class PipelineUnavailable(RuntimeError):
    pass


def load_pipeline(settings):
    """The pipeline this deployment runs: ``pipeline.build(settings)``."""
    import pipeline

    return pipeline.build(settings)


def describe_detectors(pipeline) -> list[str] | dict[str, Any] | None:
    """Which detectors a loaded pipeline has, as the pipeline describes them (``Pipeline.status()``)."""
    for attr in ("status", "loaded_detectors", "detectors"):
        value = getattr(pipeline, attr, None)
        if value is None:
            continue
        if callable(value):
            try:
                value = value()
            except Exception:  # a description is not worth failing health for
                continue
        if isinstance(value, dict):
            return json.loads(json.dumps(value, default=str))
        if isinstance(value, list | tuple | set | frozenset):
            return [str(getattr(v, "name", v)) for v in value]
    return None


class PipelineHolder:
    """The one pipeline of this process, loaded once (in the background, so the API answers meanwhile)."""

    def __init__(self, pipeline=None, loader: Callable[[], Any] | None = None):
        self._pipeline = pipeline
        self._loader = loader
        self._ready = threading.Event()
        self.error: str | None = None
        self._lock = threading.Lock()
        self._started = False
        if pipeline is not None:
            self._ready.set()

    @property
    def state(self) -> str:
        if self._pipeline is not None:
            return "ready"
        if self.error:
            return "failed"
        return "loading"

    @property
    def pipeline(self):
        return self._pipeline

    def start(self) -> None:
        with self._lock:
            if self._started or self._pipeline is not None or self._loader is None:
                return
            self._started = True
        threading.Thread(target=self._load, name="pipeline-loader", daemon=True).start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            self._pipeline = self._loader()
            logger.info("pipeline loaded in %.1f s", time.perf_counter() - t0)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("pipeline failed to load")
        finally:
            self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once loading finished (ready or failed)."""
        self.start()
        return self._ready.wait(timeout)

    def get(self, timeout: float | None = None):
        self.start()
        self._ready.wait(timeout)
        if self._pipeline is None:
            raise PipelineUnavailable(self.error or "the pipeline is still loading")
        return self._pipeline


# ----------------------------------------------------------------------------------------------
# Status JSON (the API's answer and the callback body)
# ----------------------------------------------------------------------------------------------
# A task id an API client chooses is stored with its key's scope: two keys may use the same id without
# colliding, and no key can learn whether another key used an id. The separator cannot appear in a client's id
# (service.schemas.TASK_ID_PATTERN), so no client can spell another key's stored id.
SCOPE_SEP = "~"


def stored_task_id(task_id: str, key: ApiKey | None) -> str:
    return task_id if key is None else f"{task_id}{SCOPE_SEP}{key.key_id[:16]}"


def public_task_id(stored: str | None) -> str | None:
    """The id its client knows (what status, callbacks and the history show)."""
    return None if stored is None else stored.split(SCOPE_SEP, 1)[0]


def status_payload(row: JobRow, include_callback: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task_id": public_task_id(row.task_id),
        "status": row.status,
        "stage": row.stage if row.status == "processing" else None,
        "progress": row.progress if row.status == "processing" else None,
        "detection_result": row.detection_result,
        "confidence_score": row.confidence_score,
        "reason": row.reason,
        "error_code": row.error_code,
        "report": row.report_dict() if row.is_final else None,
        "attempts": row.attempts,
        "cached": row.cached_from is not None,
        "cached_from": public_task_id(row.cached_from),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "completed_at": _iso(row.completed_at),
    }
    if include_callback and row.callback_url:
        out["callback"] = {
            "url": row.callback_url,
            "attempts": row.callback_attempts,
            "last_status": row.callback_last_status,
            "last_error": row.callback_last_error,
            "delivered_at": _iso(row.callback_delivered_at),
        }
    return out


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat()


# ----------------------------------------------------------------------------------------------
# Progress + heartbeat while one job runs
# ----------------------------------------------------------------------------------------------
class ProgressWriter:
    """The ``progress`` callback of ``pipeline.run``: writes stage changes (throttled) and a heartbeat."""

    def __init__(self, repo: Repository, task_id: str, attempt: int, heartbeat_s: float):
        self.repo, self.task_id, self.attempt = repo, task_id, attempt
        self._stage: str | None = None
        self._fraction = 0.0
        self._written_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), name=f"heartbeat-{task_id}",
                                        daemon=True)
        self._thread.start()

    def __call__(self, stage: str, fraction: float = 0.0) -> None:
        with self._lock:
            changed = stage != self._stage
            self._stage, self._fraction = stage, float(fraction)
            due = changed or time.monotonic() - self._written_at >= STAGE_WRITE_INTERVAL_S
        if due:
            self._write()

    def _write(self) -> None:
        with self._lock:
            stage, fraction = self._stage, self._fraction
            self._written_at = time.monotonic()
        try:
            if not self.repo.heartbeat(self.task_id, self.attempt, stage, fraction) and not self.lost:
                self.lost = True
                logger.warning("job %s attempt %d is no longer ours (requeued as stale?)", self.task_id, self.attempt)
        except Exception:
            logger.exception("heartbeat of %s failed", self.task_id)

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self._write()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ----------------------------------------------------------------------------------------------
# The service: intake, processing, callbacks
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredMedia:
    path: Path
    size: int
    sha256: str
    source_name: str | None
    source_url: str | None = None


PIPELINE_LOAD_TIMEOUT_S = 300.0  # a job waits this long for the models of a cold container

# stored file extension by probed container (the name a worker opens is derived from what intake saw)
STORED_EXTENSIONS = {
    "mov": ".mp4", "matroska": ".mkv", "avi": ".avi", "mpeg": ".mpg", "mpegts": ".ts", "ogg": ".ogg", "wav": ".wav",
    "flac": ".flac", "mp3": ".mp3", "aac": ".aac", "png_pipe": ".png", "jpeg_pipe": ".jpg", "bmp_pipe": ".bmp",
    "webp_pipe": ".webp", "tiff_pipe": ".tif", "gif": ".gif",
}


class Dispatcher(Protocol):
    def start(self) -> None: ...
    def submit(self, task_id: str) -> None: ...
    def stop(self) -> None: ...


class JobService:
    def __init__(
        self,
        settings,
        repo: Repository,
        pipelines: PipelineHolder,
        url_policy: UrlPolicy | None = None,
        callback_policy: UrlPolicy | None = None,
        inline_callbacks: bool = False,
    ):
        self.settings = settings
        self.repo = repo
        self.pipelines = pipelines
        self.url_policy = url_policy or UrlPolicy(allow_private=settings.allow_private_urls)
        self.callback_policy = callback_policy or UrlPolicy(allow_private=settings.allow_private_callbacks)
        self.uploads_dir = Path(settings.uploads_dir).expanduser().resolve()
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.figures = figure_store(settings, repo)
        self.dispatcher: Dispatcher | None = None
        self._callbacks = None if inline_callbacks else ThreadPoolExecutor(4, thread_name_prefix="callback")
        self._closing = threading.Event()  # set on shutdown: backoff sleeps end, retries resume after restart

    # -- intake ---------------------------------------------------------------------------------
    def check_quota(self, key: ApiKey | None) -> None:
        """Cheap early refusal (before any download); the binding check is atomic with the insert."""
        limit = self.settings.daily_limit_per_key
        if key is not None and limit > 0 and self.repo.count_today(key.key_id) >= limit:
            raise self._rate_limited(limit)

    def _rate_limited(self, limit: int) -> ServiceError:
        retry = seconds_to_utc_midnight()
        return ServiceError(
            429, "rate_limited",
            f"this API key has used its {limit} videos for today (UTC); try again in {retry} s",
            {"Retry-After": str(retry)},
        )

    def check_callback(self, callback_url: str | None) -> None:
        if not callback_url:
            return
        if not self.settings.callback_secret:
            raise ServiceError(
                422, "callbacks_disabled",
                "callback_url needs the server's CALLBACK_SECRET to sign deliveries; it is not configured",
            )
        try:
            self.callback_policy.check(callback_url)
        except SecurityError as exc:
            raise ServiceError(400, "callback_refused", f"callback_url refused: {exc.message}") from exc

    def existing_task(self, task_id: str | None, key: ApiKey | None) -> JobRow | None:
        """An idempotent re-submission of ``task_id`` by the same key returns its row. Other keys' ids live in
        their own scope: they neither collide nor show that they exist."""
        if not task_id:
            return None
        return self.find_task(task_id, key)

    def find_task(self, task_id: str, key: ApiKey | None) -> JobRow | None:
        """This key's task ``task_id`` (a row stored before ids were scoped is found by its plain id)."""
        row = self.repo.get(stored_task_id(task_id, key))
        if row is None and key is not None:
            row = self.repo.get(task_id)
            if row is not None and row.api_key_id != key.key_id:
                row = None
        return row

    def store_stream(self, stream: BinaryIO, source_name: str | None) -> StoredMedia:
        """Copy an upload to ``uploads_dir`` (``service.security.write_stream``: hashed, size-capped, fsynced)."""
        limit = self.settings.max_file_bytes
        try:
            w = write_stream(iter(lambda: stream.read(1 << 20), b""), self.uploads_dir, "up", limit)
        except TooLarge as exc:
            raise ServiceError(413, "file_too_large",
                               f"the upload is larger than the limit of {limit / 1e6:.0f} MB") from exc
        return StoredMedia(w.path, w.size, w.sha256, source_name)

    def store_url(self, url: str) -> StoredMedia:
        s = self.settings
        try:
            d = download(
                url, self.uploads_dir, self.url_policy, s.max_file_bytes, timeout_s=s.download_timeout_s,
                total_timeout_s=s.download_total_timeout_s, max_redirects=s.download_max_redirects,
            )
        except TooLarge as exc:
            raise ServiceError(413, exc.code, exc.message) from exc
        except SecurityError as exc:
            raise ServiceError(exc.status, exc.code, exc.message) from exc
        return StoredMedia(d.path, d.size, d.sha256, d.filename, source_url=url)

    def _probe(self, media: StoredMedia):
        from pipeline import media as media_mod

        try:
            return media_mod.probe(media.path, media_mod.Limits.from_settings(self.settings))
        except media_mod.MediaError as exc:
            status = 413 if exc.code == "file_too_large" else 422
            # the message names our storage path: say the client's name for the file instead
            message = exc.message.replace(media.path.name, media.source_name or media.source_url or "the file")
            raise ServiceError(status, exc.code, message) from exc

    def submit(
        self,
        media: StoredMedia,
        key: ApiKey | None,
        callback_url: str | None = None,
        task_id: str | None = None,
        probe: bool = True,
        use_cache: bool = True,
    ) -> tuple[JobRow, bool]:
        """Queue stored media (or answer from the cache). Returns (row, cached). Removes the file on refusal."""
        keep_file = False
        try:
            info = self._probe(media) if probe else None
            task_id = task_id or str(uuid.uuid4())  # an API client's own id arrives scoped (stored_task_id)
            common = dict(
                task_id=task_id,
                user_id=key.user_id if key else None,
                file_url=media.source_url,
                file_type=info.kind if info else None,
                source_url=media.source_url,
                source_name=media.source_name,
                content_sha256=media.sha256,
                api_key_id=key.key_id if key else None,
                callback_url=callback_url,
            )
            limit = self.settings.daily_limit_per_key if key else 0
            # the cache is per API key: another key's bytes, task ids and file names are never answered here
            cached = (self.repo.find_completed_by_sha256(media.sha256, key.key_id if key else None)
                      if use_cache else None)
            if cached is not None:
                row = self.repo.create_job(NewJob.cached_copy(cached, **common), daily_limit=limit)
                logger.info("task %s: identical bytes analysed as %s, answered from cache", task_id, cached.task_id)
                self._after_final(row)
                return row, True
            # the stored name is the server's: a random id and the extension of the container WE probed, never
            # anything the client chose (a client's name or task id once mapped two uploads onto one file)
            ext = STORED_EXTENSIONS.get(info.container if info else "", ".bin")
            final = self.uploads_dir / f"{uuid.uuid4().hex}{ext}"
            os.replace(media.path, final)
            _fsync_dir(self.uploads_dir)
            media = StoredMedia(final, media.size, media.sha256, media.source_name, media.source_url)
            row = self.repo.create_job(NewJob(storage_path=final.name, **common), daily_limit=limit)
            keep_file = True
        except RateLimitExceeded as exc:
            raise self._rate_limited(exc.limit) from exc
        except DuplicateTaskError as exc:
            # only this key's own concurrent submission of the same id can collide (ids are scoped per key)
            raise ServiceError(409, "task_id_taken", f"task_id {public_task_id(task_id)!r} is already used") from exc
        finally:
            if not keep_file:
                media.path.unlink(missing_ok=True)
        logger.info("task %s queued (%s, %d bytes)", row.task_id, media.source_name or media.source_url, media.size)
        if self.dispatcher is not None:
            try:
                self.dispatcher.submit(row.task_id)
            except Exception:  # the row is queued; a sweeper/worker will pick it up
                logger.exception("dispatch of %s failed; it stays pending for the sweeper", row.task_id)
        return row, False

    # -- processing -----------------------------------------------------------------------------
    def process(self, job: JobRow) -> JobRow:
        """Run the pipeline on a claimed (processing) job and write the outcome. Never raises for the job."""
        attempt = job.attempts
        path = self._stored(job)
        if path is None or not path.is_file():
            row = self.repo.fail(
                job.task_id, "the uploaded media is missing from storage; send the video again", "media_missing",
                attempt,
            )
            return self._after_final(row or self.repo.get(job.task_id))
        # the heartbeat starts now: a job waiting for the models to load is alive, not stale
        writer = ProgressWriter(self.repo, job.task_id, attempt, self.settings.job_heartbeat_s)
        try:
            pipeline = self.pipelines.get(timeout=max(PIPELINE_LOAD_TIMEOUT_S, self.settings.job_stale_after_s))
        except PipelineUnavailable as exc:
            writer.stop()
            row = self.repo.fail(job.task_id, f"the detectors could not be loaded: {exc}", "pipeline_unavailable",
                                 attempt)
            return self._after_final(row or self.repo.get(job.task_id))
        t0 = time.perf_counter()
        try:
            report = pipeline.run(str(path), progress=writer, source_name=job.source_name or path.name)
        except Exception as exc:  # the pipeline contract says it returns FAILED reports; this is a bug
            logger.exception("pipeline crashed on %s", job.task_id)
            row = self.repo.fail(job.task_id, f"internal error while analysing ({type(exc).__name__}); it was logged",
                                 "internal_error", attempt)
        else:
            analysed = report.media.sha256 if report.media is not None else None
            if analysed is not None and job.content_sha256 and analysed != job.content_sha256:
                # the cache answers later uploads of job.content_sha256 with this verdict: it must be about them
                logger.error("task %s: stored media changed since intake (%s != %s)", job.task_id, analysed,
                             job.content_sha256)
                row = self.repo.fail(job.task_id, "the stored file changed after it was received; send it again",
                                     "media_changed", attempt)
            else:
                self._store_figures(job.task_id, report)  # before the row says completed: a reader finds them
                row = self.repo.complete(job.task_id, attempt, report)
        finally:
            writer.stop()
        if row is None:
            logger.warning("task %s attempt %d finished after losing the job; result dropped", job.task_id, attempt)
            return self.repo.get(job.task_id)
        logger.info("task %s %s (%s) in %.1f s", row.task_id, row.status, row.detection_result,
                    time.perf_counter() - t0)
        return self._after_final(row)

    def _store_figures(self, task_id: str, report) -> None:
        """The report's evidence figures into file storage; a storage failure costs the pictures, not the job."""
        if not getattr(report, "figures", ()):
            return
        try:
            n = self.figures.put(task_id, report.figures)
            logger.info("task %s: %d evidence figures stored", task_id, n)
        except Exception:
            logger.exception("task %s: evidence figures could not be stored", task_id)

    def figure(self, row: JobRow, name: str) -> bytes | None:
        """One stored evidence figure of a row (a cached copy shows the figures of the analysis it copies)."""
        return self.figures.get(row.task_id, name) or (
            self.figures.get(row.cached_from, name) if row.cached_from else None)

    def _stored(self, row: JobRow) -> Path | None:
        """The row's media under ``uploads_dir`` (rows keep only the opaque file name; nothing outside the
        folder can ever be named)."""
        return self.uploads_dir / Path(row.storage_path).name if row.storage_path else None

    def process_next(self, task_id: str | None = None) -> JobRow | None:
        """Claim (the given or the oldest pending) job and process it. None when there was nothing to claim."""
        job = self.repo.claim(task_id)
        if job is None:
            return None
        return self.process(job)

    def _after_final(self, row: JobRow | None) -> JobRow | None:
        if row is None or not row.is_final:
            return row
        stored = self._stored(row)
        if stored is not None and not self.settings.keep_uploads:
            stored.unlink(missing_ok=True)
        if row.callback_url and row.callback_delivered_at is None:
            if self._callbacks is None:
                self.deliver_callback(row)
            else:
                self._callbacks.submit(self.deliver_callback, row)
        return row

    def deliver_callback(self, row: JobRow) -> bool:
        s = self.settings
        if not s.callback_secret:
            logger.error("task %s has a callback_url but CALLBACK_SECRET is not set; not delivering", row.task_id)
            return False
        current = self.repo.get(row.task_id) or row

        def record(attempt: int, status: int | None, error: str | None, delivered: bool) -> None:
            self.repo.record_callback_attempt(row.task_id, attempt, status, error, delivered)

        return callbacks.deliver(
            row.callback_url, status_payload(current, include_callback=False), s.callback_secret,
            self.callback_policy, max_attempts=s.callback_max_attempts, backoff_s=s.callback_backoff_s,
            timeout_s=s.callback_timeout_s, record=record, first_attempt=current.callback_attempts + 1,
            stop=self._closing,
        )

    # -- maintenance ----------------------------------------------------------------------------
    def sweep(self) -> list[JobRow]:
        """Requeue (or fail) stale processing jobs. Returns the rows changed."""
        changed = self.repo.requeue_stale(self.settings.job_stale_after_s, self.settings.job_max_attempts)
        for row in changed:
            if row.status == FAILED:
                logger.error("task %s failed: %s", row.task_id, row.reason)
                self._after_final(row)
            else:
                logger.warning("task %s requeued after its worker went silent (attempt %d)", row.task_id,
                               row.attempts)
        return changed

    def redeliver_callbacks(self) -> int:
        rows = self.repo.undelivered_callbacks(self.settings.callback_max_attempts)
        for row in rows:
            self._after_final(row)
        return len(rows)

    def close(self) -> None:
        self._closing.set()
        if self._callbacks is not None:
            self._callbacks.shutdown(wait=False, cancel_futures=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a crash right after the 202 must not lose the file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Dispatchers
# ----------------------------------------------------------------------------------------------
class WorkerPool:
    """Local dispatch: worker threads claim pending rows; a sweeper requeues rows of dead workers."""

    def __init__(self, service: JobService, workers: int | None = None):
        self.service = service
        self.workers = workers or service.settings.workers
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        s = service.settings
        self.poll_s = s.queue_poll_s
        self.sweep_every_s = max(0.2, min(s.job_stale_after_s / 2, 30.0))

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        try:
            self.service.sweep()
            self.service.redeliver_callbacks()
        except Exception:
            logger.exception("startup sweep failed")
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._sweep, name="sweeper", daemon=True)
        t.start()
        self._threads.append(t)
        logger.info("worker pool started: %d worker(s)", self.workers)

    def submit(self, task_id: str) -> None:
        self._wake.set()

    def _work(self) -> None:
        while not self._stop.is_set():
            # claim nothing before the pipeline is loaded: a claimed job must make progress (heartbeats)
            if not self.service.pipelines.wait(self.poll_s):
                continue
            try:
                row = self.service.process_next()
            except Exception:
                logger.exception("worker loop error")
                row = None
                self._stop.wait(self.poll_s)
            if row is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def _sweep(self) -> None:
        while not self._stop.wait(self.sweep_every_s):
            try:
                if any(r.status == "pending" for r in self.service.sweep()):
                    self._wake.set()
            except Exception:
                logger.exception("sweep failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads.clear()


class SpawnDispatcher:
    """Modal dispatch: ``spawn(task_id)`` runs the job in a GPU container (``Detector.analyze``).

    ``spawn(None)`` asks a container to claim the oldest pending job; ``drain`` uses it for jobs that were
    requeued or whose spawn failed. ``start`` drains once when the web container starts, then every
    ``sweep_every_s`` if given (app.py's scheduled ``sweep`` function does the periodic part)."""

    def __init__(self, service: JobService, spawn: Callable[[str | None], Any], sweep_every_s: float | None = None):
        self.service = service
        self.spawn = spawn
        self.sweep_every_s = sweep_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._sweep_loop, name="spawn-sweeper", daemon=True)
            self._thread.start()

    def submit(self, task_id: str) -> None:
        self.spawn(task_id)

    def drain(self) -> int:
        self.service.sweep()
        pending = self.service.repo.queue_counts().get("pending", 0)
        for _ in range(pending):
            self.spawn(None)
        return pending

    def _sweep_loop(self) -> None:
        while True:
            try:
                self.drain()
            except Exception:
                logger.exception("spawn sweep failed")
            if self.sweep_every_s is None or self._stop.wait(self.sweep_every_s):
                return

    def stop(self) -> None:
        self._stop.set()

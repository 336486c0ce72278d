"""The job service and the local worker pool: persistence, progress, failures, requeue, dispatch."""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import timedelta

import pytest
from conftest import DEV_DATA
from fake_pipeline import FakePipeline

from db.repository import iso, utcnow
from db.sqlite import SqliteRepository
from pipeline.settings import Settings
from service.jobs import (
    JobService,
    PipelineHolder,
    SpawnDispatcher,
    StoredMedia,
    WorkerPool,
    describe_detectors,
    status_payload,
)
from service.schemas import ServiceError

CLIP = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"


def make(tmp_path, pipeline=None, **kw):
    defaults = dict(database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "uploads",
                    queue_poll_s=0.05, job_heartbeat_s=0.1)
    settings = Settings(**{**defaults, **kw})
    repo = SqliteRepository(tmp_path / "db.sqlite3")
    holder = pipeline if isinstance(pipeline, PipelineHolder) else PipelineHolder(pipeline or FakePipeline(settings))
    return JobService(settings, repo, holder, inline_callbacks=True), repo


def store(svc, data: bytes | None = None, name: str = "clip.mp4") -> StoredMedia:
    import io

    return svc.store_stream(io.BytesIO(CLIP.read_bytes() if data is None else data), name)


def wait_for(pred, timeout=20.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def test_bytes_are_persisted_before_the_job_is_queued(tmp_path):
    svc, _ = make(tmp_path)
    media = store(svc)
    assert media.path.exists() and media.size == CLIP.stat().st_size
    row, cached = svc.submit(media, None, task_id="job-1")
    assert not cached and row.status == "pending" and row.file_type == "video"
    # stored under a name the server chose (random id + the probed container's extension), never the client's
    assert re.fullmatch(r"[0-9a-f]{32}\.mp4", row.storage_path)
    assert (svc.uploads_dir / row.storage_path).read_bytes() == CLIP.read_bytes()
    assert not media.path.exists()  # moved (not copied)
    assert row.content_sha256 == media.sha256
    done = svc.process_next()
    assert done.status == "completed" and done.attempts == 1 and done.report_dict()["verdict"] in (
        "AUTHENTIC", "SUSPICIOUS", "FAKE")
    assert not (tmp_path / "uploads" / "job-1.mp4").exists()  # removed once final (keep_uploads=False)
    assert svc.process_next() is None


def test_store_enforces_the_size_cap_and_cleans_up(tmp_path):
    svc, _ = make(tmp_path, max_file_bytes=1000)
    with pytest.raises(ServiceError) as e:
        store(svc, b"x" * 5000)
    assert e.value.status == 413 and e.value.code == "file_too_large"
    assert list((tmp_path / "uploads").iterdir()) == []


def test_bad_media_is_refused_before_queueing(tmp_path):
    svc, repo = make(tmp_path, max_duration_s=2.0)
    with pytest.raises(ServiceError) as e:
        svc.submit(store(svc), None)
    assert (e.value.status, e.value.code) == (422, "too_long") and "clip.mp4 lasts 5 s" in e.value.message
    with pytest.raises(ServiceError) as e:
        svc.submit(store(svc, b"not a video at all", "notes.txt"), None)
    assert e.value.code == "not_media" and str(svc.uploads_dir) not in e.value.message
    assert repo.queue_counts() == {"pending": 0, "processing": 0}
    assert list((tmp_path / "uploads").iterdir()) == []


class SlowPipeline:
    """Reports stages slowly and records how many runs overlap."""

    def __init__(self, seconds=0.6, fail=False):
        self.seconds, self.fail = seconds, fail
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.inner = FakePipeline()

    def run(self, source, progress=None, source_name=None):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            for stage in ("faces", "visual", "audio"):
                progress(stage, 0.0)
                time.sleep(self.seconds / 3)
            if self.fail:
                raise RuntimeError("GPU fell off the bus")
            return self.inner.run(source, progress, source_name)
        finally:
            with self.lock:
                self.active -= 1


def test_progress_stage_and_heartbeat_are_written_while_running(tmp_path):
    slow = SlowPipeline(seconds=1.2)
    svc, repo = make(tmp_path, pipeline=slow)
    row, _ = svc.submit(store(svc), None)
    t = threading.Thread(target=svc.process_next)
    t.start()
    seen = set()
    beats = set()
    while t.is_alive():
        r = repo.get(row.task_id)
        if r.status == "processing":
            seen.add(r.stage)
            beats.add(r.updated_at)
            assert status_payload(r)["stage"] == r.stage
        time.sleep(0.03)
    t.join()
    assert {"faces", "visual", "audio"} <= seen
    assert len(beats) >= 4  # the heartbeat keeps moving updated_at
    final = repo.get(row.task_id)
    assert final.status == "completed" and final.stage is None and status_payload(final)["stage"] is None


def test_pipeline_crash_and_missing_media_fail_with_a_reason(tmp_path):
    svc, _ = make(tmp_path, pipeline=SlowPipeline(seconds=0.01, fail=True))
    svc.submit(store(svc), None)
    done = svc.process_next()
    assert done.status == "failed" and done.error_code == "internal_error" and "RuntimeError" in done.reason
    assert "GPU fell off the bus" not in done.reason  # internals stay in the log
    svc2, _ = make(tmp_path / "b")
    row, _ = svc2.submit(store(svc2), None)
    assert "/" not in row.storage_path  # the row holds an opaque name, resolved inside uploads_dir only
    os.unlink(svc2.uploads_dir / row.storage_path)
    done = svc2.process_next()
    assert done.status == "failed" and done.error_code == "media_missing" and "send the video again" in done.reason


def test_pipeline_that_cannot_load_fails_jobs_instead_of_leaving_them(tmp_path):
    def boom():
        raise OSError("weights missing: mesonet.pth")

    holder = PipelineHolder(loader=boom)
    svc, _ = make(tmp_path, pipeline=holder)
    svc.submit(store(svc), None)
    done = svc.process_next()
    assert holder.state == "failed" and "weights missing" in holder.error
    assert done.status == "failed" and done.error_code == "pipeline_unavailable"


def test_worker_pool_serialises_runs_and_completes_everything(tmp_path):
    slow = SlowPipeline(seconds=0.15)
    svc, repo = make(tmp_path, pipeline=slow, workers=1)
    pool = WorkerPool(svc)
    svc.dispatcher = pool
    pool.start()
    try:
        ids = []
        for i in range(5):
            # different bytes each time (an appended tail) so none is answered from the cache
            row, _ = svc.submit(store(svc, CLIP.read_bytes() + bytes([i]) * 16), None)
            ids.append(row.task_id)
        wait_for(lambda: all(repo.get(t).status == "completed" for t in ids))
    finally:
        pool.stop()
    assert slow.max_active == 1  # one pipeline, one run at a time on this 2-core box


def test_dead_worker_job_is_requeued_then_completed(tmp_path):
    svc, repo = make(tmp_path, job_stale_after_s=0.5, job_max_attempts=3)
    row, _ = svc.submit(store(svc), None)
    claimed = repo.claim()  # a worker took it ... and died: no heartbeat from now on
    assert claimed.status == "processing"
    pool = WorkerPool(svc)
    pool.start()
    try:
        done = wait_for(lambda: (r := repo.get(row.task_id)).status == "completed" and r, timeout=15)
    finally:
        pool.stop()
    assert done.attempts == 2


def test_job_that_keeps_dying_fails_with_a_reason(tmp_path):
    svc, repo = make(tmp_path, job_stale_after_s=60, job_max_attempts=2)
    row, _ = svc.submit(store(svc), None)
    for _ in range(2):
        repo.claim()
        old = iso(utcnow() - timedelta(seconds=120))
        repo._conn.execute("UPDATE detection_history SET updated_at = ? WHERE task_id = ?", (old, row.task_id))
        svc.sweep()
    final = repo.get(row.task_id)
    assert final.status == "failed" and final.error_code == "worker_lost"
    assert "gave up after 2 attempts" in final.reason
    assert repo.queue_counts() == {"pending": 0, "processing": 0}


def test_spawn_dispatcher_spawns_per_job_and_drains_pending(tmp_path):
    spawned = []
    svc, _ = make(tmp_path)
    svc.dispatcher = SpawnDispatcher(svc, spawned.append)
    row, _ = svc.submit(store(svc), None)
    assert spawned == [row.task_id]
    svc.dispatcher = None
    svc.submit(store(svc, CLIP.read_bytes() + b"\0"), None)  # its spawn "failed": still pending
    assert SpawnDispatcher(svc, spawned.append).drain() == 2
    assert spawned[1:] == [None, None]  # drain calls: each claims the oldest pending job
    assert svc.process_next(spawned[0]).task_id == row.task_id


def test_describe_detectors():
    class Real:
        def status(self):
            return {"visual": {"model": "mesonet", "available": True, "reason": None}}

    assert describe_detectors(Real()) == {"visual": {"model": "mesonet", "available": True, "reason": None}}
    assert describe_detectors(FakePipeline()) == ["fake:visual", "fake:temporal", "fake:audio", "fake:lip_sync"]
    assert describe_detectors(object()) is None

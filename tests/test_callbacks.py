"""Signed callbacks: the signature scheme, retries with backoff, and what the row records."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import DEV_DATA
from fake_pipeline import FakePipeline

from db.repository import NewJob
from db.sqlite import SqliteRepository
from pipeline.settings import Settings
from service import callbacks
from service.callbacks import sign, verify_signature
from service.jobs import JobService, PipelineHolder, StoredMedia, WorkerPool
from service.security import UrlPolicy

CLIP = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"
SECRET = "whsec_test_0123456789"


class Receiver:
    """Loopback webhook receiver; ``statuses`` are answered in order (then 200)."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.received: list[dict] = []
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append({"headers": dict(self.headers), "body": raw, "at": time.monotonic()})
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status < 300:
                    outer.event.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.close()


LOOPBACK_OK = UrlPolicy(allow_private=True)


def test_signature_scheme_matches_the_documented_formula():
    body = b'{"status":"completed","task_id":"t1"}'
    ts = 1_790_000_000
    expected = "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, ts, body) == expected == sign(SECRET, str(ts), body.decode())
    now = ts + 10
    assert verify_signature(SECRET, str(ts), body, expected, tolerance_s=300, now=now)
    assert not verify_signature(SECRET, str(ts), body + b" ", expected, now=now)  # body changed
    assert not verify_signature("other-secret", str(ts), body, expected, now=now)
    assert not verify_signature(SECRET, str(ts + 1), body, expected, now=now)  # timestamp changed
    assert not verify_signature(SECRET, str(ts), body, expected, tolerance_s=300, now=ts + 301)  # replay
    assert not verify_signature(SECRET, str(ts), body, expected, tolerance_s=300, now=ts - 301)  # future
    for bad in (None, "", "sha256=", expected[:-1], expected.replace("sha256=", "sha1=")):
        assert not verify_signature(SECRET, str(ts), body, bad, now=now)
    assert not verify_signature(SECRET, "not-a-number", body, expected, now=now)
    assert not verify_signature("", str(ts), body, sign("", ts, body), now=now)  # no secret, no trust


def test_delivery_retries_with_exponential_backoff_and_records_attempts():
    r = Receiver(statuses=[500, 503])
    sleeps, records = [], []
    try:
        ok = callbacks.deliver(
            r.url, {"task_id": "t1", "status": "completed"}, SECRET, LOOPBACK_OK, max_attempts=5, backoff_s=0.5,
            record=lambda *a: records.append(a), sleep=sleeps.append,
        )
    finally:
        r.close()
    assert ok and len(r.received) == 3
    assert sleeps == [0.5, 1.0]  # backoff × 2^n
    assert records == [(1, 500, "HTTP 500", False), (2, 503, "HTTP 503", False), (3, 200, None, True)]
    for got in r.received:  # every attempt is signed (fresh timestamp) and verifies
        h = got["headers"]
        assert h["Content-Type"] == "application/json" and h["X-Task-Id"] == "t1"
        assert verify_signature(SECRET, h["X-Signature-Timestamp"], got["body"], h["X-Signature"])
        assert json.loads(got["body"]) == {"task_id": "t1", "status": "completed"}


def test_no_retry_on_client_errors_and_give_up_after_max_attempts():
    r = Receiver(statuses=[400])
    records = []
    try:
        assert not callbacks.deliver(r.url, {"task_id": "t"}, SECRET, LOOPBACK_OK, max_attempts=5,
                                     record=lambda *a: records.append(a), sleep=lambda s: None)
    finally:
        r.close()
    assert records == [(1, 400, "HTTP 400", False)]
    # nothing listening: network errors are retried up to max_attempts
    records.clear()
    sleeps = []
    assert not callbacks.deliver("http://127.0.0.1:1/hook", {"task_id": "t"}, SECRET, LOOPBACK_OK, max_attempts=3,
                                 backoff_s=0.1, record=lambda *a: records.append(a), sleep=sleeps.append)
    assert [a[0] for a in records] == [1, 2, 3] and all(a[1] is None and a[2] for a in records)
    assert sleeps == [0.1, 0.2]


def test_callback_urls_pass_the_ssrf_policy(receiver):
    records = []
    assert not callbacks.deliver(receiver.url, {"task_id": "t"}, SECRET, UrlPolicy(allow_private=False),
                                 record=lambda *a: records.append(a), sleep=lambda s: None)
    assert receiver.received == [] and records[0][3] is False and "loopback" in records[0][2]


# ----------------------------------------------------------------------------------------------
# From a finished job to the receiver, recorded in the row
# ----------------------------------------------------------------------------------------------
def _service(tmp_path, **kw):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "uploads",
        callback_secret=SECRET, allow_private_callbacks=True, callback_backoff_s=0.05, callback_max_attempts=4,
        queue_poll_s=0.05, **kw,
    )
    repo = SqliteRepository(tmp_path / "db.sqlite3")
    svc = JobService(settings, repo, PipelineHolder(FakePipeline(settings)), inline_callbacks=True)
    return svc, repo


def _store(svc: JobService) -> StoredMedia:
    with open(CLIP, "rb") as f:
        return svc.store_stream(f, CLIP.name)


def test_finished_job_delivers_signed_status_and_records_it(tmp_path):
    r = Receiver(statuses=[502])
    try:
        svc, repo = _service(tmp_path)
        row, cached = svc.submit(_store(svc), None, callback_url=r.url)
        assert not cached
        done = svc.process_next()
        assert done.status == "completed"
    finally:
        r.close()
    assert len(r.received) == 2
    last = r.received[-1]
    payload = json.loads(last["body"])
    assert payload["task_id"] == row.task_id and payload["status"] == "completed"
    assert payload["report"]["verdict"] == done.report_dict()["verdict"]
    assert payload["report"] == json.loads(json.dumps(done.report_dict()))
    assert verify_signature(SECRET, last["headers"]["X-Signature-Timestamp"], last["body"],
                            last["headers"]["X-Signature"])
    stored = repo.get(row.task_id)
    assert stored.callback_attempts == 2 and stored.callback_last_status == 200
    assert stored.callback_delivered_at is not None and stored.callback_last_error is None


def test_undelivered_callbacks_are_sent_again_after_a_restart(tmp_path, receiver):
    svc, repo = _service(tmp_path)
    repo.create_job(NewJob(task_id="old", callback_url=receiver.url))
    c = repo.claim()
    repo.complete("old", c.attempts, FakePipeline().run(CLIP))  # finished, but the server died before delivery
    assert repo.undelivered_callbacks(4)[0].task_id == "old"
    pool = WorkerPool(svc)
    pool.start()  # a restart: the startup sweep redelivers
    try:
        assert receiver.event.wait(10)
    finally:
        pool.stop()
    assert json.loads(receiver.received[0]["body"])["task_id"] == "old"
    assert repo.get("old").callback_delivered_at is not None and repo.undelivered_callbacks(4) == []


def test_shutdown_interrupts_the_backoff_and_leaves_the_rest_for_the_restart():
    r = Receiver(statuses=[500] * 10)
    stop = threading.Event()
    records = []
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    try:
        ok = callbacks.deliver(r.url, {"task_id": "t"}, SECRET, LOOPBACK_OK, max_attempts=5, backoff_s=30,
                               record=lambda *a: records.append(a), stop=stop)
    finally:
        r.close()
    assert not ok and time.monotonic() - t0 < 5  # did not sit in a 30 s backoff
    assert [a[0] for a in records] == [1]  # attempts 2..5 remain for the startup redelivery

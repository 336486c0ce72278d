"""The local server as `make serve` runs it (uvicorn, the create_app factory, SQLite), in a subprocess.

* end to end with the REAL pipeline: upload, poll to completed, signed callback verified;
* SIGKILL while a job is processing, restart: the job completes (or fails with a reason), none stays
  processing;
* 20 concurrent submissions: all accepted ones complete, none lost, the daily limit holds.
The last two run the server around the test double (tests/fake_pipeline.py) so they take seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import DEV_DATA, REPO_ROOT, SHARED_WEIGHTS

from service.callbacks import verify_signature

CLIP = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"
SECRET = "e2e-callback-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAKE_SERVER = "fake_pipeline:create_app"


class LocalServer:
    """`make serve`'s command (uvicorn web.server:create_app --factory) on a free port."""

    def __init__(self, tmp: Path, factory: str = "web.server:create_app", **env):
        self.tmp = tmp
        self.factory = factory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "detections.sqlite3"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.db}",
            "UPLOADS_DIR": str(tmp / "uploads"),
            "API_KEYS": "key-a,key-b",
            "CALLBACK_SECRET": SECRET,
            "ALLOW_PRIVATE_CALLBACKS": "1",  # the receiver is on loopback
            "CALLBACK_BACKOFF_S": "0.2",
            "QUEUE_POLL_S": "0.2",
            "WEIGHTS_DIR": str(SHARED_WEIGHTS),
            "ALLOW_DOWNLOAD": "0",
            "DEVICE": "cpu",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]),  # tests/fake_pipeline.py
            **{k: str(v) for k, v in env.items()},
        }
        self.env.pop("SUPABASE_URL", None)
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "server.log"

    def start(self, timeout: float = 60.0) -> LocalServer:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", self.factory, "--factory", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rows(self, sql: str = "SELECT task_id, status, attempts, reason, error_code FROM detection_history"):
        with sqlite3.connect(self.db, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql)]


@pytest.fixture()
def servers():
    started: list[LocalServer] = []
    yield started
    for s in started:
        s.stop()


def submit(url: str, data: bytes, key="key-a", name="clip.mp4", **form) -> httpx.Response:
    return httpx.post(url + "/detect", files={"file": (name, data, "video/mp4")}, data=form,
                      headers={"Authorization": f"Bearer {key}"}, timeout=60)


def poll(url: str, task_id: str, key="key-a", timeout=60.0, until=("completed", "failed")) -> dict:
    end = time.monotonic() + timeout
    st = {}
    while time.monotonic() < end:
        st = httpx.get(f"{url}/status/{task_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
        if st["status"] in until:
            return st
        time.sleep(0.2)
    raise AssertionError(f"{task_id} stuck: {st}")


class Receiver:
    def __init__(self):
        self.received: list[dict] = []
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append({"headers": dict(self.headers), "body": raw})
                self.send_response(204)
                self.end_headers()
                outer.event.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/deepfake-hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_make_serve_end_to_end_with_the_real_pipeline(tmp_path, servers):
    import pipeline

    if not hasattr(pipeline, "build"):
        pytest.skip("awaiting pipeline.build (pipeline/core.py)")
    server = LocalServer(tmp_path)
    servers.append(server.start())
    receiver = Receiver()
    try:
        t0 = time.monotonic()
        r = submit(server.url, CLIP.read_bytes(), name=CLIP.name, callback_url=receiver.url)
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        st = poll(server.url, task_id, timeout=420)
        elapsed = time.monotonic() - t0
        assert st["status"] == "completed", st
        report = st["report"]
        assert report["verdict"] in ("AUTHENTIC", "SUSPICIOUS", "FAKE", "NOT_APPLICABLE")
        assert report["model_metadata"]["source_name"] == CLIP.name
        assert report["detector_scores"]["schema_version"] and report["model_metadata"]["models_used"]
        assert receiver.event.wait(30), "no callback received"
        got = receiver.received[0]
        h = got["headers"]
        assert h["X-Signature"].startswith("sha256=")
        assert verify_signature(SECRET, h["X-Signature-Timestamp"], got["body"], h["X-Signature"], tolerance_s=300)
        assert not verify_signature("wrong-secret", h["X-Signature-Timestamp"], got["body"], h["X-Signature"])
        payload = json.loads(got["body"])
        assert payload["task_id"] == task_id and payload["status"] == "completed"
        assert payload["report"] == report
        final = httpx.get(f"{server.url}/status/{task_id}", headers={"Authorization": "Bearer key-a"}).json()
        assert final["callback"]["delivered_at"] and final["callback"]["last_status"] == 204
        health = httpx.get(server.url + "/health", headers={"Authorization": "Bearer key-a"}).json()
        assert health["pipeline"]["state"] == "ready" and health["database"]["backend"] == "sqlite"
        assert isinstance(health["pipeline"]["detectors"], dict)
        print(f"real pipeline end to end: {elapsed:.1f} s")
    finally:
        receiver.close()


@pytest.mark.parametrize("max_attempts,outcome", [(3, "completed"), (1, "failed")])
def test_sigkill_while_processing_then_restart(tmp_path, servers, max_attempts, outcome):
    env = dict(factory=FAKE_SERVER, FAKE_PIPELINE_DELAY_S=4, JOB_STALE_AFTER_S=1.5, JOB_HEARTBEAT_S=0.3,
               JOB_MAX_ATTEMPTS=max_attempts)
    first = LocalServer(tmp_path, **env)
    servers.append(first.start())
    a = submit(first.url, CLIP.read_bytes()).json()["task_id"]
    b = submit(first.url, CLIP.read_bytes() + b"\0").json()["task_id"]  # queued behind a (one worker)
    poll(first.url, a, until=("processing",), timeout=30)
    first.kill()  # SIGKILL: no shutdown code runs
    before = {r["task_id"]: r for r in first.rows()}
    assert before[a]["status"] == "processing" and before[b]["status"] == "pending"

    second = LocalServer(tmp_path, **env)
    second.port, second.url = first.port, first.url
    servers.append(second.start())
    st_a = poll(second.url, a, timeout=60)
    st_b = poll(second.url, b, timeout=60)
    assert st_b["status"] == "completed"
    assert st_a["status"] == outcome
    if outcome == "completed":
        assert st_a["attempts"] == 2 and st_a["report"]["verdict"]
    else:
        assert st_a["error_code"] == "worker_lost" and "gave up after 1 attempts" in st_a["reason"]
    assert [r for r in second.rows() if r["status"] in ("processing", "pending")] == []


def _distinct_clips(tmp: Path, n: int) -> list[bytes]:
    from media_factory import write_video

    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        path = write_video(tmp / f"c{i}.mp4", n_frames=8, size=(64, 48),
                           frame_fn=lambda k, rng=rng: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        out.append(path.read_bytes())
    assert len(set(out)) == n
    return out


def test_twenty_concurrent_submissions_none_lost_and_rate_limited(tmp_path, servers):
    server = LocalServer(tmp_path, FAKE_SERVER, DAILY_LIMIT_PER_KEY=15, WORKERS=2)
    servers.append(server.start())
    clips = _distinct_clips(tmp_path, 25)
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda c: submit(server.url, c), clips[:20]))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * 15 + [429] * 5, codes
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited" and 0 < int(r.headers["Retry-After"]) <= 86400
    accepted = [r.json()["task_id"] for r in responses if r.status_code == 202]
    with ThreadPoolExecutor(5) as pool:  # another key has its own quota
        other = list(pool.map(lambda c: submit(server.url, c, key="key-b"), clips[20:]))
    assert [r.status_code for r in other] == [202] * 5
    for tid in accepted:
        assert poll(server.url, tid, timeout=60)["status"] == "completed"
    for r in other:
        assert poll(server.url, r.json()["task_id"], key="key-b", timeout=60)["status"] == "completed"
    rows = server.rows()
    assert len(rows) == 20 and all(r["status"] == "completed" for r in rows)
    assert sorted(r["task_id"] for r in rows) == sorted(accepted + [r.json()["task_id"] for r in other])

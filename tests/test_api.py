"""The HTTP API in-process (FastAPI TestClient, SQLite, the fake pipeline unless stated)."""

from __future__ import annotations

import os
import time

import pytest
from conftest import DEV_DATA
from fake_pipeline import FakePipeline
from fastapi.testclient import TestClient

from db.repository import seconds_to_utc_midnight
from pipeline.settings import Settings
from web.server import create_app

CLIP = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"
AUTH = {"Authorization": "Bearer key-a"}
AUTH_B = {"Authorization": "Bearer key-b"}


def settings_for(tmp_path, **kw) -> Settings:
    base = dict(database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "uploads",
                api_keys=["key-a", "key-b"], queue_poll_s=0.05, job_heartbeat_s=0.2)
    return Settings(**{**base, **kw})


@pytest.fixture()
def fake():
    return FakePipeline()


@pytest.fixture()
def client(tmp_path, fake):
    app = create_app(settings_for(tmp_path), pipeline=fake)
    with TestClient(app) as c:
        yield c


def upload(c, data: bytes | None = None, name="clip.mp4", headers=AUTH, **form):
    return c.post("/detect", files={"file": (name, CLIP.read_bytes() if data is None else data, "video/mp4")},
                  data=form, headers=headers)


def poll(c, task_id, headers=AUTH, timeout=20.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = c.get(f"/status/{task_id}", headers=headers).json()
        if st["status"] in ("completed", "failed"):
            return st
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {st}")


# ----------------------------------------------------------------------------------------------
# OpenAPI
# ----------------------------------------------------------------------------------------------
def test_openapi_schema_is_complete(client):
    spec = client.get("/openapi.json").json()
    assert {"/detect_video", "/detect", "/status/{task_id}", "/health"} <= set(spec["paths"])
    for path in ("/detect_video", "/detect"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"202", "400", "401", "413", "422", "429"} <= set(responses)
        for code in ("401", "413", "429"):
            example = responses[code]["content"]["application/json"]["example"]
            assert example["error"]["code"] and example["error"]["message"]
        assert "Retry-After" in responses["429"]["headers"]
        assert responses["202"]["content"]["application/json"]["example"]["status"] == "pending"
        assert spec["paths"][path]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/health"]["get"]
    schemas = spec["components"]["schemas"]
    assert schemas["DetectVideoRequest"]["examples"][0]["video_url"].startswith("https://")
    statuses = {e["status"] for e in schemas["TaskStatus"]["examples"]}
    assert statuses == {"processing", "completed", "failed"}
    assert schemas["Health"]["examples"] and spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"file", "callback_url", "task_id"} <= set(
        schemas["Body_detect_detect_post"]["properties"])


# ----------------------------------------------------------------------------------------------
# Auth
# ----------------------------------------------------------------------------------------------
def test_bearer_keys_are_required_except_for_health(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-a"}):
        r = client.post("/detect_video", json={"video_url": "https://example.org/a.mp4"}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthorized"
        assert upload(client, headers=headers).status_code == 401
        assert client.get("/status/x", headers=headers).status_code == 401
    h = client.get("/health")
    assert h.status_code == 200


def test_no_configured_keys_means_everything_is_closed(tmp_path, fake):
    app = create_app(settings_for(tmp_path, api_keys=[]), pipeline=fake)
    with TestClient(app) as c:
        r = upload(c)
        assert r.status_code == 401 and "API_KEYS" in r.json()["error"]["message"]


# ----------------------------------------------------------------------------------------------
# Submit, poll, result
# ----------------------------------------------------------------------------------------------
def test_upload_is_accepted_then_completes_with_the_report(client, fake):
    r = upload(client)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending" and body["cached"] is False
    assert body["status_url"] == f"/status/{body['task_id']}"
    st = poll(client, body["task_id"])
    assert st["status"] == "completed" and st["attempts"] == 1 and st["reason"] is None
    expected = FakePipeline().run(CLIP, source_name="clip.mp4")
    assert st["report"]["verdict"] == expected.verdict.value
    assert st["report"]["detector_scores"] == expected.detector_scores()
    assert st["detection_result"] == expected.verdict.value.lower()
    assert st["confidence_score"] == round(expected.confidence * 100, 2)
    assert set(st["report"]) == set(expected.to_dict())
    assert fake.calls == 1


def test_status_is_private_to_the_key_and_404s(client):
    tid = upload(client).json()["task_id"]
    assert client.get(f"/status/{tid}", headers=AUTH_B).status_code == 404
    r = client.get("/status/does-not-exist", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_identical_bytes_return_the_cached_result(client, fake):
    first = upload(client).json()
    done = poll(client, first["task_id"])
    r = upload(client, name="forwarded-again.mp4")
    assert r.status_code == 200
    again = r.json()
    assert again["task_id"] != first["task_id"] and again["status"] == "completed" and again["cached"] is True
    assert again["report"] == done["report"]
    st = client.get(f"/status/{again['task_id']}", headers=AUTH).json()
    assert st["cached_from"] == first["task_id"] and st["report"] == done["report"]
    assert fake.calls == 1  # not recomputed
    # the cache is per API key: another key's upload of the same bytes is analysed for it, and nothing of the
    # first key's task (id, file name) reaches it
    other = upload(client, name="b.mp4", headers=AUTH_B)
    assert other.status_code == 202 and other.json()["cached"] is False
    st_b = poll(client, other.json()["task_id"], headers=AUTH_B)
    assert st_b["cached_from"] is None and st_b["report"]["model_metadata"]["source_name"] == "b.mp4"
    assert fake.calls == 2


def test_task_id_is_an_idempotency_key(client):
    r1 = upload(client, task_id="wa-msg-42")
    assert r1.status_code == 202 and r1.json()["task_id"] == "wa-msg-42"
    r2 = upload(client, data=CLIP.read_bytes() + b"\0", task_id="wa-msg-42")
    assert r2.status_code == 200 and r2.json()["task_id"] == "wa-msg-42"
    # another key may use the same id: its own task, and no sign that the id exists elsewhere
    r3 = upload(client, task_id="wa-msg-42", headers=AUTH_B)
    assert r3.status_code == 202 and r3.json()["task_id"] == "wa-msg-42"
    a = client.get("/status/wa-msg-42", headers=AUTH).json()
    b = client.get("/status/wa-msg-42", headers=AUTH_B).json()
    assert a["task_id"] == b["task_id"] == "wa-msg-42" and a["created_at"] != b["created_at"]
    r4 = upload(client, task_id="bad id with spaces")
    assert r4.status_code == 422 and r4.json()["error"]["code"] == "invalid_request"


def test_media_errors_are_422_with_the_media_code(tmp_path, fake):
    app = create_app(settings_for(tmp_path, max_duration_s=3.0), pipeline=fake)
    with TestClient(app) as c:
        r = upload(c)
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_long"
        assert "lasts 5 s; the limit is 3 s" in r.json()["error"]["message"]
        r = upload(c, data=b"just some text", name="x.txt")
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_media"
        assert "x.txt" in r.json()["error"]["message"] and "uploads" not in r.json()["error"]["message"]
        r = upload(c, data=b"", name="empty.mp4")
        assert r.status_code == 422 and r.json()["error"]["code"] == "empty_file"
    assert fake.calls == 0 and list((tmp_path / "uploads").iterdir()) == []


def test_upload_size_cap_is_413(tmp_path, fake):
    app = create_app(settings_for(tmp_path, max_file_bytes=100_000), pipeline=fake)
    with TestClient(app) as c:
        r = upload(c)  # 164 kB > 100 kB (within the multipart allowance: refused while storing)
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
        r = upload(c, data=b"\0" * 1_300_000)  # beyond the allowance: refused on Content-Length
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"

        def chunks():  # no Content-Length at all: refused while receiving
            boundary = b"--b0undary"
            yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
            for _ in range(40):
                yield b"\0" * 65536
            yield b"\r\n" + boundary + b"--\r\n"

        r = c.post("/detect", content=chunks(),
                   headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b0undary"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert list((tmp_path / "uploads").iterdir()) == []


def test_daily_rate_limit_is_429_with_retry_after_and_survives_restart(tmp_path, fake):
    s = settings_for(tmp_path, daily_limit_per_key=3)
    with TestClient(create_app(s, pipeline=fake)) as c:
        for i in range(3):
            assert upload(c, data=CLIP.read_bytes() + bytes([i])).status_code == 202
        r = upload(c, data=CLIP.read_bytes() + b"x")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        retry = int(r.headers["retry-after"])
        assert abs(retry - seconds_to_utc_midnight()) <= 2 and 0 < retry <= 86400
        assert upload(c, data=CLIP.read_bytes() + b"y", headers=AUTH_B).status_code == 202  # per key
        r = c.post("/detect_video", json={"video_url": "https://example.org/a.mp4"}, headers=AUTH)
        assert r.status_code == 429  # refused before any download
    with TestClient(create_app(s, pipeline=fake)) as c:  # counted in the database: a restart does not reset it
        assert upload(c, data=CLIP.read_bytes() + b"z").status_code == 429


def test_callback_requires_a_configured_secret(client):
    r = upload(client, callback_url="https://hooks.example.org/x")
    assert r.status_code == 422 and r.json()["error"]["code"] == "callbacks_disabled"


def test_health_reports_detectors_database_and_queue(client):
    anonymous = client.get("/health").json()  # liveness only: nothing about keys, queue or detectors
    assert anonymous == {"status": "ok", "pipeline": {"state": "ready", "detectors": None, "error": None},
                         "database": {"ok": True}, "queue": None, "auth": None}
    h = client.get("/health", headers=AUTH).json()
    assert h["status"] == "ok" and h["pipeline"]["state"] == "ready"
    assert h["pipeline"]["detectors"] == FakePipeline().loaded_detectors
    assert h["database"] == {"backend": "sqlite", "ok": True}
    assert h["queue"] == {"pending": 0, "processing": 0}
    assert h["auth"] == {"api_keys": 2, "daily_limit_per_key": 50}


def test_health_while_the_pipeline_loads(tmp_path):
    import threading

    gate = threading.Event()

    def slow_loader_settings():
        return settings_for(tmp_path)

    app = create_app(slow_loader_settings(), pipeline=None)
    holder = app.state.pipelines
    holder._loader = lambda: (gate.wait(10), FakePipeline())[1]
    with TestClient(app) as c:
        assert c.get("/health").json()["status"] == "loading"
        tid = upload(c).json()["task_id"]  # accepted while loading: queued, not claimed yet
        time.sleep(0.3)
        assert c.get(f"/status/{tid}", headers=AUTH).json()["status"] == "pending"
        gate.set()
        assert poll(c, tid)["status"] == "completed"
        assert c.get("/health").json()["status"] == "ok"


def test_detect_video_json_bodies_are_capped(client):
    big = b'{"video_url": "https://example.org/' + b"a" * 70_000 + b'"}'
    r = client.post("/detect_video", content=big, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"


def test_the_api_writes_the_same_row_on_postgres(tmp_path, fake):
    """The service on the direct-Postgres backend (a throwaway database, migrations applied on connect)."""
    import uuid
    from urllib.parse import urlsplit

    import psycopg

    admin = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"test_api_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(admin)._replace(path=f"/{name}").geturl()
    try:
        app = create_app(settings_for(tmp_path, database_url=url), pipeline=fake)
        with TestClient(app) as c:
            assert c.get("/health", headers=AUTH).json()["database"] == {"backend": "postgres", "ok": True}
            tid = upload(c).json()["task_id"]
            st = poll(c, tid)
            assert upload(c).json()["cached"] is True
        app.state.repo.close()
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT detection_result, confidence_score, detector_scores, model_metadata, status "
                               "FROM detection_history WHERE task_id = %s", (tid,)).fetchone()
        expected = FakePipeline().run(CLIP, source_name="clip.mp4")
        assert row[0] == expected.verdict.value.lower() and float(row[1]) == round(expected.confidence * 100, 2)
        assert row[2] == expected.detector_scores() == st["report"]["detector_scores"]
        assert row[3]["media"] == expected.model_metadata()["media"] and row[4] == "completed"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

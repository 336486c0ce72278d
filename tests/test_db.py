"""detection_history: the migration on real PostgreSQL, RLS, and the repository contract on every backend.

PostgreSQL tests use a throwaway database per session (``test_<random>``, dropped at the end) on the
server at 127.0.0.1:5432 (``PG_ADMIN_URL`` overrides). The Supabase backend is exercised against a
loopback HTTP server that plays PostgREST and records what the client sends.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row

from db import sqlite_path
from db.postgres import MIGRATIONS_DIR, PostgresRepository, apply_migrations
from db.repository import (
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    DuplicateTaskError,
    JobRow,
    NewJob,
    RateLimitExceeded,
    api_key_id,
    iso,
    result_columns,
    utcnow,
)
from db.sqlite import SqliteRepository
from db.supabase import SupabaseRepository
from pipeline.report import (
    SLOTS,
    DetectorResult,
    Fusion,
    MediaSummary,
    ModelUsed,
    Report,
    Status,
    Verdict,
)

ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
SEED = MIGRATIONS_DIR / "20250101000000_seed_detection_history.sql"
MULTIMODAL = MIGRATIONS_DIR / "20261124000000_multimodal_detection.sql"


def make_report(verdict: Verdict = Verdict.FAKE, p: float = 0.87, conf: float = 0.7391, sha: str = "ab" * 32,
                reason: str | None = None) -> Report:
    dets = tuple(
        DetectorResult(slot=s, model=f"m:{s}", status=Status.OK, score=round(p - 0.05 * i, 4))
        for i, s in enumerate(SLOTS)
    )
    return Report(
        verdict=verdict, reason=reason,
        fusion=Fusion("seed-fixed-weights", p, conf, (0.3, 0.7), tuple((s, 0.25) for s in SLOTS)),
        detectors=dets, tracks=(), face_quality=0.8123,
        media=MediaSummary("video", 5.2, 224, 224, 25.0, True, True, 0, "mov", "h264", "aac", 1234, sha),
        models_used=tuple(ModelUsed(s, f"m:{s}", f"{s}.pth", "cd" * 32) for s in SLOTS),
        device="cpu", stage_seconds=(("decode", 0.5), ("faces", 1.25)), frames_analyzed=10,
        source_name="clip.mp4", created_at="2026-11-24T10:00:00+00:00",
    )


# ----------------------------------------------------------------------------------------------
# PostgreSQL fixtures
# ----------------------------------------------------------------------------------------------
def _db_url(name: str) -> str:
    base = urlsplit(ADMIN_URL)
    return base._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="session")
def pg_factory():
    """Creates throwaway databases; drops them all at the end of the session."""
    created: list[str] = []

    def make(migrate: bool = True) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = _db_url(name)
        if migrate:
            apply_migrations(url)
        return url

    yield make
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url(pg_factory) -> str:
    return pg_factory()


@pytest.fixture(params=["sqlite", "postgres"])
def repo(request, tmp_path, pg_factory):
    if request.param == "sqlite":
        r = SqliteRepository(tmp_path / "db.sqlite3")
    else:
        r = PostgresRepository(pg_factory(migrate=False))  # the repository applies the migrations itself
    yield r
    r.close()


def _sql(url: str, query: str, args=None):
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else None


# ----------------------------------------------------------------------------------------------
# Migration
# ----------------------------------------------------------------------------------------------
def test_migration_is_idempotent_and_old_rows_read_back_with_empty_json(pg_factory):
    url = pg_factory(migrate=False)
    _sql(url, SEED.read_text())
    old_id = _sql(url, "INSERT INTO detection_history (user_id, file_url, file_type, detection_result, "
                       "confidence_score) VALUES (gen_random_uuid(), 'https://x/a.mp4', 'video', 'fake', 91.5) "
                       "RETURNING id")[0]["id"]
    for _ in range(2):  # twice: idempotent
        _sql(url, MULTIMODAL.read_text())
    row = _sql(url, "SELECT * FROM detection_history WHERE id = %s", (old_id,))[0]
    assert row["detector_scores"] == {} and row["model_metadata"] == {}
    assert row["status"] == COMPLETED and row["detection_result"] == "fake"
    assert float(row["confidence_score"]) == 91.5
    job = JobRow.from_mapping(row)
    assert job.is_final and job.report_dict() is None and job.detector_scores == {}
    # the old code path (insert with the seed's columns only) still works after the migration
    _sql(url, "INSERT INTO detection_history (file_url, detection_result, confidence_score) "
              "VALUES ('u', 'authentic', 12)")
    assert _sql(url, "SELECT count(*) AS n FROM detection_history WHERE detector_scores = '{}'::jsonb")[0]["n"] == 2


def test_migration_on_a_preexisting_seed_table_without_the_seed_file(pg_factory):
    url = pg_factory(migrate=False)
    _sql(url, "CREATE TABLE detection_history (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid, "
              "file_url text, file_type text, detection_result text, confidence_score decimal(5,2), "
              "created_at timestamptz DEFAULT now())")
    _sql(url, "INSERT INTO detection_history (detection_result, confidence_score) VALUES ('suspicious', 55.25)")
    _sql(url, MULTIMODAL.read_text())
    _sql(url, MULTIMODAL.read_text())
    repo = PostgresRepository(url, migrate=False)
    try:
        row = JobRow.from_mapping(_sql(url, "SELECT * FROM detection_history")[0])
        assert (row.detector_scores, row.model_metadata, row.status) == ({}, {}, COMPLETED)
        assert repo.queue_counts() == {PENDING: 0, PROCESSING: 0}
        created = repo.create_job(NewJob(task_id="t-new"))
        assert created.status == PENDING and created.detection_result == PENDING
    finally:
        repo.close()
    cols = {r["column_name"] for r in _sql(url, "SELECT column_name FROM information_schema.columns "
                                                "WHERE table_name = 'detection_history'")}
    assert {"detector_scores", "model_metadata", "task_id", "status", "stage", "reason", "content_sha256",
            "api_key_id", "callback_url", "callback_attempts", "callback_delivered_at", "attempts", "started_at",
            "completed_at", "updated_at"} <= cols


def test_gin_index_and_the_seeds_detector_scores_query(pg_url):
    repo = PostgresRepository(pg_url, migrate=False)
    try:
        repo.create_job(NewJob(task_id=f"gin-{uuid.uuid4().hex}"))  # no scores yet
        job = repo.create_job(NewJob(task_id=f"gin-{uuid.uuid4().hex}"))
        claimed = repo.claim(job.task_id)
        repo.complete(job.task_id, claimed.attempts, make_report())
    finally:
        repo.close()
    rows = _sql(pg_url, "SELECT task_id, detector_scores->>'face_quality' AS fq FROM detection_history "
                        "WHERE detector_scores->>'face_quality' IS NOT NULL")
    assert [r["task_id"] for r in rows] == [job.task_id] and float(rows[0]["fq"]) == 0.8123
    idx = _sql(pg_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'detection_history_detector_scores_gin'")
    assert "USING gin (detector_scores)" in idx[0]["indexdef"]
    # containment queries can use that GIN index
    hits = _sql(pg_url, "SELECT task_id FROM detection_history WHERE detector_scores @> '{\"verdict\": \"FAKE\"}'")
    assert [h["task_id"] for h in hits] == [job.task_id]
    names = {r["indexname"] for r in _sql(pg_url, "SELECT indexname FROM pg_indexes "
                                                  "WHERE tablename = 'detection_history'")}
    assert {"detection_history_queue_idx", "detection_history_sha256_idx", "detection_history_task_id_key"} <= names


def test_rls_users_read_only_their_rows_and_service_role_writes(pg_url):
    user_a, user_b = str(uuid.uuid4()), str(uuid.uuid4())
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(pg_url, row_factory=dict_row) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE service_role")
            for user, n in ((user_a, 2), (user_b, 1)):
                for i in range(n):
                    conn.execute("INSERT INTO detection_history (user_id, task_id, detection_result) "
                                 "VALUES (%s, %s, 'fake')", (user, f"rls-{tag}-{user[:4]}-{i}"))
            # service_role sees everything
            n_all = conn.execute("SELECT count(*) AS n FROM detection_history WHERE task_id LIKE %s",
                                 (f"rls-{tag}-%",)).fetchone()["n"]
            assert n_all == 3
        for user, expected in ((user_a, 2), (user_b, 1)):
            with conn.transaction():
                conn.execute("SET LOCAL ROLE authenticated")
                conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (user,))
                rows = conn.execute("SELECT user_id FROM detection_history").fetchall()
                assert len(rows) == expected and {str(r["user_id"]) for r in rows} == {user}
        with conn.transaction():  # no JWT: nothing visible
            conn.execute("SET LOCAL ROLE authenticated")
            assert conn.execute("SELECT count(*) AS n FROM detection_history").fetchone()["n"] == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (user_a,))
            conn.execute("INSERT INTO detection_history (user_id, detection_result) VALUES (%s, 'fake')", (user_a,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")  # queue functions are for the service only
            conn.execute("SELECT * FROM detection_claim(NULL)")


# ----------------------------------------------------------------------------------------------
# Repository contract (SQLite and PostgreSQL)
# ----------------------------------------------------------------------------------------------
def test_row_shape_is_the_same_everywhere(repo):
    key = api_key_id("k1")
    job = repo.create_job(NewJob(task_id="t1", api_key_id=key, content_sha256="ab" * 32, source_name="clip.mp4",
                                 storage_path="/tmp/x.mp4", callback_url="https://cb.example/h",
                                 user_id=str(uuid.uuid4())))
    assert (job.status, job.detection_result, job.attempts, job.detector_scores) == (PENDING, PENDING, 0, {})
    assert job.created_at is not None and job.created_at.tzinfo is not None
    with pytest.raises(DuplicateTaskError):
        repo.create_job(NewJob(task_id="t1"))
    claimed = repo.claim()
    assert claimed.task_id == "t1" and claimed.status == PROCESSING and claimed.attempts == 1
    assert claimed.detection_result == PROCESSING and claimed.started_at is not None
    assert repo.claim() is None  # nothing else pending
    assert repo.heartbeat("t1", 1, "faces", 0.25)
    assert (repo.get("t1").stage, repo.get("t1").progress) == ("faces", 0.25)
    assert not repo.heartbeat("t1", 2, "faces")  # another attempt's heartbeat: not ours
    report = make_report()
    assert repo.complete("t1", 2, report) is None  # a stale attempt cannot write
    done = repo.complete("t1", 1, report)
    assert done.status == COMPLETED and done.detection_result == "fake"
    assert done.confidence_score == 73.91  # 0-100, two decimals
    assert done.detector_scores == json.loads(json.dumps(report.detector_scores()))
    assert done.model_metadata == json.loads(json.dumps(report.model_metadata()))
    assert done.report_dict() == json.loads(json.dumps(report.to_dict()))
    assert done.completed_at is not None and done.stage is None
    again = repo.get("t1")
    assert again.report_dict() == done.report_dict() and again.user_id == job.user_id
    assert repo.find_completed_by_sha256("ab" * 32, key).task_id == "t1"
    assert repo.find_completed_by_sha256("cd" * 32, key) is None
    # the cache is per API key: another key (or none) never gets this key's result
    assert repo.find_completed_by_sha256("ab" * 32, api_key_id("other")) is None
    assert repo.find_completed_by_sha256("ab" * 32) is None
    assert repo.count_today(key) == 1 and repo.count_today(api_key_id("other")) == 0
    assert repo.count_today(key, now=utcnow() + timedelta(days=1)) == 0  # a new UTC day
    # callbacks
    assert [r.task_id for r in repo.undelivered_callbacks(3)] == ["t1"]
    repo.record_callback_attempt("t1", 1, 503, "HTTP 503", False)
    r = repo.get("t1")
    assert (r.callback_attempts, r.callback_last_status, r.callback_last_error) == (1, 503, "HTTP 503")
    repo.record_callback_attempt("t1", 2, 200, None, True)
    r = repo.get("t1")
    assert r.callback_attempts == 2 and r.callback_delivered_at is not None
    assert repo.undelivered_callbacks(3) == []


def test_failed_and_not_applicable_reports_keep_the_seed_vocabulary(repo):
    for tid, verdict, status in (("f1", Verdict.FAILED, FAILED), ("n1", Verdict.NOT_APPLICABLE, COMPLETED)):
        repo.create_job(NewJob(task_id=tid))
        c = repo.claim(tid)
        row = repo.complete(tid, c.attempts, make_report(verdict, reason="no face and no speech"))
        assert row.status == status and row.detection_result == verdict.value.lower()
        assert row.reason == "no face and no speech"
    repo.create_job(NewJob(task_id="x1"))
    row = repo.fail("x1", "the uploaded media is missing", "media_missing")
    assert (row.status, row.detection_result, row.error_code) == (FAILED, FAILED, "media_missing")
    assert repo.fail("x1", "again", "x") is None  # already final


def test_cached_copy_points_at_the_original(repo):
    repo.create_job(NewJob(task_id="orig", content_sha256="ee" * 32))
    c = repo.claim()
    orig = repo.complete("orig", c.attempts, make_report(sha="ee" * 32))
    copy = repo.create_job(NewJob.cached_copy(orig, task_id="copy1", content_sha256="ee" * 32))
    assert copy.status == COMPLETED and copy.cached_from == "orig" and copy.report_dict() == orig.report_dict()
    copy2 = repo.create_job(NewJob.cached_copy(copy, task_id="copy2", content_sha256="ee" * 32))
    assert copy2.cached_from == "orig" and copy2.confidence_score == orig.confidence_score


def test_requeue_stale_then_fail_after_max_attempts(repo):
    repo.create_job(NewJob(task_id="s1"))
    first = repo.claim()
    assert repo.requeue_stale(60, 2) == []  # fresh heartbeat: not stale
    changed = repo.requeue_stale(0, 2)
    assert [(r.task_id, r.status, r.detection_result) for r in changed] == [("s1", PENDING, PENDING)]
    assert repo.complete("s1", first.attempts, make_report()) is None  # the dead attempt lost the job
    second = repo.claim()
    assert second.attempts == 2
    changed = repo.requeue_stale(0, 2)
    assert [(r.task_id, r.status, r.error_code) for r in changed] == [("s1", FAILED, "worker_lost")]
    assert "gave up after 2 attempts" in changed[0].reason
    assert repo.queue_counts() == {PENDING: 0, PROCESSING: 0}


def test_claims_are_exclusive_under_concurrency(repo):
    for i in range(20):
        repo.create_job(NewJob(task_id=f"c{i:02d}"))
    got: list[str] = []
    lock = threading.Lock()

    def worker():
        while (job := repo.claim()) is not None:
            with lock:
                got.append(job.task_id)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"c{i:02d}" for i in range(20)]  # each exactly once


def test_daily_quota_is_atomic_with_the_insert(repo):
    key = api_key_id("quota-key")
    results: list[str] = []
    lock = threading.Lock()

    def submit(i):
        try:
            repo.create_job(NewJob(task_id=f"q{i}", api_key_id=key), daily_limit=5)
            out = "ok"
        except RateLimitExceeded:
            out = "limited"
        with lock:
            results.append(out)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 5 and results.count("limited") == 7
    assert repo.count_today(key) == 5
    repo.create_job(NewJob(task_id="other", api_key_id=api_key_id("k2")), daily_limit=5)  # other keys unaffected


def test_sqlite_url_parsing_and_persistence(tmp_path):
    assert sqlite_path("sqlite:///var/x.db") == "var/x.db"
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("sqlite://") == ":memory:"
    path = tmp_path / "sub" / "p.sqlite3"
    r1 = SqliteRepository(path)
    r1.create_job(NewJob(task_id="persist"))
    r1.close()
    r2 = SqliteRepository(path)  # a restart reads the same queue
    assert r2.claim().task_id == "persist"
    assert r2._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    r2.close()


# ----------------------------------------------------------------------------------------------
# Supabase backend against a loopback PostgREST stand-in
# ----------------------------------------------------------------------------------------------
def _row(task_id: str, **kw) -> dict:
    base = {"id": str(uuid.uuid4()), "task_id": task_id, "status": PENDING, "detection_result": PENDING,
            "confidence_score": None, "detector_scores": {}, "model_metadata": {}, "report_summary": {},
            "attempts": 0, "callback_attempts": 0, "created_at": "2026-11-24T10:00:00.12345+00:00",
            "updated_at": "2026-11-24T10:00:00+00:00"}
    return {**base, **kw}


class FakePostgrest:
    """Records every request; answers from a queue of canned (status, json, headers) replies."""

    def __init__(self):
        self.requests: list[dict] = []
        self.replies: list[tuple[int, object, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                parts = urlsplit(self.path)
                outer.requests.append({
                    "method": self.command, "path": parts.path, "query": parse_qs(parts.query),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "json": json.loads(body) if body else None,
                })
                status, payload, headers = outer.replies.pop(0) if outer.replies else (200, [], {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, status: int = 200, payload=None, headers: dict | None = None):
        self.replies.append((status, [] if payload is None else payload, headers or {}))

    def close(self):
        self.server.shutdown()


@pytest.fixture()
def postgrest():
    server = FakePostgrest()
    yield server
    server.close()


SERVICE_KEY = "service-role-key-for-tests"


def _assert_auth(req):
    assert req["headers"]["apikey"] == SERVICE_KEY
    assert req["headers"]["authorization"] == f"Bearer {SERVICE_KEY}"


def test_supabase_backend_speaks_postgrest(postgrest):
    repo = SupabaseRepository(postgrest.url, SERVICE_KEY)
    key = api_key_id("k1")

    postgrest.reply(200, [_row("t1", api_key_id=key)])
    job = repo.create_job(NewJob(task_id="t1", api_key_id=key, content_sha256="ab" * 32), daily_limit=7)
    req = postgrest.requests[-1]
    _assert_auth(req)
    assert (req["method"], req["path"]) == ("POST", "/rest/v1/rpc/detection_enqueue")
    assert req["json"]["p_daily_limit"] == 7
    assert req["json"]["p_row"]["task_id"] == "t1" and req["json"]["p_row"]["api_key_id"] == key
    assert req["json"]["p_row"]["status"] == PENDING and req["json"]["p_row"]["detector_scores"] == {}
    assert job.task_id == "t1" and job.created_at.microsecond == 123450

    postgrest.reply(200, [])  # the function inserted nothing: over quota
    with pytest.raises(RateLimitExceeded):
        repo.create_job(NewJob(task_id="t2", api_key_id=key), daily_limit=7)

    postgrest.reply(409, {"code": "23505", "message": "duplicate key value violates unique constraint",
                          "details": None, "hint": None})
    with pytest.raises(DuplicateTaskError):
        repo.create_job(NewJob(task_id="t1"))

    postgrest.reply(200, [_row("t1", status=PROCESSING, attempts=1)])
    assert repo.get("t1").status == PROCESSING
    req = postgrest.requests[-1]
    _assert_auth(req)
    assert (req["method"], req["path"]) == ("GET", "/rest/v1/detection_history")
    assert req["query"]["task_id"] == ["eq.t1"] and req["query"]["select"] == ["*"] and req["query"]["limit"] == ["1"]

    postgrest.reply(200, [_row("t1", status=PROCESSING, attempts=1)])
    assert repo.claim().attempts == 1
    req = postgrest.requests[-1]
    assert (req["path"], req["json"]) == ("/rest/v1/rpc/detection_claim", {"p_task_id": None})

    postgrest.reply(200, [_row("t1", status=PROCESSING, attempts=1, stage="faces")])
    assert repo.heartbeat("t1", 1, "faces", 0.5)
    req = postgrest.requests[-1]
    assert (req["method"], req["path"]) == ("PATCH", "/rest/v1/detection_history")
    assert req["query"]["task_id"] == ["eq.t1"] and req["query"]["status"] == ["eq.processing"]
    assert req["query"]["attempts"] == ["eq.1"]
    assert req["json"] == {"attempts": 1, "stage": "faces", "progress": 0.5}
    assert "return=representation" in req["headers"]["prefer"]

    report = make_report()
    cols = result_columns(report)
    postgrest.reply(200, [_row("t1", **{k: v for k, v in cols.items()}, attempts=1)])
    done = repo.complete("t1", 1, report)
    req = postgrest.requests[-1]
    assert req["method"] == "PATCH" and req["query"]["attempts"] == ["eq.1"]
    assert req["json"]["detector_scores"] == json.loads(json.dumps(report.detector_scores()))
    assert req["json"]["model_metadata"] == json.loads(json.dumps(report.model_metadata()))
    assert req["json"]["detection_result"] == "fake" and req["json"]["confidence_score"] == 73.91
    assert req["json"]["status"] == COMPLETED and "completed_at" in req["json"]
    assert done.report_dict() == json.loads(json.dumps(report.to_dict()))

    postgrest.reply(200, [], {"Content-Range": "0-0/4"})
    assert repo.count_today(key) == 4
    req = postgrest.requests[-1]
    assert req["query"]["api_key_id"] == [f"eq.{key}"] and req["query"]["created_at"][0].startswith("gte.")
    assert "count=exact" in req["headers"]["prefer"]

    postgrest.reply(200, [_row("t1", status=COMPLETED)])
    assert repo.find_completed_by_sha256("ab" * 32, key).task_id == "t1"
    req = postgrest.requests[-1]
    assert req["query"]["content_sha256"] == [f"eq.{'ab' * 32}"] and req["query"]["status"] == ["eq.completed"]
    assert req["query"]["api_key_id"] == [f"eq.{key}"]
    assert req["query"]["order"] == ["completed_at.desc"]

    postgrest.reply(200, [_row("t1")])
    repo.record_callback_attempt("t1", 2, 200, None, True)
    req = postgrest.requests[-1]
    assert req["method"] == "PATCH" and req["json"]["callback_attempts"] == 2
    assert req["json"]["callback_last_status"] == 200 and "callback_delivered_at" in req["json"]

    postgrest.reply(200, [_row("t9", status=PENDING, attempts=1)])
    assert [r.task_id for r in repo.requeue_stale(30.0, 3)] == ["t9"]
    req = postgrest.requests[-1]
    assert (req["path"], req["json"]) == ("/rest/v1/rpc/detection_requeue_stale",
                                          {"p_stale_after_s": 30.0, "p_max_attempts": 3})

    postgrest.reply(200, [_row("t1", status=FAILED, attempts=1)])
    repo.fail("t1", "boom", "internal_error", attempt=1)
    req = postgrest.requests[-1]
    assert req["json"]["status"] == FAILED and req["json"]["reason"] == "boom"
    assert req["query"]["status"] == ["eq.processing"]

    postgrest.reply(200, [])
    repo.undelivered_callbacks(5)
    req = postgrest.requests[-1]
    assert req["query"]["status"] == ["in.(completed,failed)"] and req["query"]["callback_url"] == ["not.is.null"]
    assert req["query"]["callback_delivered_at"] == ["is.null"] and req["query"]["callback_attempts"] == ["lt.5"]
    for r in postgrest.requests:
        _assert_auth(r)


def test_supabase_is_chosen_from_settings(tmp_path, postgrest):
    import db
    from pipeline.settings import Settings

    s = Settings(supabase_url=postgrest.url, supabase_service_key=SERVICE_KEY, database_url="sqlite:///ignored.db")
    r = db.connect(s)
    assert r.backend == "supabase"
    s2 = Settings(database_url=f"sqlite:///{tmp_path}/x.sqlite3")
    r2 = db.connect(s2)
    assert r2.backend == "sqlite" and Path(tmp_path / "x.sqlite3").exists()
    r2.close()
    assert iso(utcnow()).endswith("+00:00")

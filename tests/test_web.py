"""The result pages' server side: the history query on every backend, the JSON routes, the static files,
and the React component's own Vitest suite (run through npm so `make test` covers it)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time

import pytest
from conftest import DEV_DATA, REPO_ROOT
from fake_pipeline import FakePipeline
from fastapi.testclient import TestClient
from test_db import SERVICE_KEY, FakePostgrest, _row, pg_factory, repo  # noqa: F401  (fixtures)

from db.repository import COMPLETED, NewJob, Repository, api_key_id, iso, result_columns, utcnow
from db.supabase import SupabaseRepository
from pipeline.labels import LABELS_FILE
from pipeline.report import (
    SLOTS,
    DetectorResult,
    Fusion,
    MediaSummary,
    ModelUsed,
    Report,
    Status,
    TimelinePoint,
    TrackResult,
    Verdict,
)
from pipeline.settings import Settings
from web.server import create_app
from whatsapp.webhook import origin_url

CLIP = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"
REACT_DIR = REPO_ROOT / "web" / "react"


# ----------------------------------------------------------------------------------------------
# Rows for the pages (also used by the browser tests)
# ----------------------------------------------------------------------------------------------
def face_thumbnail(clip=CLIP, size: int = 112) -> str:
    """A JPEG (base64) of the clip's first frame, centre crop: what a track thumbnail looks like."""
    import av
    import cv2

    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="bgr24")
    h, w = frame.shape[:2]
    side = min(h, w)
    crop = frame[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    ok, jpg = cv2.imencode(".jpg", cv2.resize(crop, (size, size)))
    assert ok
    return base64.b64encode(jpg.tobytes()).decode()


def extreme_report(thumbnail: str | None = None) -> Report:
    """Visual 100 %, temporal consistency 0 % (temporal P(fake) 1), audio 0 %, lip sync not applicable, mouth
    blur 0 %, voice change not applicable, face quality 100 %: the bar extremes, with per-second timelines and one
    face track."""
    def timeline(f):
        return tuple(TimelinePoint(float(s), float(s + 1), f(s)) for s in range(6))

    dets = (
        DetectorResult("visual", "mesonet:mesoinception_df", Status.OK, score=1.0,
                       timeline=timeline(lambda s: 1.0 if s < 3 else 0.6)),
        DetectorResult("temporal", "lrasd-head:temporal", Status.OK, score=1.0, timeline=timeline(lambda s: 1.0)),
        DetectorResult("audio", "aasist:aasist", Status.OK, score=0.0, timeline=timeline(lambda s: 0.0)),
        DetectorResult("lip_sync", "sync:lrasd", Status.NOT_APPLICABLE, reason="no speech in the audio track"),
        DetectorResult("mouth", "mouth_blur", Status.OK, score=0.0, timeline=timeline(lambda s: 0.0)),
        DetectorResult("voice_change", "voice_change", Status.NOT_APPLICABLE, reason="0 window(s) of clear speech"),
    )
    track = TrackResult(0, True, False, 12, 0.2, 5.8, 154.0, 1.0, 1.0, box=(40.0, 30.0, 190.0, 200.0),
                        thumbnail_jpeg_b64=thumbnail)
    return Report(
        verdict=Verdict.FAKE, reason=None,
        fusion=Fusion("seed-fixed-weights", 0.75, 0.5, (0.35, 0.65), tuple((s, 0.25) for s in SLOTS),
                      note="test report"),
        detectors=dets, tracks=(track,), face_quality=1.0,
        media=MediaSummary("video", 6.0, 224, 224, 25.0, True, True, 0, "mov,mp4", "h264", "aac", 164_061, "ab" * 32),
        models_used=tuple(ModelUsed(s, f"model:{s}", f"{s}.pth", "cd" * 32) for s in SLOTS),
        device="cpu", stage_seconds=(("decode", 0.4), ("faces", 3.2), ("visual", 1.1)), frames_analyzed=12,
        source_name="extremes.mp4", created_at="2026-11-24T10:00:00+00:00",
    )


def add_completed(store: Repository, task_id: str, report: Report, key: str | None = "key-a", **kw):
    """A finished row inserted as such (never pending: a running worker pool would claim it)."""
    cols = result_columns(report)
    return store.create_job(NewJob(
        task_id=task_id, api_key_id=api_key_id(key) if key else None, source_name=report.source_name,
        file_type=report.media.kind if report.media else None, completed_at=utcnow(),
        **{k: cols[k] for k in ("status", "detection_result", "confidence_score", "detector_scores",
                                "model_metadata", "report_summary", "reason", "error_code")}, **kw))


def add_old_row(store: Repository, task_id: str | None, key: str | None = "key-a"):
    """A seed-era row: an image verdict with a confidence and nothing else."""
    return store.create_job(NewJob(task_id=task_id, status=COMPLETED, detection_result="fake", confidence_score=87.5,
                                  file_type="image", file_url="https://storage.example/old.jpg",
                                  api_key_id=api_key_id(key) if key else None))


# ----------------------------------------------------------------------------------------------
# Repository.list_jobs on every backend
# ----------------------------------------------------------------------------------------------
def test_list_jobs_newest_first_pages_and_filters_by_key(repo):  # noqa: F811  (sqlite and postgres)
    a, b = api_key_id("key-a"), api_key_id("key-b")
    for i in range(5):
        repo.create_job(NewJob(task_id=f"h{i}", api_key_id=a if i != 2 else b))
        time.sleep(0.002)  # distinct created_at
    assert [r.task_id for r in repo.list_jobs()] == ["h4", "h3", "h2", "h1", "h0"]
    assert [r.task_id for r in repo.list_jobs(api_key_id=a)] == ["h4", "h3", "h1", "h0"]
    first = repo.list_jobs(limit=2, api_key_id=a)
    assert [r.task_id for r in first] == ["h4", "h3"]
    rest = repo.list_jobs(limit=2, api_key_id=a, before=first[-1].created_at)
    assert [r.task_id for r in rest] == ["h1", "h0"]
    assert repo.list_jobs(limit=2, api_key_id=a, before=rest[-1].created_at) == []
    assert repo.list_jobs(api_key_id=api_key_id("nobody")) == []
    assert repo.list_jobs(limit=0) == []


def test_supabase_list_jobs_query():
    pg = FakePostgrest()
    try:
        r = SupabaseRepository(pg.url, SERVICE_KEY)
        pg.reply(200, [_row("s2"), _row("s1")])
        before = utcnow()
        got = r.list_jobs(limit=2, before=before, api_key_id="k")
        assert [x.task_id for x in got] == ["s2", "s1"]
        req = pg.requests[-1]
        assert (req["method"], req["path"]) == ("GET", "/rest/v1/detection_history")
        assert req["query"]["order"] == ["created_at.desc.nullslast,id.desc"] and req["query"]["limit"] == ["2"]
        assert req["query"]["created_at"] == [f"lt.{iso(before)}"] and req["query"]["api_key_id"] == ["eq.k"]
        pg.reply(200, [])
        r.list_jobs()
        assert "api_key_id" not in pg.requests[-1]["query"] and "created_at" not in pg.requests[-1]["query"]
    finally:
        pg.close()


# ----------------------------------------------------------------------------------------------
# Routes
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def app_and_store(tmp_path):
    s = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "uploads",
                 api_keys=["key-a", "key-b", "admin-key"], web_admin_keys=["admin-key"], queue_poll_s=0.05)
    app = create_app(s, pipeline=FakePipeline())
    with TestClient(app) as c:
        yield c, app.state.repo


def auth(key: str = "key-a") -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_history_lists_own_rows_newest_first_and_admins_see_all(app_and_store):
    c, store = app_and_store
    add_old_row(store, None)
    time.sleep(0.002)  # distinct created_at: the order is the point
    add_completed(store, "rich", extreme_report())
    time.sleep(0.002)
    add_completed(store, "b-row", extreme_report(), key="key-b")
    time.sleep(0.002)
    store.create_job(NewJob(task_id="wa:wamid.X", source_url=origin_url("4915112345678", "wamid.X"),
                           api_key_id=api_key_id("whatsapp:4915112345678"), source_name="whatsapp-video.mp4"))
    r = c.get("/history", headers=auth())
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["task_id"] for i in items] == ["rich", None]
    rich, old = items
    assert rich["status"] == "completed" and rich["detection_result"] == "fake" and rich["has_detector_scores"]
    assert rich["final_weighted_score"] == 0.75 and rich["verdict"] == "FAKE"
    assert old["has_detector_scores"] is False and old["confidence_score"] == 87.5 and old["file_type"] == "image"
    assert old["source"] == {"channel": "seed", "label": "https://storage.example/old.jpg"}
    admin = c.get("/history", headers=auth("admin-key")).json()
    assert admin["admin"] is True
    assert [i["task_id"] for i in admin["items"]] == ["wa:wamid.X", "b-row", "rich", None]
    wa = admin["items"][0]
    assert wa["source"] == {"channel": "whatsapp", "label": "WhatsApp +49…678"}  # the number is masked
    assert "4915112345678" not in json.dumps(admin)
    page = c.get("/history", params={"limit": 1}, headers=auth()).json()
    assert [i["task_id"] for i in page["items"]] == ["rich"] and page["next_before"]
    nxt = c.get("/history", params={"limit": 1, "before": page["next_before"]}, headers=auth()).json()
    assert [i["task_id"] for i in nxt["items"]] == [None]
    assert c.get("/history", params={"before": "yesterday"}, headers=auth()).status_code == 422
    for bad in ({}, auth("wrong")):
        r = c.get("/history", headers=bad)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_history_detail_returns_the_stored_columns_and_is_private(app_and_store):
    c, store = app_and_store
    done = add_completed(store, "rich", extreme_report())
    add_old_row(store, "old-with-id")
    d = c.get("/history/rich", headers=auth()).json()
    assert d["detector_scores"] == done.detector_scores and d["model_metadata"] == done.model_metadata
    assert d["detector_scores"]["visual_artifacts"] == 1.0 and d["detector_scores"]["temporal_consistency"] == 0.0
    old = c.get("/history/old-with-id", headers=auth()).json()
    assert old["detector_scores"] == {} and old["has_detector_scores"] is False
    assert c.get("/history/rich", headers=auth("key-b")).status_code == 404
    assert c.get("/history/rich", headers=auth("admin-key")).status_code == 200
    assert c.get("/history/nope", headers=auth()).status_code == 404
    assert c.get("/history/rich").status_code == 401


def test_upload_then_history_shows_it_until_completed(app_and_store):
    c, _ = app_and_store
    r = c.post("/detect", files={"file": ("clip.mp4", CLIP.read_bytes(), "video/mp4")}, headers=auth())
    tid = r.json()["task_id"]
    end = time.monotonic() + 20
    while (item := c.get("/history", headers=auth()).json()["items"][0])["status"] != "completed":
        assert item["task_id"] == tid and item["status"] in ("pending", "processing")
        assert time.monotonic() < end
        time.sleep(0.05)
    expected = FakePipeline().run(CLIP, source_name="clip.mp4")
    assert item["detection_result"] == expected.verdict.value.lower() and item["source_name"] == "clip.mp4"
    assert c.get(f"/history/{tid}", headers=auth()).json()["detector_scores"] == expected.detector_scores()


def test_the_page_and_its_assets_are_served(tmp_path):
    s = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "up", api_keys=["k"])
    with TestClient(create_app(s, pipeline=FakePipeline())) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/static/app.js">' in page.text and "/static/style.css" in page.text
        js = c.get("/static/app.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "/labels.json" in js.text
        labels = c.get("/labels.json")
        assert labels.status_code == 200 and labels.json() == json.loads(LABELS_FILE.read_text())
        assert c.get("/static/style.css").status_code == 200
        assert c.get("/static/routes.py").status_code == 404  # only web/static is served
        assert "/history" in c.get("/openapi.json").json()["paths"]
    off = Settings(database_url=f"sqlite:///{tmp_path}/db2.sqlite3", uploads_dir=tmp_path / "up", api_keys=["k"],
                   web_ui=False)
    with TestClient(create_app(off, pipeline=FakePipeline())) as c:
        assert c.get("/").status_code == 404 and c.get("/history", headers=auth("k")).status_code == 404


def test_labels_orientation_and_colours_have_one_source():
    """Every surface reads pipeline/labels.json: no label, hint or colour of a bar is written anywhere else."""
    spec = json.loads(LABELS_FILE.read_text())
    react_labels = REPO_ROOT / "web" / "react" / "labels.json"
    assert react_labels.resolve() == LABELS_FILE.resolve()  # a link, not a copy
    surfaces = ["web/static/app.js", "web/react/DetectorBreakdown.tsx", "pipeline/report.py", "pipeline/render.py",
                "whatsapp/messages.py", "pipeline/explain.py"]
    for rel in surfaces:
        text = (REPO_ROOT / rel).read_text()
        for bar in spec["bars"]:
            for value in (bar["label"], bar["hint"], bar["colour"], *bar["words"]):
                assert value not in text, f"{rel} repeats {value!r}: read it from labels.json"
    # every bar reads higher = more authentic: only the stored keys that already do are shown as stored
    assert {b["key"] for b in spec["bars"] if b["from"] == "same"} == {"temporal_consistency", "face_quality"}


# ----------------------------------------------------------------------------------------------
# The React component (web/react): its Vitest suite and type check
# ----------------------------------------------------------------------------------------------
def test_react_detector_breakdown_vitest_suite():
    npm = shutil.which("npm")
    assert npm, "npm is missing: install Node.js 20+ (see README, Web UI)"
    assert (REACT_DIR / "node_modules" / ".bin" / "vitest").exists(), \
        "web/react has no node_modules: run `make install` (it runs npm ci there)"
    proc = subprocess.run([npm, "test"], cwd=REACT_DIR, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_COLOR": "1", "CI": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    passed = re.search(r"Tests\s+(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 7 and " failed" not in out, out[-2000:]  # the suite really ran

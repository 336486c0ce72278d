"""Evidence figures in file storage: stored beside the row when a job completes, served to the row's owner only,
and sent to a WhatsApp user as one picture after the verdict."""

from __future__ import annotations

import time

import pytest
from fake_pipeline import FakePipeline
from fastapi.testclient import TestClient
from test_web import CLIP, auth

from pipeline.report import Figure
from pipeline.settings import Settings
from service.figures import LocalFigureStore, SupabaseFigureStore, figure_store, task_key
from web.server import create_app

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


def test_local_store_round_trip_and_refuses_foreign_names(tmp_path):
    store = LocalFigureStore(tmp_path)
    n = store.put("key:task/../1", [Figure("summary", "t", "c", PNG), Figure("../evil", "t", "c", b"no")])
    assert n == 1 and store.get("key:task/../1", "summary") == PNG
    assert [p.name for p in tmp_path.rglob("*.png")] == ["summary.png"]
    assert (tmp_path / task_key("key:task/../1") / "summary.png").is_file()  # a hashed folder, no traversal
    assert store.get("key:task/../1", "../evil") is None and store.get("other", "summary") is None


class _Bucket:
    def __init__(self, objects):
        self.objects = objects

    def upload(self, path, data, options):
        assert options["content-type"] == "image/png"
        self.objects[path] = data

    def download(self, path):
        if path not in self.objects:
            raise RuntimeError("Object not found")
        return self.objects[path]


class _Storage:
    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.buckets: list[str] = []

    def from_(self, bucket):
        self.buckets.append(bucket)
        return _Bucket(self.objects)


class _Client:
    def __init__(self):
        self.storage = _Storage()


def test_supabase_storage_beside_a_supabase_repository():
    client = _Client()
    repo = type("Repo", (), {"backend": "supabase", "client": client})()
    store = figure_store(Settings(figures_bucket="evidence"), repo)
    assert isinstance(store, SupabaseFigureStore)
    assert store.put("t1", [Figure("timeline", "t", "c", PNG)]) == 1
    assert client.storage.objects == {f"{task_key('t1')}/timeline.png": PNG}
    assert set(client.storage.buckets) == {"evidence"}
    assert store.get("t1", "timeline") == PNG and store.get("t1", "voice") is None


@pytest.fixture()
def site(tmp_path):
    s = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "uploads",
                 api_keys=["key-a", "key-b"], queue_poll_s=0.05)
    app = create_app(s, pipeline=FakePipeline(figures=True))
    with TestClient(app) as c:
        yield c, tmp_path


def _completed(c, data: bytes) -> str:
    r = c.post("/detect", files={"file": ("clip.mp4", data, "video/mp4")}, headers=auth())
    tid = r.json()["task_id"]
    end = time.monotonic() + 30
    while c.get(f"/history/{tid}", headers=auth()).json()["status"] != "completed":
        assert time.monotonic() < end
        time.sleep(0.05)
    return tid


def test_a_completed_job_serves_its_figures_to_its_owner_only(site):
    c, tmp = site
    tid = _completed(c, CLIP.read_bytes())
    listed = c.get(f"/history/{tid}", headers=auth()).json()["detector_scores"]["figures"]
    assert [f["name"] for f in listed] == ["summary"]
    r = c.get(f"/history/{tid}/figures/summary.png", headers=auth())
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
    assert list((tmp / "figures").rglob("summary.png"))  # beside the uploads, not in the database
    assert c.get(f"/history/{tid}/figures/summary.png", headers=auth("key-b")).status_code == 404
    assert c.get(f"/history/{tid}/figures/summary.png").status_code == 401
    assert c.get(f"/history/{tid}/figures/voice.png", headers=auth()).status_code == 404
    # the same bytes again: answered from the cache, with the figures of the analysis it copies
    again = c.post("/detect", files={"file": ("copy.mp4", CLIP.read_bytes(), "video/mp4")}, headers=auth()).json()
    assert again["cached"] is True
    r2 = c.get(f"/history/{again['task_id']}/figures/summary.png", headers=auth())
    assert r2.status_code == 200 and r2.content == r.content

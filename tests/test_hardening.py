"""Hostile but legitimate clients: a fuzz corpus through media intake and the API, and one test per problem
found when the service was probed (cross-key overwrite and cache poisoning, local file reads through
playlists, dimension bombs, cache leaks across keys, untyped exceptions, truncated media, smaller leaks)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest
from conftest import DEV_DATA, REPO_ROOT
from fake_pipeline import FakePipeline
from fastapi.testclient import TestClient
from fuzz_corpus import build
from test_api import poll as _poll

from pipeline import media
from pipeline.settings import Settings
from web.server import create_app

REAL = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"
FAKE = DEV_DATA / "B_fake_av" / "sadtalker" / "docs__still1.mp4"
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
RSS_GROWTH_BOUND_MB = 300  # intake of any corpus file, on top of what the imports already hold
LEAKS = re.compile(r"Errno|/tmp/|/work/|uploads/|\.part\b|Traceback")

INTAKE = textwrap.dedent("""
    import json, resource, sys, time
    from pipeline import media
    limits = media.Limits.from_settings()  # imports everything intake needs before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in sys.stdin:
        name, path, kind = json.loads(line)
        t0 = time.monotonic()
        try:
            info = media.probe(path, limits)
            if info.has_video:
                media.sample_frames(path, info, max_frames=8, limits=limits)
            if info.has_audio:
                media.load_audio(path, info, limits=limits)
            outcome, message = "ok", ""
        except media.MediaError as exc:
            outcome, message = exc.code, exc.message
        except Exception as exc:
            outcome, message = "UNTYPED " + type(exc).__name__, str(exc)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps([name, kind, outcome, time.monotonic() - t0, message, peak - base]), flush=True)
""")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("fuzz"))


def _intake(items) -> list[list]:
    lines = "".join(json.dumps([n, str(p), k]) + "\n" for n, p, k in items)
    r = subprocess.run([sys.executable, "-c", INTAKE], input=lines, capture_output=True, text=True, cwd=REPO_ROOT,
                       timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.splitlines()]


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "uploads",
                    api_keys=["key-a", "key-b"], queue_poll_s=0.05, job_heartbeat_s=0.2, **kw)


# ----------------------------------------------------------------------------------------------
# the fuzz suite
# ----------------------------------------------------------------------------------------------
def test_fuzz_corpus_through_media_intake(corpus, capsys):
    rows = _intake(corpus)
    assert len(rows) == len(corpus) >= 150
    untyped = [(r[0], r[2], r[4]) for r in rows if r[2].startswith("UNTYPED")]
    assert not untyped
    slow = [(r[0], round(r[3], 1)) for r in rows if r[3] > 20]
    assert not slow  # no hang: every file is answered within seconds
    bloat = [(r[0], round(r[5])) for r in rows if r[5] > RSS_GROWTH_BOUND_MB]
    assert not bloat, f"intake grew the process by more than {RSS_GROWTH_BOUND_MB} MB"
    leaks = [(r[0], r[4]) for r in rows if LEAKS.search(r[4])]
    assert not leaks  # messages name the file, never a path, an errno or a traceback
    by_name = {r[0]: r for r in rows}
    assert all(by_name[n][2] == "unsupported_format" for n, _, k in corpus if k == "playlist")
    assert by_name["bomb_16000.png"][2] == "bad_dimensions" and by_name["bomb_16000.png"][5] < 50
    assert all(by_name[n][2] == "ok" for n, _, k in corpus if k == "intact")
    counts = collections.Counter((r[1], r[2]) for r in rows)
    with capsys.disabled():
        print(f"\nfuzz intake: {len(rows)} files, peak growth {max(r[5] for r in rows):.0f} MB, "
              f"slowest {max(r[3] for r in rows):.2f} s")
        for (kind, outcome), n in sorted(counts.items()):
            print(f"  {kind:<20} {outcome:<18} {n}")


def test_fuzz_corpus_through_the_api(corpus, tmp_path):
    odd_names = ["../../etc/passwd", "%s%n%x.mp4", "видео😀.mp4", "a" * 300 + ".mp4", "clip.m3u8", ".hidden",
                 "con.mp4", "a/b\\c.mp4", "x.mp4;rm -rf", ""]
    uploads = [(n, p.read_bytes()) for n, p, _ in corpus]
    uploads += [(name, REAL.read_bytes()) for name in odd_names]
    with TestClient(create_app(_settings(tmp_path, daily_limit_per_key=0), pipeline=FakePipeline())) as c:
        accepted, statuses = [], collections.Counter()
        for name, data in uploads:
            r = c.post("/detect", files={"file": (name, data, "application/octet-stream")}, headers=A)
            statuses[r.status_code] += 1
            assert r.status_code in (200, 202, 413, 422), (name, r.status_code, r.text[:300])
            body = r.json()
            if r.status_code >= 400:
                assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
                assert not LEAKS.search(body["error"]["message"]), (name, body)
            else:
                accepted.append((name, body["task_id"]))
        for _name, task_id in accepted:
            st = _poll(c, task_id, A)
            assert st["status"] == "completed" or (st["error_code"] and not LEAKS.search(st["reason"] or "")), st
    stored = list((tmp_path / "uploads").iterdir())
    assert all(re.fullmatch(r"[0-9a-f]{32}\.[a-z0-9]+", f.name) for f in stored)  # only server-chosen names
    assert statuses[500] == 0 and len(uploads) >= 160


# ----------------------------------------------------------------------------------------------
# 1. one key overwriting another key's pending upload, and poisoning the shared cache
# ----------------------------------------------------------------------------------------------
def test_keys_cannot_overwrite_each_others_uploads_or_poison_the_cache(tmp_path):
    fake_bytes, real_bytes = FAKE.read_bytes(), REAL.read_bytes()
    pipe = FakePipeline(delay_s=0.5)  # both jobs are pending or running at the same time
    with TestClient(create_app(_settings(tmp_path), pipeline=pipe)) as c:
        ra = c.post("/detect", files={"file": ("v.mp4", fake_bytes)}, data={"task_id": "vic-7"}, headers=A)
        rb = c.post("/detect", files={"file": ("r", real_bytes)}, data={"task_id": "vic-7.mp4"}, headers=B)
        assert ra.status_code == rb.status_code == 202
        a, b = _poll(c, "vic-7", A), _poll(c, "vic-7.mp4", B)
        # each job analysed its own bytes
        assert a["report"]["model_metadata"]["media"]["sha256"] == hashlib.sha256(fake_bytes).hexdigest()
        assert b["report"]["model_metadata"]["media"]["sha256"] == hashlib.sha256(real_bytes).hexdigest()
        # so a later upload of the fake is answered with the fake's own verdict
        again = c.post("/detect", files={"file": ("again.mp4", fake_bytes)}, headers=A).json()
        assert again["cached"] and again["report"]["detector_scores"] == a["report"]["detector_scores"]


def test_a_verdict_is_never_cached_for_bytes_it_did_not_analyse(tmp_path):
    import db
    from service.jobs import JobService, PipelineHolder, StoredMedia

    s = _settings(tmp_path)
    svc = JobService(s, db.connect(s), PipelineHolder(FakePipeline()))
    path = tmp_path / "in.part"
    path.write_bytes(FAKE.read_bytes())
    row, _ = svc.submit(StoredMedia(path, path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(), "v.mp4"),
                        None)
    (svc.uploads_dir / row.storage_path).write_bytes(REAL.read_bytes())  # swapped after intake
    done = svc.process_next()
    assert done.status == "failed" and done.error_code == "media_changed"
    assert svc.repo.find_completed_by_sha256(row.content_sha256) is None


# ----------------------------------------------------------------------------------------------
# 2. local file reads through playlists
# ----------------------------------------------------------------------------------------------
def test_a_playlist_cannot_make_the_decoder_read_local_files(corpus, tmp_path):
    paths = {n: p for n, p, _ in corpus}
    with pytest.raises(media.UnsupportedFormatError):
        media.probe(paths["polyglot.m3u8"])
    # even without the telltale first line FFmpeg only probes the allowed demuxers, so HLS is never chosen
    headless = tmp_path / "headless.m3u8"
    headless.write_bytes(b"\n" * 3 + paths["local.m3u8"].read_bytes().replace(b"#EXTM3U", b"#EXTM3U "))
    with pytest.raises(media.MediaError):
        media.probe(headless)
    with TestClient(create_app(_settings(tmp_path), pipeline=FakePipeline())) as c:
        r = c.post("/detect", files={"file": ("clip.m3u8", paths["polyglot.m3u8"].read_bytes())}, headers=A)
        assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_format"


# ----------------------------------------------------------------------------------------------
# 3. a small image declaring huge dimensions
# ----------------------------------------------------------------------------------------------
def test_a_dimension_bomb_is_refused_from_its_header(corpus):
    bomb = next(p for n, p, _ in corpus if n == "bomb_16000.png")
    assert bomb.stat().st_size < 1_000_000
    [row] = _intake([("bomb", bomb, "dimensions")])
    assert row[2] == "bad_dimensions" and "16000×16000" in row[4]
    assert row[5] < 50  # MB: before, the first frame (16000×16000×3 ≈ 0.8 GB) was decoded to find the size


# ----------------------------------------------------------------------------------------------
# 4. the cache and task ids across keys
# ----------------------------------------------------------------------------------------------
def test_nothing_of_one_key_reaches_another(tmp_path):
    data = REAL.read_bytes()
    with TestClient(create_app(_settings(tmp_path), pipeline=FakePipeline())) as c:
        first = c.post("/detect", files={"file": ("private-name.mp4", data)}, data={"task_id": "mine-1"}, headers=A)
        _poll(c, "mine-1", A)
        other = c.post("/detect", files={"file": ("b.mp4", data)}, headers=B).json()
        st = _poll(c, other["task_id"], B)
        assert not other["cached"] and st["cached_from"] is None
        assert "private-name" not in json.dumps(st) and "mine-1" not in json.dumps(st)
        # the same task id from another key is that key's own task: no 409, nothing confirms the first exists
        r = c.post("/detect", files={"file": ("b.mp4", data)}, data={"task_id": "mine-1"}, headers=B)
        assert r.status_code in (200, 202) and r.json()["task_id"] == "mine-1"
        assert c.get("/status/mine-1", headers=B).json()["report"]["model_metadata"]["source_name"] == "b.mp4"
        assert c.get("/status/mine-1", headers=A).json()["report"]["model_metadata"]["source_name"] == \
            "private-name.mp4"
        assert first.status_code == 202


# ----------------------------------------------------------------------------------------------
# 5. untyped exceptions
# ----------------------------------------------------------------------------------------------
def test_a_stream_without_a_codec_and_a_failing_seek_are_typed(corpus, monkeypatch):
    paths = {n: p for n, p, _ in corpus}
    info = media.probe(paths["unknown_audio_codec.mp4"])  # was AttributeError: codec_context is None
    assert info.has_video and not info.has_audio

    real_open = media._open

    class SeekRefused:  # a damaged WebM index made container.seek raise PermissionError inside decoding
        def __init__(self, container):
            self.c = container

        def __getattr__(self, name):
            return getattr(self.c, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.c.close()

        def seek(self, *args, **kwargs):
            raise av.error.PermissionError(1, "Operation not permitted")

    info = media.probe(REAL)
    monkeypatch.setattr(media, "_open", lambda source, limits=None: SeekRefused(real_open(source, limits)))
    with pytest.raises(media.CorruptMediaError) as err:
        media.sample_frames(REAL, info, times_s=[0.5, 4.0])
    assert "Errno" not in err.value.message and "/" not in err.value.message


def test_api_never_answers_500_or_framework_shapes(tmp_path, corpus):
    paths = {n: p for n, p, _ in corpus}
    with TestClient(create_app(_settings(tmp_path), pipeline=FakePipeline()), raise_server_exceptions=False) as c:
        r = c.post("/detect", files={"file": ("t.mp4", paths["cut50_faststart.mp4"].read_bytes())}, headers=A)
        assert r.status_code == 422 and r.json()["error"]["code"] == "truncated"
        assert c.get("/nope").json() == {"error": {"code": "not_found", "message": "no such endpoint: /nope"}}
        r = c.put("/health")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


# ----------------------------------------------------------------------------------------------
# 6. truncated media
# ----------------------------------------------------------------------------------------------
def test_truncated_media_is_refused_saying_how_much_is_missing(corpus, tmp_path):
    paths = {n: p for n, p, _ in corpus}
    for name in ("cut50_faststart.mp4", "cut50_clip.webm", "cut50_clip.mkv", "cut50_audio.wav", "cut50_clip.avi",
                 "cut50_audio.flac"):
        with pytest.raises(media.TruncatedMediaError) as err:
            media.probe(paths[name])
        assert "truncated" in err.value.message and "%" in err.value.message, (name, err.value.message)
    # a few frames missing at the very end are analysed, and the report says so
    info = media.probe(paths["cut97_faststart.mp4"])
    assert 0 < info.missing_tail_s <= media.TAIL_TOLERANCE_S
    r = subprocess.run([sys.executable, "-m", "pipeline", "scan", str(paths["cut50_faststart.mp4"])], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------
# 7. smaller problems
# ----------------------------------------------------------------------------------------------
def test_a_folder_or_a_pipe_is_named_as_such(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(media.NotMediaError, match="folder"):
        media.probe(tmp_path)
    with pytest.raises(media.NotMediaError, match="pipe"):
        media.probe(fifo)
    r = subprocess.run([sys.executable, "-m", "pipeline", "scan", str(tmp_path)], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "is a folder" in r.stderr and "no such file" not in r.stderr


def test_stale_window_follows_the_heartbeat():
    s = Settings()
    assert s.job_stale_after_s <= 6 * s.job_heartbeat_s <= 30  # a dead worker's job is back within ~30 s
    with pytest.raises(ValueError, match="3 × JOB_HEARTBEAT_S"):
        Settings(job_stale_after_s=5, job_heartbeat_s=5)

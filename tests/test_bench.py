"""``make bench``: the phone clips it builds have the advertised shape and length, and one bench run reports
what the issue asks for (floor, run, peak memory, stages) as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import bench, media
from tests.media_factory import tone, write_video

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "src.mp4"
    return write_video(path, n_frames=100, fps=25, size=(64, 48), audio=tone(4.0))


def test_bench_clips_are_portrait_30_fps_with_sound_and_the_asked_length(tmp_path, source):
    short = bench.build_clip(30, tmp_path, source, size=(36, 64))
    longer = bench.build_clip(70, tmp_path, source, size=(36, 64))
    for clip, seconds in ((short, 30), (longer, 70)):
        info = media.probe(clip)
        assert (info.width, info.height) == (36, 64)
        assert info.has_audio and info.video_codec == "h264" and round(info.fps) == 30
        assert abs(info.duration_s - seconds) < 0.5, (clip.name, info.duration_s)
    assert bench.build_clip(30, tmp_path, source) == short  # cached: not rebuilt under another size
    assert not list(tmp_path.glob("*.part.mp4"))


def test_bench_reports_floor_run_memory_and_stages_for_one_clip(tmp_path, source):
    clip = bench.build_clip(30, tmp_path, source, size=(36, 64))
    out = subprocess.run([sys.executable, "-m", "pipeline", "bench", str(clip), "--repeat", "1", "--json"],
                         cwd=REPO, check=True, capture_output=True, text=True).stdout
    m = json.loads(out.strip().splitlines()[-1])
    assert m["clip"] == clip.name and abs(m["duration_s"] - 30) < 0.5
    assert 0 < m["decode_floor_min_s"] <= m["decode_floor_s"] and m["run_s"] > 0 and m["peak_rss_mib"] > 100
    assert {"decode", "faces", "audio", "fusion"} <= set(m["stages"])
    assert m["verdict"] in {"AUTHENTIC", "SUSPICIOUS", "FAKE", "NOT_APPLICABLE"}

"""The command line as a user runs it: faces, scan (--json/--html), and the temporal trainer on a tiny
VideoMAE config (``videomae_unittest``) whose checkpoint then drives the temporal stage of ``scan``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from media_factory import tone, write_video

REPO = Path(__file__).resolve().parent.parent
TALKING = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"
FACE_IMAGE = "D_image/deepface_real/tests__unit__dataset__img1.jpg"


def cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_faces_command_writes_crops_and_tracks(tmp_path, dev_data):
    out = tmp_path / "faces"
    r = cli("pipeline", "faces", str(dev_data / TALKING), "--out", str(out), "--size", "128")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "tracks.json").read_text())
    assert summary["frames_sampled"] == 10 and summary["main_track_id"] == 0
    track = summary["tracks"][0]
    assert track["is_main"] and track["frames"] >= 9 and len(track["boxes"]) == track["frames"]
    crop = cv2.imread(str(out / track["crops"][0]))
    assert crop.shape == (128, 128, 3)
    assert len(track["landmarks"][0]) == 5 and 0 < track["quality"] <= 1


def test_scan_prints_a_readable_summary_and_writes_html(tmp_path, dev_data):
    html = tmp_path / "report.html"
    r = cli("pipeline", "scan", str(dev_data / TALKING), "--html", str(html))
    assert r.returncode == 0, r.stderr
    assert "VERDICT:" in r.stdout and "Visual Quality" in r.stdout and "Audio Authenticity" in r.stdout
    assert "Temporal Consistency" in r.stdout and "Face 0 (main)" in r.stdout
    assert "higher = more authentic" in r.stdout
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "data:image/jpeg;base64," in page and "<svg" in page
    # the evidence pictures are embedded: the page is one self-contained file
    assert 'data-figure="timeline"' in page and 'data-figure="lip_sync"' in page
    assert "data:image/png;base64," in page
    assert "timeline_calibrated" not in page  # per-second data is drawn, not dumped as text


def test_scan_json_is_the_report(dev_data):
    r = cli("pipeline", "scan", str(dev_data / TALKING), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["verdict"] in ("AUTHENTIC", "SUSPICIOUS", "FAKE")
    assert data["detector_scores"]["final_weighted_score"] == data["fake_probability"]
    assert data["model_metadata"]["source_name"] == Path(TALKING).name


def test_scan_of_a_missing_file_says_so():
    r = cli("pipeline", "scan", "/nonexistent/clip.mp4")
    assert r.returncode == 2 and "no such file" in r.stderr


def _face_video(path: Path, face: np.ndarray, fake: bool, seed: int) -> Path:
    """A face pasted on a background, moving slightly; "fake" clips flicker on the face from frame to frame."""
    rng = np.random.default_rng(seed)
    bg = np.full((240, 320, 3), (90 + 10 * seed) % 255, np.uint8)

    def frame(i: int) -> np.ndarray:
        img = bg.copy()
        x, y = 100 + int(4 * np.sin(i / 5)), 50 + int(3 * np.cos(i / 7))
        f = face.astype(np.int16)
        if fake:
            f = f + (30 if i % 2 else -30) + rng.integers(-12, 12, f.shape)
        img[y : y + face.shape[0], x : x + face.shape[1]] = np.clip(f, 0, 255).astype(np.uint8)
        return img

    return write_video(path, n_frames=60, fps=25, size=(320, 240), frame_fn=frame, audio=tone(2.4))


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory, dev_data):
    root = tmp_path_factory.mktemp("synthetic")
    img = cv2.cvtColor(cv2.imread(str(dev_data / FACE_IMAGE)), cv2.COLOR_BGR2RGB)
    face = cv2.resize(img, (120, 160), interpolation=cv2.INTER_AREA)
    rows = ["path\tlabel\tmodality\tmanipulation\tgroup\tduration_s"]
    for i in range(8):
        fake = i % 2 == 1
        name = f"clip{i}.mp4"
        _face_video(root / name, face, fake, i)
        rows.append(f"{name}\t{'fake' if fake else 'real'}\tvideo_av\t{'flicker' if fake else 'none'}\tg{i}\t2.4")
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_train_temporal_tiny_videomae_then_scan_uses_it(tmp_path, synthetic_manifest):
    ckpt = tmp_path / "videomae_tiny"
    env = {"DENSE_WINDOW_S": "2.0", "MAX_DENSE_WINDOWS": "1"}
    manifest, split = str(synthetic_manifest / "manifest.tsv"), str(tmp_path / "split.tsv")
    r = cli("training", "temporal", "--manifest", manifest, "--backbone", "videomae_unittest", "--out", str(ckpt),
            "--split-file", split, env=env)
    assert r.returncode != 0 and "not found" in r.stderr  # no split, no training
    assert cli("training", "split", "--manifest", manifest, "--out", split).returncode == 0
    r = cli("training", "temporal", "--manifest", manifest, "--split-file", split,
            "--backbone", "videomae_unittest", "--epochs", "4", "--out", str(ckpt), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["train_clips"] >= 4 and summary["val_clips"] >= 1
    assert (ckpt / "config.json").exists() and (ckpt / "training_summary.json").exists()
    assert json.loads((ckpt / "config.json").read_text())["id2label"] == {"0": "real", "1": "fake"}

    r = cli("pipeline", "scan", str(synthetic_manifest / "clip1.mp4"), "--json",
            env={**env, "VIDEOMAE_CHECKPOINT": str(ckpt)})
    assert r.returncode == 0, r.stderr[-3000:]
    det = json.loads(r.stdout)["detector_scores"]["detectors"]["temporal"]
    assert det["status"] == "ok" and 0.0 <= det["score"] <= 1.0 and det["clips"] >= 1
    assert det["model"].startswith("videomae:")


def test_stage_bar_shows_the_end_even_right_after_the_last_stage(capsys):
    """tqdm skips a draw that comes within 0.1 s of the previous one: the bar used to end on 95 %."""
    from pipeline.cli import StageBar

    bar = StageBar("scan")
    bar("report", 0.95)
    bar("done", 1.0)
    err = capsys.readouterr().err
    bar.close()
    assert "100%" in err and "done" in err

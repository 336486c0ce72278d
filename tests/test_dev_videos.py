"""Every audio-visual clip of the dev set decodes, has its audio extracted, and shows at least one face track."""

from __future__ import annotations

import logging
import time

import pytest

from models.retinaface import RetinaFaceDetector
from pipeline import media
from pipeline.faces import analyse_faces
from training.split import read_manifest

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def detector():
    return RetinaFaceDetector.load(device="cpu")


def _video_items(dev_data):
    return [it for it in read_manifest(dev_data / "manifest.tsv") if it.modality == "video_av"]


def test_every_dev_video_has_audio_and_a_face_track(dev_data, detector):
    items = _video_items(dev_data)
    assert len(items) >= 70
    failures, rows = [], []
    for it in items:
        t0 = time.perf_counter()
        info = media.probe(it.file)
        frames = media.sample_frames(it.file, info, fps=2.0, max_frames=240, max_side=1280)
        audio = media.load_audio(it.file, info)
        t_decode = time.perf_counter() - t0
        analysis = analyse_faces(frames.frames, frames.timestamps_s, detector, scale=frames.scale, threshold=0.8)
        rows.append((it.path, len(frames), audio.duration_s if audio else 0.0, len(analysis.tracks),
                     t_decode, time.perf_counter() - t0))
        if audio is None or audio.duration_s < 0.5 or not analysis.tracks:
            failures.append(f"{it.path}: audio={audio is not None}, tracks={len(analysis.tracks)}")
        if it.duration_s:
            assert abs(info.duration_s - it.duration_s) < 0.6, it.path
    for r in rows:
        logger.info("%-90s frames %3d audio %5.1fs tracks %d decode %.2fs total %.2fs", *r)
    assert not failures, "\n".join(failures)

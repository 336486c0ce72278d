"""Dense face windows: each window's crops are made while its frames are here, then the frames go."""

from __future__ import annotations

import numpy as np
import pytest
from media_factory import level_frame, write_video

from pipeline import dense, media
from pipeline.dense import DenseFaceClip
from pipeline.faces import FaceTrack


def _clip(n: int = 12) -> DenseFaceClip:
    frames = np.random.default_rng(0).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    lms = np.tile([[22.0, 26.0], [42.0, 26.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]], (n, 1, 1))
    return DenseFaceClip(frames, np.arange(n) / 25.0, np.tile([8.0, 8.0, 56.0, 56.0], (n, 1)), lms,
                         np.ones(n, bool), 25.0, 3)


def test_without_frames_keeps_what_was_made_of_them():
    clip = _clip()
    gray = clip.aligned_gray(32, 0.2)
    assert clip.aligned_gray(32, 0.2) is gray  # made once per window
    light = clip.without_frames()
    assert len(light) == len(clip) and light.frames.nbytes == 0 and not light.has_frames
    np.testing.assert_array_equal(light.timestamps_s, clip.timestamps_s)
    assert light.aligned_gray(32, 0.2) is gray
    with pytest.raises(RuntimeError, match="let go"):
        light.aligned(32)  # a crop nobody made before the frames went is an error, never an empty array
    np.testing.assert_array_equal(light.slice(2, 5).timestamps_s, clip.timestamps_s[2:5])


class _NoFaces:
    def detect(self, frames, threshold=0.6, max_side=None):
        return [np.zeros((0, 15), np.float32) for _ in frames]


def test_each_window_is_prepared_before_the_next_is_decoded(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mp4", n_frames=100, fps=25, size=(64, 48), frame_fn=lambda i: level_frame(i % 32))
    info = media.probe(path)
    events: list[str] = []
    stream = media.iter_decode_dense

    def logged(*args, **kwargs):
        for i, window in enumerate(stream(*args, **kwargs)):
            events.append(f"decoded {i}")
            yield window

    monkeypatch.setattr(media, "iter_decode_dense", logged)
    times = np.arange(0.0, 4.0, 0.5)
    k = len(times)
    track = FaceTrack(0, np.arange(k), times, np.tile([10.0, 8.0, 40.0, 40.0], (k, 1)),
                      np.tile([[18.0, 20.0], [32.0, 20.0], [25.0, 27.0], [19.0, 33.0], [31.0, 33.0]], (k, 1, 1)),
                      np.ones(k), np.ones(k))

    def prepare(clip: DenseFaceClip) -> DenseFaceClip:
        events.append(f"prepared {len(events) // 2}")
        clip.aligned_gray(16)
        return clip.without_frames()

    clips = dense.track_windows(path, info, track, _NoFaces(), window_s=1.0, max_windows=3, prepare=prepare)
    assert events == ["decoded 0", "prepared 0", "decoded 1", "prepared 1", "decoded 2", "prepared 2"]
    assert [len(c) for c in clips] == [25, 25, 25] and not any(c.has_frames for c in clips)
    assert all(c.aligned_gray(16).shape == (25, 16, 16) for c in clips)

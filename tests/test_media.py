"""Media intake: formats, rotation, timestamps, audio alignment and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import clicks, ffmpeg, level_frame, tone, write_audio, write_video

from pipeline import media
from pipeline.media import Limits


def _level(frame: np.ndarray) -> float:
    return float(frame.mean())


def _index_of(frame: np.ndarray) -> int:
    """Inverse of level_frame (valid for indices < 32)."""
    return int(round(_level(frame) / 8.0))


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    return write_video(d / "clip.mp4", n_frames=75, fps=25, audio=clicks(3.0))


# ---------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    "name,vcodec,acodec",
    [
        ("a.mp4", "libx264", "aac"),
        ("a.mov", "libx264", "aac"),
        ("a.mkv", "libx265", "aac"),
        ("a.webm", "libvpx-vp9", "libopus"),
        ("a.3gp", "h263", "aac"),
        ("av1.mp4", "libsvtav1", "aac"),
    ],
)
def test_container_and_codec_matrix(tmp_path, name, vcodec, acodec):
    src = tmp_path / "src.mp4"
    write_video(src, n_frames=50, fps=25, size=(176, 144), audio=tone(2.0))
    out = tmp_path / name
    extra = ["-svtav1-params", "preset=12"] if vcodec == "libsvtav1" else []
    ffmpeg("-i", str(src), "-c:v", vcodec, *extra, "-c:a", acodec, "-ar", "48000" if acodec == "libopus" else "16000",
           str(out))
    info = media.probe(out)
    assert info.kind == "video" and info.has_video and info.has_audio
    assert (info.width, info.height) == (176, 144)
    assert info.duration_s == pytest.approx(2.0, abs=0.15)
    frames = media.sample_frames(out, info, fps=2.0)
    assert frames.frames.shape[1:] == (144, 176, 3) and frames.frames.dtype == np.uint8
    assert len(frames) == 4
    # the grey level says which source frame we got: t=0.25 s -> frame 6 (level 48), lossy codecs within a few levels
    assert abs(_level(frames.frames[0]) - 48) < 8
    audio = media.load_audio(out, info)
    assert audio is not None and audio.sample_rate == 16000 and audio.samples.dtype == np.float32
    assert audio.duration_s == pytest.approx(2.0, abs=0.15)
    assert 0.15 < float(np.sqrt(np.mean(audio.samples[4000:20000] ** 2))) < 0.3  # a 0.3-amplitude tone


def test_bytes_input_matches_path(av_clip):
    data = av_clip.read_bytes()
    a = media.sample_frames(data, fps=2.0)
    b = media.sample_frames(av_clip, fps=2.0)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_allclose(media.load_audio(data).samples, media.load_audio(av_clip).samples)


# ---------------------------------------------------------------------------------- timing and frames
def test_sparse_sampling_picks_the_nearest_frame(av_clip):
    info = media.probe(av_clip)
    assert info.fps == pytest.approx(25.0) and not info.variable_frame_rate and info.frame_count == 75
    s = media.sample_frames(av_clip, info, fps=2.0)
    np.testing.assert_allclose(s.timestamps_s, [0.24, 0.76, 1.24, 1.76, 2.24, 2.76], atol=1e-6)
    assert [_index_of(f) for f in s.frames] == [6, 19, 31, 12, 24, 5]  # (i*8) % 256 wraps at i=32


def test_long_video_is_sampled_by_seeking_and_capped(tmp_path):
    # 60 s at 10 fps, keyframe every second; ask for 12 frames: each must be the right one
    path = write_video(tmp_path / "long.mp4", n_frames=600, fps=10, gop=10,
                       frame_fn=lambda i: level_frame(i // 10))  # level = second index
    info = media.probe(path)
    s = media.sample_frames(path, info, fps=2.0, max_frames=12)
    assert len(s) == 12
    expected_seconds = np.floor((np.arange(12) + 0.5) * 5.0).astype(int)  # centres of 5 s slices
    got = [int(round(_level(f) / 8)) for f in s.frames]
    assert got == [int(x) % 32 for x in expected_seconds]
    assert np.all(np.diff(s.timestamps_s) > 4.0)


def test_a_seek_that_would_land_on_an_already_decoded_keyframe_is_skipped(tmp_path, monkeypatch):
    # 30 s at 10 fps, keyframes ~3 s apart, sampled every 2.5 s: seeking to every sample lands on the keyframe the
    # decoder has just passed about half the time; knowing where the keyframes are, it goes straight on instead
    path = write_video(tmp_path / "long_gop.mp4", n_frames=300, fps=10, gop=80, frame_fn=lambda i: level_frame(i))
    info = media.probe(path)
    times = np.arange(12) * 2.5 + 1.0
    frame_time = media._frame_time

    def run():
        decoded = []
        monkeypatch.setattr(media, "_frame_time", lambda f, st: decoded.append(1) or frame_time(f, st))
        return media.sample_frames(path, info, times_s=times), len(decoded)

    s, n_decoded = run()
    levels = np.array([_level(f) for f in s.frames])
    assert np.abs(levels - [(int(round(t * 10)) * 8) % 256 for t in times]).max() <= 2  # frames 8 levels apart
    keyframe_times = media._keyframe_times
    monkeypatch.setattr(media, "_keyframe_times", lambda c, st: None)  # seek on every long gap, as before
    seeking, n_seeking = run()
    assert np.array_equal(seeking.frames, s.frames) and np.array_equal(seeking.timestamps_s, s.timestamps_s)
    assert n_decoded < n_seeking
    monkeypatch.setattr(media, "_keyframe_times", keyframe_times)
    with av.open(str(path)) as c:  # the keyframe list matches what decoding says, and the container is rewound
        listed = media._keyframe_times(c, c.streams.video[0])
        decoded_keys = [float(f.time) for f in c.decode(video=0) if f.key_frame]
    assert len(decoded_keys) > 3 and np.allclose(listed, decoded_keys)


def test_variable_frame_rate_timestamps(tmp_path):
    # frames at irregular instants: 0, 40, 80 ms ... then a 1 s freeze, then 25 fps again
    pts = [i * 40 for i in range(25)] + [2000 + i * 40 for i in range(25)]
    path = write_video(tmp_path / "vfr.mkv", n_frames=50, fps=25, pts_fn=lambda i: pts[i])
    info = media.probe(path)
    s = media.sample_frames(path, info, times_s=np.array([0.5, 1.5, 2.5]))
    # 1.5 s falls in the 1 s gap: 2.0 s (frame 25) is nearer than 0.96 s (frame 24)
    np.testing.assert_allclose(s.timestamps_s, [0.48, 2.0, 2.48], atol=1e-3)
    assert [_level(f) for f in s.frames] == pytest.approx([12 * 8, 25 * 8, (37 * 8) % 256], abs=3)
    dense = media.decode_dense(path, [0.8], n_frames=10, fps=25.0, info=info)[0]
    # inside the gap the nearest frame is held, then the stream continues at 2.0 s
    np.testing.assert_allclose(dense.source_timestamps_s, [0.8, 0.84, 0.88, 0.92, 0.96, 0.96, 0.96, 0.96, 0.96, 0.96],
                               atol=1e-3)


def test_dense_windows_resample_30fps_to_25fps(tmp_path):
    path = write_video(tmp_path / "30.mp4", n_frames=90, fps=30, frame_fn=lambda i: level_frame(i % 32))
    clips = media.decode_dense(path, [0.0, 1.0], n_frames=16, fps=25.0)
    assert [len(c) for c in clips] == [16, 16]
    for clip in clips:
        np.testing.assert_allclose(np.diff(clip.timestamps_s), 0.04, atol=1e-9)
        # each tick takes the nearest 30 fps frame
        expected = np.round(clip.timestamps_s * 30).astype(int)
        np.testing.assert_allclose(clip.source_timestamps_s, expected / 30.0, atol=1e-3)
        assert [_index_of(f) for f in clip.frames] == list(expected % 32)


def test_dense_windows_stream_one_at_a_time(tmp_path):
    """``iter_decode_dense`` hands over each window before decoding the next (a caller keeping only crops never
    holds two windows' frames) and gives exactly ``decode_dense``'s frames."""
    path = write_video(tmp_path / "30.mp4", n_frames=90, fps=30, frame_fn=lambda i: level_frame(i % 32))
    whole = media.decode_dense(path, [0.0, 1.5], n_frames=12, fps=25.0)
    it = media.iter_decode_dense(path, [0.0, 1.5], n_frames=12, fps=25.0)
    first = next(it)
    np.testing.assert_array_equal(first.frames, whole[0].frames)
    np.testing.assert_array_equal(first.source_timestamps_s, whole[0].source_timestamps_s)
    rest = list(it)
    assert len(rest) == 1
    np.testing.assert_array_equal(rest[0].frames, whole[1].frames)
    assert not np.shares_memory(first.frames, rest[0].frames)  # each window its own array, freed on its own


def test_streamed_dense_windows_of_a_damaged_file_raise_typed_errors(tmp_path):
    path = write_video(tmp_path / "ok.mp4", n_frames=50, fps=25)
    info = media.probe(path)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(media.MediaError):
        list(media.iter_decode_dense(cut, [0.0, 1.0], n_frames=10, fps=25.0, info=info))


def test_dense_window_past_the_end_is_cut(av_clip):
    clips = media.decode_dense(av_clip, [2.8, 10.0], n_frames=16)
    assert len(clips) == 1 and len(clips[0]) == 5  # 2.80..2.96 then the video ends at 3.0 s


def test_rotation_is_applied_like_ffmpeg(tmp_path):
    upright = np.zeros((48, 64, 3), np.uint8)
    upright[:12, :16] = (255, 0, 0)  # red top-left
    upright[-12:, -16:] = (0, 0, 255)  # blue bottom-right
    for rot in (90, 180, 270):
        coded = np.ascontiguousarray(np.rot90(upright, -(rot // 90)))
        path = write_video(tmp_path / f"r{rot}.mp4", n_frames=10, size=(coded.shape[1], coded.shape[0]),
                           frame_fn=lambda i, c=coded: c, rotation=rot)
        info = media.probe(path)
        assert info.rotation == rot and (info.width, info.height) == (64, 48)
        frame = media.sample_frames(path, info, fps=2.0).frames[0]
        assert frame.shape == (48, 64, 3)
        assert frame[:12, :16, 0].mean() > 200 and frame[-12:, -16:, 2].mean() > 200
        # ffmpeg's own autorotation agrees
        png = tmp_path / f"r{rot}.png"
        ffmpeg("-i", str(path), "-frames:v", "1", str(png))
        assert np.abs(media.load_image(png).astype(int) - frame.astype(int)).mean() < 2


def test_frames_are_downscaled_to_max_side(tmp_path):
    path = write_video(tmp_path / "big.mp4", n_frames=5, size=(1280, 720))
    s = media.sample_frames(path, fps=2.0, max_side=640)
    assert s.frames.shape[1:3] == (360, 640) and s.scale == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- audio
def test_audio_delay_kept_in_stream_start_times(tmp_path, av_clip):
    """BASELINES.md pitfall: a delay stored only as the audio stream's start time must survive decoding."""
    delayed = tmp_path / "delayed.mp4"
    ffmpeg("-i", str(av_clip), "-itsoffset", "0.6", "-i", str(av_clip), "-map", "0:v", "-map", "1:a",
           "-c", "copy", str(delayed))
    orig = media.load_audio(av_clip)
    late = media.load_audio(delayed)
    assert media.probe(delayed).audio_offset_s > 0.5  # the container says the audio starts late (less AAC priming)
    first_click = lambda x: np.argmax(np.abs(x) > 0.3) / 16000.0  # noqa: E731
    assert first_click(late.samples) - first_click(orig.samples) == pytest.approx(0.6, abs=0.01)
    assert first_click(orig.samples) == pytest.approx(0.25, abs=0.01)  # aligned to the video timeline


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3"])
def test_audio_only_files(tmp_path, ext):
    path = write_audio(tmp_path / f"speech{ext}", tone(2.0, rate=22050), rate=22050)
    info = media.probe(path)
    assert info.kind == "audio" and not info.has_video and info.has_audio
    audio = media.load_audio(path, info)
    assert audio.sample_rate == 16000 and audio.duration_s == pytest.approx(2.0, abs=0.08)
    with pytest.raises(media.NoVideoStreamError):
        media.sample_frames(path, info)


def test_video_without_audio(tmp_path):
    path = write_video(tmp_path / "mute.mp4", n_frames=25)
    info = media.probe(path)
    assert info.has_video and not info.has_audio
    assert media.load_audio(path, info) is None


# ---------------------------------------------------------------------------------- images
@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
def test_still_images(tmp_path, ext):
    img = np.zeros((90, 120, 3), np.uint8)
    img[:, :60] = (200, 30, 30)
    path = tmp_path / f"img{ext}"
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    frame.to_image().save(path)
    info = media.probe(path)
    assert info.kind == "image" and (info.width, info.height) == (120, 90) and info.duration_s == 0.0
    s = media.sample_frames(path, info)
    assert s.frames.shape == (1, 90, 120, 3)
    assert s.frames[0, :, :50, 0].mean() > 150 and s.frames[0, :, 70:, 0].mean() < 60


# ---------------------------------------------------------------------------------- bad input
def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(media.EmptyFileError, match="empty"):
        media.probe(p)


def test_not_a_media_file(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is a text file pretending to be a video\n" * 50)
    with pytest.raises(media.NotMediaError, match="not a video"):
        media.probe(p)
    with pytest.raises(media.NotMediaError):
        media.probe(np.random.default_rng(0).bytes(20000))


def test_truncated_file_without_index(tmp_path, av_clip):
    # moov at the end (PyAV's default): cutting the file removes the index
    data = av_clip.read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(media.TruncatedMediaError, match="truncated"):
        media.probe(p)


def test_truncated_file_with_index_first(tmp_path, av_clip):
    fast = tmp_path / "fast.mp4"
    ffmpeg("-i", str(av_clip), "-c", "copy", "-movflags", "+faststart", str(fast))
    data = fast.read_bytes()
    p = tmp_path / "cutfast.mp4"
    p.write_bytes(data[: int(len(data) * 0.5)])
    with pytest.raises(media.TruncatedMediaError, match="truncated"):
        media.probe(p)


def test_no_streams(tmp_path):
    p = tmp_path / "nostreams.mkv"
    ffmpeg("-f", "lavfi", "-i", "anullsrc", "-t", "0.5", "-map", "0:a", "-c:a", "flac", str(tmp_path / "x.mkv"))
    # a data-only container: an mkv holding just an attachment-free subtitle stream
    (tmp_path / "s.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    ffmpeg("-i", str(tmp_path / "s.srt"), str(p))
    with pytest.raises(media.NoMediaStreamsError, match="no audio or video"):
        media.probe(p)


def test_zero_duration(tmp_path):
    p = tmp_path / "zero.wav"  # a valid header and not a single sample
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(p))
    with pytest.raises(media.ZeroDurationError, match="zero duration"):
        media.probe(p)
    # a video container holding a stream header and no frame at all cannot even be opened
    v = tmp_path / "zero.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x48:r=25", "-frames:v", "0", "-c:v", "libx264", str(v))
    with pytest.raises(media.TruncatedMediaError):
        media.probe(v)


def test_absurd_dimensions(tmp_path):
    path = write_video(tmp_path / "wide.mp4", n_frames=5, size=(320, 240))
    with pytest.raises(media.DimensionsError, match="320×240"):
        media.probe(path, Limits(max_dimension=256))


def test_duration_over_limit(tmp_path, av_clip):
    with pytest.raises(media.TooLongError, match="limit is 2 s"):
        media.probe(av_clip, Limits(max_duration_s=2.0))


def test_default_duration_limit_is_ten_minutes(tmp_path):
    p = tmp_path / "eleven_minutes.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=16x16:r=1", "-t", "660", "-c:v", "libx264", str(p))
    with pytest.raises(media.TooLongError, match="660 s; the limit is 600 s"):
        media.probe(p, Limits())


def test_a_recording_of_exactly_the_limit_is_accepted(tmp_path):
    # ten minutes from a phone: the container says 600.1 s (AAC priming, last frame's duration)
    p = tmp_path / "ten_minutes.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=16x16:r=30", "-f", "lavfi", "-i", "sine=r=44100", "-t", "600",
           "-c:v", "libx264", "-c:a", "aac", str(p))
    info = media.probe(p, Limits())
    assert 600.0 <= info.duration_s < 600.0 + media.DURATION_SLACK_S
    with pytest.raises(media.TooLongError):
        media.probe(p, Limits(max_duration_s=599.0))


def test_file_size_limit(av_clip):
    with pytest.raises(media.FileTooLargeError, match="limit"):
        media.probe(av_clip, Limits(max_file_bytes=1000))


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        media.probe("/nonexistent/clip.mp4")


def test_errors_carry_stable_codes():
    codes = {cls.code for cls in media.MediaError.__subclasses__()}
    assert {"empty_file", "not_media", "truncated", "no_video_stream", "zero_duration", "bad_dimensions",
            "too_long", "file_too_large", "decode_error"} <= codes

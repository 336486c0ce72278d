"""Generate small media files for tests (PyAV for exact content, the ffmpeg CLI for container variety)."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed: run `make install` (it installs the Debian ffmpeg package)")
    subprocess.run(["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", *args], check=True)


def level_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A frame whose grey level encodes its index (index*8 mod 256), so a test can tell which frame it got."""
    return np.full((h, w, 3), (i * 8) % 256, np.uint8)


def write_video(
    path: Path,
    n_frames: int = 50,
    fps: int = 25,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    frame_fn=None,
    pts_fn=None,
    rotation: int = 0,
    gop: int | None = None,
    audio: np.ndarray | None = None,
    audio_rate: int = 16000,
    audio_start_s: float = 0.0,
) -> Path:
    """Write a video; ``frame_fn(i)`` gives RGB frames, ``pts_fn(i)`` custom timestamps (in 1/1000 s)."""
    frame_fn = frame_fn or (lambda i: level_frame(i, size[1], size[0]))
    out = av.open(str(path), "w")
    vs = out.add_stream(codec, rate=fps)
    vs.width, vs.height = size
    vs.pix_fmt = "yuv444p" if codec == "libx264" else "yuv420p"
    if gop:
        vs.codec_context.gop_size = gop
    if pts_fn is not None:
        vs.codec_context.time_base = Fraction(1, 1000)
    if rotation:
        vs.set_display_rotation(rotation)
    as_ = None
    if audio is not None:
        as_ = out.add_stream("aac", rate=audio_rate)
        as_.layout = "mono"
    for i in range(n_frames):
        frame = av.VideoFrame.from_ndarray(frame_fn(i), format="rgb24")
        if pts_fn is not None:
            frame.pts = pts_fn(i)
            frame.time_base = Fraction(1, 1000)
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if as_ is not None:
        block = 1024
        start = int(round(audio_start_s * audio_rate))
        for k in range(0, len(audio), block):
            chunk = audio[k : k + block].astype(np.float32)
            if chunk.size < block:
                chunk = np.pad(chunk, (0, block - chunk.size))
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate = audio_rate
            af.pts = start + k
            af.time_base = Fraction(1, audio_rate)
            for p in as_.encode(af):
                out.mux(p)
        for p in as_.encode():
            out.mux(p)
    out.close()
    return path


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def clicks(seconds: float, rate: int = 16000, every_s: float = 0.5, amp: float = 0.8) -> np.ndarray:
    """Short bursts at known instants, for checking audio alignment."""
    x = np.zeros(int(seconds * rate), np.float32)
    burst = int(0.02 * rate)
    for t in np.arange(0.25, seconds - 0.05, every_s):
        i = int(t * rate)
        x[i : i + burst] = amp * np.sin(2 * np.pi * 1000 * np.arange(burst) / rate)
    return x


def write_audio(path: Path, samples: np.ndarray, rate: int = 16000, codec: str | None = None) -> Path:
    codec = codec or {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame", ".ogg": "libopus",
                      ".m4a": "aac", ".opus": "libopus"}[path.suffix]
    out = av.open(str(path), "w")
    s = out.add_stream(codec, rate=48000 if codec == "libopus" else rate)
    s.layout = "mono"
    resampler = av.AudioResampler(format=s.format.name if s.format else "s16", layout="mono", rate=s.rate)
    frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = None
    for rf in resampler.resample(frame) + resampler.resample(None):
        for p in s.encode(rf):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    return path

"""Media intake: bytes or paths in, upright RGB frames and 16 kHz mono audio out.

Everything that touches a container or codec lives here; detectors only ever see arrays.
Timestamps are seconds on one timeline whose origin is the first video frame (or the first
audio sample of an audio-only file). Audio is placed on that timeline by its PTS, so an audio
stream that starts late (a delay kept only in the container's start times) stays late.

Bad input raises a ``MediaError`` subclass whose ``code`` says what is wrong and whose message
says what to do about it.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import math
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

MediaSource = str | os.PathLike | bytes

IMAGE_FORMATS = {
    "image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif", "gif_pipe",
    "jpegxl_pipe", "qoi_pipe", "pam_pipe", "ppm_pipe", "pgm_pipe", "j2k_pipe", "dpx_pipe", "exr_pipe",
}
# The demuxers we open, and nothing else: FFmpeg probes only among these (``format_whitelist``), so a playlist
# (HLS, ``concat``), a network protocol or any other container that could make the decoder read something
# other than the uploaded bytes is refused before it is opened. Paths may use the ``file`` protocol only.
ALLOWED_DEMUXERS = (
    "mov", "mp4", "m4a", "3gp", "matroska", "webm", "avi", "mpeg", "mpegts", "ogg", "wav", "flac", "mp3", "aac",
    *sorted(IMAGE_FORMATS),
)
FORMAT_WHITELIST = ",".join(ALLOWED_DEMUXERS)
# Heads of files that refer to other files or URLs: refused with a message that says so
REFERENCE_HEADS = (b"#EXTM3U", b"ffconcat", b"[playlist]", b"#EXTINF", b"<?xml", b"<smil", b"<MPD", b"v=0\r\n",
                   b"v=0\n")
IMAGE_HEADS = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
IMAGE_CODECS = {"png", "mjpeg", "bmp", "webp", "tiff", "gif", "jpegxl", "jpeg2000", "qoi", "ppm", "pgm", "pam"}
# Leading bytes of containers we accept: a file that starts like one of these but fails to open is
# truncated or damaged, not "some other kind of file".
MEDIA_SIGNATURES = (
    (4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"OggS"), (0, b"fLaC"), (0, b"ID3"),
    (0, b"#!AMR"), (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3"), (0, b"\x89PNG"), (0, b"\xff\xd8\xff"),
    (0, b"FLV"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"),
)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------
DURATION_SLACK_S = 0.5


class MediaError(Exception):
    """Base class for input the pipeline cannot analyse. ``code`` is stable and machine-readable."""

    code = "media_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class EmptyFileError(MediaError):
    code = "empty_file"


class FileTooLargeError(MediaError):
    code = "file_too_large"


class NotMediaError(MediaError):
    code = "not_media"


class TruncatedMediaError(MediaError):
    code = "truncated"


class CorruptMediaError(MediaError):
    code = "decode_error"


class NoVideoStreamError(MediaError):
    code = "no_video_stream"


class NoMediaStreamsError(MediaError):
    code = "no_streams"


class ZeroDurationError(MediaError):
    code = "zero_duration"


class DimensionsError(MediaError):
    code = "bad_dimensions"


class TooLongError(MediaError):
    code = "too_long"


class DecodeTimeoutError(MediaError):
    code = "decode_timeout"


class UnsupportedFormatError(MediaError):
    code = "unsupported_format"


def _why(exc: BaseException) -> str:
    """What went wrong, for a user: FFmpeg's reason without its errno number or the file's path."""
    reason = getattr(exc, "strerror", None) or str(exc).split(":")[0]
    return str(reason).strip().rstrip(".") or type(exc).__name__


def _typed(fn):
    """Any failure of the decoder library inside ``fn`` becomes a typed ``MediaError`` (never a 500)."""

    @functools.wraps(fn)
    def wrapper(source, *args, **kwargs):
        try:
            return fn(source, *args, **kwargs)
        except (MediaError, FileNotFoundError):
            raise
        except Exception as exc:  # PyAV raises FFmpegError, OSError subclasses, ValueError, AttributeError...
            raise _undecodable(fn.__name__, source, exc) from exc

    return wrapper


def _typed_stream(fn):
    """``_typed`` for a generator: failures while it is being iterated become typed errors too."""

    @functools.wraps(fn)
    def wrapper(source, *args, **kwargs):
        try:
            yield from fn(source, *args, **kwargs)
        except (MediaError, FileNotFoundError):
            raise
        except Exception as exc:  # PyAV raises FFmpegError, OSError subclasses, ValueError, AttributeError...
            raise _undecodable(fn.__name__, source, exc) from exc

    return wrapper


def _undecodable(where: str, source, exc: Exception) -> CorruptMediaError:
    logger.warning("%s on %s: %s: %s", where, _name(source), type(exc).__name__, exc)
    return CorruptMediaError(f"{_name(source)} cannot be decoded ({_why(exc)}); it is probably damaged or "
                             "truncated. Upload the original file.")


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    max_duration_s: float = 600.0
    max_dimension: int = 8192
    max_file_bytes: int = 500 * 1024 * 1024
    decode_timeout_s: float = 300.0  # wall-clock cap on any one decode pass

    @classmethod
    def from_settings(cls, settings=None) -> Limits:
        if settings is None:
            from pipeline.settings import get_settings

            settings = get_settings()
        return cls(settings.max_duration_s, settings.max_dimension, settings.max_file_bytes)


@dataclass(frozen=True)
class MediaInfo:
    kind: str  # "video" | "image" | "audio"
    container: str
    size_bytes: int
    duration_s: float  # the longest stream
    video_duration_s: float  # the video stream alone (frames are sampled within it)
    has_video: bool
    has_audio: bool
    width: int  # display size (after rotation)
    height: int
    rotation: int  # degrees counter-clockwise applied to make frames upright (0, 90, 180, 270)
    fps: float  # average frame rate (0 for images and audio)
    variable_frame_rate: bool
    frame_count: int  # from the header, or estimated from duration × fps
    video_codec: str | None
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None
    video_start_s: float  # container start time of the video stream (the timeline origin)
    audio_start_s: float | None  # container start time of the audio stream
    bit_rate: int | None
    missing_tail_s: float = 0.0  # a few hundred ms missing at the end (more is refused as truncated)

    @property
    def audio_offset_s(self) -> float:
        """How much later than the first video frame the audio starts (0 without audio)."""
        if self.audio_start_s is None:
            return 0.0
        return self.audio_start_s - (self.video_start_s if self.has_video else self.audio_start_s)


@dataclass(frozen=True)
class SampledFrames:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, upright
    timestamps_s: np.ndarray  # (N,) float64 on the media timeline
    scale: float  # decoded size / display size (frames are downscaled to max_side)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class DenseClip:
    """Consecutive frames resampled to a constant rate (nearest frame per output tick)."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    timestamps_s: np.ndarray  # (T,) output tick times: start + k / fps
    source_timestamps_s: np.ndarray  # (T,) time of the source frame each tick took
    fps: float
    scale: float

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class AudioTrack:
    samples: np.ndarray  # (S,) float32 mono in [-1, 1], sample 0 at timeline time 0
    sample_rate: int
    source_offset_s: float  # where the audio stream itself started on the timeline (padding added before)

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / float(self.sample_rate)


# ----------------------------------------------------------------------------------------------
# Opening
# ----------------------------------------------------------------------------------------------
def _size_of(source: MediaSource) -> int:
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    p = Path(source)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {p}") from None
    if stat.S_ISDIR(st.st_mode):
        raise NotMediaError(f"{p.name} is a folder, not a media file")
    if not stat.S_ISREG(st.st_mode):
        raise NotMediaError(f"{p.name} is not a regular file (a pipe, socket or device); give a media file")
    return st.st_size


def _head(source: MediaSource, n: int = 16) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source[:n])
    with open(source, "rb") as f:
        return f.read(n)


def _looks_like_media(head: bytes) -> bool:
    return any(head[off : off + len(sig)] == sig for off, sig in MEDIA_SIGNATURES)


def _name(source: MediaSource) -> str:
    # the file's own name only: messages reach users, and a server's storage path is none of their business
    return "the uploaded file" if isinstance(source, bytes | bytearray | memoryview) else Path(source).name


def _image_header_size(source: MediaSource) -> tuple[int, int] | None:
    """Width and height a still image's header declares, read without decoding (None: not an image we parse).
    FFmpeg decodes an image to learn its size, so a 0.7 MB PNG declaring 16000×16000 costs ~0.8 GB there."""
    from PIL import Image

    Image.preinit()
    data = bytes(source[:1 << 16]) if isinstance(source, bytes | bytearray | memoryview) else _head(source, 1 << 16)
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"):
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None or (accept is not None and not accept(data[:16])):
            continue
        try:  # the format plugin reads the header only (Image.open would also refuse "bombs" without the size)
            return factory(io.BytesIO(data), "").size
        except Exception:  # a header it cannot parse: FFmpeg will say what is wrong
            return None
    return None


def _av_open(source: MediaSource, limits: Limits) -> av.container.InputContainer:
    options = {"format_whitelist": FORMAT_WHITELIST}
    if not isinstance(source, bytes | bytearray | memoryview):
        options["protocol_whitelist"] = "file"
    # the decoders FFmpeg runs while probing refuse frames beyond the size limit instead of allocating them
    # (MPEG-PS/TS expose no streams before probing, so take no per-stream options: MPEG-2 caps frames at 4095 px)
    codec_options = [{"max_pixels": str(limits.max_dimension**2)}] * 8
    for stream_options in (codec_options, None):
        data = io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray | memoryview) else str(source)
        try:
            return av.open(data, mode="r", timeout=30.0, options=options, stream_options=stream_options)
        except av.error.ArgumentError as exc:  # ValueError too: "this format does not expose its streams"
            if stream_options is None or "stream_options" not in str(exc):
                raise
        except ValueError as exc:
            if stream_options is None or "stream_options" not in str(exc):
                raise
    raise AssertionError("unreachable")


def _open(source: MediaSource, limits: Limits | None = None) -> av.container.InputContainer:
    """Open with typed errors, among the allowed demuxers only. The caller closes the container."""
    limits = limits or Limits()
    head = _head(source, 64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(REFERENCE_HEADS):
        raise UnsupportedFormatError(
            f"{_name(source)} is a playlist or a reference to other files; send the video file itself.")
    if head.startswith(IMAGE_HEADS):
        size = _image_header_size(source)
        if size is not None:
            _check_dimensions(*size, limits)
    try:
        container = _av_open(source, limits)
    except (av.error.FFmpegError, UnicodeDecodeError, OSError, ValueError) as exc:
        if _looks_like_media(head):
            raise TruncatedMediaError(
                f"{_name(source)} starts like a media file but cannot be read ({_why(exc)}); it is probably "
                "truncated or damaged. Upload the complete file."
            ) from exc
        raise NotMediaError(
            f"{_name(source)} is not a video, audio or image file the decoder recognises. "
            "Supported: mp4, mov, webm, mkv, 3gp, avi, mpeg, common audio formats and images."
        ) from exc
    fmt = container.format.name if container.format else ""
    if not any(name in ALLOWED_DEMUXERS for name in fmt.split(",")):
        container.close()
        raise UnsupportedFormatError(f"{_name(source)} is in a container format we do not open ({fmt or 'unknown'}).")
    return container


def _stream_start(stream) -> float | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def _frame_time(frame, stream) -> float | None:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    return None


# ----------------------------------------------------------------------------------------------
# Probe
# ----------------------------------------------------------------------------------------------
@_typed
def probe(source: MediaSource, limits: Limits | None = None) -> MediaInfo:
    """Inspect a file and validate it against ``limits``. Decodes only the first and last frames."""
    limits = limits or Limits.from_settings()
    size = _size_of(source)
    if size == 0:
        raise EmptyFileError(f"{_name(source)} is empty (0 bytes). The upload may have failed; send the file again.")
    if size > limits.max_file_bytes:
        raise FileTooLargeError(
            f"{_name(source)} is {size / 1e6:.1f} MB; the limit is {limits.max_file_bytes / 1e6:.0f} MB. "
            "Trim or compress the video."
        )

    with _open(source, limits) as container:
        vstreams = [s for s in container.streams.video if s.codec_context is not None]
        astreams = [s for s in container.streams.audio if s.codec_context is not None]
        fmt = container.format.name.split(",")[0] if container.format else "unknown"
        if not vstreams and not astreams:
            raise NoMediaStreamsError(f"{_name(source)} contains no audio or video stream.")

        v = vstreams[0] if vstreams else None
        a = astreams[0] if astreams else None
        is_image = v is not None and (
            fmt in IMAGE_FORMATS or (v.codec_context.name in IMAGE_CODECS and (v.frames or 0) <= 1 and a is None)
        )

        duration = _duration(container, v, a)
        if not is_image:  # from the headers, before any frame is decoded
            if not math.isfinite(duration) or duration <= 0:
                raise ZeroDurationError(f"{_name(source)} has zero duration: there is nothing to analyse.")
            # a recording of exactly the limit lasts a little longer in its container (AAC priming, the last
            # frame's duration): 10:00 from a phone is 600.1 s here, and must be accepted
            if duration > limits.max_duration_s + DURATION_SLACK_S:
                raise TooLongError(
                    f"{_name(source)} lasts {duration:.0f} s; the limit is {limits.max_duration_s:.0f} s. "
                    "Cut the part you want checked and upload that."
                )
        width = height = rotation = 0
        missing_tail = 0.0
        fps = 0.0
        vfr = False
        frame_count = 0
        video_start = 0.0
        if v is not None:
            # the size the headers declare, checked BEFORE any frame is decoded (a 16000×16000 PNG is 0.7 MB)
            _check_dimensions(v.codec_context.width or 0, v.codec_context.height or 0, limits, declared=True)
            first = _first_frame(container, v, source)
            rotation = int(getattr(first, "rotation", 0) or 0) % 360
            cw, ch = first.width, first.height
            _check_dimensions(cw, ch, limits)
            width, height = (ch, cw) if rotation in (90, 270) else (cw, ch)
            t0 = _frame_time(first, v)
            start = _stream_start(v)
            video_start = t0 if t0 is not None else (start or 0.0)
            if not is_image:
                avg = float(v.average_rate) if v.average_rate else 0.0
                base = float(v.base_rate) if v.base_rate else avg
                fps = avg or base
                vfr = bool(avg and base and abs(avg - base) / base > 0.01)
                frame_count = int(v.frames) if v.frames else int(round(duration * fps))
            else:
                frame_count = 1

        if not is_image:
            _check_riff_size(source, size)
            missing_tail = _check_tail(container, v or a, source)

        return MediaInfo(
            kind="image" if is_image else ("video" if v is not None else "audio"),
            container=fmt,
            size_bytes=size,
            duration_s=0.0 if is_image else float(duration),
            video_duration_s=0.0 if is_image or v is None else _video_duration(v, duration, video_start),
            has_video=v is not None,
            has_audio=a is not None,
            width=width,
            height=height,
            rotation=rotation,
            fps=fps,
            variable_frame_rate=vfr,
            frame_count=frame_count,
            video_codec=v.codec_context.name if v is not None else None,
            audio_codec=a.codec_context.name if a is not None else None,
            audio_sample_rate=int(a.rate) if a is not None and a.rate else None,
            audio_channels=int(a.channels) if a is not None else None,
            video_start_s=float(video_start),
            audio_start_s=_stream_start(a) if a is not None else None,
            bit_rate=int(container.bit_rate) if container.bit_rate else None,
            missing_tail_s=missing_tail,
        )


def _duration(container, v, a) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000.0
    best = 0.0
    for s in (v, a):
        if s is not None and s.duration is not None and s.time_base is not None:
            best = max(best, float(s.duration * s.time_base))
    return best


def _video_duration(v, container_duration: float, origin: float) -> float:
    if v.duration is not None and v.time_base is not None and v.duration > 0:
        start = _stream_start(v) or 0.0
        return float(v.duration * v.time_base) + start - origin
    return container_duration


def _first_frame(container, v, source):
    # the container was just opened: no seek (seeking an image2 demuxer loses its only frame)
    try:
        for frame in container.decode(v):
            return frame
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(f"the video stream of {_name(source)} cannot be decoded ({_why(exc)}).") from exc
    raise TruncatedMediaError(f"{_name(source)} has a video stream but no decodable frame; it is probably truncated.")


def _check_dimensions(width: int, height: int, limits: Limits, declared: bool = False) -> None:
    if declared and width == 0 and height == 0:
        return  # the headers do not say: the first decoded frame is checked instead
    if width <= 0 or height <= 0 or width > limits.max_dimension or height > limits.max_dimension:
        raise DimensionsError(
            f"frame size {width}×{height} is outside what we analyse (1…{limits.max_dimension} px per side)."
        )


TAIL_TOLERANCE_S = 0.25  # a complete file's last packet ends within this of the end its headers declare


def _readable_end(container, stream, declared_end: float) -> float | None:
    """End time of the last packet that can actually be read near ``declared_end`` (all streams when
    ``stream`` is None)."""
    anchor = stream if stream is not None else (container.streams.video or container.streams.audio)[0]
    tb = anchor.time_base
    seen = None
    try:
        container.seek(max(0, int((declared_end - 3.0) / tb)), stream=anchor, backward=True)
        for packet in container.demux(stream) if stream is not None else container.demux():
            if packet.pts is not None and packet.size and packet.time_base is not None:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                seen = end if seen is None else max(seen, end)
    except (av.error.FFmpegError, OSError):
        pass
    return seen


def _check_riff_size(source: MediaSource, size: int) -> None:
    """WAV and AVI declare their total size in the RIFF header, and FFmpeg measures their length from the data
    that is there: a cut-off file is caught by comparing the two."""
    head = _head(source, 12)
    if not head.startswith(b"RIFF") or head[8:12] not in (b"WAVE", b"AVI "):
        return
    declared = int.from_bytes(head[4:8], "little") + 8
    if declared > size + 1 and declared != 0xFFFFFFFF + 8:  # 0xFFFFFFFF: written while streaming, size unknown
        raise TruncatedMediaError(
            f"{_name(source)} is truncated: its header declares {declared / 1e6:.2f} MB but only "
            f"{size / 1e6:.2f} MB ({100 * size / declared:.0f} %) arrived. Upload the complete file.")


def _check_tail(container, stream, source) -> float:
    """A file cut short still opens when its index or header is at the front, but its end is missing: refuse
    it, saying how much is missing, rather than analyse part of it as if it were whole (an 80 %-truncated real
    clip once came out FAKE). The end the headers declare (the stream's own, else the container's, as in
    Matroska/WebM) is compared with the end of the last packet that can be read. Formats whose length FFmpeg
    measures from the data itself (WAV, MPEG-PS/TS, AVI, Ogg, ADTS) declare nothing more than they hold.
    Returns the seconds missing when that is within the tolerance (the report then says so)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        start = _stream_start(stream) or 0.0
        declared_end = start + float(stream.duration * stream.time_base)
        seen_end = _readable_end(container, stream, declared_end)
    elif container.duration and container.duration > 0:
        start = (container.start_time or 0) / 1_000_000.0
        declared_end = start + container.duration / 1_000_000.0
        seen_end = _readable_end(container, None, declared_end)
    else:
        return 0.0
    if seen_end is not None and seen_end >= declared_end - TAIL_TOLERANCE_S:
        return max(0.0, declared_end - seen_end)
    total = declared_end - start
    readable = max(0.0, (seen_end or start) - start)
    missing = f"{100 * (1 - readable / total):.0f} %" if seen_end is not None and total > 0 else "the end"
    raise TruncatedMediaError(
        f"{_name(source)} is truncated: it declares {total:.1f} s but {missing} of it is missing"
        + (f" (only {readable:.1f} s can be read)" if seen_end is not None else "")
        + ". Upload the complete file."
    )


# ----------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------
def _target_size(info: MediaInfo, max_side: int | None) -> tuple[int, int, float]:
    """Coded (pre-rotation) output size for decoding, and the scale relative to display size."""
    cw, ch = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
    scale = 1.0
    if max_side and max(cw, ch) > max_side:
        scale = max_side / max(cw, ch)
    # even sizes keep swscale's chroma handling exact
    return max(2, int(round(cw * scale / 2)) * 2), max(2, int(round(ch * scale / 2)) * 2), scale


def _to_rgb(frame, width: int, height: int, rotation: int) -> np.ndarray:
    if frame.width == width and frame.height == height:
        img = frame.to_ndarray(format="rgb24")
    else:
        img = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    k = (rotation // 90) % 4
    if k:
        # display matrix rotation is counter-clockwise; np.rot90 with k>0 also rotates counter-clockwise
        img = np.ascontiguousarray(np.rot90(img, k))
    return img


def sample_times(duration_s: float, fps: float, max_frames: int) -> np.ndarray:
    """Evenly spaced sampling instants (seconds), at ``fps`` but never more than ``max_frames``."""
    if duration_s <= 0:
        return np.zeros(1)
    n = int(math.floor(duration_s * fps + 1e-9))
    n = max(1, n)
    if n > max_frames:
        # centre the samples inside equal slices so the first and last seconds both count
        return (np.arange(max_frames) + 0.5) * (duration_s / max_frames)
    return (np.arange(n) + 0.5) / fps


@_typed
def sample_frames(
    source: MediaSource,
    info: MediaInfo | None = None,
    fps: float = 2.0,
    max_frames: int = 240,
    max_side: int | None = 1280,
    times_s: np.ndarray | None = None,
    limits: Limits | None = None,
) -> SampledFrames:
    """Frames at ``fps`` (or at ``times_s``), seeking past long gaps instead of decoding everything."""
    limits = limits or Limits.from_settings()
    info = info or probe(source, limits)
    width, height, scale, targets = _sampling(source, info, fps, max_frames, max_side, times_s)
    if targets is None:
        return SampledFrames(load_image(source, max_side=max_side)[None], np.zeros(1), scale)
    frames: np.ndarray | None = None  # filled in place: a list then np.stack held every frame twice
    stamps: list[float] = []
    for t, img in _sampled(source, info, targets, width, height, limits):
        if frames is None:
            frames = np.empty((targets.size, *img.shape), np.uint8)
        frames[len(stamps)] = img
        stamps.append(t)
    if frames is None:
        raise CorruptMediaError(f"no frame of {_name(source)} could be decoded.")
    frames = frames if len(stamps) == targets.size else frames[: len(stamps)].copy()
    return SampledFrames(frames, np.asarray(stamps, dtype=np.float64), scale)


@_typed
def iter_sample_frames(
    source: MediaSource,
    info: MediaInfo,
    fps: float = 2.0,
    max_frames: int = 240,
    max_side: int | None = 1280,
    limits: Limits | None = None,
    chunk: int = 16,
) -> tuple[int, float, Iterator[SampledFrames]]:
    """``sample_frames`` in chunks of ``chunk`` frames, so a caller that keeps only what it derives from them
    never holds them all (240 frames of 720p are 660 MB): (expected number of frames, scale, chunks)."""
    limits = limits or Limits.from_settings()
    width, height, scale, targets = _sampling(source, info, fps, max_frames, max_side, None)

    def chunks() -> Iterator[SampledFrames]:
        if targets is None:
            yield SampledFrames(load_image(source, max_side=max_side)[None], np.zeros(1), scale)
            return
        frames, stamps = [], []
        for t, img in _sampled(source, info, targets, width, height, limits):
            frames.append(img)
            stamps.append(t)
            if len(frames) == chunk:
                yield SampledFrames(np.stack(frames), np.asarray(stamps, np.float64), scale)
                frames, stamps = [], []
        if frames:
            yield SampledFrames(np.stack(frames), np.asarray(stamps, np.float64), scale)

    def checked() -> Iterator[SampledFrames]:
        n = 0
        it = chunks()
        while True:  # decoder failures while iterating become typed errors, as in ``sample_frames``
            try:
                c = next(it)
            except StopIteration:
                break
            except (MediaError, FileNotFoundError):
                raise
            except Exception as exc:
                raise _undecodable("iter_sample_frames", source, exc) from exc
            n += len(c)
            yield c
        if n == 0:
            raise CorruptMediaError(f"no frame of {_name(source)} could be decoded.")

    return (1 if targets is None else int(targets.size)), scale, checked()


def _sampling(source, info: MediaInfo, fps: float, max_frames: int, max_side: int | None,
              times_s: np.ndarray | None) -> tuple[int, int, float, np.ndarray | None]:
    """Decode size, scale and sampling instants (None for a still image)."""
    if not info.has_video:
        raise NoVideoStreamError(f"{_name(source)} has no video stream (audio only).")
    width, height, scale = _target_size(info, max_side)
    if info.kind == "image":
        return width, height, scale, None
    if times_s is None:
        times_s = sample_times(info.video_duration_s, fps, max_frames)
    return width, height, scale, np.asarray(times_s, float)


def _sampled(source, info: MediaInfo, targets: np.ndarray, width: int, height: int,
             limits: Limits) -> Iterator[tuple[float, np.ndarray]]:
    """(time, RGB frame) nearest each target, each source frame once (two targets may land on one frame when
    the sampling is denser than the source or its frame rate varies)."""
    seen: set[tuple[float, int | None]] = set()
    for t, frame in _nearest(source, info, targets, limits):
        if (t, frame.pts) in seen:
            continue
        seen.add((t, frame.pts))
        yield t, _to_rgb(frame, width, height, info.rotation)


SEEK_BEFORE_S = 0.1  # a seek aims this far before the tick, so the frame just before it is decoded too


def _keyframe_times(container, stream) -> np.ndarray | None:
    """Presentation times (s) of the stream's keyframes from its packets (no decoding; ~0.2 s for 10 min of
    720p), then rewinds. None when the packets do not say (no timestamps): seek on the gap alone then."""
    times = []
    try:
        for packet in container.demux(stream):
            if packet.is_keyframe:
                if packet.pts is None:
                    return None
                times.append(float(packet.pts * stream.time_base))
        container.seek(0)
    except (av.error.FFmpegError, OSError):
        return None
    return np.sort(np.asarray(times)) if times else None


def _keyframe_between(keys: np.ndarray | None, after: float, upto: float) -> bool:
    """Whether seeking to ``upto`` lands past ``after``: only then does a seek skip any decoding (a seek that lands
    on the keyframe the decoder already passed decodes that GOP again; a 10 min phone clip sampled every 2.5 s
    decoded 30 % more frames than going straight on)."""
    if keys is None:
        return True
    i = int(np.searchsorted(keys, upto, side="right")) - 1  # the keyframe a backward seek to ``upto`` lands on
    return i >= 0 and keys[i] > after


def _nearest(source, info: MediaInfo, ticks: np.ndarray, limits: Limits, seek_gap_s: float = 2.0):
    """Yield (frame_time, av.VideoFrame) of the source frame nearest each tick (times relative to the origin).

    Decodes sequentially while ticks are close together and seeks when the next one is more than
    ``seek_gap_s`` past the decoder, so a sparse sample of a long video never decodes the whole stream.
    A frame is repeated when ticks come faster than the source's frames.
    """
    origin = info.video_start_s
    step = 1.0 / max(info.fps, 1.0)
    deadline = time.monotonic() + limits.decode_timeout_s
    with _open(source, limits) as container:
        v = container.streams.video[0]
        v.thread_type = "AUTO"
        it = None
        prev = nxt = None  # the last two decoded frames as (time, frame)
        exhausted = False
        keys = _keyframe_times(container, v) if len(ticks) > 1 else None
        for tick in ticks:
            abs_t = origin + float(tick)
            if it is None or (nxt is not None and abs_t - nxt[0] > seek_gap_s and not exhausted
                              and _keyframe_between(keys, nxt[0], abs_t - SEEK_BEFORE_S)):
                try:
                    container.seek(max(0, int((abs_t - SEEK_BEFORE_S) / v.time_base)), stream=v, backward=True)
                except (av.error.FFmpegError, OSError):
                    try:
                        container.seek(0)
                    except (av.error.FFmpegError, OSError) as exc:  # not seekable at all (damaged index)
                        raise CorruptMediaError(f"{_name(source)} cannot be read past its start ({_why(exc)}); "
                                                "it is probably damaged. Upload the original file.") from exc
                it = container.decode(v)
                prev = nxt = None
                exhausted = False
            # advance until the newest frame is at or past the tick; the nearer of the last two wins
            while not exhausted and (nxt is None or nxt[0] < abs_t):
                if time.monotonic() > deadline:
                    raise DecodeTimeoutError(
                        f"decoding {_name(source)} took longer than {limits.decode_timeout_s:.0f} s."
                    )
                try:
                    frame = next(it)
                except StopIteration:
                    exhausted = True
                    break
                except av.error.FFmpegError as exc:
                    logger.warning("decode error near %.2fs in %s: %s", abs_t - origin, _name(source), exc)
                    exhausted = True
                    break
                ft = _frame_time(frame, v)
                if ft is None:
                    ft = (nxt[0] + step) if nxt else origin
                prev, nxt = nxt, (ft, frame)
            candidates = [c for c in (prev, nxt) if c is not None]
            if not candidates:
                return
            best = min(candidates, key=lambda c: (abs(c[0] - abs_t), c[0]))
            yield best[0] - origin, best[1]


def decode_dense(source: MediaSource, *args, **kwargs) -> list[DenseClip]:
    """Every window of ``iter_decode_dense`` (same arguments) as one list."""
    return list(iter_decode_dense(source, *args, **kwargs))


@_typed_stream
def iter_decode_dense(
    source: MediaSource,
    starts_s: list[float] | np.ndarray,
    n_frames: int,
    fps: float = 25.0,
    info: MediaInfo | None = None,
    max_side: int | None = 640,
    limits: Limits | None = None,
) -> Iterator[DenseClip]:
    """For each start time, ``n_frames`` consecutive frames resampled to ``fps`` (nearest source frame), one
    window at a time: a caller that keeps only what it derives from a window's frames (an 8 s window of 640 px
    frames is ~140 MB) never holds two.

    Windows running past the end are cut short; windows starting after the end are dropped. All
    windows come from one decoding pass (seeking between distant windows).
    """
    limits = limits or Limits.from_settings()
    info = info or probe(source, limits)
    if not info.has_video or info.kind == "image":
        raise NoVideoStreamError(f"{_name(source)} has no video stream to decode windows from.")
    width, height, scale = _target_size(info, max_side)
    windows = []
    for start in sorted(float(s) for s in starts_s):
        ticks = start + np.arange(n_frames) / fps
        ticks = ticks[ticks < info.video_duration_s]
        if ticks.size:
            windows.append(ticks)
    if not windows:
        return
    # Frames are converted as they stream into each window's preallocated array: holding the decoder's frames
    # until the end kept ~1.4 MB per 720p tick alive (550 MB for two 8 s windows).
    picked = _nearest(source, info, np.concatenate(windows), limits, seek_gap_s=max(2.0, 4.0 / fps))
    last: tuple[tuple[float, int | None], np.ndarray] | None = None  # a source frame repeated on the next tick
    try:
        for ticks in windows:
            frames: np.ndarray | None = None
            times = np.empty(ticks.size)
            n = 0
            for ft, frame in itertools.islice(picked, ticks.size):
                key = (ft, frame.pts)
                if last is None or last[0] != key:
                    last = (key, _to_rgb(frame, width, height, info.rotation))
                if frames is None:
                    frames = np.empty((ticks.size, *last[1].shape), np.uint8)
                frames[n], times[n] = last[1], ft
                n += 1
            if frames is None:
                break
            yield DenseClip(frames[:n], ticks[:n], times[:n], fps, scale)
            frames = None  # the caller's to keep or let go
            if n < ticks.size:  # the stream ended inside this window
                break
    finally:
        picked.close()  # closes the container now, not whenever the generator is collected


@_typed
def load_image(source: MediaSource, max_side: int | None = None) -> np.ndarray:
    """A still image as upright RGB uint8 (EXIF orientation is applied by the decoder's display matrix)."""
    with _open(source) as container:
        if not container.streams.video:
            raise NoVideoStreamError(f"{_name(source)} is not an image.")
        v = container.streams.video[0]
        try:
            frame = next(container.decode(v))
        except (StopIteration, av.error.FFmpegError) as exc:
            raise CorruptMediaError(f"{_name(source)} cannot be decoded as an image ({_why(exc)}).") from exc
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        w, h = frame.width, frame.height
        if max_side and max(w, h) > max_side:
            s = max_side / max(w, h)
            w, h = max(2, int(round(w * s))), max(2, int(round(h * s)))
        return _to_rgb(frame, w, h, rotation)


# ----------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------
@_typed
def load_audio(
    source: MediaSource,
    info: MediaInfo | None = None,
    sample_rate: int = 16000,
    limits: Limits | None = None,
) -> AudioTrack | None:
    """The first audio stream as mono float32 at ``sample_rate``, aligned to the video timeline.

    Returns ``None`` when there is no audio stream. If the audio stream starts after the first video
    frame, the gap is filled with silence; if it starts before, the early samples are dropped.
    """
    limits = limits or Limits.from_settings()
    info = info or probe(source, limits)
    if not info.has_audio:
        return None
    chunks: list[np.ndarray] = []
    first_time: float | None = None
    deadline = time.monotonic() + limits.decode_timeout_s
    with _open(source, limits) as container:
        a = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(a):
                if first_time is None:
                    first_time = _frame_time(frame, a)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                if time.monotonic() > deadline:
                    raise DecodeTimeoutError(f"decoding audio of {_name(source)} took too long.")
        except av.error.FFmpegError as exc:
            if not chunks:
                raise CorruptMediaError(
                    f"the audio stream of {_name(source)} cannot be decoded ({_why(exc)}).") from exc
            logger.warning("audio decode stopped early in %s: %s", _name(source), exc)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if first_time is None:
        first_time = info.audio_start_s or 0.0
    origin = info.video_start_s if info.has_video else first_time
    offset = float(first_time - origin)
    shift = int(round(offset * sample_rate))
    if shift > 0:
        samples = np.concatenate([np.zeros(shift, np.float32), samples])
    elif shift < 0:
        samples = samples[-shift:]
    np.clip(samples, -1.0, 1.0, out=samples)
    return AudioTrack(samples=samples, sample_rate=sample_rate, source_offset_s=offset)


def load_media(source: MediaSource) -> tuple[MediaSource, str | None]:
    """Normalise a path/bytes argument; returns the source and a display name."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), None
    return Path(source), Path(source).name

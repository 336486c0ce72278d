"""A corpus of malformed and adversarial media, generated in the test (nothing is committed).

``build(folder)`` writes at least 150 files and returns ``[(name, path, kind)]``: truncations of real
containers at many cut points, random bytes behind real headers, overwritten middles, absurd dimensions,
playlists and file references, polyglots, and things that are not media at all.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

from media_factory import ffmpeg

CUTS = (0.02, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.97)
# (name, extra ffmpeg args): 2 s of a moving test pattern with a tone, in every container we accept
BASES = (
    ("faststart.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-movflags", "+faststart"]),
    ("moovlast.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]),
    ("clip.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"]),
    ("clip.mkv", ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]),
    ("clip.avi", ["-c:v", "mpeg4", "-c:a", "mp3"]),
    ("clip.mpg", ["-c:v", "mpeg2video", "-c:a", "mp2", "-f", "vob"]),
    ("clip.ts", ["-c:v", "mpeg2video", "-c:a", "mp2"]),
    ("clip.3gp", ["-c:v", "h263", "-s", "176x144", "-c:a", "aac", "-ar", "16000", "-ac", "1"]),
    ("audio.ogg", ["-vn", "-c:a", "libopus"]),
    ("audio.wav", ["-vn"]),
    ("audio.flac", ["-vn"]),
    ("audio.mp3", ["-vn"]),
    ("audio.m4a", ["-vn", "-c:a", "aac"]),
)
IMAGES = ("still.png", "still.jpg", "still.gif")


def _png(width: int, height: int, rows: int | None = None) -> bytes:
    """A PNG whose header declares ``width``×``height`` (the pixel data may be far smaller: a bomb)."""
    rows = height if rows is None else rows
    raw = b"".join(b"\x00" + b"\x00" * width * 3 for _ in range(rows))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _bases(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    src = ["-f", "lavfi", "-i", "testsrc2=d=2:s=96x72:r=15", "-f", "lavfi", "-i", "sine=f=300:d=2"]
    out = {}
    for name, args in BASES:
        path = folder / name
        ffmpeg(*src, *args, "-shortest", str(path))
        out[name] = path
    for name in IMAGES:
        path = folder / name
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x72", "-frames:v", "1", str(path))
        out[name] = path
    return out


def build(folder: Path, seed: int = 0) -> list[tuple[str, Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    bases = _bases(folder / "bases")
    items: list[tuple[str, Path, str]] = []

    def add(name: str, data: bytes, kind: str) -> None:
        path = folder / name
        path.write_bytes(data)
        items.append((name, path, kind))

    for name, path in bases.items():
        data = path.read_bytes()
        items.append((name, path, "intact"))
        for cut in CUTS:
            add(f"cut{int(cut * 100):02d}_{name}", data[: max(1, int(len(data) * cut))], "truncated")
        add(f"noise_{name}", data[:64] + rng.randbytes(4096), "random_after_header")
        mid = len(data) * 2 // 5
        smashed = data[:mid] + rng.randbytes(min(2048, len(data) - mid)) + data[mid + 2048:]
        add(f"smashed_{name}", smashed, "overwritten")

    ts = bases["clip.ts"].read_bytes()
    secret = folder / "secret.txt"
    secret.write_text("secret: never read me\n")
    playlists = {
        "local.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{bases['clip.ts']}\n#EXT-X-ENDLIST\n".encode(),
        "secret.m3u8": f"#EXTM3U\n#EXTINF:1,\nfile://{secret}\n".encode(),
        "remote.m3u8": b"#EXTM3U\n#EXTINF:2,\nhttp://169.254.169.254/latest/meta-data/seg.ts\n",
        "list.ffconcat": f"ffconcat version 1.0\nfile '{bases['clip.mkv']}'\n".encode(),
        "list.pls": f"[playlist]\nFile1={bases['audio.mp3']}\nNumberOfEntries=1\n".encode(),
        "stream.sdp": b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nm=video 5004 RTP/AVP 96\r\n",
        "manifest.mpd": b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>',
    }
    for name, data in playlists.items():
        add(name, data, "playlist")
    # the HLS polyglot of the report: a playlist with a valid MPEG-TS appended
    add("polyglot.m3u8", playlists["local.m3u8"] + ts, "playlist")
    add("polyglot_ts_first.ts", ts + playlists["local.m3u8"], "polyglot")
    add("png_zip.png", bases["still.png"].read_bytes() + b"PK\x03\x04" + rng.randbytes(512), "polyglot")
    add("jpg_mp4.jpg", bases["still.jpg"].read_bytes() + bases["faststart.mp4"].read_bytes(), "polyglot")

    add("bomb_16000.png", _png(16000, 16000), "dimensions")
    add("bomb_100000x1.png", _png(100000, 1, rows=1), "dimensions")
    add("bomb_1x100000.png", _png(1, 100000, rows=10), "dimensions")
    add("zero_size.png", _png(0, 0, rows=0), "dimensions")
    gif = bytearray(bases["still.gif"].read_bytes())
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen 65535×65535
    add("huge_screen.gif", bytes(gif), "dimensions")

    mp4 = bases["faststart.mp4"].read_bytes()
    # codecs FFmpeg cannot name: PyAV gives those streams no codec context at all (an AttributeError once)
    add("unknown_audio_codec.mp4", mp4.replace(b"mp4a", b"zzzz").replace(b"esds", b"xxxx"), "codec")
    add("unknown_video_codec.mp4", mp4.replace(b"avc1", b"zzzz").replace(b"avcC", b"xxxx"), "codec")

    for name, data in {
        "empty.mp4": b"", "one_byte.mp4": b"\x00", "zeros.mp4": bytes(4096), "text.mp4": b"hello world\n" * 50,
        "page.html": b"<html><body>hi</body></html>", "data.json": b'{"video": true}',
        "random.bin": rng.randbytes(8192), "ftyp_only.mp4": mp4[:32],
    }.items():
        add(name, data, "not_media")
    return items

"""Messenger-like re-encoding (what WhatsApp does to an upload), for evaluation and training augmentation.

Videos: H.264 at ~1 Mbit/s, shorter side at most 480 px (WhatsApp's default quality), AAC 64 kbit/s.
Audio-only: Opus 32 kbit/s in Ogg (a voice note). Images: JPEG quality 70, longer side at most 1600 px.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Profile:
    name: str
    video_bitrate: str = "1M"
    max_short_side: int = 480
    audio_codec: str = "aac"
    audio_bitrate: str = "64k"
    voice_codec: str = "libopus"
    voice_bitrate: str = "32k"
    jpeg_quality: int = 70  # ffmpeg -q:v scale is 2..31; mapped below


PROFILES = {
    "whatsapp": Profile("whatsapp"),
    # a harsher variant for augmentation: lower bitrate, smaller frames, narrow-band voice
    "whatsapp_low": Profile("whatsapp_low", video_bitrate="500k", max_short_side=360, audio_bitrate="32k",
                            voice_bitrate="16k", jpeg_quality=50),
}


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is required for re-encoding: install it (`make install` does)")
    return exe


def reencode(src: str | Path, out_dir: str | Path, profile: str = "whatsapp", kind: str | None = None) -> Path:
    """Re-encode ``src`` into ``out_dir`` like a messenger would; returns the new file."""
    prof = PROFILES[profile]
    src, out_dir = Path(src), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind is None:
        from pipeline import media

        kind = media.probe(src).kind
    s = prof.max_short_side
    scale = (f"scale='if(lt(iw,ih),min({s},iw),-2)':'if(lt(iw,ih),-2,min({s},ih))'")
    if kind == "video":
        out = out_dir / f"{src.stem}.{prof.name}.mp4"
        args = ["-i", str(src), "-vf", scale, "-c:v", "libx264", "-preset", "veryfast", "-b:v", prof.video_bitrate,
                "-maxrate", prof.video_bitrate, "-bufsize", "2M", "-pix_fmt", "yuv420p", "-c:a", prof.audio_codec,
                "-b:a", prof.audio_bitrate, "-ac", "1", "-movflags", "+faststart", str(out)]
    elif kind == "audio":
        out = out_dir / f"{src.stem}.{prof.name}.ogg"
        args = ["-i", str(src), "-vn", "-c:a", prof.voice_codec, "-b:a", prof.voice_bitrate, "-ac", "1", str(out)]
    else:
        out = out_dir / f"{src.stem}.{prof.name}.jpg"
        q = max(2, min(31, round(31 - prof.jpeg_quality * 29 / 100)))
        args = ["-i", str(src), "-vf", "scale='min(1600,iw)':-2", "-q:v", str(q), "-frames:v", "1", str(out)]
    subprocess.run([_ffmpeg(), "-y", "-hide_banner", "-loglevel", "error", *args], check=True)
    return out

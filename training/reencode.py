"""Processing that must not make a real clip look fake, for evaluation (``make eval ARGS="--reencode NAME"``)
and training augmentation.

Messenger profiles (``PROFILES``): videos H.264 at ~1 Mbit/s, shorter side at most 480 px (WhatsApp's default
quality), AAC 64 kbit/s; audio-only: Opus 32 kbit/s in Ogg (a voice note); images: JPEG quality 70, longer side
at most 1600 px.

Other processings (``PROCESSINGS``, videos; the audio ones also apply to audio files): H.265 and VP9 re-encodes,
a 360p downscale, a 2× upscale, a 9:16 portrait crop, a letterbox into 16:9, a side-by-side panel, a phone's
beauty filter, over-sharpening, a colour-grading filter, burnt-in captions, frame-rate conversion to 30 and
60 fps, narrow-band telephone audio and Opus at 16 kbit/s; and real-side audio augmentation: pink noise (about
20 dB below speech), a music bed, +12 dB into a limiter, and -20 dB.
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


@dataclass(frozen=True)
class Processing:
    name: str
    video: tuple[str, ...]  # ffmpeg output args for the video stream (filters and codec)
    audio: tuple[str, ...] = ("-c:a", "aac", "-b:a", "96k")
    container: str = "mp4"


_H264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p")
_EVEN = "scale=trunc(iw/2)*2:trunc(ih/2)*2"
_CAPTION_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"  # Debian's fonts-dejavu-core (make apt)
_CAPTION = "He said this on live TV yesterday"
PROCESSINGS = {
    "messenger_vlow": Processing("messenger_vlow", ("-vf", "scale=-2:'min(240,ih)'", "-c:v", "libx264", "-preset",
                                                    "veryfast", "-b:v", "250k", "-pix_fmt", "yuv420p"),
                                 ("-c:a", "aac", "-b:a", "16k", "-ac", "1")),
    "h265": Processing("h265", ("-vf", _EVEN, "-c:v", "libx265", "-preset", "ultrafast", "-crf", "28",
                                "-pix_fmt", "yuv420p", "-tag:v", "hvc1", "-x265-params", "log-level=error")),
    "vp9": Processing("vp9", ("-vf", _EVEN, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                              "-b:v", "800k"), ("-c:a", "libopus", "-b:a", "48k"), "webm"),
    "down360": Processing("down360", ("-vf", "scale=-2:360", *_H264)),
    "up2x": Processing("up2x", ("-vf", "scale=trunc(iw):trunc(ih),scale=iw*2:ih*2:flags=lanczos", *_H264)),
    "portrait_crop": Processing("portrait_crop", ("-vf", "crop='min(iw,ih*9/16)':ih,scale=trunc(iw/2)*2:trunc(ih/2)*2",
                                                  *_H264)),
    "letterbox": Processing("letterbox", ("-vf", "scale=-2:360,pad='max(iw,ceil(ih*16/9/2)*2)'"
                                                 ":'max(ih,ceil(iw*9/16/2)*2)':(ow-iw)/2:(oh-ih)/2", *_H264)),
    "panel": Processing("panel", ("-filter_complex", "[0:v]scale=-2:360,split[a][b];[b]hflip,boxblur=8[c];"
                                                     "[a][c]hstack=inputs=2,scale=trunc(iw/2)*2:trunc(ih/2)*2[v]",
                                  "-map", "[v]", "-map", "0:a?", *_H264)),
    "fps30": Processing("fps30", ("-vf", f"fps=30,{_EVEN}", *_H264)),
    "fps60": Processing("fps60", ("-vf", f"fps=60,{_EVEN}", *_H264)),
    # what phone apps do to a real clip before anyone checks it: a beauty filter (edge-preserving skin smoothing
    # on luma), over-sharpening, a colour-grading filter, and burnt-in captions
    "beauty": Processing("beauty", ("-vf", f"bilateral=sigmaS=6:sigmaR=0.08:planes=1,{_EVEN}", *_H264)),
    "sharpen": Processing("sharpen", ("-vf", f"unsharp=5:5:1.2:5:5:0,{_EVEN}", *_H264)),
    "grade": Processing("grade", ("-vf", f"eq=contrast=1.12:saturation=1.35:gamma=0.95,"
                                         f"colorbalance=rs=0.06:gs=0.02:bs=-0.06,{_EVEN}", *_H264)),
    "captions": Processing("captions", ("-vf", f"{_EVEN},drawtext=fontfile={_CAPTION_FONT}:text='{_CAPTION}'"
                                               ":fontcolor=white:fontsize=h/16:box=1:boxcolor=black@0.6:boxborderw=8"
                                               ":x=(w-text_w)/2:y=h-text_h-h/12", *_H264)),
    "telephone": Processing("telephone", ("-c:v", "copy"),
                            ("-af", "highpass=f=300,lowpass=f=3400,aresample=8000", "-c:a", "aac", "-b:a", "24k",
                             "-ac", "1")),
    "opus16k": Processing("opus16k", ("-c:v", "copy"), ("-c:a", "libopus", "-b:a", "16k", "-ac", "1"), "mkv"),
}
_AAC = ("-c:a", "aac", "-b:a", "96k")
# a quiet "music bed": an A-minor chord, slowly pulsing, under the speech
_MUSIC = ("sine=frequency=220:sample_rate=48000[s1];sine=frequency=261.63:sample_rate=48000[s2];"
          "sine=frequency=329.63:sample_rate=48000[s3];[s1][s2][s3]amix=inputs=3,volume=0.06,tremolo=f=1.5:d=0.6[m];"
          "[0:a][m]amix=inputs=2:duration=first:normalize=0[a]")
_KEEP_VIDEO = ("-map", "0:v:0", "-c:v", "copy")
PROCESSINGS |= {
    # real-side audio augmentation: the room, a soundtrack and the recording level change, the speech does not
    "noise": Processing("noise", _KEEP_VIDEO, ("-filter_complex", "anoisesrc=color=pink:amplitude=0.03:seed=7[n];"
                                                                  "[0:a][n]amix=inputs=2:duration=first:normalize=0[a]",
                                               "-map", "[a]", *_AAC)),
    "music": Processing("music", _KEEP_VIDEO, ("-filter_complex", _MUSIC, "-map", "[a]", *_AAC)),
    "loud": Processing("loud", _KEEP_VIDEO, ("-filter_complex",
                                             "[0:a]volume=12dB,alimiter=limit=0.9:level=0:latency=1[a]",
                                             "-map", "[a]", *_AAC)),
    "quiet": Processing("quiet", _KEEP_VIDEO, ("-filter_complex", "[0:a]volume=-20dB[a]", "-map", "[a]", *_AAC)),
}
AUDIO_AUGMENTATIONS = ("noise", "music", "loud", "quiet")
AUDIO_PROCESSINGS = ("telephone", "opus16k", "messenger_vlow", *AUDIO_AUGMENTATIONS)
ALL = (*PROFILES, *PROCESSINGS)


def process(src: str | Path, out_dir: str | Path, name: str, kind: str | None = None) -> Path:
    """``src`` after processing ``name`` (a messenger profile or one of ``PROCESSINGS``), in ``out_dir``."""
    if name in PROFILES:
        return reencode(src, out_dir, name, kind)
    proc = PROCESSINGS[name]
    src, out_dir = Path(src), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind is None:
        from pipeline import media

        kind = media.probe(src).kind
    if kind == "audio":
        if name not in AUDIO_PROCESSINGS:
            return src  # a picture processing leaves a voice note as it is
        out = out_dir / f"{src.stem}.{name}.{'mka' if proc.container in ('mkv', 'webm') else 'm4a'}"
        args = ["-i", str(src), "-vn", *proc.audio, str(out)]
    elif kind == "image":
        return src
    else:
        if name in AUDIO_AUGMENTATIONS:
            from pipeline import media

            if not media.probe(src).has_audio:
                return src  # a silent video has no sound to add noise or music under
        out = out_dir / f"{src.stem}.{name}.{proc.container}"
        maps = [] if "-map" in proc.video else ["-map", "0:v:0", "-map", "0:a?"]
        args = ["-i", str(src), *maps, *proc.video, *proc.audio, str(out)]
    subprocess.run([_ffmpeg(), "-y", "-hide_banner", "-loglevel", "error", *args], check=True)
    return out


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

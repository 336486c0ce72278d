"""``make bench``: speed and memory of the whole pipeline on the clip shape users send most.

The suite builds portrait phone clips (720×1280, 30 fps, H.264/AAC) of 30 s, 3 min and 10 min from one real
dev clip with ffmpeg: the clip is looped and centre-cropped to 30 s once (x264 ``veryfast``, CRF 23, AAC
96 kbit/s), and the longer ones repeat those 30 s by stream copy, so building them takes seconds, not minutes.
Each length runs in its own process, because peak RSS (``ru_maxrss``) only ever grows within one.

Per length it reports the decode-only floor (the same decoding the pipeline does, no model) and the full run,
each the median of ``--repeat`` passes taken in turn, their ratio, peak RSS, cold start and the time per stage.
Where a GPU exists each length runs again with ``DEVICE=cuda`` (fp16 autocast); otherwise the report says there was
none.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
SOURCE_CLIP = REPO.parent / "shared/data/dev/A_real_av/sadtalker_hdtf" / (
    "examples__ref_video__WDA_AlexandriaOcasioCortez_000.mp4")
DEFAULT_LENGTHS_S = (30, 180, 600)
PORTRAIT = (720, 1280)


def build_clip(seconds: int, out_dir: Path, source: Path = SOURCE_CLIP, size: tuple[int, int] = PORTRAIT) -> Path:
    """A ``seconds`` long ``size`` (720×1280) 30 fps H.264/AAC phone-shaped clip made from ``source``, cached by
    name in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is needed to build the bench clips: run `make install`")
    base = out_dir / "portrait_30s.mp4"
    if not base.exists():
        if not source.exists():
            raise FileNotFoundError(f"bench source clip {source} not found; pass one with --source")
        w, h = size
        _ffmpeg(["-stream_loop", "-1", "-i", str(source), "-t", "30",
                 "-vf", f"scale={h}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},fps=30,setsar=1",
                 "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                 "-c:a", "aac", "-b:a", "96k", "-ar", "44100", "-movflags", "+faststart"], base)
    if seconds == 30:
        return base
    out = out_dir / f"portrait_{seconds}s.mp4"
    if not out.exists():
        loops = -(-seconds // 30) - 1
        _ffmpeg(["-stream_loop", str(loops), "-i", str(base), "-t", str(seconds), "-c", "copy",
                 "-movflags", "+faststart"], out)
    return out


def _ffmpeg(args: list[str], out: Path) -> None:
    tmp = out.with_suffix(".part.mp4")
    logger.info("building bench clip %s", out.name)
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(tmp)], check=True)
    tmp.replace(out)  # a clip cut short by an interrupted build is never reused


def decode_floor(video: Path, settings) -> float:
    """Seconds to decode what the pipeline decodes, without any model: probe, sparse frames, 16 kHz audio and
    the dense windows it would place for a face on screen throughout. Through the same streaming decoders the
    pipeline uses, letting each chunk and window go as it does: decoding is the same work, and the floor's own
    frames (660 MB for 240 sparse 720p frames held at once) never stand in for the pipeline's peak RSS."""
    import numpy as np

    from pipeline import media

    t0 = time.perf_counter()
    info = media.probe(video)
    if info.has_video:
        _, _, chunks = media.iter_sample_frames(video, info, fps=settings.sample_fps,
                                                max_frames=settings.max_sampled_frames,
                                                max_side=settings.max_decode_side)
        for _ in chunks:
            pass
    if info.has_audio:
        media.load_audio(video, info, settings.audio_sample_rate)
    if info.kind == "video":
        length = min(settings.dense_window_s, info.video_duration_s)
        n = max(1, min(settings.max_dense_windows, int(info.video_duration_s // settings.dense_window_s)))
        starts = np.linspace(0.0, info.video_duration_s - length, n)
        for _ in media.iter_decode_dense(video, starts, int(round(length * settings.dense_fps)),
                                         fps=settings.dense_fps, info=info):
            pass
    return time.perf_counter() - t0


def measure(video: Path, repeat: int = 3) -> dict:
    """One clip in this process: cold start, decode floor, ``repeat`` full runs, peak RSS, stage medians."""
    import numpy as np
    import torch

    import pipeline
    from pipeline import media
    from pipeline.settings import get_settings

    s = get_settings()
    t0 = time.perf_counter()
    p = pipeline.build(s)
    cold = time.perf_counter() - t0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    # the floor is measured as often as the run and interleaved with it, each the median of its passes: a single
    # floor pass moved by up to 70 % between suites on a shared host, and with it the ratio
    runs, floors = [], []
    for _ in range(repeat):
        floors.append(decode_floor(video, s))
        t0 = time.perf_counter()
        rep = p.run(video)
        runs.append((time.perf_counter() - t0, rep))
    totals = np.array([t for t, _ in runs])
    floor = float(np.median(floors))
    stages: dict[str, list[float]] = {}
    for _, r in runs:
        for k, v in r.stage_seconds:
            stages.setdefault(k, []).append(v)
    rep = runs[-1][1]
    info = media.probe(video)
    return {
        "clip": video.name, "duration_s": info.duration_s, "size": f"{info.width}x{info.height}",
        "fps": info.fps, "device": p.device, "threads": torch.get_num_threads(), "verdict": rep.verdict.value,
        "cold_start_s": cold, "decode_floor_s": floor, "decode_floor_min_s": float(min(floors)),
        "run_s": float(np.median(totals)),
        "run_min_s": float(totals.min()), "frames": rep.frames_analyzed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "stages": {k: float(np.median(v)) for k, v in stages.items()},
    }


def print_one(m: dict) -> None:
    print(f"clip: {m['clip']} ({m['duration_s']:.1f} s, {m['size']}, {m['fps']:.0f} fps)")
    print(f"device: {m['device']}  torch threads: {m['threads']}  verdict: {m['verdict']}")
    print(f"cold start (build, models loaded once): {m['cold_start_s']:.2f} s")
    print(f"decode only (floor), median:            {m['decode_floor_s']:.2f} s (min {m['decode_floor_min_s']:.2f})")
    print(f"full run, median:                       {m['run_s']:.2f} s (min {m['run_min_s']:.2f})"
          f" = {m['run_s'] / m['decode_floor_s']:.2f}x the floor, {m['duration_s'] / m['run_s']:.2f}x real time")
    print(f"frames analysed: {m['frames']}  -> {m['frames'] / m['run_s']:.1f} frames/s")
    print(f"peak memory: {m['peak_rss_mib']:.0f} MiB RSS"
          + (f", {m['peak_gpu_mib']:.0f} MiB GPU" if m["peak_gpu_mib"] is not None else ""))
    print(f"{'stage':<10} {'median s':>9} {'share':>6}")
    for k, v in m["stages"].items():
        print(f"{k:<10} {v:>9.3f} {v / m['run_s']:>6.1%}")


def _child(video: Path, repeat: int, device: str | None) -> dict:
    env = dict(os.environ)
    if device:
        env["DEVICE"] = device
    cmd = [sys.executable, "-m", "pipeline", "bench", str(video), "--repeat", str(repeat), "--json"]
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def suite(lengths: list[int], out_dir: Path, repeat: int, source: Path = SOURCE_CLIP) -> int:
    """Every length in a fresh process (CPU, then GPU where there is one) and one table."""
    import torch

    clips = [(n, build_clip(n, out_dir, source)) for n in lengths]
    devices = [None] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for n, clip in clips:
            logger.info("bench: %s on %s", clip.name, device or "the default device")
            rows.append(_child(clip, repeat if n <= 60 else 1, device))
            print_one(rows[-1])
            print()
    print(f"{'clip':<22} {'device':<6} {'floor s':>8} {'run s':>8} {'÷floor':>7} {'x real':>7} {'peak RSS':>9} "
          f"{'GPU MiB':>8} {'cold s':>7}")
    for m in rows:
        gpu = f"{m['peak_gpu_mib']:.0f}" if m["peak_gpu_mib"] is not None else "-"
        print(f"{m['clip']:<22} {m['device']:<6} {m['decode_floor_s']:>8.2f} {m['run_s']:>8.2f} "
              f"{m['run_s'] / m['decode_floor_s']:>7.2f} {m['duration_s'] / m['run_s']:>7.2f} "
              f"{m['peak_rss_mib']:>7.0f} M {gpu:>8} {m['cold_start_s']:>7.2f}")
    if len(devices) == 1:
        print("GPU: none available on this machine, so no GPU column (DEVICE=cuda runs it where there is one)")
    return 0

"""Command line: ``python -m pipeline <command>`` (the Makefile targets call these)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger("pipeline")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "urllib3", "PIL", "matplotlib", "h5py", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ----------------------------------------------------------------------------------------------
# faces
# ----------------------------------------------------------------------------------------------
def cmd_faces(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from models import registry, weights
    from pipeline import faces, stages
    from pipeline.settings import get_settings

    settings = get_settings()
    if args.fps:
        settings = settings.model_copy(update={"sample_fps": args.fps})
    weights.configure(settings.weights_dir, settings.weights_cache, settings.allow_download)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    decoded = stages.decode(args.video, settings, with_audio=False)
    info, sampled = decoded.info, decoded.sampled
    if sampled is None:
        logger.error("%s has no video stream: no faces to extract", args.video)
        return 2
    t_decode = time.perf_counter() - t0
    variant = settings.face_detector.removeprefix("retinaface_")
    detector = registry.spec("retinaface").load(variant, device=settings.device)
    with tqdm(total=len(sampled), desc="faces", unit="frame", file=sys.stderr) as bar:
        analysis = stages.track_faces(sampled, detector, settings,
                                      progress=lambda done, total: bar.update(done - bar.n))
    tracks_json = []
    for track in analysis.tracks:
        crops = faces.track_crops(sampled.frames, track, args.size, args.margin)
        tdir = out / f"track_{track.track_id:02d}"
        tdir.mkdir(exist_ok=True)
        files = []
        for k, crop in enumerate(crops):
            name = f"{k:04d}_t{track.timestamps_s[k]:07.2f}s.jpg"
            cv2.imwrite(str(tdir / name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            files.append(f"{tdir.name}/{name}")
        inv = 1.0 / sampled.scale
        tracks_json.append({
            "track_id": track.track_id,
            "is_main": track.track_id == analysis.main_track_id,
            "frames": len(track),
            "timestamps_s": [round(float(t), 3) for t in track.timestamps_s],
            "boxes": [[round(float(v) * inv, 1) for v in b] for b in track.boxes],
            "landmarks": [[[round(float(v) * inv, 1) for v in p] for p in lm] for lm in track.landmarks],
            "scores": [round(float(s), 4) for s in track.scores],
            "mean_score": round(track.mean_score, 4),
            "blur_laplacian_var": [round(float(b), 1) for b in track.blur],
            "mean_face_size_px": round(track.mean_size * inv, 1),
            "quality": round(track.quality, 3),
            "crops": files,
        })
    summary = {
        "video": str(args.video),
        "duration_s": round(info.duration_s, 3),
        "size": [info.width, info.height],
        "fps": round(info.fps, 3),
        "rotation": info.rotation,
        "has_audio": info.has_audio,
        "frames_sampled": len(sampled),
        "main_track_id": analysis.main_track_id,
        "crop_size": args.size,
        "crop_margin": args.margin,
        "seconds": {"decode": round(t_decode, 3), "total": round(time.perf_counter() - t0, 3)},
        "tracks": tracks_json,
    }
    (out / "tracks.json").write_text(json.dumps(summary, indent=2))
    logger.info("%d track(s) from %d frames -> %s", len(analysis.tracks), len(sampled), out / "tracks.json")
    print(json.dumps({k: v for k, v in summary.items() if k != "tracks"} | {"tracks": len(tracks_json)}))
    return 0


# ----------------------------------------------------------------------------------------------
# scan
# ----------------------------------------------------------------------------------------------
class StageBar:
    """A tqdm bar driven by the pipeline's (stage, fraction) progress callback."""

    def __init__(self, desc: str):
        from tqdm import tqdm

        self.bar = tqdm(total=100, desc=desc, unit="%", file=sys.stderr, leave=False,
                        bar_format="{desc:<28}{percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, stage: str, fraction: float) -> None:
        self.bar.set_description_str(f"{stage}")
        self.bar.update(max(0, int(round(fraction * 100)) - self.bar.n))
        if fraction >= 1.0:  # tqdm skips draws within mininterval of the last one: the end must show
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def cmd_scan(args: argparse.Namespace) -> int:
    import pipeline
    from pipeline import media
    from pipeline.render import report_html, summary_text

    # a typo, a folder, a pipe, a damaged or truncated file: say which, before loading any model (exit 2)
    media.probe(args.video, media.Limits.from_settings())
    from pipeline.settings import get_settings

    t0 = time.perf_counter()
    settings = get_settings()
    if not (args.html or args.figures or args.json):  # the terminal summary shows no picture: none is drawn
        # (--json is the report the API stores, figure names included)
        settings = settings.model_copy(update={"explain": False})
    p = pipeline.build(settings)
    logger.info("models loaded in %.1fs", time.perf_counter() - t0)
    bar = StageBar(Path(args.video).name)
    try:
        report = p.run(args.video, progress=bar)
    finally:
        bar.close()
    data = report.to_dict()
    figures = {f.name: f.png for f in report.figures}
    if args.html:
        Path(args.html).write_text(report_html(data, figures))
        logger.info("HTML report written to %s", args.html)
    if args.figures and figures:
        out = Path(args.figures)
        out.mkdir(parents=True, exist_ok=True)
        for name, png in figures.items():
            (out / f"{name}.png").write_bytes(png)
        logger.info("%d evidence figures written to %s", len(figures), out)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(summary_text(data))
    return 0 if report.verdict.value != "FAILED" else 3


# ----------------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from pipeline import bench

    if args.video:  # one clip, in this process
        video = Path(args.video)
        if not video.exists():
            logger.error("bench clip %s not found", video)
            return 2
        m = bench.measure(video, args.repeat)
        if args.json:
            print(json.dumps(m))
        else:
            bench.print_one(m)
        return 0
    try:
        return bench.suite(args.lengths, Path(args.out), args.repeat, Path(args.source))
    except (FileNotFoundError, RuntimeError) as exc:
        logger.error("%s", exc)
        return 2


# ----------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------
def cmd_weights(args: argparse.Namespace) -> int:
    from models import weights

    failures = 0
    for spec in weights.WEIGHTS.values():
        if spec.bundled:
            continue
        try:
            path = weights.resolve(spec.name, allow_download=True)
            logger.info("ok  %-22s %s", spec.name, path)
        except weights.WeightsNotFoundError as exc:
            failures += 1
            logger.error("%s", exc)
    for hub in weights.HUB_MODELS.values():
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(hub.repo_id)
            logger.info("ok  %-22s hub:%s", hub.name, hub.repo_id)
        except Exception as exc:  # hub unreachable: say so, keep going
            failures += 1
            logger.error("could not fetch hub model %s (%s): %s", hub.name, hub.repo_id, exc)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("faces", help="detect, track and align faces; write crops and tracks.json")
    f.add_argument("video")
    f.add_argument("--out", default="out/faces")
    f.add_argument("--size", type=int, default=256, help="crop size in pixels (256 MesoNet, 380 B7, 224/112 lips)")
    f.add_argument("--margin", type=float, default=0.3, help="context around the aligned face (0 = tight)")
    f.add_argument("--fps", type=float, default=None, help="sampling rate (default: SAMPLE_FPS, 2)")
    f.set_defaults(func=cmd_faces)

    s = sub.add_parser("scan", help="analyse one video/audio/image and print the verdict")
    s.add_argument("video")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    s.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report (figures embedded)")
    s.add_argument("--figures", metavar="DIR", help="also write the evidence figures as PNG files")
    s.set_defaults(func=cmd_scan)

    from pipeline.bench import DEFAULT_LENGTHS_S, SOURCE_CLIP

    b = sub.add_parser("bench", help="speed, peak memory and the decode floor on phone clips of several lengths")
    b.add_argument("video", nargs="?", default=None,
                   help="one clip; without it the suite builds 720x1280 phone clips of --lengths seconds")
    b.add_argument("--repeat", type=int, default=3, help="full runs per clip up to 60 s (longer clips run once)")
    b.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS_S))
    b.add_argument("--out", default="out/bench", help="where the built clips are cached")
    b.add_argument("--source", default=str(SOURCE_CLIP), help="the real clip the bench clips are made from")
    b.add_argument("--json", action="store_true", help="with a clip: one JSON line instead of the table")
    b.set_defaults(func=cmd_bench)

    w = sub.add_parser("weights", help="download every checkpoint of a real deployment (needs internet)")
    w.set_defaults(func=cmd_weights)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    from pipeline import media

    try:
        return int(args.func(args) or 0)
    except media.MediaError as exc:
        logger.error("%s [%s]", exc.message, exc.code)
        return 2
    except FileNotFoundError as exc:
        logger.error("%s", exc)
        return 2

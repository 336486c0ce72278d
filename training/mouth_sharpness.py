"""``python -m training.mouth_sharpness``: is a blurred mouth evidence of a lip-sync fake? Judged by the fused LOSO.

    python -m training.mouth_sharpness --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/audio_oof/*/results.jsonl [--visual-features out/visual_cache]

Report only: a candidate detector, not shipped. Lip-sync generators (Wav2Lip and its descendants, DINet, zzww,
HyperLips) paint the mouth at a lower resolution than the frame and paste it back, so the mouth of their output is
blurrier than the rest of the face. Nothing is learned: the measure is the log energy of the Laplacian (the finest
detail) in the mouth box of the visual stage's aligned crops, median over the clip's substantial face tracks, and
its sign is fixed before looking (blurrier = more fake). ``--relative`` divides it by the same measure on the
cheeks, so a soft or downscaled video as a whole reads as sharp as a crisp one.

It enters the evidence fusion as one more column (its own calibration and reliability, fitted per fold) on the
very rows of ``make calibrate`` (the crops ``make eval`` kept, ``--visual-features``), and is judged as
``training.fusion_variants`` judges a fusion structure: each held-out source's fused AUC against every real of
its kind, against the as-is reals, and against reals with the same streams.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.mouth_blur import mouth_detail
from pipeline.faces import face_regions
from training.evidence_fusion import Table, build_table
from training.fusion_variants import judge, write_report
from training.split import read_manifest

logger = logging.getLogger(__name__)


def blur_score(crops: np.ndarray, size: int, margin: float, relative: bool = False) -> float:
    """The clip's mouth blur (higher = blurrier): minus the median mouth detail (the shipped ``mouth_blur``
    detector's measure), less the cheeks' if ``relative``."""
    boxes = face_regions(size, margin)
    d = mouth_detail(crops, boxes["mouth"])
    if relative:
        d = d - mouth_detail(crops, boxes["cheeks"])
    return -float(np.median(d))


def with_column(t: Table, values: np.ndarray, ok: np.ndarray) -> Table:
    """``t`` with one more detector column: ``values`` centred and scaled over every scored row, labels unseen (the
    fusion fits its calibration per fold)."""
    v = values[ok]
    z = np.where(ok, (values - np.median(v)) / (v.std() + 1e-9), 0.0) if ok.any() else np.zeros(len(values))
    return replace(t, x=np.c_[t.x, z], ran=np.c_[t.ran, ok], fit_ok=np.c_[t.fit_ok, ok])


def main(argv: list[str] | None = None) -> int:
    import pipeline
    from pipeline.settings import Settings
    from training.calibrate import _read_results
    from training.evaluate import sync_variant, visual_cache

    ap = argparse.ArgumentParser(prog="python -m training.mouth_sharpness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", nargs="+", required=True, help="results.jsonl files, every score out of fold")
    ap.add_argument("--manifest", nargs="+", required=True)
    ap.add_argument("--visual-features", default="out/visual_cache", help="where `make eval` kept the face crops")
    ap.add_argument("--report", default="out/eval/mouth_sharpness.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    p = pipeline.build(Settings(explain=False))
    cache = visual_cache(p, Path(args.visual_features))
    if cache is None:
        raise SystemExit("no face or visual detector loads here; set WEIGHTS_DIR")
    if cache.crop != "aligned":
        raise SystemExit(f"the kept crops are {cache.crop}, not aligned faces: the mouth box would be anywhere")
    items = [it for m in args.manifest for it in read_manifest(m)]
    by_path = {it.path: it for it in items}
    t = build_table([r for f in args.results for r in _read_results(Path(f))], items)
    values = {False: np.zeros(len(t.y)), True: np.zeros(len(t.y))}
    ok = np.zeros(len(t.y), bool)
    for i, r in enumerate(t.results):
        got = cache.get(by_path[r.path].file, sync_variant(r.reencode)) if t.family[i] == "video" else None
        if got is None:
            continue
        crops, substantial = got
        faces = np.concatenate([crops[k] for k in substantial])
        for relative in values:
            values[relative][i] = blur_score(faces, cache.input_size, p.settings.visual_crop_margin, relative)
        ok[i] = True
    logger.info("%d video rows with kept crops", ok.sum())
    write_report({"shipped": judge(t, items),
                  "mouth blur": judge(with_column(t, values[False], ok), items),
                  "mouth blur, relative to the cheeks": judge(with_column(t, values[True], ok), items)},
                 Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

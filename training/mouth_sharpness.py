"""``python -m training.mouth_sharpness``: what the mouth-blur detector adds to the fusion, judged by the fused LOSO.

    python -m training.mouth_sharpness --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/mouth_fill/*/results.jsonl [--visual-features out/visual_cache]

Lip-sync generators (Wav2Lip and its descendants, DINet, zzww, HyperLips) paint the mouth at a lower resolution
than the frame and paste it back, so the mouth of their output is blurrier than the rest of the face. The shipped
``mouth_blur`` detector (``models/mouth_blur.py``) measures the log energy of the Laplacian (the finest detail) in
the mouth box of the aligned face crops, median over the clip's substantial face tracks; nothing is learned and its
sign was fixed before looking (blurrier = more fake).

On the very rows of ``make calibrate`` this compares, as ``training.fusion_variants`` judges a fusion structure
(each held-out source's fused AUC against every real of its kind, the as-is reals, and reals with the same
streams): the fusion without the mouth column (the four detectors before it shipped), the shipped fusion, and the
column replaced by the same measure relative to the cheeks (``--visual-features``: the crops ``make eval`` kept),
which reads a soft or downscaled video as a whole as sharp as a crisp one.
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
from pipeline.report import MOUTH, SLOTS
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


def with_column(t: Table, values: np.ndarray, ok: np.ndarray, j: int | None = None) -> Table:
    """``t`` with ``values`` as detector column ``j`` (one more column when None): centred and scaled over every
    scored row, labels unseen (the fusion fits its calibration per fold); rows outside ``ok`` did not run it."""
    v = values[ok]
    z = np.where(ok, (values - np.median(v)) / (v.std() + 1e-9), 0.0) if ok.any() else np.zeros(len(values))
    if j is None:
        return replace(t, x=np.c_[t.x, z], ran=np.c_[t.ran, ok], fit_ok=np.c_[t.fit_ok, ok])
    x, ran, fit_ok = t.x.copy(), t.ran.copy(), t.fit_ok.copy()
    x[:, j], ran[:, j], fit_ok[:, j] = z, ok, ok
    return replace(t, x=x, ran=ran, fit_ok=fit_ok)


def without_column(t: Table, j: int) -> Table:
    """``t`` as if detector column ``j`` never ran (the fusion before it existed)."""
    x, ran, fit_ok = t.x.copy(), t.ran.copy(), t.fit_ok.copy()
    x[:, j], ran[:, j], fit_ok[:, j] = 0.0, False, False
    return replace(t, x=x, ran=ran, fit_ok=fit_ok)


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
    j = SLOTS.index(MOUTH)
    if not t.ran[:, j].any():
        raise SystemExit("no row carries a mouth score: run `python -m training.mouth_fill` on these results first")
    relative = np.zeros(len(t.y))
    ok = np.zeros(len(t.y), bool)
    for i, r in enumerate(t.results):
        got = cache.get(by_path[r.path].file, sync_variant(r.reencode)) if t.ran[i, j] else None
        if got is None:
            continue
        crops, substantial = got
        faces = np.concatenate([crops[k] for k in substantial])
        relative[i] = blur_score(faces, cache.input_size, p.settings.visual_crop_margin, relative=True)
        ok[i] = True
    logger.info("%d video rows with a mouth score, %d with kept crops", t.ran[:, j].sum(), ok.sum())
    write_report({"four detectors (before the mouth slot)": judge(without_column(t, j), items),
                  "shipped (with mouth blur)": judge(t, items),
                  "mouth blur relative to the cheeks instead": judge(with_column(t, relative, ok, j), items)},
                 Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m training.visual_rescore``: the visual rows of ``make eval`` scored again by another visual detector
that learns nothing from the dev set (default: ``mesonet_detail``, MesoNet on detail-normalised faces).

    python -m training.visual_rescore --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/mouth_fill/*/results.jsonl [--visual-detector mesonet_detail] --out out/eval/visual_detail

Every row whose visual stage ran is scored again from the crops ``make eval`` kept (``--visual-features``) through
the runtime's own rule (``pipeline.stages.score_visual_crops``) under the new detector's identity, so
``python -m training calibrate`` fits and judges the fusion with it, leave-one-source-out, without decoding a file
again. Nothing is fitted, so no fold is involved. The detector must read the same crops as the one that made them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from pipeline.report import VISUAL
from training.evaluate import rescore_parser, sync_variant, write_rescored
from training.split import read_manifest

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    import pipeline
    from pipeline.settings import Settings
    from pipeline.stages import score_visual_crops
    from training.calibrate import _read_results
    from training.evaluate import visual_cache

    ap = rescore_parser("visual_rescore", __doc__)
    ap.add_argument("--visual-features", default="out/visual_cache", help="where `make eval` kept the face crops")
    ap.add_argument("--visual-detector", default="mesonet_detail", help="the registry selector to score with")
    ap.add_argument("--reuse", nargs="*", default=[],
                    help="results.jsonl files this tool wrote before: a row of the same file and processing scored "
                         "there by the same detector (identity) takes that score instead of being scored again")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    cache = visual_cache(pipeline.build(Settings(explain=False)), Path(args.visual_features))
    p = pipeline.build(Settings(explain=False, visual_detector=args.visual_detector))
    if cache is None or not p.c.visual.available:
        raise SystemExit(f"no face or visual detector loads here ({p.c.visual.reason}); set WEIGHTS_DIR")
    prep = p._visual_preprocess()
    if (prep.crop, int(p.c.visual.detector.input_size)) != (cache.crop, cache.input_size):
        raise SystemExit(f"{args.visual_detector} reads {prep.crop} {p.c.visual.detector.input_size} px crops, the "
                         f"kept ones are {cache.crop} {cache.input_size} px")
    ident = (p.identities[VISUAL].name, p.identities[VISUAL].sha256)
    items = {it.path: it for m in args.manifest for it in read_manifest(m)}
    per_file = [[r for r in _read_results(Path(f)) if r.path in items] for f in args.results]
    known: dict[tuple[str, str | None], float] = {}
    for f in args.reuse:
        for r in _read_results(Path(f)):
            if list((r.detectors or {}).get(VISUAL, [])) == list(ident) and r.raw.get(VISUAL) is not None:
                known[(r.path, r.reencode)] = r.raw[VISUAL]
    scores: dict[int, float | None] = {}
    counts: Counter = Counter()
    moved: list[float] = []
    i = 0
    for rows in per_file:
        for r in rows:
            if r.status.get(VISUAL) == "ok":
                key = (r.path, r.reencode)
                got = None if key in known else cache.get(items[r.path].file, sync_variant(r.reencode))
                if key in known:
                    scores[i] = known[key]
                    counts["reused"] += 1
                elif got is None:
                    scores[i] = None
                    counts["no inputs kept"] += 1
                else:
                    crops, substantial = got
                    det = p._visual_detector("image" if r.modality == "image" else "video")
                    scores[i] = float(score_visual_crops(det.predict, crops, substantial, prep.aggregation)[0])
                    counts["scored"] += 1
                if scores[i] is not None and r.raw.get(VISUAL) is not None:
                    moved.append(scores[i] - r.raw[VISUAL])
            i += 1
    out_root = Path(args.out)
    write_rescored(args.results, per_file, out_root, scores, VISUAL, ident, tag_unscored=False)
    summary = {"identity": ident, "counts": dict(counts), "seconds": round(time.perf_counter() - t0, 1),
               "score_change": {"median": float(np.median(moved)) if moved else None,
                                "mean_abs": float(np.mean(np.abs(moved))) if moved else None}}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=1))
    logger.info("visual rows rescored by %s: %s (%.0fs)", ident[0], dict(counts), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

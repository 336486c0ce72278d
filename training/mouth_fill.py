"""``python -m training.mouth_fill``: the mouth-blur score for ``make eval`` rows scored before the detector existed.

    python -m training.mouth_fill --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/all/results.jsonl ... [--visual-features out/visual_cache] --out out/eval/mouth_fill

The mouth stage reads nothing but the visual stage's aligned face crops, which ``make eval`` keeps
(``--visual-features``): a row scored without it gets the score the pipeline would have given, from those crops and
through the pipeline's own rule (``pipeline.stages.score_mouth_crops``), without decoding the file again. Nothing is
learned, so no fold is involved. Every row is scored again, so rows of one fit share one version of the measure;
where a row already carried a mouth score, the largest difference is logged and written to ``summary.json`` (0 when
the detector is unchanged). A row whose faces were not analysed keeps the visual stage's reason; one whose crops
are gone is marked ``no_features``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from pipeline.report import MOUTH, VISUAL
from training.evaluate import OOF_STATUS_MISSING, ItemResult, applicable_for, rescore_parser, sync_variant
from training.split import read_manifest

logger = logging.getLogger(__name__)


def filled(r: ItemResult, score: float | None, status: str, ident: tuple[str, str]) -> ItemResult:
    """``r`` with the mouth slot's ``status`` and raw ``score`` (None unless it ran)."""
    return replace(r, status={**r.status, MOUTH: status}, raw={**r.raw, MOUTH: score},
                   detectors={**(r.detectors or {}), MOUTH: list(ident)})


def main(argv: list[str] | None = None) -> int:
    import pipeline
    from pipeline import stages
    from pipeline.settings import Settings
    from training.calibrate import _read_results
    from training.evaluate import visual_cache

    ap = rescore_parser("mouth_fill", __doc__)
    ap.add_argument("--visual-features", default="out/visual_cache", help="where `make eval` kept the face crops")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    p = pipeline.build(Settings(explain=False))
    cache = visual_cache(p, Path(args.visual_features))
    if cache is None or p._mouth_crop_key() != VISUAL:
        raise SystemExit("the kept crops are not the mouth stage's aligned faces (is MesoNet the visual detector and "
                         "WEIGHTS_DIR set?)")
    mouth = p.c.mouth
    ident = (p.identities[MOUTH].name, p.identities[MOUTH].sha256)
    items = {it.path: it for m in args.manifest for it in read_manifest(m)}
    counts = {"filled": 0, "not_applicable": 0, OOF_STATUS_MISSING: 0}
    diffs: list[float] = []
    out_root = Path(args.out)
    for f in args.results:
        dest = out_root / Path(f).parent.name / "results.jsonl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        rows = [r for r in _read_results(Path(f)) if r.path in items]
        with open(dest, "w") as fh:
            for r in rows:
                score = None
                if MOUTH in applicable_for(r.modality) and r.status.get(VISUAL) == "ok":
                    got = cache.get(items[r.path].file, sync_variant(r.reencode))
                    if got is not None:
                        crops, substantial = got
                        score, _ = stages.score_mouth_crops(mouth.detector, crops, substantial, p._mouth_size(),
                                                            p.settings.visual_crop_margin)
                if score is not None and r.raw.get(MOUTH) is not None:
                    diffs.append(abs(score - r.raw[MOUTH]))
                if score is not None:
                    r, kind = filled(r, score, "ok", ident), "filled"
                elif MOUTH not in applicable_for(r.modality):  # an image or a voice note: the stage never scores it
                    r, kind = filled(r, None, "not_applicable", ident), "not_applicable"
                elif r.status.get(VISUAL) == "ok":  # faces were scored, but their crops are not kept
                    r, kind = filled(r, None, OOF_STATUS_MISSING, ident), OOF_STATUS_MISSING
                else:  # no face found, or faces could not be detected: the visual stage's reason is the mouth's too
                    r, kind = filled(r, None, r.status.get(VISUAL) or "not_applicable", ident), "not_applicable"
                counts[kind] += 1
                fh.write(json.dumps(asdict(r)) + "\n")
        logger.info("%s -> %s (%d rows)", f, dest, len(rows))
    summary = {"counts": counts, "identity": ident, "checked": len(diffs),
               "max_abs_diff_from_stored": float(max(diffs)) if diffs else None,
               "seconds": round(time.perf_counter() - t0, 1)}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=1))
    logger.info("mouth scores: %s", summary)
    if diffs and max(diffs) > 1e-6:
        logger.warning("a stored mouth score differs from its crops' by %.2g (scored by an earlier version)",
                       max(diffs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

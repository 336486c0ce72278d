"""``python -m training.audio_rescore``: every audio row scored again by another audio detector, on the very windows
``make eval`` fed the shipped one (kept by ``--audio-features``), so detectors can be compared through the fused
LOSO without running the pipeline again:

    python -m training.audio_rescore --detector aasist --results out/eval/temporal_oof/*/results.jsonl \\
        --out out/eval/audio_aasist

The clip score is the runtime's (``pipeline.audio.score_audio``): the mean P(fake) of the windows. Rows are written
again with the audio score replaced under the other detector's identity; a detector never fitted on dev items
(the released AASIST) is out of fold by construction. A row whose windows were not kept loses its audio score.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from pipeline.report import AUDIO
from training.evaluate import ItemResult, sync_variant, write_rescored
from training.split import ManifestItem, read_manifest

logger = logging.getLogger(__name__)


def score_rows(rows: list[ItemResult], items: dict[str, ManifestItem], cache, predict) -> tuple[dict, Counter]:
    """Row index -> mean window P(fake) of ``predict`` on the row's kept windows, for rows whose audio stage ran."""
    from tqdm import tqdm

    out: dict[int, float | None] = {}
    counts: Counter = Counter()
    for i, r in enumerate(tqdm(rows, desc="audio rows", unit="row", file=sys.stderr)):
        if r.status.get(AUDIO) != "ok":
            continue
        windows = cache.get(items[r.path].file, sync_variant(r.reencode))
        if windows is None or not len(windows):
            out[i] = None
            counts["no inputs kept"] += 1
            continue
        out[i] = float(np.mean(predict(windows).fake_prob))
        counts["scored"] += 1
    return out, counts


def main(argv: list[str] | None = None) -> int:
    import pipeline
    from pipeline.settings import Settings
    from training.calibrate import _read_results
    from training.evaluate import audio_cache

    ap = argparse.ArgumentParser(prog="python -m training.audio_rescore", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", nargs="+", default=["../shared/data/dev/manifest.tsv", "out/synth/manifest.tsv"])
    ap.add_argument("--results", nargs="+", required=True)
    ap.add_argument("--detector", required=True, help="an AUDIO_DETECTOR selector: aasist, aasist_l, aasist_ft, ...")
    ap.add_argument("--out", required=True)
    ap.add_argument("--audio-features", default="out/audio_inputs", help="where `make eval` kept the windows")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cache = audio_cache(pipeline.build(Settings(explain=False)), Path(args.audio_features))
    p = pipeline.build(Settings(explain=False, audio_detector=args.detector))
    if cache is None or not p.c.audio.available:
        raise SystemExit(f"no audio detector loads here ({p.c.audio.reason}); set WEIGHTS_DIR")
    if p.c.audio.detector.window_samples != cache.window:
        raise SystemExit("the kept windows are not this detector's window length")
    ident = (p.identities[AUDIO].name, p.identities[AUDIO].sha256)
    items = {it.path: it for m in args.manifest for it in read_manifest(m)}
    per_file = [[r for r in _read_results(Path(f)) if r.path in items] for f in args.results]
    rows = [r for file_rows in per_file for r in file_rows]
    scores, counts = score_rows(rows, items, cache, p.c.audio.detector.predict)
    write_rescored(args.results, per_file, Path(args.out), scores, AUDIO, ident, tag_unscored=False)
    (Path(args.out) / "summary.json").write_text(json.dumps({"detector": ident, "counts": dict(counts),
                                                             "seconds": round(time.perf_counter() - t0, 1)}))
    logger.info("audio rows rescored by %s: %s (%.0fs)", ident[0], dict(counts), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

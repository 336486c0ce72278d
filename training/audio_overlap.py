"""``python -m training.audio_overlap``: the audio scores ``AUDIO_WINDOW_OVERLAP=0`` would give, without rescoring.

The audio detector's clip score is the mean over its 4 s windows (``pipeline.audio.score_audio``). With half-window
overlap the windows start every half window, plus one flush with the end of the speech; without overlap every whole
window, plus the same flush one. So every window the overlap-free run scores was scored already, and ``make eval``
keeps each row's windows (``audio_windows``): the overlap-free clip score is the mean of that subset. A row whose
windows were thinned (``MAX_AUDIO_WINDOWS``) or not kept gets no score rather than a guess.

    python -m training.audio_overlap --results out/eval/sync_oof/all/results.jsonl ... --out out/eval/overlap0

writes every results file again with the audio scores replaced, for ``python -m training calibrate``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from pipeline.audio import AASIST_WINDOW, SAMPLE_RATE, window_starts
from pipeline.report import AUDIO
from training.evaluate import ItemResult

logger = logging.getLogger(__name__)


def overlap_free(windows: list[list[float]], window: int = AASIST_WINDOW, sr: int = SAMPLE_RATE) -> list[int] | None:
    """Indices of the half-overlap ``windows`` ([start_s, end_s, P], in order) that an overlap-free run scores, or
    None when they are not the complete half-overlap set (thinned, or another hop)."""
    if not windows:
        return None
    starts = np.array([w[0] for w in windows]) - windows[0][0]
    samples = np.round(starts * sr).astype(int)
    n = int(round((windows[-1][1] - windows[0][0]) * sr))
    half = window_starts(n, window, round(window * 0.5))
    # starts are stored to 1e-4 s (1.6 samples): match each expected start to the nearest stored one
    if len(half) != len(samples) or np.max(np.abs(np.asarray(half) - samples)) > 2:
        return None
    wanted = window_starts(n, window, window)
    index = {s: i for i, s in enumerate(half)}
    if any(s not in index for s in wanted):
        return None
    return [index[s] for s in wanted]


def overlap_free_score(r: ItemResult) -> float | None:
    idx = overlap_free(r.audio_windows or [])
    if idx is None:
        return None
    return float(np.mean([r.audio_windows[i][2] for i in idx]))


def main(argv: list[str] | None = None) -> int:
    from training.calibrate import _read_results

    ap = argparse.ArgumentParser(prog="python -m training.audio_overlap", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", nargs="+", required=True)
    ap.add_argument("--out", default="out/eval/overlap0")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    counts: Counter = Counter()
    deltas = []
    for f in args.results:
        dest = Path(args.out) / Path(f).parent.name / "results.jsonl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "w") as fh:
            for r in _read_results(Path(f)):
                if r.status.get(AUDIO) == "ok":
                    score = overlap_free_score(r)
                    if score is None:
                        counts["not derivable (dropped)"] += 1
                        r = replace(r, status={**r.status, AUDIO: "no_features"}, raw={**r.raw, AUDIO: None})
                    else:
                        counts["rescored"] += 1
                        deltas.append(abs(score - r.raw[AUDIO]))
                        r = replace(r, raw={**r.raw, AUDIO: score},
                                    audio_windows=[r.audio_windows[i] for i in overlap_free(r.audio_windows)])
                fh.write(json.dumps(asdict(r)) + "\n")
    d = np.asarray(deltas)
    logger.info("%s; |change| median %.4f, p90 %.4f, max %.4f", dict(counts), *np.percentile(d, [50, 90, 100]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

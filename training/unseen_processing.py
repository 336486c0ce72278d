"""``python -m training.unseen_processing``: real videos after a processing the fusion never saw, judged out of fold.

    python -m training.unseen_processing --unseen down360 messenger_vlow \\
        --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/voice_fill/*/results.jsonl

The false-FAKE budget of ``make calibrate`` is spent on the dev reals and four processed copies of each (WhatsApp,
telephone band, portrait crop, pink noise), so a processing among them cannot surprise it. A clip that reaches a
fact-checker may have been squeezed harder (downscaled to 360p, or a messenger's 240p at 250 kbit/s). This asks
what the budget is worth there: the rows of the ``--unseen`` processings (scored by ``make eval --reals-only
--reencode P`` and given out-of-fold lip sync, temporal, audio and mouth scores like every row) are never fitted
on. The noisy-OR of each fold, the output map and every fold's thresholds come from the other rows, exactly as
``make calibrate`` fits them; the unseen rows are then scored by their own fold's model. Report only: prints and
writes (``--report``) the reals called FAKE and SUSPICIOUS-or-FAKE per processing, with the clips called FAKE.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.report import SLOTS
from training import evidence_fusion as ef
from training.metrics import auc

logger = logging.getLogger(__name__)


def unseen_rows(t: ef.Table, processings: set[str]) -> np.ndarray:
    return np.array([(r.reencode or "") in processings for r in t.results])


def judged(t: ef.Table, unseen: np.ndarray, max_fake_on_real: float = 0.01, max_flagged_real: float = 0.15,
           objective: str = ef.DEFAULT_OBJECTIVE) -> tuple[np.ndarray, list[str]]:
    """(P(fake), verdict) per row. The other rows are fitted and judged exactly as ``make calibrate`` does without
    the ``unseen`` rows in its table at all; each unseen row is scored by its fold's model and output map, and judged
    with thresholds picked on the other folds' seen reals."""
    seen = t.subset(~unseen)
    raw_seen, models = ef.out_of_fold(seen, objective=objective)
    raw = np.full(len(t.y), np.nan)
    raw[~unseen] = raw_seen
    for fold, model in models.items():
        rows = unseen & (t.fold == fold)
        if rows.any():
            raw[rows] = ef.predict_table(model, t, rows)
    _, p, verdict, _ = ef.judged_out_of_fold(t, raw, models, max_fake_on_real, max_flagged_real, unseen=unseen)
    return p, verdict


def by_processing(t: ef.Table, p: np.ndarray, verdict: list[str], family: str = "video") -> dict[str, dict]:
    """Per processing ("as-is" for the originals), the ``family`` reals scored, the share called FAKE and called
    SUSPICIOUS or FAKE, and the clips called FAKE."""
    out = {}
    for name, idx in _groups(t, p, (t.y == 0) & (t.family == family)).items():
        v = np.array([verdict[i] for i in idx])
        out[name] = {"n": len(idx), "fake": float(np.mean(v == "FAKE")),
                     "suspicious_or_fake": float(np.isin(v, ["FAKE", "SUSPICIOUS"]).mean()),
                     "called_fake": sorted(t.results[i].path for i in idx if verdict[i] == "FAKE"),
                     "median_raw_log_odds": _median_raw(t, np.asarray(idx))}
    return out


def fakes_by_processing(t: ef.Table, p: np.ndarray, verdict: list[str], family: str = "video") -> dict[str, dict]:
    """Per processing, the ``family``'s fakes from real generators ("as-is": the dev fakes themselves), the share
    called FAKE and AUTHENTIC, and the fused AUC against the as-is reals: whether the processing hides a fake."""
    reals = np.array([t.y[i] == 0 and t.family[i] == family and not t.results[i].reencode and not np.isnan(p[i])
                      for i in range(len(t.y))])
    out = {}
    for name, idx in _groups(t, p, (t.y == 1) & (t.family == family) & ~t.synthetic).items():
        v = np.array([verdict[i] for i in idx])
        y = np.r_[np.ones(len(idx)), np.zeros(int(reals.sum()))]
        out[name] = {"n": len(idx), "fake": float(np.mean(v == "FAKE")), "authentic": float(np.mean(v == "AUTHENTIC")),
                     "auc_against_as_is_reals": auc(y, np.r_[p[idx], p[reals]]) if reals.any() else None,
                     "median_raw_log_odds": _median_raw(t, np.asarray(idx))}
    return out


def _groups(t: ef.Table, p: np.ndarray, rows: np.ndarray) -> dict[str, list[int]]:
    """The scored ``rows`` by processing ("as-is" for the originals), in name order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(rows & ~np.isnan(p)):
        groups[t.results[i].reencode or "as-is"].append(int(i))
    return dict(sorted(groups.items()))


def _medians_line(row: dict) -> str:
    return "      median raw log-odds: " + ", ".join(f"{k} {v:+.2f}" for k, v in row["median_raw_log_odds"].items())


def _median_raw(t: ef.Table, idx: np.ndarray) -> dict[str, float]:
    """Per detector, the median raw log-odds over the rows where it ran: which detector a processing moves."""
    out = {}
    for s, slot in enumerate(SLOTS):
        ran = t.ran[idx, s]
        if ran.any():
            out[slot] = round(float(np.median(t.x[idx[ran], s])), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    from training.calibrate import _read_results
    from training.split import read_manifest

    ap = argparse.ArgumentParser(prog="python -m training.unseen_processing", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unseen", nargs="+", required=True, help="processings (reencode names) left out of every fit")
    ap.add_argument("--results", nargs="+", required=True, help="results.jsonl files, the unseen runs among them")
    ap.add_argument("--manifest", nargs="+", required=True)
    ap.add_argument("--report", default="out/eval/unseen_processing")
    ap.add_argument("--max-fake-on-real", type=float, default=0.01)
    ap.add_argument("--max-flagged-real", type=float, default=0.15)
    ap.add_argument("--objective", choices=ef.OBJECTIVES, default=ef.DEFAULT_OBJECTIVE,
                    help="how the fusion is fitted (make calibrate's default: every fake source weighing alike)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    items = [it for m in args.manifest for it in read_manifest(m)]
    t = ef.build_table([r for f in args.results for r in _read_results(Path(f))], items)
    unseen = unseen_rows(t, set(args.unseen))
    if not unseen.any():
        raise SystemExit(f"no row of {args.unseen} in the results: score them first (make eval ARGS=\"--reals-only "
                         "--modality video_av,video --reencode P\"), then their out-of-fold steps")
    p, verdict = judged(t, unseen, args.max_fake_on_real, args.max_flagged_real, args.objective)
    table = by_processing(t, p, verdict)
    fakes = (t.y == 1) & (t.family == "video") & ~np.isnan(p) & ~unseen
    v = np.array(verdict)[fakes]
    processed_fakes = fakes_by_processing(t, p, verdict)
    summary = {"unseen": args.unseen, "video_reals": table,
               "video_fakes": {"n": int(fakes.sum()), "fake": float(np.mean(v == "FAKE")),
                               "authentic": float(np.mean(v == "AUTHENTIC"))},
               "dev_video_fakes_by_processing": processed_fakes}
    out = Path(args.report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"video reals, fusion and thresholds fitted without {', '.join(args.unseen)}:")
    for name, row in table.items():
        mark = "  (never fitted on)" if name in args.unseen else ""
        print(f"  {name:16s} n={row['n']:4d}  FAKE {row['fake']:6.1%}  SUSPICIOUS or FAKE "
              f"{row['suspicious_or_fake']:6.1%}{mark}")
        print(_medians_line(row))
        for path in row["called_fake"]:
            print(f"      called FAKE: {path}")
    print(f"video fakes: {summary['video_fakes']['n']}, called FAKE {summary['video_fakes']['fake']:.1%}, "
          f"AUTHENTIC {summary['video_fakes']['authentic']:.1%}")
    if len(processed_fakes) > 1:  # some fakes were scored after a processing too (make eval --fakes-only)
        print("dev video fakes per processing (fused AUC against the as-is video reals):")
        for name, row in processed_fakes.items():
            print(f"  {name:16s} n={row['n']:4d}  FAKE {row['fake']:6.1%}  AUTHENTIC {row['authentic']:6.1%}  "
                  f"AUC {row['auc_against_as_is_reals']:.3f}")
            print(_medians_line(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m training.fusion_variants``: other structures of the evidence fusion, judged by the same LOSO.

    python -m training.fusion_variants --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/audio_oof/*/results.jsonl [--variants too-in-sync no-audio-on-video ...]

Report only. Each variant changes what the noisy-OR sees (``training.evidence_fusion``'s table) and is fitted and
scored with the shipped protocol's own ``out_of_fold``; the runtime fusion has no such inputs, so nothing is written
but the report:

* ``too-in-sync``: lip sync's log-odds negated as a further column with its own calibration and reliability (lips
  that follow the voice more closely than real speakers' do, as audio-driven generators' may);
* ``no-audio-on-video``: the audio detector counts for audio-only files alone (on a video it mostly hears a real
  voice, and its false alarms on real soundtracks dilute lip sync);
* ``both``: the two together;
* ``absent-as-typical-real``: a detector that could not run on a video (no soundtrack, no speech, no face) reads
  as on a typical real video of the training folds (``training.evidence_fusion.with_typical``) instead of adding
  no evidence, so a silent fake meets the false alarms every real soundtrack raises;
* ``per-file-objective`` / ``rank-objective``: the shipped table, fitted with every fake file weighing alike within
  its kind (the fit shipped before December 7, ninth session), or to rank fakes above reals
  (``training.evidence_fusion.fit_table``'s ``objective``; the shipped fit weighs every fake source alike).

Besides each held-out source's fused AUC against every real of its kind (the shipped table's, processed copies
included), the dev video sources are also scored against the unprocessed reals only: every processed copy in the
benchmark is real, so a variant could otherwise win by telling processed reals from unprocessed fakes; and against
the reals with the same streams (a soundtrack or none): a silent real video meets fewer detectors, so it scores
below any video with sound, and a fake with sound wins against it for free.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.report import AUDIO, LIP_SYNC, SLOTS
from training.evidence_fusion import DEFAULT_OBJECTIVE, Table, build_table, out_of_fold, report
from training.metrics import auc
from training.protocol import source_of
from training.split import read_manifest
from training.synth import RECIPES

logger = logging.getLogger(__name__)

def too_in_sync(t: Table) -> Table:
    j = SLOTS.index(LIP_SYNC)
    return replace(t, x=np.c_[t.x, -t.x[:, j]], ran=np.c_[t.ran, t.ran[:, j]], fit_ok=np.c_[t.fit_ok, t.fit_ok[:, j]])


def no_audio_on_video(t: Table) -> Table:
    off = (t.family == "video")[:, None] & (np.arange(t.x.shape[1]) == SLOTS.index(AUDIO))
    return replace(t, ran=t.ran & ~off, fit_ok=t.fit_ok & ~off)


VARIANTS = {"shipped": lambda t: t, "too-in-sync": too_in_sync, "no-audio-on-video": no_audio_on_video,
            "both": lambda t: too_in_sync(no_audio_on_video(t))}
TYPICAL = "absent-as-typical-real"  # a variant of the fit itself (per fold), not of its table
FIT_VARIANTS = {TYPICAL: {"typical": True}, "per-file-objective": {"objective": "likelihood"},
                "rank-objective": {"objective": "rank"}}


def judge(t: Table, items, typical: bool = False, objective: str = DEFAULT_OBJECTIVE) -> dict:
    """Out-of-fold fused AUC per held-out source, against every real of its kind, the as-is reals, and the reals with
    the same streams."""
    p, _ = out_of_fold(t, typical, objective)
    rows, _ = report(t, p, [""] * len(p), items)
    as_is = np.array([not r.reencode for r in t.results])
    sound = np.array([r.modality == "video_av" for r in t.results])
    src = np.array([source_of(r.path) for r in t.results])
    out = {}
    for r in rows:
        if r.auc["fused"] is None:
            continue
        fake = (t.y == 1) & (src == r.source)
        real = (t.y == 0) & (t.family == r.family) & ~np.isnan(p)
        m = (fake | (real & as_is)) & ~np.isnan(p)
        same = (fake | (real & np.isin(sound, sound[fake]))) & ~np.isnan(p)  # the streams its fakes have
        out[r.source] = {"family": r.family, "auc": float(r.auc["fused"]), "auc_as_is_reals": float(auc(t.y[m], p[m])),
                         "auc_same_streams": _auc(t.y[same], p[same])}
    return out


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    a = auc(y, p) if len(set(y)) == 2 else None
    return None if a is None else float(a)


def means(per_source: dict) -> dict[str, float]:
    def mean(key, keep):
        vals = [v[key] for s, v in per_source.items() if keep(s, v) and v.get(key) is not None]
        return float(np.mean(vals)) if vals else float("nan")

    dev_video = lambda s, v: v["family"] == "video" and s not in RECIPES  # noqa: E731
    return {"dev_video": mean("auc", dev_video), "dev_video_as_is_reals": mean("auc_as_is_reals", dev_video),
            "dev_video_same_streams": mean("auc_same_streams", dev_video),
            "all_video": mean("auc", lambda s, v: v["family"] == "video"),
            "audio": mean("auc", lambda s, v: v["family"] == "audio")}


def main(argv: list[str] | None = None) -> int:
    from training.calibrate import _read_results

    ap = argparse.ArgumentParser(prog="python -m training.fusion_variants", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", nargs="+", required=True, help="results.jsonl files, every score out of fold")
    ap.add_argument("--manifest", nargs="+", required=True)
    ap.add_argument("--variants", nargs="+", default=[*VARIANTS, *FIT_VARIANTS], choices=[*VARIANTS, *FIT_VARIANTS])
    ap.add_argument("--report", default="out/eval/fusion_variants.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    items = [it for m in args.manifest for it in read_manifest(m)]
    t = build_table([r for f in args.results for r in _read_results(Path(f))], items)
    write_report({name: judge(t, items, **FIT_VARIANTS[name]) if name in FIT_VARIANTS
                  else judge(VARIANTS[name](t), items) for name in args.variants}, Path(args.report))
    return 0


def write_report(judged: dict[str, dict], path: Path) -> dict:
    """Print each variant's means (``judge``'s per-source AUCs, summarised) and write them with the per-source
    figures to ``path`` as JSON."""
    out = {}
    width = max(map(len, judged), default=0)
    for name, per_source in judged.items():
        m = means(per_source)
        out[name] = {"means": m, "per_source": per_source}
        print(f"{name:<{width}} dev video {m['dev_video']:.3f} (as-is reals {m['dev_video_as_is_reals']:.3f}, same "
              f"streams {m['dev_video_same_streams']:.3f})  all video {m['all_video']:.3f}  audio {m['audio']:.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(main())

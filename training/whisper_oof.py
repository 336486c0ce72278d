"""``python -m training.whisper_oof``: audio scores for the fusion's fit from Whisper heads that never saw their fold.

The Whisper audio detector (``models/whisper_audio.py``) is a logistic head over frozen Whisper tiny.en features.
``make eval`` keeps, for every row its audio stage scored, the window features the head read (``--audio-features``,
``out/audio_inputs``). For each of the fusion's folds (``training.evidence_fusion.fusion_folds``: one per source,
closed under group links, a synthetic item in the fold of the real clip it was made from) a head is fitted on the
kept features of every learnable clip outside the fold, and the fold's rows are scored by the runtime's rule (the
clip score is the mean window P(fake)). Every audio row is rescored, so every audio score the fusion learns from is
out of fold. Rows are written again under the shipped head's identity, marked out of fold:

    python -m training.whisper_oof --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/temporal_oof/all/results.jsonl ... --out out/eval/audio_oof [--ship PATH]

What a head learns from (``--learn-from``): ``audio`` = the dev set's audio files (real recordings, TTS, vocoder
and voice-conversion fakes); ``audio+soundtracks`` adds the soundtracks of real dev videos as reals (the soundtracks
of fake videos are mostly genuine speech and are never learned from); ``+synth`` adds the synthetic voice recipes
(``voice_over``, ``voice_resynth``) as fakes. Processed copies are never learned from. ``--ship`` fits on every
learnable clip and writes the checkpoint (and stops: the registry pins its sha256).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.report import AUDIO
from training.evaluate import ItemResult, rescore_parser, sync_variant, write_rescored
from training.split import ManifestItem, read_manifest

logger = logging.getLogger(__name__)

LEARN_FROM = ("audio", "audio+soundtracks", "audio+soundtracks+synth")
VOICE_RECIPES = ("voice_over", "voice_resynth")


def audio_label(it: ManifestItem, learn_from: str) -> int | None:
    """1 = a synthetic voice, 0 = a real one, None = not learned from under ``learn_from``."""
    if it.modality == "audio":
        return int(it.label == "fake")
    if it.modality == "video_av" and it.label == "real" and not it.origin and "soundtracks" in learn_from:
        return 0
    if it.origin and it.manipulation in VOICE_RECIPES and "synth" in learn_from:
        return 1
    return None


@dataclass(frozen=True)
class Example:
    path: str
    origin: str
    label: int
    features: np.ndarray  # (windows, 768)


def examples(rows: list[ItemResult], items: dict[str, ManifestItem], cache, learn_from: str,
             encode_missing=None) -> list[Example]:
    """One example per learnable clip whose audio stage ran, with the Whisper features ``make eval`` kept; a clip
    another detector scored (a video's soundtrack under ``audio_by_kind``) is read by ``encode_missing``
    (``training.whisper_head.item_features``: the runtime's own feature rule) when given, else left out."""
    out, seen, todo = [], set(), []
    for r in rows:
        it = items[r.path]
        label = audio_label(it, learn_from)
        if label is None or r.reencode or r.path in seen or r.status.get(AUDIO) != "ok":
            continue
        seen.add(r.path)
        feats = cache.get_features(it.file, "orig")
        if feats is None or not len(feats):
            todo.append((it, label))
            continue
        out.append(Example(r.path, it.origin, label, feats))
    if todo and encode_missing is not None:
        for (it, label), feats in zip(todo, encode_missing([it for it, _ in todo]), strict=True):
            out.append(Example(it.path, it.origin, label, feats))
    elif todo:
        logger.warning("%d scored clip(s) have no kept Whisper features: not learned from", len(todo))
    return out


def fit(train: list[Example], c: float, meta: dict | None = None):
    from training.whisper_head import fit_head

    return fit_head([e.features for e in train], np.array([e.label for e in train]), c, meta)


def clip_score(head, features: np.ndarray | None) -> float | None:
    """The runtime's clip score: mean window P(fake)."""
    if features is None or not len(features):
        return None
    return float(np.mean(1.0 / (1.0 + np.exp(-head.logit(features)))))


def score_rows(rows: list[ItemResult], items: dict[str, ManifestItem], train: list[Example], cache, c: float,
               fold_of: dict[str, str], held: dict[str, frozenset[str]],
               mine=lambda r: True) -> tuple[dict[int, float | None], Counter]:
    """Row index -> the audio score of a head fitted without the row's fold, for rows whose audio stage ran and
    that the head scores at runtime (``mine``)."""
    todo: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.status.get(AUDIO) == "ok" and mine(r):
            todo.setdefault(fold_of[r.path], []).append(i)
    out: dict[int, float | None] = {}
    counts: Counter = Counter()
    for fold, idx in sorted(todo.items()):
        ex = set(held.get(fold, frozenset())) | {rows[i].path for i in idx}
        ex |= {items[rows[i].path].origin for i in idx if items[rows[i].path].origin}
        keep = [e for e in train if e.path not in ex and e.origin not in ex]
        if len({e.label for e in keep}) < 2:
            raise SystemExit(f"fold {fold}: nothing left to learn both classes from")
        head = fit(keep, c)
        for i in idx:
            out[i] = clip_score(head, cache.get_features(items[rows[i].path].file, sync_variant(rows[i].reencode)))
            counts["scored" if out[i] is not None else "no inputs kept"] += 1
    return out, counts


def main(argv: list[str] | None = None) -> int:
    import pipeline
    from pipeline.settings import Settings
    from training.calibrate import _read_results
    from training.evaluate import audio_cache
    from training.evidence_fusion import fusion_folds

    ap = rescore_parser("whisper_oof", __doc__)
    ap.add_argument("--audio-features", default="out/audio_inputs", help="where `make eval` kept the features")
    ap.add_argument("--learn-from", default=LEARN_FROM[1], choices=LEARN_FROM)
    ap.add_argument("--c", type=float, default=None, help="inverse regularisation (default: the shipped head's)")
    ap.add_argument("--ship", default=None, help="fit on every learnable clip and write the checkpoint here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    from models.audio_by_kind import member_for
    from training.whisper_head import item_features

    p = pipeline.build(Settings(explain=False))  # whisper_head itself, or audio_by_kind's member for audio files
    det = member_for(p.c.audio.detector, "audio")
    if det is None or not hasattr(det, "head"):
        raise SystemExit(f"no Whisper audio detector in the audio slot here ({p.c.audio.model_name}: "
                         f"{p.c.audio.reason or 'another detector'})")
    cache = audio_cache(p, Path(args.audio_features))
    c = args.c if args.c is not None else float(det.head.meta.get("C", 0.003))
    ident = (p.identities[AUDIO].name, p.identities[AUDIO].sha256)
    items = [it for m in args.manifest for it in read_manifest(m)]
    by_path = {it.path: it for it in items}
    per_file = [[r for r in _read_results(Path(f)) if r.path in by_path] for f in args.results]
    rows = [r for file_rows in per_file for r in file_rows]
    train = examples(rows, by_path, cache, args.learn_from, encode_missing=item_features)
    labels = Counter(e.label for e in train)
    logger.info("%d real and %d fake clips to learn from (%s, C=%s)", labels[0], labels[1], args.learn_from, c)
    if args.ship:
        from models.weights import sha256_of

        meta = {"learn_from": args.learn_from, "reals": labels[0], "fakes": labels[1],
                "windows": int(sum(len(e.features) for e in train)), "inputs": "kept by make eval (--audio-features)",
                "train_files": sorted(e.path for e in train),
                "recipe": "standardised logistic regression over window features, items weigh alike per class"}
        fit(train, c, meta).save(args.ship)
        logger.info("wrote %s; now pin sha256 %s for whisper_head in models/weights.py", args.ship,
                    sha256_of(Path(args.ship)))
        return 0
    fold_of, held = fusion_folds(items)
    scores, total = score_rows(rows, by_path, train, cache, c, fold_of, held,
                               mine=lambda r: member_for(p.c.audio.detector, r.modality) is det)
    out_root = Path(args.out)
    write_rescored(args.results, per_file, out_root, scores, AUDIO, ident, tag_unscored=False)
    (out_root / "summary.json").write_text(json.dumps({
        "learn_from": args.learn_from, "C": c, "identity": ident, "reals_learned": labels[0],
        "fakes_learned": labels[1], "counts": dict(total), "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    logger.info("audio rows out of fold: %s (%.0fs)", dict(total), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

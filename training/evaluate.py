"""``make eval``: run the pipeline over a labelled manifest and measure every detector and the fusion.

    python -m pipeline eval --manifest ../shared/data/dev/manifest.tsv [--split val] [--reencode whatsapp]

Per-item results go to ``<out>/results.jsonl`` (re-runs resume from it); the summary table is printed and
written to ``<out>/summary.csv``. AUC/EER are computed over the items a detector actually scored; the fused
score is evaluated on every item that got a verdict. Breakdown rows compare the real items of a modality
with the fakes of one manipulation type.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.report import SLOTS
from training.metrics import auc, eer
from training.split import ManifestItem, read_manifest, select

logger = logging.getLogger(__name__)

FUSED = "fused"


@dataclass(frozen=True)
class ItemResult:
    path: str
    label: str
    modality: str
    manipulation: str
    group: str
    verdict: str
    fake_probability: float | None
    reason: str | None
    status: dict[str, str]  # slot -> status
    raw: dict[str, float | None]  # slot -> raw P(fake)
    calibrated: dict[str, float | None]
    face_quality: float | None
    seconds: float
    reencode: str | None
    timeline: dict[str, list[list[float]]] | None = None  # slot -> [[start_s, end_s, P(fake)], ...]
    detectors: dict[str, list[str]] | None = None  # slot -> [model name, weights sha256] that scored it
    pipeline_id: str | None = None  # Pipeline.fingerprint() of the run that scored it
    detectors_id: str | None = None  # Pipeline.fingerprint(with_fusion=False): the detector scores' identity
    oof_slots: list[str] | None = None  # slots whose score came from a model fitted without this item's fold
    audio_windows: list[list[float]] | None = None  # [[start_s, end_s, P(fake)], ...]: what the audio score means

    @property
    def y(self) -> int:
        return int(self.label == "fake")


def run_items(items: list[ManifestItem], out: Path, reencode: str | None, pipeline_obj=None,
              sync_features: Path | None = None, visual_features: Path | None = None,
              temporal_features: Path | None = None, audio_features: Path | None = None) -> list[ItemResult]:
    """Run the pipeline over ``items``, resuming from ``out/results.jsonl``. With ``sync_features`` (a
    ``training.train_sync.FeatureCache`` folder) the lip-sync stage's inputs of every talking-face video are kept
    there, keyed like the trainer's own extraction, so ``training.sync_oof`` can score these very rows with a
    lip-sync head refitted without their fold instead of decoding every clip again. ``visual_features`` likewise
    keeps the visual detector's face crops (``training.features.VisualInputCache``) for ``training.visual_oof``, and
    ``temporal_features`` the temporal head's embedding sequences (``TemporalInputCache``) for
    ``training.temporal_oof``, and ``audio_features`` the audio detector's windows (``AudioInputCache``). Every row
    keeps its audio windows' times and scores."""
    from tqdm import tqdm

    import pipeline
    from pipeline.settings import Settings
    from training.reencode import process as do_reencode

    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.jsonl"
    # scores only: the evidence pictures cost ~0.7 s per item and change no score
    p = pipeline_obj or pipeline.build(Settings(explain=False))
    fingerprint = p.fingerprint()
    detectors_id = _fingerprint(p, with_fusion=False)
    by_modality: dict[str, str | None] = {}

    def scores_id(modality: str) -> str | None:  # the identity of what can change this kind of file's scores
        if modality not in by_modality:
            by_modality[modality] = _fingerprint(p, with_fusion=False, modality=modality) or detectors_id
        return by_modality[modality]

    keep = _keepers(_sync_keeper(p, sync_features, reencode),
                    _input_keeper(p, visual_cache, visual_features, reencode, "visual_inputs"),
                    _input_keeper(p, temporal_cache, temporal_features, reencode, "temporal_inputs"),
                    _input_keeper(p, audio_cache, audio_features, reencode, "audio_inputs"))
    refuse = _refuser(p)
    done: dict[str, ItemResult] = {}
    stale = refused = 0
    backfilled = False
    if results_file.exists():
        kept = []
        for line in results_file.read_text().splitlines():
            if not line.strip():
                continue
            r = ItemResult(**json.loads(line))
            if r.pipeline_id == fingerprint and r.detectors_id in (None, detectors_id) and detectors_id is not None:
                # written before scores carried their own identity, or the identity of every detector: narrow it
                # to the detectors this kind of file can meet
                r = replace(r, detectors_id=scores_id(r.modality))
                backfilled = True
            if r.pipeline_id != fingerprint:
                # the same detectors (or the same ones of those this kind of file can meet) under another
                # calibration: their scores stand, only the fusion is redone
                same = r.detectors_id is not None and r.detectors_id in (detectors_id, scores_id(r.modality))
                if refuse is not None and same:
                    r = refuse(r, fingerprint)
                    refused += 1
                else:  # scored by another configuration: never mixed in
                    stale += 1
                    continue
            done[r.path] = r
            kept.append(json.dumps(asdict(r)))
        if backfilled or stale or refused:
            results_file.write_text("".join(line + "\n" for line in kept))
        if stale or refused:
            logger.warning("%s: %d result(s) from another pipeline configuration dropped, %d re-fused with the "
                           "current calibration (now %s)", results_file, stale, refused, fingerprint)
    todo = [it for it in items if it.path not in done]
    if todo:
        with open(results_file, "a") as f, tempfile.TemporaryDirectory() as tmp, \
                tqdm(todo, desc="eval", unit="file", file=sys.stderr) as bar:
            for it in bar:
                bar.set_postfix_str(Path(it.path).name[:40])
                src = it.file
                if reencode:
                    try:
                        src = do_reencode(src, tmp, reencode, kind=_kind(it.modality))
                    except Exception as exc:
                        logger.error("re-encoding %s failed: %s", it.path, exc)
                        continue
                t0 = time.perf_counter()
                captured: dict = {}
                rep = p.run(src, source_name=Path(it.path).name, capture=captured)
                if keep is not None:
                    keep(it, captured)
                res = _result(it, rep, time.perf_counter() - t0, reencode, p.identities, fingerprint,
                              scores_id(it.modality), captured.get("audio_windows"))
                f.write(json.dumps(asdict(res)) + "\n")
                f.flush()
                done[it.path] = res
    return [done[it.path] for it in items if it.path in done]


OOF_STATUS_MISSING = "no_features"  # a row whose kept inputs are gone: it cannot be scored out of fold


def mark_out_of_fold(r: ItemResult, slot: str, score: float | None, ident: tuple[str, str]) -> ItemResult:
    """``r`` with ``slot``'s score replaced by one from a model fitted without the row's fold (None: the row could
    not be scored that way and loses the score), under the shipped model's identity, marked out of fold."""
    status, raw = dict(r.status), dict(r.raw)
    if score is None:
        status[slot] = OOF_STATUS_MISSING
    raw[slot] = score
    return replace(r, status=status, raw=raw, detectors={**(r.detectors or {}), slot: list(ident)},
                   oof_slots=sorted({*(r.oof_slots or ()), slot}))


def write_rescored(results: list[str], per_file: list[list[ItemResult]], out_root: Path,
                   scores: dict[int, float | None], slot: str, ident: tuple[str, str],
                   tag_unscored: bool = True) -> None:
    """Each results file's rows again under ``out_root/<its run>/results.jsonl``, row ``i`` (counted over all
    files) with ``scores[i]`` out of fold; an unscored row only takes ``ident`` (where it names detectors, and with
    ``tag_unscored`` False only where it names ``slot``), so the fit reads one identity."""
    i = 0
    for f, file_rows in zip(results, per_file, strict=True):
        dest = out_root / Path(f).parent.name / "results.jsonl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "w") as fh:
            for r in file_rows:
                if i in scores:
                    r = mark_out_of_fold(r, slot, scores[i], ident)
                elif r.detectors and (tag_unscored or slot in r.detectors):
                    r = replace(r, detectors={**r.detectors, slot: list(ident)})
                fh.write(json.dumps(asdict(r)) + "\n")
                i += 1
        logger.info("%s -> %s (%d rows)", f, dest, len(file_rows))


def rescore_parser(name: str, doc: str | None):
    """The command line every out-of-fold rescorer (``training.<name>``) shares: the manifests, the ``make eval``
    results it rewrites and the folder they go to (``out/eval/<name>``); each adds its own options."""
    ap = argparse.ArgumentParser(prog=f"python -m training.{name}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", nargs="+", required=True, help="the dev manifest first, then synthetic ones")
    ap.add_argument("--results", nargs="+", required=True, help="results.jsonl files of `make eval` runs")
    ap.add_argument("--out", default=f"out/eval/{name}", help="folder for the rewritten results (one per input)")
    return ap


def sync_variant(reencode: str | None) -> str:
    """The feature-cache variant of an evaluated copy: "orig" is the file as it is (the trainer's own name)."""
    return f"eval-{reencode}" if reencode else "orig"


def _keepers(*keepers):
    """One function calling every keeper that is not None (None when none is)."""
    live = [k for k in keepers if k is not None]
    if not live:
        return None

    def keep(it: ManifestItem, captured: dict) -> None:
        for k in live:
            k(it, captured)

    return keep


def _weights_id(model) -> str:
    """What a cache of a model's inputs is keyed by: its weights' sha256 (its class name for an in-memory one)."""
    info = getattr(model, "weights_info", None)
    return getattr(info, "sha256", "") or type(model).__name__


def visual_cache(p, root: Path):
    """The ``VisualInputCache`` of pipeline ``p``'s face detector, settings and visual crop (None: no visual
    detector or face detector loaded)."""
    c = getattr(p, "c", None)
    if c is None or not c.visual.available or not c.face.available:
        return None
    from training.features import VisualInputCache

    prep = p._visual_preprocess()
    return VisualInputCache(root, _weights_id(c.face.detector), prep.crop, c.visual.detector.input_size, p.settings)


def temporal_cache(p, root: Path):
    """The ``TemporalInputCache`` of pipeline ``p``'s face detector, LR-ASD front-end and temporal head window (None:
    no windowed temporal head on LR-ASD, or no face detector, loaded)."""
    c = getattr(p, "c", None)
    det = getattr(getattr(c, "temporal", None), "detector", None)
    if c is None or not c.temporal.available or not c.face.available or not hasattr(det, "sequences"):
        return None
    from training.features import TemporalInputCache

    return TemporalInputCache(root, _weights_id(c.face.detector), _weights_id(det.front), det.num_frames, p.settings)


def audio_cache(p, root: Path):
    """The ``AudioInputCache`` of pipeline ``p``'s audio detector window and settings (None: none loaded)."""
    c = getattr(p, "c", None)
    det = getattr(getattr(c, "audio", None), "detector", None)
    if c is None or not c.audio.available or not hasattr(det, "window_samples"):
        return None
    from training.features import AudioInputCache

    return AudioInputCache(root, det.window_samples, p.settings.audio_sample_rate, p.settings)


def _input_keeper(p, make_cache, root: Path | None, reencode: str | None, key: str):
    """A function storing one item's ``captured[key]`` (a tuple is the ``put`` arguments) in the cache
    ``make_cache(p, root)`` makes, or None when nothing is to be kept (no folder, or no such stage loaded)."""
    cache = make_cache(p, root) if root is not None else None
    if cache is None:
        return None
    variant = sync_variant(reencode)

    def keep(it: ManifestItem, captured: dict) -> None:
        got = captured.get(key)
        if got is None:
            return
        try:
            cache.put(it.file, variant, *(got if isinstance(got, tuple) else (got,)))
        except OSError as exc:  # a full disk costs the refit this file, never the evaluation
            logger.warning("%s of %s not kept: %s", key, it.path, exc)

    return keep


def _sync_keeper(p, root: Path | None, reencode: str | None):
    """A function storing one item's captured lip-sync inputs, or None when nothing is to be kept (no folder, or a
    pipeline without a lip-sync head on LR-ASD)."""
    sync_slot = getattr(getattr(p, "c", None), "sync", None)
    lrasd = getattr(getattr(sync_slot, "detector", None), "lrasd", None)
    if root is None or lrasd is None:
        return None
    from training.train_sync import ClipFeatures, FeatureCache

    cache = FeatureCache(root, face_detector=p.c.face.detector, lrasd=lrasd)
    variant = sync_variant(reencode)

    def keep(it: ManifestItem, captured: dict) -> None:
        if it.modality != "video_av" or "sync_inputs" not in captured:
            return
        audio, windows, main_id = captured["sync_inputs"]
        try:
            cache.put(it, variant, ClipFeatures(audio, tuple(windows), main_id))
        except OSError as exc:  # a full disk costs the refit this clip, never the evaluation
            logger.warning("lip-sync features of %s not kept: %s", it.path, exc)

    return keep


def _kind(modality: str) -> str:
    return STREAMS[modality][0]


def _fingerprint(p, with_fusion: bool, modality: str | None = None) -> str | None:
    try:
        if modality is None:
            return p.fingerprint(with_fusion=with_fusion)
        return p.fingerprint(with_fusion=with_fusion, slots=input_slots(modality))
    except TypeError:  # a test double without the detector-only identity
        return None


def input_slots(modality: str) -> tuple[str, ...]:
    """The detectors whose weights can change a file's scores: those its streams call for, plus the face and speaker
    models wherever there are frames. An audio file's scores stand when only a face or lip-sync model changes."""
    from models.registry import FACES, SPEAKER

    _, has_frames, _ = STREAMS.get(modality, ("video", True, True))
    return applicable_for(modality) + ((FACES, SPEAKER) if has_frames else ())


# manifest modality -> the streams such a file holds (the fusion decides which detectors that calls for)
STREAMS = {"video_av": ("video", True, True), "video": ("video", True, False), "audio": ("audio", False, True),
           "image": ("image", True, False)}


def applicable_for(modality: str) -> tuple[str, ...]:
    from pipeline.fusion import applicable

    return applicable(*STREAMS.get(modality, ("video", True, True)))


def _refuser(p):
    """A function that redoes an item's fusion from its stored detector scores with ``p``'s calibration, or None
    when that is not possible (a learned fusion needs per-second tokens the results do not keep)."""
    from pipeline.fusion import fuse

    c = getattr(p, "c", None)
    if c is None or getattr(c, "learned_fusion", None) is not None:
        return None

    def refuse(r: ItemResult, fingerprint: str) -> ItemResult:
        raw = {s: v for s, v in r.raw.items() if r.status.get(s) == "ok" and v is not None}
        ids = {s: (v[0], v[1]) for s, v in (r.detectors or {}).items()}
        fusion, calibrated, verdict = fuse(raw, c.fusion_model, r.face_quality, ids, applicable_for(r.modality),
                                           STREAMS.get(r.modality, ("video",))[0])
        if verdict is None:  # nothing ran: the stored NOT_APPLICABLE / FAILED stands
            return replace(r, pipeline_id=fingerprint)
        return replace(r, verdict=verdict.value, fake_probability=fusion.fake_probability,
                       calibrated={s: calibrated.get(s) for s in r.calibrated}, pipeline_id=fingerprint)

    return refuse


def _result(it: ManifestItem, rep, seconds: float, reencode: str | None, identities=None,
            pipeline_id: str | None = None, detectors_id: str | None = None, audio_windows=None) -> ItemResult:
    return ItemResult(
        path=it.path, label=it.label, modality=it.modality, manipulation=it.manipulation, group=it.group,
        verdict=rep.verdict.value, fake_probability=rep.fake_probability, reason=rep.reason,
        status={d.slot: d.status.value for d in rep.detectors},
        raw={d.slot: d.score for d in rep.detectors},
        calibrated={d.slot: d.calibrated for d in rep.detectors},
        face_quality=rep.face_quality, seconds=round(seconds, 3), reencode=reencode,
        timeline={d.slot: [[p.start_s, p.end_s, round(p.score, 5)] for p in d.timeline] for d in rep.detectors},
        detectors={s: [i.name, i.sha256] for s, i in (identities or {}).items() if s in SLOTS},
        pipeline_id=pipeline_id,
        detectors_id=detectors_id,
        audio_windows=None if audio_windows is None else
        [[round(float(a), 4), round(float(b), 4), float(p)] for a, b, p in zip(*audio_windows, strict=True)],
    )


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricRow:
    detector: str
    subset: str
    n_real: int
    n_fake: int
    auc: float | None
    eer: float | None
    acc: float | None  # accuracy of the hard decision (0.5 for detectors; FAKE-vs-rest verdict for fused)
    mean_real: float | None
    mean_fake: float | None
    fpr_fake: float | None = None  # fused only: share of real items called FAKE
    flag_rate_real: float | None = None  # fused only: share of real items called FAKE or SUSPICIOUS
    not_applicable: int = 0


def _scores(results: list[ItemResult], detector: str) -> tuple[np.ndarray, np.ndarray, list[ItemResult]]:
    ys, ss, rows = [], [], []
    for r in results:
        if detector == FUSED:
            v = r.fake_probability
        else:
            v = r.calibrated.get(detector) if r.calibrated.get(detector) is not None else r.raw.get(detector)
            if r.status.get(detector) != "ok":
                v = None
        if v is not None:
            ys.append(r.y)
            ss.append(v)
            rows.append(r)
    return np.array(ys, int), np.array(ss, float), rows


def metric_row(results: list[ItemResult], detector: str, subset: str) -> MetricRow:
    y, s, rows = _scores(results, detector)
    na = len(results) - len(rows)
    if len(y) == 0:
        return MetricRow(detector, subset, 0, 0, None, None, None, None, None, not_applicable=na)
    if detector == FUSED:
        called_fake = np.array([r.verdict == "FAKE" for r in rows])
        flagged = np.array([r.verdict in ("FAKE", "SUSPICIOUS") for r in rows])
        acc = float((called_fake == (y == 1)).mean())
        real = y == 0
        fpr = float(called_fake[real].mean()) if real.any() else None
        flag = float(flagged[real].mean()) if real.any() else None
    else:
        acc = float(((s >= 0.5) == (y == 1)).mean())
        fpr = flag = None
    return MetricRow(detector, subset, int((y == 0).sum()), int((y == 1).sum()), auc(y, s), eer(y, s), acc,
                     float(s[y == 0].mean()) if (y == 0).any() else None,
                     float(s[y == 1].mean()) if (y == 1).any() else None, fpr, flag, na)


def summarise(results: list[ItemResult]) -> list[MetricRow]:
    rows: list[MetricRow] = []
    detectors = [*SLOTS, FUSED]
    for det in detectors:
        rows.append(metric_row(results, det, "all"))
    # per modality, and per manipulation within a modality family (its reals vs those fakes)
    by_mod: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_mod["video" if r.modality in ("video", "video_av") else r.modality].append(r)
    for mod, rs in sorted(by_mod.items()):
        manips = sorted({r.manipulation for r in rs if r.label == "fake"})
        for det in detectors:
            rows.append(metric_row(rs, det, mod))
            for m in manips:
                sub = [r for r in rs if r.label == "real" or r.manipulation == m]
                rows.append(metric_row(sub, det, f"{mod}/{m}"))
    return [r for r in rows if r.n_real + r.n_fake > 0]


def _f(x: float | None, nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def format_table(rows: list[MetricRow]) -> str:
    head = (f"{'detector':<10} {'subset':<24} {'real':>5} {'fake':>5} {'AUC':>6} {'EER':>6} {'acc':>6} "
            f"{'μ real':>7} {'μ fake':>7} {'FPR@FAKE':>9} {'flag real':>9} {'n/a':>4}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.detector:<10} {r.subset:<24} {r.n_real:>5} {r.n_fake:>5} {_f(r.auc):>6} {_f(r.eer):>6} "
                     f"{_f(r.acc):>6} {_f(r.mean_real):>7} {_f(r.mean_fake):>7} {_f(r.fpr_fake):>9} "
                     f"{_f(r.flag_rate_real):>9} {r.not_applicable:>4}")
    return "\n".join(lines)


def write_csv(rows: list[MetricRow], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(rows[0]).keys()) if rows else ["detector"])
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", choices=["train", "val", "all"], default="all",
                   help="side of the committed group split (training/splits/dev_split.tsv)")
    p.add_argument("--modality", default=None, help="comma list: video_av,video,audio,image (default: all)")
    p.add_argument("--reencode", choices=list(_processings()), default=None,
                   help="process each file first (messenger re-encodes, codecs, scaling, crops, frame rates, "
                        "telephone audio: training/reencode.py)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--reals-only", action="store_true", help="only real items (processing must not make them fake)")
    only.add_argument("--fakes-only", action="store_true",
                      help="only fake items (processed fakes, so processing is not what tells them from reals)")
    p.add_argument("--out", default=None, help="results folder (default out/eval/<split>[-<reencode>])")
    p.add_argument("--limit", type=int, default=None, help="only the first N items (smoke runs)")
    p.add_argument("--sync-features", default="out/sync_cache",
                   help="keep each talking-face video's lip-sync inputs here for the per-fold refit of the lip-sync "
                        "head (training.sync_oof); '' keeps nothing")
    p.add_argument("--visual-features", default="out/visual_cache",
                   help="keep each video's and image's visual face crops here for the per-fold refit of the visual "
                        "detector (training.visual_oof); '' keeps nothing")
    p.add_argument("--temporal-features", default="out/temporal_cache",
                   help="keep each video's temporal-head embedding sequences here for the per-fold refit of the "
                        "temporal head (training.temporal_oof); '' keeps nothing")
    p.add_argument("--audio-features", default="out/audio_inputs",
                   help="keep the audio detector's windows of each file here for its per-fold refit; '' keeps nothing")


def _processings() -> tuple[str, ...]:
    from training.reencode import ALL

    return ALL


def run(args: argparse.Namespace) -> int:
    items = read_manifest(args.manifest)
    items = select(items, None if args.split == "all" else args.split)
    if getattr(args, "reals_only", False):
        items = [it for it in items if it.label == "real"]
    if getattr(args, "fakes_only", False):  # processed fakes beside the processed reals: the benchmark's two sides
        items = [it for it in items if it.label == "fake"]
    if args.modality:
        keep = set(args.modality.split(","))
        items = [it for it in items if it.modality in keep]
    if args.limit:
        items = items[: args.limit]
    tag = args.split + (f"-{args.reencode}" if args.reencode else "")
    out = Path(args.out or f"out/eval/{tag}")
    logger.info("evaluating %d item(s) -> %s", len(items), out)
    keep = getattr(args, "sync_features", "")
    keep_visual = getattr(args, "visual_features", "")
    keep_temporal = getattr(args, "temporal_features", "")
    keep_audio = getattr(args, "audio_features", "")
    results = run_items(items, out, args.reencode, sync_features=Path(keep) if keep else None,
                        visual_features=Path(keep_visual) if keep_visual else None,
                        temporal_features=Path(keep_temporal) if keep_temporal else None,
                        audio_features=Path(keep_audio) if keep_audio else None)
    rows = summarise(results)
    table = format_table(rows)
    print(table)
    write_csv(rows, out / "summary.csv")
    (out / "summary.txt").write_text(table + "\n")
    from training import protocol

    src_rows, src_summary = protocol.per_source(results, items)
    if src_rows:
        by_source = protocol.format_rows(src_rows, src_summary)
        print("\nPer held-out source (each source's fakes vs every real of its family; `train` = share of the source "
              "on the committed split's train side, which trained components may have been fitted on):")
        print(by_source)
        protocol.write_csv(src_rows, out / "per_source.csv")
        (out / "per_source.txt").write_text(by_source + "\n")
    secs = [r.seconds for r in results]
    if secs:
        logger.info("%d items, median %.1f s per item, total %.0f s", len(secs), float(np.median(secs)), sum(secs))
    return 0

"""``python -m training.voice_fill``: the voice-change score for ``make eval`` rows scored before the detector existed.

    python -m training.voice_fill --manifest ../shared/data/dev/manifest.tsv out/synth/manifest.tsv \\
        --results out/eval/mouth_fill/all/results.jsonl ... --out out/eval/voice_fill

The voice-change stage reads the soundtrack and the speech the VAD finds in it. A row that carries no score of
this detector (same name and weights) gets the one the pipeline would give: its file is decoded again (after the
row's processing, which is deterministic: ``training.reencode``) and scored through the pipeline's own rule
(``pipeline.stages.score_voice_change``). Nothing is learned, so no fold is involved. Rows already scored by the
same detector are kept as they are unless ``--rescore``. A row the stage does not apply to (an image, a voice note,
a silent video) is marked ``not_applicable`` with the pipeline's reason. Every score is also kept in ``--cache``
(keyed by the detector's identity, the file's sha256 and the processing), so a run over the same files again, or
over rows written later by another step, decodes nothing twice.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from pipeline.report import VOICE_CHANGE
from training.evaluate import STREAMS, ItemResult, _kind, rescore_parser
from training.split import read_manifest

logger = logging.getLogger(__name__)


def filled(r: ItemResult, score: float | None, status: str, ident: tuple[str, str]) -> ItemResult:
    """``r`` with the voice-change slot's ``status`` and raw ``score`` (None unless it ran)."""
    return replace(r, status={**r.status, VOICE_CHANGE: status}, raw={**r.raw, VOICE_CHANGE: score},
                   detectors={**(r.detectors or {}), VOICE_CHANGE: list(ident)})


def applies(modality: str) -> bool:
    """The stage runs on videos with sound (``Pipeline._voice_change``); the fusion never calls for it, so the
    fusion's ``applicable`` does not say where it runs."""
    return STREAMS.get(modality) == ("video", True, True)


def score_file(detector, path: str | Path) -> tuple[float | None, str]:
    """(raw score, status) of one file through the pipeline's own decode, VAD and rule."""
    from pipeline import media, stages
    from pipeline.audio import detect_speech

    audio = media.load_audio(path)
    if audio is None:
        return None, "not_applicable"
    res = stages.score_voice_change(detector, audio.samples, audio.sample_rate,
                                    detect_speech(audio.samples, audio.sample_rate).segments)
    return (None, "not_applicable") if isinstance(res, str) else (res.clip, "ok")


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from models import registry
    from models.registry import identity
    from models.weights import sha256_of
    from training.calibrate import _read_results
    from training.reencode import process

    ap = rescore_parser("voice_fill", __doc__)
    ap.add_argument("--rescore", action="store_true", help="score again rows this detector already scored")
    ap.add_argument("--cache", default="out/voice_cache.jsonl", help="scores kept by file hash and processing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    spec = registry.spec("voice_change")
    detector = spec.load()
    ident = identity(spec.model_name(), detector)
    ident = (ident.name, ident.sha256)
    items = {it.path: it for m in args.manifest for it in read_manifest(m)}
    counts = {"scored": 0, "kept": 0, "not_applicable": 0, "cached": 0}
    cache_file = Path(args.cache)
    cache = {}
    if cache_file.exists():
        for line in cache_file.read_text().splitlines():
            if line.strip():
                c = json.loads(line)
                cache[c["key"]] = (c["score"], c["status"])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    out_root = Path(args.out)
    for f in args.results:
        dest = out_root / Path(f).parent.name / "results.jsonl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        rows = [r for r in _read_results(Path(f)) if r.path in items]
        with open(dest, "w") as fh, tempfile.TemporaryDirectory() as tmp:
            for r in tqdm(rows, desc=f"voice change {Path(f).parent.name}", unit="row", mininterval=10):
                if not applies(r.modality):
                    r, kind = filled(r, None, "not_applicable", ident), "not_applicable"
                elif not args.rescore and (r.detectors or {}).get(VOICE_CHANGE) == list(ident) \
                        and VOICE_CHANGE in r.status:
                    kind = "kept"
                else:
                    src = items[r.path].file
                    if r.path not in hashes:
                        hashes[r.path] = sha256_of(src)
                    key = "|".join((ident[0], ident[1][:16], hashes[r.path], r.reencode or ""))
                    if key in cache and not args.rescore:
                        (score, status), got = cache[key], "cached"
                    else:
                        if r.reencode:
                            src = process(src, tmp, r.reencode, kind=_kind(r.modality))
                        score, status = score_file(detector, src)
                        if r.reencode and Path(src).parent == Path(tmp):
                            Path(src).unlink(missing_ok=True)
                        cache[key] = (score, status)
                        with open(cache_file, "a") as c:
                            c.write(json.dumps({"key": key, "score": score, "status": status}) + "\n")
                        got = "scored"
                    r = filled(r, score, status, ident)
                    kind = got if status == "ok" else "not_applicable"
                counts[kind] += 1
                fh.write(json.dumps(asdict(r)) + "\n")
        logger.info("%s -> %s (%d rows)", f, dest, len(rows))
    summary = {"counts": counts, "identity": ident, "seconds": round(time.perf_counter() - t0, 1)}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=1))
    logger.info("voice-change scores: %s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

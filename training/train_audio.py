"""``python -m training audio --manifest M``: fine-tune AASIST on real vs synthetic speech, codec-augmented.

Starts from the released clovaai/aasist weights (``--variant aasist`` or ``aasist_l``) and trains real vs fake on the
TRAIN side of the committed group split only; validation items are refused.

Data: the manifest's audio items (real speech; fakes of manipulation ``tts`` and ``vocoder``) plus the soundtracks of
REAL ``video_av`` items as extra real speech. Fake videos' soundtracks are never used: they are mostly genuine speech.

Shortcut hygiene: every clip is decoded like the pipeline does (``media.load_audio`` at 16 kHz) and trimmed to its
first..last speech with the same VAD (fake demos often start with constant silence). Windows are random 64600-sample
crops; shorter audio is tiled exactly like ``make_windows`` does. Because the only short real clips are the 8 kHz FSDD
digits, a share of windows from every class is a short crop tiled the same way, so neither tiling nor bandwidth can
stand in for the label.

Augmentation, drawn independently of the label: additive white/pink noise at a random SNR, narrow-band (8 kHz and back:
phone audio, FSDD), resampling through 11.025/12/22.05 kHz, messenger codecs (AAC or Opus at 32-64 kbit/s, through
ffmpeg) and gain changes (with clipping when pushed). Augmented windows are cached under ``out/audio_cache``.

Training: the sinc front-end, first BatchNorm and residual blocks 0-3 stay frozen (they are ~95 % of the compute), so
their output is computed once per cached window; residual blocks 4-5 and the graph back-end are fine-tuned with
class-balanced sampling (each class weighs the same; within a class each source stratum weighs the same, so the 250
FSDD digits do not drown the other real speech). ``--holdout F`` holds out a share of the train GROUPS to watch the
epochs (still never the validation split); the bundled checkpoint is trained on every train group.

    python -m training audio --manifest ../shared/data/dev/manifest.tsv [--variant aasist_l] [--holdout 0.2]
    python -m training audio --manifest ../shared/data/dev/manifest.tsv --compare aasist,aasist_ft \\
        [--reencode whatsapp]   # validation figures through score_audio, the pipeline's own path
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.aasist import AASIST, VARIANTS, AASISTDetector
from pipeline.audio import NotApplicable, SpeechActivity, detect_speech, fix_length, score_audio, trim_silence
from training.evaluate import auc, eer
from training.split import DEFAULT_SPLIT, ManifestItem, read_manifest, require_train_only, select

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / "out" / "audio_cache"
EVAL_DIR = REPO_ROOT / "out" / "audio_eval"
DEFAULT_OUT = REPO_ROOT / "models" / "checkpoints" / "aasist_ft.pt"
SR = 16000
WINDOW = 64600
FRONT_BLOCKS = 4  # residual blocks 0..3 are frozen and cached; 4..5 and the graph back-end train
FAKE_MANIPULATIONS = ("tts", "vocoder")
MIN_SPEECH_S = 0.2  # a clip whose VAD finds less speech than this teaches nothing


def is_audio_item(it: ManifestItem) -> bool:
    """Speech the detector should learn from: audio clips (real, TTS, vocoder) and real videos' soundtracks."""
    if it.modality == "audio":
        return it.label == "real" or it.manipulation in FAKE_MANIPULATIONS
    return it.modality == "video_av" and it.label == "real"


def stratum(it: ManifestItem, native_sr: int | None) -> str:
    """The sampling stratum: fakes by manipulation; reals as narrow-band clips, other speech or soundtracks."""
    if it.label == "fake":
        return it.manipulation
    if it.modality == "video_av":
        return "soundtrack"
    return "narrowband" if native_sr is not None and native_sr <= 8000 else "speech"


# ----------------------------------------------------------------------------------------------
# Decoding and augmentation
# ----------------------------------------------------------------------------------------------
def _key(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def speech_of(it: ManifestItem, cache_dir: Path = CACHE_DIR) -> tuple[np.ndarray, int | None]:
    """(the clip at 16 kHz trimmed to its first..last speech, native sample rate), decoded as the pipeline does."""
    from pipeline import media

    f = cache_dir / "speech" / f"{_key(it.path)}.npz"
    if f.exists():
        z = np.load(f)
        return z["wave"], (int(z["sr"]) or None)
    info = media.probe(it.file)
    track = media.load_audio(it.file, info, SR)
    wave = np.zeros(0, np.float32) if track is None else track.samples
    if wave.size:
        wave = trim_silence(wave, SR, detect_speech(wave, SR)).astype(np.float32)
    f.parent.mkdir(parents=True, exist_ok=True)
    np.savez(f, wave=wave, sr=np.int64(info.audio_sample_rate or 0))
    return wave, info.audio_sample_rate


@dataclass(frozen=True)
class AugmentConfig:
    p_noise: float = 0.3
    snr_db: tuple[float, float] = (5.0, 35.0)
    p_narrowband: float = 0.25  # 8 kHz and back
    p_resample: float = 0.15
    resample_rates: tuple[int, ...] = (11025, 12000, 22050)
    p_codec: float = 0.5
    codecs: tuple[str, ...] = ("aac", "opus")
    kbps: tuple[int, int] = (32, 64)
    p_gain: float = 0.8
    gain_db: tuple[float, float] = (-20.0, 6.0)
    p_short: float = 0.12  # a short crop tiled to the window, as make_windows does for short audio
    short_s: tuple[float, float] = (0.4, 1.5)
    p_clean: float = 0.2  # windows left as decoded: the model must still see originals


def resample(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = math.gcd(sr, target)
    return resample_poly(wave, target // g, sr // g).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator, pink: bool = False) -> np.ndarray:
    noise = rng.standard_normal(wave.shape[0]).astype(np.float32)
    if pink:  # 1/f power: shape white noise's spectrum by 1/sqrt(f)
        spec = np.fft.rfft(noise)
        spec /= np.sqrt(np.maximum(np.arange(spec.shape[0]), 1.0))
        noise = np.fft.irfft(spec, n=wave.shape[0]).astype(np.float32)
    p_sig = float(np.mean(wave.astype(np.float64) ** 2)) + 1e-10
    p_noise = float(np.mean(noise.astype(np.float64) ** 2)) + 1e-12
    return (wave + noise * np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))).astype(np.float32)


def codec_roundtrip(wave: np.ndarray, codec: str, kbps: int, sr: int = SR) -> np.ndarray:
    """Encode with ffmpeg (AAC in ADTS or Opus in Ogg, like a messenger) and decode back to ``sr`` mono float32."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is required for codec augmentation")
    enc = {"aac": ["-c:a", "aac", "-f", "adts"], "opus": ["-c:a", "libopus", "-f", "ogg"]}[codec]
    base = [exe, "-hide_banner", "-loglevel", "error"]
    raw = ["-f", "f32le", "-ar", str(sr), "-ac", "1"]
    encoded = subprocess.run([*base, *raw, "-i", "pipe:", *enc, "-b:a", f"{kbps}k", "pipe:"],
                             input=np.ascontiguousarray(wave, np.float32).tobytes(), capture_output=True,
                             check=True).stdout
    decoded = subprocess.run([*base, "-i", "pipe:", *raw, "pipe:"], input=encoded, capture_output=True,
                             check=True).stdout
    out = np.frombuffer(decoded, np.float32)
    if codec == "aac":  # raw ADTS keeps the encoder's 1024 priming samples: drop them so no silence gets tiled
        out = out[1024:]
    return out[: wave.shape[0]].copy()


def augment(wave: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, list[str]]:
    """One random chain in the order a recording meets them: noise, band limit, codec, gain. Label-blind."""
    tags: list[str] = []
    if rng.random() < cfg.p_noise:
        snr = float(rng.uniform(*cfg.snr_db))
        pink = bool(rng.random() < 0.5)
        wave = add_noise(wave, snr, rng, pink)
        tags.append(f"{'pink' if pink else 'white'}{snr:.0f}dB")
    if rng.random() < cfg.p_narrowband:
        wave = resample(resample(wave, SR, 8000), 8000, SR)
        tags.append("8k")
    elif rng.random() < cfg.p_resample:
        rate = int(rng.choice(cfg.resample_rates))
        wave = resample(resample(wave, SR, rate), rate, SR)
        tags.append(f"rs{rate}")
    if rng.random() < cfg.p_codec:
        codec = str(rng.choice(cfg.codecs))
        kbps = int(rng.integers(cfg.kbps[0], cfg.kbps[1] + 1))
        wave = codec_roundtrip(wave, codec, kbps)
        tags.append(f"{codec}{kbps}k")
    if rng.random() < cfg.p_gain:
        gain = float(rng.uniform(*cfg.gain_db))
        wave = np.clip(wave * 10 ** (gain / 20), -1.0, 1.0).astype(np.float32)
        tags.append(f"gain{gain:+.0f}dB")
    return wave.astype(np.float32), tags


def windows_per_clip(n_samples: int, cap: int = 10, seconds_per_window: float = 1.5) -> int:
    """Long clips give more (overlapping, differently augmented) windows; short ones one."""
    return int(min(cap, 1 + n_samples / SR // seconds_per_window))


def make_window(wave: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig, clean: bool = False
                ) -> tuple[np.ndarray, list[str]]:
    """A random crop of ``wave`` (or the whole clip, tiled, when shorter than a window), augmented."""
    n, margin = wave.shape[0], SR // 10  # codecs and resamplers smear the edges: crop them off afterwards
    tags: list[str] = []
    if not clean and n > 2 * SR and rng.random() < cfg.p_short:
        length = int(rng.uniform(*cfg.short_s) * SR)
        start = int(rng.integers(0, n - length + 1))
        piece, tags = wave[start:start + length], ["short"]
    elif n > WINDOW + 2 * margin:
        start = int(rng.integers(0, n - WINDOW - 2 * margin + 1))
        piece = wave[start:start + WINDOW + 2 * margin]
    else:
        piece = wave
    if not clean:
        piece, more = augment(piece, rng, cfg)
        tags += more
    if piece.shape[0] >= WINDOW + 2 * margin:
        piece = piece[margin:margin + WINDOW]
    return fix_length(piece, WINDOW).astype(np.float32), tags


# ----------------------------------------------------------------------------------------------
# The window cache
# ----------------------------------------------------------------------------------------------
@dataclass
class WindowSet:
    windows: np.ndarray  # (N, WINDOW) float32
    label: np.ndarray  # (N,) 1 = fake
    clip: np.ndarray  # (N,) index into paths
    strata: list[str]  # per window
    tags: list[str]  # per window, "+"-joined augmentations
    paths: list[str]  # per clip
    groups: list[str]  # per clip

    def __len__(self) -> int:
        return int(self.label.shape[0])


def build_windows(items: Sequence[ManifestItem], cfg: AugmentConfig, seed: int = 0, cache_dir: Path = CACHE_DIR,
                  max_per_clip: int = 10, split_file: str | Path = DEFAULT_SPLIT) -> WindowSet:
    """Augmented training windows of ``items`` (TRAIN side only), cached per clip and augmentation recipe.
    ``split_file=None``: no split guard, for a caller that holds items out by fold itself (``training.audio_oof``)."""
    if split_file is not None:
        require_train_only(items, split_file)
    recipe = _key(json.dumps(asdict(cfg), sort_keys=True), seed, max_per_clip, WINDOW)
    out: dict[str, list] = defaultdict(list)
    paths, groups = [], []
    skipped = 0
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        f = cache_dir / "windows" / recipe / f"{_key(it.path)}.npz"
        if f.exists():
            z = np.load(f)
            wins, tags, strat = z["windows"], list(z["tags"]), str(z["stratum"])
        else:
            wave, native_sr = speech_of(it, cache_dir)
            strat = stratum(it, native_sr)
            if wave.shape[0] < MIN_SPEECH_S * SR:
                wins, tags = np.zeros((0, WINDOW), np.float32), []
            else:
                rng = np.random.default_rng(int(_key(recipe, it.path), 16))
                made = [make_window(wave, rng, cfg, clean=bool(rng.random() < cfg.p_clean))
                        for _ in range(windows_per_clip(wave.shape[0], max_per_clip))]
                wins = np.stack([w for w, _ in made])
                tags = ["+".join(t) or "clean" for _, t in made]
            f.parent.mkdir(parents=True, exist_ok=True)
            np.savez(f, windows=wins, tags=np.array(tags, dtype=str), stratum=strat)
        if len(wins) == 0:
            skipped += 1
            continue
        ci = len(paths)
        paths.append(it.path)
        groups.append(it.group or it.path)
        out["windows"].append(wins)
        out["label"] += [it.is_fake] * len(wins)
        out["clip"] += [ci] * len(wins)
        out["strata"] += [strat] * len(wins)
        out["tags"] += tags
        if (i + 1) % 50 == 0:
            logger.info("windows: %d/%d clips, %.0f s", i + 1, len(items), time.perf_counter() - t0)
    if skipped:
        logger.info("%d clip(s) skipped: less than %.1f s of speech", skipped, MIN_SPEECH_S)
    if not paths:
        raise ValueError("no training clip has speech")
    return WindowSet(np.concatenate(out["windows"]), np.asarray(out["label"], np.int64),
                     np.asarray(out["clip"], np.int64), out["strata"], out["tags"], paths, groups)


# ----------------------------------------------------------------------------------------------
# Model: frozen cached front, trainable tail
# ----------------------------------------------------------------------------------------------
def released_model(variant: str = "aasist", weights: str | Path | None = None) -> AASIST:
    return AASISTDetector.load(weights, device="cpu", variant=variant).model


def front(model: AASIST, x: torch.Tensor, blocks: int = FRONT_BLOCKS) -> torch.Tensor:
    """The frozen part: sinc filterbank .. residual block ``blocks - 1`` (AASIST._run up to there)."""
    h = F.conv1d(x.unsqueeze(1), model.sinc_filters.unsqueeze(1)).unsqueeze(1)
    h = F.selu(model.first_bn(F.max_pool2d(h.abs(), (3, 3))))
    return model.encoder[:blocks](h)


def tail(model: AASIST, h: torch.Tensor, blocks: int = FRONT_BLOCKS) -> torch.Tensor:
    """Logits from the cached front output: the remaining blocks, then the model's own graph back-end."""
    return model.head(model.encoder[blocks:](h))[1]


class FrozenFront(nn.Module):
    """The exportable view of ``front`` (what ONNX Runtime runs: ``fast_front``)."""

    def __init__(self, model: AASIST, blocks: int = FRONT_BLOCKS):
        super().__init__()
        self.model, self.blocks = model, blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return front(self.model, x, self.blocks)


def fast_front(model: AASIST, sha256: str, blocks: int = FRONT_BLOCKS, threads: int | None = None):
    """``front`` of a model whose frozen part has weights ``sha256``, run by ONNX Runtime on the CPU (about twice
    as fast as PyTorch there), or PyTorch's own ``front`` when ONNX Runtime is unavailable."""
    from models.onnx_cpu import accelerated

    example = torch.zeros(2, WINDOW)
    fast = accelerated(FrozenFront(model.eval(), blocks), example, f"aasist-frozen{blocks}-{sha256[:16]}", threads)
    if fast is None:
        return lambda x: front(model, x, blocks)
    return fast


def front_features(model: AASIST, windows: np.ndarray, cache: Path | None = None, batch_size: int = 8,
                   run=None) -> np.ndarray:
    """Frozen front outputs (N, C, 23, T) as float16, cached in ``cache`` (a .npy file) when given; ``run`` is
    ``fast_front``'s callable where the caller has one (default: PyTorch's ``front``)."""
    if cache is not None and cache.exists():
        feats = np.load(cache, mmap_mode="r")
        if feats.shape[0] == windows.shape[0]:
            return feats
    model.eval()
    parts, t0 = [], time.perf_counter()
    with torch.inference_mode():
        for i in range(0, windows.shape[0], batch_size):
            x = torch.from_numpy(np.ascontiguousarray(windows[i:i + batch_size]))
            parts.append((run(x) if run is not None else front(model, x)).numpy().astype(np.float16))
            if (i // batch_size) % 25 == 0:
                logger.info("front features: %d/%d windows, %.0f s", i + len(parts[-1]), len(windows),
                            time.perf_counter() - t0)
    feats = np.concatenate(parts)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, feats)
    return feats


def trainable_parameters(model: AASIST, blocks: int = FRONT_BLOCKS) -> list[nn.Parameter]:
    frozen = ("first_bn.", *(f"encoder.{i}." for i in range(blocks)))
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
        if p.requires_grad:
            params.append(p)
    return params


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    variant: str = "aasist"
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    seed: int = 0
    steps_per_epoch: int | None = None  # default: one pass worth of windows
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def sample_weights(label: np.ndarray, strata: Sequence[str]) -> np.ndarray:
    """Each class weighs half; within a class each stratum the same; within a stratum each window the same."""
    counts = Counter(zip(label.tolist(), strata, strict=True))
    per_class = Counter(lab for lab, _ in counts)
    w = np.array([1.0 / (per_class[lab] * counts[(lab, s)]) for lab, s in zip(label.tolist(), strata, strict=True)])
    return w / w.sum()


def clip_scores(model: AASIST, feats: np.ndarray, clip: np.ndarray, batch_size: int = 32) -> dict[int, float]:
    """Mean window P(fake) per clip (the pipeline's clip score), from cached front features."""
    model.eval()
    probs = []
    with torch.inference_mode():
        for i in range(0, feats.shape[0], batch_size):
            logits = tail(model, torch.from_numpy(np.asarray(feats[i:i + batch_size], np.float32)))
            probs.append(torch.softmax(logits, dim=1)[:, 0].numpy())
    p = np.concatenate(probs)
    return {int(c): float(p[clip == c].mean()) for c in np.unique(clip)}


def fit(model: AASIST, feats: np.ndarray, label: np.ndarray, strata: Sequence[str], cfg: TrainConfig,
        holdout: tuple[np.ndarray, np.ndarray, dict[int, int], dict[int, str]] | None = None
        ) -> list[dict[str, float]]:
    """Fine-tune the tail of ``model`` in place on cached front features; returns per-epoch logs.

    ``holdout`` = (features, clip index, label and stratum per clip index) of held-out TRAIN groups, scored each
    epoch: clip AUC/EER and the mean clip P(fake) of each stratum.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    params = trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.steps_per_epoch or max(1, math.ceil(len(label) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps, eta_min=cfg.lr * 0.05)
    weights = sample_weights(label, strata)
    target = torch.from_numpy(1 - label)  # logit 0 = spoof, 1 = bona fide
    logs = []
    for epoch in range(cfg.epochs):
        model.train()
        t0, total = time.perf_counter(), 0.0
        for _ in range(steps):
            idx = np.sort(rng.choice(len(label), size=min(cfg.batch_size, len(label)), p=weights))
            x = torch.from_numpy(np.asarray(feats[idx], np.float32))
            loss = F.cross_entropy(tail(model, x), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        log = {"epoch": epoch + 1, "loss": total / steps, "seconds": time.perf_counter() - t0}
        if holdout is not None:
            hf, hclip, hy, hstrat = holdout
            scores = clip_scores(model, hf, hclip)
            ys = np.array([hy[c] for c in scores])
            ss = np.array(list(scores.values()))
            log.update(holdout_auc=auc(ys, ss) or float("nan"), holdout_eer=eer(ys, ss) or float("nan"))
            for st in sorted(set(hstrat.values())):
                log[f"p_{st}"] = float(np.mean([v for c, v in scores.items() if hstrat[c] == st]))
        logger.info("%s", " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in log.items()))
        logs.append(log)
    model.eval()
    return logs


def holdout_groups(groups: Sequence[str], labels: Sequence[int], fraction: float, seed: int = 0) -> set[str]:
    """A hash-ordered share of the train groups of each label, held out to watch training."""
    by_label: dict[int, list[str]] = defaultdict(list)
    for g, y in sorted(set(zip(groups, labels, strict=True))):
        by_label[y].append(g)
    out: set[str] = set()
    for gs in by_label.values():
        gs = sorted(set(gs), key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        out.update(gs[: max(1, round(fraction * len(gs)))])
    return out


def save_checkpoint(model: AASIST, path: str | Path, meta: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"config": model.config.to_dict(), "state_dict": sd, "meta": meta}, path)
    return path


def train(items: Sequence[ManifestItem], cfg: TrainConfig, out: str | Path | None = DEFAULT_OUT,
          weights: str | Path | None = None, holdout: float = 0.0, cache_dir: Path = CACHE_DIR,
          max_per_clip: int = 10, split_file: str | Path = DEFAULT_SPLIT) -> tuple[AASIST, dict]:
    """Windows -> frozen front features -> fine-tuned tail; saves ``out`` (unless None) and returns (model, meta)."""
    require_train_only(items, split_file)
    t_start = time.perf_counter()
    ws = build_windows(items, cfg.augment, cfg.seed, cache_dir, max_per_clip, split_file)
    t_windows = time.perf_counter() - t_start
    model = released_model(cfg.variant, weights)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    key = _key(cfg.variant, weights, ws.paths, len(ws), json.dumps(asdict(cfg.augment), sort_keys=True), cfg.seed)
    feats = front_features(model, ws.windows, cache_dir / "front" / f"{cfg.variant}_{key}.npy")
    t_front = time.perf_counter() - t0

    train_mask = np.ones(len(ws), bool)
    hold = None
    if holdout > 0:
        clip_label = [int(ws.label[ws.clip == c][0]) for c in range(len(ws.paths))]
        held = holdout_groups(ws.groups, clip_label, holdout, cfg.seed)
        held_clip = np.array([g in held for g in ws.groups])
        train_mask = ~held_clip[ws.clip]
        clip_stratum = {c: ws.strata[int(np.flatnonzero(ws.clip == c)[0])] for c in range(len(ws.paths))}
        hold = (feats[~train_mask], ws.clip[~train_mask], dict(enumerate(clip_label)), clip_stratum)
        logger.info("holding out %d group(s), %d clips, %d windows", len(held), int(held_clip.sum()),
                    int((~train_mask).sum()))
    idx = np.flatnonzero(train_mask)
    strata = [ws.strata[i] for i in idx]
    t0 = time.perf_counter()
    logs = fit(model, feats[idx] if holdout > 0 else feats, ws.label[idx], strata, cfg, hold)
    t_fit = time.perf_counter() - t0
    changed = sum(int(not torch.equal(base[k], v)) for k, v in model.state_dict().items())

    used = np.unique(ws.clip[train_mask])
    first = {int(c): int(i) for c, i in zip(*np.unique(ws.clip, return_index=True), strict=True)}
    clips = Counter(ws.strata[first[int(c)]] for c in used)
    meta = {
        "base": cfg.variant,
        "frozen": f"sinc front-end, first_bn, encoder.0-{FRONT_BLOCKS - 1}",
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "augment"},
        "augment": asdict(cfg.augment),
        "clips": dict(sorted(clips.items())),
        "windows": dict(Counter(ws.strata[i] for i in idx)),
        "groups": len({ws.groups[c] for c in used}),
        "holdout": holdout,
        "epochs": logs,
        "seconds": {"windows": round(t_windows, 1), "front": round(t_front, 1), "fit": round(t_fit, 1)},
        "tensors_changed": changed,
        "split_file_sha256": hashlib.sha256(Path(split_file).read_bytes()).hexdigest(),
        "train_paths": [ws.paths[c] for c in used],
    }
    if out is not None:
        save_checkpoint(model, out, meta)
        logger.info("saved %s (%d bytes)", out, Path(out).stat().st_size)
    return model, meta


def training_items(manifest: str | Path, split_file: str | Path = DEFAULT_SPLIT) -> list[ManifestItem]:
    items = [it for it in select(read_manifest(manifest), "train", split_file) if is_audio_item(it)]
    require_train_only(items, split_file)
    return items


# ----------------------------------------------------------------------------------------------
# Validation figures through the pipeline's own scoring path
# ----------------------------------------------------------------------------------------------
def val_items(manifest: str | Path, split_file: str | Path = DEFAULT_SPLIT) -> list[ManifestItem]:
    return [it for it in select(read_manifest(manifest), "val", split_file) if is_audio_item(it)]


def score_file(det, path: Path, min_speech_s: float) -> dict:
    """The pipeline's audio score (``score_audio`` on ``media.load_audio``), and a forced one for short clips."""
    from pipeline import media

    track = media.load_audio(path, None, SR)
    if track is None:
        return {"pipeline": None, "forced": None, "reason": "no audio"}
    res = score_audio(det, track.samples, track.sample_rate, min_speech_s=min_speech_s)
    if isinstance(res, NotApplicable):
        # what AASIST says about the whole clip, tiled: the baselines' way to score sub-second FSDD digits
        n = track.samples.shape[0]
        act = detect_speech(track.samples, SR)
        if act.speech_seconds == 0:
            act = SpeechActivity([(0.0, n / SR)], n / SR, "none")
        forced = score_audio(det, track.samples, SR, min_speech_s=0.0, min_clip_s=0.0, activity=act)
        return {"pipeline": None, "forced": float(forced.clip_fake_prob), "reason": res.reason}
    return {"pipeline": res.clip_fake_prob, "forced": res.clip_fake_prob, "reason": None}


def score_val(detector_name: str, items: Sequence[ManifestItem], reencode_profile: str | None = None) -> dict:
    """path -> score_file(...) for one detector (``AASISTDetector.load(variant=...)``), cached in out/audio_eval."""
    from pipeline.settings import get_settings
    from training.reencode import reencode

    tag = f"{detector_name}-{reencode_profile or 'raw'}"
    cache = EVAL_DIR / f"{tag}.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [it for it in items if it.path not in done]
    if todo:
        det = AASISTDetector.load(variant=detector_name)
        min_speech = get_settings().min_speech_s
        t0 = time.perf_counter()
        for i, it in enumerate(todo):
            src = it.file
            if reencode_profile:
                kind = "audio" if it.modality == "audio" else "video"
                out_dir = EVAL_DIR / "reencoded" / reencode_profile / _key(it.path)
                found = list(out_dir.glob(f"{src.stem}.{reencode_profile}.*")) if out_dir.exists() else []
                src = found[0] if found else reencode(src, out_dir, reencode_profile, kind=kind)
            done[it.path] = score_file(det, src, min_speech)
            if (i + 1) % 20 == 0:
                logger.info("%s: %d/%d, %.0f s", tag, i + 1, len(todo), time.perf_counter() - t0)
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(done))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(done))
    return done


def _is_fsdd(it: ManifestItem) -> bool:
    return it.label == "real" and it.modality == "audio" and "fsdd" in it.path.lower()


def comparison_rows(items: Sequence[ManifestItem], scores: dict) -> list[dict]:
    """AUC/EER over subsets: the pipeline's scores (short clips n/a), per manipulation, and with FSDD forced."""
    def row(subset: str, sel: list[ManifestItem], key: str) -> dict:
        pairs = [(it.is_fake, scores[it.path][key]) for it in sel if scores[it.path][key] is not None]
        y = np.array([p[0] for p in pairs], int)
        s = np.array([p[1] for p in pairs], float)
        return {"subset": subset, "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
                "auc": auc(y, s) if len(y) else None, "eer": eer(y, s) if len(y) and y.min() != y.max() else None,
                "acc": float(((s >= 0.5) == (y == 1)).mean()) if len(y) else None,
                "mean_real": float(s[y == 0].mean()) if (y == 0).any() else None,
                "mean_fake": float(s[y == 1].mean()) if (y == 1).any() else None,
                "n_a": len(sel) - len(pairs)}

    audio = [it for it in items if it.modality == "audio"]
    no_fsdd = [it for it in audio if not _is_fsdd(it)]
    rows = [row("audio (pipeline)", audio, "pipeline")]
    for m in FAKE_MANIPULATIONS:
        rows.append(row(f"audio/{m} (pipeline)", [it for it in audio if it.label == "real" or it.manipulation == m],
                        "pipeline"))
    rows.append(row("audio w/o FSDD (forced)", no_fsdd, "forced"))
    rows.append(row("audio with FSDD (forced)", audio, "forced"))
    for m in FAKE_MANIPULATIONS:
        rows.append(row(f"audio/{m} with FSDD (forced)",
                        [it for it in audio if it.label == "real" or it.manipulation == m], "forced"))
    rows.append(row("FSDD only (forced, μ real)", [it for it in audio if _is_fsdd(it)], "forced"))
    rows.append(row("real soundtracks (pipeline)", [it for it in items if it.modality == "video_av"], "pipeline"))
    return rows


def format_rows(title: str, rows: list[dict]) -> str:
    def f(x):
        return "—" if x is None else f"{x:.3f}"

    head = (f"{'subset':<32} {'real':>4} {'fake':>4} {'AUC':>6} {'EER':>6} {'acc':>6} {'μ real':>7} {'μ fake':>7} "
            f"{'n/a':>4}")
    lines = [title, head, "-" * len(head)]
    lines += [f"{r['subset']:<32} {r['n_real']:>4} {r['n_fake']:>4} {f(r['auc']):>6} {f(r['eer']):>6} "
              f"{f(r['acc']):>6} {f(r['mean_real']):>7} {f(r['mean_fake']):>7} {r['n_a']:>4}" for r in rows]
    return "\n".join(lines)


def compare(manifest: str | Path, detectors: Sequence[str], reencode_profiles: Sequence[str | None]) -> str:
    items = val_items(manifest)
    blocks = []
    for profile in reencode_profiles:
        for name in detectors:
            rows = comparison_rows(items, score_val(name, items, profile))
            blocks.append(format_rows(f"== {name}, val, {profile or 'as-is'}", rows))
    text = "\n\n".join(blocks)
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    (EVAL_DIR / "comparison.txt").write_text(text + "\n")
    return text


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training audio", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--variant", choices=sorted(VARIANTS), default="aasist", help="released weights to start from")
    p.add_argument("--weights", default=None, help="explicit released checkpoint file (default: the registry)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--max-per-clip", type=int, default=10, help="augmented windows per long clip")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="share of TRAIN groups held out to watch the epochs (no checkpoint is written)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", default=None, help="comma list of AASIST variants to score on VAL instead of training")
    p.add_argument("--reencode", choices=["whatsapp", "whatsapp_low"], default=None,
                   help="with --compare: also score messenger re-encoded copies")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    if args.compare:
        text = compare(args.manifest, args.compare.split(","), [None, args.reencode] if args.reencode else [None])
        logger.info("\n%s", text)
        return 0
    items = training_items(args.manifest)
    logger.info("training on %d TRAIN clips: %s", len(items),
                dict(Counter((it.label, it.modality, it.manipulation) for it in items)))
    cfg = TrainConfig(variant=args.variant, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      seed=args.seed)
    _, meta = train(items, cfg, None if args.holdout > 0 else args.out, args.weights, args.holdout,
                    max_per_clip=args.max_per_clip)
    logger.info("done: %s", json.dumps({k: meta[k] for k in ("clips", "windows", "groups", "seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pictures of the evidence behind a verdict: what a person would rather look at than read.

  * ``face_heatmap``: where the visual detector sees manipulation on the main face's most suspicious frames,
    by occlusion sensitivity (how much P(fake) drops when a patch of the aligned crop is covered), all patches
    of all frames scored in one batched call;
  * ``lip_sync``: the lips-vs-voice agreement against the audio offset (its peak is the offset the clip is
    played at), and the mouth's movement over time against the speech envelope;
  * ``voice``: the spectrogram with the windows the voice detector found synthetic shaded;
  * ``mouth``: the main face's blurriest mouths, each above the same face at nose height at the same
    enlargement (a repainted mouth is visibly softer than the rest of the face);
  * ``timeline``: every detector's suspicion per second on one time axis;
  * ``summary``: the verdict, its first finding, the timeline and the strongest picture, in one image (the
    WhatsApp reply).

``collect`` keeps the few arrays these need while the run has them; ``draw`` makes PNGs from them and the
finished report. Colours and labels come from ``labels.json`` like every other surface.
"""

from __future__ import annotations

import io
import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.labels import BY_SLOT, OVERALL, SLOT_ORDER, VERDICT_COLOURS, VERDICT_WORDS, overall_bands
from pipeline.report import AUDIO, FINDING_MIN_EVIDENCE, LIP_SYNC, MOUTH, VISUAL, Figure, Report

logger = logging.getLogger(__name__)

GRID = 6  # occlusion cells per side (36 covered copies of each frame, one batched call)
MIN_HEAT_SCORE = 0.1  # a frame scored below this has nothing for a cover to remove: its map is not computed
HEATMAP_FRAMES = 3  # most suspicious frames of the main face shown
SPECTROGRAM_MAX_S = 60.0  # a longer voice is drawn over its first minute (a 10 min spectrogram is unreadable)
DPI = 100
HEAT_FULL = 0.2  # P(fake) drop drawn at full colour
MOUTH_FRAMES = 3  # blurriest mouths of the main face shown


@dataclass(frozen=True)
class FaceEvidence:
    crops: np.ndarray  # (K, H, W, 3) uint8: the visual detector's crops of the most suspicious frames
    times_s: np.ndarray  # (K,)
    scores: np.ndarray  # (K,) P(fake) of each
    heat: np.ndarray  # (K, GRID, GRID) drop of P(fake) when each cell is covered


@dataclass(frozen=True)
class SyncEvidence:
    offsets_s: np.ndarray  # (2m+1,)
    curve: np.ndarray  # agreement at each offset
    best_offset_s: float
    trace_times_s: np.ndarray  # (T,) of the longest analysed window
    mouth: np.ndarray  # (T,) mouth movement
    speech: np.ndarray  # (T,) speech-band energy


@dataclass(frozen=True)
class VoiceEvidence:
    samples: np.ndarray  # (S,) float32 at ``sample_rate``, at most SPECTROGRAM_MAX_S
    sample_rate: int


@dataclass(frozen=True)
class MouthEvidence:
    mouths: np.ndarray  # (K, h, w, 3) uint8: the mouth box of the main face's blurriest aligned crops
    cheeks: np.ndarray  # (K, h, w, 3) uint8: the same crops at nose height (the cheeks' band), the mouth box's size
    times_s: np.ndarray  # (K,)
    scores: np.ndarray  # (K,) the mouth detector's P(fake) of each


@dataclass(frozen=True)
class Evidence:
    face: FaceEvidence | None = None
    sync: SyncEvidence | None = None
    voice: VoiceEvidence | None = None
    mouth: MouthEvidence | None = None


# ----------------------------------------------------------------------------------------------
# collecting (numbers only; cheap)
# ----------------------------------------------------------------------------------------------
def occlusion_heat(predict: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(K, grid, grid): P(fake) of each crop minus P(fake) with one cell (and half its neighbours' width around
    it) covered by the crop's mean colour. Positive = that area pushes the detector towards FAKE."""
    k, h, w = crops.shape[:3]
    base = predict(crops)
    variants = np.repeat(crops[:, None], grid * grid, axis=1)  # (K, g*g, H, W, 3)
    ch, cw = h / grid, w / grid
    for i in range(grid):
        y0, y1 = int(max(0, (i - 0.25) * ch)), int(min(h, (i + 1.25) * ch))
        for j in range(grid):
            x0, x1 = int(max(0, (j - 0.25) * cw)), int(min(w, (j + 1.25) * cw))
            variants[:, i * grid + j, y0:y1, x0:x1] = crops.reshape(k, -1, 3).mean(axis=1)[:, None, None, :]
    covered = predict(variants.reshape(-1, h, w, 3)).reshape(k, grid, grid)
    return base[:, None, None] - covered


def face_evidence(predict: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, times_s: np.ndarray,
                  scores: np.ndarray, n: int = HEATMAP_FRAMES) -> FaceEvidence | None:
    """The occlusion maps of the ``n`` frames with the highest P(fake) of one face track."""
    if crops is None or len(crops) == 0:
        return None
    top = np.argsort(-np.asarray(scores))[:n]
    top = top[np.argsort(np.asarray(times_s)[top])]  # in time order
    picked = np.ascontiguousarray(crops[top])
    p = np.asarray(scores)[top]
    heat = np.zeros((len(top), GRID, GRID))
    hot = p >= MIN_HEAT_SCORE
    if hot.any():
        heat[hot] = occlusion_heat(predict, picked[hot])
    return FaceEvidence(picked, np.asarray(times_s)[top], p, heat)


def mouth_evidence(crops: np.ndarray, times_s: np.ndarray, scores: np.ndarray, mouth_box, cheek_box,
                   n: int = MOUTH_FRAMES) -> MouthEvidence | None:
    """The ``n`` blurriest mouths of one face track (highest P(fake)), in time order, each with the same face cut
    at the centre of the cheeks' band (nose height) to the mouth box's size, for comparison."""
    if crops is None or len(crops) == 0:
        return None
    top = np.argsort(-np.asarray(scores))[:n]
    top = top[np.argsort(np.asarray(times_s)[top])]
    y0, y1, x0, x1 = mouth_box
    cy0, cy1, cx0, cx1 = cheek_box
    h, w = y1 - y0, x1 - x0
    cy, cx = (cy0 + cy1) // 2, (cx0 + cx1) // 2
    top_y, left_x = max(0, cy - h // 2), max(0, cx - w // 2)
    picked = crops[top]
    return MouthEvidence(np.ascontiguousarray(picked[:, y0:y1, x0:x1]),
                         np.ascontiguousarray(picked[:, top_y:top_y + h, left_x:left_x + w]),
                         np.asarray(times_s)[top], np.asarray(scores)[top])


def voice_evidence(samples: np.ndarray, sample_rate: int) -> VoiceEvidence:
    return VoiceEvidence(np.asarray(samples[: int(SPECTROGRAM_MAX_S * sample_rate)], np.float32), sample_rate)


# ----------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pil_kwargs={"compress_level": 1})  # speed over bytes
    _plt().close(fig)
    return buf.getvalue()


def _pts(report: Report, slot: str):
    d = report.detector(slot)
    if d is None or not d.ran:
        return []
    return [(p.start_s, p.end_s, p.score) for p in d.shown_timeline if p.score is not None]


def _duration(report: Report) -> float:
    ends = [p.end_s for d in report.detectors for p in d.timeline]
    return max([report.media.duration_s if report.media else 0.0, *ends, 1.0])


def draw_timeline(ax, report: Report) -> bool:
    evidence = dict(report.fusion.evidence)
    weak = {slot for slot, e in evidence.items() if e < FINDING_MIN_EVIDENCE}
    drawn = False
    for slot in SLOT_ORDER:
        pts = _pts(report, slot)
        if not pts:
            continue
        bar = BY_SLOT[slot]
        xs = [x for s, e, _ in pts for x in (s, e)]
        ys = [v for _, _, v in pts for _ in (0, 1)]
        if slot in weak:  # its calibrated evidence is too small to count: drawn, but not as a sign
            ax.plot(xs, ys, color=bar.colour, lw=1, ls=":", alpha=0.6, label=f"{bar.label} (weak evidence)")
        else:
            ax.plot(xs, ys, color=bar.colour, lw=2, label=bar.label)
        drawn = True
    ax.axhline(0.5, color="#9ca3af", lw=0.8, ls="--")
    ax.set_xlim(0, _duration(report))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("suspicion")
    ax.set_title("How suspicious each second is, per check (higher = more suspicious)", fontsize=10)
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # beside, never over
    else:
        ax.text(0.5, 0.5, "no per-second scores", ha="center", va="center", transform=ax.transAxes)
    return drawn


def _heat_overlay(crop: np.ndarray, heat: np.ndarray) -> np.ndarray:
    import cv2

    h, w = crop.shape[:2]
    # absolute scale: a cell whose cover removes HEAT_FULL of P(fake) is full red; no drop, no colour (a clean
    # face is not painted with normalised noise)
    m = np.clip(heat / HEAT_FULL, 0, 1)
    big = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    colour = cv2.applyColorMap((255 * big).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = 0.55 * big[..., None]
    return (crop * (1 - alpha) + colour * alpha).astype(np.uint8)


def draw_face(axes, face: FaceEvidence) -> None:
    for ax, crop, heat, t, p in zip(axes, face.crops, face.heat, face.times_s, face.scores, strict=False):
        ax.imshow(_heat_overlay(crop, heat))
        ax.set_title(f"{t:.1f} s: {p:.0%} suspicious", fontsize=9)
        ax.axis("off")


def draw_mouth(axes, mouth: MouthEvidence) -> None:
    """One column per frame: the mouth above, the same face's cheek below, both enlarged alike (no smoothing, so
    the pixels a person sees are the pixels measured)."""
    for k, (m, c, t) in enumerate(zip(mouth.mouths, mouth.cheeks, mouth.times_s, strict=False)):
        axes[0][k].imshow(m, interpolation="nearest")
        axes[0][k].set_title(f"{t:.1f} s: the mouth", fontsize=9)
        axes[1][k].imshow(c, interpolation="nearest")
        axes[1][k].set_title("the same face at nose height", fontsize=8)
        for ax in (axes[0][k], axes[1][k]):
            ax.axis("off")


def draw_sync_curve(ax, sync: SyncEvidence) -> None:
    ax.plot(sync.offsets_s, sync.curve, color=BY_SLOT[LIP_SYNC].colour, lw=2)
    ax.axvline(0.0, color="#6b7280", lw=1, ls="--", label="in sync (0 s)")
    ax.axvline(sync.best_offset_s, color="#dc2626", lw=1.2, label=f"best match ({sync.best_offset_s:+.2f} s)")
    ax.set_xlabel("audio shifted by (s; + = voice late)")
    ax.set_ylabel("lips-voice agreement")
    ax.set_title("Lips against voice at each offset", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="best")


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x - x.mean()) / (x.std() + 1e-9) if x.size else x


def _smooth(x: np.ndarray, n: int = 5) -> np.ndarray:
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(np.asarray(x, np.float64), n, mode="nearest") if len(x) else x


def draw_sync_trace(ax, sync: SyncEvidence) -> None:
    ax.plot(sync.trace_times_s, _z(_smooth(sync.speech)), color=BY_SLOT[AUDIO].colour, lw=1.4,
            label="speech loudness")
    ax.plot(sync.trace_times_s, _z(_smooth(sync.mouth)), color=BY_SLOT[LIP_SYNC].colour, lw=1.4,
            label="mouth movement")
    ax.set_xlabel("time (s)")
    ax.set_yticks([])
    ax.set_title("Mouth movement and speech over time (they rise and fall together when in sync)", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper right")


def draw_voice(ax, voice: VoiceEvidence, pts) -> None:
    x = voice.samples
    sr = voice.sample_rate
    n_fft = 512
    hop = max(160, x.size // 1600)  # at most ~1600 columns: more is slower to draw and no more readable
    if x.size < n_fft:
        ax.text(0.5, 0.5, "too little audio", ha="center", va="center", transform=ax.transAxes)
        return
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    spec = 10 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10).T
    dur = x.size / sr
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, dur, 0, sr / 2000),
              vmin=spec.max() - 80, vmax=spec.max(), interpolation="nearest")
    shaded = False
    for s, e in _spans(pts, 0.5):
        if s < dur:
            ax.axvspan(s, min(e, dur), ymin=0.93, ymax=1.0, color="#ef4444", lw=0,
                       label=None if shaded else BY_SLOT[AUDIO].words[0] + " here")
            ax.axvspan(s, min(e, dur), color="#ef4444", alpha=0.12, lw=0)
            shaded = True
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kHz")
    ax.set_title("Voice spectrogram" + (" (shaded: seconds the voice check found synthetic)" if shaded
                                       else " (no second found synthetic)"), fontsize=10)
    if shaded:
        ax.legend(fontsize=8, loc="upper right")


def _spans(pts, level: float) -> list[tuple[float, float]]:
    """Contiguous runs of timeline points at or above ``level``, merged."""
    out: list[list[float]] = []
    for s, e, v in pts:
        if v < level:
            continue
        if out and s <= out[-1][1] + 1e-6:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(a, b) for a, b in out]


def _headline(report: Report) -> str:
    verdict = report.verdict.value
    p = report.fake_probability
    overall = f"   {OVERALL.label} {OVERALL.shown(p):.0%}" if p is not None else ""
    return f"{verdict.replace('_', ' ')}{overall}"


def _strongest(report: Report, ev: Evidence) -> str | None:
    """The picture of the detector whose evidence moved the verdict most (face, lips or voice)."""
    order = [slot for slot, _ in report.fusion.evidence] or [d.slot for d in report.detectors if d.ran]
    have = {VISUAL: ev.face is not None, LIP_SYNC: ev.sync is not None,
            AUDIO: ev.voice is not None and bool(_pts(report, AUDIO)), MOUTH: ev.mouth is not None}
    return next((s for s in order if have.get(s)), next((s for s, ok in have.items() if ok), None))


def draw(report: Report, ev: Evidence) -> tuple[Figure, ...]:
    """The figures this report has material for (an audio-only file has no face heatmap, ...)."""
    plt = _plt()
    out: list[Figure] = []
    if report.detectors and any(_pts(report, s) for s in SLOT_ORDER):
        fig, ax = plt.subplots(figsize=(8, 2.6))
        draw_timeline(ax, report)
        out.append(Figure("timeline", "Timeline across checks", "Each check's suspicion for every second; the "
                          "dashed line is 50 %.", _png(fig)))
    if ev.face is not None:
        k = len(ev.face.crops)
        fig, axes = plt.subplots(1, k, figsize=(2.6 * k, 2.9), squeeze=False)
        draw_face(axes[0], ev.face)
        fig.suptitle("Where the face check sees manipulation (red = covering it lowers the score most)", fontsize=10)
        out.append(Figure("face_heatmap", "Face heatmap", f"Occlusion sensitivity of the visual detector on the "
                          f"main face's {k} most suspicious frames.", _png(fig)))
    if ev.sync is not None:
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 2.8), gridspec_kw={"width_ratios": [1, 1.6]})
        draw_sync_curve(a, ev.sync)
        draw_sync_trace(b, ev.sync)
        out.append(Figure("lip_sync", "Lip sync", "Left: how well lips and voice agree when the audio is shifted; "
                          "the peak is where they match. Right: mouth movement against speech loudness.", _png(fig)))
    if ev.mouth is not None:
        k = len(ev.mouth.mouths)
        fig, axes = plt.subplots(2, k, figsize=(2.6 * k, 3.6), squeeze=False)
        draw_mouth(axes, ev.mouth)
        fig.suptitle("The blurriest mouths of the main face, each above the same face at nose height, enlarged alike",
                     fontsize=10)
        out.append(Figure("mouth", "Mouth detail", "Lip-sync generators repaint the mouth at low resolution: a "
                          "mouth much softer than the skin beside it is their mark.", _png(fig)))
    if ev.voice is not None:
        fig, ax = plt.subplots(figsize=(8, 2.6))
        draw_voice(ax, ev.voice, _pts(report, AUDIO))
        out.append(Figure("voice", "Voice", "Spectrogram of the sound; shaded seconds are where the voice check "
                          "found synthetic speech.", _png(fig)))
    out.append(_summary(report, ev))
    return tuple(out)


def _summary(report: Report, ev: Evidence) -> Figure:
    plt = _plt()
    strongest = _strongest(report, ev)
    rows = 2 + (strongest is not None)
    fig = plt.figure(figsize=(8, 1.9 + 2.4 * (rows - 1)))
    gs = fig.add_gridspec(rows, 1, height_ratios=[0.8] + [1] * (rows - 1), hspace=0.5)
    head = fig.add_subplot(gs[0])
    head.axis("off")
    head.add_patch(plt.Rectangle((0, 0), 1, 1, transform=head.transAxes,
                                 color=VERDICT_COLOURS.get(report.verdict.value, "#555")))
    head.text(0.02, 0.8, _headline(report), color="white", fontsize=13, weight="bold", transform=head.transAxes,
              va="center")
    th = report.fusion.thresholds
    if report.fake_probability is not None and th:  # where the verdict's thresholds sit on the Overall scale
        bands = overall_bands({"fusion": {"thresholds": {"authentic_below": th[0], "fake_above": th[1]}}})
        head.text(0.02, 0.57, bands[:1].upper() + bands[1:], color="white", fontsize=8.5, transform=head.transAxes,
                  va="center")
    first = report.findings[0] if report.findings else VERDICT_WORDS.get(report.verdict.value, "")
    head.text(0.02, 0.24, textwrap.fill(textwrap.shorten(first[:1].upper() + first[1:], 160), 78), color="white",
              fontsize=9.5, transform=head.transAxes, va="center", weight="bold")
    draw_timeline(fig.add_subplot(gs[1]), report)
    if strongest == VISUAL:
        sub = gs[2].subgridspec(1, len(ev.face.crops))
        draw_face([fig.add_subplot(sub[i]) for i in range(len(ev.face.crops))], ev.face)
    elif strongest == LIP_SYNC:
        draw_sync_curve(fig.add_subplot(gs[2]), ev.sync)
    elif strongest == AUDIO:
        draw_voice(fig.add_subplot(gs[2]), ev.voice, _pts(report, AUDIO))
    elif strongest == MOUTH:
        sub = gs[2].subgridspec(2, len(ev.mouth.mouths))
        draw_mouth([[fig.add_subplot(sub[r, i]) for i in range(len(ev.mouth.mouths))] for r in range(2)], ev.mouth)
    return Figure("summary", "Summary", "The verdict, its main finding, the timeline and the strongest evidence.",
                  _png(fig))

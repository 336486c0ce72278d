"""Every text the WhatsApp bot sends, in plain words (WhatsApp formatting: *bold*, _italic_).

The verdict reads ``Report.to_dict()`` (the one JSON shape): every detector is shown as a chance of
FAKE on one 0-100 % scale, so the temporal detector is shown as its P(fake) (the stored
``temporal_consistency`` is 1 - P(fake)), exactly like ``pipeline.render``'s terminal summary.
"""

from __future__ import annotations

from typing import Any

from pipeline.render import SLOT_ORDER, VERDICT_WORDS, evidence_slots, suspicious_seconds

VERDICT_HEAD = {
    "AUTHENTIC": "✅ *AUTHENTIC*",
    "SUSPICIOUS": "⚠️ *SUSPICIOUS*",
    "FAKE": "🚩 *LIKELY FAKE*",
    "NOT_APPLICABLE": "ℹ️ *CANNOT JUDGE THIS FILE*",
    "FAILED": "❌ *ANALYSIS FAILED*",
}
# (label, what it looks at, words for low / middle / high P(fake))
DETECTOR_WORDS = {
    "visual": ("Visual artifacts", "the face in each frame",
               ("no visual artifacts", "some visual artifacts", "strong visual artifacts")),
    "temporal": ("Temporal consistency", "movement between frames",
                 ("movement looks natural", "some unnatural movement", "unnatural movement")),
    "audio": ("Synthetic voice", "the voice",
              ("voice sounds natural", "voice may be synthetic", "voice sounds synthetic")),
    "lip_sync": ("Lip sync", "lips against the voice",
                 ("lips match the voice", "lips partly mismatch the voice", "lips do not match the voice")),
}
LOW, HIGH = 0.35, 0.65  # word bands (the seed's fusion thresholds)
KIND_WORDS = {"video": "video", "image": "photo", "audio": "voice message"}
DISCLAIMER = "_Automated estimate, not proof: check the source before sharing._"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def _band(p: float, words: tuple[str, str, str]) -> str:
    return words[0] if p < LOW else words[2] if p > HIGH else words[1]


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f}" if float(s).is_integer() else f"{s:.1f}"


def help_text(daily_limit: int = 0) -> str:
    limit = f" You can send {daily_limit} a day." if daily_limit > 0 else ""
    return (
        "👋 Send me a *video*, a *voice message* or a *photo* and I will check it for signs of deepfake "
        "manipulation: the face, movement, the voice and lip sync.\n"
        f"Forward the file itself (not a link). The answer takes a minute or two.{limit}"
    )


def analysing_text(kind: str) -> str:
    what = KIND_WORDS.get(kind, "file")
    return (f"🔍 Got your {what}. Analysing it now; this usually takes a minute or two. "
            "I will reply here with the verdict.")


def detector_line(slot: str, det: dict[str, Any] | None) -> str:
    label, looks_at, words = DETECTOR_WORDS[slot]
    if det is None:
        return f"• {label}: not run"
    status = det.get("status")
    p = det.get("calibrated") if det.get("calibrated") is not None else det.get("score")
    if status == "ok" and p is not None:
        return f"• {label}: *{pct(p)}* fake, {_band(p, words)}"
    if status == "not_applicable":
        return f"• {label}: not applicable ({det.get('reason') or 'nothing to check in ' + looks_at})"
    if status == "unavailable":
        return f"• {label}: not available on this server"
    return f"• {label}: could not run ({det.get('reason') or 'error'})"


def face_quality_line(q: float | None) -> str:
    if q is None:
        return "• Face quality: no face found"
    words = "a clear face to judge" if q >= 0.6 else "small or blurry face, less reliable" if q >= 0.3 else \
        "poor face, results are unreliable"
    return f"• Face quality: {pct(q)}, {words}"


def _media_line(md: dict[str, Any]) -> str | None:
    media = md.get("media") or {}
    if not media:
        return None
    parts = [KIND_WORDS.get(media.get("kind"), media.get("kind") or "file")]
    if md.get("video_duration_seconds"):
        parts.append(f"{md['video_duration_seconds']:.1f} s")
    if media.get("kind") == "video":
        parts.append("with sound" if media.get("has_audio") else "no sound")
    return "Checked: " + ", ".join(parts)


def verdict_text(report: dict[str, Any]) -> str:
    """The verdict with the per-detector breakdown, from ``Report.to_dict()``."""
    verdict = report.get("verdict") or "FAILED"
    ds = report.get("detector_scores") or {}
    md = report.get("model_metadata") or {}
    if verdict == "FAILED":
        return analysis_failed_text(report.get("reason"))
    words = VERDICT_WORDS.get(verdict, "")
    if verdict == "NOT_APPLICABLE" and report.get("reason"):  # the reason is the message
        head = f"{VERDICT_HEAD[verdict]}: {report['reason']}"
    else:
        head = f"{VERDICT_HEAD.get(verdict, verdict)}: {words}" + (f" ({report['reason']})" if report.get("reason")
                                                                  else "")
    lines = [head]
    found = [f for f in ds.get("findings") or [] if f != report.get("reason")]
    if found:
        lines += [f"• {f[0].upper()}{f[1:]}." for f in found]
    if (ds.get("benchmark") or {}).get("sentence"):
        lines.append(f"_{ds['benchmark']['sentence']}_")
    if report.get("fake_probability") is not None:
        lines.append(f"Chance it is fake: *{pct(report['fake_probability'])}* "
                     f"(confidence {pct(report.get('confidence'))})")
    media = _media_line(md)
    if media:
        lines.append(media)
    dets = ds.get("detectors") or {}
    lines += ["", "What each check found (0 % = looks real, 100 % = looks fake):"]
    lines += [detector_line(slot, dets.get(slot)) for slot in SLOT_ORDER]
    lines.append(face_quality_line(ds.get("face_quality")))
    hot = []
    for slot in evidence_slots(report):
        det = dets.get(slot)
        if det and det.get("status") == "ok":
            hot += [(v, f"{DETECTOR_WORDS[slot][0].lower()} at {_fmt_seconds(s)}–{_fmt_seconds(e)} s")
                    for s, e, v in suspicious_seconds(det, threshold=HIGH, top=2)]
    if hot:
        lines += ["", "Most suspicious moments: " + ", ".join(t for _, t in sorted(hot, key=lambda h: -h[0])[:3]) + "."]
    lines += ["", DISCLAIMER]
    return "\n".join(lines)


def status_text(payload: dict[str, Any]) -> str:
    """The message for a finished job (the callback / ``GET /status`` JSON)."""
    report = payload.get("report")
    if payload.get("status") == "completed" and report:
        return verdict_text(report)
    return analysis_failed_text(payload.get("reason") or (report or {}).get("reason"))


def analysis_failed_text(reason: str | None) -> str:
    why = f": {reason}" if reason else "."
    return f"❌ Sorry, I could not analyse this file{why}\nYou can try again, or send a different copy of the file."


def size_words(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 10e6 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def too_large_text(size: int | None, limit: int) -> str:
    what = f"is {size_words(size)}" if size else "is too large"
    return (f"📦 This file {what}; I can check files up to {size_words(limit)}. "
            "Please send a shorter clip (trim it to the part you want checked).")


def unsupported_text(what: str | None = None) -> str:
    thing = f"{what} messages" if what else "this kind of message"
    return (f"🤷 I cannot check {thing}. I check *videos*, *voice messages* / audio files and *photos*, "
            "also when sent as a document.")


def limit_reached_text(limit: int, seconds_left: int) -> str:
    hours, minutes = divmod(max(seconds_left, 60) // 60, 60)
    wait = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return (f"⏳ You have used today's {limit} checks. The limit resets at midnight UTC (in {wait}); "
            "please send it again then.")


def download_failed_text() -> str:
    return "😕 Sorry, I could not download your file from WhatsApp. Please send it again."


def unavailable_text() -> str:
    return "😕 Sorry, the checker is not available right now. Please try again later."

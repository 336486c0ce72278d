"""Every text the WhatsApp bot sends, in plain words (WhatsApp formatting: *bold*, _italic_).

The verdict reads ``Report.to_dict()`` (the one JSON shape). Every check is shown with the label, orientation
(higher = more authentic) and words of ``pipeline/labels.json``, exactly like the terminal summary, the HTML report
and the web page.
"""

from __future__ import annotations

from typing import Any

from pipeline.labels import (
    BY_SLOT,
    FACE_QUALITY,
    ORIENTATION_NOTE,
    OVERALL,
    SLOT_ORDER,
    WORD_BANDS,
    overall_bands,
    verdict_words,
)
from pipeline.render import evidence_slots, span_text, suspicious_seconds
from pipeline.report import FINDING_MIN_EVIDENCE

VERDICT_HEAD = {
    "AUTHENTIC": "✅ *AUTHENTIC*",
    "SUSPICIOUS": "⚠️ *SUSPICIOUS*",
    "FAKE": "🚩 *LIKELY FAKE*",
    "NOT_APPLICABLE": "ℹ️ *CANNOT JUDGE THIS FILE*",
    "FAILED": "❌ *ANALYSIS FAILED*",
}
LOOKS_AT = {"visual": "the face in each frame", "temporal": "movement between frames", "audio": "the voice",
            "lip_sync": "lips against the voice", "mouth": "the detail of the mouth",
            "voice_change": "whether one voice speaks throughout"}
HIGH = 1.0 - WORD_BANDS[0]  # a second this suspicious is a "most suspicious moment" (shown value below the low band)
KIND_WORDS = {"video": "video", "image": "photo", "audio": "voice message"}
SUMMARY_CAPTION = "The evidence at a glance: each check's suspicion over time and the strongest sign."
DISCLAIMER = "_Automated estimate, not proof: check the source before sharing._"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


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


def detector_line(slot: str, det: dict[str, Any] | None, evidence: float | None = None) -> str:
    """One check in words. ``evidence``: the fusion's evidence from this detector (reliability × calibrated
    P(fake)); below FINDING_MIN_EVIDENCE its words are the authentic ones, whatever band the number falls in (a
    real voice note is not told its voice "may be" synthetic by a score the verdict did not count), and evidence
    that counted is never worded as authentic (it is a finding: the middle words at least)."""
    bar = BY_SLOT[slot]
    if det is None:
        return f"• {bar.label}: not run"
    status = det.get("status")
    p = det.get("calibrated") if det.get("calibrated") is not None else det.get("score")
    if status == "ok" and p is not None:
        shown = 1.0 - p
        word = bar.word(shown)
        if evidence is not None:  # the words follow what the verdict counted, like the findings do
            counted = evidence >= FINDING_MIN_EVIDENCE
            word = bar.words[1] if counted and word == bar.words[2] else bar.words[2] if not counted else word
        return f"• {bar.label}: *{pct(shown)}*, {word}"
    if status == "not_applicable":
        return f"• {bar.label}: not applicable ({det.get('reason') or 'nothing to check in ' + LOOKS_AT[slot]})"
    if status == "unavailable":
        return f"• {bar.label}: not available on this server"
    return f"• {bar.label}: could not run ({det.get('reason') or 'error'})"


def face_quality_line(q: float | None) -> str:
    if q is None:
        return f"• {FACE_QUALITY.label}: no face found"
    return f"• {FACE_QUALITY.label}: {pct(q)}, {FACE_QUALITY.word(q)}"


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
    words = verdict_words(report)
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
        bands = overall_bands(ds)
        lines.append(f"{OVERALL.label}: *{pct(OVERALL.shown(report['fake_probability']))}* "
                     f"(confidence {pct(report.get('confidence'))})" + (f"; {bands}" if bands else ""))
    media = _media_line(md)
    if media:
        lines.append(media)
    dets = ds.get("detectors") or {}
    lines += ["", f"What each check found. {ORIENTATION_NOTE.split('(')[0].strip()}:"]
    evidence = (ds.get("fusion") or {}).get("evidence") or {}
    lines += [detector_line(slot, dets.get(slot), evidence.get(slot)) for slot in SLOT_ORDER]
    lines.append(face_quality_line(ds.get("face_quality")))
    hot = []
    for slot in evidence_slots(report):
        det = dets.get(slot)
        if det and det.get("status") == "ok":
            hot += [(v, f"{BY_SLOT[slot].suspicion} at {span_text(s, e)}")
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

"""Human-readable renderings of a report: the terminal summary and a self-contained HTML page.

Both read ``Report.to_dict()`` (the one JSON shape), so what a person sees is what the API returns.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

from pipeline.labels import (
    BY_SLOT,
    COLOURS,
    FACE_QUALITY,
    FINDING_MIN_EVIDENCE,
    ORIENTATION_NOTE,
    OVERALL,
    SLOT_ORDER,
    TIMELINE_NOTE,
    VERDICT_COLOURS,
    VERDICT_WORDS,
    WEAK_EVIDENCE,
    overall_bands,
    verdict_words,
)

__all__ = ["SLOT_ORDER", "VERDICT_WORDS", "evidence_slots", "report_html", "span_text", "summary_text",
           "suspicious_seconds"]



def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.0f} %" if pct else f"{x:.2f}"


def _display_score(slot: str, d: dict[str, Any]) -> float | None:
    """The number shown for a detector: its bar value, higher = more authentic (1 − its calibrated P(fake))."""
    p = d.get("calibrated") if d.get("calibrated") is not None else d.get("score")
    return None if p is None else 1.0 - float(p)


def _overall(report: dict[str, Any], bands: bool = True) -> str:
    """The fused score in the bars' orientation, e.g. "<overall label> 31 %", with where the verdict's thresholds
    sit on that scale."""
    where = overall_bands(report.get("detector_scores") or {}) if bands else None
    return (f"{OVERALL.label} {_fmt(OVERALL.shown(report['fake_probability']), True)}"
            + (f" ({where})" if where else ""))


def shown_timeline(det: dict[str, Any]) -> list:
    """A detector's per-second scores as shown: calibrated (the scale of its bar) where stored, raw otherwise."""
    return det.get("timeline_calibrated") or det.get("timeline") or []


def span_text(start_s: float, end_s: float) -> str:
    """A stretch of time as a person reads it ("6–10 s"): whole seconds, or tenths where whole seconds would
    read as an empty span (the clip's last partial second, 9.6–10.2 s, is not "10–10 s")."""
    whole = f"{start_s:.0f}–{end_s:.0f} s"
    return whole if round(start_s) != round(end_s) else f"{start_s:.1f}–{end_s:.1f} s"


def suspicious_seconds(det: dict[str, Any], threshold: float = 0.6, top: int = 3) -> list[tuple[float, float, float]]:
    """The most suspicious seconds of one detector's timeline (start, end, score), highest first."""
    pts = [(s, e, v) for s, e, v in shown_timeline(det) if v is not None and v >= threshold]
    return sorted(pts, key=lambda p: -p[2])[:top]


def evidence_slots(report: dict[str, Any]) -> list[str]:
    """Detectors whose calibrated evidence moved this verdict: only their seconds are highlighted (a raw score of a
    detector the fusion treats as uninformative marks nothing). None for an AUTHENTIC verdict."""
    ds = report.get("detector_scores") or {}
    if report.get("verdict") not in ("FAKE", "SUSPICIOUS"):
        return []
    fusion = ds.get("fusion") or {}
    evidence = fusion.get("evidence")
    if evidence is None:  # a fusion without per-detector evidence (the seed's fixed weights): the scores of the
        weights = fusion.get("weights") or {}  # detectors it gives weight to
        evidence = {slot: d.get("calibrated") if d.get("calibrated") is not None else d.get("score")
                    for slot, d in (ds.get("detectors") or {}).items()
                    if d.get("status") == "ok" and weights.get(slot, 1.0) != 0}
    return [slot for slot, e in evidence.items() if e is not None and e >= FINDING_MIN_EVIDENCE]


def summary_text(report: dict[str, Any]) -> str:
    ds = report["detector_scores"]
    md = report["model_metadata"]
    media = md.get("media") or {}
    lines = []
    name = md.get("source_name") or "uploaded file"
    if media:
        desc = f"{media['kind']}"
        if md.get("video_duration_seconds"):
            desc += f", {md['video_duration_seconds']:.1f} s"
        if media.get("width"):
            desc += f", {media['width']}×{media['height']}"
        if media.get("fps"):
            desc += f", {media['fps']:.0f} fps"
        desc += ", with audio" if media.get("has_audio") else ", no audio"
        lines.append(f"{name} — {desc}")
    else:
        lines.append(name)
    verdict = report["verdict"]
    lines.append("")
    head = f"VERDICT: {verdict}"
    if report.get("fake_probability") is not None:
        head += f"   {_overall(report, bands=False)}   confidence {_fmt(report['confidence'], True)}"
    lines.append(head)
    lines.append(f"  {verdict_words(report)}" + (f": {report['reason']}" if report.get("reason") else ""))
    lines += [f"  • {f}" for f in ds.get("findings") or [] if f != report.get("reason")]
    if (ds.get("benchmark") or {}).get("sentence"):
        lines.append(f"  {ds['benchmark']['sentence']}")
    if report.get("fake_probability") is not None and (bands := overall_bands(ds)):
        lines.append(f"  {OVERALL.label}: {bands}.")
    if ds.get("partial"):
        lines.append("  PARTIAL RESULT: detectors this file needed are not available on this installation, so the "
                     "verdict rests on the others:")
        lines += [f"    - {m}" for m in ds.get("missing_detectors", [])]
    lines.append("")
    lines.append(f"  {ORIENTATION_NOTE}")
    lines.append(f"  {'check':<22} {'score':>8}  {'status':<15} model / reason")
    for slot in SLOT_ORDER:
        d = ds["detectors"].get(slot)
        if not d:
            continue
        score = _display_score(slot, d)
        note = d["model"] if d["status"] == "ok" else (d.get("reason") or "")
        lines.append(f"  {BY_SLOT[slot].label:<22} {_fmt(score, True):>8}  {d['status']:<15} {note}")
    lines.append(f"  {FACE_QUALITY.label:<22} {_fmt(ds.get('face_quality'), True):>8}")
    lines.append("")
    hot = []
    for slot in evidence_slots(report):
        d = ds["detectors"].get(slot)
        if d and d["status"] == "ok":
            for s, e, v in suspicious_seconds(d):
                hot.append(f"{BY_SLOT[slot].suspicion} {span_text(s, e)} ({v:.0%} suspicious)")
    if hot:
        lines.append("Most suspicious seconds (detectors that moved the verdict): " + ", ".join(hot))
    for t in ds.get("tracks", []):
        tag = " (main)" if t["is_main"] else ""
        spk = {True: ", speaking", False: ", not speaking"}.get(t.get("is_speaker"), "")
        lines.append(
            f"Face {t['track_id']}{tag}: {t['frames']} frames, {t['start_s']:.1f}–{t['end_s']:.1f} s, "
            f"{t['mean_face_size_px']:.0f} px, quality {_fmt(t['quality'])}, "
            f"raw face-check suspicion (uncalibrated) {_fmt(t['visual_score'])}"
            f"{spk}"
        )
    fusion = ds.get("fusion", {})
    if fusion:
        lines.append(f"Fusion: {fusion.get('method')}" + (f" — {fusion['note']}" if fusion.get("note") else ""))
    stages = ", ".join(f"{k} {v:.1f}" for k, v in (md.get("stage_seconds") or {}).items() if v and v >= 0.05)
    lines.append(f"Time: {md.get('processing_time_seconds', 0):.1f} s on {md.get('device')} ({stages})")
    for w in md.get("warnings") or []:
        lines.append(f"Warning: {w}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------
def _timeline_svg(det: dict[str, Any], duration: float, colour: str, width: int = 640, height: int = 90) -> str:
    pts = shown_timeline(det)
    if not pts:
        return '<div class="muted">no timeline</div>'
    dur = max(duration or 0.0, max(e for _, e, _ in pts), 1.0)
    pad_l, pad_r, pad_b = 30, 14, 16
    w, h = width - pad_l - pad_r, height - pad_b
    bars = []
    for s, e, v in pts:
        x = pad_l + w * s / dur
        bw = max(1.0, w * (e - s) / dur - 1)
        bh = h * (v or 0.0)
        bars.append(f'<rect x="{x:.1f}" y="{h - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{colour}" '
                    f'opacity="{0.35 + 0.65 * (v or 0):.2f}"><title>{span_text(s, e)}: {v:.2f}</title></rect>')
    ticks = []
    step = max(1, math.ceil(dur / 10))
    for t in range(0, int(dur) + 1, step):
        x = pad_l + w * t / dur
        ticks.append(f'<text x="{x:.1f}" y="{height - 3}" font-size="10" text-anchor="middle">{t}s</text>')
    grid = "".join(
        f'<line x1="{pad_l}" x2="{width}" y1="{h * (1 - g):.1f}" y2="{h * (1 - g):.1f}" stroke="#ddd"/>'
        f'<text x="{pad_l - 4}" y="{h * (1 - g) + 3:.1f}" font-size="9" text-anchor="end">{g:.1f}</text>'
        for g in (0.0, 0.5, 1.0)
    )
    return (f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{html.escape(det["label"])}: suspicion per second">'
            f'{grid}{"".join(bars)}{"".join(ticks)}</svg>')


def _figures_html(report: dict[str, Any], figures: dict[str, bytes] | None) -> str:
    """The evidence pictures as data URIs (the page stays one self-contained file), in the report's order."""
    if not figures:
        return ""
    e = html.escape
    out = []
    for f in report["detector_scores"].get("figures") or []:
        png = figures.get(f["name"])
        if png is None or f["name"] == "summary":  # the summary repeats this page: it is for WhatsApp
            continue
        src = "data:image/png;base64," + base64.b64encode(png).decode()
        out.append(f'<figure class="evidence" data-figure="{e(f["name"])}"><img alt="{e(f["title"])}" src="{src}">'
                   f'<figcaption><b>{e(f["title"])}</b>: {e(f["caption"])}</figcaption></figure>')
    return "<h2>Evidence</h2>" + "".join(out) if out else ""


def _credentials_html(ds: dict[str, Any]) -> str:
    cc = ds.get("content_credentials")
    if not cc or cc.get("state") in (None, "unsupported"):
        return ""
    e = html.escape
    if cc["state"] == "absent":
        body = ("No Content Credentials (C2PA) in this file. Most phone and messenger files carry none: this is not "
                "evidence either way.")
    elif cc["state"] == "error":
        body = f"Content Credentials could not be read: {cc.get('reason') or ''}"
    else:
        rows = [("state", {"trusted": "valid, signer trusted", "valid": "valid (signer not on a trust list)",
                           "invalid": "does NOT validate"}.get(cc["state"], cc["state"])),
                ("signed by", cc.get("signer")), ("made with", cc.get("claim_generator")),
                ("declares", cc.get("ai_declared") or "no AI generation"),
                ("source type", cc.get("digital_source_type")), ("actions", ", ".join(cc.get("actions") or [])),
                ("problems", cc.get("reason"))]
        body = (f"<p>{e(cc.get('sentence') or '')}</p><table class='cc'>"
                + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows if v) + "</table>")
    return f'<h2>Content Credentials</h2><section class="credentials" data-state="{e(cc["state"])}">{body}</section>'


def report_html(report: dict[str, Any], figures: dict[str, bytes] | None = None) -> str:
    ds = report["detector_scores"]
    md = report["model_metadata"]
    verdict = report["verdict"]
    e = html.escape
    partial = ""
    if ds.get("partial"):
        partial = ('<p class="partial"><b>PARTIAL RESULT</b>: detectors this file needed are not available on this '
                   "installation: " + "; ".join(e(m) for m in ds.get("missing_detectors", [])) + "</p>")
    duration = md.get("video_duration_seconds") or 0.0
    rows = []
    for slot in SLOT_ORDER:
        d = ds["detectors"].get(slot)
        if not d:
            continue
        score = _display_score(slot, d)
        colour = COLOURS[slot]
        if d["status"] == "ok" and score is not None:
            bar = (f'<div class="bar"><div class="fill" style="width:{100 * score:.1f}%;background:{colour}"></div>'
                   f'</div><span class="num">{score:.0%}</span>')
            ev = (ds.get("fusion") or {}).get("evidence", {}).get(slot)
            weak = isinstance(ev, int | float) and ev < FINDING_MIN_EVIDENCE
            body = (f'<div class="muted">{e(WEAK_EVIDENCE)}</div>' if weak else "") + _timeline_svg(
                d, duration, "#9ca3af" if weak else colour)
            extra = ", ".join(f"{k}: {v}" for k, v in d.items()
                              if k not in {"key", "label", "model", "status", "reason", "score", "calibrated",
                                           "timeline", "timeline_calibrated"} and v is not None)
        else:
            bar = f'<span class="status">{e(d["status"].replace("_", " "))}</span>'
            body = f'<div class="reason">{e(d.get("reason") or "")}</div>'
            extra = ""
        rows.append(
            f'<section class="det" data-slot="{slot}"><h3><span class="dot" style="background:{colour}"></span>'
            f'{e(BY_SLOT[slot].label)} <small>{e(d["model"])}</small></h3>{bar}'
            f'<div class="muted">{e(BY_SLOT[slot].hint)}</div>{body}'
            f'<div class="muted">{e(extra)}</div></section>'
        )
    fq = ds.get("face_quality")
    fq_html = (f'<div class="bar"><div class="fill" style="width:{100 * fq:.1f}%;background:{COLOURS["face_quality"]}">'
               f'</div></div><span class="num">{fq:.0%}</span>') if fq is not None else '<span class="status">—</span>'
    faces = []
    for t in ds.get("tracks", []):
        img = (f'<img alt="face {t["track_id"]}" src="data:image/jpeg;base64,{t["thumbnail_jpeg_b64"]}">'
               if t.get("thumbnail_jpeg_b64") else "")
        faces.append(
            f'<figure class="face">{img}<figcaption>face {t["track_id"]}{" (main)" if t["is_main"] else ""}<br>'
            f'{t["start_s"]:.1f}–{t["end_s"]:.1f} s, {t["frames"]} frames<br>'
            f'raw face-check suspicion (uncalibrated) {_fmt(t["visual_score"])}'
            f'<br>quality {_fmt(t["quality"])}</figcaption></figure>'
        )
    models = "".join(
        f"<li>{e(m['slot'])}: {e(m['name'])} — <code>{e(m['file'])}</code> "
        f"<code title='sha256'>{e((m['sha256'] or '')[:16])}…</code></li>"
        for m in md.get("models_used", [])
    )
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in (md.get("stage_seconds") or {}).items())
    found = [f for f in ds.get("findings") or [] if f != report.get("reason")]
    findings = ('<h2>Why</h2><ul class="findings">' + "".join(f"<li>{e(f)}</li>" for f in found) + "</ul>"
                if found else "")
    if (ds.get("benchmark") or {}).get("sentence"):
        findings += f'<p class="benchmark">{e(ds["benchmark"]["sentence"])}</p>'
    fp = report.get("fake_probability")
    head = f"{_overall(report)} · confidence {_fmt(report['confidence'], True)}" if fp is not None else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Deepfake report — {e(md.get('source_name') or '')}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:760px;color:#111}}
.verdict{{padding:14px 18px;border-radius:8px;color:#fff;background:{VERDICT_COLOURS.get(verdict, '#555')}}}
.verdict h1{{margin:0;font-size:24px}} .verdict p{{margin:4px 0 0}}
.det{{border-bottom:1px solid #eee;padding:10px 0}} .det h3{{margin:0 0 6px;font-size:15px}}
.det small{{color:#666;font-weight:normal}}
.dot{{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:6px}}
.bar{{display:inline-block;width:300px;height:12px;background:#f1f1f1;border-radius:6px;vertical-align:middle;
overflow:hidden}}
.fill{{height:100%}} .num{{margin-left:8px;font-weight:600}}
.status{{color:#666;text-transform:uppercase;font-size:12px}}
.reason{{color:#555;font-style:italic}} .muted{{color:#777;font-size:12px}}
.faces{{display:flex;flex-wrap:wrap;gap:12px}} .face{{margin:0;font-size:12px;text-align:center}}
.face img{{width:96px;height:96px;border-radius:6px;display:block;margin:auto}}
.evidence{{margin:10px 0}} .evidence img{{max-width:100%;border:1px solid #eee;border-radius:6px}}
.evidence figcaption{{font-size:12px;color:#444}} .cc th{{text-align:left;padding-right:12px;color:#555}}
</style></head><body>
<div class="verdict"><h1>{e(verdict.replace('_', ' '))}</h1><p>{e(head)}</p>
<p>{e(verdict_words(report))}{(': ' + e(report['reason'])) if report.get('reason') else ''}</p>{partial}</div>
{findings}
{_figures_html(report, figures)}
{_credentials_html(ds)}
<h2>Detectors</h2><p class="muted">{e(ORIENTATION_NOTE)} {e(TIMELINE_NOTE)}</p>{''.join(rows)}
<section class="det" data-slot="face_quality"><h3><span class="dot" style="background:{COLOURS['face_quality']}">
</span>{e(FACE_QUALITY.label)}</h3>{fq_html}<div class="muted">{e(FACE_QUALITY.hint)}</div></section>
<h2>Faces</h2><div class="faces">{''.join(faces) or '<p class="muted">no face found</p>'}</div>
<h2>Details</h2><ul><li>file: {e(md.get('source_name') or '')}, {e(str(md.get('video_duration_seconds')))} s</li>
<li>fusion: {e(ds.get('fusion', {}).get('method', ''))} {e(ds.get('fusion', {}).get('note') or '')}</li>
<li>processing: {md.get('processing_time_seconds')} s on {e(str(md.get('device')))} ({e(stages)})</li>
<li>frames analysed: {md.get('frames_analyzed')}</li>{models}</ul>
</body></html>
"""

"""Findings: the evidence behind a verdict in plain words, shown first everywhere, and only from evidence that moved
the verdict (a detector the fusion treats as uninformative highlights nothing)."""

from __future__ import annotations

import pytest

from pipeline.render import report_html, summary_text
from pipeline.report import (
    SLOTS,
    DetectorResult,
    Fusion,
    MediaSummary,
    Report,
    Status,
    TimelinePoint,
    TrackResult,
    Verdict,
)
from whatsapp.messages import verdict_text


def _timeline(values):
    return tuple(TimelinePoint(float(s), float(s + 1), v) for s, v in enumerate(values))


def _report(verdict: Verdict, dets, evidence=(), p=0.9, tracks=()) -> Report:
    fusion = Fusion("evidence-noisy-or", p, 0.5, (0.2, 0.8), tuple((s, 0.9) for s in SLOTS), None, (), evidence)
    return Report(verdict, None, fusion, tuple(dets), tuple(tracks), 0.9,
                  MediaSummary("video", 10.0, 640, 360, 25.0, True, True, 0, "mp4", "h264", "aac", 1, "ab" * 32),
                  (), "cpu", (("decode", 0.1),), 10, "clip.mp4", "2026-12-05T00:00:00+00:00")


def _dubbed() -> Report:
    dets = (
        DetectorResult("visual", "mesonet", Status.OK, score=0.2, calibrated=0.1, timeline=_timeline([1.0] * 10)),
        DetectorResult("temporal", "lrasd_temporal", Status.OK, score=0.3, calibrated=0.1),
        DetectorResult("audio", "aasist", Status.OK, score=0.4, calibrated=0.2),
        DetectorResult("lip_sync", "sync", Status.OK, score=0.8, calibrated=0.95,
                       timeline=_timeline([0.2, 0.2, 0.2, 0.9, 0.95, 0.9, 0.9, 0.2, 0.2, 0.2]),
                       extras=(("offset_s", -0.6),)),
    )
    return _report(Verdict.FAKE, dets, (("lip_sync", 0.9), ("audio", 0.15), ("visual", 0.05), ("temporal", 0.05)))


def test_the_detector_that_drove_a_fake_verdict_is_named_with_its_offset_and_interval():
    found = _dubbed().findings
    assert found == ("lips and voice do not match (they are 0.6 s apart) from 3 s to 7 s",)
    assert _dubbed().detector_scores()["findings"] == list(found)


def test_findings_come_first_on_every_surface():
    d = _dubbed().to_dict()
    text = summary_text(d)
    assert text.index("lips and voice do not match") < text.index("detector")
    html = report_html(d)
    assert html.index("lips and voice do not match") < html.index("<h2>Detectors</h2>")
    wa = verdict_text(d)
    assert wa.splitlines()[1].startswith("• Lips and voice do not match")


def test_raw_seconds_of_a_detector_that_did_not_move_the_verdict_are_not_highlighted():
    text = summary_text(_dubbed().to_dict())
    hot = next(line for line in text.splitlines() if line.startswith("Most suspicious seconds"))
    assert "lip-sync mismatch" in hot and "visual" not in hot  # visual's raw timeline is all 1.0, its evidence 0.05
    dets = (DetectorResult("visual", "mesonet", Status.OK, score=1.0, calibrated=0.05, timeline=_timeline([1.0] * 4)),)
    clean = _report(Verdict.AUTHENTIC, dets, (("visual", 0.04),), p=0.05).to_dict()
    assert "Most suspicious" not in summary_text(clean) and "Most suspicious" not in verdict_text(clean)


@pytest.mark.parametrize("with_evidence", [True, False])
def test_most_suspicious_seconds_never_cite_a_detector_whose_calibrated_weight_is_zero(with_evidence):
    """With the noisy-OR's per-detector evidence, and with a fusion that only reports weights (the seed's
    fixed weights): a weight-0 detector with a timeline at 1.0 is named nowhere."""
    dets = (
        DetectorResult("visual", "mesonet", Status.OK, score=1.0, calibrated=1.0, timeline=_timeline([1.0] * 10)),
        DetectorResult("lip_sync", "sync", Status.OK, score=0.9, calibrated=0.9, timeline=_timeline([0.9] * 10)),
    )
    weights = (("visual", 0.0), ("lip_sync", 1.0))
    evidence = (("lip_sync", 0.9), ("visual", 0.0)) if with_evidence else ()
    fusion = Fusion("evidence-noisy-or" if with_evidence else "seed-fixed-weights", 0.9, 0.5, (0.2, 0.8), weights,
                    None, (), evidence)
    r = _report(Verdict.FAKE, dets)
    d = Report(r.verdict, None, fusion, dets, (), 0.9, r.media, (), "cpu", (), 10).to_dict()
    for text in (summary_text(d), verdict_text(d)):
        hot = next(line for line in text.splitlines() if line.startswith("Most suspicious"))
        assert "lip-sync mismatch" in hot and "visual" not in hot
    assert not any("face" in f for f in d["detector_scores"]["findings"])


def test_evidence_below_even_odds_is_worded_as_some_signs_not_the_marks():
    """The words never claim more than the bar: a voice check at calibrated 34 % (bar: 66 % authentic) whose
    evidence still counted is "some marks of synthetic speech"."""
    dets = (DetectorResult("visual", "mesonet", Status.OK, score=0.9, calibrated=0.8),
            DetectorResult("audio", "aasist", Status.OK, score=0.5, calibrated=0.34))
    found = _report(Verdict.SUSPICIOUS, dets, (("visual", 0.46), ("audio", 0.29)), p=0.7).findings
    assert found == ("the face shows forgery traces", "the voice shows some marks of synthetic speech")


def test_authentic_says_what_ran_and_what_could_not():
    dets = (
        DetectorResult("visual", "mesonet", Status.OK, score=0.1, calibrated=0.05),
        DetectorResult("temporal", "lrasd_temporal", Status.OK, score=0.1, calibrated=0.05),
        DetectorResult("audio", "aasist", Status.NOT_APPLICABLE, reason="no speech detected in the audio"),
        DetectorResult("lip_sync", "sync", Status.NOT_APPLICABLE, reason="no speech to compare the lips with"),
    )
    found = _report(Verdict.AUTHENTIC, dets, (("visual", 0.04), ("temporal", 0.04)), p=0.08).findings
    assert found[0] == ("none of the checks that ran (visual quality, temporal consistency) "
                        "found a sign of manipulation")
    assert "no speech, so the voice checks could not run" in found
    assert "no speech, so lips and voice could not be compared" in found


def test_a_voice_note_is_not_told_it_has_no_sound():
    # an audio file: the face checks and lip sync do not apply because there is no picture, not for lack of sound
    dets = (
        DetectorResult("visual", "mesonet", Status.NOT_APPLICABLE, reason="no video stream (audio only)"),
        DetectorResult("temporal", "lrasd_temporal", Status.NOT_APPLICABLE, reason="no video stream (audio only)"),
        DetectorResult("audio", "aasist", Status.OK, score=0.3, calibrated=0.1),
        DetectorResult("lip_sync", "sync", Status.NOT_APPLICABLE, reason="no video stream (audio only)"),
    )
    found = _report(Verdict.AUTHENTIC, dets, (("audio", 0.09),), p=0.1).findings
    assert found == ("none of the checks that ran (audio authenticity) found a sign of manipulation",)
    photo = (
        DetectorResult("visual", "mesonet", Status.OK, score=0.1, calibrated=0.05),
        DetectorResult("temporal", "lrasd_temporal", Status.NOT_APPLICABLE, reason="a still image has no motion"),
        DetectorResult("audio", "aasist", Status.NOT_APPLICABLE, reason="a still image has no audio"),
        DetectorResult("lip_sync", "sync", Status.NOT_APPLICABLE, reason="needs a video with sound"),
    )
    assert not any("no sound" in f for f in _report(Verdict.AUTHENTIC, photo, (("visual", 0.04),), p=0.1).findings)


def test_visual_finding_counts_suspicious_frames_of_the_main_face():
    track = TrackResult(0, True, True, 16, 0.0, 9.0, 120.0, 0.9, 0.8,
                        frame_scores=tuple([0.9] * 12 + [0.1] * 4))
    dets = (DetectorResult("visual", "mesonet", Status.OK, score=0.8, calibrated=0.9),)
    found = _report(Verdict.FAKE, dets, (("visual", 0.85),), tracks=(track,)).findings
    assert found == ("the face shows forgery traces in 12 of 16 sampled frames",)


def test_several_weak_signals_are_described_as_such():
    dets = (DetectorResult("visual", "mesonet", Status.OK, score=0.5, calibrated=0.2),
            DetectorResult("audio", "aasist", Status.OK, score=0.5, calibrated=0.2))
    found = _report(Verdict.SUSPICIOUS, dets, (("visual", 0.18), ("audio", 0.17)), p=0.4).findings
    assert found[0].startswith("no single check is confident")


def test_confidence_is_capped_by_the_measured_rates_and_the_rates_are_shown():
    from pipeline.fusion import Calibrator, FusionModel, fuse

    ids = {"lip_sync": ("sync", "s")}
    metrics = {"by_kind": {"video": {"real_called_fake": 0.02, "real_called_authentic": 0.8,
                                     "fake_called_fake": 0.3, "fake_called_authentic": 0.4}}}
    model = FusionModel({"sync": Calibrator("platt", 1.0, 0.0, reliability=0.99)}, 0.0, {}, thresholds=(0.2, 0.8),
                        metrics=metrics, combiner="noisy-or")
    fake, _, v = fuse({"lip_sync": 0.999}, model, detectors=ids, applicable=("lip_sync",), kind="video")
    assert v is Verdict.FAKE and fake.confidence == pytest.approx(0.3 / 0.32)  # not "100 %"
    clean, _, v = fuse({"lip_sync": 0.001}, model, detectors=ids, applicable=("lip_sync",), kind="video")
    assert v is Verdict.AUTHENTIC and clean.confidence == pytest.approx(0.8 / 1.2)
    dets = (DetectorResult("lip_sync", "sync", Status.OK, score=0.001, calibrated=0.001),)
    report = _report(Verdict.AUTHENTIC, dets, clean.evidence, p=clean.fake_probability)
    report = Report(**{**report.__dict__, "fusion": clean})
    d = report.to_dict()
    sentence = d["detector_scores"]["benchmark"]["sentence"]
    assert "2% of real videos were wrongly called FAKE" in sentence and "40% of fake videos passed" in sentence
    assert sentence in summary_text(d) and sentence in verdict_text(d) and sentence in report_html(d)


def test_an_authentic_verdict_does_not_hide_a_detector_that_leaned_fake():
    dets = (DetectorResult("visual", "mesonet", Status.OK, score=0.1, calibrated=0.05),
            DetectorResult("audio", "aasist", Status.OK, score=0.8, calibrated=0.7,
                           timeline=_timeline([0.9, 0.9, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])))
    found = _report(Verdict.AUTHENTIC, dets, (("audio", 0.6), ("visual", 0.03)), p=0.6).findings
    assert found[0] == "the visual quality check found no sign of manipulation"
    assert found[1] == ("the voice has the marks of synthetic speech from 0 s to 2 s, but not strongly enough to "
                        "doubt the clip")


def test_a_voice_score_the_verdict_did_not_count_is_not_worded_as_synthetic():
    """A real voice note whose calibrated score lands in the middle band (bar 55 %) but whose evidence is below
    what counts: the WhatsApp words say the voice sounds natural; with counted evidence they say "may be"."""
    from whatsapp.messages import detector_line

    det = {"status": "ok", "score": 0.5, "calibrated": 0.45}
    assert detector_line("audio", det, evidence=0.1) == "• Audio Authenticity: *55 %*, voice sounds natural"
    assert detector_line("audio", det, evidence=0.4) == "• Audio Authenticity: *55 %*, voice may be synthetic"
    assert detector_line("audio", det) == "• Audio Authenticity: *55 %*, voice may be synthetic"  # no fusion info
    # counted evidence at a bar of 66 % (a finding names it): never "sounds natural" beside that finding
    low = {"status": "ok", "score": 0.4, "calibrated": 0.34}
    assert detector_line("audio", low, evidence=0.29) == "• Audio Authenticity: *66 %*, voice may be synthetic"
    assert detector_line("audio", low, evidence=0.2) == "• Audio Authenticity: *66 %*, voice sounds natural"


@pytest.mark.parametrize(("verdict", "p", "said"), [
    (Verdict.FAKE, 0.81, "where it would read SUSPICIOUS (20%)"),  # just over the FAKE line (0.8)
    (Verdict.SUSPICIOUS, 0.79, "where it would read FAKE (20%)"),
    (Verdict.SUSPICIOUS, 0.21, "where it would read AUTHENTIC (80%)"),
    (Verdict.AUTHENTIC, 0.19, "where it would read SUSPICIOUS (80%)"),
])
def test_a_call_at_a_verdict_line_says_it_is_borderline_on_every_surface(verdict, p, said):
    dets = _dubbed().detectors
    r = _report(verdict, dets, (("lip_sync", 0.9),), p=p)
    note = r.findings[-1]
    assert note.startswith("a borderline call: Overall Authenticity") and said in note
    assert note[note.index("Authenticity") + 13:].startswith(f"{1 - p:.0%}")
    d = r.to_dict()
    assert "borderline call" in summary_text(d) and "borderline call" in report_html(d)
    assert "• A borderline call" in verdict_text(d)


@pytest.mark.parametrize("p", [0.5, 0.95, 0.05, 0.77, 0.23])
def test_a_clear_call_carries_no_borderline_note(p):
    verdict = Verdict.FAKE if p >= 0.8 else Verdict.AUTHENTIC if p < 0.2 else Verdict.SUSPICIOUS
    assert not [f for f in _report(verdict, _dubbed().detectors, (("lip_sync", 0.9),), p=p).findings
                if "borderline" in f]


def test_the_mouth_check_is_named_when_it_drove_the_verdict_and_folded_into_the_face_checks_when_no_face():
    dets = (
        DetectorResult("visual", "mesonet", Status.OK, score=0.3, calibrated=0.2),
        DetectorResult("temporal", "lrasd_temporal", Status.OK, score=0.3, calibrated=0.2),
        DetectorResult("audio", "aasist", Status.OK, score=0.2, calibrated=0.1),
        DetectorResult("lip_sync", "sync", Status.OK, score=0.2, calibrated=0.1),
        DetectorResult("mouth", "mouth_blur", Status.OK, score=0.97, calibrated=0.9),
    )
    found = _report(Verdict.SUSPICIOUS, dets, (("mouth", 0.75), ("visual", 0.1)), p=0.6).findings
    assert found[0] == "the mouth is blurred the way lip-sync generators repaint it"
    faceless = (
        DetectorResult("visual", "mesonet", Status.NOT_APPLICABLE, reason="no face found in 20 sampled frame(s)"),
        DetectorResult("temporal", "lrasd_temporal", Status.NOT_APPLICABLE, reason="no face found"),
        DetectorResult("audio", "aasist", Status.OK, score=0.1, calibrated=0.05),
        DetectorResult("lip_sync", "sync", Status.NOT_APPLICABLE, reason="no face to read the lips of"),
        DetectorResult("mouth", "mouth_blur", Status.NOT_APPLICABLE, reason="no face found in 20 sampled frame(s)"),
    )
    found = _report(Verdict.AUTHENTIC, faceless, (("audio", 0.04),), p=0.1).findings
    # one line for the one missing face (three would push every other finding out), the mouth among the face checks
    assert found == ("none of the checks that ran (audio authenticity) found a sign of manipulation",
                     "no usable face, so the visual quality, temporal consistency and lip sync checks could not run")
    one = (faceless[0], DetectorResult("temporal", "lrasd_temporal", Status.OK, score=0.1, calibrated=0.05),
           faceless[2], DetectorResult("lip_sync", "sync", Status.OK, score=0.1, calibrated=0.05))
    assert "no usable face, so the face checks could not run" in _report(Verdict.AUTHENTIC, one, p=0.1).findings


def test_a_stretch_of_time_never_reads_as_an_empty_span():
    from pipeline.render import span_text

    assert span_text(6.0, 10.0) == "6–10 s"
    assert span_text(1.4, 2.6) == "1–3 s"
    # the clip's last partial second: whole seconds would say "10–10 s"
    assert span_text(9.6, 10.2) == "9.6–10.2 s"
    assert span_text(10.0, 10.3) == "10.0–10.3 s"

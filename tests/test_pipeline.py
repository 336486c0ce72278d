"""The whole pipeline on real files: what applies to which input, and never a verdict without evidence."""

from __future__ import annotations

import numpy as np
import pytest
from media_factory import ffmpeg, tone, write_audio, write_video

import pipeline
from pipeline import fusion
from pipeline.core import Components, Slot
from pipeline.report import AUDIO, LIP_SYNC, SEED_KEYS, TEMPORAL, VISUAL, VOICE_CHANGE, Status, Verdict
from pipeline.settings import Settings

TALKING = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"
SPEECH = "C_audio/tortoise_real_voices/tortoise__voices__daniel__2.flac"
FACE_IMAGE = "D_image/deepface_real/tests__unit__dataset__img1.jpg"


@pytest.fixture(scope="module")
def pipe():
    return pipeline.build(Settings(device="cpu"))


def test_build_loads_the_embedded_detectors(pipe):
    status = pipe.status()
    for slot in ("faces", "visual", "audio", "speaker"):
        assert status[slot]["available"], status[slot]
    # no fine-tuned VideoMAE exists here: unavailable, with the reason, never a number
    assert not status["temporal"]["available"] or status["temporal"]["model"] != "videomae:none"


def test_talking_head_video_gets_every_applicable_score(pipe, dev_data):
    stages = []
    rep = pipe.run(dev_data / TALKING, progress=lambda s, f: stages.append((s, f)))
    assert rep.verdict in (Verdict.AUTHENTIC, Verdict.SUSPICIOUS, Verdict.FAKE)
    assert 0.0 <= rep.fake_probability <= 1.0 and 0.0 <= rep.confidence <= 1.0
    vis, aud = rep.detector(VISUAL), rep.detector(AUDIO)
    assert vis.status is Status.OK and 0 <= vis.score <= 1 and vis.timeline
    assert aud.status is Status.OK and 0 <= aud.score <= 1 and aud.timeline
    assert rep.tracks and rep.tracks[0].is_main and rep.tracks[0].thumbnail_jpeg_b64
    assert 0 < rep.face_quality <= 1
    # progress went through the stages in order and ended at 1.0
    names = [s for s, _ in stages]
    assert names[0] == "probe" and names[-1] == "done" and stages[-1][1] == 1.0
    assert [f for _, f in stages] == sorted(f for _, f in stages)
    md = rep.model_metadata()
    assert md["frames_analyzed"] > 0 and md["video_duration_seconds"] == pytest.approx(5.2, abs=0.3)
    assert {m["slot"] for m in md["models_used"]} >= {"faces", "visual", "audio"}
    assert all(len(m["sha256"]) == 64 for m in md["models_used"])
    assert set(md["processing_time_seconds"] and md["stage_seconds"]) >= {"decode", "faces", "visual", "audio"}


def test_detector_scores_have_the_seed_keys_and_nulls(pipe, dev_data):
    ds = pipe.run(dev_data / TALKING).detector_scores()
    seed = ["face_quality", "visual_artifacts", "temporal_consistency", "audio_synthesis", "lip_sync_error",
            "final_weighted_score"]
    assert list(ds)[:6] == seed
    assert ds["final_weighted_score"] == ds["fake_probability"]
    det = ds["detectors"]
    for slot, key in SEED_KEYS.items():
        if det[slot]["status"] != "ok":
            assert ds[key] is None, key  # a detector that did not run is null, not a number
            assert det[slot]["reason"]
        else:
            assert 0.0 <= ds[key] <= 1.0


def test_no_face_video_is_not_applicable(pipe, tmp_path):
    path = tmp_path / "pattern.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
           "-t", "3", "-c:v", "libx264", "-c:a", "aac", "-shortest", str(path))
    rep = pipe.run(path)
    assert rep.verdict is Verdict.NOT_APPLICABLE
    assert "no face found" in rep.reason and rep.fake_probability is None
    assert rep.detector(VISUAL).status is Status.NOT_APPLICABLE
    assert rep.detector(AUDIO).status is Status.NOT_APPLICABLE and "speech" in rep.detector(AUDIO).reason
    assert rep.detector_scores()["final_weighted_score"] is None


def test_video_without_audio_scores_from_the_rest(pipe, dev_data, tmp_path):
    mute = tmp_path / "mute.mp4"
    ffmpeg("-i", str(dev_data / TALKING), "-an", "-c:v", "copy", str(mute))
    rep = pipe.run(mute)
    ds = rep.detector_scores()
    assert ds["audio_synthesis"] is None and ds["lip_sync_error"] is None
    assert rep.detector(AUDIO).reason == "no audio track" and rep.detector(LIP_SYNC).reason == "no audio track"
    assert rep.detector(VISUAL).status is Status.OK
    assert rep.verdict in (Verdict.AUTHENTIC, Verdict.SUSPICIOUS, Verdict.FAKE)


def test_audio_only_file_runs_only_the_audio_detector(pipe, dev_data):
    rep = pipe.run(dev_data / SPEECH)
    assert rep.detector(AUDIO).status is Status.OK
    for slot in (VISUAL, TEMPORAL, LIP_SYNC):
        assert rep.detector(slot).status in (Status.NOT_APPLICABLE, Status.UNAVAILABLE)
    assert rep.detector(VISUAL).reason == "no video stream (audio only)"
    assert rep.media.kind == "audio" and rep.face_quality is None and rep.tracks == ()
    assert rep.verdict in (Verdict.AUTHENTIC, Verdict.SUSPICIOUS, Verdict.FAKE)


def test_audio_window_overlap_setting_scores_fewer_windows(pipe, dev_data):
    base = pipe.run(dev_data / SPEECH).detector(AUDIO)
    lean = pipeline.build(Settings(device="cpu", audio_window_overlap=0.0), pipe.c).run(dev_data / SPEECH)
    lean = lean.detector(AUDIO)
    n_base, n_lean = dict(base.extras)["windows"], dict(lean.extras)["windows"]
    assert n_base >= 3 and n_lean < n_base and abs(lean.score - base.score) < 0.2
    assert pipeline.build(Settings(device="cpu", audio_window_overlap=0.0), pipe.c).fingerprint() != pipe.fingerprint()


def test_image_runs_only_the_spatial_detector(pipe, dev_data):
    rep = pipe.run(dev_data / FACE_IMAGE)
    assert rep.media.kind == "image"
    assert rep.detector(VISUAL).status is Status.OK
    assert rep.detector(AUDIO).status is Status.NOT_APPLICABLE
    assert rep.detector(LIP_SYNC).status is Status.NOT_APPLICABLE
    assert rep.detector(TEMPORAL).status in (Status.NOT_APPLICABLE, Status.UNAVAILABLE)
    assert len(rep.tracks) >= 1


def test_bad_media_fails_with_the_reason(pipe, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"definitely not a video" * 100)
    rep = pipe.run(bad)
    assert rep.verdict is Verdict.FAILED and "not_media" in rep.reason
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert pipe.run(empty).verdict is Verdict.FAILED
    assert pipe.run(b"").verdict is Verdict.FAILED  # bytes input takes the same path


def test_bytes_input_gives_the_same_report(pipe, dev_data):
    a = pipe.run(dev_data / TALKING).detector_scores()
    b = pipe.run((dev_data / TALKING).read_bytes(), source_name="x.mp4").detector_scores()
    for key in ("visual_artifacts", "audio_synthesis", "final_weighted_score"):
        assert a[key] == b[key]


def test_all_detectors_unavailable_is_never_authentic(tmp_path, dev_data):
    def gone(slot: str) -> Slot:
        return Slot(slot, f"{slot}-model", None, f"weights for {slot} not found")

    comps = Components(face=gone("faces"), visual=gone(VISUAL), temporal=gone(TEMPORAL), audio=gone(AUDIO),
                       speaker=gone("speaker"), sync=gone(LIP_SYNC), fusion_model=None, voice=gone(VOICE_CHANGE))
    p = pipeline.build(Settings(device="cpu"), components=comps)
    rep = p.run(dev_data / TALKING)
    assert rep.verdict is Verdict.NOT_APPLICABLE
    assert rep.fake_probability is None and "not found" in rep.reason
    assert all(d.status is Status.UNAVAILABLE or d.status is Status.NOT_APPLICABLE for d in rep.detectors)
    assert rep.detector(AUDIO).status is Status.UNAVAILABLE and "weights for audio" in rep.detector(AUDIO).reason


def test_a_crashing_detector_is_reported_not_fatal(dev_data):
    class Boom:
        name, input_size, window_samples, sample_rate = "boom", 256, 64600, 16000

        def predict(self, batch):
            raise RuntimeError("kaput")

    real = pipeline.build(Settings(device="cpu"))
    comps = real.c
    comps_boom = Components(face=comps.face, visual=Slot(VISUAL, "boom", Boom()), temporal=comps.temporal,
                            audio=comps.audio, speaker=comps.speaker, sync=comps.sync, fusion_model=None)
    rep = pipeline.build(Settings(device="cpu"), components=comps_boom).run(dev_data / TALKING)
    vis = rep.detector(VISUAL)
    assert vis.status is Status.FAILED and "kaput" in vis.reason and vis.score is None
    assert rep.detector(AUDIO).status is Status.OK  # the others still ran
    assert rep.verdict is not Verdict.FAILED


def test_short_silent_audio_file(pipe, tmp_path):
    path = write_audio(tmp_path / "beep.wav", tone(0.5))
    rep = pipe.run(path)
    assert rep.verdict is Verdict.NOT_APPLICABLE
    assert rep.detector(AUDIO).status is Status.NOT_APPLICABLE


def test_timeline_is_per_second(pipe, dev_data):
    rep = pipe.run(dev_data / TALKING)
    tl = rep.detector(VISUAL).timeline
    starts = [p.start_s for p in tl]
    assert starts == sorted(starts) and all(float(s).is_integer() for s in starts)
    assert all(0.0 <= p.score <= 1.0 and p.end_s - p.start_s <= 1.0 for p in tl)


def test_seed_fallback_is_named_in_the_report(tmp_path, dev_data):
    s = Settings(device="cpu", calibration_file=tmp_path / "missing.json")
    rep = pipeline.build(s).run(dev_data / TALKING)
    assert rep.fusion.method == "seed-fixed-weights" and "seed" in rep.fusion.note
    expected = sum(fusion.SEED_WEIGHTS[d.slot] * (d.score if d.ran else 0.5) for d in rep.detectors)
    assert rep.fake_probability == pytest.approx(expected)


def test_synthetic_talking_video_end_to_end(pipe, tmp_path):
    """A file made here (not from the dev set): decodes, and whatever is found is reported consistently."""
    path = write_video(tmp_path / "synthetic.mp4", n_frames=50, size=(160, 120), audio=tone(2.0))
    rep = pipe.run(path)
    assert rep.verdict is Verdict.NOT_APPLICABLE  # no face, a pure tone is not speech
    assert np.isclose(rep.media.duration_s, 2.0, atol=0.2)


def test_a_degraded_installation_marks_its_verdict_partial(tmp_path, monkeypatch, dev_data, pipe):
    """No weights here (no WEIGHTS_DIR, no internet): the run still answers from what it has (bundled
    checkpoints), but the report, the CLI text and the HTML say at the top which needed detectors are missing."""
    from pipeline.render import report_html, summary_text

    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("WEIGHTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ALLOW_DOWNLOAD", "0")
    degraded = pipeline.build(Settings(device="cpu"))
    rep = degraded.run(dev_data / TALKING)
    assert rep.partial and any(m.startswith("faces (retinaface_mnet025)") and "not found" in m for m in rep.missing)
    data = rep.to_dict()
    assert data["detector_scores"]["partial"] is True
    assert data["detector_scores"]["missing_detectors"] == list(rep.missing)
    text = summary_text(data)
    assert text.index("PARTIAL RESULT") < text.index("detector ")  # at the top, before the table
    assert "PARTIAL RESULT" in report_html(data)
    # the full installation is not marked
    full = pipe.run(dev_data / TALKING)
    assert not full.partial and "partial" not in full.to_dict()["detector_scores"]


def test_fingerprint_of_some_slots_ignores_the_other_detectors(pipe):
    """``make eval`` keys an audio file's stored scores by the audio detector alone (training/evaluate.input_slots)."""
    import copy
    from dataclasses import replace as dc_replace

    from training.evaluate import input_slots

    components = copy.copy(pipe.c)
    components.sync = dc_replace(pipe.c.sync, model_name="another-sync-head")
    swapped = pipeline.build(Settings(device="cpu"), components)
    assert swapped.fingerprint(with_fusion=False) != pipe.fingerprint(with_fusion=False)
    audio = input_slots("audio")
    assert swapped.fingerprint(with_fusion=False, slots=audio) == pipe.fingerprint(with_fusion=False, slots=audio)
    video = input_slots("video_av")
    assert swapped.fingerprint(with_fusion=False, slots=video) != pipe.fingerprint(with_fusion=False, slots=video)


def test_voice_change_runs_on_a_talking_video_and_says_why_not_on_a_voice_note(pipe, dev_data):
    rep = pipe.run(dev_data / TALKING)
    d = rep.detector(VOICE_CHANGE)
    assert d.status is Status.OK and 0.0 <= d.score <= 1.0
    assert d.extra("windows") >= 3 and d.extra("changed_from_s") < d.extra("changed_to_s")
    # the shipped fusion calibrates it like every counted detector: the stored value is the calibrated one
    assert d.timeline and d.calibrated is not None and d.calibrated_timeline
    assert rep.detector_scores()["voice_change"] == pytest.approx(d.calibrated, abs=1e-4)
    assert "voice_change" in dict(rep.fusion.weights) and dict(rep.fusion.weights)["voice_change"] > 0.5
    note = pipe.run(dev_data / SPEECH).detector(VOICE_CHANGE)
    assert note.status is Status.NOT_APPLICABLE and "videos only" in note.reason

"""The audio slot's default picks its detector by the kind of input: the Whisper head for audio-only files,
AASIST-ft for the soundtracks of videos; its identity covers both members' weights."""

from __future__ import annotations

import pytest
from conftest import DEV_DATA

import pipeline
from models import registry
from models.aasist import AASISTDetector
from models.audio_by_kind import AudioByKind, kind_of_modality, member_for
from models.whisper_audio import WhisperAudioDetector
from pipeline.report import AUDIO
from pipeline.settings import Settings

VOICE = DEV_DATA / "C_audio/tortoise_real_voices/tortoise__voices__angie__1.flac"
TALKING = DEV_DATA / "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"


@pytest.fixture(scope="module")
def by_kind() -> AudioByKind:
    return registry.spec("audio_by_kind").load(device="cpu")


def test_members_and_identity(by_kind):
    assert isinstance(by_kind.for_kind("audio"), WhisperAudioDetector)
    assert isinstance(by_kind.for_kind("video"), AASISTDetector)
    assert by_kind.for_kind("video").weights_info.name == "aasist_ft"
    assert [kind_of_modality(m) for m in ("audio", "video_av", "video", "image")] == ["audio", "video", "video",
                                                                                     "image"]
    assert member_for(by_kind, "audio") is by_kind.for_kind("audio")
    assert member_for(by_kind, "video_av") is by_kind.for_kind("video")
    plain = by_kind.for_kind("audio")
    assert member_for(plain, "video_av") is plain
    # the calibration key changes when either member's weights do
    ident = registry.identity("audio_by_kind", by_kind)
    shas = {i.sha256 for i in by_kind.weights_infos}
    assert len(shas) == 2 and ident.sha256 and ident.sha256 not in shas


def _audio_score(settings: Settings, path) -> float:
    rep = pipeline.build(settings).run(path)
    return next(d for d in rep.detectors if d.slot == AUDIO).score


def test_the_pipeline_scores_each_kind_with_its_member():
    """A voice note scores exactly as with the Whisper head alone, a video's soundtrack as with AASIST-ft alone."""
    default = Settings(explain=False, audio_detector="audio_by_kind")
    assert _audio_score(default, VOICE) == pytest.approx(
        _audio_score(Settings(explain=False, audio_detector="whisper_head"), VOICE), abs=1e-9)
    assert _audio_score(default, TALKING) == pytest.approx(
        _audio_score(Settings(explain=False, audio_detector="aasist:aasist_ft"), TALKING), abs=1e-6)


def test_the_fusion_knows_every_clip_either_member_learned_from():
    """Its rows are in-sample wherever either member trained (unless rescored out of fold)."""
    from training.evidence_fusion import trained_sources

    both = trained_sources("audio_by_kind", {})
    whisper, aasist = trained_sources("whisper_head", {}), trained_sources("aasist:aasist_ft", {})
    assert whisper and aasist and both == whisper | aasist
    assert {"tortoise_tts", "valle_demo"} <= whisper and "valle_demo" not in aasist

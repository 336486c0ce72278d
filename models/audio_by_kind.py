"""The audio slot's default: one synthetic-voice detector per kind of input, each the one that won its kind under
leave-one-source-out (README, "Measured quality").

* audio-only files (voice notes, recordings): the Whisper head (``models/whisper_audio.py``): fused audio sources
  0.70 against AASIST-ft's 0.65, and it runs ~3.5x faster;
* the soundtrack of a video: AASIST-ft (``models/aasist.py``): with it the fused dev video sources read 0.63
  against the Whisper head's 0.54 (it hears something synthetic in the soundtracks of talking-head demos that the
  Whisper head does not).

The pipeline asks ``for_kind(info.kind)`` for the detector that scores an input; everything else (windows, VAD,
kept inputs) is the members' own. The identity the fusion keys its calibration by covers both members' weights.
"""

from __future__ import annotations

from models.base import WeightsInfo

AUDIO_FILES = "audio"  # MediaInfo.kind of an audio-only input


def kind_of_modality(modality: str) -> str:
    """The ``MediaInfo.kind`` of a manifest modality (``video_av`` and ``video`` are videos)."""
    return {"audio": AUDIO_FILES, "image": "image"}.get(modality, "video")


def member_for(detector, modality: str):
    """The detector that scores a manifest row of ``modality``: a member of ``AudioByKind``, else ``detector``."""
    return detector.for_kind(kind_of_modality(modality)) if hasattr(detector, "for_kind") else detector


class AudioByKind:
    name = "audio_by_kind"
    modality = "audio"

    def __init__(self, for_audio_files, for_videos):
        if for_audio_files.window_samples != for_videos.window_samples:
            # make eval keeps one set of windows per file for the per-fold refits of either member
            raise ValueError("both members must read the same windows")
        self.members = {AUDIO_FILES: for_audio_files, "video": for_videos}
        self.window_samples = for_videos.window_samples
        self.sample_rate = for_videos.sample_rate
        self.weights_infos = [m.weights_info for m in self.members.values()]  # the identity covers both
        self.weights_info = WeightsInfo(self.name, "+".join(i.file for i in self.weights_infos), "")

    @classmethod
    def load(cls, device: str = "cpu") -> AudioByKind:
        from models.aasist import AASISTDetector
        from models.whisper_audio import WhisperAudioDetector

        return cls(WhisperAudioDetector.load(device=device), AASISTDetector.load(device=device, variant="aasist_ft"))

    def for_kind(self, kind: str):
        """The member that scores an input of this ``MediaInfo.kind`` (audio-only files, or anything with video)."""
        return self.members[AUDIO_FILES if kind == AUDIO_FILES else "video"]

    def predict(self, windows):
        """Windows with no kind attached are a video's (the pipeline always asks ``for_kind`` first)."""
        return self.members["video"].predict(windows)

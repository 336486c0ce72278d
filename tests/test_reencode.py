"""Processing a real clip goes through (a real clip must stay real after it): each produces readable media with
the property it is named for."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DEV_DATA

from pipeline import media
from training.reencode import ALL, PROCESSINGS, process

CLIP = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"
VOICE = DEV_DATA / "C_audio" / "tortoise_real_voices" / "tortoise__voices__daniel__2.flac"


# name -> (gain of the whole track in dB, what was added beside the speech, in dB relative to it)
AUGMENTATIONS = {
    "noise": lambda gain, added: -35 < added < -8,
    "music": lambda gain, added: -35 < added < -8,
    "loud": lambda gain, added: gain > 6,
    "quiet": lambda gain, added: -22 < gain < -18,
}


def _detail(frames: np.ndarray) -> float:
    """Mean absolute luma Laplacian: the fine detail a beauty filter removes and sharpening adds."""
    y = frames.mean(axis=-1)
    lap = 4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]
    return float(np.abs(lap).mean())


def _saturation(frames: np.ndarray) -> float:
    return float((frames.max(axis=-1) - frames.min(axis=-1)).mean())


def _changed(before: np.ndarray, after: np.ndarray, rows: slice) -> float:
    return float(np.abs(after[:, rows] - before[:, rows]).mean())


# name -> property of the frames after it against before (the same sampled times, same size)
PICTURE_FILTERS = {
    "beauty": lambda b, a: _detail(a) < 0.85 * _detail(b),
    "sharpen": lambda b, a: _detail(a) > 1.3 * _detail(b),
    "grade": lambda b, a: _saturation(a) > 1.15 * _saturation(b),
    # the caption bar covers the bottom of the picture and leaves its top as it was
    "captions": lambda b, a: (_changed(b, a, slice(-a.shape[1] // 6, None))
                              > 4 * _changed(b, a, slice(0, a.shape[1] // 3))),
}


@pytest.fixture(scope="module")
def source():
    return media.probe(CLIP)


@pytest.mark.parametrize("name", ALL)
def test_each_processing_keeps_a_readable_clip_with_its_property(name, source, tmp_path):
    out = process(CLIP, tmp_path, name)
    info = media.probe(out)
    assert info.kind == "video" and info.has_audio
    assert info.duration_s == pytest.approx(source.duration_s, abs=0.3)
    w, h = info.width, info.height
    expect = {
        "h265": lambda: info.video_codec == "hevc",
        "vp9": lambda: info.video_codec == "vp9" and info.audio_codec == "opus",
        "down360": lambda: h == 360,
        "up2x": lambda: (w, h) == (2 * source.width, 2 * source.height),
        "portrait_crop": lambda: h > w and h == source.height,
        "letterbox": lambda: abs(w / h - 16 / 9) < 0.02,
        "panel": lambda: h == 360 and w >= 1.9 * 360 * source.width / source.height,  # the clip + a side panel
        "fps30": lambda: info.fps == pytest.approx(30, abs=0.5),
        "fps60": lambda: info.fps == pytest.approx(60, abs=0.5),
        "opus16k": lambda: info.audio_codec == "opus",
        "messenger_vlow": lambda: h <= 240,
        "whatsapp": lambda: min(w, h) <= 480,
        "whatsapp_low": lambda: min(w, h) <= 360,
    }
    if name in AUGMENTATIONS:
        before = media.load_audio(CLIP, source, 16000).samples
        after = media.load_audio(out, info, 16000).samples
        n = min(len(before), len(after))
        before, after = before[:n], after[:n]
        gain_db = 20 * np.log10(np.sqrt(np.mean(after ** 2)) / np.sqrt(np.mean(before ** 2)))
        residual_db = 10 * np.log10(np.mean((after - before * np.dot(after, before) / np.dot(before, before)) ** 2)
                                    / np.mean(before ** 2))
        assert info.video_codec == source.video_codec  # the picture is the real clip's
        assert np.corrcoef(before, after)[0, 1] > 0.5  # the same speech, at the same time
        assert AUGMENTATIONS[name](gain_db, residual_db), (name, gain_db, residual_db)
    elif name in PICTURE_FILTERS:
        before = media.sample_frames(CLIP, source, fps=1.0, max_frames=4).frames.astype(np.float64)
        after = media.sample_frames(out, info, fps=1.0, max_frames=4).frames.astype(np.float64)
        assert (w, h) == (source.width, source.height) and before.shape == after.shape
        assert PICTURE_FILTERS[name](before, after), name
    elif name == "telephone":  # nothing above the 3.4 kHz telephone band survives
        audio = media.load_audio(out, info, 16000).samples
        spec = np.abs(np.fft.rfft(audio)) ** 2
        freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
        assert spec[freqs > 4200].sum() / spec.sum() < 0.01
    else:
        assert expect[name](), (name, w, h, info.fps, info.video_codec, info.audio_codec)


def test_audio_files_get_the_audio_processings_only(tmp_path):
    out = process(VOICE, tmp_path, "opus16k")
    assert media.probe(out).audio_codec == "opus"
    assert process(VOICE, tmp_path, "up2x") == VOICE  # a picture processing leaves a voice note alone
    noisy = process(VOICE, tmp_path, "noise")
    assert media.probe(noisy).kind == "audio" and noisy != VOICE
    silent = DEV_DATA / "A_real_av" / "dpe_inputs" / "data__s.mp4"
    assert not media.probe(silent).has_audio
    assert process(silent, tmp_path, "music") == silent  # no sound to put a music bed under
    assert set(PROCESSINGS) <= set(ALL)

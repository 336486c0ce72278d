"""The synthetic-data recipes make what their labels say: each test builds items from real dev clips and checks
the property that makes the label certain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DEV_DATA

from pipeline import media
from training import synth
from training.split import read_manifest

TALKING = "A_real_av/pcavs_voxceleb/misc__Audio_Source__00086.mp4"  # 5.2 s, one speaker
OTHER = "A_real_av/edtalk/test_data__uncrop_Obama.mp4"


@pytest.fixture(scope="module")
def clips():
    items = {it.path: it for it in read_manifest(DEV_DATA / "manifest.tsv")}
    return synth.load_clip(items[TALKING]), synth.load_clip(items[OTHER])


def _audio(path) -> np.ndarray:
    return media.load_audio(path, media.probe(path), synth.SR).samples


def _lag_s(a: np.ndarray, b: np.ndarray, max_s: float = 1.5) -> float:
    """How much later ``b`` runs than ``a`` (seconds), from their 20 ms energy envelopes."""
    ea, eb = (synth.envelope(x) for x in (a, b))
    n = min(len(ea), len(eb))
    ea, eb = (e[:n] - e[:n].mean() for e in (ea, eb))
    m = int(max_s / 0.02)
    lags = range(-m, m + 1)
    score = [np.dot(ea[max(0, -k): n - max(0, k)], eb[max(0, k): n - max(0, -k)]) for k in lags]
    return list(lags)[int(np.argmax(score))] * 0.02


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ea, eb = synth.envelope(a), synth.envelope(b)
    n = min(len(ea), len(eb))
    return float(np.corrcoef(ea[:n], eb[:n])[0, 1])


@pytest.mark.parametrize("offset", [0.5, -0.3])
def test_av_shift_baked_offset_is_recoverable_from_the_samples(clips, tmp_path, offset):
    clip, _ = clips
    item = synth.av_shift(clip, np.random.default_rng(0), tmp_path / "s.mp4", kind="baked", offset_s=offset)
    assert item.params == {"kind": "baked", "offset_s": offset}
    out = _audio(item.path)
    assert abs(_lag_s(clip.audio, out) - offset) <= 0.04
    track = media.load_audio(item.path, media.probe(item.path), synth.SR)
    assert track.source_offset_s == pytest.approx(0.0, abs=0.03)  # not in the timestamps


def test_av_shift_stream_offset_lives_in_the_timestamps(clips, tmp_path):
    clip, _ = clips
    item = synth.av_shift(clip, np.random.default_rng(0), tmp_path / "s.mp4", kind="stream", offset_s=0.4)
    track = media.load_audio(item.path, media.probe(item.path), synth.SR)
    # the samples are the source's, stamped 0.4 s after the first video frame (less the AAC encoder's 1024
    # priming samples, 0.064 s, which the stream carries before them)
    assert track.source_offset_s == pytest.approx(0.4 - 1024 / synth.SR, abs=0.03)
    assert abs(_lag_s(clip.audio, _audio(item.path)) - 0.4) <= 0.04  # and the decoder places them there


def test_av_shift_drift_grows_over_the_clip(clips, tmp_path):
    clip, _ = clips
    item = synth.av_shift(clip, np.random.default_rng(0), tmp_path / "d.mp4", kind="drift", offset_s=0.08)
    out = _audio(item.path)
    half = len(out) // 2
    early, late = _lag_s(clip.audio[:half], out[:half]), _lag_s(clip.audio[half:], out[half:])
    assert late < early - 0.1  # sped-up audio runs further ahead of the lips as the clip goes on


def test_av_swap_replaces_exactly_the_spliced_interval(clips, tmp_path):
    clip, other = clips
    item = synth.av_swap(clip, np.random.default_rng(3), tmp_path / "w.mp4", other, partial=True)
    a, b = item.params["interval_s"]
    assert item.params["partial"] and item.params["donor"] == OTHER and 1.5 <= b - a <= 4.0
    out = _audio(item.path)
    ia, ib = int(a * synth.SR), int(b * synth.SR)
    pad = int(0.1 * synth.SR)
    keep = np.r_[np.arange(0, max(0, ia - pad)), np.arange(ib + pad, min(len(out), len(clip.audio)))]
    assert _corr(out[keep], clip.audio[keep]) > 0.9  # untouched outside the splice
    inside = slice(ia + pad, ib - pad)
    assert _corr(out[inside], clip.audio[inside]) < 0.5  # someone else's speech inside


@pytest.mark.parametrize("engine", synth.TTS_ENGINES)
def test_every_tts_engine_speaks(engine):
    if not synth.tts_available(engine):
        pytest.fail(f"{engine} is missing: `make install` installs the Debian TTS packages")
    x, params = synth.tts("Testing one two three.", engine, np.random.default_rng(0))
    assert params["engine"] == engine and 0.5 < len(x) / synth.SR < 5.0 and synth.speech_mask(x).mean() > 0.3


def test_voice_over_starts_with_the_speaker_and_keeps_the_clip_length(clips, tmp_path):
    clip, _ = clips
    item = synth.voice_over(clip, np.random.default_rng(1), tmp_path / "v.mp4", engine="espeak-ng", aligned=True)
    out = _audio(item.path)
    assert abs(len(out) - len(clip.audio)) <= 0.05 * synth.SR
    assert abs(synth.speech_onset_s(out) - synth.speech_onset_s(clip.audio)) <= 0.1
    assert _corr(out, clip.audio) < 0.5  # not the speaker's voice


@pytest.mark.parametrize("vocoder", synth.VOCODERS)
def test_voice_resynth_keeps_duration_and_speech_timing(clips, tmp_path, vocoder):
    clip, _ = clips
    item = synth.voice_resynth(clip, np.random.default_rng(0), tmp_path / f"{vocoder}.mp4", method=vocoder)
    out = _audio(item.path)
    assert abs(len(out) - len(clip.audio)) <= 0.05 * synth.SR
    assert _corr(out, clip.audio) > 0.7  # same speech, same timing
    assert np.abs(out[: len(clip.audio)] - clip.audio[: len(out)]).mean() > 0.005  # but a different waveform


def test_cli_builds_a_set_with_its_card_from_training_reals_only(tmp_path):
    out = tmp_path / "set"
    assert synth.main(["--recipe", "av_shift", "--n", "2", "--manifest", str(DEV_DATA / "manifest.tsv"),
                       "--out", str(out), "--exclude-source", "pcavs_voxceleb"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["n"] == 2 and len(card["items"]) == 2 and card["items_per_minute"] > 0
    from training.split import read_split

    sides = read_split()
    assert all(sides[p] == "train" for p in card["drawn_from"])
    assert not any("pcavs_voxceleb" in p for p in card["drawn_from"])  # a held-out source never feeds a fold
    assert all((out / f"av_shift_0_{k:04d}.mp4").exists() for k in range(2))
    # the set is scoreable by `make eval`, and each item sits in its source real's group (so LOSO holds it out
    # with that real)
    items = read_manifest(tmp_path / "manifest.tsv")
    dev = {it.path: it for it in read_manifest(DEV_DATA / "manifest.tsv")}
    assert [it.file.resolve() for it in items] == [Path(m["path"]).resolve() for m in card["items"]]
    assert all(it.label == "fake" and it.manipulation == "av_shift" for it in items)
    assert [it.group for it in items] == [dev[m["source"]].group for m in card["items"]]
    from training.protocol import source_of

    assert {source_of(it.path) for it in items} == {"set"}


def test_spectrogram_sheet_draws_one_band_per_row(clips, tmp_path):
    from PIL import Image

    clip, other = clips
    path = synth.spectrogram_sheet([("real", clip.audio), ("other", other.audio)], tmp_path / "s.png", width=300)
    img = Image.open(path)
    assert img.size == (300, 2 * (120 + 18))
    band = np.asarray(img.convert("RGB"))[18:138]
    assert band.std() > 10  # a spectrogram, not a blank band


def test_the_issue_targets_name_their_part_of_a_recipe_from_the_card(clips, tmp_path):
    """``av_shift`` >= 0.3 s (issue 12's target) is read from the offset each item was made with, never its note."""
    clip, other = clips
    rng = np.random.default_rng(0)
    root = tmp_path / "synth"
    made = [synth.av_shift(clip, rng, root / "av_shift" / "a.mp4", kind="stream", offset_s=0.45),
            synth.av_shift(clip, rng, root / "av_shift" / "b.mp4", kind="baked", offset_s=-0.2),
            synth.av_shift(clip, rng, root / "av_shift" / "c.mp4", kind="drift", offset_s=0.05),
            synth.av_swap(clip, rng, root / "av_swap" / "d.mp4", other, partial=True),
            synth.av_swap(clip, rng, root / "av_swap" / "e.mp4", other, partial=False)]
    for recipe in ("av_shift", "av_swap"):
        card = {"recipe": recipe, "items": [vars(m) for m in made if m.recipe == recipe]}
        (root / recipe / "card.json").write_text(json.dumps(card))
    assert synth.target_subsets(root) == {"av_shift/a.mp4": "av_shift >= 0.3 s", "av_shift/b.mp4": "av_shift < 0.3 s",
                                          "av_shift/c.mp4": "av_shift drift", "av_swap/d.mp4": "av_swap partial",
                                          "av_swap/e.mp4": "av_swap whole"}
    assert synth.target_subset("voice_over", {}) is None

"""LR-ASD (models/lrasd.py) against ../shared/specs/lrasd/golden, which the original code produced on CPU fp32."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from models.base import load_torch_state_dict
from models.lrasd import (
    DEMO_DURATIONS_S,
    LRASD,
    LRASDDetector,
    _demo_chunks,
    _span_pieces,
    align_lengths,
    demo_crop,
    faces_from_track,
    mfcc,
    psf_filterbank,
    psf_filterbank_bins,
    smooth_track,
    to_model_input,
    track_params_from_boxes,
)
from models.weights import WEIGHTS

ATOL = 1e-4  # SPEC section 7: logits and embeddings on CPU fp32
F32_RTOL = 2.0**-24  # a float64 value vs its float32 copy in the golden: half an ulp, relative


@pytest.fixture(scope="module")
def golden_random(specs_dir: Path) -> dict[str, np.ndarray]:
    with np.load(specs_dir / "lrasd" / "golden" / "LRASD_random.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def golden_real(specs_dir: Path) -> dict[str, np.ndarray]:
    with np.load(specs_dir / "lrasd" / "golden" / "LRASD_real.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def detector(shared_weights: Path) -> LRASDDetector:
    return LRASDDetector.load(device="cpu")


@pytest.fixture(scope="module")
def real_demo_rows(detector: LRASDDetector, golden_real: dict[str, np.ndarray]) -> np.ndarray:
    return detector.demo_scores_per_duration(golden_real["mfcc_fed"], golden_real["faces_u8"])


# ---------------------------------------------------------------------------------------------------------
# checkpoint and architecture
# ---------------------------------------------------------------------------------------------------------


def test_checkpoint_keys_shapes_and_parameter_count(shared_weights: Path) -> None:
    sd = load_torch_state_dict(shared_weights / "LR-ASD_finetuning_TalkSet.model")
    assert len(sd) == 168
    model = LRASD()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 837_156
    assert sum(p.numel() for p in model.model.parameters()) == 836_640
    assert model.model.visualEncoder.radius == 9


def test_load_through_registry(detector: LRASDDetector) -> None:
    assert (detector.name, detector.modality) == ("lrasd", "sync")
    assert detector.weights_info.sha256 == WEIGHTS["lrasd"].sha256
    assert not detector.model.training


def test_random_golden_intermediates(detector: LRASDDetector, golden_random: dict[str, np.ndarray]) -> None:
    g = golden_random
    m = detector.model
    with torch.inference_mode():
        a = torch.from_numpy(g["audio_mfcc"])
        v = torch.from_numpy(g["visual_u8"]).float()
        ae, ve = m.embed_audio(a), m.embed_visual(v)
        got = {
            "audio_embed": ae[0],
            "visual_embed": ve[0],
            "av_backend_out": m.backend(ae, ve)[0],
            "logits_av": m(a, v),
            "logits_v": m.visual_logits(v),
        }
    for key, value in got.items():
        np.testing.assert_allclose(value.numpy(), g[key], atol=ATOL, rtol=0, err_msg=key)
    np.testing.assert_allclose(detector.speaking_logits(g["audio_mfcc"], g["visual_u8"])[0], g["logits_av"][:, 1],
                               atol=ATOL, rtol=0)


def test_batch_of_two_equals_single_items(detector: LRASDDetector, golden_random: dict[str, np.ndarray]) -> None:
    gen = torch.Generator().manual_seed(7)
    mfcc2 = np.concatenate([golden_random["audio_mfcc"], 10 * torch.randn(1, 100, 13, generator=gen).numpy()])
    faces2 = np.concatenate(
        [golden_random["visual_u8"], torch.randint(0, 256, (1, 25, 112, 112), generator=gen).to(torch.uint8).numpy()]
    )
    both = detector.speaking_logits(mfcc2, faces2)
    a2, v2 = detector.embeddings(mfcc2, faces2)
    assert both.shape == (2, 25) and a2.shape == v2.shape == (2, 25, 128)
    for i in range(2):
        one = detector.speaking_logits(mfcc2[i : i + 1], faces2[i : i + 1])
        a1, v1 = detector.embeddings(mfcc2[i : i + 1], faces2[i : i + 1])
        np.testing.assert_allclose(both[i], one[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(a2[i], a1[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(v2[i], v1[0], atol=1e-5, rtol=0)
    with torch.inference_mode():  # forward rows are batch-major: row = b * T + t
        rows = detector.model(torch.from_numpy(mfcc2), torch.from_numpy(faces2).float()).numpy().reshape(2, 25, 2)
    np.testing.assert_allclose(rows[..., 1], both, atol=1e-5, rtol=0)


def test_input_validation(detector: LRASDDetector, golden_random: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="4 MFCC frames"):
        detector.speaking_logits(golden_random["audio_mfcc"][:, :96], golden_random["visual_u8"])
    with pytest.raises(ValueError, match="faces must be"):
        detector.speaking_logits(golden_random["audio_mfcc"], golden_random["visual_u8"][:, :, :64])


# ---------------------------------------------------------------------------------------------------------
# MFCC front-end
# ---------------------------------------------------------------------------------------------------------


def test_psf_filterbank(golden_real: dict[str, np.ndarray]) -> None:
    assert psf_filterbank_bins().tolist() == [
        0, 2, 4, 7, 10, 13, 16, 20, 24, 29, 34, 40, 46, 53, 60, 68, 77, 87, 97, 109, 122, 136, 152, 169, 188, 209,
        231, 256,
    ]  # fmt: skip
    fb = psf_filterbank()
    assert fb.shape == (26, 257)
    np.testing.assert_allclose(fb, golden_real["psf_filterbank_26x257"], rtol=F32_RTOL, atol=0)


def test_mfcc_matches_python_speech_features(golden_real: dict[str, np.ndarray]) -> None:
    pcm = golden_real["pcm_track_int16"]
    ours = mfcc(pcm)
    assert ours.shape == (519, 13) and ours.dtype == np.float64  # 83200 samples = 130 frames -> 4*130 - 1
    np.testing.assert_allclose(ours, golden_real["mfcc_full"], rtol=F32_RTOL, atol=1e-9)
    np.testing.assert_array_equal(golden_real["mfcc_fed"], golden_real["mfcc_full"][:516])
    # float input in [-1, 1] is brought back to int16 scale, so it gives the same features
    np.testing.assert_allclose(mfcc(pcm.astype(np.float32) / 32768.0), ours, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("n_samples", "n_frames"), [(0, 1), (1, 1), (400, 1), (401, 2), (560, 2), (561, 3),
                                                     (640 * 25, 99)])
def test_mfcc_framing(n_samples: int, n_frames: int) -> None:
    rng = np.random.default_rng(n_samples)
    assert mfcc(rng.integers(-3000, 3000, n_samples).astype(np.int16)).shape == (n_frames, 13)


def test_mfcc_of_silence_is_the_eps_clamp() -> None:
    feats = mfcc(np.zeros(1600, dtype=np.int16))
    expected = np.zeros((9, 13))
    expected[:, 0] = np.log(np.finfo(np.float64).eps)  # c0 = ln(eps); a constant log-mel leaves c1.. at 0
    np.testing.assert_allclose(feats, expected, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="mono"):
        mfcc(np.zeros((2, 1600), dtype=np.int16))


def test_align_lengths() -> None:
    assert align_lengths(np.zeros((519, 13)), 130) == 129
    assert align_lengths(np.zeros((516, 13)), 100) == 100


# ---------------------------------------------------------------------------------------------------------
# real clip: full pass, demo scoring, controls
# ---------------------------------------------------------------------------------------------------------


def test_real_full_pass(detector: LRASDDetector, golden_real: dict[str, np.ndarray]) -> None:
    g = golden_real
    got = detector.speaking_logits(g["mfcc_fed"][None], g["faces_u8"][None])
    np.testing.assert_allclose(got[0], g["sync_logits_av"][:, 1], atol=ATOL, rtol=0)
    with torch.inference_mode():
        faces = torch.from_numpy(g["faces_u8"][None]).float()
        logits = detector.model(torch.from_numpy(g["mfcc_fed"][None]), faces).numpy()
        logits_v = detector.model.visual_logits(faces).numpy()
    np.testing.assert_allclose(logits, g["sync_logits_av"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits_v, g["sync_logits_v"], atol=ATOL, rtol=0)


def test_real_from_pcm_end_to_end(detector: LRASDDetector, golden_real: dict[str, np.ndarray]) -> None:
    feats = mfcc(golden_real["pcm_track_int16"])
    t = align_lengths(feats, len(golden_real["faces_u8"]))
    got = detector.speaking_logits(feats[None, : 4 * t], golden_real["faces_u8"][None, :t])
    np.testing.assert_allclose(got[0], golden_real["sync_logits_av"][:, 1], atol=ATOL, rtol=0)


def test_demo_scores(detector: LRASDDetector, golden_real: dict[str, np.ndarray], real_demo_rows: np.ndarray) -> None:
    g = golden_real
    assert tuple(g["demo_durations_s"]) == DEMO_DURATIONS_S
    np.testing.assert_allclose(real_demo_rows, g["sync_demo_per_duration"], atol=ATOL, rtol=0)
    scores = detector.demo_scores(g["mfcc_fed"], g["faces_u8"])
    np.testing.assert_allclose(scores, g["sync_demo_score_unrounded"], atol=ATOL, rtol=0)
    # rounding to 1 decimal agrees except where the unrounded value sits on a .x5 boundary
    off_boundary = np.abs(np.abs(g["sync_demo_score_unrounded"] * 10) % 1 - 0.5) > 1e-3
    np.testing.assert_array_equal(np.round(scores, 1)[off_boundary], g["sync_demo_score_rounded"][off_boundary])


def test_demo_scores_without_encoder_sharing(
    detector: LRASDDetector, golden_real: dict[str, np.ndarray], real_demo_rows: np.ndarray
) -> None:
    """Every chunk encoded on its own (the original's way) gives the same rows as the shared-pass default."""
    rows = detector.demo_scores_per_duration(golden_real["mfcc_fed"], golden_real["faces_u8"], share_encoders=False)
    np.testing.assert_allclose(rows, golden_real["sync_demo_per_duration"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(rows, real_demo_rows, atol=1e-5, rtol=0)


def test_demo_aligns_lengths(detector: LRASDDetector, golden_real: dict[str, np.ndarray]) -> None:
    """The whole-track MFCC (519 frames) with all 130 faces scores the first 129 frames, as the demo does."""
    scores = detector.demo_scores(mfcc(golden_real["pcm_track_int16"]), np.concatenate(
        [golden_real["faces_u8"], golden_real["faces_u8"][-1:]]))
    np.testing.assert_allclose(scores, golden_real["sync_demo_score_unrounded"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("tag", ["shiftp10", "shiftm10"])
def test_shifted_audio(detector: LRASDDetector, golden_real: dict[str, np.ndarray], tag: str) -> None:
    g = golden_real
    v0, v1 = g[f"{tag}_video_range"]
    a0, a1 = g[f"{tag}_audio_range"]
    feats, faces = g["mfcc_fed"][a0:a1], g["faces_u8"][v0:v1]
    got = detector.speaking_logits(feats[None], faces[None])[0]
    np.testing.assert_allclose(got, g[f"{tag}_logits_av"][:, 1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(detector.demo_scores(feats, faces), g[f"{tag}_demo_score_unrounded"], atol=ATOL, rtol=0)


def test_silence_frozen_face_other_speaker(detector: LRASDDetector, golden_real: dict[str, np.ndarray]) -> None:
    g = golden_real
    silence = mfcc(np.zeros(83200, dtype=np.int16))[:516].astype(np.float32)
    feats = np.stack([silence, g["mfcc_fed"], g["other_speaker_mfcc_fed"]])
    faces = np.stack([g["faces_u8"], np.repeat(g["faces_u8"][:1], 129, axis=0), g["faces_u8"]])
    with torch.inference_mode():
        logits = detector.model(torch.from_numpy(feats), torch.from_numpy(faces).float()).numpy().reshape(3, 129, 2)
    for i, key in enumerate(["silence_logits_av", "frozen_face_logits_av", "other_speaker_logits_av"]):
        np.testing.assert_allclose(logits[i], g[key], atol=ATOL, rtol=0, err_msg=key)
    assert logits[1, :, 1].max() < 0 < logits[0, :, 1].mean()  # it scores lip motion, not the audio


@pytest.mark.parametrize("shift", [5, 15])
def test_offset_sweep_pairs(detector: LRASDDetector, golden_real: dict[str, np.ndarray], shift: int) -> None:
    """+k (audio delayed) and -k (audio leads) have the same length, so they run as one batch of two."""
    g = golden_real
    n = 129 - shift
    feats = np.stack([g["mfcc_fed"][: 4 * n], g["mfcc_fed"][4 * shift :]])
    faces = np.stack([g["faces_u8"][shift:], g["faces_u8"][:n]])
    means = detector.speaking_logits(feats, faces).mean(axis=1)
    sweep = dict(zip(g["offset_sweep_frames"].tolist(), g["offset_sweep_mean_logit1"], strict=True))
    np.testing.assert_allclose(means, [sweep[shift], sweep[-shift]], atol=ATOL, rtol=0)


def test_windowed_long_track_is_exact(golden_real: dict[str, np.ndarray], detector: LRASDDetector) -> None:
    """A small forward cap splits the visual pass into overlapping windows; the result must not change."""
    small = LRASDDetector(detector.model, device="cpu", max_frames_per_forward=40)
    g = golden_real
    got = small.speaking_logits(g["mfcc_fed"][None], g["faces_u8"][None])
    np.testing.assert_allclose(got[0], g["sync_logits_av"][:, 1], atol=ATOL, rtol=0)
    rows = small.demo_scores_per_duration(g["mfcc_fed"], g["faces_u8"])
    np.testing.assert_allclose(rows, g["sync_demo_per_duration"], atol=ATOL, rtol=0)


def test_encoder_temporal_reach(detector: LRASDDetector) -> None:
    """Windowing and chunk sharing rely on the encoders' reach: visual +-9 video frames, audio +-6."""
    m = detector.model
    assert m.encoder_radius == 9
    gen = torch.Generator().manual_seed(3)
    mfcc_in = 10 * torch.randn(1, 4 * 40, 13, generator=gen)
    faces_in = torch.randint(0, 256, (1, 40, 112, 112), generator=gen).float()
    bumped_mfcc, bumped_faces = mfcc_in.clone(), faces_in.clone()
    bumped_mfcc[0, 4 * 20 : 4 * 21] += 30.0
    bumped_faces[0, 20] = 255.0 - bumped_faces[0, 20]
    with torch.inference_mode():
        for before, after, reach in [
            (m.embed_audio(mfcc_in), m.embed_audio(bumped_mfcc), 6),
            (m.embed_visual(faces_in), m.embed_visual(bumped_faces), 9),
        ]:
            changed = np.flatnonzero((after - before).abs().amax(dim=2)[0].numpy() > 1e-6)
            assert changed.min() >= 20 - reach and changed.max() <= 20 + reach, changed


@pytest.mark.parametrize("n_frames", [1, 17, 18, 19, 25, 129, 301])
@pytest.mark.parametrize("max_len", [36, 40, 512])
@pytest.mark.parametrize("share", [True, False])
def test_span_plan_covers_each_chunk(n_frames: int, max_len: int, share: bool) -> None:
    """Each chunk is tiled exactly by pieces whose windows never cut a frame's +-9 receptive field."""
    r = 9
    chunks = _demo_chunks(n_frames, DEMO_DURATIONS_S)
    for k, d in enumerate(DEMO_DURATIONS_S):
        mine = [(s, e) for kk, s, e in chunks if kk == k]
        assert mine[0][0] == 0 and mine[-1][1] == n_frames
        assert all(e1 == s2 for (_, e1), (s2, _) in itertools.pairwise(mine))
        assert all(e - s == 25 * d for s, e in mine[:-1])
    for _, s, e in chunks:
        pieces = _span_pieces(s, e, n_frames, r, max_len, share)
        assert pieces[0][2] == s and pieces[-1][3] == e
        for (ws, we, lo, hi), nxt in zip(pieces, [*pieces[1:], None], strict=True):
            assert ws <= lo < hi <= we and we - ws <= max_len
            if nxt is not None:
                assert hi == nxt[2]
            # a window edge inside the track must be the chunk's own edge or lie beyond the reach of kept rows
            assert ws in (0, s) or lo - ws >= r
            assert we in (n_frames, e) or we - hi >= r
            # a window must not run past the chunk's own edges into a neighbouring chunk near the kept rows
            assert ws >= s or lo - s >= r
            assert we <= e or e - hi >= r


# ---------------------------------------------------------------------------------------------------------
# face crops
# ---------------------------------------------------------------------------------------------------------


def test_demo_crop_pad_and_window_rule() -> None:
    rows, cols = np.mgrid[0:90, 0:120]
    frame = np.stack([rows, cols, (rows + cols) % 100], axis=-1).astype(np.uint8)
    cx, cy, s = 100.7, 30.2, 20.6  # the enlarged box runs off the right edge: pad pixels must read 110
    p = int(s * 1.8)  # 37
    r0, r1 = int(cy + p - s), int(cy + p + 1.8 * s)  # 46, 104
    c0, c1 = int(cx + p - 1.4 * s), int(cx + p + 1.4 * s)  # 108, 166
    expected = np.full((r1 - r0, c1 - c0, 3), 110, dtype=np.uint8)
    for i in range(r1 - r0):
        for j in range(c1 - c0):
            fr, fc = r0 + i - p, c0 + j - p
            if 0 <= fr < 90 and 0 <= fc < 120:
                expected[i, j] = frame[fr, fc]
    assert expected.shape == (58, 58, 3) and (expected == 110).all(axis=-1).any()
    crop = demo_crop(frame, cx, cy, s)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, cv2.resize(expected, (224, 224), interpolation=cv2.INTER_LINEAR))
    assert demo_crop(frame[..., 0], cx, cy, s).shape == (224, 224)


def test_to_model_input_centre_window_and_channel_order() -> None:
    ramp = np.repeat(np.arange(224, dtype=np.uint8)[:, None], 224, axis=1)
    out = to_model_input(ramp)
    assert out.shape == (112, 112) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0], np.arange(56, 168))
    red_first = np.zeros((224, 224, 3), np.uint8)
    red_first[..., 0] = 255
    assert to_model_input(red_first, rgb=True)[0, 0] == 76  # 0.299 * 255: channel 0 read as red
    assert to_model_input(red_first, rgb=False)[0, 0] == 29  # 0.114 * 255: channel 0 read as blue (BGR)


def test_smoothing_reproduces_golden_track(golden_real: dict[str, np.ndarray]) -> None:
    boxes = golden_real["yunet_boxes_xyxy_conf"]
    smoothed = np.stack(smooth_track(*track_params_from_boxes(boxes)), axis=1)
    np.testing.assert_allclose(smoothed, golden_real["smoothed_cx_cy_s"], rtol=F32_RTOL, atol=1e-9)
    raw = np.stack(track_params_from_boxes(boxes), axis=1)
    assert not np.allclose(raw, smoothed)  # the filter did something


def test_faces_from_decoded_clip(dev_data: Path, golden_real: dict[str, np.ndarray]) -> None:
    """Decoded RGB frames + the golden YuNet boxes reproduce the fed crops (the golden skipped the lossy re-encodes)."""
    with av.open(str(dev_data / str(golden_real["src"]))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 130
    faces = faces_from_track(frames, golden_real["yunet_boxes_xyxy_conf"], rgb=True)[:129]
    diff = np.abs(faces.astype(np.int16) - golden_real["faces_u8"])
    assert diff.max() <= 2 and (diff == 0).mean() > 0.99, (diff.max(), (diff == 0).mean())

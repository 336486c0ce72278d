"""The fusion variants change only what they say they change, and are judged against as-is reals too."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from pipeline.report import AUDIO, LIP_SYNC, SLOTS
from training import fusion_variants as fv
from training.evidence_fusion import Table


def _table() -> Table:
    rng = np.random.default_rng(0)
    n = 6
    ran = rng.random((n, len(SLOTS))) > 0.3
    return Table(results=[None] * n, x=rng.normal(size=(n, len(SLOTS))), ran=ran, fit_ok=ran.copy(),
                 y=np.array([0, 1, 0, 1, 0, 1]), family=np.array(["video"] * 3 + ["audio"] * 3),
                 synthetic=np.zeros(n, bool), fold=np.array(list("aabbcc")), held={}, identities={})


def test_too_in_sync_adds_lip_syncs_negated_log_odds_as_a_column_of_its_own():
    t = _table()
    v = fv.too_in_sync(t)
    j = SLOTS.index(LIP_SYNC)
    assert v.x.shape == (6, len(SLOTS) + 1)
    np.testing.assert_array_equal(v.x[:, :-1], t.x)
    np.testing.assert_array_equal(v.x[:, -1], -t.x[:, j])
    np.testing.assert_array_equal(v.ran[:, -1], t.ran[:, j])
    np.testing.assert_array_equal(v.fit_ok[:, -1], t.fit_ok[:, j])


def test_no_audio_on_video_silences_the_audio_slot_on_videos_only():
    t = _table()
    t.ran[:, SLOTS.index(AUDIO)] = True
    t.fit_ok[:, SLOTS.index(AUDIO)] = True
    v = fv.no_audio_on_video(t)
    a = SLOTS.index(AUDIO)
    assert not v.ran[:3, a].any() and not v.fit_ok[:3, a].any()
    assert v.ran[3:, a].all() and v.fit_ok[3:, a].all()
    others = np.arange(len(SLOTS)) != a
    np.testing.assert_array_equal(v.ran[:, others], t.ran[:, others])
    both = fv.VARIANTS["both"](t)
    assert both.x.shape[1] == len(SLOTS) + 1 and not both.ran[:3, a].any()


def test_means_split_dev_sources_from_synthetic_recipes():
    per = {"sadtalker": {"family": "video", "auc": 0.6, "auc_as_is_reals": 0.5},
           "av_swap": {"family": "video", "auc": 0.9, "auc_as_is_reals": 0.9},
           "tortoise_tts": {"family": "audio", "auc": 0.7, "auc_as_is_reals": 0.7}}
    m = fv.means(per)
    assert m["dev_video"] == 0.6 and m["dev_video_as_is_reals"] == 0.5
    assert m["all_video"] == 0.75 and m["audio"] == 0.7


def test_absent_as_typical_real_is_judged_by_a_fit_that_fills_missing_video_detectors(monkeypatch):
    seen = []
    monkeypatch.setattr(fv, "out_of_fold",
                        lambda t, typical=False, objective="balanced": (
                            seen.append((typical, objective)), (np.full(len(t.y), 0.5), {}))[1])
    monkeypatch.setattr(fv, "report", lambda t, p, v, items: ([], {}))
    rows = [SimpleNamespace(reencode=None, path=f"s/{i}", modality="video_av") for i in range(6)]
    t = replace(_table(), results=rows)
    fv.judge(t, [])
    fv.judge(t, [], typical=True)
    fv.judge(t, [], **fv.FIT_VARIANTS["rank-objective"])
    assert seen == [(False, "balanced"), (True, "balanced"), (False, "rank")]


def test_a_source_is_also_judged_against_the_reals_with_its_own_streams(monkeypatch):
    # fakes with sound, a silent real scored lowest of all: against every real the fakes gain from it
    t = replace(_table(), y=np.array([0, 0, 0, 1, 1, 0]), family=np.array(["video"] * 6),
                results=[SimpleNamespace(reencode=None, path=f"x/src{'f' if i in (3, 4) else 'r'}/{i}.mp4",
                                         modality="video" if i == 5 else "video_av") for i in range(6)])
    p = np.array([0.3, 0.6, 0.5, 0.55, 0.4, 0.0])
    monkeypatch.setattr(fv, "out_of_fold", lambda t, typical=False, objective="balanced": (p, {}))
    row = SimpleNamespace(source="srcf", family="video", auc={"fused": 0.75})
    monkeypatch.setattr(fv, "report", lambda t, p, v, items: ([row], {}))
    got = fv.judge(t, [])["srcf"]
    assert got["auc_same_streams"] == 0.5  # the silent real (index 5) left out: 3 of 6 pairs ranked right


def test_the_report_keeps_each_variants_means_and_per_source_figures(tmp_path):
    import json

    per = {"sadtalker": {"family": "video", "auc": 0.6, "auc_as_is_reals": 0.5, "auc_same_streams": 0.4},
           "tortoise_tts": {"family": "audio", "auc": 0.7, "auc_as_is_reals": 0.7, "auc_same_streams": None}}
    out = fv.write_report({"shipped": per}, tmp_path / "r" / "fv.json")
    saved = json.loads((tmp_path / "r" / "fv.json").read_text())
    assert saved == out and saved["shipped"]["per_source"] == per
    assert saved["shipped"]["means"]["dev_video_same_streams"] == 0.4 and saved["shipped"]["means"]["audio"] == 0.7

"""The evidence (noisy-OR) fusion: one strong reliable detector is enough, missing detectors never vote AUTHENTIC,
the fit judges each detector on the fakes it can see, and LOSO scores every row without its fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.fusion import Calibrator, FusionModel, fuse, noisy_or
from pipeline.report import SLOTS, Verdict
from training import evidence_fusion as ef
from training.evaluate import ItemResult
from training.split import ManifestItem

IDS = {"visual": ("mesonet:mesoinception_df", "v"), "temporal": ("lrasd_temporal", "t"),
       "audio": ("aasist:aasist_ft", "a"), "lip_sync": ("sync:lrasd-head", "s"), "mouth": ("mouth_blur", ""),
       "voice_change": ("voice_change", "g")}


def _model(reliability=(0.9, 0.5, 0.9, 0.95, 0.5, 0.5), thresholds=(0.3, 0.8)) -> FusionModel:
    cals = {IDS[s][0]: Calibrator("platt", 1.0, 0.0, slot=s, sha256=IDS[s][1], reliability=r)
            for s, r in zip(SLOTS, reliability, strict=True)}
    return FusionModel(cals, 0.0, {s: 0.0 for s in SLOTS}, thresholds=thresholds, combiner="noisy-or", leak=0.02)


def test_one_confident_reliable_detector_is_enough():
    quiet = {"visual": 0.05, "temporal": 0.05, "audio": 0.05}
    fusion, _, verdict = fuse(quiet | {"lip_sync": 0.05}, _model(), detectors=IDS, applicable=SLOTS)
    assert verdict is Verdict.AUTHENTIC
    fusion, _, verdict = fuse(quiet | {"lip_sync": 0.99}, _model(), detectors=IDS, applicable=SLOTS)
    # a weighted average of four would sit near 0.3; the noisy-OR follows the one that sees the dubbing
    assert fusion.fake_probability > 0.9 and verdict is Verdict.FAKE
    assert fusion.method == "evidence-noisy-or" and fusion.evidence[0][0] == "lip_sync"
    assert fusion.evidence[0][1] == pytest.approx(0.95 * 0.99, abs=1e-6)


def test_adding_a_detector_never_lowers_p_fake():
    rng = np.random.default_rng(0)
    for _ in range(50):
        ev = {s: float(rng.random()) for s in SLOTS}
        for s in SLOTS:
            rest = {k: v for k, v in ev.items() if k != s}
            assert noisy_or(ev, 0.01) >= noisy_or(rest, 0.01) - 1e-12


def test_detectors_that_cannot_run_widen_suspicious_instead_of_voting_authentic():
    scores = {"visual": 0.1, "temporal": 0.1}
    full, _, v_video = fuse(scores, _model(), detectors=IDS, applicable=("visual", "temporal"))
    # same scores, but the file had sound the voice and lip-sync checks could not use
    part, _, v_av = fuse(scores, _model(), detectors=IDS, applicable=SLOTS)
    assert part.fake_probability == pytest.approx(full.fake_probability)
    assert part.thresholds[0] < full.thresholds[0] and part.thresholds[1] == full.thresholds[1]
    assert v_video is Verdict.AUTHENTIC and v_av is Verdict.SUSPICIOUS
    assert "not run on this input" in part.note


def test_noisy_or_calibration_round_trips(tmp_path: Path):
    m = _model()
    m.save(tmp_path / "c.json")
    back = FusionModel.load(tmp_path / "c.json")
    assert back.combiner == "noisy-or" and back.leak == pytest.approx(0.02)
    assert back.calibrators["sync:lrasd-head"].reliability == pytest.approx(0.95)
    raw = {"visual": 0.2, "audio": 0.7, "lip_sync": 0.6}
    assert fuse(raw, back, detectors=IDS)[0].fake_probability == pytest.approx(
        fuse(raw, m, detectors=IDS)[0].fake_probability)


def test_unknown_combiner_is_refused(tmp_path: Path):
    d = _model().to_dict()
    d["fusion"]["combiner"] = "average"
    with pytest.raises(ValueError, match="combiner"):
        FusionModel.from_dict(d)


def _specialists(n=400, seed=0):
    """Two detectors that each see one kind of fake and are blind (score ~ reals) to the other."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n), np.ones(n)]
    kind = np.r_[np.zeros(n), rng.integers(1, 3, n)]
    x = rng.normal(-2.0, 0.7, (2 * n, 2))
    x[kind == 1, 0] += 4.0
    x[kind == 2, 1] += 4.0
    return x, y


def test_fit_trusts_each_specialist_for_the_fakes_it_sees():
    x, y = _specialists()
    p = ef.fit(x, np.ones_like(x, bool), y, np.ones(len(y)))
    assert (p.a > 0.5).all() and (p.r > 0.7).all()  # neither is muted for missing the other's fakes
    probe = np.array([[2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])
    pred = p.predict(probe, np.ones_like(probe))
    assert pred[0] > 0.7 and pred[1] > 0.7 and pred[2] < 0.2


def test_a_detector_that_fires_on_reals_loses_reliability():
    x, y = _specialists()
    rng = np.random.default_rng(1)
    noisy = rng.normal(0.0, 2.0, len(y))[:, None]  # no information, often confident
    p = ef.fit(np.c_[x, noisy], np.ones((len(y), 3), bool), y, np.ones(len(y)))
    assert p.r[2] * (1 / (1 + np.exp(-(p.a[2] * 3 + p.b[2])))) < 0.35  # a confident score from it counts little
    assert p.r[0] > 0.7 and p.r[1] > 0.7


def _item(path, label, group, modality="video_av", origin=""):
    return ManifestItem(path, label, modality, "m", group, 5.0, Path("/nowhere"), origin)


def _result(it: ManifestItem, scores: dict[str, float]) -> ItemResult:
    return ItemResult(it.path, it.label, it.modality, it.manipulation, it.group, "", None, None,
                      {s: "ok" for s in scores}, dict(scores), {}, None, 1.0, None,
                      detectors={s: list(IDS[s]) for s in scores})


def test_loso_scores_every_row_without_its_fold_and_its_synthetic_children(monkeypatch):
    rng = np.random.default_rng(0)
    items = []
    for src in ("alpha", "beta", "gamma"):
        for k in range(6):
            items.append(_item(f"A_real_av/{src}_real/{k}.mp4", "real", f"id:{src}{k}"))
            items.append(_item(f"B_fake_av/{src}/{k}.mp4", "fake", f"id:{src}{k}"))
            items.append(_item(f"av_swap/{src}{k}.mp4", "fake", f"id:{src}{k}",
                               origin=f"A_real_av/{src}_real/{k}.mp4"))
    results = [_result(it, {s: float(np.clip(rng.random() * 0.5 + 0.4 * it.is_fake, 0.01, 0.99))
                            for s in SLOTS}) for it in items]
    t = ef.build_table(results, items, split_file=Path("/no/split.tsv"))
    assert set(t.fold) == {"alpha", "beta", "gamma", "alpha_real", "beta_real", "gamma_real"}
    # a synthetic item goes with the real it was made from
    assert t.fold[[r.path for r in results].index("av_swap/beta3.mp4")] == "beta_real"
    seen = []
    real_fit = ef.fit_table
    monkeypatch.setattr(ef, "fit_table",
                        lambda tab, rows=None, typical=True, objective="balanced": (
                            seen.append(rows), real_fit(tab, rows, typical, objective))[1])
    p, models = ef.out_of_fold(t)
    assert not np.isnan(p).any() and len(seen) == len(models) == 6
    for fold, rows in zip(sorted(set(t.fold)), seen, strict=True):
        fitted_paths = {t.results[i].path for i in np.flatnonzero(rows)}
        assert not fitted_paths & t.held[fold]
        src = fold.removesuffix("_real")
        assert not any(src in path for path in fitted_paths)  # its fakes, its reals, and what was made from them


def test_scores_of_a_dev_fitted_detector_on_sources_it_trained_on_are_left_out_of_the_fit(tmp_path: Path,
                                                                                         monkeypatch):
    import torch

    # a head whose checkpoint lists the files it learned from (the shipped one now learned from every source)
    ckpt = tmp_path / "head.pt"
    torch.save({"metadata": {"train_files": ["A_real_av/grid_lipnet/9.mp4", "B_fake_av/sadtalker/9.mp4"]}}, ckpt)
    monkeypatch.setitem(ef.FITTED_ON_DEV, "lrasd_temporal", str(ckpt))
    items = [_item("A_real_av/grid_lipnet/0.mp4", "real", "g0"),  # a real collection the temporal head trained on
             _item("A_real_av/ghost_inputs/1.mp4", "real", "g1"),  # added to the dev set after it was trained
             _item("av_shift/a.mp4", "fake", "g0", origin="A_real_av/grid_lipnet/0.mp4"),
             _item("B_fake_av/sadtalker/2.mp4", "fake", "g2"),  # a generator it trained on
             _item("B_fake_av/dreamtalk/3.mp4", "fake", "g3")]  # one it never saw
    results = [_result(it, {"visual": 0.3, "temporal": 0.4}) for it in items]
    t = ef.build_table(results, items, split_file=tmp_path / "none.tsv")
    vis, tem = SLOTS.index("visual"), SLOTS.index("temporal")
    assert t.fit_ok[:, vis].all()  # released weights: never fitted on the dev set
    assert list(t.fit_ok[:, tem]) == [False, True, False, False, True]
    assert t.ran[:, tem].all()  # still scored: only the fit leaves them out


def test_without_a_file_list_the_split_train_side_counts_as_seen(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(ef.FITTED_ON_DEV, "lrasd_temporal", "missing.pt")
    split = tmp_path / "split.tsv"
    split.write_text("path\tsplit\nA_real_av/x/0.mp4\ttrain\nA_real_av/y/1.mp4\tval\n")
    assert ef.trained_sources("lrasd_temporal", {"A_real_av/x/0.mp4": "train", "A_real_av/y/1.mp4": "val"}) == {"x"}


def test_each_media_kind_has_its_own_thresholds(tmp_path: Path):
    m = FusionModel(_model().calibrators, 0.0, {}, thresholds=(0.3, 0.8), combiner="noisy-or", leak=0.02,
                    kind_thresholds={"audio": (0.5, 0.95), "video": (0.3, 0.8)})
    m.save(tmp_path / "c.json")
    m = FusionModel.load(tmp_path / "c.json")
    raw = {"audio": 0.9}
    _, _, as_audio = fuse(raw, m, detectors=IDS, applicable=("audio",), kind="audio")
    _, _, as_video = fuse(raw, m, detectors=IDS, applicable=("audio",), kind="video")
    assert as_audio is Verdict.SUSPICIOUS and as_video is Verdict.FAKE  # P(fake) = 0.02 + 0.98 * 0.81 ≈ 0.81


def test_thresholds_spend_the_false_fake_budget_per_kind():
    rng = np.random.default_rng(0)
    p = np.r_[rng.uniform(0, 0.5, 500), rng.uniform(0.3, 0.9, 50)]  # many quiet audio reals, few loud video reals
    kind = np.array(["audio"] * 500 + ["video"] * 50)
    y = np.zeros(550)
    th = ef.kind_thresholds(p, y, kind, 0.02, 0.15)
    for k in ("audio", "video"):
        assert (p[kind == k] >= th[k][1]).mean() <= 0.02
    pooled = ef.pick_thresholds(p, y, 0.02, 0.15)
    assert (p[kind == "video"] >= pooled[1]).mean() > 0.02  # one pooled line would flag the video reals


def test_the_sources_a_dev_fitted_detector_saw_come_from_its_checkpoints_file_list(dev_data: Path, tmp_path: Path,
                                                                                    monkeypatch):
    import torch

    from training.split import read_manifest

    sources = ef.trained_sources("sync:lrasd-head", {"A_real_av/ghost_inputs/x.mp4": "train"})
    listed = torch.load(ef.CHECKPOINTS / "sync_head.pt", weights_only=False)["meta"]["train_files"]
    assert sources == {p.split("/")[1] for p in listed}
    reals = {it.path for it in read_manifest(dev_data / "manifest.tsv") if it.modality == "video_av"
             and it.label == "real"}
    assert set(listed) == reals  # the lip-sync head is refitted on every real talking-face clip
    # a checkpoint that lists nothing is taken to have seen the whole train side of the split
    monkeypatch.setattr(ef, "CHECKPOINTS", tmp_path)
    assert ef.trained_sources("sync:lrasd-head", {"A_real_av/ghost_inputs/x.mp4": "train",
                                                  "A_real_av/other/y.mp4": "val"}) == {"ghost_inputs"}


def test_a_kind_the_fusion_cannot_separate_is_never_called_fake():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 400)
    y = (rng.random(400) < 0.5).astype(float)  # scores carry no information about the label
    th = ef.kind_thresholds(p, y, np.array(["image"] * 400), 0.02, 0.15)
    assert th["image"][1] == 1.0  # FAKE is out of reach: SUSPICIOUS at most
    y_sep = (p > 0.5).astype(float)
    assert ef.kind_thresholds(p, y_sep, np.array(["image"] * 400), 0.02, 0.15)["image"][1] < 1.0


def test_the_output_map_is_monotone_and_travels_with_the_calibration(tmp_path: Path):
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(300), np.ones(300)]
    raw = np.clip(0.3 + 0.4 * y * rng.random(600) + 0.2 * rng.random(600), 0.3, 0.99)  # the leak floors it at 0.3
    out = ef.fit_output(raw, y, np.ones(600))
    mapped = np.array([out(x) for x in raw])
    assert np.all(np.diff(mapped[np.argsort(raw)]) >= -1e-12)  # monotone: AUC and verdict order unchanged
    assert mapped[y == 0].mean() < 0.45 < 0.55 < mapped[y == 1].mean()  # a clean clip no longer reads as 0.3+
    m = FusionModel(_model().calibrators, 0.0, {}, combiner="noisy-or", leak=0.3, output=out)
    m.save(tmp_path / "c.json")
    back = FusionModel.load(tmp_path / "c.json")
    raw_scores = {"audio": 0.4, "lip_sync": 0.9}
    fused = fuse(raw_scores, back, detectors=IDS)[0].fake_probability
    unmapped = noisy_or({s: back.calibrators[IDS[s][0]].reliability * back.calibrators[IDS[s][0]](v)
                         for s, v in raw_scores.items()}, 0.3)
    assert fused == pytest.approx(out(unmapped))


def test_a_kind_at_chance_does_not_flatten_the_output_map():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(300), np.ones(300)]
    raw = np.clip(0.3 + 0.4 * y * rng.random(600) + 0.2 * rng.random(600), 0.3, 0.99)
    # three inverted image fakes that weigh as much as their 100 reals (the table's group mass)
    img_y = np.r_[np.zeros(100), np.ones(3)]
    img_raw = np.r_[np.full(100, 0.4), np.full(3, 0.001)]
    p, yy = np.r_[raw, img_raw], np.r_[y, img_y]
    w = np.r_[np.ones(600), np.ones(100), np.full(3, 100 / 3)]
    kind = np.array(["video"] * 600 + ["image"] * 103)
    told = ef.fit_output(p, yy, w, kind)
    blind = ef.fit_output(p, yy, w)
    assert told.a == pytest.approx(ef.fit_output(raw, y, np.ones(600)).a)  # only the kind it can tell apart
    assert blind.a < told.a / 2  # what the chance-level kind did to the map


def _typical_table() -> ef.Table:
    """Real videos whose soundtrack raises audio false alarms, fakes without sound that only the face detector sees,
    an audio file and a video nothing scored."""
    rng = np.random.default_rng(0)
    n = 60
    x = np.zeros((2 * n + 2, len(SLOTS)))
    ran = np.zeros_like(x, bool)
    v, a = SLOTS.index("visual"), SLOTS.index("audio")
    x[:n, v], x[n:2 * n, v] = rng.normal(-1.0, 1.0, n), rng.normal(0.0, 1.0, n)  # fakes: visual a little higher
    x[:n, a] = rng.normal(0.5, 1.0, n)  # the reals' soundtracks: frequent audio false alarms
    ran[:2 * n, v] = ran[:n, a] = True
    x[-2, a], ran[-2, a] = 3.0, True  # an audio file
    y = np.r_[np.zeros(n), np.ones(n), 1, 1]
    family = np.array(["video"] * (2 * n + 1) + ["audio"])
    family[-2] = "audio"
    family[-1] = "video"  # the last row: a video nothing scored
    return ef.Table([None] * len(y), x, ran, ran.copy(), y, family, np.zeros(len(y), bool),
                    np.array(["f"] * len(y)), {}, {})


def test_a_video_detector_that_could_not_run_reads_as_on_a_typical_real_video():
    t = _typical_table()
    a = SLOTS.index("audio")
    typical = ef.typical_real(t, np.ones(len(t.y), bool))
    assert typical[a] == pytest.approx(np.median(t.x[:60, a]))  # the real videos' median, not the audio file's
    assert np.isnan(typical[SLOTS.index("lip_sync")])  # it never ran: nothing to count
    filled = ef.with_typical(t, typical)
    assert (filled.x[60:120, a] == typical[a]).all() and filled.ran[60:120, a].all()
    np.testing.assert_array_equal(filled.x[:60], t.x[:60])  # what ran is never replaced
    assert filled.x[-2, a] == 3.0 and not filled.ran[-2, SLOTS.index("visual")]  # an audio file calls for no face
    assert not filled.ran[-1].any()  # nothing scored it: still NOT_APPLICABLE
    assert not filled.ran[:, SLOTS.index("lip_sync")].any()


def test_with_typical_a_silent_fake_is_no_longer_ranked_below_reals_for_its_missing_soundtrack():
    """The structure that lost under LOSO (``training.fusion_variants``), kept as a variant: it does what it says."""
    from training.metrics import auc

    t = _typical_table()
    videos = np.arange(120)
    without = ef.fit_table(t, objective="likelihood")  # this table has no file paths to weigh sources by
    p_without = without.predict(t.x, t.ran)[videos]
    with_ = ef.fit_table(t, typical=True, objective="likelihood")
    p_with = ef.predict_table(with_, t, np.ones(len(t.y), bool))[videos]
    # the visual detector ranks these fakes above the reals; the reals' audio false alarms hid it
    assert auc(t.y[videos], t.x[videos, 0]) > 0.65
    assert auc(t.y[videos], p_with) > auc(t.y[videos], p_without) + 0.02
    assert np.isnan(ef.predict_table(with_, t, np.ones(len(t.y), bool))[-1])
    # a silent fake that looks like a real to the face detector scores as that real with a typical soundtrack would
    k = len(SLOTS)
    probe = ef.Table([None] * 2, np.array([[0.2, 0, with_.typical[2]] + [0] * (k - 3), [0.2] + [0] * (k - 1)]),
                     np.array([[1, 0, 1] + [0] * (k - 3), [1] + [0] * (k - 1)], bool), np.ones((2, k), bool),
                     np.array([0, 1]),
                     np.array(["video", "video"]), np.zeros(2, bool), np.array(["f", "f"]), {}, {})
    pr = ef.predict_table(with_, probe, np.ones(2, bool))
    assert pr[0] == pytest.approx(pr[1])



def _big_and_small_source(seed=0):
    """A big fake source one detector sees weakly, a small one another detector sees clearly, and a noisy third."""
    rng = np.random.default_rng(seed)
    nr, na, nb = 600, 400, 20
    y = np.r_[np.zeros(nr), np.ones(na + nb)]
    src = np.r_[np.zeros(nr), np.ones(na), np.full(nb, 2)]
    x = rng.normal(-2.0, 1.0, (len(y), 3))
    x[src == 1, 0] += 1.5
    x[src == 2, 1] += 3.0
    x[:, 2] = rng.normal(0.0, 2.0, len(y)) + 1.0 * (src == 1)
    return x, y, src


def test_the_ranking_fit_serves_every_fake_source_alike():
    from training.metrics import auc

    x, y, src = _big_and_small_source()
    m = np.ones_like(x, bool)
    likelihood = ef.fit(x, m, y, np.ones(len(y)))
    # each source's fakes weigh alike: the small source is no longer outvoted by the big one's 400 items
    w = np.where(y == 0, 1 / 600, np.where(src == 1, 0.5 / 400, 0.5 / 20))
    ranked = ef.fit_rank(x, m, y, w, np.array(["video"] * len(y)), likelihood)

    def per_source(p):
        s = p.predict(x, m)
        return [auc(y[(src == 0) | (src == k)], s[(src == 0) | (src == k)]) for k in (1, 2)]

    before, after = per_source(likelihood), per_source(ranked)
    assert np.mean(after) > np.mean(before) + 0.01 and after[1] > before[1]
    assert ranked.r[1] > likelihood.r[1]  # the small source's detector is trusted more
    p = ranked.predict(x, m)
    assert (p >= 0).all() and (p <= 1).all() and 0 <= ranked.leak < 1


def test_source_weights_give_each_fake_source_and_each_kinds_reals_their_mass():
    items = [_item(f"A_real_av/r{k}.mp4", "real", f"r{k}") for k in range(6)]
    items += [_item(f"B_fake_av/big/{k}.mp4", "fake", f"b{k}") for k in range(8)]
    items += [_item(f"B_fake_av/small/{k}.mp4", "fake", f"s{k}") for k in range(2)]
    items += [_item(f"av_swap/{k}.mp4", "fake", f"r{k}", origin=f"A_real_av/r{k}.mp4") for k in range(3)]
    t = ef.build_table([_result(it, {"visual": 0.5}) for it in items], items, split_file=Path("/no/split.tsv"))
    w = ef.source_weights(t)
    paths = np.array([r.path for r in t.results])
    big, small = np.char.find(paths, "/big/") >= 0, np.char.find(paths, "/small/") >= 0
    assert w[big].sum() == pytest.approx(w[small].sum()) and w[small][0] == pytest.approx(4 * w[big][0])
    assert w[t.synthetic].sum() == pytest.approx(ef.GROUP_MASS[("video", 1, True)])
    assert w[t.y == 0].sum() == pytest.approx(ef.GROUP_MASS[("video", 0, False)])
    with pytest.raises(ValueError, match="objective"):
        ef.fit_table(t, objective="auc")


def test_a_kind_whose_held_out_reals_are_called_fake_too_often_is_never_called_fake():
    items = [_item(f"A_real/r{k}.wav", "real", f"r{k}", modality="audio") for k in range(50)]
    items += [_item(f"A_real_av/v{k}.mp4", "real", f"v{k}") for k in range(50)]
    t = ef.build_table([_result(it, {"audio": 0.5}) for it in items], items, split_file=Path("/no/split.tsv"))
    verdict = ["FAKE" if k in (0, 1) or k == 50 else "AUTHENTIC" for k in range(100)]  # audio 2 of 50, video 1 of 50
    gated, over = ef.gate(verdict, t, budget=0.02)
    assert over == {"audio"}
    assert gated[0] == gated[1] == "SUSPICIOUS" and gated[50] == "FAKE"
    assert ef.gate(verdict, t, budget=0.05)[1] == set()
    # rows left out of the decision (processings the fusion never saw) are judged by the others' rate
    seen = np.array([k not in (0, 1) for k in range(100)])
    assert ef.gate(verdict, t, budget=0.02, seen=seen)[1] == set()


def test_target_subsets_score_each_named_part_against_every_real_of_its_kind():
    j = SLOTS.index("lip_sync")
    n_real, n_big, n_small = 20, 6, 4
    n = n_real + n_big + n_small + 1  # and one audio file, never among a video part's reals
    x, ran = np.zeros((n, len(SLOTS))), np.zeros((n, len(SLOTS)), bool)
    x[:n_real, j] = np.linspace(-3, 0, n_real)
    x[n_real:n_real + n_big, j] = np.linspace(1, 2, n_big)  # lip sync sees every large shift
    ran[:n_real + n_big, j] = True  # ... and could not run on the small ones
    p = np.r_[np.linspace(0.1, 0.6, n_real), [0.05, 0.7, 0.8, 0.9, 0.95, 0.99], [0.5] * n_small, 0.9]
    y = np.r_[np.zeros(n_real), np.ones(n_big + n_small), 0]
    paths = [f"real{i}" for i in range(n_real)] + [f"av_shift/b{i}.mp4" for i in range(n_big)] + \
        [f"av_shift/s{i}.mp4" for i in range(n_small)] + ["voice.wav"]
    results = [ItemResult(q, "", "", "", "", "", None, None, {}, {}, {}, None, 0.0, None) for q in paths]
    t = ef.Table(results, x, ran, ran.copy(), y, np.array(["video"] * (n - 1) + ["audio"]), np.zeros(n, bool),
                 np.array(["f"] * n), {}, {})
    subsets = {f"av_shift/b{i}.mp4": "av_shift >= 0.3 s" for i in range(n_big)} | {
        f"av_shift/s{i}.mp4": "av_shift < 0.3 s" for i in range(n_small)}
    parts = ef.target_subsets(t, p, subsets)
    big = parts["av_shift >= 0.3 s"]
    assert big["fakes"] == n_big and big["lip_sync_ran"] == n_big and big["lip_sync_auc"] == 1.0
    assert big["fused_auc"] == pytest.approx((5 * n_real + 1 * 0) / (n_big * n_real))  # one fake below every real
    small = parts["av_shift < 0.3 s"]
    assert small["lip_sync_ran"] == 0 and small["lip_sync_auc"] is None
    assert small["fused_auc"] == pytest.approx(np.mean([(p[:n_real] < 0.5).mean() + 0.5 * (p[:n_real] == 0.5).mean()]))

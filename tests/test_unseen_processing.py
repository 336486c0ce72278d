"""Reals after a processing the fusion never saw: their rows are scored, never fitted on, never set a threshold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_evidence_fusion import IDS

from pipeline.report import SLOTS
from training import evidence_fusion as ef
from training import unseen_processing as up
from training.evaluate import ItemResult
from training.split import ManifestItem


def _table(unseen_score: float, with_copies: bool = True, fake_copy_score: float | None = None) -> ef.Table:
    """Four real and four fake sources; every real again as a "down360" copy whose scores read ``unseen_score``
    (and, given ``fake_copy_score``, every fake again as a "sharpen" copy reading that)."""
    rng = np.random.default_rng(0)
    items, results = [], []
    for src in ("alpha", "beta", "gamma", "delta"):
        for k in range(8):
            real = ManifestItem(f"A_real_av/{src}_real/{k}.mp4", "real", "video_av", "none", f"id:{src}{k}", 5.0,
                                Path("/nowhere"))
            fake = ManifestItem(f"B_fake_av/{src}/{k}.mp4", "fake", "video_av", "m", f"id:{src}{k}", 5.0,
                                Path("/nowhere"))
            items += [real, fake]
            copies = ((real, None), (fake, None), (real, "down360"))
            if fake_copy_score is not None:
                copies += ((fake, "sharpen"),)
            for it, copy in copies:
                level = {None: 0.15 + 0.5 * it.is_fake, "down360": unseen_score, "sharpen": fake_copy_score}[copy]
                raw = {s: float(np.clip(level + rng.normal(0, 0.08), 0.01, 0.99)) for s in SLOTS}
                if copy == "down360" and not with_copies:
                    continue
                results.append(ItemResult(it.path, it.label, it.modality, it.manipulation, it.group, "", None, None,
                                          {s: "ok" for s in SLOTS}, raw, {}, None, 1.0, copy,
                                          detectors={s: list(IDS[s]) for s in SLOTS}))
    return ef.build_table(results, items, split_file=Path("/no/split.tsv"))


def test_unseen_rows_are_never_fitted_on_and_the_rest_is_judged_as_make_calibrate_would(monkeypatch):
    t = _table(0.5)
    unseen = up.unseen_rows(t, {"down360"})
    assert unseen.sum() == 32 and not unseen[t.y == 1].any()
    fitted = []
    real_fit = ef.fit_table
    monkeypatch.setattr(ef, "fit_table", lambda tab, rows=None, typical=False, objective="balanced": (
        fitted.append([r.reencode for r, keep in zip(tab.results, rows, strict=True) if keep]),
        real_fit(tab, rows, typical, objective))[1])
    p, verdict = up.judged(t, unseen)
    assert fitted and not any("down360" in f for f in fitted)
    assert not np.isnan(p[unseen]).any() and all(verdict[i] for i in np.flatnonzero(unseen))
    # the other rows score as in a table that never held the copies (same fits, same weights)
    alone = _table(0.5, with_copies=False)
    p_alone, verdict_alone = up.judged(alone, np.zeros(len(alone.y), bool))
    np.testing.assert_allclose(p[~unseen], p_alone, atol=1e-9)
    assert [verdict[i] for i in np.flatnonzero(~unseen)] == verdict_alone


def test_a_processing_that_looks_fake_is_caught_only_when_the_fit_never_saw_it():
    t = _table(0.8)  # the processed reals score like the fakes
    unseen = up.unseen_rows(t, {"down360"})
    p, verdict = up.judged(t, unseen)
    held_out = up.by_processing(t, p, verdict)
    assert held_out["as-is"]["fake"] <= 0.05
    assert held_out["down360"]["fake"] > 0.5  # the budget was never spent on them: the report shows the damage
    assert len(held_out["down360"]["called_fake"]) == round(held_out["down360"]["fake"] * 32)
    # fitted with them, the same rows spend the budget and hide it: why the check leaves them out
    p_in, verdict_in = up.judged(t, np.zeros_like(unseen))
    assert up.by_processing(t, p_in, verdict_in)["down360"]["fake"] < held_out["down360"]["fake"]


def test_by_processing_counts_reals_of_the_family_only():
    t = _table(0.3)
    p = np.full(len(t.y), 0.5)
    verdict = ["FAKE" if r.reencode else "AUTHENTIC" for r in t.results]
    fam = t.family.copy()
    fam[0] = "audio"
    table = up.by_processing(replace(t, family=fam), p, verdict)
    medians = table["down360"].pop("median_raw_log_odds")
    assert table["down360"] == {"n": 32, "fake": 1.0, "suspicious_or_fake": 1.0,
                                "called_fake": sorted(r.path for r in t.results if r.reencode)}
    assert table["as-is"]["n"] == 31 and table["as-is"]["fake"] == 0.0
    # which detector a processing moves: the copies were scored ~0.3 by every detector, the as-is reals ~0.15
    assert set(medians) == set(SLOTS)
    for slot in SLOTS:
        assert medians[slot] == _log_odds_near(0.3)
        assert table["as-is"]["median_raw_log_odds"][slot] == _log_odds_near(0.15)


def _log_odds_near(p: float):
    return pytest.approx(np.log(p / (1 - p)), abs=0.4)  # the two levels are 0.9 apart


def test_a_processing_that_hides_fakes_shows_in_the_fakes_table():
    t = _table(0.15, fake_copy_score=0.15)  # sharpened fakes score like reals
    unseen = up.unseen_rows(t, {"down360", "sharpen"})
    p, verdict = up.judged(t, unseen)
    fakes = up.fakes_by_processing(t, p, verdict)
    assert set(fakes) == {"as-is", "sharpen"} and fakes["sharpen"]["n"] == 32
    assert fakes["as-is"]["auc_against_as_is_reals"] > 0.95
    assert 0.3 < fakes["sharpen"]["auc_against_as_is_reals"] < 0.7  # hidden: no better than chance
    assert fakes["sharpen"]["authentic"] > fakes["as-is"]["authentic"]
    assert fakes["sharpen"]["median_raw_log_odds"]["visual"] < fakes["as-is"]["median_raw_log_odds"]["visual"]

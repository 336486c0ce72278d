"""Leave-one-source-out folds and the per-source report."""

from __future__ import annotations

from pathlib import Path

from training.evaluate import ItemResult
from training.protocol import FUSED, folds, per_source, source_of
from training.split import ManifestItem, read_manifest


def _it(path: str, label: str, group: str, modality: str = "video_av") -> ManifestItem:
    return ManifestItem(path, label, modality, "none" if label == "real" else "talking_head", group, 5.0, Path("."))


def test_a_fold_takes_a_source_with_the_reals_it_was_made_from(dev_data):
    items = read_manifest(dev_data / "manifest.tsv")
    fs = folds(items)
    by_src = {f.source: f for f in fs}
    assert "sadtalker" in by_src and all(any(it.label == "fake" and source_of(it.path) == f.source for it in items)
                                         for f in fs)
    groups = {it.path: set(it.group.split("|")) for it in items}
    for f in fs:
        held = f.held_out
        # closed under group links: nothing tied to a held-out item stays on the fitting side
        tokens = set().union(*(groups[p] for p in held))
        assert all(p in held for p, g in groups.items() if g & tokens and g != {""}), f.source
    assert len(fs) >= 20


def test_per_source_scores_each_source_against_all_reals():
    items = [_it("A_real_av/r1/a.mp4", "real", "id:1"), _it("A_real_av/r2/b.mp4", "real", "id:2"),
             _it("B_fake_av/gen1/a.mp4", "fake", "id:1"), _it("B_fake_av/gen2/x.mp4", "fake", "id:3")]

    def res(it, p, verdict):
        return ItemResult(it.path, it.label, it.modality, it.manipulation, it.group, verdict, p, None,
                          {"visual": "ok"}, {"visual": p}, {}, 0.9, 1.0, None)

    results = [res(items[0], 0.1, "AUTHENTIC"), res(items[1], 0.9, "FAKE"), res(items[2], 0.95, "FAKE"),
               res(items[3], 0.05, "AUTHENTIC")]
    rows, summary = per_source(results, items, split_file=None)
    by = {r.source: r for r in rows}
    assert set(by) == {"gen1", "gen2"} and by["gen1"].n_real == 2
    assert by["gen1"].auc[FUSED] == 1.0 and by["gen2"].auc[FUSED] == 0.0  # each against BOTH reals
    assert by["gen2"].fake_authentic == 1.0 and by["gen1"].fake_called_fake == 1.0
    assert summary["fused_auc_worst"] == 0.0 and summary["worst_source"] == "gen2"
    assert summary["real_called_fake"] == 0.5 and summary["real_called_fake_by_source"]["r2"]["fake"] == 1.0


def test_per_source_also_scores_each_source_against_its_own_reals_only():
    """A source whose fakes differ from the OTHER collections (bandwidth, codec) but not from the recordings of its
    own page: high against every real, chance against its own."""
    items = [_it("A_real/page/r1.wav", "real", "page:1", "audio"), _it("A_real/page/r2.wav", "real", "page:1", "audio"),
             _it("A_real/books/b1.wav", "real", "id:9", "audio"), _it("A_real/books/b2.wav", "real", "id:8", "audio"),
             _it("B_fake/tts/f1.wav", "fake", "page:1", "audio"), _it("B_fake/tts/f2.wav", "fake", "page:1", "audio")]

    def res(it, p):
        return ItemResult(it.path, it.label, it.modality, it.manipulation, it.group, "SUSPICIOUS", p, None,
                          {"audio": "ok"}, {"audio": p}, {}, None, 1.0, None)

    scores = [0.8, 0.6, 0.1, 0.2, 0.7, 0.7]  # the page's reals score like its fakes
    rows, _ = per_source([res(it, p) for it, p in zip(items, scores, strict=True)], items, split_file=None)
    (row,) = rows
    assert row.n_real == 4 and row.n_own_real == 2
    assert row.auc[FUSED] == 0.75 and row.fused_auc_own_reals == 0.5

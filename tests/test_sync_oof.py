"""Out-of-fold lip-sync scores for the fusion (training/sync_oof.py) and the features `make eval` keeps for them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from conftest import DEV_DATA
from fake_pipeline import FakePipeline

from pipeline import media, sync
from training import evidence_fusion as ef
from training import sync_oof
from training.evaluate import ItemResult, run_items, sync_variant
from training.split import ManifestItem, read_manifest
from training.train_sync import FeatureCache


def _model(sha: str):
    return SimpleNamespace(weights_info=SimpleNamespace(sha256=sha))


class Capturing(FakePipeline):
    """A pipeline double with a face detector and a lip-sync head on LR-ASD, whose lip-sync stage is fed a known
    window: what `make eval` must keep."""

    def __init__(self):
        super().__init__()
        self.identities = {}
        self.c = SimpleNamespace(face=SimpleNamespace(detector=_model("face")),
                                 sync=SimpleNamespace(detector=SimpleNamespace(lrasd=_model("lrasd"))))
        rng = np.random.default_rng(0)
        self.window = sync.TrackWindow(3, np.arange(50) / 25.0, np.ones(50, bool),
                                       rng.integers(0, 255, (50, 96, 96), dtype=np.uint8), None,
                                       rng.standard_normal((50, 128)).astype(np.float32))
        self.audio = media.AudioTrack(rng.standard_normal(32000).astype(np.float32), 16000, 0.5)

    def fingerprint(self, **_):
        return "capturing"

    def run(self, source, progress=None, source_name=None, capture=None):
        if capture is not None and Path(source).suffix != ".wav":
            capture["sync_inputs"] = (self.audio, [self.window], 3)
        return super().run(source, progress, source_name)


def test_eval_keeps_each_talking_face_videos_lip_sync_inputs_where_the_trainer_finds_them(tmp_path: Path):
    items = read_manifest(DEV_DATA / "manifest.tsv")
    video = [it for it in items if it.modality == "video_av"][:1]
    audio = [it for it in items if it.modality == "audio"][:1]
    p = Capturing()
    run_items(video + audio, tmp_path / "eval", None, p, sync_features=tmp_path / "cache")
    cache = FeatureCache(tmp_path / "cache", _model("face"), _model("lrasd"))
    assert cache.has(video[0], "orig") and not cache.has(audio[0], "orig")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    feat = cache.get(video[0], "orig")  # a hit: no extraction (the doubles could not extract anything)
    w = feat.windows[0]
    assert feat.main_track_id == 3 and w.track_id == 3 and w.faces is None
    assert np.array_equal(w.visual, p.window.visual) and np.array_equal(w.mouth, p.window.mouth)
    assert np.array_equal(feat.audio.samples, p.audio.samples) and feat.audio.source_offset_s == 0.5
    # another extractor's cache never sees them
    assert not FeatureCache(tmp_path / "cache", _model("face"), _model("lrasd-2")).has(video[0], "orig")
    assert sync_variant("whatsapp") != sync_variant(None) == "orig"


def test_eval_without_a_features_folder_keeps_nothing(tmp_path: Path):
    video = [it for it in read_manifest(DEV_DATA / "manifest.tsv") if it.modality == "video_av"][:1]
    run_items(video, tmp_path / "eval", None, Capturing())
    assert not list(tmp_path.rglob("*.npz"))


def _row(path: str, label: str, status: str = "ok", score: float | None = 0.2, reencode: str | None = None):
    return ItemResult(path, label, "video_av", "none", "g", "AUTHENTIC", 0.3, None,
                      {"lip_sync": status, "audio": "ok"}, {"lip_sync": score, "audio": 0.4}, {}, 0.9, 1.0, reencode,
                      detectors={"lip_sync": ["sync:lrasd-head", "old"], "audio": ["aasist", "a"]})


def _item(path: str, label: str, origin: str = "", group: str = "") -> ManifestItem:
    return ManifestItem(path, label, "video_av", "none", group or path, None, Path("/nowhere"), origin)


def test_each_row_is_scored_by_a_head_fitted_without_its_fold(monkeypatch):
    """The head that scores a row never saw a real of the row's fold, nor the clip a synthetic row was made from."""
    items = [_item("A_real_av/one/a.mp4", "real", group="p1"), _item("A_real_av/one/b.mp4", "real", group="p2"),
             _item("A_real_av/two/c.mp4", "real", group="p3"), _item("B_fake_av/gen/f.mp4", "fake", group="p3"),
             _item("av_swap/s.mp4", "fake", origin="A_real_av/one/a.mp4")]
    fold_of, held = ef.fusion_folds(items)
    assert fold_of["av_swap/s.mp4"] == "one" and fold_of["B_fake_av/gen/f.mp4"] == "gen"
    assert "A_real_av/two/c.mp4" in held["gen"]  # the generator's fold holds out the clip it was fed
    variants = [SimpleNamespace(clip=it.path, kind="real") for it in items if it.label == "real"]
    fitted_on: list[set[str]] = []

    def fit(train, cfg):
        fitted_on.append({v.clip for v in train})
        return SimpleNamespace(max_offset=15, tag=len(fitted_on)), None

    class Estimator:
        def __init__(self, lrasd, head, max_offset, method):
            self.head = head

        def analyse_windows(self, windows, audio, main):
            return SimpleNamespace(lip_sync_error=float(self.head.tag))

    monkeypatch.setattr("training.sync_loso.fit_variant", fit)
    monkeypatch.setattr(sync, "SyncEstimator", Estimator)
    cache = SimpleNamespace(has=lambda it, v: it.path != "A_real_av/one/b.mp4" or v != "orig",
                            get=lambda it, v: SimpleNamespace(windows=(), audio=None, main_track_id=None))
    rows = [_row(it.path, it.label) for it in items] + [_row("A_real_av/one/b.mp4", "real", reencode="whatsapp"),
                                                        _row("A_real_av/two/c.mp4", "real", status="not_applicable")]
    by_path = {it.path: it for it in items}
    scores, counts = sync_oof.score_rows(rows, by_path, variants, None, None, cache, fold_of, held, extract=None)
    heads = {}
    for i, r in enumerate(rows):
        if r.status["lip_sync"] != "ok":
            assert i not in scores  # a lip-sync check that did not run stays as it was
            continue
        if r.path == "A_real_av/one/b.mp4" and r.reencode is None:
            assert scores[i] is None  # its features were not kept: no score rather than the in-sample one
            continue
        head = int(scores[i])
        heads[(r.path, r.reencode)] = head
        assert not fitted_on[head - 1] & held[fold_of[r.path]]
        assert by_path[r.path].origin not in fitted_on[head - 1]
    assert heads[("av_swap/s.mp4", None)] == heads[("A_real_av/one/a.mp4", None)]  # one head per fold
    assert counts["no features kept"] == 1 and counts["scored"] == 5


def test_a_rewritten_row_is_marked_out_of_fold_and_counts_for_the_fit(tmp_path: Path):
    real = "A_real_av/pcavs_voxceleb/a.mp4"  # a collection the shipped lip-sync head was fitted on
    r = sync_oof.rewrite(_row(real, "real"), 0.7, ("sync:lrasd-head", "new"))
    assert r.raw["lip_sync"] == 0.7 and r.detectors["lip_sync"] == ["sync:lrasd-head", "new"]
    assert r.oof_slots == ["lip_sync"] and r.raw["audio"] == 0.4
    gone = sync_oof.rewrite(_row(real, "real"), None, ("sync:lrasd-head", "new"))
    assert gone.status["lip_sync"] == sync_oof.OOF_STATUS_MISSING and gone.raw["lip_sync"] is None
    # the fusion's table: the shipped head's own score on a clip it saw is left out of the fit, an out-of-fold one
    # is usable
    items = [_item(real, "real"), _item("B_fake_av/gen/f.mp4", "fake")]
    j = list(ef.SLOTS).index("lip_sync")
    in_sample = ef.build_table([_row(real, "real")], items, split_file=tmp_path / "none.tsv")
    assert in_sample.ran[0, j] and not in_sample.fit_ok[0, j]
    fake = sync_oof.rewrite(_row("B_fake_av/gen/f.mp4", "fake"), 0.9, ("sync:lrasd-head", "new"))
    t = ef.build_table([r, fake], items, split_file=tmp_path / "none.tsv")
    assert t.fit_ok[:, j].all()
    assert t.identities["lip_sync"] == ("sync:lrasd-head", "new")


def test_item_results_written_before_the_out_of_fold_mark_still_load():
    old = dict(_row("a", "real").__dict__)
    old.pop("oof_slots")
    assert ItemResult(**old).oof_slots is None


def test_features_the_eval_did_not_keep_are_made_again_the_same_way(monkeypatch):
    made = []

    def extract(cache, item, variant, reencode):
        made.append((item.path, variant, reencode))
        return SimpleNamespace(windows=(), audio=None, main_track_id=None)

    class Estimator:
        def __init__(self, *a, **k):
            pass

        def analyse_windows(self, windows, audio, main):
            return SimpleNamespace(lip_sync_error=0.5)

    monkeypatch.setattr("training.sync_loso.fit_variant", lambda train, cfg: (SimpleNamespace(max_offset=15), None))
    monkeypatch.setattr(sync, "SyncEstimator", Estimator)
    items = [_item("A_real_av/one/a.mp4", "real")]
    fold_of, held = ef.fusion_folds(items)
    cache = SimpleNamespace(has=lambda it, v: False)
    rows = [_row(items[0].path, "real"), _row(items[0].path, "real", reencode="whatsapp")]
    scores, counts = sync_oof.score_rows(rows, {it.path: it for it in items}, [], None, None, cache, fold_of, held,
                                         extract=extract)
    assert scores == {0: 0.5, 1: 0.5} and counts["features made again"] == 2
    assert made == [(items[0].path, "orig", None), (items[0].path, "eval-whatsapp", "whatsapp")]

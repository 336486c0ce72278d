"""Out-of-fold visual scores for the fusion (training/visual_oof.py) and the face crops `make eval` keeps for them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import DEV_DATA
from fake_pipeline import FakePipeline

from pipeline.settings import Settings
from pipeline.stages import score_visual_crops
from training import evidence_fusion as ef
from training import visual_oof
from training.evaluate import ItemResult, run_items, visual_cache
from training.features import VisualInputCache
from training.split import ManifestItem, read_manifest

TALKING = "A_real_av/sadtalker_hdtf/examples__ref_video__WDA_AlexandriaOcasioCortez_000.mp4"


def _crops(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)


class Capturing(FakePipeline):
    """A pipeline double with a face and a visual detector whose visual stage is fed known crops."""

    def __init__(self, face_sha: str = "face"):
        super().__init__(settings=Settings())
        self.identities = {}
        self.c = SimpleNamespace(face=SimpleNamespace(available=True, detector=SimpleNamespace(
                                     weights_info=SimpleNamespace(sha256=face_sha))),
                                 visual=SimpleNamespace(available=True, detector=SimpleNamespace(input_size=8)),
                                 sync=SimpleNamespace(detector=None))
        self.crops = {0: _crops(0, 5), 4: _crops(1, 2)}

    def _visual_preprocess(self):
        return SimpleNamespace(crop="aligned", input_size=8, aggregation="mean")

    def fingerprint(self, **_):
        return "capturing"

    def run(self, source, progress=None, source_name=None, capture=None):
        if capture is not None and Path(source).suffix in (".mp4", ".jpg"):  # the visual stage ran
            capture["visual_inputs"] = (self.crops, [0])
        return super().run(source, progress, source_name)


def test_eval_keeps_the_visual_stages_crops_keyed_by_file_variant_and_crop_maker(tmp_path: Path):
    items = read_manifest(DEV_DATA / "manifest.tsv")
    video = [it for it in items if it.modality == "video_av"][:1]
    audio = [it for it in items if it.modality == "audio"][:1]
    p = Capturing()
    run_items(video + audio, tmp_path / "eval", None, p, visual_features=tmp_path / "vis")
    run_items(video, tmp_path / "eval-wa", "whatsapp", p, visual_features=tmp_path / "vis")
    cache = visual_cache(p, tmp_path / "vis")
    crops, substantial = cache.get(video[0].file, "orig")
    assert substantial == [0] and set(crops) == {0, 4}
    assert all(np.array_equal(crops[t], p.crops[t]) for t in crops)
    assert cache.has(video[0].file, "eval-whatsapp") and not cache.has(audio[0].file, "orig")
    assert len(list((tmp_path / "vis").glob("*.npz"))) == 2
    # crops of another face detector, or of another crop size, are never served
    assert not visual_cache(Capturing("face-2"), tmp_path / "vis").has(video[0].file, "orig")
    other = VisualInputCache(tmp_path / "vis", "face", "aligned", 16, Settings())
    assert other.get(video[0].file, "orig") is None


def test_visual_score_is_the_max_over_substantial_tracks_of_per_track_aggregates():
    crops = {1: np.zeros((3, 2, 2, 3)), 2: np.ones((2, 2, 2, 3)), 7: np.full((1, 2, 2, 3), 2.0)}
    probs = {0.0: 0.1, 1.0: 0.6, 2.0: 0.99}
    calls = []

    def predict(x):
        calls.append(len(x))
        return SimpleNamespace(fake_prob=np.array([probs[float(c.flat[0])] for c in x]))

    clip, tracks = score_visual_crops(predict, crops, [1, 2], "mean")
    assert calls == [6]  # one batched call for every face of every track
    assert clip == pytest.approx(0.6)  # track 7 is too short to count for the clip, though it is scored
    assert tracks[7][0] == pytest.approx(0.99) and len(tracks[1][1]) == 3


def test_pipeline_captures_exactly_what_its_trained_stages_scored(shared_weights):
    import pipeline

    p = pipeline.build(Settings(device="cpu", explain=False))
    captured: dict = {}
    rep = p.run(DEV_DATA / TALKING, capture=captured)
    crops, substantial = captured["visual_inputs"]
    clip, _ = score_visual_crops(p.c.visual.detector.predict, crops, substantial, p._visual_preprocess().aggregation)
    assert clip == pytest.approx(rep.detector("visual").score, abs=1e-6)
    assert sum(len(c) for c in crops.values()) == rep.detector("visual").extra("faces_scored")
    # the temporal head's embedding sequences, scored again by the rule a refitted head is scored with
    seqs = captured["temporal_inputs"]
    assert seqs and all(s.shape[1] == 128 and len(s) >= p.c.temporal.detector.num_frames for s in seqs)
    probs, _ = p.c.temporal.detector.predict_sequences(seqs)
    assert len(probs) == rep.detector("temporal").extra("windows")
    assert float(probs.mean()) == pytest.approx(rep.detector("temporal").score, abs=1e-9)
    # the audio clip score is the mean of the windows kept
    starts, ends, window_probs = captured["audio_windows"]
    assert len(window_probs) == rep.detector("audio").extra("windows") and np.all(ends - starts > 4.0)
    assert float(np.mean(window_probs)) == pytest.approx(rep.detector("audio").score, abs=1e-9)
    windows, features = captured["audio_inputs"]  # AASIST reads its windows alone: no context features
    assert features is None
    assert windows.shape == (len(window_probs), p.c.audio.detector.window_samples)
    assert np.allclose(p.c.audio.detector.predict(windows).fake_prob, window_probs, atol=1e-6)


def test_folds_are_packed_so_each_bin_holds_out_the_union_of_its_folds_reals():
    excluded = {"a": {"r1", "r2"}, "b": {"r2"}, "c": {"r3"}, "d": {"r4", "r5", "r6"}, "e": {"r6"}}
    bins = visual_oof.pack_folds(excluded, 6, 3)
    assert sorted(f for b in bins for f in b) == sorted(excluded)
    assert len(bins) <= 3
    where = {f: i for i, b in enumerate(bins) for f in b}
    assert where["b"] == where["a"] and where["e"] == where["d"]  # nested folds cost nothing where they join


def _item(path: str, label: str, origin: str = "", group: str = "", modality: str = "video_av") -> ManifestItem:
    return ManifestItem(path, label, modality, "none", group or path, None, Path("/nowhere") / path, origin)


def _row(path: str, label: str, status: str = "ok", reencode: str | None = None) -> ItemResult:
    return ItemResult(path, label, "video_av", "none", "g", "AUTHENTIC", 0.3, None,
                      {"visual": status, "audio": "ok"}, {"visual": 0.2, "audio": 0.4}, {}, 0.9, 1.0, reencode,
                      detectors={"visual": ["mesonet:mesoinception_df", "old"], "audio": ["aasist", "a"]})


def test_each_row_is_scored_by_a_model_that_never_learned_its_folds_reals(monkeypatch):
    from training.train_visual import FileCrops, TrainFile

    items = [_item("A_real_av/one/a.mp4", "real", group="p1"), _item("A_real_av/one/b.mp4", "real", group="p2"),
             _item("A_real_av/two/c.mp4", "real", group="p3"), _item("B_fake_av/gen/f.mp4", "fake", group="p3"),
             _item("A_real_av/three/d.mp4", "real", group="p4"),
             _item("face_blend/s.mp4", "fake", origin="A_real_av/one/a.mp4")]
    by_path = {it.path: it for it in items}
    fold_of, held = ef.fusion_folds(items)
    files = [TrainFile(it, {"orig": FileCrops(_crops(i, 2), np.zeros(2, np.int64), (0,))})
             for i, it in enumerate(items) if it.label == "real"]
    points = {(i, k): np.zeros((468, 2)) for i in range(len(files)) for k in range(2)}
    learned: list[set[str]] = []

    def fit(model, fs, pts, cfg):
        learned.append({fs[i].item.path for i, _ in pts})
        return len(learned)

    class Detector:  # scores every crop with the number of the model, so a row tells which model scored it
        def __init__(self, model, device, batch_size):
            self.tag = model

        def predict(self, x):
            return SimpleNamespace(fake_prob=np.full(len(x), self.tag / 100))

    monkeypatch.setattr("training.train_sbi.fit", fit)
    monkeypatch.setattr("training.train_visual.released_model", lambda: None)
    monkeypatch.setattr("models.mesonet.MesoNetDetector", Detector)
    kept = {(str(it.file), v) for it in items for v in ("orig", "eval-whatsapp")} - {
        (str(by_path["A_real_av/three/d.mp4"].file), "orig")}
    cache = SimpleNamespace(get=lambda f, v: ({0: _crops(0, 3)}, [0]) if (str(f), v) in kept else None)
    rows = [_row(it.path, it.label) for it in items] + [_row("A_real_av/one/b.mp4", "real", reencode="whatsapp"),
                                                        _row("A_real_av/two/c.mp4", "real", status="no_face")]
    scores, counts, bins = visual_oof.score_rows(rows, by_path, files, points, None, cache, fold_of, held, 2, "mean")
    assert len(learned) == len(bins) <= 2
    for i, r in enumerate(rows):
        if r.status["visual"] != "ok":
            assert i not in scores  # a visual stage that did not run stays as it was
        elif r.path == "A_real_av/three/d.mp4":
            assert scores[i] is None  # its crops were not kept: no score rather than an in-sample one
        else:
            model = round(scores[i] * 100)
            assert not learned[model - 1] & held[fold_of[r.path]]
            assert by_path[r.path].origin not in learned[model - 1]
    assert counts["scored"] == 6 and counts["no inputs kept"] == 1


def test_a_rewritten_row_is_marked_out_of_fold_under_the_sbi_identity(tmp_path: Path):
    r = visual_oof.rewrite(_row("A_real_av/one/a.mp4", "real"), 0.7, ("mesonet:mesoinception_sbi", "new"))
    assert r.raw["visual"] == 0.7 and r.detectors["visual"] == ["mesonet:mesoinception_sbi", "new"]
    assert r.oof_slots == ["visual"] and r.raw["audio"] == 0.4
    gone = visual_oof.rewrite(_row("A_real_av/one/a.mp4", "real"), None, ("mesonet:mesoinception_sbi", "new"))
    assert gone.status["visual"] == visual_oof.OOF_STATUS_MISSING and gone.raw["visual"] is None
    items = [_item("A_real_av/one/a.mp4", "real"), _item("B_fake_av/gen/f.mp4", "fake")]
    fake = visual_oof.rewrite(_row("B_fake_av/gen/f.mp4", "fake"), 0.9, ("mesonet:mesoinception_sbi", "new"))
    t = ef.build_table([r, fake], items, split_file=tmp_path / "none.tsv")
    j = list(ef.SLOTS).index("visual")
    assert t.fit_ok[:, j].all() and t.identities["visual"] == ("mesonet:mesoinception_sbi", "new")


def test_training_faces_are_the_kept_crops_of_dev_reals_evenly_thinned_one_file_per_variant():
    items = [_item("A_real_av/one/a.mp4", "real"), _item("A_real_av/one/b.mp4", "real"),
             _item("B_fake_av/gen/f.mp4", "fake"), _item("C_audio/x/v.flac", "real", modality="audio")]
    kept = {("A_real_av/one/a.mp4", "orig"): ({0: _crops(0, 40), 2: _crops(1, 10)}, [0]),
            ("A_real_av/one/a.mp4", "eval-whatsapp"): ({0: _crops(2, 3)}, [0]),
            ("B_fake_av/gen/f.mp4", "orig"): ({0: _crops(3, 5)}, [0])}
    file_of = {it.file: it.path for it in items}
    cache = SimpleNamespace(get=lambda f, v: kept.get((file_of[f], v)))
    files = visual_oof.real_files(items, cache, 32, ("orig", "eval-whatsapp"))
    assert [f.item.path for f in files] == ["A_real_av/one/a.mp4"] * 2  # b kept nothing; fakes never learned from
    first = files[0].sources["orig"]
    assert len(first) == 32 and set(first.track_ids) == {0, 2}  # thinned over every track, not the first 32
    assert np.array_equal(first.crops[0], kept[("A_real_av/one/a.mp4", "orig")][0][0][0])
    assert len(files[1].sources["orig"]) == 3


def test_bin_models_are_kept_and_reused_only_for_the_same_recipe_and_crops(monkeypatch, tmp_path: Path):
    from training.train_sbi import SBIConfig
    from training.train_visual import FileCrops, TrainFile

    items = [_item("A_real_av/one/a.mp4", "real", group="p1"), _item("A_real_av/two/b.mp4", "real", group="p2")]
    by_path = {it.path: it for it in items}
    fold_of, held = ef.fusion_folds(items)
    files = [TrainFile(it, {"orig": FileCrops(_crops(i, 2), np.zeros(2, np.int64), (0,))})
             for i, it in enumerate(items)]
    points = {(i, k): np.zeros((468, 2)) for i in range(2) for k in range(2)}
    fits = []
    monkeypatch.setattr("training.train_sbi.fit", lambda model, fs, pts, cfg: fits.append(cfg) or "model")
    monkeypatch.setattr("training.train_visual.released_model", lambda: None)
    monkeypatch.setattr("training.train_visual.save_checkpoint", lambda m, path, meta: Path(path).write_text(m))
    monkeypatch.setattr("models.mesonet.load_checkpoint", lambda path, arch: Path(path).read_text())
    monkeypatch.setattr("models.mesonet.MesoNetDetector",
                        lambda m, device, batch_size: SimpleNamespace(predict=lambda x: SimpleNamespace(
                            fake_prob=np.full(len(x), 0.5))))
    cache = SimpleNamespace(get=lambda f, v: ({0: _crops(0, 1)}, [0]))
    rows = [_row(it.path, it.label) for it in items]

    def run(cfg):
        return visual_oof.score_rows(rows, by_path, files, points, cfg, cache, fold_of, held, 2, "mean",
                                     model_dir=tmp_path)

    run(SBIConfig())
    assert len(fits) == 2 and len(list(tmp_path.glob("sbi-*.pt"))) == 2
    _, counts, _ = run(SBIConfig())
    assert len(fits) == 2 and counts["bin models reused"] == 2
    run(SBIConfig(steps=10))  # another recipe is another model
    assert len(fits) == 4

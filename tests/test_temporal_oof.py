"""Out-of-fold temporal scores for the fusion (training/temporal_oof.py) and the inputs `make eval` keeps for them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fake_pipeline import FakePipeline

from pipeline.settings import Settings
from training import evidence_fusion as ef
from training import temporal_oof
from training.evaluate import ItemResult, audio_cache, run_items, temporal_cache
from training.features import TemporalInputCache
from training.split import ManifestItem


def _item(path: str, label: str, origin: str = "", group: str = "", manipulation: str = "none") -> ManifestItem:
    return ManifestItem(path, label, "video_av", manipulation, group or path, None, Path("/nowhere") / path, origin)


def _row(path: str, label: str, status: str = "ok", reencode: str | None = None) -> ItemResult:
    return ItemResult(path, label, "video_av", "none", "g", "AUTHENTIC", 0.3, None,
                      {"temporal": status, "audio": "ok"}, {"temporal": 0.2, "audio": 0.4}, {}, 0.9, 1.0, reencode,
                      detectors={"temporal": ["lrasd_temporal", "old"], "audio": ["aasist", "a"]})


def _seqs(seed: int, lengths=(60,)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 128)).astype(np.float32) for n in lengths]


def test_kept_sequences_come_back_per_file_variant_and_maker(tmp_path: Path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"one")
    cache = TemporalInputCache(tmp_path / "c", "face", "lrasd", 40, Settings())
    seqs = _seqs(0, (50, 41))
    cache.put(clip, "orig", seqs)
    got = cache.get(clip, "orig")
    assert len(got) == 2 and all(np.array_equal(a, b) for a, b in zip(got, seqs, strict=True))
    assert cache.get(clip, "eval-whatsapp") is None
    assert TemporalInputCache(tmp_path / "c", "face", "lrasd", 40, Settings(dense_fps=12)).get(clip, "orig") is None
    assert TemporalInputCache(tmp_path / "c", "face", "other", 40, Settings()).get(clip, "orig") is None
    clip.write_bytes(b"two")  # other bytes under the same name are another file
    assert TemporalInputCache(tmp_path / "c", "face", "lrasd", 40, Settings()).get(clip, "orig") is None


def test_only_manipulated_frames_are_learned_as_fake():
    assert temporal_oof.temporal_label(_item("A_real_av/x/a.mp4", "real")) == 0
    assert temporal_oof.temporal_label(_item("B_fake_av/sadtalker/f.mp4", "fake", manipulation="talking_head")) == 1
    assert temporal_oof.temporal_label(_item("face_swap/s.mp4", "fake", "A_real_av/x/a.mp4",
                                             manipulation="face_swap")) == 1
    for recipe in ("av_swap", "av_shift", "voice_over", "voice_resynth"):  # the real clip's own frames
        assert temporal_oof.temporal_label(_item(f"{recipe}/s.mp4", "fake", "A_real_av/x/a.mp4",
                                                 manipulation=recipe)) is None


def test_each_row_is_scored_by_a_head_that_never_learned_its_fold(monkeypatch):
    items = [_item("A_real_av/one/a.mp4", "real", group="p1"), _item("A_real_av/one/b.mp4", "real", group="p2"),
             _item("A_real_av/two/c.mp4", "real", group="p3"),
             _item("B_fake_av/gen/f.mp4", "fake", group="p3", manipulation="lipsync"),
             _item("B_fake_av/other/g.mp4", "fake", group="p5", manipulation="talking_head"),
             _item("A_real_av/three/d.mp4", "real", group="p4"),
             _item("face_blend/s.mp4", "fake", origin="A_real_av/one/a.mp4", manipulation="face_blend"),
             _item("av_swap/t.mp4", "fake", origin="A_real_av/three/d.mp4", manipulation="av_swap")]
    by_path = {it.path: it for it in items}
    fold_of, held = ef.fusion_folds(items)
    kept = {(str(it.file), v): _seqs(i) for i, it in enumerate(items) for v in ("orig", "eval-whatsapp")}
    del kept[(str(by_path["B_fake_av/other/g.mp4"].file), "orig")]
    cache = SimpleNamespace(get=lambda f, v: kept.get((str(f), v)))
    rows = [_row(it.path, it.label) for it in items] + [_row("A_real_av/one/b.mp4", "real", reencode="whatsapp"),
                                                        _row("A_real_av/two/c.mp4", "real", status="no_face")]
    recipe = temporal_oof.Recipe()
    train = temporal_oof.examples(rows, by_path, cache, recipe)
    assert {e.path for e in train} == {it.path for it in items} - {"av_swap/t.mp4", "B_fake_av/other/g.mp4"}
    assert all(e.variant == "orig" for e in train)  # the WhatsApp copy is not learned from under this recipe
    learned: list[set[str]] = []

    def fit(examples, head_cfg, rec):
        learned.append({e.path for e in examples})
        return len(learned)

    class Detector:  # scores every window with the number of the head, so a row tells which head scored it
        def __init__(self, head, front, cfg):
            self.tag = head

        def predict_sequences(self, seqs):
            return np.full(sum(len(s) > 0 for s in seqs), self.tag / 100), []

    monkeypatch.setattr(temporal_oof, "fit", fit)
    monkeypatch.setattr("models.lrasd_temporal.LRASDTemporalDetector", Detector)
    scores, counts, bins = temporal_oof.score_rows(rows, by_path, train, cache, None, recipe, fold_of, held, 3)
    assert len(learned) == len(bins) <= 3
    for i, r in enumerate(rows):
        if r.status["temporal"] != "ok":
            assert i not in scores  # a temporal stage that did not run stays as it was
        elif r.path == "B_fake_av/other/g.mp4":
            assert scores[i] is None  # its inputs were not kept: no score rather than an in-sample one
        else:
            head = learned[round(scores[i] * 100) - 1]
            assert r.path not in head and not head & held[fold_of[r.path]]
            assert by_path[r.path].origin not in head
            assert not {e.path for e in train if e.origin in {r.path, by_path[r.path].origin} - {""}} & head
    assert counts["scored"] == 8 and counts["no inputs kept"] == 1


def test_a_head_fitted_on_kept_sequences_ranks_a_held_out_fake_above_a_real():
    from models.lrasd_temporal import HeadConfig, LRASDTemporalDetector

    rng = np.random.default_rng(0)

    def video(label: int) -> list[np.ndarray]:  # fakes jitter frame to frame, reals move smoothly
        base = np.cumsum(rng.normal(scale=0.1, size=(80, 128)), axis=0)
        return [(base + (rng.normal(scale=1.0, size=base.shape) if label else 0)).astype(np.float32)]

    train = [temporal_oof.Example(f"v{i}", "", "orig", i % 2, tuple(video(i % 2))) for i in range(16)]
    cfg = HeadConfig()
    det = LRASDTemporalDetector(temporal_oof.fit(train, cfg, temporal_oof.Recipe(epochs=8)), front=None, cfg=cfg)
    fake, _ = det.predict_sequences(video(1))
    real, _ = det.predict_sequences(video(0))
    assert fake.mean() > real.mean()


class Capturing(FakePipeline):
    """A pipeline double with a face detector and a windowed temporal head whose stage is fed known sequences."""

    def __init__(self):
        super().__init__(settings=Settings())
        self.identities = {}
        info = SimpleNamespace(sha256="w")
        self.c = SimpleNamespace(face=SimpleNamespace(available=True, detector=SimpleNamespace(weights_info=info)),
                                 temporal=SimpleNamespace(available=True, detector=SimpleNamespace(
                                     sequences=None, num_frames=40, front=SimpleNamespace(weights_info=info))),
                                 audio=SimpleNamespace(available=True, detector=SimpleNamespace(window_samples=4)),
                                 visual=SimpleNamespace(available=False), sync=SimpleNamespace(detector=None))

    def fingerprint(self, **_):
        return "capturing"

    def run(self, source, progress=None, source_name=None, capture=None):
        if capture is not None and Path(source).suffix == ".mp4":
            capture["temporal_inputs"] = _seqs(1, (45,))
            capture["audio_windows"] = (np.array([0.0, 2.0]), np.array([4.04, 6.04]), np.array([0.25, 0.75]))
            capture["audio_inputs"] = np.arange(8, dtype=np.float32).reshape(2, 4)
        return super().run(source, progress, source_name)


def test_make_eval_keeps_the_temporal_and_audio_inputs_and_audio_windows_of_every_row(tmp_path: Path):
    items = [ManifestItem("A_real_av/x/a.mp4", "real", "video_av", "none", "g", None, tmp_path, ""),
             ManifestItem("C_audio/x/v.wav", "real", "audio", "none", "h", None, tmp_path, "")]
    for it in items:
        it.file.parent.mkdir(parents=True, exist_ok=True)
        it.file.write_bytes(it.path.encode())
    p = Capturing()
    rows = run_items(items, tmp_path / "run", None, p, temporal_features=tmp_path / "kept",
                     audio_features=tmp_path / "audio")
    cache = temporal_cache(p, tmp_path / "kept")
    assert np.array_equal(cache.get(items[0].file, "orig")[0], _seqs(1, (45,))[0])
    assert cache.get(items[1].file, "orig") is None and cache.get(items[0].file, "eval-whatsapp") is None
    kept_audio = audio_cache(p, tmp_path / "audio")
    assert np.array_equal(kept_audio.get(items[0].file, "orig"), np.arange(8).reshape(2, 4))
    assert kept_audio.get(items[1].file, "orig") is None
    assert rows[0].audio_windows == [[0.0, 4.04, 0.25], [2.0, 6.04, 0.75]] and rows[1].audio_windows is None
    stored = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[0])
    assert stored["audio_windows"] == rows[0].audio_windows


def test_a_rewritten_row_is_out_of_fold_for_the_fusion(tmp_path: Path):
    from training.evaluate import mark_out_of_fold

    items = [_item("A_real_av/one/a.mp4", "real"), _item("B_fake_av/gen/f.mp4", "fake", manipulation="lipsync")]
    ident = ("lrasd_temporal", "new")
    rows = [mark_out_of_fold(_row(it.path, it.label), "temporal", s, ident)
            for it, s in zip(items, (0.2, 0.8), strict=True)]
    t = ef.build_table(rows, items, split_file=tmp_path / "none.tsv")
    j = list(ef.SLOTS).index("temporal")
    assert t.fit_ok[:, j].all() and t.identities["temporal"] == ident


@pytest.mark.parametrize("n", [0, 39])
def test_sequences_shorter_than_a_window_give_no_score(n):
    from models.lrasd_temporal import HeadConfig, LRASDTemporalDetector, build_head

    det = LRASDTemporalDetector(build_head(HeadConfig()), front=None)
    probs, starts = det.predict_sequences(_seqs(0, (n,)))
    assert len(probs) == 0 and len(starts[0]) == 0


def test_the_command_rewrites_every_results_file_with_out_of_fold_temporal_scores(tmp_path: Path, monkeypatch):
    """What `make calibrate` runs between sync_oof and the fit, end to end on a small manifest."""
    from dataclasses import asdict

    from models.lrasd_temporal import HeadConfig, LRASDTemporalDetector, build_head
    from training.calibrate import _read_results

    dev = tmp_path / "dev"
    rows_in = []
    lines = ["path\tlabel\tmodality\tmanipulation\tgroup"]
    for i in range(12):
        label = "fake" if i % 2 else "real"
        path = f"{'B_fake_av' if i % 2 else 'A_real_av'}/src{i // 2}/{i}.mp4"  # six sources, a real and a fake each
        (dev / path).parent.mkdir(parents=True, exist_ok=True)
        (dev / path).write_bytes(f"clip {i}".encode())
        lines.append(f"{path}\t{label}\tvideo_av\t{'lipsync' if i % 2 else 'none'}\tg{i // 2}")
        rows_in.append(_row(path, label))
    (dev / "manifest.tsv").write_text("\n".join(lines) + "\n")
    det = LRASDTemporalDetector(build_head(HeadConfig()), front=SimpleNamespace(weights_info=None), cfg=HeadConfig())
    p = Capturing()
    p.c.temporal.detector = SimpleNamespace(sequences=None, num_frames=40, front=det.front, cfg=det.cfg)
    p.identities = {"temporal": SimpleNamespace(name="lrasd_temporal", sha256="shipped")}
    monkeypatch.setattr("pipeline.build", lambda settings: p)
    cache = temporal_cache(p, tmp_path / "kept")
    for i, r in enumerate(rows_in):
        cache.put(dev / r.path, "orig", _seqs(i, (60,)))
    results = tmp_path / "run" / "all" / "results.jsonl"
    results.parent.mkdir(parents=True)
    results.write_text("".join(json.dumps(asdict(r)) + "\n" for r in rows_in))
    rc = temporal_oof.main(["--manifest", str(dev / "manifest.tsv"), "--results", str(results),
                            "--out", str(tmp_path / "oof"), "--temporal-features", str(tmp_path / "kept"),
                            "--bins", "2", "--epochs", "2", "--threads", "1"])
    assert rc == 0
    out = _read_results(tmp_path / "oof" / "all" / "results.jsonl")
    assert [r.path for r in out] == [r.path for r in rows_in]
    assert all(r.oof_slots == ["temporal"] and r.detectors["temporal"] == ["lrasd_temporal", "shipped"] for r in out)
    assert all(0 < r.raw["temporal"] < 1 and r.raw["temporal"] != 0.2 for r in out)
    assert json.loads((tmp_path / "oof" / "summary.json").read_text())["counts"] == {"scored": 12}


def test_balanced_sources_weigh_the_same_within_a_class():
    ex = [temporal_oof.Example(p, "", "orig", y, ()) for p, y in
          [("A_real_av/a/1.mp4", 0), ("A_real_av/a/2.mp4", 0), ("A_real_av/a/3.mp4", 0), ("A_real_av/b/1.mp4", 0),
           ("B_fake_av/edtalk/1.mp4", 1), ("B_fake_av/edtalk/2.mp4", 1), ("face_swap/s.mp4", 1)]]
    w = temporal_oof.source_weights(ex)
    by_source = {}
    for e in ex:
        by_source[(e.label, e.path.split("/")[-2])] = by_source.get((e.label, e.path.split("/")[-2]), 0) + \
            w[(e.path, e.variant)]
    assert by_source[(0, "a")] == pytest.approx(by_source[(0, "b")]) == pytest.approx(2.0)
    assert by_source[(1, "edtalk")] == pytest.approx(1.5)  # face_swap/s.mp4's source is the recipe
    assert np.mean([w[(e.path, "orig")] for e in ex if e.label == 0]) == pytest.approx(1.0)

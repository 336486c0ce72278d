"""`make eval` resumes only results that the same pipeline configuration computed."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DEV_DATA
from fake_pipeline import FakePipeline

from training.evaluate import run_items
from training.split import read_manifest


class Fingerprinted(FakePipeline):
    def __init__(self, fingerprint: str):
        super().__init__()
        self._fp = fingerprint
        self.identities = {}

    def fingerprint(self) -> str:
        return self._fp


def test_results_of_another_configuration_are_never_resumed(tmp_path: Path):
    items = [it for it in read_manifest(DEV_DATA / "manifest.tsv") if it.modality == "audio"][:3]
    first = Fingerprinted("config-a")
    assert len(run_items(items, tmp_path, None, first)) == 3 and first.calls == 3
    same = Fingerprinted("config-a")
    assert len(run_items(items, tmp_path, None, same)) == 3 and same.calls == 0  # resumed
    other = Fingerprinted("config-b")  # e.g. face weights missing, another calibration, other settings
    results = run_items(items, tmp_path, None, other)
    assert other.calls == 3 and {r.pipeline_id for r in results} == {"config-b"}
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {x["pipeline_id"] for x in lines} == {"config-b"} and len(lines) == 3


class Calibrated(Fingerprinted):
    """Same detectors, its own calibration: fingerprint differs, detector identity does not."""

    def __init__(self, calibration_tag: str, fusion_model):
        super().__init__(f"detectors-x+{calibration_tag}")
        from types import SimpleNamespace

        self.c = SimpleNamespace(fusion_model=fusion_model, learned_fusion=None)
        self.identities = {s: SimpleNamespace(name=f"fake:{s}", sha256="") for s in ("visual", "audio")}

    def fingerprint(self, with_fusion: bool = True) -> str:
        return self._fp if with_fusion else "detectors-x"


def test_a_new_calibration_re_fuses_stored_scores_instead_of_rescoring(tmp_path: Path):
    from pipeline.fusion import Calibrator, FusionModel, fuse
    from training.evaluate import applicable_for

    items = [it for it in read_manifest(DEV_DATA / "manifest.tsv") if it.modality == "audio"][:3]
    first = Calibrated("cal-1", None)
    stored = run_items(items, tmp_path, None, first)
    assert first.calls == 3 and all(r.detectors_id == "detectors-x" for r in stored)
    model = FusionModel({"fake:audio": Calibrator("platt", 2.0, 1.0, reliability=0.7)}, 0.0, {},
                        thresholds=(0.2, 0.6), combiner="noisy-or", leak=0.01)
    second = Calibrated("cal-2", model)
    again = run_items(items, tmp_path, None, second)
    assert second.calls == 0  # nothing rescored
    for old, new in zip(stored, again, strict=True):
        raw = {s: v for s, v in old.raw.items() if old.status.get(s) == "ok" and v is not None}
        ids = {s: tuple(v) for s, v in (old.detectors or {}).items()}
        fusion, _, verdict = fuse(raw, model, old.face_quality, ids, applicable_for(old.modality))
        assert new.raw == old.raw and new.pipeline_id == "detectors-x+cal-2"
        if verdict is not None:
            assert new.fake_probability == fusion.fake_probability and new.verdict == verdict.value
    assert any(new.fake_probability != old.fake_probability for old, new in zip(stored, again, strict=True))
    assert all(new.calibrated["audio"] == model.calibrators["fake:audio"](old.raw["audio"])
               for old, new in zip(stored, again, strict=True) if old.status.get("audio") == "ok")
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {x["pipeline_id"] for x in lines} == {"detectors-x+cal-2"}


class Swappable(Fingerprinted):
    """A pipeline whose lip-sync weights can change: the identity of each detector, as ``Pipeline.fingerprint``."""

    def __init__(self, sync_sha: str):
        super().__init__(f"sync-{sync_sha}")
        from types import SimpleNamespace

        self.c = SimpleNamespace(fusion_model=None, learned_fusion=None)
        self.sync_sha = sync_sha

    def fingerprint(self, with_fusion: bool = True, slots: tuple[str, ...] | None = None) -> str:
        ids = {"faces": "f1", "visual": "v1", "temporal": "t1", "audio": "a1", "speaker": "s1",
               "lip_sync": self.sync_sha}
        picked = sorted((k, v) for k, v in ids.items() if slots is None or k in slots)
        return repr(picked) + ("+fusion" if with_fusion else "")


def test_a_new_lip_sync_model_rescores_videos_and_keeps_audio_files(tmp_path: Path):
    items = read_manifest(DEV_DATA / "manifest.tsv")
    audio = [it for it in items if it.modality == "audio"][:2]
    video = [it for it in items if it.modality == "video_av"][:1]
    first = Swappable("old")
    stored = {r.path: r for r in run_items(audio + video, tmp_path, None, first)}
    assert first.calls == 3
    second = Swappable("new")
    again = {r.path: r for r in run_items(audio + video, tmp_path, None, second)}
    assert second.calls == 1  # only the video: an audio file meets no lip-sync model
    for it in audio:
        assert again[it.path].raw == stored[it.path].raw
    assert "new" in again[video[0].path].detectors_id
    # back to the old weights: the video is rescored again, the audio files still stand
    third = Swappable("old")
    run_items(audio + video, tmp_path, None, third)
    assert third.calls == 1


def test_fakes_only_scores_the_fakes_alone_and_excludes_reals_only(tmp_path: Path, monkeypatch, capsys):
    import argparse

    import pytest

    from training import evaluate

    seen = []
    monkeypatch.setattr(evaluate, "run_items", lambda items, out, reencode, **kw: (seen.extend(items), [])[1])
    p = argparse.ArgumentParser()
    evaluate.add_arguments(p)
    args = p.parse_args(["--manifest", str(DEV_DATA / "manifest.tsv"), "--fakes-only", "--modality", "video_av",
                         "--out", str(tmp_path)])
    assert evaluate.run(args) == 0
    assert seen and {it.label for it in seen} == {"fake"} and {it.modality for it in seen} == {"video_av"}
    with pytest.raises(SystemExit):  # both at once would score nothing
        p.parse_args(["--manifest", "m.tsv", "--fakes-only", "--reals-only"])

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

"""The committed group split: it covers the whole dev manifest, keeps listed sides when the manifest grows,
and a missing item is a clear error, never a KeyError."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.split import (
    DEFAULT_SPLIT,
    ManifestItem,
    SplitError,
    _components,
    extend_split,
    make_split,
    read_manifest,
    read_split,
    select,
)


def _item(path: str, group: str, label: str = "real") -> ManifestItem:
    return ManifestItem(path, label, "video_av", "none" if label == "real" else "lipsync", group, 5.0, Path("."))


def test_committed_split_covers_the_dev_manifest_and_keeps_groups_on_one_side(dev_data):
    items = read_manifest(dev_data / "manifest.tsv")
    sides = read_split(DEFAULT_SPLIT)
    assert all(it.path in sides for it in items), "run `python -m training split --extend`"
    for members in _components(items).values():
        assert len({sides[it.path] for it in members}) == 1, [it.path for it in members]


def test_a_grown_manifest_keeps_every_listed_side():
    old = [_item(f"a{i}.mp4", f"id:{i}") for i in range(10)]
    existing = make_split(old)
    new = [_item("a3_fake.mp4", "id:3", "fake"), *(_item(f"b{i}.mp4", f"id:b{i}") for i in range(10))]
    grown = extend_split(old + new, existing)
    assert all(grown[p] == s for p, s in existing.items())
    assert grown["a3_fake.mp4"] == existing["a3.mp4"]  # linked by group: same side as its real
    assert set(grown) == {it.path for it in old + new} and set(grown.values()) == {"train", "val"}


def test_an_item_missing_from_the_split_is_a_clear_error(tmp_path):
    split = tmp_path / "split.tsv"
    split.write_text("path\tsplit\na.mp4\ttrain\n")
    with pytest.raises(SplitError, match=r"1 manifest item\(s\) are not in .*b.mp4.*--extend"):
        select([_item("a.mp4", "g"), _item("b.mp4", "h")], "train", split)
    with pytest.raises(SplitError, match="not found"):
        select([_item("a.mp4", "g")], "train", tmp_path / "none.tsv")

"""Train/validation split of a labelled manifest by its ``group`` column.

Items sharing a group (the same person, or a real clip and the fakes made from it) always land on the
same side; a group cell may name several groups joined by ``|`` (``pair:x|id:Obama``), which links them.
The assignment is deterministic (hash-ordered groups, greedy fill towards ``val_fraction`` of every
modality × label × manipulation stratum), so the committed split file can be regenerated exactly:

    python -m training split --manifest ../shared/data/dev/manifest.tsv --extend   # keep listed sides, place new items
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_SPLIT = Path(__file__).resolve().parent / "splits" / "dev_split.tsv"


@dataclass(frozen=True)
class ManifestItem:
    path: str  # relative to the manifest's folder
    label: str  # real | fake
    modality: str  # video_av | video | audio | image
    manipulation: str
    group: str
    duration_s: float | None
    root: Path
    origin: str = ""  # a synthetic item: the manifest path of the real clip it was made from

    @property
    def file(self) -> Path:
        return self.root / self.path

    @property
    def is_fake(self) -> int:
        return int(self.label == "fake")


def read_manifest(path: str | Path) -> list[ManifestItem]:
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for r in rows:
        dur = r.get("duration_s") or ""
        out.append(ManifestItem(r["path"], r["label"], r["modality"], r.get("manipulation", ""), r.get("group", ""),
                                float(dur) if dur.replace(".", "", 1).isdigit() else None, path.parent,
                                r.get("source_clip") or ""))
    return out


def _components(items: list[ManifestItem]) -> dict[str, list[ManifestItem]]:
    """Union-find over group tokens: groups named together in one cell become one component."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for it in items:
        tokens = [t for t in (it.group or it.path).split("|") if t]
        for t in tokens[1:]:
            parent[find(t)] = find(tokens[0])
    comps: dict[str, list[ManifestItem]] = defaultdict(list)
    for it in items:
        comps[find((it.group or it.path).split("|")[0])].append(it)
    return comps


def _stratum(it: ManifestItem) -> tuple[str, str, str]:
    return (it.modality, it.label, it.manipulation)


def make_split(items: list[ManifestItem], val_fraction: float = 0.3, seed: str = "dev-v1") -> dict[str, str]:
    """path -> "train" | "val"."""
    comps = _components(items)
    totals = Counter(_stratum(it) for it in items)
    in_val: Counter = Counter()
    assignment: dict[str, str] = {}
    order = sorted(comps, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    for key in order:
        members = comps[key]
        need = Counter(_stratum(it) for it in members)
        # join val if that keeps every stratum it touches at or under the target share
        fits = all(in_val[s] + n <= max(1, round(val_fraction * totals[s])) for s, n in need.items())
        side = "val" if fits else "train"
        if fits:
            in_val.update(need)
        for it in members:
            assignment[it.path] = side
    return assignment


def write_split(items: list[ManifestItem], assignment: dict[str, str], out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["path", "split", "group", "label", "modality", "manipulation"])
        for it in items:
            w.writerow([it.path, assignment[it.path], it.group, it.label, it.modality, it.manipulation])


class SplitError(ValueError):
    """The split file is missing, or does not cover the items asked about: say which and how to fix it."""


def read_split(path: str | Path = DEFAULT_SPLIT) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"split file {path} not found: a trainer never runs without one "
                         f"(create it with `python -m training split --manifest <manifest.tsv> --out {path}`)")
    with open(path, newline="") as f:
        return {r["path"]: r["split"] for r in csv.DictReader(f, delimiter="\t")}


def sides_of(paths: list[str], split_file: str | Path = DEFAULT_SPLIT) -> dict[str, str]:
    """path -> "train" | "val" for every path; a path the split does not list is a clear ``SplitError``."""
    sides = read_split(split_file)
    missing = [p for p in paths if p not in sides]
    if missing:
        raise SplitError(f"{len(missing)} manifest item(s) are not in {split_file} (e.g. {missing[0]}); "
                         "give new items a side with `python -m training split --extend` (existing sides are kept)")
    return {p: sides[p] for p in paths}


def select(items: list[ManifestItem], split: str | None, split_file: str | Path = DEFAULT_SPLIT) -> list[ManifestItem]:
    """Items of one side of the committed split (``None``: all items)."""
    if split is None:
        return items
    sides = sides_of([it.path for it in items], split_file)
    return [it for it in items if sides[it.path] == split]


def require_train_only(items: Iterable[ManifestItem | str], split_file: str | Path = DEFAULT_SPLIT) -> None:
    """THE leakage guard every trainer calls: refuse anything not on the TRAIN side of the split, including items
    the split does not list, and refuse to run at all without a split file (validation must stay unseen)."""
    sides = read_split(split_file)
    paths = [it if isinstance(it, str) else it.path for it in items]
    bad = [p for p in paths if sides.get(p) != "train"]
    if bad:
        raise SplitError(f"refusing to train on {len(bad)} item(s) not on the TRAIN side of {split_file} "
                         f"(e.g. {bad[0]}: {sides.get(bad[0], 'not in the split')})")


def extend_split(items: list[ManifestItem], existing: dict[str, str], val_fraction: float = 0.3,
                 seed: str = "dev-v1") -> dict[str, str]:
    """Sides for a grown manifest: every listed item keeps its side (checkpoints were trained on it); a new item
    linked by group to listed ones joins their side; wholly new groups are placed by ``make_split``'s rule,
    counting what validation already holds."""
    comps = _components(items)
    totals = Counter(_stratum(it) for it in items)
    in_val = Counter(_stratum(it) for it in items if existing.get(it.path) == "val")
    assignment = {it.path: existing[it.path] for it in items if it.path in existing}
    order = sorted(comps, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    for key in order:
        members = comps[key]
        new = [it for it in members if it.path not in existing]
        if not new:
            continue
        known = Counter(existing[it.path] for it in members if it.path in existing)
        if known:
            side = known.most_common(1)[0][0]
            if len(known) > 1:
                logger.warning("group %s already spans train and val; its %d new item(s) join %s", key, len(new), side)
        else:
            need = Counter(_stratum(it) for it in new)
            fits = all(in_val[s] + n <= max(1, round(val_fraction * totals[s])) for s, n in need.items())
            side = "val" if fits else "train"
        if side == "val":
            in_val.update(_stratum(it) for it in new)
        for it in new:
            assignment[it.path] = side
    return assignment


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", default=str(DEFAULT_SPLIT))
    p.add_argument("--val-fraction", type=float, default=0.3)
    p.add_argument("--extend", action="store_true",
                   help="keep the sides already in --out and place only the items it does not list")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = read_manifest(args.manifest)
    if args.extend and Path(args.out).is_file():
        assignment = extend_split(items, read_split(args.out), args.val_fraction)
    else:
        assignment = make_split(items, args.val_fraction)
    write_split(items, assignment, args.out)
    counts = Counter((_stratum(it), assignment[it.path]) for it in items)
    for s in sorted({_stratum(it) for it in items}):
        logger.info("%-40s train %4d  val %4d", "/".join(s), counts[(s, "train")], counts[(s, "val")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""File storage for each result's evidence figures (PNG): beside the ``detection_history`` row, never in it.

The row lists the figures by name (``detector_scores.figures``); the bytes live here, keyed by the stored task
id: a folder on disk for the embedded service (on the Modal Volume in production), a Supabase Storage bucket
when the service writes to Supabase.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from pipeline.report import Figure

logger = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")  # figure names are ours ("face_heatmap"); anything else is refused


def task_key(task_id: str) -> str:
    """A storage-safe folder name for a task id (ids are client-chosen and scoped with ':')."""
    return hashlib.sha256(task_id.encode()).hexdigest()[:32]


class FigureStore(Protocol):
    def put(self, task_id: str, figures: Iterable[Figure]) -> int: ...

    def get(self, task_id: str, name: str) -> bytes | None: ...


class LocalFigureStore:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()

    def _path(self, task_id: str, name: str) -> Path | None:
        return self.root / task_key(task_id) / f"{name}.png" if NAME.match(name) else None

    def put(self, task_id: str, figures: Iterable[Figure]) -> int:
        n = 0
        for f in figures:
            path = self._path(task_id, f.name)
            if path is None:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(f.png)
            tmp.replace(path)  # a reader never sees half a picture
            n += 1
        return n

    def get(self, task_id: str, name: str) -> bytes | None:
        path = self._path(task_id, name)
        return path.read_bytes() if path is not None and path.is_file() else None


class SupabaseFigureStore:
    """A Supabase Storage bucket (``client.storage``, the official client's storage API)."""

    def __init__(self, client, bucket: str):
        self.client, self.bucket = client, bucket

    def put(self, task_id: str, figures: Iterable[Figure]) -> int:
        n = 0
        bucket = self.client.storage.from_(self.bucket)
        for f in figures:
            if NAME.match(f.name):
                bucket.upload(f"{task_key(task_id)}/{f.name}.png", f.png,
                              {"content-type": "image/png", "upsert": "true"})
                n += 1
        return n

    def get(self, task_id: str, name: str) -> bytes | None:
        if not NAME.match(name):
            return None
        try:
            return self.client.storage.from_(self.bucket).download(f"{task_key(task_id)}/{name}.png")
        except Exception as exc:  # storage3 raises for a missing object
            logger.info("figure %s of %s not in storage: %s", name, task_id, exc)
            return None


def figure_store(settings, repo=None) -> FigureStore:
    """The store that goes with the repository: Supabase Storage beside Supabase, a local folder otherwise."""
    client = getattr(repo, "client", None)
    if getattr(repo, "backend", None) == "supabase" and client is not None:
        return SupabaseFigureStore(client, settings.figures_bucket)
    return LocalFigureStore(settings.figures_dir or Path(settings.uploads_dir).expanduser().parent / "figures")

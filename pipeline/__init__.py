"""Decode, faces, orchestration, fusion and report. ``pipeline.build(settings)`` is the entry point."""

from __future__ import annotations


def build(settings=None, components=None):
    """Load every available detector once and return a ``Pipeline`` (see ``pipeline.core``)."""
    from pipeline.core import build as _build

    return _build(settings, components)

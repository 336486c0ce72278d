"""The one exception a detector raises when it cannot be built here (weights absent, checkpoint unusable).

The pipeline turns it into an ``unavailable`` detector whose ``reason`` is shown to the user; it never
turns it into a score.
"""

from __future__ import annotations


class DetectorUnavailable(Exception):
    """``reason``: one line for the report (what is missing and how to provide it); ``str()``: the full story."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        super().__init__(reason if detail is None else f"{reason}\n{detail}")

    @property
    def short_reason(self) -> str:
        return self.reason

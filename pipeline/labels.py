"""What a person reads about scores, loaded from ``labels.json`` (the one source shared with the web page and the
React component): bar labels, orientation, colours and words.

The database keeps the seed's keys and their orientation (``visual_artifacts`` is P(fake), ``temporal_consistency``
is 1 − P(fake)); every bar a person sees reads "higher = more authentic" (the customer's design), made here by
``shown_value``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABELS_FILE = Path(__file__).resolve().parent / "labels.json"
_SPEC = json.loads(LABELS_FILE.read_text())


@dataclass(frozen=True)
class Bar:
    key: str  # the stored detector_scores key
    slot: str | None  # detectors.<slot> holds its status and reason (None: face quality, the fused score)
    label: str
    colour: str
    stored_is_authenticity: bool  # "same": the stored value already reads higher = more authentic
    hint: str
    words: tuple[str, str, str]  # low / middle / high shown value
    suspicion: str | None  # what a suspicious second of this detector is called

    def shown(self, stored: float | None) -> float | None:
        """The value on the bar (higher = more authentic) from the stored value; None stays None."""
        if stored is None:
            return None
        return float(stored) if self.stored_is_authenticity else 1.0 - float(stored)

    def word(self, shown: float) -> str:
        return self.words[0] if shown < WORD_BANDS[0] else self.words[2] if shown > WORD_BANDS[1] else self.words[1]


BARS: tuple[Bar, ...] = tuple(
    Bar(b["key"], b["slot"], b["label"], b["colour"], b["from"] == "same", b["hint"], tuple(b["words"]),
        b["suspicion"])
    for b in _SPEC["bars"]
)
BY_KEY = {b.key: b for b in BARS}
BY_SLOT = {b.slot: b for b in BARS if b.slot}
FACE_QUALITY = BY_KEY["face_quality"]
OVERALL = BY_KEY["final_weighted_score"]
WORD_BANDS: tuple[float, float] = tuple(_SPEC["word_bands"])
ORIENTATION_NOTE: str = _SPEC["orientation_note"]
TIMELINE_NOTE: str = _SPEC["timeline_note"]
WEAK_EVIDENCE: str = _SPEC["weak_evidence"]
# a detector's evidence (reliability × calibrated P(fake)) needed to be named, highlighted or drawn as a sign
FINDING_MIN_EVIDENCE: float = float(_SPEC["finding_min_evidence"])
VERDICT_WORDS: dict[str, str] = {k: v["words"] for k, v in _SPEC["verdicts"].items()}
VERDICT_COLOURS: dict[str, str] = {k: v["colour"] for k, v in _SPEC["verdicts"].items()}
STATUS_WORDS: dict[str, str] = dict(_SPEC["status_words"])
SLOT_ORDER: tuple[str, ...] = tuple(b.slot for b in BARS if b.slot)
COLOURS: dict[str, str] = {**{b.slot: b.colour for b in BARS if b.slot}, "face_quality": FACE_QUALITY.colour}


def shown_value(bar: Bar, detector_scores: dict[str, Any]) -> float | None:
    """A bar's value as shown, from a stored ``detector_scores`` object."""
    v = detector_scores.get(bar.key)
    return bar.shown(v) if isinstance(v, int | float) else None


def as_json() -> dict[str, Any]:
    """The spec as served to the web page."""
    return _SPEC


def verdict_words(report: dict[str, Any]) -> str:
    """The words under a verdict (``Report.to_dict()``): a valid declaration of AI generation has its own."""
    if (report.get("detector_scores") or {}).get("declared_ai"):
        return VERDICT_WORDS["DECLARED_AI"]
    return VERDICT_WORDS.get(report.get("verdict") or "", "")


def overall_bands(detector_scores: dict[str, Any]) -> str | None:
    """Where the verdict's thresholds sit on the Overall bar (the fused score is not centred on 50 %: without
    this a reader sees "45 %" beside AUTHENTIC and is misled)."""
    th = (detector_scores.get("fusion") or {}).get("thresholds") or {}
    if not isinstance(th.get("authentic_below"), int | float) or not isinstance(th.get("fake_above"), int | float):
        return None
    return _SPEC["overall_bands"].format(authentic=round(100 * (1 - th["authentic_below"])),
                                         fake=round(100 * (1 - th["fake_above"])))

"""Detectors, one file each. ``DETECTORS`` maps a registry name to ``module:Class``; ``get`` imports it.

Adding a detector = one file in ``models/``, one line here, one test. Entries are import paths rather
than classes so ``import models`` stays cheap (timm/transformers load only when their detector does).
"""

from __future__ import annotations

from importlib import import_module

DETECTORS: dict[str, str] = {
    "retinaface": "models.retinaface:RetinaFaceDetector",
    "mesonet": "models.mesonet:MesoNetDetector",
    "efficientnet_b7": "models.efficientnet_b7:EfficientNetB7Detector",
    "videomae": "models.videomae:VideoMAEDetector",
    "aasist": "models.aasist:AASISTDetector",
    "wav2vec2": "models.wav2vec2:Wav2Vec2Detector",
    "lrasd": "models.lrasd:LRASDDetector",
    "lrasd_temporal": "models.lrasd_temporal:LRASDTemporalDetector",
}


def get(name: str) -> type:
    """The detector class registered as ``name``."""
    try:
        module, cls = DETECTORS[name].split(":")
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
    return getattr(import_module(module), cls)

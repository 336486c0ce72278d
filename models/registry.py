"""The detector registry: the one source of which detectors exist, what slot each fills, how each is loaded,
which weights it needs and what input it expects (timm's ``register_model`` + pretrained config, in one table).

``pipeline.build`` builds its slots from here, ``Settings`` validates its selectors against it, trainers take a
detector's preprocessing from it, and calibration is keyed by the identity a loaded detector reports here.

Adding a detector = one file in ``models/`` (a class with ``load`` and ``predict``), one ``register(...)`` below,
one test (``tests/test_registry.py`` loops over every entry with tiny or random weights).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

from models.errors import DetectorUnavailable

FACES, VISUAL, TEMPORAL, AUDIO, SPEAKER, LIP_SYNC, MOUTH, VOICE_CHANGE = (
    "faces", "visual", "temporal", "audio", "speaker", "lip_sync", "mouth", "voice_change")
SLOTS = (FACES, VISUAL, TEMPORAL, AUDIO, SPEAKER, LIP_SYNC, MOUTH, VOICE_CHANGE)


@dataclass(frozen=True)
class Preprocess:
    """What the detector is fed. ``crop``: aligned (5-point aligned face + margin), dfdc_box (box + 1/3 context,
    isotropic resize), mouth_gray (LR-ASD's lower-face 112 px gray), audio (16 kHz mono windows), frames (whole
    frames); ``input_size``: pixels or seconds; ``aggregation``: how per-item scores become one per track/clip."""

    crop: str
    input_size: float
    aggregation: str


@dataclass(frozen=True)
class LoadRequest:
    """Everything a loader may need: the variant, a checkpoint (path or hub id), the device, already-built
    detectors it shares a front-end with (``deps``: slot -> detector)."""

    variant: str | None
    checkpoint: str | None
    device: str
    deps: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    slot: str
    target: str  # "module:Class" imported only when the detector loads, so `import models` stays cheap
    preprocess: Preprocess
    weights: tuple[str, ...]  # models.weights names (or a hub model) it needs
    variants: tuple[str, ...] = ()
    default_variant: str | None = None
    needs_checkpoint: bool = False  # runs only with a configured fine-tuned checkpoint (VideoMAE)
    checkpoint_setting: str | None = None  # the Settings field naming its checkpoint (path or hub id)
    default_checkpoint_label: str = "none"  # how the model name reads without one ("wav2vec2:default")
    name_format: str = "{name}:{variant}"
    loader: Callable[[type, LoadRequest], object] | None = None  # default: cls.load(device=..., variant=...)
    description: str = ""

    def detector_class(self) -> type:
        module, cls = self.target.split(":")
        return getattr(import_module(module), cls)

    def load(self, variant: str | None = None, checkpoint: str | None = None, device: str = "cpu",
             deps: dict[str, object] | None = None):
        """The loaded detector; ``DetectorUnavailable`` (with the reason) when it cannot be built here."""
        variant = variant or self.default_variant
        if self.variants and variant not in self.variants and not Path(str(variant)).suffix:
            raise ValueError(f"unknown {self.name} variant {variant!r}; choose one of {', '.join(self.variants)}")
        req = LoadRequest(variant, checkpoint, device, dict(deps or {}))
        cls = self.detector_class()
        if self.loader is not None:
            return self.loader(cls, req)
        if self.variants:
            return cls.load(device=device, variant=variant)
        return cls.load(device=device)

    def model_name(self, variant: str | None = None, checkpoint: str | None = None) -> str:
        """The name a loaded detector reports (``mesonet:mesoinception_df``, ``wav2vec2:<ckpt>``)."""
        v = variant or self.default_variant
        if v and Path(str(v)).suffix:
            v = Path(str(v)).name
        if self.checkpoint_setting:
            v = checkpoint or self.default_checkpoint_label
        return self.name_format.format(name=self.name, variant=v) if v else self.name


REGISTRY: dict[str, DetectorSpec] = {}


def register(spec: DetectorSpec) -> DetectorSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"detector {spec.name!r} registered twice")
    if spec.slot not in SLOTS:
        raise ValueError(f"detector {spec.name!r}: unknown slot {spec.slot!r}")
    REGISTRY[spec.name] = spec
    return spec


def spec(name: str) -> DetectorSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


def for_slot(slot: str) -> list[DetectorSpec]:
    return [s for s in REGISTRY.values() if s.slot == slot]


def parse_selector(slot: str, selector: str, allow_auto: bool = True) -> tuple[DetectorSpec | None, str | None]:
    """``name``, ``name:variant`` or a variant that only one detector of ``slot`` has -> (spec, variant).
    ``auto`` -> (None, None): the slot's automatic choice. Anything else is a ``ValueError`` listing the choices."""
    value = (selector or "").strip()
    if allow_auto and value == "auto":
        return None, None
    candidates = for_slot(slot)
    name, _, variant = value.partition(":")
    for s in candidates:
        if s.name == name:
            if variant and s.variants and variant not in s.variants and not Path(variant).suffix:
                break
            if not variant and name in s.variants:  # "aasist" names the released variant, not the default
                variant = name
            return s, variant or None
    owners = [s for s in candidates if value in s.variants]
    if len(owners) == 1:
        return owners[0], value
    choices = (["auto"] if allow_auto else []) + [s.name for s in candidates]
    choices += [f"{s.name}:{v}" for s in candidates for v in s.variants]
    raise ValueError(f"unknown {slot} detector {selector!r}; choose one of: {', '.join(choices)}")


# What ``auto`` means per slot: the first that loads wins (a detector needing an unconfigured checkpoint is
# skipped). B7 is stronger than MesoNet where its weights exist; MesoNet reads video faces detail-normalised (it won
# the fused leave-one-source-out: models/checkpoints/mesonet_detail.md); the bundled AASIST fine-tune beat the released
# weights on validation (models/checkpoints/aasist_ft.md); VideoMAE runs only when a fine-tune is configured.
AUTO: dict[str, tuple[str, ...]] = {
    FACES: ("retinaface",),
    VISUAL: ("efficientnet_b7", "mesonet_detail", "mesonet"),
    TEMPORAL: ("videomae", "lrasd_temporal"),
    AUDIO: ("aasist:aasist_ft", "aasist:aasist"),
    SPEAKER: ("lrasd",),
    LIP_SYNC: ("sync",),
    MOUTH: ("mouth_blur",),
    VOICE_CHANGE: ("voice_change",),
}


# ----------------------------------------------------------------------------------------------------------------
# identity: what calibration is keyed by
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """A loaded detector: its registry model name and a digest of every weights file it runs (different weights
    are a different model, so they never share a calibration)."""

    name: str
    sha256: str

    @property
    def key(self) -> str:
        return f"{self.name}@{self.sha256[:12]}" if self.sha256 else self.name


def identity(model_name: str, detector) -> Identity:
    infos = list(getattr(detector, "weights_infos", None) or ())
    if not infos and getattr(detector, "weights_info", None) is not None:
        infos = [detector.weights_info]
    digests = sorted(i.sha256 for i in infos if getattr(i, "sha256", ""))
    if not digests:
        return Identity(model_name, "")
    if len(digests) == 1:
        return Identity(model_name, digests[0])
    return Identity(model_name, hashlib.sha256(",".join(digests).encode()).hexdigest())


# ----------------------------------------------------------------------------------------------------------------
# the detectors
# ----------------------------------------------------------------------------------------------------------------
def _retinaface(cls, req: LoadRequest):
    return cls.load(device=req.device, variant=req.variant)


def _mesonet(cls, req: LoadRequest):
    if req.variant and Path(req.variant).suffix:  # a checkpoint path (e.g. a fine-tuned MesoInception4)
        return cls.load(req.variant, device=req.device)
    return cls.load(device=req.device, variant=req.variant)


def _with_checkpoint(cls, req: LoadRequest):
    return cls.load(req.checkpoint, device=req.device)


def _lrasd_temporal(cls, req: LoadRequest):
    # shares the speaker slot's LR-ASD front-end: one copy in memory, one forward per window
    return cls.load(device=req.device, front=req.deps.get(SPEAKER))


def _sync(cls, req: LoadRequest):
    speaker = req.deps.get(SPEAKER)
    if speaker is None:
        raise DetectorUnavailable("the lip-sync head needs LR-ASD (the speaker detector), which is unavailable")
    return cls(speaker, device=req.device)


register(DetectorSpec(
    "retinaface", FACES, "models.retinaface:RetinaFaceDetector", Preprocess("frames", 640, "tracks"),
    weights=("retinaface_mnet025", "retinaface_resnet50"), variants=("mnet025", "resnet50"), default_variant="mnet025",
    loader=_retinaface, name_format="{name}_{variant}", description="RetinaFace face detector with 5 landmarks"))
# the released DF/F2F weights and this project's bundled fine-tunes (dev crops; self-blended real crops)
MESONET_VARIANTS = ("meso4_df", "meso4_f2f", "mesoinception_df", "mesoinception_f2f", "mesoinception_ft",
                    "mesoinception_sbi")
register(DetectorSpec(
    "mesonet", VISUAL, "models.mesonet:MesoNetDetector", Preprocess("aligned", 256, "mean"),
    weights=MESONET_VARIANTS, variants=MESONET_VARIANTS,
    default_variant="mesoinception_df", loader=_mesonet,
    description="MesoNet spatial detector (embedded default; released DF/F2F weights or the bundled fine-tunes)"))
register(DetectorSpec(
    "mesonet_detail", VISUAL, "models.detail_norm:DetailNormalisedMesoNet", Preprocess("aligned", 256, "mean"),
    weights=MESONET_VARIANTS, variants=MESONET_VARIANTS,
    default_variant="mesoinception_df", loader=_mesonet,
    description="MesoNet on faces filtered to one level of fine detail (beauty filters and sharpening move it less)"))
register(DetectorSpec(
    "efficientnet_b7", VISUAL, "models.efficientnet_b7:EfficientNetB7Detector",
    Preprocess("dfdc_box", 380, "confident"),
    weights=tuple(f"dfdc_b7_{i}" for i in range(7)), variants=("dfdc",), default_variant="dfdc",
    loader=lambda cls, req: cls.load(device=req.device),
    description="DFDC-winning EfficientNet-B7 ensemble (production)"))
register(DetectorSpec(
    "lrasd_temporal", TEMPORAL, "models.lrasd_temporal:LRASDTemporalDetector", Preprocess("mouth_gray", 112, "mean"),
    weights=("lrasd", "lrasd_temporal"), loader=_lrasd_temporal,
    description="temporal head on frozen LR-ASD visual embeddings (embedded default)"))
register(DetectorSpec(
    "videomae", TEMPORAL, "models.videomae:VideoMAEDetector", Preprocess("aligned", 224, "mean"),
    weights=("videomae_base",), needs_checkpoint=True, checkpoint_setting="videomae_checkpoint",
    loader=_with_checkpoint,
    description="fine-tuned VideoMAE clip classifier (production; VIDEOMAE_CHECKPOINT)"))
register(DetectorSpec(
    "aasist", AUDIO, "models.aasist:AASISTDetector", Preprocess("audio", 4.0, "mean"),
    weights=("aasist", "aasist_l", "aasist_ft"), variants=("aasist", "aasist_l", "aasist_ft"),
    default_variant="aasist_ft", description="AASIST synthetic-voice detector (released weights or the fine-tune)"))
register(DetectorSpec(
    "whisper_head", AUDIO, "models.whisper_audio:WhisperAudioDetector", Preprocess("audio", 4.0, "mean"),
    weights=("whisper_tiny_en", "whisper_head"),
    description="logistic head over frozen Whisper tiny.en encoder features (30 s context, pooled per 4 s window)"))
register(DetectorSpec(
    "audio_by_kind", AUDIO, "models.audio_by_kind:AudioByKind", Preprocess("audio", 4.0, "mean"),
    weights=("whisper_tiny_en", "whisper_head", "aasist_ft"),
    description="the Whisper head for audio-only files, AASIST-ft for the soundtracks of videos (each won its kind "
                "under leave-one-source-out)"))
register(DetectorSpec(
    "wav2vec2", AUDIO, "models.wav2vec2:Wav2Vec2Detector", Preprocess("audio", 4.0, "mean"),
    weights=("wav2vec2_deepfake",), checkpoint_setting="wav2vec2_checkpoint", default_checkpoint_label="default",
    loader=_with_checkpoint,
    description="wav2vec2 deepfake-audio classifier (production; WAV2VEC2_CHECKPOINT or the default hub id)"))
register(DetectorSpec(
    "lrasd", SPEAKER, "models.lrasd:LRASDDetector", Preprocess("mouth_gray", 112, "frames"),
    weights=("lrasd",), description="LR-ASD active-speaker detector (who is speaking; shared front-end)"))
register(DetectorSpec(
    "sync", LIP_SYNC, "models.sync_head:SyncHeadDetector", Preprocess("mouth_gray", 112, "mean"),
    weights=("lrasd", "sync_head"), loader=_sync,
    description="lip-sync head on frozen LR-ASD audio/visual embeddings"))
register(DetectorSpec(
    "mouth_blur", MOUTH, "models.mouth_blur:MouthBlurDetector", Preprocess("aligned", 256, "median"),
    weights=(), description="how blurred the mouth of the aligned face is (lip-sync generators repaint it at low "
                            "resolution); no weights"))
register(DetectorSpec(
    "voice_change", VOICE_CHANGE, "models.voice_change:VoiceChangeDetector", Preprocess("audio", 1.6, "max"),
    weights=("ge2e",), description="whether another voice takes over part of the soundtrack: each 1.6 s of speech "
                                   "against the rest of the clip, in a frozen GE2E speaker encoder"))

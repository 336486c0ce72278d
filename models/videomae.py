"""Temporal production option: a VideoMAE video classifier fine-tuned for deepfakes, on aligned face-track clips.

This detector needs a *fine-tuned* checkpoint: a ``save_pretrained`` directory or a hub id of a
``VideoMAEForVideoClassification`` whose ``config.id2label`` names a fake class. The self-supervised backbone
(``MCG-NJU/videomae-base``, the registry's ``videomae_base``) has no trained head, and its scores would be noise.
``load`` refuses it. ``training.videomae_finetune.finetune_videomae`` trains one and ``save_videomae_checkpoint``
(here) writes the layout ``load`` reads; ``python -m training temporal --arch videomae`` drives both.

Input: (N, T, H, W, 3) RGB uint8 clips with T = ``config.num_frames`` (16). Each frame is resized to the config's
image size (bilinear, antialiased) and normalised with the ImageNet mean/std, as VideoMAE's processor does. The
layout is (N, T, C, H, W), as transformers expects. Training and inference share ``videomae_pixel_values``, so a
checkpoint sees the same pixels in both.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import VideoMAEConfig, VideoMAEForVideoClassification

from models.base import Scores, WeightsInfo, batched, inference, resolve_device
from models.errors import DetectorUnavailable
from models.weights import HUB_MODELS, sha256_of

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REAL_FAKE_ID2LABEL = {0: "real", 1: "fake"}

_FAKE_WORDS = frozenset({"fake", "spoof", "spoofed", "deepfake", "manipulated", "forged", "synthetic", "generated"})
_REAL_WORDS = frozenset({"real", "pristine", "original", "bonafide", "genuine", "authentic"})

# Self-supervised (pre-training only) VideoMAE releases. The "-finetuned-kinetics/ssv2" ids are action classifiers.
# Label detection rejects those, because their labels name no fake class.
_BACKBONE_ID = re.compile(r"^mcg-nju/videomae-(small|base|large|huge)(-short)?(-ssv2)?$", re.IGNORECASE)
_HOW_TO = (
    "Provide one with the Settings field `videomae_checkpoint` (env VIDEOMAE_CHECKPOINT): a directory written by "
    "`python -m training temporal` (save_pretrained layout) or a hub id of a fine-tuned deepfake "
    "VideoMAEForVideoClassification."
)
_BACKBONE_MSG = (
    "a self-supervised backbone is not a deepfake detector; fine-tune it first with `python -m training temporal`"
)


class TemporalCheckpointMissing(DetectorUnavailable):
    """No usable fine-tuned temporal checkpoint. The pipeline reports ``reason`` and skips the temporal stage."""

    def __init__(self, reason: str = "no fine-tuned temporal checkpoint", detail: str | None = None) -> None:
        super().__init__(reason, f"{reason}{f' ({detail})' if detail else ''}. {_HOW_TO}")

    def __str__(self) -> str:
        return self.args[0].split("\n", 1)[-1]


class BackboneNotFineTuned(DetectorUnavailable, ValueError):
    """The checkpoint is a pre-training backbone or has an untrained head: a configuration error, raised loudly."""


# --------------------------------------------------------------------------------------------------------------------
# Configs and labels
# --------------------------------------------------------------------------------------------------------------------


def tiny_videomae_config(num_labels: int = 2) -> VideoMAEConfig:
    """``videomae_unittest``: a 2-layer, 32-wide VideoMAE on 16×32×32 clips, for tests and the CLI smoke test."""
    if num_labels == 2:
        id2label = dict(REAL_FAKE_ID2LABEL)
    elif num_labels == 1:
        id2label = {0: "fake"}
    else:
        raise ValueError(f"a deepfake head has 1 or 2 labels, got num_labels={num_labels}")
    return VideoMAEConfig(
        image_size=32, patch_size=8, num_channels=3, num_frames=16, tubelet_size=2,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        use_mean_pooling=True, id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )


NAMED_CONFIGS: dict[str, Callable[..., VideoMAEConfig]] = {"videomae_unittest": tiny_videomae_config}


def _label_kind(label: str) -> str | None:
    words = set(re.split(r"[^a-z]+", label.lower().replace("bona fide", "bonafide").replace("bona-fide", "bonafide")))
    is_fake, is_real = bool(words & _FAKE_WORDS), bool(words & _REAL_WORDS)
    if is_fake == is_real:  # neither, or both ("not real fake"): unknown
        return None
    return "fake" if is_fake else "real"


def find_fake_label(id2label: dict) -> int:
    """Which output is the fake class, read from the label names. Raises ``ValueError`` if the names don't say.

    With one fake-named label, that label is the fake class. With two labels where only one is named real, the
    other one is the fake class.
    """
    labels = {int(k): str(v) for k, v in id2label.items()}
    kinds = {i: _label_kind(name) for i, name in labels.items()}
    fakes = [i for i, k in kinds.items() if k == "fake"]
    reals = [i for i, k in kinds.items() if k == "real"]
    if len(fakes) == 1:
        return fakes[0]
    if not fakes and len(labels) == 2 and len(reals) == 1:
        return next(i for i in labels if i != reals[0])
    raise ValueError(
        f"cannot tell which label is fake from id2label={labels}; expected names like fake/spoof/deepfake/manipulated "
        f"vs real/pristine/original (or pass fake_label_index explicitly)"
    )


def _image_hw(config: VideoMAEConfig) -> tuple[int, int]:
    s = config.image_size
    return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))


def canonicalise_labels(model: VideoMAEForVideoClassification) -> None:
    """Make output 0 = real and output 1 = fake, in place, swapping the head's rows if the model has them the other way.

    Label names that don't say which output is fake (e.g. LABEL_0/LABEL_1) raise ``ValueError``.
    """
    if model.config.num_labels != 2:
        raise ValueError(f"expected a 2-label (real/fake) head, got num_labels={model.config.num_labels}")
    if find_fake_label(model.config.id2label) == 0:
        with torch.no_grad():
            model.classifier.weight.copy_(model.classifier.weight.flip(0))
            model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = dict(REAL_FAKE_ID2LABEL)
    model.config.label2id = {v: k for k, v in REAL_FAKE_ID2LABEL.items()}


def build_videomae_classifier(
    backbone: str | os.PathLike = "videomae_unittest", seed: int = 0
) -> VideoMAEForVideoClassification:
    """A real/fake classifier to fine-tune. ``backbone``: a ``NAMED_CONFIGS`` name (random init), hub id or directory.

    The head is new, on mean-pooled tokens (``use_mean_pooling``, as in the VideoMAE fine-tuning recipe). This is the
    one place where loading the self-supervised backbone is correct.
    """
    torch.manual_seed(seed)
    labels = {"id2label": dict(REAL_FAKE_ID2LABEL), "label2id": {v: k for k, v in REAL_FAKE_ID2LABEL.items()}}
    if str(backbone) in NAMED_CONFIGS:
        return VideoMAEForVideoClassification(NAMED_CONFIGS[str(backbone)](num_labels=2))
    return VideoMAEForVideoClassification.from_pretrained(
        str(backbone), num_labels=2, use_mean_pooling=True, ignore_mismatched_sizes=True, **labels
    )


# --------------------------------------------------------------------------------------------------------------------
# Pre-processing
# --------------------------------------------------------------------------------------------------------------------


def videomae_pixel_values(
    clips: np.ndarray | torch.Tensor, image_hw: tuple[int, int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(N, T, H, W, 3) RGB uint8 → (N, T, 3, h, w) float32: resized, /255, ImageNet-normalised. Runs on ``device``."""
    x = torch.as_tensor(clips).to(device)
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, T, H, W, 3) RGB clips, got shape {tuple(x.shape)}")
    n, t, h, w, _ = x.shape
    x = x.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
    if (h, w) != tuple(image_hw):
        # The face crops are square, so a direct resize does not distort them. Antialiasing matters when shrinking.
        x = F.interpolate(x, size=image_hw, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.reshape(n, t, 3, *image_hw)


# --------------------------------------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------------------------------------


def _weights_info(source: str) -> WeightsInfo:
    p = Path(source).expanduser()
    candidates = [p / "model.safetensors", p / "pytorch_model.bin"]
    if not p.is_dir():
        try:  # hub id: the cached file, when there is one
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, "model.safetensors")
            candidates = [Path(cached)] if isinstance(cached, str) else []
        except Exception:  # optional metadata: never fail a load over it
            candidates = []
    for c in candidates:
        if c.is_file():
            return WeightsInfo(name="videomae", file=f"{source}:{c.name}", sha256=sha256_of(c))
    return WeightsInfo(name="videomae", file=str(source), sha256="")


class VideoMAEDetector:
    """P(fake) per face-track clip from a fine-tuned ``VideoMAEForVideoClassification``."""

    name = "videomae"
    modality = "temporal"
    num_frames = 16
    input_size = 224

    def __init__(
        self,
        model: VideoMAEForVideoClassification,
        device: str | torch.device = "cpu",
        weights_info: WeightsInfo | None = None,
        fake_label_index: int | None = None,
        batch_size: int = 4,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        cfg = model.config
        self.num_frames = int(cfg.num_frames)
        self.image_hw = _image_hw(cfg)
        self.input_size = self.image_hw[0]
        self.batch_size = int(batch_size)
        self.weights_info = weights_info or WeightsInfo.in_memory(self.name)
        n_labels = int(cfg.num_labels)
        self._single_sign = 1.0
        if fake_label_index is not None:
            self.fake_index = int(fake_label_index)
        elif n_labels == 1:
            # A single output: its name says whether the logit points at fake or at real.
            kind = _label_kind(str(next(iter(cfg.id2label.values()))))
            if kind is None:
                raise ValueError(f"cannot tell whether the single label {cfg.id2label} is fake or real")
            self.fake_index, self._single_sign = 0, (1.0 if kind == "fake" else -1.0)
        else:
            self.fake_index = find_fake_label(cfg.id2label)
        if not 0 <= self.fake_index < n_labels:
            raise ValueError(f"fake_label_index {self.fake_index} out of range for {n_labels} labels")

    @classmethod
    def load(
        cls,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        fake_label_index: int | None = None,
        batch_size: int = 4,
    ) -> VideoMAEDetector:
        """``weights``: a ``save_pretrained`` directory or a hub id of a fine-tuned deepfake checkpoint.

        None raises ``TemporalCheckpointMissing`` ("no fine-tuned temporal checkpoint"). A self-supervised backbone,
        or a checkpoint whose classification head is untrained, raises ``BackboneNotFineTuned``.
        """
        if weights is None or str(weights).strip() == "":
            raise TemporalCheckpointMissing()
        source = str(weights)
        if _BACKBONE_ID.match(source) or source == HUB_MODELS["videomae_base"].repo_id:
            raise BackboneNotFineTuned(f"{source}: {_BACKBONE_MSG}")
        local = Path(source).expanduser()
        if local.exists():
            source = str(local)
        elif local.is_absolute() or source.startswith((".", "~")) or source.count("/") != 1:
            # Clearly a filesystem path (a hub id is exactly "owner/name"): don't send it to the hub.
            raise TemporalCheckpointMissing("temporal checkpoint not found", f"{local} does not exist")
        try:
            config = VideoMAEConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise TemporalCheckpointMissing(f"temporal checkpoint {source!r} could not be loaded", str(exc)) from exc
        if any("PreTraining" in a for a in (config.architectures or [])):
            raise BackboneNotFineTuned(f"{source} is a VideoMAEForPreTraining checkpoint: {_BACKBONE_MSG}")
        try:
            model, info = VideoMAEForVideoClassification.from_pretrained(source, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise TemporalCheckpointMissing(f"temporal checkpoint {source!r} could not be loaded", str(exc)) from exc
        untrained = sorted(k for k in info.get("missing_keys", ()) if k.startswith(("classifier.", "fc_norm.")))
        if untrained:
            raise BackboneNotFineTuned(f"{source} has no trained classification head ({untrained}): {_BACKBONE_MSG}")
        logger.info("loaded VideoMAE checkpoint %s (labels %s)", source, model.config.id2label)
        return cls(
            model, device=device, weights_info=_weights_info(source),
            fake_label_index=fake_label_index, batch_size=batch_size,
        )

    def _check(self, clips: np.ndarray) -> np.ndarray:
        clips = np.asarray(clips)
        if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
            raise ValueError(f"expected (N, T, H, W, 3) RGB uint8 clips, got {clips.shape} {clips.dtype}")
        if clips.shape[1] != self.num_frames:
            raise ValueError(f"this checkpoint takes {self.num_frames}-frame clips, got {clips.shape[1]}")
        return clips

    def _scores_from_logits(self, logits: np.ndarray) -> Scores:
        logits = logits.astype(np.float64)
        if logits.shape[1] == 1:
            return Scores.from_fake_logits(self._single_sign * logits[:, 0])
        others = np.delete(logits, self.fake_index, axis=1)
        rest = np.logaddexp.reduce(others, axis=1)
        fake_logit = logits[:, self.fake_index] - rest  # log-odds of fake vs every other class
        return Scores.from_fake_logits(fake_logit)

    def predict_logits(self, clips: np.ndarray) -> np.ndarray:
        """Raw (N, num_labels) head outputs."""
        clips = self._check(clips)
        out = np.zeros((clips.shape[0], int(self.model.config.num_labels)), dtype=np.float64)
        with inference(self.device):
            for sl in batched(clips.shape[0], self.batch_size):
                x = videomae_pixel_values(clips[sl], self.image_hw, self.device)
                out[sl] = self.model(pixel_values=x).logits.float().cpu().numpy()
        return out

    def predict(self, clips: np.ndarray) -> Scores:
        """(N, 16, H, W, 3) RGB uint8 aligned face-track clips → P(fake) per clip."""
        if np.asarray(clips).shape[:1] == (0,):
            return Scores.empty()
        return self._scores_from_logits(self.predict_logits(clips))


# --------------------------------------------------------------------------------------------------------------------
# Training core (called by `python -m training temporal`)
# --------------------------------------------------------------------------------------------------------------------


def save_videomae_checkpoint(model: VideoMAEForVideoClassification, out_dir: str | os.PathLike) -> Path:
    """Write a ``save_pretrained`` directory with id2label {0: "real", 1: "fake"} that ``VideoMAEDetector.load`` reads.

    If the model's labels are the other way round, the head's rows are swapped first (in place). The predictions do
    not change. Label names that don't say which output is fake raise ``ValueError``.
    """
    canonicalise_labels(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    logger.info("saved VideoMAE checkpoint to %s", out)
    return out

"""Production spatial detector: the DFDC-winning EfficientNet-B7 NS ensemble (selimsef, MIT).

Fact sheet: ``../shared/specs/dfdc_effnet_b7/SPEC.md``. The pre-processing below reproduces the reference inference
path (frame selection, the 1/3-padded face crop, isotropic resize to 380, black centring, ImageNet normalisation).
``tests/test_efficientnet_b7.py`` checks it against the golden arrays. The 7 released checkpoints load strictly into
``DeepFakeClassifier``. One logit comes out per face, and sigmoid(logit) = P(fake).

The video-level "confident strategy" lives in ``pipeline.aggregate``. The reference applies it to each model's
per-face probabilities and then averages over the models. ``EfficientNetB7Detector.predict_per_model`` provides
the per-model probabilities for that.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.special import expit
from torch import nn

from models.base import Scores, WeightsInfo, batched, inference, load_torch_state_dict, resolve_device
from models.weights import DFDC_B7_FILES, WeightsNotFoundError, WeightSpec, resolve

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "tf_efficientnet_b7_ns"
INPUT_SIZE = 380
N_FRAMES = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# timm >= 0.9 renamed the Noisy-Student weights to a pretrained tag. The architecture and the parameter names are
# unchanged. Mapping the old name ourselves avoids timm's deprecation warning on every build.
_LEGACY_NS = re.compile(r"^tf_efficientnet_(b\d|l2)_ns$")


def timm_name(encoder_name: str) -> str:
    m = _LEGACY_NS.match(encoder_name)
    return f"tf_efficientnet_{m.group(1)}.ns_jft_in1k" if m else encoder_name


class DeepFakeClassifier(nn.Module):
    """``encoder`` (timm EfficientNet) → forward_features → global average pool → dropout → ``fc`` → one logit.

    We keep timm's 1000-class ``encoder.classifier``, even though forward never uses it. The released checkpoints
    contain its weight and bias (1202 keys in all). Keeping it lets ``strict=True`` loading work as in the reference.
    """

    def __init__(self, encoder_name: str = DEFAULT_ENCODER, dropout_rate: float = 0.0, **encoder_kwargs) -> None:
        super().__init__()
        self.encoder_name = encoder_name
        import timm  # here, not at the top: importing it costs ~160 MB RSS, wasted when the B7 weights are absent

        self.encoder = timm.create_model(timm_name(encoder_name), pretrained=False, **encoder_kwargs)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_rate)
        self.fc = nn.Linear(self.encoder.num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder.forward_features(x)
        x = self.avg_pool(x).flatten(1)
        return self.fc(self.dropout(x))


def load_dfdc_checkpoint(path: str | os.PathLike, encoder_name: str = DEFAULT_ENCODER) -> DeepFakeClassifier:
    """Build a ``DeepFakeClassifier`` and load a release checkpoint strictly. Returns it in eval mode, on CPU, fp32.

    The checkpoint may be ``{'epoch', 'state_dict', 'bce_best'}`` (the release layout, with ``module.`` prefixes) or a
    plain state dict (e.g. deepware's, which uses the same module names).
    """
    state = load_torch_state_dict(path)
    model = DeepFakeClassifier(encoder_name)
    model.load_state_dict(state, strict=True)
    return model.eval()


# --------------------------------------------------------------------------------------------------------------------
# Pre-processing (reference: kernel_utils.py VideoReader / FaceExtractor / isotropically_resize_image / put_to_center)
# --------------------------------------------------------------------------------------------------------------------


def dfdc_frame_indices(frame_count: int, n: int = N_FRAMES) -> np.ndarray:
    """``n`` evenly spaced indices over [0, frame_count-1], endpoint included, truncated to int (the reference's).

    If the video has fewer than ``n`` frames, an index can repeat. Callers should decode each distinct index once.
    """
    if frame_count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.linspace(0, frame_count - 1, n, endpoint=True).astype(np.int64)


def dfdc_crop(frame_rgb: np.ndarray, box_xyxy_halfres: Sequence[float]) -> np.ndarray:
    """Cut the face out of the full-resolution frame for a box detected on the half-resolution frame.

    The coordinates are doubled and truncated to int. The box is then padded by a third of its width and height
    on each side. The lower bounds are clamped at 0 and the upper ends are cut off at the frame edge by slicing.
    The crop is not squared and not zero-padded.
    """
    xmin, ymin, xmax, ymax = (int(c * 2) for c in box_xyxy_halfres[:4])
    pad_w = (xmax - xmin) // 3
    pad_h = (ymax - ymin) // 3
    return frame_rgb[max(ymin - pad_h, 0): ymax + pad_h, max(xmin - pad_w, 0): xmax + pad_w]


def isotropic_resize(img: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Scale so the longer side is ``size``, short side int-truncated. Cubic when enlarging, area when shrinking."""
    h, w = img.shape[:2]
    if max(h, w) == size:
        return img
    # Same float operations as the reference (short * (size / long)): the truncation matches, square crops included.
    if w > h:
        scale = size / w
        new_w, new_h = size, int(h * scale)
    else:
        scale = size / h
        new_w, new_h = int(w * scale), size
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    # max(1, ·): an extremely elongated crop would otherwise give a 0-pixel side, which cv2 rejects.
    return cv2.resize(img, (max(1, new_w), max(1, new_h)), interpolation=interp)


def put_to_center(img: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Paste into a black ``size``×``size`` canvas at ((size-w)//2, (size-h)//2), after cutting to at most size×size."""
    img = img[:size, :size]
    h, w = img.shape[:2]
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top: top + h, left: left + w] = img
    return out


def prepare_crops(crops_rgb: Sequence[np.ndarray], size: int = INPUT_SIZE) -> np.ndarray:
    """Face crops of any size → (N, size, size, 3) uint8 model inputs."""
    if len(crops_rgb) == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([put_to_center(isotropic_resize(c, size), size) for c in crops_rgb])


def normalize(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) or (H, W, 3) RGB uint8 → (N, 3, H, W) float32, /255, then ImageNet mean/std per channel.

    The arithmetic is float32, in the reference's order (x/255, subtract the mean, divide by the std).
    """
    x = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------------------------------------


def _explicit_missing(path: Path) -> WeightsNotFoundError:
    spec = WeightSpec(
        name="efficientnet_b7", filename=path.name, sha256=None, license="", url=None,
        description="DFDC EfficientNet-B7 checkpoint given by path",
    )
    return WeightsNotFoundError(spec, [f"{path} (explicit path)"])


class EfficientNetB7Detector:
    """An ensemble of ``DeepFakeClassifier`` s scoring 380×380 face crops.

    ``predict`` returns, per crop, the mean of the models' probabilities. ``predict_per_model`` returns each model's
    scores, for the reference's video score: confident strategy per model, then the mean over models
    (``pipeline.aggregate.dfdc_ensemble_score``).
    """

    name = "efficientnet_b7"
    modality = "visual"
    input_size = INPUT_SIZE

    def __init__(
        self,
        models: Sequence[nn.Module] | nn.Module,
        device: str | torch.device = "cpu",
        weights_info: WeightsInfo | Sequence[WeightsInfo] | None = None,
        batch_size: int = 16,
    ) -> None:
        if isinstance(models, nn.Module):
            models = [models]
        if len(models) == 0:
            raise ValueError("EfficientNetB7Detector needs at least one model")
        self.device = resolve_device(device)
        self.models = [m.to(self.device).eval() for m in models]
        self.batch_size = int(batch_size)
        if weights_info is None:
            infos = [WeightsInfo.in_memory(self.name) for _ in self.models]
        elif isinstance(weights_info, WeightsInfo):
            infos = [weights_info]
        else:
            infos = list(weights_info)
        self.weights_infos: tuple[WeightsInfo, ...] = tuple(infos)

    @property
    def weights_info(self) -> WeightsInfo:
        """One record for the report. For an ensemble, the file names and sha256 sums are joined in model order."""
        if len(self.weights_infos) == 1:
            return self.weights_infos[0]
        return WeightsInfo(
            name=f"{self.name} ({len(self.weights_infos)}-model ensemble)",
            file=",".join(w.file for w in self.weights_infos),
            sha256=",".join(w.sha256 for w in self.weights_infos),
        )

    @classmethod
    def load(
        cls,
        weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        device: str | torch.device = "cpu",
        encoder_name: str = DEFAULT_ENCODER,
        batch_size: int = 16,
    ) -> EfficientNetB7Detector:
        """``weights``: None (all 7 release files through ``models.weights``), one checkpoint path, or a list of paths.

        Every file is located before any model is built, so a missing file fails fast. A missing file raises
        ``WeightsNotFoundError``.
        """
        if weights is None:
            # resolve() raises WeightsNotFoundError itself. Any one missing member is an error, because a partial
            # ensemble would silently change the scores.
            named = [(f"dfdc_b7_{i}", resolve(f"dfdc_b7_{i}")) for i in range(len(DFDC_B7_FILES))]
        else:
            paths = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights)
            if not paths:
                raise ValueError("EfficientNetB7Detector.load: empty list of checkpoint paths")
            named = []
            for p in paths:
                p = Path(p).expanduser()
                if not p.is_file():
                    raise _explicit_missing(p)
                named.append((p.name, p))
        models, infos = [], []
        for wname, path in named:
            logger.info("loading %s from %s", wname, path)
            models.append(load_dfdc_checkpoint(path, encoder_name=encoder_name))
            infos.append(WeightsInfo.of(wname, path))
        return cls(models, device=device, weights_info=infos, batch_size=batch_size)

    def _check(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) RGB uint8 crops, got shape {crops.shape}")
        if crops.dtype != np.uint8:
            raise ValueError(f"expected uint8 crops, got {crops.dtype}")
        return crops

    def predict_logits(self, crops: np.ndarray) -> np.ndarray:
        """(M, N) float64 logits: one row per model."""
        crops = self._check(crops)
        n = crops.shape[0]
        out = np.zeros((len(self.models), n), dtype=np.float64)
        if n == 0:
            return out
        with inference(self.device):
            for sl in batched(n, self.batch_size):
                # Normalise once per batch and share it across the models.
                x = normalize(torch.from_numpy(np.ascontiguousarray(crops[sl])).to(self.device))
                for i, model in enumerate(self.models):
                    out[i, sl] = model(x).float().reshape(-1).cpu().numpy()
        return out

    def predict_per_model(self, crops: np.ndarray) -> list[Scores]:
        """One ``Scores`` per model, in model order."""
        return [Scores.from_fake_logits(row) for row in self.predict_logits(crops)]

    def predict(self, crops: np.ndarray) -> Scores:
        """(N, 380, 380, 3) RGB uint8 crops (``prepare_crops`` output) → per-crop mean of the models' P(fake).

        The ``logit`` field is the log-odds of that mean probability. It is not the mean logit.
        """
        logits = self.predict_logits(crops)
        probs = expit(logits).mean(axis=0)
        clipped = np.clip(probs, 1e-15, 1.0 - 1e-15)
        return Scores(fake_prob=probs, logit=np.log(clipped) - np.log1p(-clipped))

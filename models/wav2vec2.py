"""wav2vec2 sequence classifier for synthetic speech (production audio option, Hugging Face checkpoint).

The fake class is read from ``config.id2label`` by name, never assumed: hub checkpoints disagree on the
order (MelodyMachine/Deepfake-audio-detection-V2 puts "fake" at index 0).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.base import Scores, WeightsInfo, batched, inference, resolve_device, sha256_of
from models.errors import DetectorUnavailable
from models.weights import HUB_MODELS

logger = logging.getLogger(__name__)

HUB_NAME = "wav2vec2_deepfake"
DEFAULT_REPO_ID = HUB_MODELS[HUB_NAME].repo_id

_FAKE_WORDS = ("fake", "spoof", "synthetic", "deepfake", "generated")
_REAL_WORDS = ("real", "bonafide", "genuine", "human", "authentic")


class HubWeightsNotFoundError(DetectorUnavailable, FileNotFoundError):
    """A hub checkpoint could not be loaded (not cached and the hub is unreachable).

    Also a ``FileNotFoundError`` so callers that skip detectors on missing weights treat it the same way
    as ``models.weights.WeightsNotFoundError``.
    """

    def __init__(self, repo_id: str, cause: BaseException | None = None):
        self.repo_id = repo_id
        lines = [
            f"wav2vec2 checkpoint '{repo_id}' could not be loaded: it is not in the local Hugging Face cache "
            "and could not be fetched because the hub is unreachable (offline, HF_HUB_OFFLINE=1, no network) "
            "or has no such repository.",
        ]
        if cause is not None:
            lines.append(f"Cause: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")
        lines.append(
            "Provide it by: on a machine with internet, `huggingface-cli download "
            f"{repo_id} --local-dir DIR` (DIR then holds config.json, the weights and preprocessor_config.json), "
            "copy DIR here and pass it as weights=DIR; or point HF_HOME at a cache that already holds it."
        )
        DetectorUnavailable.__init__(
            self, f"hub checkpoint {repo_id} not available offline (pass a local directory)", "\n".join(lines))

    def __str__(self) -> str:
        return self.args[0].split("\n", 1)[-1]


def _norm_label(label: str) -> str:
    return re.sub(r"[^a-z]", "", str(label).lower())


def find_fake_index(id2label: Mapping[Any, str]) -> int:
    """Index of the fake/spoof class by name; raises ``ValueError`` when the labels do not say."""
    labels = {int(k): _norm_label(v) for k, v in id2label.items()}
    fake = [i for i, name in labels.items() if any(w in name for w in _FAKE_WORDS)]
    real = [i for i, name in labels.items() if any(w in name for w in _REAL_WORDS)]
    both = sorted(set(fake) & set(real))
    fake = [i for i in fake if i not in both]
    real = [i for i in real if i not in both]
    if not both and len(fake) == 1:
        return fake[0]
    if not both and not fake and len(real) == 1 and len(labels) == 2:
        return next(i for i in labels if i != real[0])  # two classes, one clearly real
    raise ValueError(
        f"cannot tell which class is fake from id2label={dict(id2label)}: expected exactly one label naming "
        f"{'/'.join(_FAKE_WORDS)} (or, for two classes, one naming {'/'.join(_REAL_WORDS)}); "
        "pass fake_label_index explicitly"
    )


def _weights_file(directory: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    return None


class Wav2Vec2Detector:
    """Audio detector: windows (N, L) float32 16 kHz -> P(fake) from a wav2vec2 sequence classifier."""

    name = "wav2vec2"
    modality = "audio"
    sample_rate = 16000

    def __init__(
        self,
        model: Any,  # transformers.Wav2Vec2ForSequenceClassification (kept loose: transformers imports slowly)
        feature_extractor: Any = None,
        device: str | torch.device | None = "cpu",
        weights_info: WeightsInfo | None = None,
        fake_label_index: int | None = None,
        window_samples: int = 64000,
        batch_size: int = 8,
        fp16: bool = True,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.feature_extractor = feature_extractor
        self.weights_info = weights_info or WeightsInfo.in_memory(self.name)
        num_labels = int(model.config.num_labels)
        if fake_label_index is None:
            fake_label_index = find_fake_index(model.config.id2label)
        if not 0 <= fake_label_index < num_labels:
            raise ValueError(f"fake_label_index {fake_label_index} out of range for {num_labels} labels")
        if num_labels < 2:
            raise ValueError("a fake-vs-real classifier needs at least two labels")
        self.fake_label_index = int(fake_label_index)
        self.window_samples = int(window_samples)
        self.batch_size = batch_size
        self.fp16 = fp16
        # The feature extractor's only transform for fixed-length 16 kHz windows is the per-utterance
        # zero-mean/unit-variance normalisation; it is on for the hub checkpoint.
        self.do_normalize = bool(getattr(feature_extractor, "do_normalize", True))
        fe_rate = getattr(feature_extractor, "sampling_rate", None)
        if fe_rate is not None and int(fe_rate) != self.sample_rate:
            raise ValueError(f"feature extractor expects {fe_rate} Hz, this detector feeds {self.sample_rate} Hz")

    @classmethod
    def load(
        cls, weights: str | os.PathLike | None = None, device: str | torch.device | None = "cpu", **kwargs: Any
    ) -> Wav2Vec2Detector:
        """``weights``: a local directory (save_pretrained layout) or a hub id (default: the registry's)."""
        from transformers import AutoFeatureExtractor, Wav2Vec2ForSequenceClassification

        source = str(weights) if weights is not None else DEFAULT_REPO_ID
        local = Path(source).expanduser()
        is_local = local.is_dir()
        if not is_local and (os.sep in source and not re.fullmatch(r"[\w.-]+/[\w.-]+", source)):
            raise FileNotFoundError(f"wav2vec2 weights directory {local} does not exist")
        try:
            model = Wav2Vec2ForSequenceClassification.from_pretrained(
                str(local) if is_local else source, dtype=torch.float32
            )
        except (OSError, ValueError) as exc:
            if is_local:
                raise
            raise HubWeightsNotFoundError(source, exc) from exc
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(str(local) if is_local else source)
        except (OSError, ValueError) as exc:  # no preprocessor_config.json: wav2vec2 defaults (normalise)
            logger.warning("no feature extractor config for %s (%s); normalising each window", source, exc)
            feature_extractor = None

        if is_local:
            wfile = _weights_file(local)
            info = WeightsInfo(HUB_NAME, local.name if wfile is None else f"{local.name}/{wfile.name}",
                               "" if wfile is None else sha256_of(wfile))
        else:
            info = WeightsInfo(HUB_NAME, source, str(getattr(model.config, "_commit_hash", "") or ""))
        logger.info("loaded wav2vec2 classifier from %s (labels %s)", source, model.config.id2label)
        return cls(model, feature_extractor=feature_extractor, device=device, weights_info=info, **kwargs)

    def _prepare(self, windows: np.ndarray) -> np.ndarray:
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"expected windows of shape (N, samples), got {x.shape}")
        if self.do_normalize:  # same formula as Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
            x = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-7)
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        """Raw (N, num_labels) classifier logits, float32."""
        x = self._prepare(windows)
        out = np.zeros((x.shape[0], int(self.model.config.num_labels)), dtype=np.float32)
        with inference(self.device, fp16=self.fp16):
            for sl in batched(x.shape[0], self.batch_size):
                logits = self.model(input_values=torch.from_numpy(x[sl]).to(self.device)).logits
                out[sl] = logits.float().cpu().numpy()
        return out

    def predict(self, windows: np.ndarray) -> Scores:
        if np.asarray(windows).shape[:1] == (0,):
            return Scores.empty()
        logits = self.predict_logits(windows).astype(np.float64)
        fake = logits[:, self.fake_label_index]
        others = np.delete(logits, self.fake_label_index, axis=1)
        # log-odds of softmax(fake): logit[fake] - logsumexp(others); = logit difference for two classes
        m = others.max(axis=1)
        lse = m + np.log(np.exp(others - m[:, None]).sum(axis=1))
        return Scores.from_fake_logits(fake - lse)


__all__ = ["DEFAULT_REPO_ID", "HubWeightsNotFoundError", "Wav2Vec2Detector", "find_fake_index"]

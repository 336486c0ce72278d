"""The small contract every detector in ``models/`` follows.

A detector is a class with
  * ``name`` (its registry key) and ``modality`` (what it looks at),
  * ``__init__(model, device, weights=...)`` taking an already-built ``torch.nn.Module``
    (so tests can pass tiny or random models),
  * ``load(weights=None, device="cpu")`` building the module from a checkpoint file
    (``None``: resolved through ``models.weights``; a missing file raises ``WeightsNotFoundError``),
  * ``predict(batch)`` taking a batch of arrays and returning ``Scores`` (one P(fake) per item).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.errors import DetectorUnavailable
from models.weights import sha256_of

__all__ = ["DetectorUnavailable"]


@dataclass(frozen=True)
class Scores:
    """Per-item output of ``Detector.predict``."""

    fake_prob: np.ndarray  # (N,) float64 probability that the item is FAKE, in [0, 1]
    logit: np.ndarray  # (N,) fake-oriented log-odds before the sigmoid (what calibration fits on)

    def __post_init__(self) -> None:
        if self.fake_prob.shape != self.logit.shape:
            raise ValueError(f"fake_prob {self.fake_prob.shape} and logit {self.logit.shape} differ in shape")

    def __len__(self) -> int:
        return int(self.fake_prob.shape[0])

    @classmethod
    def from_fake_logits(cls, logits: torch.Tensor | np.ndarray) -> Scores:
        logit = _as_numpy(logits).astype(np.float64).reshape(-1)
        return cls(fake_prob=1.0 / (1.0 + np.exp(-logit)), logit=logit)

    @classmethod
    def empty(cls) -> Scores:
        return cls(np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class WeightsInfo:
    """Which checkpoint a detector runs, for the report's model metadata."""

    name: str
    file: str
    sha256: str

    @classmethod
    def of(cls, name: str, path: str | os.PathLike) -> WeightsInfo:
        return cls(name=name, file=Path(path).name, sha256=sha256_of(path))

    @classmethod
    def in_memory(cls, name: str) -> WeightsInfo:
        return cls(name=name, file="<in-memory module>", sha256="")


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return dev


def configure_torch_numerics() -> None:
    """TF32 off: the golden vectors are only reproducible with full fp32 matmuls/convs."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@contextlib.contextmanager
def inference(device: torch.device, fp16: bool = True) -> Iterator[None]:
    """``inference_mode`` everywhere, fp16 autocast on CUDA (a no-op on CPU)."""
    with torch.inference_mode():
        if fp16 and device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Plain or wrapped (``{'state_dict': ...}``) checkpoints; a leading ``module.`` (DataParallel) is stripped."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval BatchNorm2d that directly follows a Conv2d inside an ``nn.Sequential`` into that conv (in
    place; the BN becomes Identity). Inference only: the same function to ~1e-6, one pass over memory fewer."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv.eval(), bn.eval()), nn.Identity()
    return model


def batched(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))

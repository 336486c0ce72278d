"""MesoNet (Afchar et al., WIFS 2018): Meso4 and MesoInception4 in PyTorch, plus a loader for the Keras weights.

Written from the fact sheet in ``specs/mesonet/SPEC.md``. The published weights are Keras 2.1.5 weights-only HDF5 files
whose single sigmoid output is P(REAL) (class 1 = ``real`` in alphabetical folder order), so the modules here return
the REAL logit and ``MesoNetDetector`` flips it into the pipeline's fake-oriented convention.
"""

from __future__ import annotations

import abc
import logging
import os
import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
from torch import nn

from models.base import Scores, WeightsInfo, batched, inference, resolve_device
from models.weights import resolve

logger = logging.getLogger(__name__)

INPUT_SIZE = 256
# mesoinception_ft: this project's fine-tune of mesoinception_df on dev crops (training/train_visual.py), bundled;
# mesoinception_sbi: taught on self-blended real crops only (training/train_sbi.py), bundled.
VARIANTS = ("meso4_df", "meso4_f2f", "mesoinception_df", "mesoinception_f2f", "mesoinception_ft", "mesoinception_sbi")
ARCHS = ("meso4", "mesoinception4")

# Keras defaults: BN eps 1e-3 (PyTorch's 1e-5 shifts the goldens); Keras momentum 0.99 is PyTorch momentum 0.01,
# which only matters when fine-tuning.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _conv(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Conv2d:
    # Keras padding='same' at stride 1 with an odd kernel is a symmetric pad of d*(k-1)/2.
    return nn.Conv2d(cin, cout, k, padding=dilation * (k - 1) // 2, dilation=dilation, bias=True)


class _MesoBase(nn.Module, abc.ABC):
    """Shared head: Flatten(1024) → Dropout → Dense 16 → LeakyReLU 0.1 → Dropout → Dense 1 (REAL logit)."""

    arch: str

    def __init__(self) -> None:
        super().__init__()
        self.drop1 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(8 * 8 * 16, 16)
        self.act = nn.LeakyReLU(0.1)
        self.drop2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 1)

    @abc.abstractmethod
    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutional part: (N,3,256,256) → (N,16,8,8); Meso4 and MesoInception4 differ only here."""

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediates for golden checks: ``preflatten`` (N,16,8,8), ``dense1_preact`` (N,16), ``logit`` (N,)."""
        pre = self.backbone(x)
        if pre.shape[1:] != (16, 8, 8):
            raise ValueError(f"MesoNet needs {INPUT_SIZE}x{INPUT_SIZE} input; got {tuple(x.shape)}")
        # NCHW flatten; load_keras_h5 permutes fc1's columns so this equals Keras' NHWC flatten.
        dense1 = self.fc1(self.drop1(pre.flatten(1)))
        logit = self.fc2(self.drop2(self.act(dense1))).squeeze(1)
        return {"preflatten": pre, "dense1_preact": dense1, "logit": logit}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N,3,256,256) RGB float in [0,1]. Returns the REAL logit, shape (N,)."""
        return self.features(x)["logit"]


class Meso4(_MesoBase):
    arch = "meso4"

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.pool1 = _conv(3, 8, 3), _bn(8), nn.MaxPool2d(2)
        self.conv2, self.bn2, self.pool2 = _conv(8, 8, 5), _bn(8), nn.MaxPool2d(2)
        self.conv3, self.bn3, self.pool3 = _conv(8, 16, 5), _bn(16), nn.MaxPool2d(2)
        self.conv4, self.bn4, self.pool4 = _conv(16, 16, 5), _bn(16), nn.MaxPool2d(4)
        self.relu = nn.ReLU()

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        # Keras order: activation inside the conv, then BN, then pool.
        for i in range(1, 5):
            x = getattr(self, f"pool{i}")(getattr(self, f"bn{i}")(self.relu(getattr(self, f"conv{i}")(x))))
        return x


class InceptionLayer(nn.Module):
    """Four branches concatenated in order: 1x1 | 1x1→3x3 | 1x1→3x3 dil 2 | 1x1→3x3 dil 3 (ReLU after every conv)."""

    def __init__(self, cin: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.branch1 = _conv(cin, a, 1)
        self.branch2_1x1, self.branch2_3x3 = _conv(cin, b, 1), _conv(b, b, 3, dilation=1)
        self.branch3_1x1, self.branch3_3x3 = _conv(cin, c, 1), _conv(c, c, 3, dilation=2)
        self.branch4_1x1, self.branch4_3x3 = _conv(cin, d, 1), _conv(d, d, 3, dilation=3)
        self.relu = nn.ReLU()
        self.out_channels = a + b + c + d

    def creation_order(self) -> list[nn.Conv2d]:
        """The order the reference code creates these convs, which is the order of the Keras name suffixes."""
        return [self.branch1, self.branch2_1x1, self.branch2_3x3, self.branch3_1x1, self.branch3_3x3,
                self.branch4_1x1, self.branch4_3x3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        return torch.cat([
            r(self.branch1(x)),
            r(self.branch2_3x3(r(self.branch2_1x1(x)))),
            r(self.branch3_3x3(r(self.branch3_1x1(x)))),
            r(self.branch4_3x3(r(self.branch4_1x1(x)))),
        ], dim=1)


class MesoInception4(_MesoBase):
    arch = "mesoinception4"

    def __init__(self) -> None:
        super().__init__()
        self.inc1, self.bn1, self.pool1 = InceptionLayer(3, 1, 4, 4, 2), _bn(11), nn.MaxPool2d(2)
        self.inc2, self.bn2, self.pool2 = InceptionLayer(11, 2, 4, 4, 2), _bn(12), nn.MaxPool2d(2)
        self.conv3, self.bn3, self.pool3 = _conv(12, 16, 5), _bn(16), nn.MaxPool2d(2)
        self.conv4, self.bn4, self.pool4 = _conv(16, 16, 5), _bn(16), nn.MaxPool2d(4)
        self.relu = nn.ReLU()

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.bn1(self.inc1(x)))
        x = self.pool2(self.bn2(self.inc2(x)))
        x = self.pool3(self.bn3(self.relu(self.conv3(x))))
        return self.pool4(self.bn4(self.relu(self.conv4(x))))


def build(arch: str) -> _MesoBase:
    if arch == "meso4":
        return Meso4()
    if arch == "mesoinception4":
        return MesoInception4()
    raise ValueError(f"unknown MesoNet arch {arch!r}; expected one of {ARCHS}")


def arch_of_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown MesoNet variant {variant!r}; expected one of {VARIANTS}")
    return "meso4" if variant.startswith("meso4") else "mesoinception4"


# ---------------------------------------------------------------------------------------------------------------------
# Keras HDF5 → PyTorch


def _suffix(name: str) -> int:
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0  # Keras names the first instance without a suffix in some versions


def _read_keras_layers(path: Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(layer name, {param: array}) for every layer that has weights, in ``layer_names`` order."""
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file, so not a Keras MesoNet checkpoint")
    layers: list[tuple[str, dict[str, np.ndarray]]] = []
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)  # full-model saves nest the weights one level down
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path} has no 'layer_names' attribute: not a Keras weights file")
        for raw in root.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[name]
            params: dict[str, np.ndarray] = {}
            for wraw in group.attrs.get("weight_names", []):
                wname = wraw.decode() if isinstance(wraw, bytes) else str(wraw)
                key = wname.rsplit("/", 1)[-1].split(":", 1)[0]  # 'conv2d_5/kernel:0' → 'kernel'
                params[key] = np.asarray(group[wname], dtype=np.float32)
            if params:
                layers.append((name, params))
    return layers


def _copy(dst: torch.Tensor, src: np.ndarray, what: str) -> None:
    if tuple(dst.shape) != src.shape:
        raise ValueError(f"{what}: checkpoint shape {src.shape} does not fit {tuple(dst.shape)}")
    dst.copy_(torch.from_numpy(np.ascontiguousarray(src)))


def _need(params: dict[str, np.ndarray], keys: tuple[str, ...], layer: str) -> None:
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"Keras layer {layer} lacks {missing} (has {sorted(params)})")


def _load_conv(conv: nn.Conv2d, layer: str, p: dict[str, np.ndarray]) -> None:
    _need(p, ("kernel", "bias"), layer)
    _copy(conv.weight, p["kernel"].transpose(3, 2, 0, 1), f"{layer}.kernel")  # HWIO → OIHW
    _copy(conv.bias, p["bias"], f"{layer}.bias")


def _load_bn(bn: nn.BatchNorm2d, layer: str, p: dict[str, np.ndarray]) -> None:
    _need(p, ("gamma", "beta", "moving_mean", "moving_variance"), layer)
    _copy(bn.weight, p["gamma"], f"{layer}.gamma")
    _copy(bn.bias, p["beta"], f"{layer}.beta")
    _copy(bn.running_mean, p["moving_mean"], f"{layer}.moving_mean")
    _copy(bn.running_var, p["moving_variance"], f"{layer}.moving_variance")


def _load_dense(fc: nn.Linear, layer: str, p: dict[str, np.ndarray], nhwc: tuple[int, int, int] | None = None) -> None:
    _need(p, ("kernel", "bias"), layer)
    k = p["kernel"]
    if nhwc is not None:
        # Keras flattened NHWC (row (h*W+w)*C+c); our flatten is NCHW (column c*H*W+h*W+w): reorder rows to match.
        h, w, c = nhwc
        if k.shape[0] != h * w * c:
            raise ValueError(f"{layer}.kernel: {k.shape[0]} inputs, expected {h * w * c}")
        k = k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    _copy(fc.weight, k.T, f"{layer}.kernel")
    _copy(fc.bias, p["bias"], f"{layer}.bias")


def load_keras_h5(path: str | os.PathLike, arch: str | None = None) -> _MesoBase:
    """Build ``arch`` (``meso4`` / ``mesoinception4``; None: inferred from the conv count) from a Keras MesoNet .h5.

    Meso4 layers map by order of appearance; MesoInception4 layers by the numeric suffix of their Keras name, which is
    creation order. ``layer_names`` is topological and interleaves the inception branches, and branches 2 and 3
    have identical shapes, so neither position nor shape can tell them apart. Returns the module in eval mode.
    """
    path = Path(path)
    layers = _read_keras_layers(path)
    convs = [(n, p) for n, p in layers if n.startswith("conv2d")]
    bns = [(n, p) for n, p in layers if n.startswith("batch_normalization")]
    denses = [(n, p) for n, p in layers if n.startswith("dense")]
    other = [n for n, _ in layers if not n.startswith(("conv2d", "batch_normalization", "dense"))]
    if other:
        raise ValueError(f"{path}: unexpected weighted layers {other}; not a MesoNet checkpoint")
    if arch is None:
        arch = {4: "meso4", 16: "mesoinception4"}.get(len(convs), "")
    model = build(arch) if arch else None
    n_conv = 4 if arch == "meso4" else 16
    if model is None or len(convs) != n_conv or len(bns) != 4 or len(denses) != 2:
        raise ValueError(
            f"{path}: {len(convs)} conv / {len(bns)} BN / {len(denses)} dense layers do not match MesoNet "
            f"arch {arch or '?'} ({n_conv} / 4 / 2)"
        )
    if arch == "mesoinception4":
        convs, bns, denses = (sorted(g, key=lambda t: _suffix(t[0])) for g in (convs, bns, denses))
        targets = [*model.inc1.creation_order(), *model.inc2.creation_order(), model.conv3, model.conv4]
    else:
        targets = [model.conv1, model.conv2, model.conv3, model.conv4]
    with torch.no_grad():
        for conv, (name, p) in zip(targets, convs, strict=True):
            _load_conv(conv, name, p)
        for bn, (name, p) in zip([model.bn1, model.bn2, model.bn3, model.bn4], bns, strict=True):
            _load_bn(bn, name, p)
        _load_dense(model.fc1, denses[0][0], denses[0][1], nhwc=(8, 8, 16))
        _load_dense(model.fc2, denses[1][0], denses[1][1])
    logger.debug("loaded %s from %s", arch, path)
    return model.eval()


def load_torch_checkpoint(path: str | os.PathLike, arch: str | None = None) -> _MesoBase:
    """A state_dict saved from these modules, plain or wrapped as ``{"arch": ..., "state_dict": ...}``.

    The wrapped ``arch`` wins over the ``arch`` argument, since the file knows what it holds.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict or {{'arch', 'state_dict'}}, got {type(obj).__name__}")
    if isinstance(obj.get("state_dict"), dict):
        file_arch = obj.get("arch")
        if file_arch is not None and arch is not None and file_arch != arch:
            logger.info("%s holds arch %s (asked for %s); using the file's", path, file_arch, arch)
        arch = file_arch or arch
        obj = obj["state_dict"]
    state = {(k.removeprefix("module.")): v for k, v in obj.items()}
    if arch is None:
        arch = "mesoinception4" if any(k.startswith("inc1.") for k in state) else "meso4"
    model = build(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a {arch} state_dict: {exc}") from exc
    return model.eval()


def load_checkpoint(path: str | os.PathLike, arch: str | None = None) -> _MesoBase:
    """Keras HDF5 or PyTorch checkpoint, told apart by content rather than by extension."""
    return load_keras_h5(path, arch) if h5py.is_hdf5(path) else load_torch_checkpoint(path, arch)


# ---------------------------------------------------------------------------------------------------------------------
# Detector


class MesoNetDetector:
    """Face-crop detector. ``predict`` takes the pipeline's aligned RGB uint8 crops and returns P(FAKE)."""

    name = "mesonet"
    modality = "visual"
    input_size = INPUT_SIZE

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = "cpu",
        weights_info: WeightsInfo | None = None,
        batch_size: int = 16,  # 64 crops at once peaked 300 MB higher on CPU and ran no faster
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.weights_info = weights_info or WeightsInfo.in_memory(self.name)
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = "cpu",
        variant: str = "mesoinception_df",
    ) -> MesoNetDetector:
        """``variant`` picks the registry checkpoint (and the arch of plain state_dicts); ``weights`` overrides it.

        Raises ``WeightsNotFoundError`` when no file can be found.
        """
        arch = arch_of_variant(variant)
        path = resolve(variant, weights)
        if weights is not None and Path(weights).expanduser() != path:
            # The registry falls back to the stock file when an explicit path is missing; say so loudly.
            logger.warning("MesoNet weights %s not found; using %s instead", weights, path)
        model = load_checkpoint(path, arch)
        logger.info("MesoNet %s (%s) loaded from %s", variant, model.arch, path)
        return cls(model, device=device, weights_info=WeightsInfo.of(variant, path))

    def _to_tensor(self, crops: np.ndarray) -> torch.Tensor:
        if crops.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
            # INTER_AREA: the crops are usually larger than 256, and area averaging avoids aliasing on the way down.
            crops = np.stack([cv2.resize(c, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA) for c in crops])
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        # NHWC memory viewed as NCHW is channels_last, which keeps oneDNN off its slow path for these thin
        # full-resolution convs (MesoInception4 on CPU: ~2x faster than contiguous NCHW). Made explicit so it survives.
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last)

    def predict(self, crops: np.ndarray) -> Scores:
        """``crops``: (N,H,W,3) RGB uint8 (256x256 expected; other sizes are resized). Returns per-crop P(FAKE)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"expected (N,H,W,3) RGB crops, got shape {crops.shape}")
        if crops.dtype != np.uint8:
            # Refuse rather than guess the scale: upstream's own video pipeline fed 0-255 floats to a [0,1] model.
            raise TypeError(f"expected uint8 crops, got {crops.dtype}")
        if len(crops) == 0:
            return Scores.empty()
        out: list[np.ndarray] = []
        with inference(self.device):
            for sl in batched(len(crops), self.batch_size):
                real_logit = self.model(self._to_tensor(crops[sl]))
                out.append(real_logit.float().cpu().numpy())
        # The network's sigmoid is P(REAL); negate the logit so it is fake-oriented like every other detector.
        return Scores.from_fake_logits(-np.concatenate(out).astype(np.float64))

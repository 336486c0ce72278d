"""RetinaFace face detector (MobileNet-0.25 and ResNet-50 variants), written from
``shared/specs/retinaface_mnet025/SPEC.md``.

Layout: ``RetinaFace`` is the raw network (returns loc / class logits / landmarks for every prior);
``prior_boxes``, ``decode_boxes``, ``decode_landmarks``, ``nms_legacy`` and ``postprocess`` reproduce the
reference post-processing; ``RetinaFaceDetector`` wraps them behind the detector contract of ``models.base``
and takes **RGB** frames (what the pipeline decodes), converting to the BGR/mean convention the weights expect.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.base import (
    WeightsInfo,
    batched,
    configure_torch_numerics,
    fold_batchnorm,
    inference,
    load_torch_state_dict,
    resolve_device,
)
from models.weights import resolve

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetinaFaceConfig:
    name: str
    backbone: str  # "mobilenet0.25" | "resnet50"
    in_channels: tuple[int, int, int]  # backbone channels at strides 8/16/32
    out_channels: int
    leaky_slope: float  # FPN/SSH (and MobileNet) activation slope; 0 = plain ReLU
    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variance: tuple[float, float] = (0.1, 0.2)
    mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)

    @property
    def num_anchors(self) -> int:
        return len(self.min_sizes[0])


CFG_MNET025 = RetinaFaceConfig("mobilenet0.25", "mobilenet0.25", (64, 128, 256), 64, 0.1)
CFG_RESNET50 = RetinaFaceConfig("resnet50", "resnet50", (512, 1024, 2048), 256, 0.0)
VARIANTS: dict[str, tuple[str, RetinaFaceConfig]] = {
    "mnet025": ("retinaface_mnet025", CFG_MNET025),
    "resnet50": ("retinaface_resnet50", CFG_RESNET50),
}


# --------------------------------------------------------------------------------------------- network


def _act(slope: float) -> nn.Module:
    # LeakyReLU(0) is numerically ReLU; keep one module type so both configs share code.
    return nn.LeakyReLU(slope, inplace=True) if slope > 0 else nn.ReLU(inplace=True)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, slope: float | None = None) -> nn.Sequential:
    """Conv(no bias) -> BN [-> act]; conv at index 0 and BN at index 1 as in the checkpoint keys."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False), nn.BatchNorm2d(cout)]
    if slope is not None:
        layers.append(_act(slope))
    return nn.Sequential(*layers)


def _conv_dw(cin: int, cout: int, stride: int, slope: float) -> nn.Sequential:
    """Depthwise-separable unit: keys .0 (dw conv) .1 (BN) .3 (pw conv) .4 (BN)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        _act(slope),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        _act(slope),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1 x0.25, stages 1..3 only (the ImageNet avg/fc are not in the checkpoint)."""

    def __init__(self, slope: float = 0.1):
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 3, 2, slope),
            _conv_dw(8, 16, 1, slope),
            _conv_dw(16, 32, 2, slope),
            _conv_dw(32, 32, 1, slope),
            _conv_dw(32, 64, 2, slope),
            _conv_dw(64, 64, 1, slope),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2, slope), *[_conv_dw(128, 128, 1, slope) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2, slope), _conv_dw(256, 256, 1, slope))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class ResNet50Body(nn.Module):
    """torchvision ResNet-50 without avgpool/fc; module attributes sit directly under ``body.`` like the checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50  # only the production variant needs torchvision

        r = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = r.conv1, r.bn1, r.relu, r.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = r.layer1, r.layer2, r.layer3, r.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c1 = self.layer2(x)
        c2 = self.layer3(c1)
        return [c1, c2, self.layer4(c2)]


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], out: int, slope: float):
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out, 1, 1, slope)
        self.output2 = _conv_bn(in_channels[1], out, 1, 1, slope)
        self.output3 = _conv_bn(in_channels[2], out, 1, 1, slope)
        self.merge1 = _conv_bn(out, out, 3, 1, slope)
        self.merge2 = _conv_bn(out, out, 3, 1, slope)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        # Legacy "nearest" (src = floor(dst*in/out)) to the exact size: odd sizes (11 -> 21) depend on it.
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__()
        q = cout // 4
        self.conv3X3 = _conv_bn(cin, cout // 2, 3)
        self.conv5X5_1 = _conv_bn(cin, q, 3, slope=slope)
        self.conv5X5_2 = _conv_bn(q, q, 3)
        self.conv7X7_2 = _conv_bn(q, q, 3, slope=slope)
        self.conv7x7_3 = _conv_bn(q, q, 3)  # lowercase x: that is the checkpoint's key name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(t), self.conv7x7_3(self.conv7X7_2(t))], dim=1)
        return F.relu(out)


class _Head(nn.Module):
    def __init__(self, cin: int, num_anchors: int, k: int):
        super().__init__()
        self.k = k
        self.conv1x1 = nn.Conv2d(cin, num_anchors * k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, A*k, h, w) -> (N, h*w*A, k): anchor order is row, column, anchor.
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.k)


class RetinaFace(nn.Module):
    """Raw network: ``forward(x)`` on BGR-minus-mean NCHW float input returns (loc, conf_logits, landms)."""

    def __init__(self, cfg: RetinaFaceConfig = CFG_MNET025):
        super().__init__()
        self.cfg = cfg
        if cfg.backbone == "mobilenet0.25":
            self.body: nn.Module = MobileNetV1Body(cfg.leaky_slope)
        elif cfg.backbone == "resnet50":
            self.body = ResNet50Body()
        else:
            raise ValueError(f"unknown RetinaFace backbone {cfg.backbone!r}")
        c, a = cfg.out_channels, cfg.num_anchors
        self.fpn = FPN(cfg.in_channels, c, cfg.leaky_slope)
        self.ssh1 = SSH(c, c, cfg.leaky_slope)
        self.ssh2 = SSH(c, c, cfg.leaky_slope)
        self.ssh3 = SSH(c, c, cfg.leaky_slope)
        self.ClassHead = nn.ModuleList([_Head(c, a, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(c, a, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(c, a, 10) for _ in range(3)])

    def _run(
        self, x: torch.Tensor, inter: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        body = self.body(x)
        fpn = self.fpn(body)
        ssh = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        if inter is not None:
            for i in range(3):
                inter[f"body_{i + 1}"], inter[f"fpn_{i}"], inter[f"ssh{i + 1}"] = body[i], fpn[i], ssh[i]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, ssh, strict=True)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, ssh, strict=True)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, ssh, strict=True)], dim=1)
        return loc, conf, landms

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._run(x, None)

    def forward_with_intermediates(
        self, x: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        """Heads plus body_1..3 / fpn_0..2 / ssh1..3 feature maps (names as in the golden intermediates)."""
        inter: dict[str, torch.Tensor] = {}
        return self._run(x, inter), inter


def load_retinaface_state_dict(model: RetinaFace, state: dict[str, torch.Tensor]) -> None:
    """Strict load (after the caller stripped ``module.``), tolerating only missing BN ``num_batches_tracked``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        # Checked here rather than by load_state_dict so the error stays short (a wrong variant lists ~100 shapes).
        raise RuntimeError(
            f"RetinaFace ({model.cfg.name}) state dict mismatch: {len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}, {len(shapes)} of other shape {shapes[:3]} "
            "(wrong variant, or not a RetinaFace checkpoint?)"
        )
    model.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------------------------- priors / decode


def prior_boxes(
    h: int, w: int, cfg: RetinaFaceConfig = CFG_MNET025, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(P, 4) normalised (cx, cy, w, h) priors, order level -> row -> column -> min_size.

    Computed in float64 then rounded once to float32, which is how the reference's Python floats end up
    in its tensor, so the result is bit-identical to it.
    """
    out = []
    for step, sizes in zip(cfg.steps, cfg.min_sizes, strict=True):
        fh, fw = -(-h // step), -(-w // step)
        cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * step / h
        cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * step / w
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        per_size = [
            torch.stack([gx, gy, torch.full_like(gx, m / w), torch.full_like(gx, m / h)], dim=-1) for m in sizes
        ]
        out.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(out).to(device=device, dtype=torch.float32)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variance: tuple[float, float] = (0.1, 0.2)) -> torch.Tensor:
    """(..., P, 4) regressions -> normalised (x1, y1, x2, y2); same operation order as the reference (float32)."""
    centre = priors[..., :2] + loc[..., :2] * variance[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * variance[1])
    tl = centre - size / 2
    return torch.cat([tl, tl + size], dim=-1)


def decode_landmarks(
    landms: torch.Tensor, priors: torch.Tensor, variance: tuple[float, float] = (0.1, 0.2)
) -> torch.Tensor:
    """(..., P, 10) regressions -> normalised (x0, y0, ..., x4, y4)."""
    pts = landms.unflatten(-1, (5, 2))
    out = priors[..., None, :2] + pts * variance[0] * priors[..., None, 2:]
    return out.flatten(-2)


def nms_legacy(dets: np.ndarray, iou: float = 0.4) -> np.ndarray:
    """Greedy NMS on float32 [x1, y1, x2, y2, score] with the "+1 pixel" area convention.

    A box is dropped when its IoU with a kept box is > ``iou``. Returns indices into ``dets`` in
    descending-score order (stable for ties, so a pre-sorted input keeps its order).
    """
    dets = np.asarray(dets, dtype=np.float32)
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    zero = np.float32(0)
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        iw = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return np.asarray(keep, dtype=np.int64)


def _select(
    boxes: np.ndarray,
    scores: np.ndarray,
    landms: np.ndarray,
    *,
    conf_threshold: float,
    top_k: int,
    nms_iou: float,
    keep_top_k: int,
    threshold: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One image: score cut -> sort -> top_k -> NMS -> keep_top_k [-> final threshold]; returns (dets, prior index)."""
    mask = scores > conf_threshold
    if threshold is not None:
        # Greedy NMS only lets higher-scored boxes suppress lower ones and top_k/keep_top_k cut score-sorted
        # prefixes, so dropping boxes below the final threshold first changes nothing above it (and is much faster).
        mask &= scores >= threshold
    idx = np.flatnonzero(mask)
    idx = idx[np.argsort(-scores[idx], kind="stable")][:top_k]
    dets = np.concatenate([boxes[idx], scores[idx, None]], axis=1).astype(np.float32, copy=False)
    keep = nms_legacy(dets, nms_iou)[:keep_top_k]
    out = np.concatenate([dets[keep], landms[idx[keep]]], axis=1).astype(np.float32, copy=False)
    return out, idx[keep]


def postprocess(
    loc: torch.Tensor | np.ndarray,
    conf: torch.Tensor | np.ndarray,
    landms: torch.Tensor | np.ndarray,
    priors: torch.Tensor | np.ndarray,
    h: int,
    w: int,
    resize: float = 1.0,
    *,
    conf_is_logits: bool = False,
    variance: tuple[float, float] = (0.1, 0.2),
    conf_threshold: float = 0.02,
    top_k: int = 5000,
    nms_iou: float = 0.4,
    keep_top_k: int = 750,
    threshold: float | None = None,
    return_index: bool = False,
) -> list[np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
    """Raw heads of a batch (N, P, k) -> per-image (K, 15) float32 detections in original pixels.

    ``h, w`` are the network input size and ``resize`` the factor that produced it from the original frame.
    ``conf`` is the softmax output (class 1 = face) unless ``conf_is_logits``. ``threshold`` optionally keeps
    only rows with score >= it. With ``return_index`` each item is (dets, index of the prior each row came from).
    """

    def t(a: torch.Tensor | np.ndarray) -> torch.Tensor:
        a = torch.as_tensor(a, dtype=torch.float32)
        return a if a.dim() == 3 else a.unsqueeze(0)

    loc_t, conf_t, lm_t = t(loc), t(conf), t(landms)
    pri = torch.as_tensor(priors, dtype=torch.float32).to(loc_t.device)
    scores = (conf_t.softmax(-1) if conf_is_logits else conf_t)[..., 1]
    # Only priors that can survive the score cuts are decoded (a few of ~10k per 640 px frame): every step below
    # is per prior, so the kept rows are the same as decoding all of them.
    # a little below the cuts: this only has to keep a superset, ``_select`` applies the exact ones
    floor = (conf_threshold if threshold is None else max(conf_threshold, threshold)) - 1e-6
    scale_box = loc_t.new_tensor([w, h, w, h])
    scale_lm = loc_t.new_tensor([w, h] * 5)
    results = []
    for i in range(loc_t.shape[0]):
        cand = torch.nonzero(scores[i] >= floor).flatten()
        # Scale like the reference: multiply by the input size, then divide by the resize factor, all float32.
        boxes = decode_boxes(loc_t[i, cand], pri[cand], variance) * scale_box / resize
        lms = decode_landmarks(lm_t[i, cand], pri[cand], variance) * scale_lm / resize
        boxes_np, scores_np, lms_np = (a.detach().cpu().numpy() for a in (boxes, scores[i, cand], lms))
        dets, idx = _select(boxes_np, scores_np, lms_np, conf_threshold=conf_threshold, top_k=top_k,
                            nms_iou=nms_iou, keep_top_k=keep_top_k, threshold=threshold)
        results.append((dets, cand.cpu().numpy()[idx]))
    return results if return_index else [d for d, _ in results]


# --------------------------------------------------------------------------------------------- detector


class RetinaFaceDetector:
    """Face boxes + 5 landmarks for batches of RGB frames."""

    name = "retinaface"
    modality = "faces"

    def __init__(
        self,
        model: RetinaFace,
        device: str | torch.device | None = "cpu",
        cfg: RetinaFaceConfig | None = None,
        weights_info: WeightsInfo | None = None,
    ):
        self.device = resolve_device(device)
        self.cfg = cfg or getattr(model, "cfg", CFG_MNET025)
        # NHWC on CPU: oneDNN's depthwise/1x1 convs run ~2x faster than NCHW here (heads differ by ~1e-5, within
        # the golden tolerance); the RGB frames are NHWC already, so the input needs no extra copy either.
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        # BN folded into the convs: ~25 % of CPU time went to separate batch-norm passes (boxes move < 1e-3 px)
        self.model = fold_batchnorm(model.eval()).to(self.device, memory_format=self.memory_format)
        self.weights_info = weights_info or WeightsInfo.in_memory(f"retinaface_{self.cfg.name}")
        self._priors: dict[tuple[int, int], torch.Tensor] = {}
        self._mean = torch.tensor(self.cfg.mean_bgr, dtype=torch.float32, device=self.device)

    @classmethod
    def load(
        cls,
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = "cpu",
        variant: str = "mnet025",
    ) -> RetinaFaceDetector:
        # Also accept the registry names ("retinaface_mnet025"), which is what settings.face_detector holds.
        key = variant.removeprefix("retinaface_")
        if key not in VARIANTS:
            raise ValueError(f"unknown RetinaFace variant {variant!r}; choose one of {sorted(VARIANTS)}")
        reg_name, cfg = VARIANTS[key]
        path = resolve(reg_name, weights)
        configure_torch_numerics()
        model = RetinaFace(cfg)
        load_retinaface_state_dict(model, load_torch_state_dict(path))
        logger.info("loaded RetinaFace %s from %s", cfg.name, path)
        return cls(model, device=device, cfg=cfg, weights_info=WeightsInfo.of(reg_name, path))

    def priors(self, h: int, w: int) -> torch.Tensor:
        key = (h, w)
        if key not in self._priors:
            self._priors[key] = prior_boxes(h, w, self.cfg, self.device)
        return self._priors[key]

    def preprocess(self, frames_rgb: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) RGB uint8 -> (N, 3, H, W) float32 BGR minus mean, on the detector's device."""
        x = torch.from_numpy(np.ascontiguousarray(frames_rgb)).to(self.device)
        x = x.flip(-1).float() - self._mean  # RGB -> BGR, then the (104, 117, 123) BGR mean
        return x.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)

    @staticmethod
    def _resize_factor(h: int, w: int, max_side: int | None) -> float:
        return 1.0 if not max_side or max(h, w) <= max_side else max_side / max(h, w)

    def detect(
        self, frames: np.ndarray, threshold: float = 0.8, max_side: int | None = 640, batch_size: int = 16
    ) -> list[np.ndarray]:
        """Per frame a (K, 15) float32 array [x1, y1, x2, y2, score, lx0, ly0, ..., lx4, ly4] in original pixels.

        ``frames`` is (N, H, W, 3) RGB uint8 (or a single (H, W, 3) frame). Frames larger than ``max_side``
        are shrunk (cv2 INTER_LINEAR, longer side = max_side) and boxes mapped back. Rows are score-sorted,
        with score >= ``threshold``; landmarks are left eye, right eye, nose, left/right mouth (image sides).
        """
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 RGB frames, got {frames.shape} {frames.dtype}")
        n, h, w = frames.shape[:3]
        if n == 0:
            return []
        resize = self._resize_factor(h, w, max_side)
        out: list[np.ndarray] = []
        for sl in batched(n, batch_size):
            chunk = frames[sl]
            if resize != 1.0:
                # fx/fy (not dsize) as the reference does: cv2 then maps pixels with exactly 1/resize.
                chunk = np.stack(
                    [
                        cv2.resize(np.ascontiguousarray(f), None, fx=resize, fy=resize, interpolation=cv2.INTER_LINEAR)
                        for f in chunk
                    ]
                )
            ih, iw = chunk.shape[1:3]
            with inference(self.device, fp16=False):  # fp32 even on CUDA: boxes must match the goldens
                loc, conf, landms = self.model(self.preprocess(chunk))
                out += postprocess(
                    loc,
                    conf,
                    landms,
                    self.priors(ih, iw),
                    ih,
                    iw,
                    resize,
                    conf_is_logits=True,
                    variance=self.cfg.variance,
                    threshold=threshold,
                )
        return out

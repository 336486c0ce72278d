"""LR-ASD active speaker detector (Liao et al., IJCV 2025), TalkSet fine-tuned weights.

Clean-room reimplementation from ``../shared/specs/lrasd/SPEC.md``: the network (section 4), the
python_speech_features-exact MFCC front-end (section 2), the demo face crop (sections 3 and 5) and the
demo's multi-duration chunk scoring (section 5.7).

Output: logit[:, 1] per video frame, > 0 means "this face is visibly speaking". The SPEC measured that
these weights barely react to audio shifts or to another speaker's audio, so the raw score is NOT a
lip-sync measure; ``embeddings`` exposes the frozen per-frame audio/visual features for trained heads.

Rates: video 25 fps, MFCC 100 frames/s, i.e. exactly 4 MFCC frames per video frame.
"""

from __future__ import annotations

import decimal
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import scipy.fft
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

from models.base import WeightsInfo, configure_torch_numerics, inference, load_torch_state_dict, resolve_device

logger = logging.getLogger(__name__)

BN_EPS = 1e-3  # the original's BatchNorms, not PyTorch's 1e-5 default
VISUAL_MEAN, VISUAL_STD = 0.4161, 0.1688
MFCC_PER_FRAME = 4
DEMO_DURATIONS_S = (1, 2, 3, 4, 5, 6)  # the original's duration "list" is a Python set: six values
FACE_INPUT_SIZE = 112
CROP_SIZE = 224
CROP_PAD_VALUE = 110
EMBED_DIM = 128  # per-frame size of both encoders' outputs


# ----------------------------------------------------------------------------------------------------------
# Network (SPEC section 4). Attribute names mirror the checkpoint keys so that it loads with strict=True.
# ----------------------------------------------------------------------------------------------------------


def _folded(conv: nn.Conv3d, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Conv weight and bias with an eval-mode BN folded in; in training the BN must run on its own."""
    if bn.training:
        return conv.weight, None
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return conv.weight * scale.view(-1, 1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _bn_relu(y: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    if bn.training:  # functional BN: the BatchNorm3d parameters applied to the 4-D frame-major layout
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, bn.momentum or 0.0, bn.eps)
    return F.relu_(y)


class _VisualBlock(nn.Module):
    """Factorised 3-D block: two spatial convs (1,k,k) then two temporal convs (k,1,1), each BN + ReLU.

    The parameters are the checkpoint's Conv3d/BatchNorm3d, but the forward runs on frames stacked as
    (B*T, C, H, W) in channels_last memory: spatial convs become plain conv2d and temporal convs a conv2d
    over a zero-copy (B, C, T, H*W) view, with eval BN folded into the conv. On CPU this is ~2x faster than
    Conv3d + BN and agrees with it to ~1e-6.
    """

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1):
        super().__init__()
        self.s_1 = nn.Conv3d(cin, mid, (1, 5, 5), stride=(1, stride, stride), padding=(0, 2, 2), bias=False)
        self.s_norm_1 = nn.BatchNorm3d(mid, eps=BN_EPS, momentum=0.01)
        self.s_2 = nn.Conv3d(mid, cout, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.s_norm_2 = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=0.01)
        self.t_1 = nn.Conv3d(cout, cout, (5, 1, 1), padding=(2, 0, 0), bias=False)
        self.t_norm_1 = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=0.01)
        self.t_2 = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.t_norm_2 = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=0.01)

    @staticmethod
    def _spatial(x: torch.Tensor, conv: nn.Conv3d, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
        w, b = _folded(conv, bn)
        w = w[:, :, 0].contiguous(memory_format=torch.channels_last)  # keeps mkldnn on the NHWC path
        y = F.conv2d(x, w, b, stride=conv.stride[1:], padding=conv.padding[1:])
        return _bn_relu(y, bn)

    @staticmethod
    def _temporal(x: torch.Tensor, t: int, conv: nn.Conv3d, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
        n, c, h, w = x.shape
        # channels_last (B*T, C, H, W) is (B, T, H*W, C) in memory, i.e. a channels_last (B, C, T, H*W) tensor
        v = x.permute(0, 2, 3, 1).reshape(n // t, t, h * w, c).permute(0, 3, 1, 2)
        wt, b = _folded(conv, bn)
        y = F.conv2d(v, wt[..., 0].contiguous(memory_format=torch.channels_last), b, padding=(conv.padding[0], 0))
        return _bn_relu(y.permute(0, 2, 3, 1).reshape(n, h, w, -1).permute(0, 3, 1, 2), bn)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """(B*T, C, H, W) frames, batch-major, T frames per item -> (B*T, C', H', W')."""
        x = self._spatial(x, self.s_1, self.s_norm_1)
        x = self._spatial(x, self.s_2, self.s_norm_2)
        x = self._temporal(x, t, self.t_1, self.t_norm_1)
        return self._temporal(x, t, self.t_2, self.t_norm_2)


class _VisualEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = _VisualBlock(1, 16, 32, stride=2)
        self.block2 = _VisualBlock(32, 32, 64)
        self.block3 = _VisualBlock(64, 64, 128)

    @property
    def radius(self) -> int:
        """Temporal reach in video frames: output frame t sees input frames t - 9 .. t + 9."""
        return sum(b.t_1.padding[0] + b.t_2.padding[0] for b in (self.block1, self.block2, self.block3))

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, stride=2, padding=1)  # the original's MaxPool3d (1,3,3) acts per frame

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, T, 112, 112) raw 0..255 gray -> (B, T, 128)."""
        b, t, h, w = faces.shape
        x = ((faces / 255.0 - VISUAL_MEAN) / VISUAL_STD).reshape(b * t, 1, h, w)
        x = x.contiguous(memory_format=torch.channels_last)
        x = self._pool(self.block1(x, t))
        x = self._pool(self.block2(x, t))
        x = self.block3(x, t)
        return x.amax(dim=(2, 3)).reshape(b, t, -1)  # spatial MAX per frame (the audio side uses a mean)


class _AudioBlock(nn.Module):
    """Conv2d over (cepstral axis, time): two convs along the 13 coefficients (m_*) then two along time (t_*)."""

    def __init__(self, cin: int, mid: int, cout: int):
        super().__init__()
        self.m_1 = nn.Conv2d(cin, mid, (5, 1), padding=(2, 0), bias=False)
        self.m_norm_1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self.m_2 = nn.Conv2d(mid, cout, (3, 1), padding=(1, 0), bias=False)
        self.m_norm_2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.01)
        self.t_1 = nn.Conv2d(cout, cout, (1, 5), padding=(0, 2), bias=False)
        self.t_norm_1 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.01)
        self.t_2 = nn.Conv2d(cout, cout, (1, 3), padding=(0, 1), bias=False)
        self.t_norm_2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.m_norm_1(self.m_1(x)))
        x = F.relu(self.m_norm_2(self.m_2(x)))
        x = F.relu(self.t_norm_1(self.t_1(x)))
        return F.relu(self.t_norm_2(self.t_2(x)))


class _AudioEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = _AudioBlock(1, 16, 32)
        self.block2 = _AudioBlock(32, 32, 64)
        self.block3 = _AudioBlock(64, 64, 128)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, (1, 3), stride=(1, 2), padding=(0, 1))  # time only: 4T -> 2T -> T

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 4T, 13) -> (B, T, 128)."""
        x = mfcc.unsqueeze(1).transpose(2, 3)  # (B, 1, 13, 4T)
        x = self._pool(self.block1(x))
        x = self._pool(self.block2(x))
        x = self.block3(x)
        return x.mean(dim=2).transpose(1, 2)


class _Gate(nn.Module):
    """Per-time-step channel gate x * sigmoid(BN(W x)) with a bias-free 1x1 Conv1d."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention = nn.Conv1d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(channels, eps=BN_EPS, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        xc = x.transpose(1, 2)
        return (xc * torch.sigmoid(self.bn(self.attention(xc)))).transpose(1, 2)


class _Detector(nn.Module):
    """Two separate unidirectional GRUs (not one bidirectional module: the checkpoint stores two)."""

    def __init__(self, channels: int = 256, hidden: int = 64):
        super().__init__()
        self.gru_forward = nn.GRU(channels, hidden, num_layers=1, batch_first=True)
        self.gru_backward = nn.GRU(channels, hidden, num_layers=1, batch_first=True)
        self.attention = _Gate(2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fwd, _ = self.gru_forward(x)
        bwd, _ = self.gru_backward(torch.flip(x, dims=[1]))
        return self.attention(torch.cat([fwd, torch.flip(bwd, dims=[1])], dim=2))  # forward output first


class _Network(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visualEncoder = _VisualEncoder()
        self.audioEncoder = _AudioEncoder()
        self.fusion = _Gate(256)
        self.detector = _Detector()


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.FC = nn.Linear(128, 2)


class LRASD(nn.Module):
    """The full checkpoint: ``model.*`` network, ``lossAV.FC`` (inference head), ``lossV.FC`` (visual-only head)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _Network()
        self.lossAV = _Head()
        self.lossV = _Head()  # a training loss upstream; kept for the strict load and for ``visual_logits``

    @property
    def encoder_radius(self) -> int:
        """Temporal reach of both encoders in video frames (9, from the visual side; the audio side reaches 6:
        +-3 MFCC frames per block through two stride-2 pools gives MFCC 4t-24 .. 4t+24)."""
        return max(self.model.visualEncoder.radius, 6)

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 4T, 13) float MFCC -> (B, T, 128)."""
        return self.model.audioEncoder(mfcc)

    def embed_visual(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, T, 112, 112) gray faces, float 0..255 -> (B, T, 128)."""
        return self.model.visualEncoder(faces)

    def backend(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Audio (B, T, 128) and visual (B, T, 128) embeddings -> (B, T, 128); audio goes first in the concat."""
        if a.shape[:2] != v.shape[:2]:
            raise ValueError(f"audio embeddings {tuple(a.shape)} and visual {tuple(v.shape)} differ in (B, T)")
        return self.model.detector(self.model.fusion(torch.cat([a, v], dim=2)))

    def forward(self, mfcc: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Logits (B*T, 2), rows batch-major (row = b*T + t); index 1 = speaking."""
        out = self.backend(self.embed_audio(mfcc), self.embed_visual(faces))
        return self.lossAV.FC(out.reshape(-1, out.shape[-1]))

    def visual_logits(self, faces: torch.Tensor) -> torch.Tensor:
        """Visual-only head on the visual embedding: (B*T, 2), batch-major."""
        v = self.embed_visual(faces)
        return self.lossV.FC(v.reshape(-1, v.shape[-1]))


# ----------------------------------------------------------------------------------------------------------
# MFCC front-end (SPEC section 2): python_speech_features 0.6 ``mfcc(sig, 16000, numcep=13)``, vectorised.
# ----------------------------------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
    # python_speech_features rounds the frame length/step through Decimal ROUND_HALF_UP
    return int(decimal.Decimal(x).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def _hz2mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel2hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def psf_filterbank_bins(nfilt: int = 26, nfft: int = 512, sample_rate: int = 16000) -> np.ndarray:
    """The nfilt+2 integer FFT bins of the triangle corners (floored with nfft+1, as the library does)."""
    mel = np.linspace(_hz2mel(0.0), _hz2mel(sample_rate / 2), nfilt + 2)
    return np.floor((nfft + 1) * _mel2hz(mel) / sample_rate).astype(np.int64)


def psf_filterbank(nfilt: int = 26, nfft: int = 512, sample_rate: int = 16000) -> np.ndarray:
    """(nfilt, nfft//2+1) float64 triangles on integer bins: not torchaudio's continuous-frequency triangles."""
    b = psf_filterbank_bins(nfilt, nfft, sample_rate)
    i = np.arange(nfft // 2 + 1)[None, :]
    lo, mid, hi = b[:-2, None], b[1:-1, None], b[2:, None]
    # np.maximum guards the 0/0 of a degenerate (zero-width) side; that side then has no bins anyway
    rise = (i - lo) / np.maximum(mid - lo, 1)
    fall = (hi - i) / np.maximum(hi - mid, 1)
    return np.where((i >= lo) & (i < mid), rise, 0.0) + np.where((i >= mid) & (i < hi), fall, 0.0)


def mfcc(
    pcm: np.ndarray,
    sample_rate: int = 16000,
    *,
    winlen: float = 0.025,
    winstep: float = 0.010,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    ceplifter: int = 22,
) -> np.ndarray:
    """python_speech_features-exact MFCC, (F, numcep) float64, 100 frames/s with the defaults.

    ``pcm`` is mono: integer samples are taken at int16 scale as they are; float samples in [-1, 1] are
    multiplied by 32768 first (the model was trained on int16-scale features; at [-1, 1] scale c0 would
    shift by -20.79). Frame t covers samples [160 t, 160 t + 400): no centring, rectangular window.
    """
    x = np.asarray(pcm)
    if x.ndim != 1:
        raise ValueError(f"mfcc expects mono 1-D audio, got shape {x.shape}")
    sig = x.astype(np.float64) * 32768.0 if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)

    y = np.empty_like(sig)
    if sig.size:
        y[0] = sig[0]
        y[1:] = sig[1:] - preemph * sig[:-1]

    frame_len = _round_half_up(winlen * sample_rate)
    frame_step = _round_half_up(winstep * sample_rate)
    n = y.size
    n_frames = 1 if n <= frame_len else 1 + int(np.ceil((n - frame_len) / frame_step))
    padded = np.zeros((n_frames - 1) * frame_step + frame_len)
    padded[:n] = y
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::frame_step]

    power = np.abs(np.fft.rfft(frames, n=nfft, axis=1)) ** 2 / nfft  # (F, nfft//2+1)
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0.0, eps, energy)
    mel = power @ psf_filterbank(nfilt, nfft, sample_rate).T
    mel = np.where(mel == 0.0, eps, mel)

    cep = scipy.fft.dct(np.log(mel), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        cep = cep * (1.0 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    cep[:, 0] = np.log(energy)  # c0 is the log total frame power, not the DCT's first coefficient
    return cep


def align_lengths(mfcc: np.ndarray, n_frames: int) -> int:
    """Video frames usable with this MFCC: T = min(F // 4, n_frames); feed mfcc[:4T] with faces[:T].

    A track of exactly T frames (640 T samples) yields F = 4T - 1 MFCC frames, so T - 1 frames are usable.
    """
    return int(min(len(mfcc) // MFCC_PER_FRAME, n_frames))


# ----------------------------------------------------------------------------------------------------------
# Face crops (SPEC sections 3 and 5): the demo's enlarged box, then the central 112x112 of a 224x224 resize.
# ----------------------------------------------------------------------------------------------------------


def smooth_track(
    cx: np.ndarray, cy: np.ndarray, s: np.ndarray, kernel: int = 13
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median-filter a face track's centre and half-size along time (scipy ``medfilt``: zero-padded ends)."""

    def med(a: np.ndarray) -> np.ndarray:
        return scipy.signal.medfilt(np.asarray(a, dtype=np.float64), kernel_size=kernel)

    return med(cx), med(cy), med(s)


def track_params_from_boxes(boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (cx, cy, s) from (N, >=4) x1,y1,x2,y2 boxes, with s = max(width, height) / 2 (unsmoothed)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64)
    cx = (b[:, 0] + b[:, 2]) / 2.0
    cy = (b[:, 1] + b[:, 3]) / 2.0
    s = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2.0
    return cx, cy, s


def demo_crop(frame: np.ndarray, cx: float, cy: float, s: float, cs: float = 0.4) -> np.ndarray:
    """The demo's face crop, resized to 224x224 (bilinear); channel order is passed through untouched.

    The frame is padded by p = int(s (1 + 2 cs)) pixels of value 110 on every side, then rows
    int(cy+p-s) : int(cy+p+s(1+2cs)) and columns int(cx+p-s(1+cs)) : int(cx+p+s(1+cs)) are kept:
    a 2.8 s square from the box top to 0.8 s below the box bottom, widened by 0.4 s on each side.
    """
    img = np.asarray(frame)
    p = int(s * (1 + 2 * cs))
    my, mx = cy + p, cx + p
    # rows/cols of the padded frame, clipped to it as numpy slicing would; only the crop is padded (padding the
    # whole frame cost ~1 ms per frame and gives the same pixels)
    h, w = img.shape[0] + 2 * p, img.shape[1] + 2 * p
    (y0, y1), (x0, x1) = (slice(int(my - s), int(my + s * (1 + 2 * cs))).indices(h)[:2],
                          slice(int(mx - s * (1 + cs)), int(mx + s * (1 + cs))).indices(w)[:2])
    face = np.full((max(0, y1 - y0), max(0, x1 - x0), *img.shape[2:]), CROP_PAD_VALUE, img.dtype)
    sy0, sy1 = max(y0 - p, 0), min(y1 - p, img.shape[0])
    sx0, sx1 = max(x0 - p, 0), min(x1 - p, img.shape[1])
    if sy1 > sy0 and sx1 > sx0 and face.size:
        face[sy0 + p - y0 : sy1 + p - y0, sx0 + p - x0 : sx1 + p - x0] = img[sy0:sy1, sx0:sx1]
    if face.size == 0:
        raise ValueError(f"empty face crop for cx={cx}, cy={cy}, s={s} in a frame of shape {img.shape}")
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


def to_model_input(crop224: np.ndarray, rgb: bool = True) -> np.ndarray:
    """224x224 crop -> 112x112 gray uint8 (central window, rows/cols 56..167: lower-central face).

    OpenCV's gray weights (0.299 R + 0.587 G + 0.114 B); ``rgb`` names the channel order of 3-channel input:
    the pipeline decodes RGB, the original demo read BGR. 2-D input is taken as already gray.
    """
    img = np.asarray(crop224)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY)
    if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
        img = cv2.resize(img, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    lo = (CROP_SIZE - FACE_INPUT_SIZE) // 2
    return np.ascontiguousarray(img[lo : lo + FACE_INPUT_SIZE, lo : lo + FACE_INPUT_SIZE]).astype(np.uint8)


def faces_from_track(
    frames: Sequence[np.ndarray], boxes_xyxy: np.ndarray, rgb: bool = True, kernel: int = 13, cs: float = 0.4
) -> np.ndarray:
    """One face track -> (T, 112, 112) uint8 model input: box params, median smoothing, demo crop, gray centre."""
    if len(frames) != len(boxes_xyxy):
        raise ValueError(f"{len(frames)} frames but {len(boxes_xyxy)} boxes")
    cx, cy, s = smooth_track(*track_params_from_boxes(boxes_xyxy), kernel=kernel)
    out = np.empty((len(frames), FACE_INPUT_SIZE, FACE_INPUT_SIZE), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = to_model_input(demo_crop(frame, cx[i], cy[i], s[i], cs=cs), rgb=rgb)
    return out


# ----------------------------------------------------------------------------------------------------------
# Detector wrapper
# ----------------------------------------------------------------------------------------------------------


def _demo_chunks(n_frames: int, durations: Sequence[int], fps: int = 25) -> list[tuple[int, int, int]]:
    """(duration index, start, end) of the demo's consecutive chunks; each duration's last chunk is shorter."""
    out = []
    for k, d in enumerate(durations):
        step = int(d) * fps
        out += [(k, start, min(start + step, n_frames)) for start in range(0, n_frames, step)]
    return out


# A piece of a span's visual embedding: run window [ws, we) of the track, keep its rows for frames [lo, hi).
_Piece = tuple[int, int, int, int]


def _segments(s: int, e: int, radius: int, max_len: int) -> list[_Piece]:
    """Span [s, e) with its own edges, in windows of <= max_len frames overlapping by the receptive radius."""
    if e - s <= max_len:
        return [(s, e, s, e)]
    step = max_len - 2 * radius
    return [(max(s, a - radius), min(e, a + step + radius), a, min(e, a + step)) for a in range(s, e, step)]


def _span_pieces(s: int, e: int, n_frames: int, radius: int, max_len: int, share: bool) -> list[_Piece]:
    """How to assemble span [s, e) (zero-padded at its own edges) from visual-encoder windows.

    The encoders see +-radius frames, so away from the span's edges their output equals the whole-track
    pass, and near an edge they only need the 2*radius frames next to that edge.
    """
    if not share or (s == 0 and e == n_frames) or e - s <= 2 * radius:
        return _segments(s, e, radius, max_len)
    lo = s + radius if s > 0 else s
    hi = e - radius if e < n_frames else e
    pieces = [(s, s + 2 * radius, s, lo)] if s > 0 else []
    pieces += [
        (ws, we, max(a, lo), min(b, hi))
        for ws, we, a, b in _segments(0, n_frames, radius, max_len)
        if max(a, lo) < min(b, hi)
    ]
    if e < n_frames:
        pieces.append((e - 2 * radius, e, hi, e))
    return pieces


def clip_faces(clip) -> np.ndarray:
    """LR-ASD crops (T, 112, 112) of a dense face clip, made once per clip (temporal head and sync share them)."""
    return clip.memo("lrasd_faces", lambda: faces_from_track(clip.require_frames(), clip.boxes, rgb=True))


def clip_embeddings(front, clip) -> tuple[np.ndarray, np.ndarray]:
    """``front.visual_embeddings`` of a dense clip's crops, (zero-edged, held-edged), encoded once per clip and
    front-end: the temporal head reads the first, the sync head the second."""
    return clip.memo(("lrasd_visual", id(front)), lambda: front.visual_embeddings(clip_faces(clip)))



class LRASDDetector:
    """Active-speaker scores and frozen audio/visual embeddings for face tracks plus their audio."""

    name = "lrasd"
    modality = "sync"

    def __init__(
        self,
        model: LRASD,
        device: str | torch.device | None = "cpu",
        weights_info: WeightsInfo | None = None,
        max_frames_per_forward: int = 64,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.weights_info = weights_info or WeightsInfo.in_memory(self.name)
        # Bounds the visual encoder's activations (~1.2 MB per frame in fp32, several times that at a conv's
        # peak). Longer tracks are split into overlapping windows, which is exact because the encoders' temporal
        # reach is finite. 64 frames: the same embeddings (bit for bit) and speed on 2 CPU threads as 512, and
        # the 30 s bench clip's peak RSS 1487 -> 1402 MiB against 128 (1579 at 512).
        self.radius = self.model.encoder_radius
        if max_frames_per_forward < 4 * self.radius:
            raise ValueError(f"max_frames_per_forward must be >= {4 * self.radius}")
        self.max_frames_per_forward = max_frames_per_forward

    @classmethod
    def load(cls, weights: str | os.PathLike | None = None, device: str | torch.device | None = "cpu") -> LRASDDetector:
        from models.weights import resolve

        configure_torch_numerics()
        path = resolve("lrasd", weights)
        model = LRASD()
        model.load_state_dict(load_torch_state_dict(path), strict=True)
        logger.info("loaded LR-ASD from %s", path)
        return cls(model, device=device, weights_info=WeightsInfo.of("lrasd", path))

    # -- internals -----------------------------------------------------------------------------------------

    def _tensors(self, mfcc_b: np.ndarray, faces_b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        a = np.asarray(mfcc_b)
        v = np.asarray(faces_b)
        if a.ndim != 3 or a.shape[2] != 13:
            raise ValueError(f"mfcc must be (B, 4T, 13), got {a.shape}")
        if v.ndim != 4 or v.shape[2:] != (FACE_INPUT_SIZE, FACE_INPUT_SIZE):
            raise ValueError(f"faces must be (B, T, 112, 112), got {v.shape}")
        if a.shape[0] != v.shape[0] or a.shape[1] != MFCC_PER_FRAME * v.shape[1] or v.shape[1] == 0:
            raise ValueError(
                f"need 4 MFCC frames per video frame: mfcc {a.shape} vs faces {v.shape} (see align_lengths)"
            )
        at = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)
        vt = torch.from_numpy(np.ascontiguousarray(v)).to(self.device).float()  # uint8 travels, 4x smaller
        return at, vt

    def _items_per_forward(self, length: int) -> int:
        return max(1, self.max_frames_per_forward // max(length, 1))

    def _encode_spans(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        spans: Sequence[tuple[int, int]],
        per_frame: int,
        share: bool = True,
    ) -> list[torch.Tensor]:
        """Encoder outputs (e - s, 128) of independent spans [s, e) of one track, in video frames.

        ``x`` is the track's input with ``per_frame`` rows per video frame (faces 1, MFCC 4). Each span comes
        out as if it were cut out and run alone (zero padding at its edges). Windows are deduplicated across
        spans and equal-length windows run as one batch.
        """
        n = x.shape[0] // per_frame
        plans = [_span_pieces(s, e, n, self.radius, self.max_frames_per_forward, share) for s, e in spans]
        by_len: dict[int, set[tuple[int, int]]] = defaultdict(set)
        for ws, we, _, _ in (p for plan in plans for p in plan):
            by_len[we - ws].add((ws, we))
        out: dict[tuple[int, int], torch.Tensor] = {}
        for length, wins in by_len.items():
            ordered = sorted(wins)
            step = self._items_per_forward(length)
            for i in range(0, len(ordered), step):
                part = ordered[i : i + step]
                emb = encode(torch.stack([x[per_frame * ws : per_frame * we] for ws, we in part]))
                out.update(zip(part, emb, strict=True))
        return [torch.cat([out[(ws, we)][lo - ws : hi - ws] for ws, we, lo, hi in plan]) for plan in plans]

    def _encode_items(
        self, encode: Callable[[torch.Tensor], torch.Tensor], x_b: torch.Tensor, per_frame: int
    ) -> torch.Tensor:
        """Whole-item encoder outputs (B, T, 128); items longer than the forward cap run in windows."""
        b, t = x_b.shape[0], x_b.shape[1] // per_frame
        if t > self.max_frames_per_forward:
            return torch.stack([self._encode_spans(encode, x, [(0, t)], per_frame)[0] for x in x_b])
        step = self._items_per_forward(t)
        return torch.cat([encode(x_b[i : i + step]) for i in range(0, b, step)])

    def _embed(self, at: torch.Tensor, vt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self._encode_items(self.model.embed_audio, at, MFCC_PER_FRAME),
            self._encode_items(self.model.embed_visual, vt, 1),
        )

    def _speaking(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, T, 128) x2 -> logit[:, 1] (B, T)."""
        return self.model.lossAV.FC(self.model.backend(a, v))[..., 1]

    # -- public API ----------------------------------------------------------------------------------------

    def speaking_logits(self, mfcc: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Full-pass logit[:, 1] per frame, (B, T) float32: mfcc (B, 4T, 13), faces (B, T, 112, 112) uint8.

        > 0 means speaking. Each item is one pass over its whole length (one GRU run), as the goldens.
        """
        at, vt = self._tensors(mfcc, faces)
        with inference(self.device, fp16=False):  # fp32: the goldens (atol 1e-4) are fp32 without TF32
            out = self._speaking(*self._embed(at, vt))
        return out.float().cpu().numpy()

    def embeddings(self, mfcc: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frozen encoder outputs (audio (B, T, 128), visual (B, T, 128)) float32, before fusion."""
        at, vt = self._tensors(mfcc, faces)
        with inference(self.device, fp16=False):
            audio, visual = self._embed(at, vt)
        return audio.float().cpu().numpy(), visual.float().cpu().numpy()

    def visual_embeddings(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frozen visual-encoder outputs (T, 128) float32 of one crop sequence (T, 112, 112), in both edge
        conventions the heads were trained on, from one whole pass:

        * ``zero``: the sequence encoded alone, the encoder's own zero padding at its ends (temporal head);
        * ``held``: its first and last crop repeated ``radius`` times beyond the ends (sync head), because
          zero-padded edges look like nothing a face does.

        The two differ only within ``radius`` frames of each end, so ``held`` re-encodes just those from
        3·radius-frame pieces instead of running a second whole pass (the output at a frame sees ±radius
        input frames, so each piece's middle third is free of its own edges)."""
        faces = np.asarray(faces)
        t, r = len(faces), self.radius
        if t == 0:
            empty = np.zeros((0, EMBED_DIM), np.float32)
            return empty, empty

        def encode(batch: np.ndarray) -> torch.Tensor:
            vt = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).float()
            return self._encode_items(self.model.embed_visual, vt, 1)

        def hold(x: np.ndarray) -> np.ndarray:
            return np.concatenate([np.repeat(x[:1], r, 0), x, np.repeat(x[-1:], r, 0)])

        with inference(self.device, fp16=False):
            zero = encode(faces[None])[0]
            if t < 2 * r:  # too short for pieces: encode the held sequence whole
                held = encode(hold(faces)[None])[0, r : r + t]
            else:
                ends = encode(np.stack([hold(faces[: 2 * r])[: 3 * r], hold(faces[-2 * r :])[r:]]))
                held = zero.clone()
                held[:r], held[t - r :] = ends[0, r : 2 * r], ends[1, r : 2 * r]
        return zero.float().cpu().numpy(), held.float().cpu().numpy()

    def demo_scores_per_duration(
        self,
        mfcc: np.ndarray,
        faces: np.ndarray,
        durations: Sequence[int] = DEMO_DURATIONS_S,
        share_encoders: bool = True,
    ) -> np.ndarray:
        """The demo's per-duration rows (len(durations), T) float32 of chunk-wise logit[:, 1].

        For each duration d the track is cut into consecutive 25 d-frame chunks and each chunk is scored
        on its own (fresh GRU state, zero padding at its edges). Chunks shared by several durations run
        once and equal-length chunks run as one batch. ``share_encoders`` takes the encoder outputs away from
        chunk edges from one whole-track pass (same values; 2.3x faster on the 129-frame golden clip);
        False encodes every chunk separately like the original. The GRU back-end always runs per chunk.
        Inputs are unbatched: mfcc (F, 13), faces (N, 112, 112); T = align_lengths(mfcc, N).
        """
        t = align_lengths(mfcc, len(faces))
        if t == 0:
            raise ValueError(f"no usable frames: mfcc {np.shape(mfcc)}, faces {np.shape(faces)}")
        at, vt = self._tensors(np.asarray(mfcc)[None, : MFCC_PER_FRAME * t], np.asarray(faces)[None, :t])
        chunks = _demo_chunks(t, durations)
        spans = sorted({(s, e) for _, s, e in chunks})
        by_len: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for s, e in spans:
            by_len[e - s].append((s, e))

        logit1: dict[tuple[int, int], np.ndarray] = {}
        with inference(self.device, fp16=False):
            encs = [
                dict(zip(spans, self._encode_spans(enc, x[0], spans, per, share=share_encoders), strict=True))
                for enc, x, per in ((self.model.embed_audio, at, MFCC_PER_FRAME), (self.model.embed_visual, vt, 1))
            ]
            for length, group in by_len.items():
                step = self._items_per_forward(length)
                for i in range(0, len(group), step):
                    part = group[i : i + step]
                    a, v = (torch.stack([enc[span] for span in part]) for enc in encs)
                    logit1.update(zip(part, self._speaking(a, v).float().cpu().numpy(), strict=True))

        rows = np.empty((len(durations), t), dtype=np.float32)
        for k, s, e in chunks:
            rows[k, s:e] = logit1[(s, e)]
        return rows

    def demo_scores(
        self, mfcc: np.ndarray, faces: np.ndarray, durations: Sequence[int] = DEMO_DURATIONS_S
    ) -> np.ndarray:
        """Demo per-frame score (T,) float32: mean over durations of the chunk-wise logit[:, 1], UNROUNDED.

        The original rounds to 1 decimal for display (``np.round(x, 1)``); compare unrounded values, since
        rounding flips at .x5 boundaries. On speech a full pass scores higher than this (SPEC section 6).
        """
        rows = self.demo_scores_per_duration(mfcc, faces, durations)
        return rows.mean(axis=0, dtype=np.float64).astype(np.float32)

"""AASIST / AASIST-L synthetic-speech detector, reimplemented from ``shared/specs/aasist/SPEC.md``.

Raw 16 kHz waveform -> fixed sinc filterbank -> residual 2-D encoder -> spectral and temporal graph
attention -> two heterogeneous (HS-GAL) branches fused by max -> 160-d readout -> 2 logits
(index 0 = spoof, index 1 = bona fide). Module and attribute names mirror the released checkpoints so
``load_state_dict(strict=True)`` works; see the SPEC's appendix for the full key list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.base import Scores, WeightsInfo, batched, configure_torch_numerics, inference, resolve_device
from models.weights import resolve

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
NB_SAMP = 64600  # 4.04 s, the length the released weights were trained on


@dataclass(frozen=True)
class AASISTConfig:
    """The model keys of the upstream ``config/*.conf`` files (other keys are ignored)."""

    nb_samp: int = NB_SAMP
    first_conv: int = 128
    filts: tuple = (70, (1, 32), (32, 32), (32, 64), (64, 64))
    gat_dims: tuple = (64, 32)
    pool_ratios: tuple = (0.5, 0.7, 0.5, 0.5)
    temperatures: tuple = (2.0, 2.0, 100.0, 100.0)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AASISTConfig:
        def tup(x: Any) -> Any:
            return tuple(tup(v) for v in x) if isinstance(x, list | tuple) else x

        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: tup(v) for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


AASIST_CONFIG = AASISTConfig()
AASIST_L_CONFIG = AASISTConfig(
    filts=(70, (1, 32), (32, 32), (32, 24), (24, 24)),
    gat_dims=(24, 32),
    pool_ratios=(0.4, 0.5, 0.7, 0.5),
)
VARIANTS: dict[str, AASISTConfig] = {"aasist": AASIST_CONFIG, "aasist_l": AASIST_L_CONFIG}
# bundled fine-tuned checkpoints (models/checkpoints) -> the released variant they started from; their file
# carries its own config, the base only answers for a file saved without one
FINE_TUNED: dict[str, str] = {"aasist_ft": "aasist"}


def sinc_filterbank(n_filters: int = 70, kernel_size: int = 129, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Fixed mel-spaced band-pass bank (n_filters, kernel_size), SPEC 3.1.

    The sinc argument and value are evaluated in float32 (as the original does, which is what the stored
    golden bank reproduces to ~4e-9); scale and Hamming window are applied in float64.
    """
    nfft_bins = np.linspace(0.0, sample_rate / 2, 257)  # f_k = 8000 k / 256
    mel = 2595.0 * np.log10(1.0 + nfft_bins / 700.0)
    edges = 700.0 * (10.0 ** (np.linspace(mel.min(), mel.max(), n_filters + 1) / 2595.0) - 1.0)
    half = (kernel_size - 1) // 2
    taps = np.arange(-half, half + 1, dtype=np.float32)
    window = 0.54 - 0.46 * np.cos(2.0 * np.pi * np.arange(kernel_size) / (kernel_size - 1))

    def scaled_sinc(f: float) -> np.ndarray:
        arg = (np.float32(2.0 * f) * taps) / np.float32(sample_rate)
        y = np.float32(np.pi) * np.where(arg == 0, np.float32(1e-20), arg)
        return (2.0 * f / sample_rate) * (np.sin(y) / y).astype(np.float32).astype(np.float64)

    bank = np.stack([window * (scaled_sinc(edges[i + 1]) - scaled_sinc(edges[i])) for i in range(n_filters)])
    return torch.from_numpy(bank.astype(np.float32))


class ResidualBlock(nn.Module):
    """SPEC 3.3. ``bn1`` exists only so checkpoints load strictly: the original computes it and discards it."""

    def __init__(self, c_in: int, c_out: int, first: bool = False):
        super().__init__()
        if not first:
            self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=(2, 3), padding=(0, 1))
        if c_in != c_out:
            self.conv_downsample = nn.Conv2d(c_in, c_out, kernel_size=(1, 3), padding=(0, 1))
        self.mp = nn.MaxPool2d((1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in-place where autograd allows it: block 0 tensors are ~65 MB per item, so each copy counts
        out = self.conv2(F.selu(self.bn2(self.conv1(x)), inplace=True))
        out += self.conv_downsample(x) if hasattr(self, "conv_downsample") else x
        return self.mp(out)


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    """(B,N,D) -> (B,N,N,D) element-wise products x_i * x_j."""
    return x.unsqueeze(2) * x.unsqueeze(1)


def _bn_nodes(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    b, n, d = x.shape
    return bn(x.reshape(b * n, d)).reshape(b, n, d)


class GraphAttention(nn.Module):
    """Homogeneous graph attention over a fully connected graph with self-pairs (SPEC 3.5)."""

    def __init__(self, d_in: int, d_out: int, temperature: float):
        super().__init__()
        self.att_proj = nn.Linear(d_in, d_out)
        self.att_weight = nn.Parameter(torch.empty(d_out, 1))
        nn.init.xavier_normal_(self.att_weight)
        self.proj_with_att = nn.Linear(d_in, d_out)
        self.proj_without_att = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out)
        self.temperature = temperature
        self.drop = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        e = torch.matmul(torch.tanh(self.att_proj(_pairwise(x))), self.att_weight).squeeze(-1)  # (B,N,N)
        a = torch.softmax(e / self.temperature, dim=-1)  # over neighbours j
        y = self.proj_with_att(torch.matmul(a, x)) + self.proj_without_att(x)
        return F.selu(_bn_nodes(self.bn, y))


class HeteroGraphAttention(nn.Module):
    """HS-GAL (SPEC 3.7): type-1 (temporal) and type-2 (spectral) nodes plus a receive-only master node."""

    def __init__(self, d_in: int, d_out: int, temperature: float):
        super().__init__()
        self.proj_type1 = nn.Linear(d_in, d_in)
        self.proj_type2 = nn.Linear(d_in, d_in)
        self.att_proj = nn.Linear(d_in, d_out)
        self.att_projM = nn.Linear(d_in, d_out)
        self.att_weight11 = nn.Parameter(torch.empty(d_out, 1))
        self.att_weight22 = nn.Parameter(torch.empty(d_out, 1))
        self.att_weight12 = nn.Parameter(torch.empty(d_out, 1))
        self.att_weightM = nn.Parameter(torch.empty(d_out, 1))
        for w in (self.att_weight11, self.att_weight22, self.att_weight12, self.att_weightM):
            nn.init.xavier_normal_(w)
        self.proj_with_att = nn.Linear(d_in, d_out)
        self.proj_without_att = nn.Linear(d_in, d_out)
        self.proj_with_attM = nn.Linear(d_in, d_out)
        self.proj_without_attM = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out)
        self.temperature = temperature
        self.drop = nn.Dropout(0.2)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n1 = x1.shape[1]
        x = self.drop(torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1))  # (B,N1+N2,Din)

        # node-to-node logits; the weight vector depends on the (type_i, type_j) pair
        s = torch.tanh(self.att_proj(_pairwise(x)))  # (B,N,N,Dout)
        is1 = torch.arange(x.shape[1], device=x.device) < n1
        same1, same2 = is1[:, None] & is1[None, :], ~is1[:, None] & ~is1[None, :]
        e = torch.where(
            same1,
            torch.matmul(s, self.att_weight11).squeeze(-1),
            torch.where(
                same2, torch.matmul(s, self.att_weight22).squeeze(-1), torch.matmul(s, self.att_weight12).squeeze(-1)
            ),
        )
        a = torch.softmax(e / self.temperature, dim=-1)

        # master: attends over all nodes with the incoming master, gets no BN / activation
        g = torch.matmul(torch.tanh(self.att_projM(x * master)), self.att_weightM)  # (B,N,1)
        b = torch.softmax(g / self.temperature, dim=1)
        new_master = self.proj_with_attM(torch.matmul(b.transpose(1, 2), x)) + self.proj_without_attM(master)

        y = self.proj_with_att(torch.matmul(a, x)) + self.proj_without_att(x)
        y = F.selu(_bn_nodes(self.bn, y))
        return y[:, :n1], y[:, n1:], new_master


class GraphPool(nn.Module):
    """Keep the top-k nodes by sigmoid score, each scaled by its score (SPEC 3.6)."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.proj = nn.Linear(dim, 1)
        self.ratio = ratio
        self.drop = nn.Dropout(0.3)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (pooled (B,k,D), scores (B,N), kept indices (B,k) in descending-score order)."""
        scores = torch.sigmoid(self.proj(self.drop(h)))  # (B,N,1)
        k = max(int(h.shape[1] * self.ratio), 1)  # Python truncation, as upstream
        _, idx = torch.topk(scores, k, dim=1)  # (B,k,1)
        pooled = torch.gather(h * scores, 1, idx.expand(-1, -1, h.shape[2]))
        return pooled, scores.squeeze(-1), idx.squeeze(-1)


class AASIST(nn.Module):
    """Forward (B, nb_samp) float32 16 kHz -> (last_hidden (B, 5*G1), logits (B, 2)); logit 1 = bona fide."""

    def __init__(self, config: AASISTConfig | Mapping[str, Any] = AASIST_CONFIG):
        super().__init__()
        if not isinstance(config, AASISTConfig):
            config = AASISTConfig.from_dict(config)
        self.config = config
        filts, (g0, g1) = config.filts, config.gat_dims
        c = filts[-1][-1]
        temps, ratios = config.temperatures, config.pool_ratios

        kernel = config.first_conv + 1 if config.first_conv % 2 == 0 else config.first_conv
        # fixed, not learnable, and not in the checkpoints
        self.register_buffer("sinc_filters", sinc_filterbank(filts[0], kernel), persistent=False)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = nn.Sequential(
            nn.Sequential(ResidualBlock(*filts[1], first=True)),
            nn.Sequential(ResidualBlock(*filts[2])),
            nn.Sequential(ResidualBlock(*filts[3])),
            nn.Sequential(ResidualBlock(*filts[4])),
            nn.Sequential(ResidualBlock(*filts[4])),
            nn.Sequential(ResidualBlock(*filts[4])),
        )
        self.pos_S = nn.Parameter(torch.randn(1, 23, c))
        self.master1 = nn.Parameter(torch.randn(1, 1, g0))
        self.master2 = nn.Parameter(torch.randn(1, 1, g0))
        self.GAT_layer_S = GraphAttention(c, g0, temps[0])
        self.GAT_layer_T = GraphAttention(c, g0, temps[1])
        self.HtrgGAT_layer_ST11 = HeteroGraphAttention(g0, g1, temps[2])
        self.HtrgGAT_layer_ST12 = HeteroGraphAttention(g1, g1, temps[2])
        self.HtrgGAT_layer_ST21 = HeteroGraphAttention(g0, g1, temps[2])
        self.HtrgGAT_layer_ST22 = HeteroGraphAttention(g1, g1, temps[2])
        self.pool_S = GraphPool(g0, ratios[0])
        self.pool_T = GraphPool(g0, ratios[1])
        self.pool_hS1 = GraphPool(g1, ratios[2])
        self.pool_hT1 = GraphPool(g1, ratios[2])
        self.pool_hS2 = GraphPool(g1, ratios[2])
        self.pool_hT2 = GraphPool(g1, ratios[2])
        self.drop = nn.Dropout(0.5)
        self.drop_way = nn.Dropout(0.2)
        self.out_layer = nn.Linear(5 * g1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x, None)

    def forward_with_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Also returns encoder_out, gat_S/T_out, pool_S/T_out and every pool's scores and top-k indices."""
        taps: dict[str, torch.Tensor] = {}
        last_hidden, logits = self._run(x, taps)
        return last_hidden, logits, taps

    def _pool(self, name: str, h: torch.Tensor, taps: dict[str, torch.Tensor] | None) -> torch.Tensor:
        pooled, scores, idx = getattr(self, name)(h)
        if taps is not None:
            taps[f"{name}_scores"], taps[f"{name}_topk_idx"] = scores, idx
        return pooled

    def _branch(
        self, k: int, t: torch.Tensor, s: torch.Tensor, taps: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first = getattr(self, f"HtrgGAT_layer_ST{k}1")
        second = getattr(self, f"HtrgGAT_layer_ST{k}2")
        t1, s1, m1 = first(t, s, getattr(self, f"master{k}"))
        s1 = self._pool(f"pool_hS{k}", s1, taps)
        t1 = self._pool(f"pool_hT{k}", t1, taps)
        ta, sa, ma = second(t1, s1, m1)
        return self.drop_way(t1 + ta), self.drop_way(s1 + sa), self.drop_way(m1 + ma)

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform (B, samples) -> encoder maps (B, C, 23, T): the convolution stack, ~90 % of the compute."""
        x = F.conv1d(x.unsqueeze(1), self.sinc_filters.unsqueeze(1)).unsqueeze(1)  # (B,1,70,L-128)
        # in-place abs saves a ~18 MB/item copy; not when a caller wants input gradients (saliency)
        x = F.max_pool2d(x.abs() if x.requires_grad else x.abs_(), (3, 3))
        x = F.selu(self.first_bn(x))
        return self.encoder(x)

    def _run(self, x: torch.Tensor, taps: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 2:
            raise ValueError(f"AASIST expects (B, samples), got {tuple(x.shape)}")
        # the same stack through ONNX Runtime on CPU when the detector attached one (models/onnx_cpu.py); only for
        # inference: with gradients on (fine-tuning, saliency) the PyTorch stack runs
        fast = self.fast_front_if_current()
        use_fast = fast is not None and not torch.is_grad_enabled() and x.device.type == "cpu"
        return self.head(fast(x) if use_fast else self.front(x), taps)

    def _front_tensors(self) -> list[torch.Tensor]:
        return [self.sinc_filters, *self.first_bn.parameters(), *self.first_bn.buffers(), *self.encoder.parameters(),
                *self.encoder.buffers()]

    def attach_fast_front(self, fast) -> None:
        """Run ``front`` through ``fast`` (an exported copy of it) for as long as its weights stay as they are now."""
        self.__dict__["fast_front"] = fast  # a plain attribute: not a submodule, not in the state dict
        self.__dict__["fast_front_versions"] = [t._version for t in self._front_tensors()]

    def fast_front_if_current(self):
        """The exported front, unless a weight changed since it was exported (fine-tuning, load_state_dict): an
        exported graph never runs stale weights; the PyTorch stack does from then on."""
        fast = self.__dict__.get("fast_front")
        if fast is not None and [t._version for t in self._front_tensors()] != self.__dict__["fast_front_versions"]:
            self.__dict__.pop("fast_front")
            fast = None
        return fast

    def head(self, e: torch.Tensor, taps: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder maps -> (last_hidden, logits): the graph-attention part."""
        spectral = e.abs().amax(dim=3).transpose(1, 2) + self.pos_S  # (B,23,C)
        temporal = e.abs().amax(dim=2).transpose(1, 2)  # (B,T,C)
        gat_s = self.GAT_layer_S(spectral)
        gat_t = self.GAT_layer_T(temporal)
        s = self._pool("pool_S", gat_s, taps)
        t = self._pool("pool_T", gat_t, taps)
        if taps is not None:
            taps.update(encoder_out=e, gat_S_out=gat_s, gat_T_out=gat_t, pool_S_out=s, pool_T_out=t)

        t1, s1, m1 = self._branch(1, t, s, taps)
        t2, s2, m2 = self._branch(2, t, s, taps)
        t, s, m = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)

        last_hidden = torch.cat(
            [t.abs().amax(dim=1), t.mean(dim=1), s.abs().amax(dim=1), s.mean(dim=1), m.squeeze(1)], dim=1
        )
        logits = self.out_layer(self.drop(last_hidden))
        return last_hidden, logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _checkpoint_parts(obj: Any) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(config or None, state_dict) of a plain state_dict or a ``{"config", "state_dict"}`` fine-tuned file."""
    config = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        config = obj.get("config")
        obj = obj["state_dict"]
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    return config, sd


class AASISTDetector:
    """Audio detector: windows (N, 64600) float32 16 kHz in [-1, 1] -> P(fake) = softmax(logits)[spoof]."""

    name = "aasist"
    modality = "audio"
    window_samples = NB_SAMP
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: AASIST,
        device: str | torch.device | None = "cpu",
        weights_info: WeightsInfo | None = None,
        batch_size: int = 2,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            # oneDNN runs the (2,3) encoder convs ~1.6x faster in channels-last; results agree to ~1e-6
            self.model.encoder.to(memory_format=torch.channels_last)
        self.weights_info = weights_info or WeightsInfo.in_memory(self.name)
        # windows per forward: on CPU 2 run as fast per window as 16 (measured 0.55 s each either way), but each
        # window's encoder maps take ~130 MB, so 16 at once peaked at 3 GiB RSS
        self.batch_size = batch_size
        nb_samp = getattr(getattr(model, "config", None), "nb_samp", None)
        if nb_samp is not None:
            self.window_samples = int(nb_samp)
        if self.device.type == "cpu" and weights_info is not None and weights_info.sha256:
            self._accelerate(weights_info.sha256)

    def _accelerate(self, sha256: str) -> None:
        """The encoder stack through ONNX Runtime (1.9x faster on 2 cores, same outputs to ~1e-6 relative)."""
        from models.onnx_cpu import accelerated

        class Front(nn.Module):  # the exportable view of AASIST.front
            def __init__(self, model: AASIST):
                super().__init__()
                self.model = model

            def forward(self, x):
                return self.model.front(x)

        example = torch.zeros(self.batch_size, self.window_samples)
        fast = accelerated(Front(self.model), example, f"aasist-front-{sha256[:16]}-{self.window_samples}")
        if fast is not None:
            self.model.attach_fast_front(fast)
            # one window per call runs as fast per window as two and halves ONNX Runtime's buffers
            self.batch_size = 1

    @classmethod
    def load(
        cls,
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = "cpu",
        variant: str = "aasist",
        batch_size: int = 2,
    ) -> AASISTDetector:
        """``variant`` picks the registry checkpoint and config (``aasist`` | ``aasist_l`` | the fine-tuned
        ``aasist_ft``); a checkpoint saved as ``{"config": {...}, "state_dict": ...}`` brings its own config."""
        if variant not in VARIANTS and variant not in FINE_TUNED:
            raise ValueError(f"unknown AASIST variant {variant!r}; expected one of {sorted({*VARIANTS, *FINE_TUNED})}")
        configure_torch_numerics()
        path = resolve(variant, weights)
        obj = torch.load(path, map_location="cpu", weights_only=True)
        config_dict, state_dict = _checkpoint_parts(obj)
        config = AASISTConfig.from_dict(config_dict) if config_dict else VARIANTS[FINE_TUNED.get(variant, variant)]
        model = AASIST(config)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{Path(path).name} does not match the {variant} architecture "
                f"(wrong variant? try variant='aasist_l' / 'aasist'): {exc}"
            ) from exc
        logger.info("loaded %s from %s", variant, path)
        return cls(model, device=device, weights_info=WeightsInfo.of(variant, path), batch_size=batch_size)

    def _check(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise ValueError(f"expected windows of shape (N, {self.window_samples}), got {windows.shape}")
        return np.ascontiguousarray(windows, dtype=np.float32)

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        """Raw (N, 2) logits [spoof, bona fide], float32."""
        windows = self._check(windows)
        out = np.zeros((windows.shape[0], 2), dtype=np.float32)
        # fp32 on purpose: the model is very input-sensitive (SPEC 6)
        fast = self.model.fast_front_if_current()
        batches = list(batched(windows.shape[0], self.batch_size))
        with inference(self.device, fp16=False):
            for i, sl in enumerate(batches):
                x = torch.from_numpy(windows[sl]).to(self.device)
                if fast is not None:  # ONNX Runtime keeps its buffers through the series, hands them back at the end
                    _, logits = self.model.head(fast(x, release=i == len(batches) - 1))
                else:
                    _, logits = self.model(x)
                out[sl] = logits.float().cpu().numpy()
        return out

    def predict(self, windows: np.ndarray) -> Scores:
        if np.asarray(windows).shape[:1] == (0,):
            return Scores.empty()
        logits = self.predict_logits(windows).astype(np.float64)
        return Scores.from_fake_logits(logits[:, 0] - logits[:, 1])  # spoof vs bona fide log-odds


__all__ = [
    "AASIST",
    "AASIST_CONFIG",
    "AASIST_L_CONFIG",
    "NB_SAMP",
    "AASISTConfig",
    "AASISTDetector",
    "count_parameters",
    "sinc_filterbank",
]


"""CPU inference through ONNX Runtime: the same outputs as PyTorch, exported once per weights file, and PyTorch
whenever ONNX Runtime is switched off or cannot take the model."""

from __future__ import annotations

import numpy as np
import torch

from models import onnx_cpu


class _Convs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, (2, 3), padding=(1, 1)), torch.nn.SELU(),
                                       torch.nn.MaxPool2d((1, 3)), torch.nn.Conv2d(8, 4, (2, 3), padding=(0, 1)))

    def forward(self, x):
        return self.net(x.unsqueeze(1))


def test_same_outputs_as_torch_and_exported_once(tmp_path, monkeypatch):
    m = _Convs().eval()
    x = torch.randn(3, 23, 90)
    run = onnx_cpu.accelerated(m, x[:1], "tiny", cache_dir=tmp_path)
    assert run is not None and run.onnx_path.parent == tmp_path
    with torch.inference_mode():
        ref = m(x)
    assert torch.allclose(run(x), ref, atol=1e-5)  # a batch size other than the example's
    calls = []
    monkeypatch.setattr(onnx_cpu, "_export", lambda *a: calls.append(a))
    assert onnx_cpu.accelerated(m, x[:1], "tiny", cache_dir=tmp_path) is not None and calls == []  # cached


def test_switched_off_or_failing_export_keeps_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("CPU_RUNTIME", "torch")
    assert onnx_cpu.accelerated(_Convs(), torch.zeros(1, 23, 90), "off", cache_dir=tmp_path) is None
    monkeypatch.delenv("CPU_RUNTIME")

    def broken(*a):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_cpu, "_export", broken)
    assert onnx_cpu.accelerated(_Convs(), torch.zeros(1, 23, 90), "broken", cache_dir=tmp_path) is None
    assert not list(tmp_path.glob("*.onnx"))


def test_aasist_scores_agree_between_runtimes(shared_weights, monkeypatch):
    from models.aasist import AASISTDetector

    rng = np.random.default_rng(0)
    windows = (0.1 * rng.standard_normal((3, 64600))).astype(np.float32)
    fast = AASISTDetector.load(device="cpu", variant="aasist")
    assert fast.model.__dict__.get("fast_front") is not None
    monkeypatch.setenv("CPU_RUNTIME", "torch")
    slow = AASISTDetector.load(device="cpu", variant="aasist")
    assert slow.model.__dict__.get("fast_front") is None
    a, b = fast.predict_logits(windows), slow.predict_logits(windows)
    assert np.allclose(a, b, atol=1e-3), (a, b)
    assert np.abs(fast.predict(windows).fake_prob - slow.predict(windows).fake_prob).max() < 1e-4


def test_training_never_goes_through_onnx(shared_weights):
    """With gradients on, the encoder runs in PyTorch: its parameters get gradients."""
    from models.aasist import AASISTDetector

    det = AASISTDetector.load(device="cpu", variant="aasist")
    assert det.model.__dict__.get("fast_front") is not None
    det.model.train()
    _, logits = det.model(torch.zeros(1, 64600))
    logits.sum().backward()
    conv = det.model.encoder[0][0].conv1.weight
    assert conv.grad is not None and conv.grad.abs().sum() > 0


def test_changed_weights_never_run_through_the_stale_export(shared_weights):
    """After a weight changes (an optimiser step, load_state_dict), inference runs the PyTorch stack."""
    from models.aasist import AASISTDetector

    det = AASISTDetector.load(device="cpu", variant="aasist")
    windows = (0.1 * np.random.default_rng(1).standard_normal((1, 64600))).astype(np.float32)
    before = det.predict_logits(windows)
    with torch.no_grad():
        det.model.encoder[0][0].conv1.weight.mul_(1.5)  # in place, like an optimiser step
    assert det.model.fast_front_if_current() is None
    with torch.inference_mode():
        _, expected = det.model(torch.from_numpy(windows))
    after = det.predict_logits(windows)
    assert np.allclose(after, expected.numpy(), atol=1e-4) and not np.allclose(after, before, atol=1e-3)

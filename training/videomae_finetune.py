"""Fine-tuning core of the VideoMAE temporal detector (``models.videomae``), behind
``python -m training temporal --arch videomae``. The model file keeps loading, inference and the checkpoint format.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from transformers import VideoMAEForVideoClassification

from models.base import batched, resolve_device
from models.videomae import _image_hw, canonicalise_labels, videomae_pixel_values
from training.metrics import auc

logger = logging.getLogger(__name__)


def _check_training_data(clips: np.ndarray, labels: np.ndarray, num_frames: int, what: str) -> np.ndarray:
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8 or clips.shape[1] != num_frames:
        raise ValueError(f"{what}: expected (N, {num_frames}, H, W, 3) uint8 clips, got {clips.shape} {clips.dtype}")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.shape[0] != clips.shape[0] or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{what}: labels must be (N,) with 0 = real and 1 = fake, matching the clips")
    return labels


def finetune_videomae(
    model: VideoMAEForVideoClassification,
    clips: np.ndarray,
    labels: np.ndarray,
    val_clips: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    train_backbone: bool = False,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    log_every: int = 10,
    weight_decay: float = 0.01,
    seed: int = 0,
) -> dict:
    """Fine-tune a 2-label VideoMAE classifier on (N, 16, H, W, 3) uint8 clips with labels 0 = real, 1 = fake.

    Unless ``train_backbone``, only the head (``fc_norm`` + ``classifier``) is trained, a linear probe of the
    backbone's features. The model is left in eval mode on ``device`` with id2label {0: real, 1: fake}.

    Returns ``{"train_loss": [per-epoch mean], "step_loss": [...], "val_loss": [...], "val_auc_history": [...],
    "val_auc": last epoch's AUC, or None without validation data or with a single-class validation set,
    "trainable_params": int}``.
    """
    dev = resolve_device(device)
    canonicalise_labels(model)  # the targets below are 0 = real, 1 = fake
    image_hw, num_frames = _image_hw(model.config), int(model.config.num_frames)
    labels = _check_training_data(np.asarray(clips), labels, num_frames, "train")
    has_val = val_clips is not None and val_labels is not None and len(val_clips) > 0
    if has_val:
        val_labels = _check_training_data(np.asarray(val_clips), val_labels, num_frames, "val")

    model.to(dev)
    head = ("classifier.", "fc_norm.")
    for name, p in model.named_parameters():
        p.requires_grad_(train_backbone or name.startswith(head))
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    logger.info("fine-tuning VideoMAE: %d clips, %d epochs, %d trainable params", len(labels), epochs, n_trainable)

    history: dict = {"train_loss": [], "step_loss": [], "val_loss": [], "val_auc_history": [], "val_auc": None,
                     "trainable_params": n_trainable}
    step = 0
    for epoch in range(epochs):
        model.train()
        if not train_backbone:
            model.videomae.eval()  # frozen features: no dropout noise in them
        order = torch.randperm(len(labels), generator=gen).numpy()
        losses = []
        for sl in batched(len(order), batch_size):
            idx = np.sort(order[sl])
            x = videomae_pixel_values(clips[idx], image_hw, dev)
            y = torch.from_numpy(labels[idx]).to(dev)
            with amp:
                logits = model(pixel_values=x).logits
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
            if log_every and step % log_every == 0:
                logger.info("epoch %d step %d loss %.4f", epoch + 1, step, losses[-1])
        history["step_loss"].extend(losses)
        history["train_loss"].append(float(np.mean(losses)))
        msg = f"epoch {epoch + 1}/{epochs} train_loss {history['train_loss'][-1]:.4f}"
        if has_val:
            val_loss, auc = _evaluate(model, val_clips, val_labels, image_hw, dev, batch_size)
            history["val_loss"].append(val_loss)
            history["val_auc_history"].append(auc)
            history["val_auc"] = auc
            msg += f" val_loss {val_loss:.4f} val_auc {auc if auc is not None else float('nan'):.4f}"
        logger.info(msg)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return history


def _evaluate(model, clips, labels, image_hw, dev, batch_size) -> tuple[float, float | None]:
    model.eval()
    logits = []
    with torch.inference_mode():
        for sl in batched(len(labels), batch_size):
            logits.append(model(pixel_values=videomae_pixel_values(clips[sl], image_hw, dev)).logits.float().cpu())
    all_logits = torch.cat(logits)
    loss = float(F.cross_entropy(all_logits, torch.from_numpy(labels)))
    fake_score = (all_logits[:, 1] - all_logits[:, 0]).numpy()
    return loss, auc(labels, fake_score)

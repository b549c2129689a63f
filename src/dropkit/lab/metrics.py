"""The lab's losses and metrics: cross-entropy (classification), cross-entropy + soft Dice (segmentation), and
the evaluation of a model in eval mode (accuracy, or Dice and IoU over the foreground classes). The segmentation
loss and metrics are MONAI's, imported on first use."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from dropkit.lab.config import primary_metric

__all__ = ["dice_iou", "loss", "evaluate", "primary_metric"]


def dice_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of label maps (N, H, W), averaged over the foreground classes (MONAI's
    ``compute_dice``/``compute_iou``; a class absent from both prediction and target scores 1)."""
    from monai.metrics import compute_dice, compute_iou
    from monai.networks.utils import one_hot

    p, t = (one_hot(labels[:, None], num_classes) for labels in (pred, target))
    dice = compute_dice(p, t, include_background=False, ignore_empty=False)
    iou = compute_iou(p, t, include_background=False, ignore_empty=False)
    return dice.mean(1), iou.mean(1)


@functools.cache
def _dice_ce() -> torch.nn.Module:
    from monai.losses import DiceCELoss

    # Soft Dice over the batch (one ratio per class, not per image) with +1 smoothing on both sides, so a class
    # missing from a batch neither divides by zero nor dominates; the background class is left out of the Dice.
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1.0,
                      smooth_dr=1.0)


def loss(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Cross-entropy; for segmentation plus (1 − soft Dice) over the foreground classes (MONAI's ``DiceCELoss``,
    the usual U-Net pairing)."""
    if task == "classification":
        return F.cross_entropy(logits, y)
    return _dice_ce()(logits.float(), y[:, None])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, num_classes: int,
             device: torch.device, batch_size: int = 500) -> dict[str, float]:
    """Loss and accuracy (classification) or Dice and IoU (segmentation) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct, dice_sum, iou_sum = 0.0, 0, 0.0, 0.0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            logits = model(xb)
            total_loss += float(loss(logits, yb, task)) * len(xb)
            pred = logits.argmax(1)
            if task == "classification":
                correct += int((pred == yb).sum())
            else:
                dice, iou = dice_iou(pred, yb, num_classes)
                dice_sum, iou_sum = dice_sum + float(dice.sum()), iou_sum + float(iou.sum())
    finally:
        model.train(was_training)
    n = max(1, len(x))
    if task == "classification":
        return {"loss": total_loss / n, "acc": correct / n}
    return {"loss": total_loss / n, "dice": dice_sum / n, "iou": iou_sum / n}

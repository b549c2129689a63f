"""The lab's losses and metrics: cross-entropy (classification), cross-entropy + soft Dice (segmentation), and
the evaluation of a model in eval mode (accuracy, or Dice and IoU over the foreground classes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dropkit.lab.config import primary_metric

__all__ = ["dice_iou", "loss", "evaluate", "primary_metric"]


def dice_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU averaged over the foreground classes (an empty class predicted empty scores 1)."""
    classes = torch.arange(1, num_classes, device=pred.device)[None, :, None, None]
    p, t = (pred[:, None] == classes), (target[:, None] == classes)
    inter = (p & t).sum((2, 3)).float()
    sizes = p.sum((2, 3)).float() + t.sum((2, 3)).float()
    union = sizes - inter
    dice = torch.where(sizes > 0, 2 * inter / sizes.clamp_min(1), torch.ones_like(inter))
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    return dice.mean(1), iou.mean(1)


def loss(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Cross-entropy; for segmentation plus (1 − soft Dice) over the foreground classes (the usual U-Net pair)."""
    if task == "classification":
        return F.cross_entropy(logits, y)
    ce = F.cross_entropy(logits, y)
    prob = logits.float().softmax(1)[:, 1:]
    onehot = F.one_hot(y, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    soft_dice = (2 * inter + 1) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
    return ce + (1 - soft_dice.mean())


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

"""The lab's losses and metrics (``dropkit.lab.metrics``): Dice and IoU of label maps, the segmentation loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dropkit.lab.metrics import dice_iou, evaluate, loss


def _maps() -> torch.Tensor:
    y = torch.zeros(2, 6, 6, dtype=torch.long)
    y[:, 1:3, 1:3] = 1  # 4 pixels of class 1
    y[:, 3:6, 3:6] = 2  # 9 pixels of class 2
    return y


def test_dice_and_iou_by_hand():
    y = _maps()
    dice, iou = dice_iou(y, y, 3)
    assert torch.equal(dice, torch.ones(2)) and torch.equal(iou, torch.ones(2))
    pred = y.clone()
    pred[0, 1, 1] = 0  # image 0: class 1 loses one of its 4 pixels
    dice, iou = dice_iou(pred, y, 3)
    assert dice[0] == pytest.approx((2 * 3 / 7 + 1) / 2) and iou[0] == pytest.approx((3 / 4 + 1) / 2)
    assert dice[1] == 1 and iou[1] == 1
    swapped = torch.where(y == 1, 2, torch.where(y == 2, 1, y))  # every foreground pixel in the wrong class
    dice, iou = dice_iou(swapped, y, 3)
    assert torch.equal(dice, torch.zeros(2)) and torch.equal(iou, torch.zeros(2))


def test_a_class_absent_from_both_maps_scores_one_and_a_false_alarm_zero():
    y = torch.zeros(1, 4, 4, dtype=torch.long)
    dice, iou = dice_iou(y, y, 3)
    assert dice.item() == 1 and iou.item() == 1
    pred = y.clone()
    pred[0, 0, 0] = 2  # class 2 predicted where there is none; class 1 absent from both
    dice, iou = dice_iou(pred, y, 3)
    assert dice.item() == pytest.approx(0.5) and iou.item() == pytest.approx(0.5)


def test_segmentation_loss_is_cross_entropy_plus_soft_dice():
    y = _maps()
    confident = F.one_hot(y, 3).permute(0, 3, 1, 2).float() * 20
    assert loss(confident, y, "segmentation").item() == pytest.approx(0.0, abs=1e-4)
    logits = torch.zeros(2, 3, 6, 6, requires_grad=True)  # uniform: CE = log 3
    value = loss(logits, y, "segmentation")
    prob = 1 / 3
    inter = prob * torch.tensor([8.0, 18.0])  # per foreground class over the batch
    soft_dice = (2 * inter + 1) / (prob * 72 + torch.tensor([8.0, 18.0]) + 1)
    assert value.item() == pytest.approx(torch.log(torch.tensor(3.0)).item() + 1 - soft_dice.mean().item(), rel=1e-5)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert loss(torch.zeros(3, 4), torch.tensor([0, 1, 2]), "classification").item() == pytest.approx(
        torch.log(torch.tensor(4.0)).item())


def test_evaluate_segmentation_reports_dice_and_iou_and_keeps_the_mode():
    y = _maps()
    model = torch.nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3)[:, :, None, None] * 20)
    x = F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    model.train()
    out = evaluate(model, x, y, "segmentation", 3, torch.device("cpu"), batch_size=1)
    assert out["dice"] == 1 and out["iou"] == 1 and out["loss"] < 1e-3
    assert model.training

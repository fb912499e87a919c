"""SAM 2's training losses: focal + dice on masks, L1 on the predicted IoU, BCE on the object score.

Mask losses count only objects present in the target (an absent object has nothing to segment; its
object score is what is trained). The weights default to what made the small model learn on the
CPU here (docs/sam2.md): dice x5 rather than SAM 2's x1 keeps small objects from collapsing to
background.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    focal: float = 20.0
    dice: float = 5.0
    iou: float = 1.0
    obj: float = 1.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """Per-sample sigmoid focal loss, mean over pixels. logits/target: [B, 1, H, W]."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor):
    prob = logits.sigmoid().flatten(1)
    tgt = target.flatten(1)
    num = 2 * (prob * tgt).sum(1)
    den = prob.sum(1) + tgt.sum(1)
    return 1 - (num + 1) / (den + 1)


def hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = (logits > 0).flatten(1).float()
    tgt = target.flatten(1)
    inter = (pred * tgt).sum(1)
    union = ((pred + tgt) > 0).float().sum(1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mask_losses(high_res_logits: torch.Tensor, ious: torch.Tensor, obj_logits: torch.Tensor,
                target: torch.Tensor, w: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    """high_res_logits [B,1,H,W], ious [B,1], obj_logits [B,1], target [B,1,H,W] (float 0/1)."""
    present = target.flatten(1).amax(1) > 0
    obj_loss = F.binary_cross_entropy_with_logits(obj_logits.flatten(), present.float())
    total = w.obj * obj_loss
    stats = {"obj": float(obj_loss.detach())}
    if present.any():
        lg, tg = high_res_logits[present], target[present]
        fl = focal_loss(lg, tg).mean()
        dl = dice_loss(lg, tg).mean()
        with torch.no_grad():
            actual = hard_iou(lg, tg)
        il = F.l1_loss(ious[present][:, 0], actual)
        total = total + w.focal * fl + w.dice * dl + w.iou * il
        stats.update(focal=float(fl.detach()), dice=float(dl.detach()), iou_l1=float(il.detach()),
                     train_iou=float(actual.mean()))
    return total, stats

"""SGSeg trains its cost aggregation and decoder, and its image tower through small deltas at 0.01x the rate;
the text tower stays frozen (models/sgseg/).

Loss: binary cross-entropy on each class's logit over the labelled pixels (classes do not compete, so a
class list at segmentation time may hold classes the run never saw), plus 0.1 x the generalisation
compensation (the POD distance of the tuned tower's features to the frozen teacher's). AdamW, weight decay
1e-4; the prototype memory learns from the labels in the forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.sgseg.configs import VIT_B_16
from .registry import trainer
from .semantic import SemanticTrainer


def bce_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean per-class BCE over the labelled pixels (0 when a batch has none)."""
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    one_hot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
    per_pixel = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none").mean(dim=1)
    return per_pixel[valid].mean()


@trainer("sgseg")
class SGSegTrainer(SemanticTrainer):
    default_lr = 2e-4
    default_weight_decay = 1e-4

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        tuned = {id(p) for p in self.model.tuned_parameters()}
        scale = float({**VIT_B_16, **self.model.config}["backbone_lr_scale"])
        groups = [{"params": [p for p in params if id(p) not in tuned]},
                  {"params": [p for p in params if id(p) in tuned], "lr": self.cfg.lr * scale}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.cfg.lr,
                                 weight_decay=self.cfg.weight_decay)

    def compute_loss(self, batch) -> torch.Tensor:
        image, label = batch
        label = label.to(self.cfg.device, non_blocking=True)
        with self.autocast():
            logits, compensation = self.model(self.normalise(image), labels=label, ignore_index=self.ignore_index)
        return bce_loss(logits.float(), label, self.ignore_index) \
            + self.model.compensation_weight * compensation.float()

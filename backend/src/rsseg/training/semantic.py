"""The trainer of the semantic families (UNetFormer, the SAM head) on chips of the user's layers.

Loss: cross-entropy plus soft Dice over the labelled pixels (ignore_index left out), plus 0.4 x the
auxiliary head's cross-entropy when the network has one (GeoSeg's UNetFormer recipe). Validation:
per-class IoU, mIoU and overall accuracy from a confusion matrix over the held-out chips.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from ..metrics.semantic import ConfusionMatrix
from ..models.segmenter import load_trained_state, trained_state
from .augment import Augment
from .base import BaseTrainer, TrainConfig
from .layer_data import ChipReader, LayerChipDataset

AUX_WEIGHT = 0.4
DEFAULT_AUGMENT = Augment()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, averaged over classes, on the pixels whose label is not ignore_index."""
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    one_hot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
    inter = (probs * one_hot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + smooth) / (total + smooth)).mean()


class SemanticTrainer(BaseTrainer):
    """Trains a segmenter built by models/segmenter.py's net makers; `train_data` and `val_data` are chip
    windows read through `reader`."""

    default_lr: ClassVar[float] = 6e-4
    default_weight_decay: ClassVar[float] = 0.01
    label_smoothing: ClassVar[float] = 0.0  # of the cross-entropy (soft targets)

    def __init__(self, model: torch.nn.Module, model_id: str, train_data: Sequence[Window], config: TrainConfig,
                 reader: ChipReader, mean: Sequence[float], std: Sequence[float], class_names: Sequence[str],
                 val_data: Optional[Sequence[Window]] = None, augmentation: Optional[Augment] = DEFAULT_AUGMENT,
                 extra: Optional[dict[str, Any]] = None):
        self.reader, self.augmentation, self.class_names = reader, augmentation, list(class_names)
        self.ignore_index = reader.labels.ignore_index
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(config.device)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(config.device)
        super().__init__(model, model_id, train_data, config, val_data, extra)

    def train_dataset(self) -> LayerChipDataset:
        return LayerChipDataset(self.reader, self.train_data, self.augmentation)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        return (image.to(self.cfg.device, non_blocking=True) - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> Any:
        """The network on a normalised batch (a family may feed it precomputed parts)."""
        return self.model(x)

    def compute_loss(self, batch: Any) -> torch.Tensor:
        image, label = batch
        label = label.to(self.cfg.device, non_blocking=True)
        with self.autocast():
            out = self.forward(self.normalise(image))
        main, aux = out if isinstance(out, tuple) else (out, None)
        main = main.float()
        smoothing = self.label_smoothing
        loss = F.cross_entropy(main, label, ignore_index=self.ignore_index, label_smoothing=smoothing) + \
            dice_loss(main, label, self.ignore_index)
        if aux is not None:
            loss = loss + AUX_WEIGHT * F.cross_entropy(aux.float(), label, ignore_index=self.ignore_index,
                                                       label_smoothing=smoothing)
        return loss

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> np.ndarray:
        self.model.eval()
        with self.autocast():
            out = self.forward(self.normalise(image))
        out = out[0] if isinstance(out, tuple) else out
        return out.argmax(dim=1).cpu().numpy()

    def evaluate(self) -> dict[str, Any]:
        matrix = ConfusionMatrix(len(self.class_names), self.ignore_index)
        loader = torch.utils.data.DataLoader(LayerChipDataset(self.reader, self.val_data, None),
                                             batch_size=self.cfg.eval_batch_size)
        was_training = self.model.training
        for image, label in loader:
            for prediction, truth in zip(self.predict(image), label.numpy()):
                matrix.update(prediction, truth)
        self.model.train(was_training)
        scores = matrix.scores(self.class_names)
        return {"miou": None if np.isnan(scores.miou) else scores.miou,
                "oa": None if np.isnan(scores.oa) else scores.oa,
                "iou": {n: (None if np.isnan(v) else v) for n, v in zip(scores.class_names, scores.iou)},
                "pixels": scores.pixels}

    def summarise(self, metrics: dict[str, Any]) -> str:
        parts = [f"mIoU {metrics['miou']:.4f}" if metrics.get("miou") is not None else "mIoU -"]
        parts += [f"{n} {v:.3f}" for n, v in (metrics.get("iou") or {}).items() if v is not None]
        return " ".join(parts)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return trained_state(self.model)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        load_trained_state(self.model, state, f"the checkpoint of {self.model_id}")

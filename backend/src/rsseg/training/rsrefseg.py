"""RSRefSeg's trainer, the first `BaseTrainer` family (docs/training.md).

Only the trainable parameters learn: LoRA adapters, prompter, SAM prompt encoder and mask decoder
(models/rsrefseg/lora.py), and checkpoints hold only that state. A micro-batch is (image, mask,
tokens) at the training size (torch_data.ReferringDataset); the loss is the model config's (BCE x5,
optional Dice) on fp32 logits; validation is referring mIoU/oIoU/Pr@X (evaluate.py).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..datasets.referring.sample import RefSample
from ..spec import ModelSpec
from .base import BaseTrainer, TrainConfig
from .evaluate import evaluate_referring
from .registry import trainer
from .torch_data import ReferringDataset


def build_trainable(config: dict[str, Any], seed: int = 0, base: Optional[torch.nn.Module] = None) -> torch.nn.Module:
    """The config's RSRefSeg (seeded random base weights, or `base` with real ones) with LoRA
    applied; the LoRA init is seeded too."""
    from ..models.rsrefseg.lora import apply_lora_config
    from ..models.rsrefseg.model import build_rsrefseg

    model = build_rsrefseg(config, seed=seed) if base is None else base
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        apply_lora_config(model, config)
    return model


@trainer("rsrefseg")
class RSRefSegTrainer(BaseTrainer):
    """Trains `model` (already built with LoRA, see `build_trainable`) on referring samples."""

    def __init__(self, model: torch.nn.Module, model_id: str, train_data: Sequence[RefSample],
                 config: TrainConfig, val_data: Optional[Sequence[RefSample]] = None,
                 extra: Optional[dict[str, Any]] = None):
        super().__init__(model, model_id, train_data, config, val_data, extra)
        self.size = config.size or int(self.model.sam.image_encoder.img_size)

    @classmethod
    def build_model(cls, spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
        """Random seeded base towers for a random-weight entry; else its base encoders' registry files."""
        if not spec.weights:
            return build_trainable(spec.config, seed)
        from ..models.rsrefseg.weights import load_base

        return build_trainable(spec.config, seed, base=load_base(spec, "cpu", seed))

    def train_dataset(self) -> ReferringDataset:
        return ReferringDataset(self.train_data, self.model.tokenize, self.size)

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        from ..models.rsrefseg.model import segmentation_loss

        device = self.cfg.device
        images, masks, tokens = batch["image"].to(device), batch["mask"].to(device), batch["tokens"].to(device)
        with self.autocast():
            logits = self.model(images, tokens)
        config = self.model.config
        dice = config.get("dice_weight", 0.0) if self.cfg.dice_weight is None else self.cfg.dice_weight
        return segmentation_loss(logits.float(), masks, config.get("bce_weight", 5.0), dice)

    def evaluate(self) -> dict[str, Any]:
        return evaluate_referring(self.model, self.val_data, self.size, self.cfg.device,
                                  self.cfg.eval_batch_size, self.dtype).to_dict()

    def summarise(self, metrics: dict[str, Any]) -> str:
        return f"mIoU {metrics['miou']:.4f} oIoU {metrics['oiou']:.4f}"

    def trainable_state(self) -> dict[str, torch.Tensor]:
        from ..models.rsrefseg.lora import trainable_state_dict

        return trainable_state_dict(self.model)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        from ..models.rsrefseg.lora import load_trainable_state_dict

        load_trainable_state_dict(self.model, state)

"""Referring evaluation: predict one mask per (image, sentence) and score it (mIoU, oIoU, Pr@X).

Logits are thresholded at 0 (probability 0.5) after upsampling to each sample's original mask
size, so the scores are on the dataset's own pixels, not on the training resolution.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..datasets.referring.sample import RefSample
from ..metrics.referring import ReferringAccumulator, ReferringScores
from .batches import eval_loader
from .torch_data import ReferringDataset


@torch.no_grad()
def evaluate_referring(model: torch.nn.Module, samples: Sequence[RefSample], size: int, device: str = "cpu",
                       batch_size: int = 8, autocast_dtype: Optional[torch.dtype] = None,
                       progress: bool = False) -> ReferringScores:
    """Scores of `model` (an RSRefSeg) on `samples`; the model's train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    dataset = ReferringDataset(samples, model.tokenize, size)
    accumulator = ReferringAccumulator()
    batches = eval_loader(dataset, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="evaluating", unit="batch", leave=False)
    try:
        for batch in batches:
            images, tokens = batch["image"].to(device), batch["tokens"].to(device)
            with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                logits = model(images, tokens).float()
            for k, index in enumerate(batch["index"].tolist()):
                target = torch.from_numpy(samples[index].mask.astype(bool)).to(device)
                pred = logits[k:k + 1]
                if tuple(pred.shape[-2:]) != tuple(target.shape):
                    pred = F.interpolate(pred, size=tuple(target.shape), mode="bilinear", align_corners=False)
                pred = pred[0, 0] > 0
                accumulator.add_counts(int((pred & target).sum()), int((pred | target).sum()))
    finally:
        model.train(was_training)
    return accumulator.scores()

"""RefSample sources as a torch Dataset (the batch order is batches.py).

Images are resized (bilinear, antialiased) to the model's training size and masks with nearest
neighbour, so a batch stacks; evaluation scores against each sample's original mask instead.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..datasets.referring.sample import RefSample


class ReferringDataset(Dataset):
    """(image [3, S, S] in 0..1, mask [1, S, S] 0/1, token ids [L], index) per sample."""

    def __init__(self, samples: Sequence[RefSample], tokenize: Callable[[list[str]], torch.Tensor], size: int):
        self.samples, self.tokenize, self.size = list(samples), tokenize, int(size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        pixels = torch.from_numpy(np.ascontiguousarray(sample.pixels())).permute(2, 0, 1)[None].float() / 255.0
        mask = torch.from_numpy(np.asarray(sample.mask, bool)).float()[None, None]
        size = (self.size, self.size)
        if tuple(pixels.shape[-2:]) != size:
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        if tuple(mask.shape[-2:]) != size:
            mask = F.interpolate(mask, size=size, mode="nearest")
        tokens = self.tokenize([sample.sentence])[0].cpu()
        return {"image": pixels[0].clamp(0, 1), "mask": mask[0], "tokens": tokens, "index": index}

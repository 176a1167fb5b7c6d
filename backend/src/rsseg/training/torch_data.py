"""RefSample sources as a torch Dataset, and a batch order that can resume mid-epoch.

Images are resized (bilinear, antialiased) to the model's training size and masks with nearest
neighbour, so a batch stacks; evaluation scores against each sample's original mask instead.
The batch order is a pure function of (seed, epoch), so a resumed run sees the same batches as
an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .data.common import RefSample


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


class EpochBatches(Sampler[list[int]]):
    """Endless batches of indices: epoch e is a permutation seeded by (seed, e), short last batch
    dropped; `start` skips that many batches (the ones a checkpoint already consumed)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, start: int = 0, shuffle: bool = True):
        if n < batch_size:
            raise ValueError(f"{n} samples cannot fill one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.start, self.shuffle = n, batch_size, seed, start, shuffle

    @property
    def per_epoch(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:
            if self.shuffle:
                order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            else:
                order = torch.arange(self.n)
            for b in range(offset, self.per_epoch):
                yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()
            epoch, offset = epoch + 1, 0


def train_loader(dataset: ReferringDataset, batch_size: int, seed: int, start_batch: int = 0,
                 num_workers: int = 0) -> DataLoader:
    """Endless shuffled loader starting at micro-batch `start_batch`.

    Its own generator keeps the loader from drawing its base seed from the global RNG, which LoRA
    dropout uses: a resumed run would otherwise draw different dropout masks from the straight one."""
    return DataLoader(dataset, batch_sampler=EpochBatches(len(dataset), batch_size, seed, start_batch),
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def eval_loader(dataset: ReferringDataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)

"""A batch order that can resume mid-epoch, and the loaders every family's trainer uses.

The batch order is a pure function of (seed, epoch), so a resumed run sees the same batches as an
uninterrupted one; the dataset is any torch Dataset (a family's own, e.g. torch_data.py's).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


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


def train_loader(dataset: Dataset, batch_size: int, seed: int, start_batch: int = 0,
                 num_workers: int = 0) -> DataLoader:
    """Endless shuffled loader starting at micro-batch `start_batch`.

    Its own generator keeps the loader from drawing its base seed from the global RNG, which dropout
    (RSRefSeg's LoRA dropout) uses: a resumed run would otherwise draw different dropout masks from
    the straight one."""
    return DataLoader(dataset, batch_sampler=EpochBatches(len(dataset), batch_size, seed, start_batch),
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)

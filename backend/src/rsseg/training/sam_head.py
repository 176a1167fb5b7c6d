"""The SAM head trains only its decoder (and band adapter); the SAM image encoder stays frozen.

Why an embedding cache: the frozen encoder costs most of a step (LiteMedSAM: ~1.5 s per 256² chip on
a CPU) and gives the same output for the same chip every epoch. So chips are augmented only by the
eight flips and quarter turns (photometric and zoom augmentations would make every draw a new
encoder pass), and each distinct augmented chip is encoded once: at most 8 passes per chip over the
whole run. Embeddings are kept in float16 (always: a resumed run with an empty cache computes the
same values) within CACHE_BYTES; beyond it they are computed per step. With a trainable band adapter
(not 3 bands) the embedding changes as the adapter learns, so nothing is cached.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import torch

from .augment import Augment
from .layer_data import LayerChipDataset
from .registry import trainer
from .semantic import SemanticTrainer

CACHE_BYTES = 1 << 30
DIHEDRAL = Augment(flip=True, rot90=True, scale=(1.0, 1.0), jitter=0.0, band_dropout=0.0)


@trainer("sam_head")
class SamHeadTrainer(SemanticTrainer):
    default_lr = 1e-3  # a small decoder on frozen features takes a larger rate

    def train_dataset(self) -> LayerChipDataset:
        return LayerChipDataset(self.reader, self.train_data, DIHEDRAL if self.augmentation is not None else None)

    def _embed(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The encoder's embeddings of the normalised batch `x`, from the cache where it has them."""
        if not getattr(self.model, "embedding_is_fixed", False):
            return None
        if not hasattr(self, "_embeddings"):
            self._embeddings: dict[bytes, torch.Tensor] = {}
            self._cache_bytes = 0
        keys = [hashlib.blake2b(tile.detach().cpu().numpy().tobytes(), digest_size=16).digest() for tile in x]
        fresh = {}
        for i in (i for i, k in enumerate(keys) if k not in self._embeddings):
            # one tile at a time: a tile's embedding must not depend on which others missed the cache with
            # it (batched kernels round differently), or a resumed run would drift from a straight one
            with torch.no_grad(), self.autocast():
                embedding = self.model.embed(x[i:i + 1])[0].to(torch.float16).cpu()
            fresh[keys[i]] = embedding
            if self._cache_bytes + embedding.numel() * 2 <= CACHE_BYTES:
                self._embeddings[keys[i]] = embedding
                self._cache_bytes += embedding.numel() * 2
        found = [self._embeddings.get(k, fresh.get(k)) for k in keys]
        return torch.stack(found).to(self.cfg.device, torch.float32)

    def forward(self, x: torch.Tensor):
        return self.model(x, self._embed(x))

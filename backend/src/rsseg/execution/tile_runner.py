"""Runs a TileModel on the engine's batches: precision, batch size, out-of-memory recovery, feature cache.

The engine hands over tiles with one cache key each; everything about devices lives here, so the
engine stays device-agnostic and every model gets the same behaviour:
- autocast to bf16/fp16 on GPU, fp32 on CPU;
- batch size 0 ("auto") is measured on CUDA from one tile's peak memory and the free memory;
- on out-of-memory the batch halves and the job goes on (the result record says so);
- models with an image encoder (EncodedTileModel) reuse cached features per tile;
- models that find objects (InstanceTileModel) hand their instances over with the logits
  (`take_instances`, one list per tile, in the order of the logits);
- on CPU a cancel stops the batch inside the model (before its next torch module runs): one CPU
  batch of a ViT-B-sized model takes seconds, and splitting it into single tiles would change the
  logits' last bits (batched and single-tile matrix products round differently).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, Optional, Sequence

import numpy as np

from ..devices import (
    AUTO_BATCH_CPU,
    autocast_dtype,
    batch_from_memory,
    free_memory_bytes,
    is_out_of_memory,
    precision_name,
)
from ..errors import DeviceError
from ..progress import CancelToken
from .feature_cache import FeatureCache, cache_key
from .tile_model import EncodedTileModel, Instance, InstanceTileModel, TileModel


def _stack(items: list[Any]):
    """Per-tile features -> one batch; a tuple of arrays per tile stacks field by field."""
    if isinstance(items[0], tuple):
        return tuple(_stack([item[i] for item in items]) for i in range(len(items[0])))
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(items)


def _split(batch: Any) -> list[Any]:
    """The inverse of _stack: a batch of features -> one entry per tile."""
    return list(zip(*batch)) if isinstance(batch, tuple) else list(batch)


def _detach(feature: Any) -> Any:
    """Cached features live on the CPU: GPU memory is for the batch being computed."""
    if isinstance(feature, tuple):
        return tuple(_detach(f) for f in feature)
    return feature if isinstance(feature, np.ndarray) else feature.detach().to("cpu")


class TileRunner:
    def __init__(self, model: TileModel, device: str = "cpu", batch_size: int = 0,
                 cache: Optional[FeatureCache] = None):
        self.model, self.device = model, device
        self.requested_batch = batch_size
        self._probe = batch_size == 0 and device.startswith("cuda")
        self.batch_size = batch_size or (1 if self._probe else AUTO_BATCH_CPU)
        self.cache = cache if cache is not None and isinstance(model, EncodedTileModel) else None
        self.oom_halvings = 0
        self.encoded = self.reused = 0
        self._dtype = autocast_dtype(device)
        self._instances: Optional[list[list[Instance]]] = [] if isinstance(model, InstanceTileModel) else None

    def __call__(self, batch: np.ndarray, keys: Sequence[str], cancel: Optional[CancelToken] = None) -> np.ndarray:
        """[B, C, h, w] tiles and their cache keys -> [B, K, h, w] float32 logits.

        `cancel` is checked before each model call, and on CPU also inside it (`_stop_inside`)."""
        with self._stop_inside(cancel):
            return self._batches(batch, keys, cancel)

    def _batches(self, batch: np.ndarray, keys: Sequence[str], cancel: Optional[CancelToken]) -> np.ndarray:
        outputs, i = [], 0
        while i < len(batch):
            if cancel is not None:
                cancel.check()
            n = min(self.batch_size, len(batch) - i)
            try:
                outputs.append(self._measured(batch[i:i + n], keys[i:i + n]))
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                self._release()
                if n == 1:
                    raise DeviceError(f"out of memory on {self.device} with a single {batch.shape[-1]} px tile: "
                                      "use a smaller tile size or another device") from None
                self.batch_size = max(1, n // 2)
                self.oom_halvings += 1
                continue
            i += n
        return np.concatenate(outputs)

    def take_instances(self) -> list[list[Instance]]:
        """The instances of the tiles run since the last call, one list per tile ([] for other models)."""
        found, self._instances = self._instances or [], [] if self._instances is not None else None
        return found

    def stats(self) -> dict[str, Any]:
        stats = {"device": self.device, "precision": precision_name(self.device), "batch_size": self.batch_size,
                 "batch_size_requested": self.requested_batch or "auto", "oom_halvings": self.oom_halvings}
        if self.cache is not None:
            stats["features"] = {"encoded": self.encoded, "reused": self.reused}
        return stats

    def notes(self) -> list[str]:
        if not self.oom_halvings:
            return []
        return [f"out of memory on {self.device}: the batch was halved {self.oom_halvings} time(s), to "
                f"{self.batch_size} tile(s); the job went on"]

    # -- internals ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stop_inside(self, cancel: Optional[CancelToken]) -> Iterator[None]:
        """On CPU, raise Cancelled before the next torch module of this thread runs once `cancel` is set.

        Why: a CPU batch of a real-size model runs for seconds, and the engine can only check between
        batches. A global forward pre-hook (limited to this thread: other threads' models are not
        touched) stops it within one layer, and computes nothing, so the logits stay bit-identical.
        GPU batches take well under a second and keep the plain path. Models without torch (torch
        not even imported) are stopped between model calls only."""
        if cancel is None or self.device != "cpu" or "torch" not in sys.modules:
            yield
            return
        import torch

        thread = threading.get_ident()

        def check(_module, _inputs) -> None:
            if cancel.cancelled and threading.get_ident() == thread:
                cancel.check()

        handle = torch.nn.modules.module.register_module_forward_pre_hook(check)
        try:
            yield
        finally:
            handle.remove()

    def _measured(self, batch: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        if not self._probe:
            return self._run(batch, keys)
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        out = self._run(batch, keys)
        per_tile = (torch.cuda.max_memory_allocated(self.device) - base) / len(batch)
        self.batch_size = batch_from_memory(free_memory_bytes(self.device), int(per_tile))
        self._probe = False
        return out

    def _run(self, batch: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        with self._precision():
            if self.cache is None:
                if self._instances is None:
                    return np.asarray(self.model(batch), np.float32)
                return self._decode(self.model.encode(batch))
            features = [self.cache.get(self._key(k)) for k in keys]
            missing = [j for j, f in enumerate(features) if f is None]
            if missing:
                encoded = _split(self.model.encode(batch[missing]))
                for j, feature in zip(missing, encoded):
                    features[j] = _detach(feature)
                    self.cache.put(self._key(keys[j]), features[j])
            self.encoded += len(missing)
            self.reused += len(keys) - len(missing)
            return self._decode(_stack(features))

    def _decode(self, features: Any) -> np.ndarray:
        if self._instances is None:
            return np.asarray(self.model.decode(features), np.float32)
        logits, found = self.model.decode_instances(features)
        self._instances.extend(found)
        return np.asarray(logits, np.float32)

    def _key(self, tile_key: str) -> str:
        return cache_key(self.model.encoder_id, tile_key)

    def _precision(self):
        if self._dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device.split(":")[0], dtype=self._dtype)

    def _release(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

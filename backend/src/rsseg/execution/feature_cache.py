"""Cache of image-encoder outputs, so a second prompt on the same extent runs no image encoder.

Keys are digests of (raster identity incl. size and mtime, band mapping, normalisation, region,
tile window, model encoder id incl. weights hash), built by the engine and the tile runner. Values
are per-tile features (numpy arrays, CPU torch tensors or tuples of tensors). An in-memory LRU bounded in bytes sits
in front of an optional on-disk store bounded the same way (oldest files removed first).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import numpy as np

ENV_MEMORY_MB = "RSSEG_FEATURE_CACHE_MB"
ENV_DISK_DIR = "RSSEG_FEATURE_CACHE_DIR"
ENV_DISK_MB = "RSSEG_FEATURE_CACHE_DISK_MB"
DEFAULT_MEMORY_MB = 1024
DEFAULT_DISK_MB = 8192


def cache_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def nbytes(value: Any) -> int:
    if isinstance(value, tuple):
        return sum(nbytes(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.nbytes
    return value.element_size() * value.numel()  # a torch tensor


class FeatureCache:
    """Thread-safe LRU of features by key; `hits`/`misses` count lookups since creation."""

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_MB << 20, disk_dir: Optional[str | Path] = None,
                 disk_max_bytes: int = DEFAULT_DISK_MB << 20):
        self.max_bytes = max_bytes
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self.disk_max_bytes = disk_max_bytes
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self._disk_bytes = 0
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            self._trim_disk()

    @classmethod
    def from_env(cls) -> "FeatureCache":
        """Sizes and the optional disk folder from RSSEG_FEATURE_CACHE_MB / _DIR / _DISK_MB."""
        return cls(int(float(os.environ.get(ENV_MEMORY_MB, DEFAULT_MEMORY_MB)) * (1 << 20)),
                   os.environ.get(ENV_DISK_DIR) or None,
                   int(float(os.environ.get(ENV_DISK_MB, DEFAULT_DISK_MB)) * (1 << 20)))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Optional[Any]:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
        if value is None:
            value = self._disk_get(key)
            if value is not None:
                self._memory_put(key, value)
        with self._lock:
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        self._memory_put(key, value)
        self._disk_put(key, value)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _memory_put(self, key: str, value: Any) -> None:
        size = nbytes(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= nbytes(old)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= nbytes(evicted)

    # -- on disk: numpy arrays as .npy (no pickle), torch tensors loaded with weights_only=True --------
    def _disk_path(self, key: str, suffix: str) -> Path:
        return self.disk_dir / f"{key}{suffix}"

    def _disk_get(self, key: str) -> Optional[Any]:
        if self.disk_dir is None:
            return None
        for suffix in (".npy", ".pt"):
            path = self._disk_path(key, suffix)
            try:
                if suffix == ".npy":
                    value = np.load(path, allow_pickle=False)
                else:
                    import torch

                    value = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, RuntimeError):  # a damaged entry: drop it and recompute
                path.unlink(missing_ok=True)
                continue
            os.utime(path)  # most recently used survives the size cap
            return value
        return None

    def _disk_put(self, key: str, value: Any) -> None:
        if self.disk_dir is None or nbytes(value) > self.disk_max_bytes:
            return
        suffix = ".npy" if isinstance(value, np.ndarray) else ".pt"
        final = self._disk_path(key, suffix)
        temp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(temp, "wb") as handle:
                if suffix == ".npy":
                    np.save(handle, value, allow_pickle=False)
                else:
                    import torch

                    torch.save(value, handle)
            os.replace(temp, final)
            self._disk_bytes += final.stat().st_size
        except OSError:
            temp.unlink(missing_ok=True)  # a full disk only costs recomputation
            return
        if self._disk_bytes > self.disk_max_bytes:
            self._trim_disk()

    def _trim_disk(self) -> None:
        """Remove the least recently used files until the folder fits its cap (one scan)."""
        entries = []
        for path in self.disk_dir.iterdir():
            if path.suffix in (".npy", ".pt") and not path.name.startswith("."):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.disk_max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._disk_bytes = total

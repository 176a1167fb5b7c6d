"""Tiles from the host to the model's device.

On CUDA a batch goes through a page-locked (pinned) buffer, reused from batch to batch, with a
non-blocking copy: a copy from pinned memory runs on the GPU's copy engine at full bus speed and
returns at once, so the model's first kernels queue behind it instead of the Python thread waiting.
The buffer is rewritten only after the GPU has finished reading it (an event recorded after the copy).
Elsewhere the array is wrapped without a copy (CPU) or copied plainly (MPS).
"""

from __future__ import annotations

import threading

import numpy as np

_staged = threading.local()  # per thread: (pinned buffer, event after its last copy)


def tiles_to_device(batch: np.ndarray, device: str):
    """[B, C, h, w] float32 tiles as a tensor on `device`."""
    import torch

    array = np.ascontiguousarray(batch, np.float32)
    if not str(device).startswith("cuda"):
        tensor = torch.from_numpy(array)
        return tensor if str(device) == "cpu" else tensor.to(device)
    buffer, copied = getattr(_staged, "cuda", (None, None))
    if buffer is None or tuple(buffer.shape) != array.shape:
        buffer, copied = torch.empty(array.shape, dtype=torch.float32, pin_memory=True), None
    if copied is not None:
        copied.synchronize()  # the previous batch has left the buffer
    buffer.numpy()[...] = array
    tensor = buffer.to(device, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(tensor.device))
    _staged.cuda = (buffer, copied)
    return tensor

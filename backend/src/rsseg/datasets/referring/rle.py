"""COCO run-length-encoded masks (RRSIS-D's jsonl carries one per sample), via pycocotools.

Both COCO forms are accepted: compressed (`counts` a string in COCO's LEB128-like text code)
and uncompressed (`counts` a list of run lengths, column-major, starting with a run of zeros);
`size` is [height, width].
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """One RLE dict -> HxW bool mask. ValueError (with the reason) for a malformed one."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise ValueError("expected a COCO RLE object with 'counts' and 'size'")
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
        raise ValueError(f"RLE 'size' must be [height, width], got {size!r}")
    height, width = size
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(counts) != height * width or any((not isinstance(c, int)) or c < 0 for c in counts):
            raise ValueError(f"uncompressed RLE counts must be non-negative integers summing to "
                             f"{height}x{width}={height * width}")
        rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    elif isinstance(counts, (str, bytes)):
        rle = {"counts": counts.encode("ascii") if isinstance(counts, str) else counts, "size": [height, width]}
    else:
        raise ValueError(f"RLE 'counts' must be a string or a list, got {type(counts).__name__}")
    decoded = mask_utils.decode(rle)
    if decoded.shape != (height, width):
        raise ValueError(f"RLE decodes to {decoded.shape}, not its size {height}x{width}")
    return decoded.astype(bool)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """HxW bool -> compressed RLE with `counts` as text (the jsonl form), for fixtures and writers."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """HxW bool -> uncompressed RLE (column-major run lengths, first run counts zeros); numpy only."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}

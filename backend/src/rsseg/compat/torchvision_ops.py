"""Make torchvision importable when its compiled extension does not match the installed torch.

Why this exists: PyPI's torchvision wheels for Linux are CUDA builds whose `_C` extension links
against libtorch_cuda. Next to a CPU-only torch that extension cannot be loaded, and torchvision's
`_meta_registrations` then fails at import time with
`RuntimeError: operator torchvision::nms does not exist`. open_clip, timm and segment_anything
all import torchvision, so none of the model libraries can be imported.

`ensure_torchvision()` must run before torchvision is first imported. It tries to load the real
extension; when that works (a matching torch + torchvision pair) nothing else happens ("native").
When it fails it defines the `torchvision::nms` and `torchvision::qnms` operator schemas and
registers a pure-torch greedy NMS kernel, then imports torchvision once to lift the "C++ ops
loaded?" check in `torchvision.ops.boxes` ("cpu-fallback"). Transforms,
`ops.nms`, `ops.batched_nms` and `ops.roi_align` (torchvision's Python fallback) work, while
`torchvision.io` and the other C++ ops do not (read images with rasterio or Pillow instead).
"""

from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import os
import sys
import threading

NATIVE = "native"
CPU_FALLBACK = "cpu-fallback"
ABSENT = "absent"

# The schemas torchvision's C++ sources declare (csrc/ops/nms.cpp, csrc/ops/quantized/cpu/qnms*.cpp).
_NMS_SCHEMA = "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_QNMS_SCHEMA = "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"

_lock = threading.Lock()
_mode: str | None = None
_lib = None  # the torch.library.Library; must stay referenced or the registrations are dropped


def _greedy_nms(dets, scores, iou_threshold: float):
    """Greedy NMS with torchvision's semantics: xyxy boxes, suppress IoU > threshold, int64 keep
    indices in decreasing score order."""
    import torch

    torch._check(dets.dim() == 2 and dets.size(1) == 4, lambda: f"boxes must be (N, 4): {tuple(dets.shape)}")
    torch._check(scores.dim() == 1, lambda: f"scores should be a 1d tensor, got {scores.dim()}D")
    torch._check(dets.size(0) == scores.size(0), lambda: "boxes and scores should have the same length")
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    order = scores.sort(stable=True, descending=True).indices
    boxes = dets[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    n = len(order)
    removed = torch.zeros(n, dtype=torch.bool, device=dets.device)
    keep = []
    rows = min(256, max(1, (1 << 22) // n))  # IoU rows per block: bounded memory, early pruning
    for start in range(0, n, rows):
        alive = (~removed[start : start + rows]).nonzero().squeeze(1) + start
        cols = boxes[None, start:]
        lt = torch.maximum(boxes[alive, None, :2], cols[..., :2])
        rb = torch.minimum(boxes[alive, None, 2:], cols[..., 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        over = inter / (areas[alive, None] + areas[None, start:] - inter) > iou_threshold
        for j, i in enumerate(alive.tolist()):  # a NaN IoU suppresses nothing, as in torchvision
            if not removed[i]:
                keep.append(i)
                removed[start:] |= over[j]
    return order[torch.tensor(keep, dtype=torch.long, device=dets.device)]


def _greedy_qnms(dets, scores, iou_threshold: float):
    # torchvision passes the int_repr() of per-tensor quantized boxes and scores: scale and zero
    # point cancel out of IoU and do not change the score order, so NMS on the raw integers is exact.
    return _greedy_nms(dets.double(), scores.double(), iou_threshold)


def _extension_path() -> str | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or []:
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        for path in sorted(glob.glob(os.path.join(folder, "_C*"))):
            if path.endswith(suffixes):
                if os.name == "nt":  # torchvision does the same before loading its DLL
                    os.add_dll_directory(folder)
                return path
    return ""


def _register_fallback() -> None:
    global _lib
    import torch

    if _lib is None:  # a retry after a failed torchvision import must not define the ops twice
        lib = torch.library.Library("torchvision", "DEF")
        lib.define(_NMS_SCHEMA)
        lib.define(_QNMS_SCHEMA)
        lib.impl("nms", _greedy_nms, "CompositeExplicitAutograd")
        lib.impl("qnms", _greedy_qnms, "CompositeExplicitAutograd")
        _lib = lib
    # torchvision.ops.nms() first asserts that the C++ extension loaded; let it through for nms
    # only (the other C++ ops stay unavailable and `_has_ops()` stays False, so roi_align uses
    # torchvision's Python implementation).
    import torchvision.ops.boxes

    torchvision.ops.boxes._assert_has_ops = _nms_ops_available


def _nms_ops_available() -> None:
    """Replaces torchvision.ops.boxes._assert_has_ops: nms and qnms are registered here."""


def _mode_of_imported() -> str:
    if _lib is not None:
        return CPU_FALLBACK
    extension = sys.modules.get("torchvision.extension")
    return NATIVE if extension is not None and extension._has_ops() else CPU_FALLBACK


def ensure_torchvision() -> str:
    """Make `import torchvision` work; return "native", "cpu-fallback" or "absent".

    Call before torchvision is first imported. Idempotent; later calls return the cached mode.
    """
    global _mode
    if _mode is not None:
        return _mode
    with _lock:
        if _mode is not None:
            return _mode
        if "torchvision" in sys.modules:
            _mode = _mode_of_imported()
            return _mode
        path = _extension_path()
        if path is None:
            _mode = ABSENT
            return _mode
        import torch

        try:
            if not path:
                raise OSError("torchvision has no compiled _C extension")
            torch.ops.load_library(path)
            _mode = NATIVE
        except (OSError, ImportError):
            _register_fallback()
            _mode = CPU_FALLBACK
        return _mode


def torchvision_mode() -> str:
    """The mode of the last `ensure_torchvision()` call (computing it if there was none)."""
    return _mode if _mode is not None else ensure_torchvision()

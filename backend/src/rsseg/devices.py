"""Choose and validate the torch compute device ("auto", "cpu", "cuda", "cuda:N", "mps").

An unusable request raises DeviceError with one line that names the device and what this torch
can use, so the CLI and the QGIS message bar can show it as is.
"""

from __future__ import annotations

import re

from rsseg.errors import DeviceError

CHOICES = "auto, cpu, cuda, cuda:N, mps"


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Devices this torch can use: "cpu", then "cuda:0".."cuda:N-1", then "mps"."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available(torch):
        devices.append("mps")
    return devices


def resolve_device(name: str = "auto") -> str:
    """Return a torch device string for `name`, or raise DeviceError.

    "auto" picks "cuda" when a CUDA GPU is visible, else "mps" on Apple silicon, else "cpu".
    """
    import torch

    wanted = str(name).strip().lower()
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available(torch) else "cpu"
    if wanted == "cpu":
        return "cpu"
    available = ", ".join(available_devices())
    cuda = re.fullmatch(r"cuda(?::(\d+))?", wanted)
    if cuda:
        if not torch.cuda.is_available():
            build = " (a CPU-only build)" if torch.version.cuda is None else ""
            raise DeviceError(f"device {name!r} requested but torch {torch.__version__}{build} sees no "
                              f"CUDA GPU; available: {available}")
        count = torch.cuda.device_count()
        if cuda.group(1) is not None and int(cuda.group(1)) >= count:
            raise DeviceError(f"device {name!r} requested but torch sees {count} CUDA GPU(s); "
                              f"available: {available}")
        return wanted
    if wanted == "mps":
        if not _mps_available(torch):
            raise DeviceError(f"device {name!r} requested but torch {torch.__version__} has no MPS backend "
                              f"(Apple silicon with macOS 12.3+ only); available: {available}")
        return "mps"
    raise DeviceError(f"unknown device {name!r}; valid choices: {CHOICES} (available here: {available})")

"""Choose and validate the torch compute device ("auto", "cpu", "cuda", "cuda:N", "mps").

An unusable request raises DeviceError with one line that names the device and what this torch
can use, so the CLI and the QGIS message bar can show it as is.
"""

from __future__ import annotations

from rsseg.errors import DeviceError
from rsseg.protocol.contracts import RequestError, check_device


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

    try:
        wanted = check_device(name)
    except RequestError as exc:
        raise DeviceError(f"{exc} (available here: {', '.join(available_devices())})") from None
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available(torch) else "cpu"
    if wanted == "cpu":
        return "cpu"
    available = ", ".join(available_devices())
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            build = " (a CPU-only build)" if torch.version.cuda is None else ""
            raise DeviceError(f"device {name!r} requested but torch {torch.__version__}{build} sees no "
                              f"CUDA GPU; available: {available}")
        count = torch.cuda.device_count()
        index = wanted.partition(":")[2]
        if index and int(index) >= count:
            raise DeviceError(f"device {name!r} requested but torch sees {count} CUDA GPU(s); "
                              f"available: {available}")
        return wanted
    if not _mps_available(torch):  # "mps"
        raise DeviceError(f"device {name!r} requested but torch {torch.__version__} has no MPS backend "
                          f"(Apple silicon with macOS 12.3+ only); available: {available}")
    return "mps"


# --- precision and memory --------------------------------------------------------------------------
AUTO_BATCH_CPU = 4  # on CPU a larger batch gains nothing and only costs memory
MAX_AUTO_BATCH = 32
MEMORY_HEADROOM = 0.7  # share of free GPU memory a batch may use; the rest absorbs fragmentation


def autocast_dtype(device: str):
    """The autocast dtype for `device`: bf16 (or fp16) on CUDA, fp16 on MPS, None (fp32) on CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        import torch

        return torch.float16
    return None


def precision_name(device: str) -> str:
    dtype = autocast_dtype(device)
    return "fp32" if dtype is None else str(dtype).replace("torch.", "").replace("bfloat16", "bf16") \
        .replace("float16", "fp16")


def free_memory_bytes(device: str) -> int | None:
    """Free memory on a CUDA device (None elsewhere: CPU and MPS share system memory)."""
    if not device.startswith("cuda"):
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def batch_from_memory(free_bytes: int, per_tile_bytes: int, limit: int = MAX_AUTO_BATCH) -> int:
    """Tiles per batch that fit in `MEMORY_HEADROOM` of the free memory, at least 1."""
    if per_tile_bytes <= 0:
        return limit
    return max(1, min(limit, int(free_bytes * MEMORY_HEADROOM // per_tile_bytes)))


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the RuntimeError MPS and the CPU allocator raise."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)

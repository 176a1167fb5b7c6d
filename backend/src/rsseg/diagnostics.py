"""Environment report for bug reports: platform, Python, torch/CUDA/MPS, torchvision mode, the
versions of the geospatial and model libraries, and the models the caller knows about.

`environment_report()` returns plain JSON-serialisable data; `format_report()` renders it as text
or as Markdown to paste into an issue. Package versions come from importlib.metadata, so a broken
package still shows its version without being imported.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

import rsseg

PACKAGES = ("numpy", "rasterio", "fiona", "pyogrio", "shapely", "pyproj", "scipy", "open_clip_torch",
            "segment-anything", "timm", "peft", "safetensors")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _torch_info() -> dict:
    try:
        import torch
    except ImportError as exc:
        return {"version": None, "error": str(exc), "cuda_available": False, "cuda_version": None,
                "cuda_devices": [], "mps_available": False}
    cuda = torch.cuda.is_available()
    devices = []
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": props.name, "total_memory_bytes": int(props.total_memory),
                        "total_memory_gib": round(props.total_memory / 2**30, 1)})
    mps = getattr(torch.backends, "mps", None)
    return {"version": torch.__version__, "cuda_available": cuda, "cuda_version": torch.version.cuda,
            "cuda_devices": devices, "mps_available": bool(mps is not None and mps.is_available())}


def _gdal_version() -> str | None:
    try:
        import rasterio
    except ImportError:
        return None
    return rasterio.__gdal_version__


def worker_roundtrip(pings: int = 5) -> dict:
    """Start a worker from this interpreter as the plugin would, handshake, ping, shut it down."""
    import time

    from rsseg.protocol.client import BackendError, WorkerClient, WorkerConfig

    t0 = time.perf_counter()
    try:
        with WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=30)) as client:
            info = client.start()
            started = time.perf_counter() - t0
            rtts = sorted(client.ping()["rtt_s"] for _ in range(pings))
    except BackendError as exc:
        return {"ok": False, "error": str(exc).splitlines()[0]}
    return {"ok": True, "protocol": info["protocol"], "start_s": round(started, 3),
            "ping_ms": round(rtts[len(rtts) // 2] * 1000, 2)}


def weights_summary(row: dict) -> str:
    """One cell per model for the report: each weight file and whether it is present and verified."""
    if not row.get("weights"):
        return "none needed"
    return ", ".join(f"{w['name']} "
                     f"({'verified' if w['verified'] else 'present, not verified' if w['present'] else 'missing'})"
                     for w in row["weights"])


def environment_report(models: list[dict] | None = None) -> dict:
    """Collect the environment as JSON-serialisable data. `models` (dicts with at least "id",
    "task" and "weights") is included as given; values JSON cannot hold become strings."""
    from rsseg.compat import ensure_torchvision

    torch_info = _torch_info()
    tv_mode = ensure_torchvision() if torch_info["version"] else None
    return {
        "platform": {"system": platform.system(), "release": platform.release(),
                     "machine": platform.machine(), "platform": platform.platform()},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "rsseg": {"version": rsseg.__version__},
        "torch": torch_info,
        "torchvision": {"version": _version("torchvision"), "mode": tv_mode},
        "packages": {name: _version(name) for name in PACKAGES},
        "gdal": {"rasterio": _gdal_version()},
        "models": json.loads(json.dumps(list(models or []), default=str)),
    }


def full_report(worker: dict | None = None) -> dict:
    """The report `rsseg doctor` prints and the worker's `doctor` request answers: the environment, every
    registered model's weight state and, when given, the worker round trip the caller measured."""
    from rsseg.models.catalog import model_rows

    report = environment_report([{"id": r["id"], "task": r["task"], "weights": weights_summary(r)}
                                 for r in model_rows()])
    if worker is not None:
        report["worker"] = worker
    return report


def _rows(report: dict) -> list[tuple[str, str]]:
    torch_info, tv = report["torch"], report["torchvision"]
    if torch_info["cuda_available"]:
        gpus = "; ".join(f"{d['name']} ({d['total_memory_gib']} GiB)" for d in torch_info["cuda_devices"])
        cuda = f"{torch_info['cuda_version']}: {gpus}"
    elif torch_info["cuda_version"]:
        cuda = f"not available (torch built for CUDA {torch_info['cuda_version']})"
    else:
        cuda = "not available (CPU-only torch)"
    rows = [
        ("OS", report["platform"]["platform"]),
        ("Python", f"{report['python']['version']} ({report['python']['executable']})"),
        ("rsseg", report["rsseg"]["version"]),
        ("torch", torch_info["version"] or f"missing ({torch_info.get('error')})"),
        ("CUDA", cuda),
        ("MPS", "available" if torch_info["mps_available"] else "not available"),
        ("torchvision", f"{tv['version'] or 'missing'} (mode: {tv['mode']})"),
    ]
    rows += [(name, version or "missing") for name, version in report["packages"].items()]
    rows.append(("GDAL (rasterio)", report["gdal"]["rasterio"] or "missing"))
    worker = report.get("worker")
    if worker is not None:
        rows.append(("worker round trip", _round_trip(worker)))
    return rows


def _round_trip(worker: dict) -> str:
    if not worker.get("ok"):
        return f"FAILED: {worker.get('error')}"
    started = f"started in {worker['start_s']} s, " if worker.get("start_s") is not None else ""
    return f"ok: {started}ping {worker.get('ping_ms')} ms (protocol {worker.get('protocol')})"


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_report(report: dict, markdown: bool = False) -> str:
    """Render `environment_report()` output as aligned plain text, or as Markdown (headings and
    tables) to paste into a bug report."""
    rows = _rows(report)
    models = report.get("models") or []
    if markdown:
        lines = ["## rsseg environment", "", "| Component | Version |", "| --- | --- |"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
        lines += ["", "### Models", ""]
        if models:
            lines += ["| id | task | weights |", "| --- | --- | --- |"]
            lines += [f"| {_cell(m.get('id'))} | {_cell(m.get('task'))} | {_cell(m.get('weights'))} |"
                      for m in models]
        else:
            lines.append("none")
        return "\n".join(lines) + "\n"
    width = max(len(k) for k, _ in rows)
    lines = ["rsseg environment"] + [f"  {k.ljust(width)}  {v}" for k, v in rows] + ["Models"]
    lines += [f"  {m.get('id')}  [{m.get('task')}]  {m.get('weights')}" for m in models] or ["  none"]
    return "\n".join(lines) + "\n"
